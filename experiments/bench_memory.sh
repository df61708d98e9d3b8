#!/usr/bin/env bash
# Issue 18's memory benchmark: the peak device memory (`mem_peak_mb`) of gpt2-10m training steps
# on the wgpu device (Mesa's lavapipe on a machine without a GPU), micro-batch 2, T = 64, 256,
# 1024, in three configurations, each beside the plan's estimate (`gpt2 train --dry-run`):
#
#   before   the composed attention (stores the [B, nh, T, T] probabilities) and the LM head
#            in one piece (all B·T rows of logits at once): what training did before issue 18
#   flash    flash attention, the LM head still in one piece
#   after    flash attention and the LM head in row chunks (the defaults)
#
#   bash experiments/bench_memory.sh          # prints a dated Markdown block for RESULTS.md
#
# Three optimizer steps per run; the table gives the first step's peak and the largest over the
# three (they differ where the pools reserve another page after the first step, in steps of a
# page; RESULTS.md part 6); a fresh process per run, so each peak is that run's own.
# The goal: with `after`, the increase from T = 256 to 1024 at most 6× the increase from 64 to
# 256 (memory linear in T gives 4×, attention's T² would give 16×).
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build -q --features "${FEATURES:-wgpu}" --bin gpt2
BIN=target/debug/gpt2
OUT="${OUT:-$(mktemp -d)}"
[ -f data/shards/sotu/manifest.json ] || "$BIN" prepare --quiet --config configs/data/sample.yaml

common=(--set model=gpt2-10m --set device.kind=wgpu --set data.verify=false
  --set batch.micro_batch=2 --set optimizer.max_steps=3 --set optimizer.warmup_steps=1
  --set eval.interval=0 --set checkpoint.at_end=false --set log_interval=1)
ROWS=()
for t in 64 256 1024; do
  for variant in before flash after; do
    extra=(--set batch.seq_len=$t --set batch.total_batch_tokens=$((2 * t)) --set eval.tokens=$((2 * t)))
    case $variant in
      before) extra+=(--set device.flash_attention=false --set device.lm_head_chunk_rows=$((2 * t))) ;;
      flash) extra+=(--set device.lm_head_chunk_rows=$((2 * t))) ;;
      after) ;;
    esac
    run="$OUT/$variant-$t"
    est=$("$BIN" train --config configs/train/tiny-wgpu.yaml --set run_dir="$run" "${common[@]}" "${extra[@]}" --dry-run 2>&1 |
      sed -n 's/.*memory\/device *\([0-9.]* MB\) total.*/\1/p' || true)  # a refused plan exits 1
    if "$BIN" train --quiet --config configs/train/tiny-wgpu.yaml --set run_dir="$run" "${common[@]}" "${extra[@]}" >"$run.log" 2>&1; then
      peak=$(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if '\"train\"' in l]; print(r[0]['mem_peak_mb'], '|', max(x['mem_peak_mb'] for x in r))" "$run/metrics.jsonl")
      ROWS+=("| $t | $variant | ${peak} | ${est:-refused} |")
    else
      ROWS+=("| $t | $variant | fails: $(grep -m1 -o 'needs [^;]*' "$run.log" || tail -1 "$run.log") | | ${est:-refused} |")
    fi
    echo "${ROWS[-1]}" >&2
  done
done
echo
echo "### Peak device memory, gpt2-10m, micro-batch 2, lavapipe ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD))"
echo
echo "Command: \`bash experiments/bench_memory.sh\`. \`mem_peak_mb\`: the most the wgpu device's memory pools held at once (CubeCL's high-water marks, MB = 10⁶ bytes); estimate: \`gpt2 train --dry-run\`'s memory per device."
echo
echo "| T | configuration | peak after step 1 (MB) | peak over 3 steps (MB) | plan's estimate |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
