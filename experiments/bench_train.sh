#!/usr/bin/env bash
# CPU training and eval, side by side with PyTorch in one run (issue 6, parts 2 and 3).
#
#   experiments/bench_train.sh            # PYTHON=... to pick an interpreter with torch + numpy
#
# For each row: `gpt2 train` (this repo, flex backend) and experiments/torch_gpt2.py (GPT-2 from
# its equations in PyTorch) train the same preset on the same sample shards, read in the same
# order (shuffle off), with the same batch, sequence length, accumulation, optimiser and LR
# schedule, f32, both on $THREADS threads. Then each model, as trained, is evaluated forward-only
# on the held-out split with the same window. Prints a dated Markdown block for RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
OUT="${OUT:-target/bench-train}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"
# PyTorch from PyPI in experiments/.venv (shared with bench_data.sh's tiktoken), unless PYTHON
# names an interpreter that has it. The first install downloads a few GB (CUDA wheels).
if [ -z "${PYTHON:-}" ]; then
  [ -x experiments/.venv/bin/python ] || python3 -m venv experiments/.venv
  experiments/.venv/bin/python -c "import torch, numpy" 2>/dev/null ||
    experiments/.venv/bin/python -m pip install -q torch numpy
fi
PY="${PYTHON:-experiments/.venv/bin/python}"
cargo build -q --features "${FEATURES:-wgpu}" --bin gpt2   # the make demo/test feature set: no second Burn build
BIN="${CARGO_TARGET_DIR:-target}/debug/gpt2"
SHARDS=data/shards/sotu
[ -f "$SHARDS/manifest.json" ] || "$BIN" prepare --quiet --config configs/data/sample.yaml
rm -rf "$OUT"
mkdir -p "$OUT"

# preset micro_batch seq_len accum steps
ROWS=("tiny-cpu 8 128 2 20" "gpt2-10m 4 256 1 20")
for row in "${ROWS[@]}"; do
  read -r preset b t accum steps <<<"$row"
  run="$OUT/$preset"
  common=(--micro-batch "$b" --seq-len "$t" --total-batch-tokens $((b * t * accum)) --steps "$steps"
    --lr 3e-3 --min-lr 3e-4 --warmup 5 --max-steps "$steps" --threads "$THREADS")
  echo "== $preset: ours" >&2
  "$BIN" train --quiet --config configs/train/tiny-cpu.yaml --set model="$preset" \
    --set run_dir="$run" --set data.shards="$SHARDS" --set data.shuffle=false \
    --set batch.micro_batch="$b" --set batch.seq_len="$t" --set batch.total_batch_tokens=$((b * t * accum)) \
    --set optimizer.max_steps="$steps" --set optimizer.warmup_steps=5 --set optimizer.lr=3e-3 \
    --set optimizer.min_lr=3e-4 --set eval.interval=0 --set eval.tokens=$((b * t)) \
    --set checkpoint.interval=100000 --set log_interval=1 >"$run.train.log" 2>&1
  "$BIN" eval --quiet --checkpoint "$run" --shards "$SHARDS" --context "$t" --batch "$b" \
    --max-tokens $((b * t * 16)) --json "$run.eval.json" >"$run.eval.log"
  echo "== $preset: torch" >&2
  "$PY" experiments/torch_gpt2.py train --preset "$preset" --shards "$SHARDS" "${common[@]}" >"$run.torch-train.jsonl"
  "$PY" experiments/torch_gpt2.py eval --preset "$preset" --shards "$SHARDS" --micro-batch "$b" \
    --seq-len "$t" --batches 16 --threads "$THREADS" >"$run.torch-eval.jsonl"
done

echo "## $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+dirty')"
echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Command: THREADS=$THREADS experiments/bench_train.sh"
echo
"$PY" - "$OUT" "${ROWS[@]}" <<'PY'
import json, math, sys
out, rows = sys.argv[1], sys.argv[2:]
SKIP = 2  # untimed warm-up steps on both sides
def jsonl(p):
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")]
train_rows, eval_rows = [], []
for row in rows:
    preset, b, t, accum, steps = row.split()
    run = f"{out}/{preset}"
    ours = [r for r in jsonl(f"{run}/metrics.jsonl") if r["kind"] == "train"]
    torch_lines = jsonl(f"{run}.torch-train.jsonl")
    torch_steps = [r for r in torch_lines if "step" in r]
    tsum = [r["summary"] for r in torch_lines if "summary" in r][0]
    tok = int(b) * int(t) * int(accum)
    timed = [r for r in ours if r["step"] > SKIP]
    ours_tps = tok * len(timed) / (sum(r["ms_per_step"] for r in timed) / 1e3)
    tt = torch_steps[SKIP:]
    torch_tps = tok * len(tt) / (sum(r["ms"] for r in tt) / 1e3)
    train_rows.append((preset, tsum["params"], f"{b}×{t}×{accum}", ours_tps, torch_tps,
                       ours[0]["loss"], torch_steps[0]["loss"], ours[-1]["loss"], torch_steps[-1]["loss"], int(steps)))
    ev = json.load(open(f"{run}.eval.json"))
    te = [r for r in jsonl(f"{run}.torch-eval.jsonl") if "step" in r][SKIP:]
    torch_eval_tps = int(b) * int(t) * len(te) / (sum(r["ms"] for r in te) / 1e3)
    eval_rows.append((preset, f"{b}×{t}", ev["tokens_per_sec"], ours_tps, torch_eval_tps, torch_tps))
print(f"Training, f32, same data in the same order; ln(50257) = {math.log(50257):.3f}; "
      f"tokens/s over steps {SKIP + 1}..N (torch {tsum['torch']}, {tsum['threads']} threads):")
print()
print("| preset | params | B×T×accum | ours tokens/s | PyTorch tokens/s | ours / PyTorch | loss step 1 (ours / PyTorch) | loss step N (ours / PyTorch) |")
print("|---|---|---|---|---|---|---|---|")
for p, n, shape, o, tp, l1o, l1t, lno, lnt, steps in train_rows:
    print(f"| {p} | {n:,} | {shape} | {o:.0f} | {tp:.0f} | **{o / tp:.2f}×** | {l1o:.3f} / {l1t:.3f} | step {steps}: {lno:.3f} / {lnt:.3f} |")
print()
print("Forward-only evaluation of the trained model on the val split vs training (same B×T):")
print()
print("| preset | B×T | ours eval tokens/s | ours train tokens/s | eval / train | PyTorch eval tokens/s | PyTorch eval / train |")
print("|---|---|---|---|---|---|---|")
for p, shape, e, tr, te, ttr in eval_rows:
    print(f"| {p} | {shape} | {e:.0f} | {tr:.0f} | {e / tr:.1f}× | {te:.0f} | {te / ttr:.1f}× |")
PY
