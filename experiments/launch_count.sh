#!/usr/bin/env bash
# Issue 19's launch count: GPU kernels launched and bytes allocated per optimizer step of `tiny`
# and `gpt2-10m` (f32 and f16) on the wgpu device (Mesa's lavapipe where there is no GPU), with
# this project's CubeCL kernels (`device.kernels: fused`, the default) and without them
# (`composed`: Burn's tensor ops, with the LM head in one piece: what a step ran before).
# Counts, not speed: lavapipe's timings mean nothing.
#
#   bash experiments/launch_count.sh        # prints a dated Markdown block for RESULTS.md
#
# How: CubeCL logs every kernel it runs ("Executing <kernel>") at profiling level `minimal`, and
# every memory reservation at memory log level `full` (a cubecl.toml in the run's working
# directory). Each configuration runs 2 and then 4 optimizer steps; the difference halved is one
# step, so model setup, the first step's shader compilation and the final validation cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build -q --features "${FEATURES:-wgpu}" --bin gpt2
BIN=$ROOT/target/debug/gpt2
[ -f data/shards/sotu/manifest.json ] || "$BIN" prepare --quiet --config configs/data/sample.yaml
OUT="${OUT:-$(mktemp -d)}"

# run NAME STEPS ARGS...: a training run in its own directory, logging kernels and allocations.
run() {
  local dir="$OUT/$1-$2"
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/cubecl.toml" <<'TOML'
[profiling.logger]
level = "minimal"
file = "kernels.log"

[memory.logger]
level = "full"
file = "memory.log"
TOML
  (cd "$dir" && "$BIN" train --quiet --config "$ROOT/configs/train/tiny-wgpu.yaml" \
    --set run_dir="$dir/run" --set data.shards="$ROOT/data/shards/sotu" --set data.verify=false \
    --set optimizer.max_steps="$2" --set optimizer.warmup_steps=1 --set eval.interval=0 \
    --set checkpoint.at_end=false --set log_interval=1 "${@:3}" >"$dir/stderr" 2>&1) ||
    { echo "$1: training failed, see $dir/stderr" >&2; tail -3 "$dir/stderr" >&2; return 1; }
  local kernels bytes
  kernels=$(grep -c '^Executing ' "$dir/kernels.log" || true)
  bytes=$(python3 - "$dir/memory.log" <<'PY'
import re, sys
units = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 2**20, "GiB": 2**30}
total = 0.0
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Reserved memory ([0-9.]+)\s*([KMG]i?B|B)?", line)
    if m:
        total += float(m.group(1)) * units.get(m.group(2) or "B", 1)
print(int(total))
PY
)
  echo "$kernels $bytes $(sort -u "$dir/kernels.log" | grep -c '^Executing ')"
}

ROWS=()
# config NAME ARGS...: kernels and bytes per step (4 steps − 2 steps, halved).
config() {
  local name=$1
  shift
  local a b
  read -r k2 b2 d2 < <(run "$name" 2 "$@")
  read -r k4 b4 d4 < <(run "$name" 4 "$@")
  local k=$(((k4 - k2) / 2)) by=$(((b4 - b2) / 2))
  ROWS+=("$name|$k|$(python3 -c "print(f'{$by/1e6:.1f}')")|$d4")
  echo "$name: $k kernels/step, $by bytes/step, $d4 distinct kernels" >&2
}

for preset in tiny gpt2-10m; do
  case $preset in
    tiny) shape=(--set batch.micro_batch=4 --set batch.seq_len=64 --set batch.total_batch_tokens=512) ;;
    gpt2-10m) shape=(--set model=gpt2-10m --set batch.micro_batch=2 --set batch.seq_len=256 --set batch.total_batch_tokens=512 --set eval.tokens=512) ;;
  esac
  for precision in f32 f16; do
    p=(--set precision=$precision)
    # composed: Burn's tensor ops and one [B·T, V] logits (before this project's kernels).
    config "$preset $precision composed" "${shape[@]}" "${p[@]}" --set device.kernels=composed \
      --set device.lm_head_chunk_rows=100000
    config "$preset $precision fused" "${shape[@]}" "${p[@]}"
  done
done

echo
echo "### Kernel launches per optimizer step on lavapipe ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD))"
echo
echo "Command: \`bash experiments/launch_count.sh\`. tiny: 4 × 64 tokens × 2 micro-batches per step; gpt2-10m: 2 × 256 × 1. \`composed\`: \`device.kernels: composed\` and the LM head in one piece; \`fused\`: the defaults. Bytes: every memory reservation CubeCL logs during a step (MB = 10⁶ bytes), reuse of pooled memory included."
echo
echo "| configuration | kernels / step | MB reserved / step | distinct kernels |"
echo "|---|---|---|---|"
for r in "${ROWS[@]}"; do
  IFS='|' read -r name k mb d <<<"$r"
  echo "| $name | $k | $mb | $d |"
done
