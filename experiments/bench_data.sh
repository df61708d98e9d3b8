#!/usr/bin/env bash
# Data-pipeline benchmark: `gpt2 prepare` end to end vs Python tiktoken (`gpt2` encoding) on
# the same real text, in the same run, on this machine. Appends a dated block to
# experiments/RESULTS-data.md with the command and the commit.
#
#   make bench-data            (= bash experiments/bench_data.sh)
#
# Corpus 1 ("repeated"): data/sample/sotu.jsonl.gz (every US State of the Union address, ~12 MB
# of prose), repeated REPEAT times as separate inputs with a per-copy marker so nothing is
# deduplicated away (default 4 → ~48 MB; REPEAT=1 is quick). Repeats flatter the tokeniser's
# piece cache, so:
# Corpus 2 ("unseen"): text without repeats, the reStructuredText sources of the Linux kernel
# documentation in the Debian package linux-doc-6.1 (GPL-2; 3,183 documents, 24 MB, with the
# Chinese/Japanese/Korean/Italian/Spanish translations), fetched once with `apt-get download`
# into target/bench-cache (UNSEEN=0 skips it). Its ids are also checked against tiktoken-rs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPEAT="${REPEAT:-4}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Benchmark numbers need the CPUs: wait (up to WAIT_S seconds) until no rustc is running.
WAIT_S="${WAIT_S:-1800}"
for _ in $(seq 1 $((WAIT_S / 10))); do [ "$(pgrep -c rustc || true)" = 0 ] && break; sleep 10; done
# The dev profile: dependencies and gpt2-data are built at opt-level 3 there (Cargo.toml), so
# this is the same code speed as release without a second Burn build.
cargo build -q -p gpt2-cli --features "${FEATURES:-wgpu}"   # the make demo/test feature set: no second Burn build
cargo build -q -p gpt2-data --example tokenize_check
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug/gpt2"
UNSEEN="${UNSEEN:-1}"
if [ "$UNSEEN" = 1 ]; then
  CACHE="$TARGET/bench-cache"   # under target/: ignored by git, kept between runs
  mkdir -p "$CACHE" "$WORK/unseen"
  DEB=$(ls "$CACHE"/linux-doc-6.1_*_all.deb 2>/dev/null | head -1 || true)
  if [ -z "$DEB" ]; then
    (cd "$CACHE" && apt-get download linux-doc-6.1 >/dev/null)
    DEB=$(ls "$CACHE"/linux-doc-6.1_*_all.deb | head -1)
  fi
  dpkg-deb -x "$DEB" "$WORK/deb"
  python3 - "$WORK/deb/usr/share/doc/linux-doc-6.1/html/_sources" "$WORK/unseen" <<'PY'
import glob, json, sys
src, out = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(src + "/**/*.rst.txt", recursive=True))
parts = [open(f"{out}/part{i}.jsonl", "w", encoding="utf-8") for i in range(4)]
for k, p in enumerate(files):
    text = open(p, encoding="utf-8", errors="replace").read()
    parts[k % 4].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
PY
  UBYTES=$(python3 -c "import json,glob; print(sum(len(json.loads(l)['text'].encode()) for p in glob.glob('$WORK/unseen/part*.jsonl') for l in open(p, encoding='utf-8')))")
  cat "$WORK"/unseen/part*.jsonl > "$WORK/unseen.jsonl"
  UCHECK=$("$TARGET/debug/examples/tokenize_check" "$WORK/unseen.jsonl" --check | tail -1)
fi

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

