#!/usr/bin/env bash
# One command for the GPU machine (an H200, no network): fixed shapes and step counts, a time
# budget per section, ≤ 8 minutes in all, a table printed last. The trainer and benchmark issues
# extend this one script.
#
#   bash experiments/gpu.sh        # $GPT2_BIN, else target/release/gpt2, else target/gpu/gpt2.gz
#
# The GPU machine cannot build (no network): make a `--features cuda` binary here with
# `make gpu-bundle` (release build, stripped, gzipped to target/gpu/gpt2.gz, well under the 64 MiB
# a device call carries) and carry target/gpu. Without a binary the script says so and exits 2.
#
# Sections (budget in seconds; a section that runs out is reported as such, the rest go on):
#   prepare      the bundled sample corpus into shards (CPU)                               20
#   ours-117m    gpt2 train, gpt2-117m, bf16, T=1024, micro-batch 16, 30 steps           70
#   ours-117m-composed  the same with device.kernels: composed (Burn's tensor ops instead of
#                our CubeCL kernels: flash attention, loss rows, LayerNorm, GELU, AdamW), 10 steps 40
#   ours-117m-autotune  only with target/gpu/gpt2-autotune.gz (make gpu-bundle-autotune): ours-117m
#                with Burn's autotune on, 10 steps; its tuning is part of the budget        30
#   ours-345m    gpt2 train, gpt2-345m, bf16, T=1024, micro-batch 8, 20 steps             70
#   torch-*      experiments/torch_gpt2.py on the same presets, shapes and shards:
#                eager and torch.compile (PyTorch's SDPA flash attention), 117M and 345M  30/50/30/50
#   max-1542m    gpt2-1542m bf16 T=1024: the largest micro-batch (8, 6, 4, 3, 2, 1) for which
#                two training steps complete                                               60
#   ours-117m-2gpu  only where nvidia-smi lists ≥ 2 GPUs: ours-117m data-parallel on GPUs 0
#                and 1 (device.ids [0, 1], NCCL all-reduce in 25 MB buckets), 20 steps; scaling
#                efficiency = tokens/s on 2 GPUs / (2 × tokens/s on 1)                           30
#   nccl-1rank   only on one GPU: tiny-cpu on CUDA with distributed.backend nccl (a one-rank
#                communicator) against the same run without it: the losses must be equal       30
# Budgets add up to 480 s (8 minutes) on a 2-GPU machine with the autotune binary, 450 s
# without it, and the same on one GPU (nccl-1rank instead of ours-117m-2gpu). Burn's fusion is not built into any binary
# (docs/gpus.md, "Burn's autotune and fusion"); `composed` vs `fused` is the kernels' on/off.
# Peak memory: ours reports its CubeCL pools' high-water mark (mem_peak_mb, the most the pools
# held) beside nvidia-smi's polled peak; PyTorch its allocator's max_memory_allocated.
# MFU = achieved FLOP/s (6N + 12·L·C·T per token, nanoGPT/llm.c) over 788 TFLOP/s, the bf16
# 8192³ matmul rate measured on this H200; the datasheet's 989 TFLOP/s is printed beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpt2-gpu}"
mkdir -p "$OUT"
BIN="${GPT2_BIN:-target/release/gpt2}"
if [ ! -x "$BIN" ] && [ -f target/gpu/gpt2.gz ]; then
  BIN="$OUT/gpt2"
  gzip -dc target/gpu/gpt2.gz >"$BIN" && chmod +x "$BIN"
fi
if [ ! -x "$BIN" ] || ! "$BIN" train --help >/dev/null 2>&1; then
  echo "no gpt2 binary at $BIN; on a CPU machine with the registries: make gpu-bundle, then carry target/gpu" >&2
  exit 2
fi
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
ROWS=()
START=$(date +%s)

