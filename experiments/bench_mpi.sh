#!/usr/bin/env bash
# What the second process costs on the CPU (RESULTS.md part 11): the same tiny-cpu training, one
# global batch of 2 × B × T tokens, run three ways on the bundled sample shards:
#   one      1 process, 1 replica, accumulating 2 micro-batches      (RAYON_NUM_THREADS=2)
#   replicas 1 process, 2 replicas (device.ids [0, 1])               (RAYON_NUM_THREADS=2)
#   mpirun   2 processes (mpirun -np 2), 1 replica each, host-staged MPI all-reduce
#            (RAYON_NUM_THREADS=1 each, so all three use 2 threads)
# and zero 1 under mpirun. Prints mean tokens/s over steps 3..STEPS and the final loss of each;
# `replicas` and both `mpirun` rows end on the same loss to the bit.
#
#   experiments/bench_mpi.sh [GPT2_BIN] [PRESET B T STEPS]   (a binary built with --features mpi)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/gpt2} PRESET=${2:-tiny-cpu} B=${3:-8} T=${4:-128} STEPS=${5:-30}
SHARDS=data/shards/sotu
[ -f "$SHARDS/manifest.json" ] || "$BIN" prepare --quiet --config configs/data/sample.yaml
RUN=$(mktemp -d)
trap 'rm -rf "$RUN"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(train --quiet --config configs/train/tiny-cpu.yaml --set model="$PRESET"
  --set data.shards="$SHARDS" --set data.shuffle=false
  --set batch.micro_batch="$B" --set batch.seq_len="$T" --set batch.total_batch_tokens=$((2 * B * T))
  --set optimizer.max_steps="$STEPS" --set optimizer.warmup_steps=5 --set eval.interval=0
  --set eval.tokens=$((2 * B * T)) --set checkpoint.interval=100000 --set checkpoint.at_end=false
  --set log_interval=1)
report() {
  python3 - "$RUN/$1/metrics.jsonl" "$1" <<'PY'
import json, sys
train = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "train"]
steady = [r for r in train if r["step"] >= 3]
tps = sum(r["tokens_per_sec"] for r in steady) / len(steady)
print(f"| {sys.argv[2]} | {tps:.0f} | {train[-1]['loss']!r} |")
PY
}
echo "| mode | tokens/s | final loss |"
echo "|---|---|---|"
RAYON_NUM_THREADS=2 "$BIN" "${args[@]}" --set run_dir="$RUN/one" 2>"$RUN/log" && report one
RAYON_NUM_THREADS=2 "$BIN" "${args[@]}" --set run_dir="$RUN/replicas" --set "device.ids=[0,1]" 2>"$RUN/log" && report replicas
mpirun --oversubscribe -np 2 -x RAYON_NUM_THREADS=1 "$BIN" "${args[@]}" --set run_dir="$RUN/mpirun" 2>"$RUN/log" && report mpirun
mpirun --oversubscribe -np 2 -x RAYON_NUM_THREADS=1 "$BIN" "${args[@]}" --set run_dir="$RUN/mpirun-zero1" \
  --set distributed.zero=1 2>"$RUN/log" && report mpirun-zero1
