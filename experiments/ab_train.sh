#!/usr/bin/env bash
# Interleaved A/B of two `gpt2` binaries on the same training run (RESULTS.md, attempts 6–11).
#
#   experiments/ab_train.sh OLD_BIN NEW_BIN [PRESET B T STEPS PAIRS]
#   e.g. cp target/debug/gpt2 /tmp/gpt2-old; <change, build>; \
#        experiments/ab_train.sh /tmp/gpt2-old target/debug/gpt2 gpt2-10m 4 256 10 3
#
# Each pair runs OLD then NEW on the bundled sample shards (shuffle off, no eval until the end,
# no checkpoint), 2 threads, and prints the mean tokens/s over steps 3..STEPS with the final train
# and val loss, so a speed change and a numerics change are seen together. On a shared machine
# the spread between runs is ±5%: compare pairs, not single runs.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 PRESET=${3:-gpt2-10m} B=${4:-4} T=${5:-256} STEPS=${6:-10} PAIRS=${7:-2}
SHARDS=data/shards/sotu
[ -f "$SHARDS/manifest.json" ] || "$NEW" prepare --quiet --config configs/data/sample.yaml
RUN=$(mktemp -d)
trap 'rm -rf "$RUN"' EXIT
one() {
  rm -rf "$RUN/run"
  RAYON_NUM_THREADS=2 "$1" train --quiet --config configs/train/tiny-cpu.yaml --set model="$PRESET" \
    --set run_dir="$RUN/run" --set data.shards="$SHARDS" --set data.shuffle=false \
    --set batch.micro_batch="$B" --set batch.seq_len="$T" --set batch.total_batch_tokens=$((B * T)) \
    --set optimizer.max_steps="$STEPS" --set optimizer.warmup_steps=$((STEPS < 10 ? 1 : 5)) --set eval.interval=0 \
    --set eval.tokens=$((B * T)) --set checkpoint.interval=100000 --set checkpoint.at_end=false \
    --set log_interval=1 >"$RUN/log" 2>&1 || { cat "$RUN/log" >&2; exit 1; }
  python3 - "$RUN/run/metrics.jsonl" "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if r["kind"] == "train" and r["step"] >= 3]
val = [r for r in rows if r["kind"] == "val"]
tps = sum(r["tokens_per_sec"] for r in train) / len(train)
print(f"{sys.argv[2]}: {tps:.0f} tokens/s, loss@{train[-1]['step']} {train[-1]['loss']:.4f}, "
      f"val {val[-1]['loss'] if val else float('nan'):.4f}")
PY
}
for _ in $(seq "$PAIRS"); do one "$OLD"; one "$NEW"; done
