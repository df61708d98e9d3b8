#!/usr/bin/env bash
# One command for the GPU machine (an H200, no network): fixed shapes and step counts, a time
# budget per section, ≤ 8 minutes in all, a table printed last. Trainer and benchmark issues
# extend this one script.
#
#   bash experiments/gpu.sh                 # uses $GPT2_BIN or target/release/gpt2
#
# Needs a `--features cuda` build carried from a CPU machine (the GPU machine cannot build:
# no network). Without one it says so and exits 2.
#
# Sections:
#   1. prepare the bundled sample corpus (CPU, seconds)
#   2. gpt2-117m, bf16, context 1024, micro-batch 16, 40 steps: tokens/s, MFU, peak memory
# MFU is reported against 788 TFLOP/s (measured bf16 8192³ matmul on an H200) and 989 (datasheet).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${GPT2_BIN:-target/release/gpt2}"
OUT="${OUT:-/tmp/gpt2-gpu}"
mkdir -p "$OUT"
if [ ! -x "$BIN" ] || ! "$BIN" train --help >/dev/null 2>&1; then
  echo "no gpt2 binary at $BIN; build one with: cargo build --release --features cuda" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
ROWS=()

section() { # name budget_seconds command...
  local name="$1" budget="$2"; shift 2
  echo "== $name (budget ${budget}s)"
  local start=$(date +%s)
  timeout "$budget" "$@"; local rc=$?
  echo "== $name: rc $rc in $(( $(date +%s) - start ))s"
  return $rc
}

# 1. Data.
section prepare 60 "$BIN" prepare --quiet --config configs/data/sample.yaml --out "$OUT/shards" --threads 16

# 2. 117M bf16 on one GPU.
peak_mem() { # poll nvidia-smi while a command runs; print the max used MiB
  local max=0 v
  while kill -0 "$1" 2>/dev/null; do
    v=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
    [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
    sleep 0.5
  done
  echo "$max"
}
RUN="$OUT/run-117m"
rm -rf "$RUN"
"$BIN" train --config configs/train/gpt2-117m.yaml \
  --set run_dir="$RUN" --set data.shards="$OUT/shards" --set data.verify=false \
  --set batch.micro_batch=16 --set batch.total_batch_tokens=16384 \
  --set optimizer.max_tokens=null --set optimizer.max_steps=40 --set optimizer.warmup_steps=10 \
  --set eval.interval=0 --set eval.tokens=16384 --set checkpoint.interval=1000 --set log_interval=5 \
  > "$OUT/train-117m.log" 2>&1 &
PID=$!
( sleep 300; kill -TERM $PID 2>/dev/null ) & WATCH=$!
MEM=$(peak_mem $PID)
wait $PID; RC=$?
kill $WATCH 2>/dev/null
tail -5 "$OUT/train-117m.log"
# Steady state: mean of the logged steps after the first 10.
read -r TOKS MFU < <(python3 - "$RUN/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
rows = [r for r in rows if r["step"] > 10 and r.get("tokens_per_sec")]
if not rows: print("- -"); sys.exit()
t = sum(r["tokens_per_sec"] for r in rows) / len(rows)
m = sum(r.get("mfu") or 0 for r in rows) / len(rows)
print(f"{t:.0f} {100*m:.1f}")
PY
)
ROWS+=("| trainer gpt2-117m bf16, B=16, T=1024 | rc $RC | $TOKS tok/s | MFU $MFU% of 788 TFLOP/s | peak ${MEM} MiB |")

echo
echo "| section | status | throughput | MFU | memory |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
