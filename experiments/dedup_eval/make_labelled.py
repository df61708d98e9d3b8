#!/usr/bin/env python3
"""Labelled near-duplicate set from real text (issue 14): pairs at known word-5-gram Jaccard made
by controlled edits of real documents, plus the real documents left unedited.

Independent of the Rust code: Jaccard here is exact, on Python's own tokenisation of the same
definition (lowercase runs of Unicode alphanumerics, 5-word shingles; a text under 5 words is one
shingle), so the Rust MinHash is measured against ground truth, not against itself.

Each base document gets one variant at a target Jaccard in TARGETS, made by one of two edits
(alternating): "substitute" replaces scattered words with words of an unrelated real document;
"splice" replaces a contiguous block with a block of an unrelated real document (donors are
not themselves in the set). The amount is
found by bisection so the exact Jaccard lands within 0.01 of the target. Every document is then
labelled with its exact highest Jaccard to any other document of the set (via an inverted index),
which is what "genuinely distinct" means for the false-drop rate.

    python3 make_labelled.py SOURCE.jsonl[.gz] OUT.jsonl.gz --bases-per-target 10 --max-words 400

Output lines, in the order the Rust evaluation feeds them to dedup (each base before its
variant): {"id", "role": "base"|"variant"|"unrelated", "pair": id or null, "target", "jaccard"
(to the pair), "max_jaccard" (to any other document), "edit", "text"}.
"""
import argparse, gzip, json, random, re
from collections import defaultdict

TARGETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
WORD = re.compile(r"[^\W_]+")


def words(text):
    return [w.lower() for w in WORD.findall(text)]


def shingles(text, n=5):
    w = words(text)
    if len(w) < n:
        return {tuple(w)}
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a, b):
    return len(a & b) / len(a | b) if a or b else 1.0


def truncate(text, max_words):
    """The text up to its max_words-th word (keeping layout), so documents stay small."""
    if max_words <= 0:
        return text
    for i, m in enumerate(WORD.finditer(text)):
        if i == max_words:
            return text[:m.start()].rstrip()
    return text


def substitute(text, donor_words, k, rng_seed):
    toks = list(WORD.finditer(text))
    rng = random.Random(rng_seed)
    order = list(range(len(toks)))
    rng.shuffle(order)
    chosen = set(order[:k])
    out, last = [], 0
    for i, m in enumerate(toks):
        out.append(text[last:m.start()])
        out.append(donor_words[(i * 7919 + rng_seed) % len(donor_words)] if i in chosen else m.group())
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def splice(text, donor_text, k, rng_seed):
    """Replace k consecutive words (from a seeded start) with k words of the donor."""
    toks = list(WORD.finditer(text))
    dt = list(WORD.finditer(donor_text))
    k = min(k, len(toks), len(dt))
    if k == 0:
        return text
    start = random.Random(rng_seed).randrange(0, len(toks) - k + 1)
    a, b = toks[start].start(), toks[start + k - 1].end()
    block = donor_text[dt[0].start():dt[k - 1].end()]
    return text[:a] + block + text[b:]


def make_variant(text, donor, target, kind, seed):
    base = shingles(text)
    n = len(WORD.findall(text))
    donor_words = WORD.findall(donor)
    edit = (lambda k: substitute(text, donor_words, k, seed)) if kind == "substitute" else (
        lambda k: splice(text, donor, k, seed))
    lo, hi = 0, n  # J(edit(lo)) >= target > J(edit(hi)) roughly; J falls as k grows
    best = None
    for _ in range(30):
        if lo > hi:
            break
        k = (lo + hi) // 2
        v = edit(k)
        j = jaccard(base, shingles(v))
        if best is None or abs(j - target) < abs(best[1] - target):
            best = (v, j)
        if abs(j - target) <= 0.005:
            break
        if j > target:
            lo = k + 1
        else:
            hi = k - 1
    return best


def max_jaccards(docs):
    """Exact highest Jaccard of each document to any other, via an inverted shingle index."""
    sets = [frozenset(hash(s) for s in shingles(d["text"])) for d in docs]
    index = defaultdict(list)
    for i, s in enumerate(sets):
        for h in s:
            index[h].append(i)
    best = [0.0] * len(docs)
    for i, s in enumerate(sets):
        shared = defaultdict(int)
        for h in s:
            for j in index[h]:
                if j != i:
                    shared[j] += 1
        for j, c in shared.items():
            jac = c / (len(s) + len(sets[j]) - c)
            if jac > best[i]:
                best[i] = jac
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--bases-per-target", type=int, default=10)
    ap.add_argument("--max-words", type=int, default=400)
    ap.add_argument("--min-words", type=int, default=150)
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    op = gzip.open if a.source.endswith(".gz") else open
    texts = [truncate(json.loads(l)["text"], a.max_words) for l in op(a.source, "rt", encoding="utf-8")]
    texts = [t for t in texts if len(WORD.findall(t)) >= a.min_words]
    rng = random.Random(a.seed)
    rng.shuffle(texts)
    nb = a.bases_per_target * len(TARGETS)
    if nb * 2 > len(texts):
        raise SystemExit(f"{len(texts)} usable documents: too few for {nb} bases and their donors")
    bases, donors, rest = texts[:nb], texts[nb:2 * nb], texts[2 * nb:]
    docs = []
    for i, (text, donor) in enumerate(zip(bases, donors)):
        target = TARGETS[i % len(TARGETS)]
        kind = "substitute" if (i // len(TARGETS)) % 2 == 0 else "splice"
        v, j = make_variant(text, donor, target, kind, a.seed * 1000 + i)
        bid = f"b{i:04d}"
        docs.append({"id": bid, "role": "base", "pair": f"v{i:04d}", "target": target,
                     "jaccard": j, "edit": kind, "text": text})
        docs.append({"id": f"v{i:04d}", "role": "variant", "pair": bid, "target": target,
                     "jaccard": j, "edit": kind, "text": v})
    # Donors are edit material only and stay out of the set: a variant spliced down to Jaccard
    # 0.1 with its base is mostly its donor's text, and would be the donor's near duplicate.
    for i, t in enumerate(rest):
        docs.append({"id": f"u{i:04d}", "role": "unrelated", "pair": None, "target": None,
                     "jaccard": None, "edit": None, "text": t})
    # Interleave: unrelated documents first in a shuffled order, each pair kept base-then-variant
    # but with other documents between them, as in a real input.
    pairs = [docs[k:k + 2] for k in range(0, 2 * nb, 2)]
    unrel = docs[2 * nb:]
    order, ui = [], 0
    for p in pairs:
        order.append(p[0])
        order.extend(unrel[ui:ui + 1])
        ui += 1
        order.append(p[1])
    order.extend(unrel[ui:])
    for d, m in zip(order, max_jaccards(order)):
        d["max_jaccard"] = round(m, 6)
        if d["jaccard"] is not None:
            d["jaccard"] = round(d["jaccard"], 6)
    # mtime=0: the same command writes the same bytes.
    with open(a.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        for d in order:
            gz.write((json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8"))
    js = sorted(round(d["jaccard"], 2) for d in order if d["role"] == "variant")
    print(f"{len(order)} documents, {nb} pairs; pair Jaccards: {js}")


if __name__ == "__main__":
    main()
