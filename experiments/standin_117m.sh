#!/usr/bin/env bash
# One gpt2-117m training step at 16 × 1024 per precision, on the CUDA path, against the stand-in
# driver (RESULTS.md part 9b): launches per step (a 2-step run less a 1-step run, so init is not
# counted), and the matmul kernels Burn picks on sm_90 with their tensor-core instructions. No
# kernel runs (the stand-in keeps memory on the host and never executes one), so the step takes
# seconds and its numbers mean nothing; what counts is what is compiled and launched.
#
#   experiments/standin_117m.sh    (after make check-cuda-kernels, which builds everything used)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=target/py-cuda/bin/python
NV=$("$PY" -c 'import nvidia; print(nvidia.__path__[0])')
DIR=target/cuda-standin
BIN=target/debug/gpt2 # the test build's, which has the cuda feature
[ -x "$BIN" ] && "$BIN" --version | grep -q 'built with:.*cuda' && [ -f "$DIR/libcuda.so.1" ] &&
  [ -d "$DIR/shards" ] || {
  echo "run make check-cuda-kernels first (it builds $BIN with cuda and $DIR)" >&2
  exit 2
}
export LD_LIBRARY_PATH="$PWD/$DIR:$NV/cuda_nvrtc/lib" CUDA_PATH="$PWD/$DIR/cuda"
export GPT2_STANDIN_PTXAS="$NV/cuda_nvcc/bin/ptxas" GPT2_STANDIN_NVRTC="$NV/cuda_nvrtc/lib/libnvrtc.so.12"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "| precision | launches per step | matmul kernels (tensor-core instruction shapes) | spilling kernels |"
echo "|---|---|---|---|"
for p in f32 bf16 f16; do
  for steps in 1 2; do
    mkdir -p "$OUT/$p-$steps/ptx"
    GPT2_STANDIN_LOG="$OUT/$p-$steps/log.jsonl" GPT2_STANDIN_PTX_DIR="$OUT/$p-$steps/ptx" \
      "$BIN" train --quiet -c configs/train/gpt2-117m.yaml --set precision="$p" \
      --set data.shards="$DIR/shards" --set data.verify=false --set run_dir="$OUT/$p-$steps/run" \
      --set batch.micro_batch=16 --set batch.seq_len=1024 --set batch.total_batch_tokens=16384 \
      --set optimizer.max_tokens=null --set optimizer.max_steps=$steps --set optimizer.warmup_steps=1 \
      --set eval.tokens=0 --set checkpoint.at_end=false --set checkpoint.interval=1000 \
      --set nan_policy=skip >"$OUT/$p-$steps/out.log" 2>&1 || { tail -20 "$OUT/$p-$steps/out.log"; exit 1; }
  done
  "$PY" - "$OUT/$p-1/log.jsonl" "$OUT/$p-2/log.jsonl" "$NV/cuda_nvcc/bin/ptxas" "$p" <<'PY'
import json, re, subprocess, sys
one, two, ptxas, p = sys.argv[1:]
ev1 = [json.loads(l) for l in open(one)]
ev2 = [json.loads(l) for l in open(two)]
per_step = sum(e["event"] == "launch" for e in ev2) - sum(e["event"] == "launch" for e in ev1)
shapes, matmuls, spills = set(), set(), set()
for m in (e for e in ev2 if e["event"] == "module"):
    ptx = open(m["ptx"]).read()
    r = subprocess.run([ptxas, "-v", "-arch=sm_90a", m["ptx"], "-o", "/dev/null"], capture_output=True, text=True)
    if re.search(r"[1-9]\d* bytes spill stores", r.stdout + r.stderr):
        spills.update(n.rsplit("_", 1)[0] for n in m["entries"])
    for name in m["entries"]:
        if name.startswith("matmul"):
            matmuls.add(name)
            shapes |= set(re.findall(r"wmma\.mma\.sync\.aligned\.\w+\.\w+\.(m\d+n\d+k\d+(?:\.\w+)+)", ptx))
tc = ", ".join(sorted(shapes)) or "none (scalar FMA)"
print(f"| {p} | {per_step} | {len(matmuls)}: {tc} | {len(spills)}: {', '.join(sorted(spills))} |")
PY
done
