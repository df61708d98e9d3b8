#!/usr/bin/env bash
# Issue 20's benchmark: `gpt2 eval --task` on the full test sets with two of our models — the demo's
# tiny-cpu run and a short gpt2-10m run — against the independent transformers scorer
# (tests/reference/eval/scorer.py) on the same exported weights, in the same run, on this
# machine's cores. Reports each task's scores (ours and the scorer's, which should agree) and
# examples per second (goal: ours ≥ 2× the scorer's).
#
#   bash experiments/bench_eval.sh            # EVALDATA=../shared/fixtures/evaldata by default
#
# Needs the test sets (not bundled): EVALDATA holds lambada_openai/lambada_test.jsonl,
# hellaswag-klosax/hellaswag_val_full.txt.bz2, wikitext-2-raw/wiki.test.raw, ptb/ptb.test.txt.
# The scorer runs in experiments/.venv (torch, transformers, tiktoken from PyPI; see
# tests/reference/eval/README.md). LIMIT=N scores only the first N examples of each set; BIN=path
# runs a `gpt2` binary built elsewhere (e.g. a clean clone's `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
EVALDATA="${EVALDATA:-$ROOT/../shared/fixtures/evaldata}"
THREADS="${THREADS:-$(nproc)}"
OUT="${OUT:-$(mktemp -d)}"
# make demo's build: the CPU backend, optimised (profile.dev). BIN=path uses a prebuilt one.
if [ -z "${BIN:-}" ]; then
  cargo build -q --bin gpt2
  BIN=$ROOT/target/debug/gpt2
fi
bash experiments/setup_tiktoken.sh >/dev/null
PY=experiments/.venv/bin/python
"$PY" -c "import torch, transformers" 2>/dev/null || "$PY" -m pip install -q torch transformers safetensors numpy
export TIKTOKEN_CACHE_DIR=$ROOT/experiments/.tiktoken-cache HF_HUB_OFFLINE=1

# The two models: the demo's run (make demo), and gpt2-10m trained briefly on the sample corpus.
[ -f data/shards/sotu/manifest.json ] || "$BIN" prepare --quiet --config configs/data/sample.yaml
[ -d runs/tiny-cpu/checkpoints ] || "$BIN" train --quiet --config configs/train/tiny-cpu.yaml --resume auto
if [ ! -d "$OUT/gpt2-10m/checkpoints" ]; then
  "$BIN" train --quiet --config configs/train/tiny-cpu.yaml --set model=gpt2-10m \
    --set run_dir="$OUT/gpt2-10m" --set batch.micro_batch=4 --set batch.seq_len=256 \
    --set batch.total_batch_tokens=2048 --set optimizer.max_steps=60 --set eval.interval=0
fi
MODELS=("tiny-cpu:runs/tiny-cpu" "gpt2-10m:$OUT/gpt2-10m")
for m in "${MODELS[@]}"; do
  "$BIN" export --checkpoint "${m#*:}" --out "$OUT/hf-${m%%:*}" >/dev/null
done

TASKS=("lambada:lambada_openai/lambada_test.jsonl" "hellaswag:hellaswag-klosax/hellaswag_val_full.txt.bz2"
  "wikitext:wikitext-2-raw/wiki.test.raw" "ptb:ptb/ptb.test.txt")
limit=()
[ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")
ROWS=()
for m in "${MODELS[@]}"; do
  name=${m%%:*}
  for t in "${TASKS[@]}"; do
    task=${t%%:*} data="$EVALDATA/${t#*:}"
    "$BIN" eval --quiet --checkpoint "${m#*:}" --task "$task" --data "$data" "${limit[@]}" \
      --json "$OUT/ours-$name-$task.json" >/dev/null
    "$PY" tests/reference/eval/scorer.py --model "$OUT/hf-$name" --task "$task" --data "$data" \
      "${limit[@]}" --threads "$THREADS" --json "$OUT/py-$name-$task.json" >/dev/null 2>&1
    ROWS+=("$("$PY" - "$OUT/ours-$name-$task.json" "$OUT/py-$name-$task.json" "$name" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
keys = [k for k in a if k not in ("task", "n", "seconds", "stride")]
scores = ", ".join(f"{k} {a[k]:.4g} ({b[k]:.4g})" for k in keys)
ra, rb = a["n"] / a["seconds"], b["n"] / b["seconds"]
print(f"| {sys.argv[3]} | {a['task']} | {a['n']} | {scores} | {ra:.1f} | {rb:.1f} | {ra / rb:.2f}× |")
PY
)")
    echo "${ROWS[-1]}" >&2
  done
done
echo
echo "### Zero-shot tasks, ours vs the transformers scorer ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD))"
echo
echo "Command: \`${LIMIT:+LIMIT=$LIMIT }bash experiments/bench_eval.sh\`; $THREADS threads ($(nproc) cores); both on the same exported weights, in one run. Scores: ours (the scorer's). Examples: documents for wikitext, lines for ptb."
echo
echo "| model | task | n | scores: ours (scorer) | ours ex/s | scorer ex/s | ratio |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