peak_mem() { # poll nvidia-smi while $1 runs; print the max MiB in use
  local max=0 v
  while kill -0 "$1" 2>/dev/null; do
    v=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
    [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
    sleep 0.5
  done
  echo "$max"
}

# Steady-state tokens/s and MFU from a run's metrics.jsonl (logged steps after the first 5).
steady() {
  "$PY" - "$1" <<'PY'
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
except OSError:
    rows = []
rows = [r for r in rows if r["step"] > 5 and r.get("tokens_per_sec")]
if not rows:
    print("- -"); sys.exit()
t = sum(r["tokens_per_sec"] for r in rows) / len(rows)
m = sum(r.get("mfu") or 0 for r in rows) / len(rows)
print(f"{t:.0f} {100 * m:.1f}")
PY
}

# ours NAME PRESET MICRO_BATCH STEPS BUDGET [IDS] [KERNELS] [BINARY]: our trainer, bf16,
# T=1024, on GPU 0 or on the data-parallel device list IDS (e.g. "[0, 1]"; micro-batch per GPU).
ours() {
  local name=$1 preset=$2 b=$3 steps=$4 budget=$5 ids=${6:-[0]} kernels=${7:-fused} run="$OUT/run-$1"
  local bin=${8:-$BIN}
  local world
  world=$("$PY" -c "import sys; print(len(eval(sys.argv[1])))" "$ids")
  rm -rf "$run"
  echo "== $name (budget ${budget}s)"
  timeout "$budget" "$bin" train --quiet --config "configs/train/$preset.yaml" \
    --set run_dir="$run" --set data.shards="$OUT/shards" --set data.verify=false \
    --set batch.micro_batch="$b" --set batch.seq_len=1024 --set batch.total_batch_tokens=$((b * 1024 * world)) \
    --set optimizer.max_tokens=null --set optimizer.max_steps="$steps" --set optimizer.warmup_steps=5 \
    --set eval.interval=0 --set eval.tokens=$((b * 1024 * world)) --set checkpoint.interval=100000 --set checkpoint.at_end=false \
    --set device.ids="$ids" --set device.kernels="$kernels" --set log_interval=1 >"$run.log" 2>&1 &
  local pid=$!
  local mem
  mem=$(peak_mem $pid)
  wait $pid
  local rc=$?
  tail -3 "$run.log"
  local toks mfu pools
  read -r toks mfu < <(steady "$run/metrics.jsonl")
  pools=$("$PY" -c "import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if '\"train\"' in l]
print(max((x.get('mem_peak_mb') or 0) for x in r) if r else '-')" "$run/metrics.jsonl" 2>/dev/null || echo -)
  ROWS+=("| ours $name: $preset bf16 on $world GPU(s) | ${b}×1024 | rc $rc | $toks | $mfu% | $(mfu989 "$mfu") | ${pools} MB pools, ${mem} MiB nvidia-smi |")
  LAST_TOKS=$toks
}

mfu989() { # MFU against 788 → against 989
  "$PY" -c "import sys; v=sys.argv[1]; print('-' if v in ('-','') else f'{float(v)*788/989:.1f}%')" "$1"
}

# torch NAME PRESET MICRO_BATCH STEPS BUDGET [--compile]
torch_ref() {
  local name=$1 preset=$2 b=$3 steps=$4 budget=$5
  shift 5
  echo "== $name (budget ${budget}s)"
  timeout "$budget" "$PY" experiments/torch_gpt2.py train --preset "$preset" --device cuda --dtype bf16 \
    --shards "$OUT/shards" --micro-batch "$b" --seq-len 1024 --total-batch-tokens $((b * 1024)) \
    --steps "$steps" --warmup-steps-excluded 5 --lr 6e-4 --min-lr 6e-5 --warmup 5 --max-steps "$steps" \
    "$@" >"$OUT/$name.jsonl" 2>"$OUT/$name.err"
  local rc=$?
  tail -2 "$OUT/$name.err"
  local line
  line=$("$PY" - "$OUT/$name.jsonl" "$preset" <<'PY'
import json, sys
# flops per token: 6N + 12 L C T with N excluding wpe (nanoGPT estimate_mfu, ours: gpt2-model params.rs)
cfg = {"gpt2-117m": (12, 768), "gpt2-345m": (24, 1024)}[sys.argv[2]]
s = [json.loads(l)["summary"] for l in open(sys.argv[1]) if '"summary"' in l]
if not s:
    print("- - - -"); sys.exit()
s = s[0]
L, C = cfg
n = s["params"] - 1024 * C
f = 6 * n + 12 * L * C * 1024
mfu = s["tokens_per_sec"] * f / 788e12 * 100
print(f'{s["tokens_per_sec"]:.0f} {mfu:.1f} {mfu * 788 / 989:.1f} {s["peak_mem_mib"]:.0f}')
PY
)
  local toks mfu mfu2 mem
  read -r toks mfu mfu2 mem <<<"$line"
  ROWS+=("| torch $name | ${b}×1024 | rc $rc | $toks | $mfu% | $mfu2% | $mem MiB (allocator peak) |")
}

# 1. Data.
echo "== prepare (budget 20s)"
timeout 20 "$BIN" prepare --quiet --config configs/data/sample.yaml --out "$OUT/shards" --threads 16
ROWS+=("| prepare sample corpus | - | rc $? | - | - | - | - |")

# 2–3. Our trainer.
ours ours-117m gpt2-117m 16 30 70
if [ -f target/gpu/gpt2-autotune.gz ]; then
  gzip -dc target/gpu/gpt2-autotune.gz >"$OUT/gpt2-autotune" && chmod +x "$OUT/gpt2-autotune"
  # The first run on the card: the tuning happens inside this budget.
  ours ours-117m-autotune gpt2-117m 16 10 30 "[0]" fused "$OUT/gpt2-autotune"
fi
TOKS_117M_1GPU=$LAST_TOKS
ours ours-117m-composed gpt2-117m 16 10 40 "[0]" composed
ours ours-345m gpt2-345m 8 20 70

# 4. PyTorch reference, same presets, shapes and shards.
torch_ref eager-117m gpt2-117m 16 20 30
torch_ref compile-117m gpt2-117m 16 20 50 --compile
torch_ref eager-345m gpt2-345m 8 15 30
torch_ref compile-345m gpt2-345m 8 15 50 --compile

# 5. Largest micro-batch for 1542M (two steps must complete).
echo "== max-1542m (budget 60s)"
FIT=none
DEADLINE=$(($(date +%s) + 60))
for b in 8 6 4 3 2 1; do
  left=$((DEADLINE - $(date +%s)))
  [ "$left" -le 5 ] && break
  run="$OUT/run-1542m-b$b"
  rm -rf "$run"
  if timeout "$left" "$BIN" train --quiet --config configs/train/gpt2-1542m.yaml \
    --set run_dir="$run" --set data.shards="$OUT/shards" --set data.verify=false \
    --set batch.micro_batch="$b" --set batch.seq_len=1024 --set batch.total_batch_tokens=$((b * 1024)) \
    --set optimizer.max_tokens=null --set optimizer.max_steps=2 --set optimizer.warmup_steps=1 \
    --set eval.interval=0 --set eval.tokens=$((b * 1024)) --set checkpoint.interval=100000 --set checkpoint.at_end=false \
    --set log_interval=1 >"$run.log" 2>&1; then
    FIT=$b
    break
  fi
  echo "micro-batch $b: $(tail -1 "$run.log")"
done
ROWS+=("| ours gpt2-1542m bf16: largest micro-batch | $FIT×1024 | - | - | - | - | - |")

# 6. Data parallel on two GPUs (NCCL), where the machine has them.
NGPU=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if [ "$NGPU" -ge 2 ]; then
  ours ours-117m-2gpu gpt2-117m 16 20 30 "[0, 1]"
  EFF=$("$PY" -c "import sys; a,b=sys.argv[1:]; print('-' if '-' in (a,b) else f'{100*float(b)/(2*float(a)):.0f}%')" "$TOKS_117M_1GPU" "$LAST_TOKS")
  ROWS+=("| 2-GPU scaling efficiency (117M, tokens/s ÷ 2 × 1 GPU) | 16×1024 per GPU | - | - | $EFF | - | - |")
else
  ROWS+=("| ours-117m-2gpu: skipped, nvidia-smi lists $NGPU GPU(s) | - | - | - | - | - | - |")
fi

# 7. The multi-process NCCL engine on one GPU (distributed.backend: nccl, a one-rank
#    communicator: the id, ncclCommInitRank, the bucket all-reduce on Burn's buffers and the
#    scalar collectives all run): its losses must equal the run without it bit for bit (the mean
#    over one rank is the value). Needs libnccl.so on the machine; without it the run fails with
#    "libnccl.so not found" and the row says so.
if [ "$NGPU" -lt 2 ]; then
  echo "== nccl-1rank (budget 30s)"
  for mode in plain nccl; do
    run="$OUT/run-nccl-$mode"
    rm -rf "$run"
    extra=()
    [ "$mode" = nccl ] && extra=(--set distributed.backend=nccl)
    timeout 15 "$BIN" train --quiet --config configs/train/tiny-cpu.yaml \
      --set run_dir="$run" --set data.shards="$OUT/shards" --set data.verify=false \
      --set device.kind=cuda --set precision=f32 --set optimizer.max_steps=8 --set optimizer.warmup_steps=2 \
      --set eval.interval=0 --set checkpoint.interval=100000 --set log_interval=1 "${extra[@]}" >"$run.log" 2>&1
    echo "$mode: rc $? $(tail -1 "$run.log")"
  done
  SAME=$("$PY" -c "import json,sys
l=lambda p:[(r['step'],r['loss'],r.get('grad_norm')) for r in map(json.loads,open(p)) if r['kind']=='train']
a,b=(l(sys.argv[1]+'/metrics.jsonl'),l(sys.argv[2]+'/metrics.jsonl'))
print('equal' if a==b and len(a)==8 else f'differ ({len(a)} vs {len(b)} steps)')" "$OUT/run-nccl-plain" "$OUT/run-nccl-nccl" 2>/dev/null || echo "no metrics")
  ROWS+=("| nccl-1rank: tiny-cpu f32, backend nccl vs none, 8 steps | 8×128 | losses $SAME | - | - | - | - |")
fi

echo
echo "Total $(($(date +%s) - START)) s. MFU against 788 TFLOP/s (measured bf16) and 989 (datasheet)."
echo
echo "| section | B×T | status | tokens/s | MFU (788) | MFU (989) | peak memory |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
