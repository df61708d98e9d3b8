#!/usr/bin/env bash
# Model throughput on CPU (flex backend): forward+backward and forward-only tokens/s.
# Usage: experiments/bench_model.sh [THREADS]   (default 2)
# Appends nothing by itself: prints a dated Markdown block to paste into RESULTS-model.md.
# Dev profile on purpose: dependencies (burn-flex, gemm) are built at opt-level 3 there.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
export RAYON_NUM_THREADS="$THREADS"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build -q -p gpt2-model --example bench_model
BIN="$CARGO_TARGET_DIR/debug/examples/bench_model"
echo "## $(date -u +%Y-%m-%dT%H:%MZ) commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), RAYON_NUM_THREADS=$THREADS"
echo "Command: experiments/bench_model.sh $THREADS"
echo
echo "| preset | params | mode | BxT | threads | timed steps | tokens/s | achieved GFLOP/s | note |"
echo "|---|---|---|---|---|---|---|---|---|"
"$BIN" tiny 8 64 5
"$BIN" tiny-cpu 8 128 3
"$BIN" gpt2-10m 4 128 3
"$BIN" gpt2-117m 1 256 2
