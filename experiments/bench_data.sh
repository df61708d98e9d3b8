#!/usr/bin/env bash
# Data-pipeline benchmark: `gpt2 prepare` end to end vs Python tiktoken (`gpt2` encoding) on
# the same real text, in the same run, on this machine. Appends a dated block to
# experiments/RESULTS-data.md with the command and the commit.
#
#   make bench-data            (= bash experiments/bench_data.sh)
#
# Corpus: data/sample/sotu.jsonl.gz (every US State of the Union address, ~12 MB of prose),
# repeated REPEAT times as separate inputs with a per-copy marker so nothing is deduplicated
# away (default 4 → ~48 MB, enough for both threads to reach steady state; REPEAT=1 is quick).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPEAT="${REPEAT:-4}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The dev profile: dependencies and gpt2-data are built at opt-level 3 there (Cargo.toml), so
# this is the same code speed as release without a second Burn build.
cargo build -q -p gpt2-cli
BIN="$ROOT/target/debug/gpt2"

# Distinct copies: each document gets a copy number prepended, so exact/near dedup keep them.
python3 - "$WORK" "$REPEAT" <<'PY'
import gzip, json, sys
work, repeat = sys.argv[1], int(sys.argv[2])
docs = [json.loads(l) for l in gzip.open("data/sample/sotu.jsonl.gz", "rt", encoding="utf-8")]
for r in range(repeat):
    with open(f"{work}/copy{r}.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            # A different opening line per copy, and every 7th word varied, keeps MinHash from
            # calling the copies near duplicates while the text stays real prose.
            words = d["text"].split(" ")
            words = [w + ("s" if (i + r) % 7 == 0 and r else "") for i, w in enumerate(words)]
            f.write(json.dumps({"text": f"Copy {r}.\n" + " ".join(words)}, ensure_ascii=False) + "\n")
PY
BYTES=$(python3 -c "import json,sys,glob; print(sum(len(json.loads(l)['text'].encode()) for p in glob.glob('$WORK/copy*.jsonl') for l in open(p, encoding='utf-8')))")
echo "corpus: $REPEAT copies, $BYTES bytes of text"

run_prepare() { # threads
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN" prepare --quiet --name bench --threads "$1" \
    --out "$WORK/out$1" $(for f in "$WORK"/copy*.jsonl; do echo --input "$f"; done) 2>/dev/null
  read -r secs kb < "$WORK/time"
  echo "$secs $kb"
}
read -r P1 M1 < <(run_prepare 1)
read -r P2 M2 < <(run_prepare 2)
cmp -s "$WORK/out1/bench_train_000000.bin" "$WORK/out2/bench_train_000000.bin" && SAME=yes || SAME=NO
DEDUP=$(python3 -c "import json; m=json.load(open('$WORK/out2/manifest.json')); print(f\"{m['dedup_index_bytes_per_document']:.0f} bytes/document ({m['counts']['documents']} documents)\")")
LOAD=$(cut -d' ' -f1 /proc/loadavg)

bash experiments/setup_tiktoken.sh >/dev/null
export TIKTOKEN_CACHE_DIR="$ROOT/experiments/.tiktoken-cache"
read -r T1 T2 < <(experiments/.venv/bin/python - "$WORK" <<'PY'
import glob, json, sys, time, tiktoken
enc = tiktoken.get_encoding("gpt2")
texts = [json.loads(l)["text"] for p in sorted(glob.glob(sys.argv[1] + "/copy*.jsonl")) for l in open(p, encoding="utf-8")]
t = time.perf_counter(); [enc.encode_ordinary(x) for x in texts]; t1 = time.perf_counter() - t
t = time.perf_counter(); enc.encode_ordinary_batch(texts, num_threads=2); t2 = time.perf_counter() - t
print(f"{t1:.2f} {t2:.2f}")
PY
)
mbs() { python3 -c "print(f'{$BYTES/1e6/$1:.1f}')"; }
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet || echo "+dirty")
{
  echo
  echo "## $(date -u +%Y-%m-%d) — commit $COMMIT — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`REPEAT=$REPEAT bash experiments/bench_data.sh\` — $BYTES bytes of real text (sotu × $REPEAT)."
  echo
  echo "| what | seconds | MB/s of text | peak RSS |"
  echo "|---|---|---|---|"
  echo "| gpt2 prepare, 1 thread (read, clean, tokenise, MinHash, dedup, shard, sha256) | $P1 | $(mbs $P1) | $((M1/1024)) MB |"
  echo "| gpt2 prepare, 2 threads | $P2 | $(mbs $P2) | $((M2/1024)) MB |"
  echo "| Python tiktoken 0.14 encode_ordinary, 1 thread (tokenise only) | $T1 | $(mbs $T1) | |"
  echo "| Python tiktoken encode_ordinary_batch, 2 threads (tokenise only) | $T2 | $(mbs $T2) | |"
  echo
  echo "Load average before the runs: $LOAD. Dedup index: $DEDUP (peak RSS includes it)."
  echo "Shards identical for 1 and 2 threads: $SAME. Ratio prepare(2 threads) / tiktoken(1 thread): $(python3 -c "print(f'{$T1/$P2:.2f}')")×."
} | tee -a experiments/RESULTS-data.md
