#!/usr/bin/env bash
# `gpt2 urls` throughput for 1 and 2 reader threads over a multi-file dump (issue 14, item 4).
# Appends a dated block to experiments/RESULTS-data.md with the command and the commit.
#
#   bash experiments/bench_urls.sh          (FILES=8 COPIES=16 by default: 8 files of ~20 MB)
#
# Dump: the real pushshift months in ../shared/fixtures/pushshift (2005-06, 2005-07), decoded
# and written COPIES times per file with the URL made distinct per copy (`?copy=N`), so each
# file is real submission JSON of a realistic size; FILES such files. Plain JSON lines, so the
# MB/s is of JSON (decompression of .zst/.xz is a separate, per-file serial cost).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FILES="${FILES:-8}"
COPIES="${COPIES:-16}"
FX="$ROOT/../shared/fixtures/pushshift"
[ -d "$FX" ] || { echo "no $FX: the benchmark needs the pushshift fixtures"; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cargo build -q -p gpt2-data --example urls_throughput
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/urls_throughput"
python3 - "$FX" "$WORK" "$FILES" "$COPIES" <<'PY'
import json, lzma, sys
fx, work, files, copies = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = [l for m in ("2005-06", "2005-07") for l in lzma.open(f"{fx}/RS_v2_{m}.xz", "rt", encoding="utf-8")]
for f in range(files):
    with open(f"{work}/RS_part{f}.jsonl", "w", encoding="utf-8") as out:
        for c in range(copies):
            for l in lines:
                d = json.loads(l)
                if isinstance(d.get("url"), str) and d["url"]:
                    d["url"] += ("&" if "?" in d["url"] else "?") + f"copy={f * copies + c}"
                out.write(json.dumps(d) + "\n")
PY
BYTES=$(cat "$WORK"/RS_part*.jsonl | wc -c)
LOAD=$(cut -d' ' -f1 /proc/loadavg)
R1=$("$BIN" 1 "$WORK/o1.parquet" "$WORK"/RS_part*.jsonl)
R2=$("$BIN" 2 "$WORK/o2.parquet" "$WORK"/RS_part*.jsonl)
cmp -s "$WORK/o1.parquet" "$WORK/o2.parquet" && SAME=yes || SAME=NO
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet -- crates/gpt2-data || echo "+dirty")
{
  echo
  echo "## $(date -u +%Y-%m-%d) — gpt2 urls, parallel readers — commit $COMMIT — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`FILES=$FILES COPIES=$COPIES bash experiments/bench_urls.sh\` — $FILES files, $BYTES bytes of submission JSON."
  echo
  echo "| reader threads | seconds | MB/s of JSON | submissions | URLs kept |"
  echo "|---|---|---|---|---|"
  read -r t s m n k <<< "$R1"; echo "| $t | $s | $m | $n | $k |"
  read -r t s m n k <<< "$R2"; echo "| $t | $s | $m | $n | $k |"
  echo
  echo "Load average before the runs: $LOAD. Parquet identical for 1 and 2 threads: $SAME."
} | tee -a experiments/RESULTS-data.md