# Each prepare row is the median of RUNS runs (default 3; a fresh output directory each time):
# on this shared 2-core VM one run can be 20% off the next.
RUNS="${RUNS:-3}"
run_prepare() { # threads out-dir inputs... → "median-seconds peak-KB min max"
  local threads="$1" out="$2"; shift 2
  local all=() kb=0
  for _ in $(seq "$RUNS"); do
    rm -rf "$out"
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN" prepare --quiet --name bench --threads "$threads" \
      --out "$out" $(for f in "$@"; do echo --input "$f"; done) 2>/dev/null
    read -r secs kb < "$WORK/time"
    all+=("$secs")
  done
  python3 -c "import statistics,sys; v=sorted(map(float,sys.argv[2:])); print(f'{statistics.median(v):.2f} {sys.argv[1]} {v[0]:.2f} {v[-1]:.2f}')" "$kb" "${all[@]}"
}
read -r P1 M1 P1LO P1HI < <(run_prepare 1 "$WORK/out1" "$WORK"/copy*.jsonl)
read -r P2 M2 P2LO P2HI < <(run_prepare 2 "$WORK/out2" "$WORK"/copy*.jsonl)
if [ "$UNSEEN" = 1 ]; then
  read -r U1 UM1 U1LO U1HI < <(run_prepare 1 "$WORK/uout1" "$WORK"/unseen/part*.jsonl)
  read -r U2 UM2 U2LO U2HI < <(run_prepare 2 "$WORK/uout2" "$WORK"/unseen/part*.jsonl)
  USAME=yes
  for f in "$WORK"/uout1/*.bin; do cmp -s "$f" "$WORK/uout2/$(basename "$f")" || USAME=NO; done
fi
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
if [ "$UNSEEN" = 1 ]; then
  read -r UT1 < <(experiments/.venv/bin/python - "$WORK/unseen.jsonl" <<'PY'
import json, sys, time, tiktoken
enc = tiktoken.get_encoding("gpt2")
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")]
t = time.perf_counter(); [enc.encode_ordinary(x) for x in texts]; print(f"{time.perf_counter() - t:.2f}")
PY
)
fi
mbs() { python3 -c "print(f'{${2:-$BYTES}/1e6/$1:.1f}')"; }
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet || echo "+dirty")
{
  echo
  echo "## $(date -u +%Y-%m-%d) — commit $COMMIT — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`REPEAT=$REPEAT RUNS=$RUNS bash experiments/bench_data.sh\` — $BYTES bytes of real text (sotu × $REPEAT)."
  echo
  echo "| what | seconds (prepare: median of $RUNS, min–max) | MB/s of text | peak RSS |"
  echo "|---|---|---|---|"
  echo "| gpt2 prepare, 1 thread (read, clean, tokenise, MinHash, dedup, shard, sha256) | $P1 ($P1LO–$P1HI) | $(mbs $P1) | $((M1/1024)) MB |"
  echo "| gpt2 prepare, 2 threads | $P2 ($P2LO–$P2HI) | $(mbs $P2) | $((M2/1024)) MB |"
  echo "| Python tiktoken 0.14 encode_ordinary, 1 thread (tokenise only) | $T1 | $(mbs $T1) | |"
  echo "| Python tiktoken encode_ordinary_batch, 2 threads (tokenise only) | $T2 | $(mbs $T2) | |"
  if [ "$UNSEEN" = 1 ]; then
    echo "| **unseen** ($UBYTES bytes, linux-doc-6.1): gpt2 prepare, 1 thread | $U1 ($U1LO–$U1HI) | $(mbs $U1 $UBYTES) | $((UM1/1024)) MB |"
    echo "| **unseen**: gpt2 prepare, 2 threads | $U2 ($U2LO–$U2HI) | $(mbs $U2 $UBYTES) | $((UM2/1024)) MB |"
    echo "| **unseen**: Python tiktoken encode_ordinary, 1 thread (tokenise only) | $UT1 | $(mbs $UT1 $UBYTES) | |"
  fi
  echo
  echo "Load average before the runs: $LOAD. Dedup index: $DEDUP (peak RSS includes it)."
  echo "Shards identical for 1 and 2 threads: $SAME. Ratio prepare(2 threads) / tiktoken(1 thread): $(python3 -c "print(f'{$T1/$P2:.2f}')")×."
  if [ "$UNSEEN" = 1 ]; then
    echo "Unseen corpus: shards identical for 1 and 2 threads: $USAME; $UCHECK."
  fi
} | tee -a experiments/RESULTS-data.md
