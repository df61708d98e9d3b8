#!/usr/bin/env python3
"""Independent reference scorer for four zero-shot GPT-2 evaluations.

Written from the task definitions below (and the cited upstream sources), not from the Rust
code.  It is both the reference the Rust `eval` tests are checked against
(tests/reference/eval/expected.json, made by make_eval_reference.py) and a benchmark peer.

  python scorer.py --model HF_DIR --task {lambada,hellaswag,wikitext,ptb} --data FILE
                   [--limit N] [--stride S] [--batch B] [--json OUT] [--per-example]
                   [--dtype float32|float64] [--threads T]

Run it with the tiktoken venv (experiments/setup_tiktoken.sh), e.g. from the repository root:
  bash experiments/setup_tiktoken.sh
  TIKTOKEN_CACHE_DIR=$PWD/experiments/.tiktoken-cache HF_HUB_OFFLINE=1 \
    experiments/.venv/bin/python tests/reference/eval/scorer.py \
    --model tests/reference/eval/model --task lambada --data tests/reference/eval/inputs/lambada.jsonl

Model: transformers `GPT2LMHeadModel.from_pretrained(HF_DIR, attn_implementation="eager")`,
float32 (or float64 with --dtype), CPU, eval mode, under torch.no_grad().  HF_HUB_OFFLINE=1 is
forced, nothing is downloaded.  Tokeniser: Python tiktoken, encoding "gpt2",
`encode_ordinary` (special tokens are never recognised).  EOT = 50256.  L = config.n_positions.

Input files are read as bytes; a file starting with the bzip2 magic "BZh" or the gzip magic
1f 8b is decompressed transparently (whatever its name); the bytes are decoded as UTF-8 (strict)
and NOT newline-translated (all fixtures are LF-only).

How the model is run (all tasks): every sequence fed to the model has at most L tokens, starts
at position 0, and is right-padded (with token 0) to the longest sequence of its batch; no
attention mask is needed because attention is causal and padding only follows the real tokens.
Sequences are sorted by length (longest first) before batching; --batch is the number of
sequences per forward pass (default 32).  Only the positions whose prediction is needed go
through the LM head.  log-probabilities are log_softmax of the logits in the model dtype; a
token's log-probability is read from that; sums over tokens/examples are taken in Python
float64.  The results do not depend on --batch except for float rounding (measured in
README.md).

Tasks
=====

lambada  (lm-eval-harness `lambada_openai`: lm_eval/tasks/lambada/lambada_openai.yaml,
         doc_to_text "{{text.split(' ')[:-1]|join(' ')}}", doc_to_target
         "{{' '+text.split(' ')[-1]}}", metrics perplexity + acc)
  Input: jsonl, one {"text": ...} per non-empty line.  context = text.rsplit(' ', 1)[0],
  last_word = text.rsplit(' ', 1)[1]; ctx_ids = encode(context), tgt_ids = encode(" " +
  last_word), each encoded on its own.  (A text with no space: context "" and ctx_ids = [EOT],
  as lm-eval does for an empty context; never happens in the data.)
  Truncation is lm-eval's, exactly (lm_eval/models/huggingface.py HFLM._loglikelihood_tokens,
  0.4.13: `inp = (context_enc + continuation_enc)[-(self.max_length + 1):][:-1]`, then the
  logits of the last len(continuation_enc) positions are scored): the model is fed
  inp = (ctx_ids + tgt_ids)[-(L+1):][:-1] (at most L tokens: the last token of the sequence is
  never fed), and target token j is scored by the logit at input position
  len(inp) - len(tgt_ids) + j, so the last target token is predicted by the last input
  position.  When ctx+tgt <= L this is simply ctx_ids + tgt_ids[:-1]; when it is longer, the
  L+1 last tokens of ctx+tgt are kept (L - len(tgt_ids) + 1 context tokens).  The target must
  fit: len(tgt_ids) <= L, else error (a target of exactly L tokens leaves one context token).
  (The longest real example is 224 tokens, so at L = 1024 nothing is ever truncated.)
  Per example: logprob = sum of the target tokens' log-probabilities; greedy = every target
  token is the argmax (torch argmax: first index on ties) of its distribution.
  greedy_margin (extra) = min over target tokens of (logp[target] - max_{v != target} logp[v]);
  > 0 implies greedy (== 0 is an exact tie, resolved by the argmax rule); tests can skip the
  greedy check when |margin| is below float noise.
  Metrics: acc = mean(greedy); ppl = exp(-mean(logprob)).
  lm-eval encodes the target as encode(context+target)[len(ctx_ids):]; on all 5,153 real
  examples that equals encode(" "+last_word) (checked by make_eval_reference.py,
  expected.json whole_file_stats.lambada.separate_vs_joint_encoding_differs = 0; crosscheck.py
  asserts it on every example it compares).

hellaswag  (karpathy/llm.c dev/data/hellaswag.py, render_example + evaluate: completion style)
  Two input formats, told apart by content (first non-whitespace character "{" => jsonl):
  * rowanz/hellaswag jsonl: one object per non-empty line with "ctx" (str), "endings"
    (list of 4 str), "label" (int).  Other fields are ignored.
  * llama.cpp / klosax text: 6 lines per task: context, label (0-3), 4 endings.  Lines are the
    file split on "\n" (a final empty piece after the last "\n" is dropped); lines are used
    as-is (not stripped), except the label line which is int(line.strip()).
  ctx_ids = encode(ctx) ([EOT] if ctx is empty), end_ids[i] = encode(" " + ending[i]);
  row i = ctx_ids + end_ids[i]; if longer than L keep its last L tokens (the ending stays
  whole).  loss[i] = sum over the ending's tokens of -log p(token | tokens before it);
  avg[i] = loss[i] / len(end_ids[i]).  pred = argmin(loss), pred_norm = argmin(avg), first
  index on ties (torch argmin).  acc = mean(pred == label), acc_norm = mean(pred_norm == label).
  Per example: losses (4), n_tokens (4), pred, pred_norm, label (+ ctx_ids, end_ids).
  --limit N: the first N tasks.

wikitext  (lm-eval-harness `wikitext`: lm_eval/tasks/wikitext/wikitext.yaml,
          preprocess_wikitext.py, dataset EleutherAI/wikitext_document_level wikitext-2-raw-v1)
  Documents: exactly the `page`s that EleutherAI/wikitext_document_level's loading script
  (`_generate_examples`; also lm-eval's older wikitext task `docs_for_split`) yields for
  wiki.test.raw:
      lines = text.split("\n")
      for each line: r = line.replace("= = =", "===").replace("= =", "==").strip()
                     if r.startswith("= ") and r.endswith(" ="):      # top-level heading
                         page = "\n".join(buffer); if page.strip(): yield page
                         buffer = []
                     buffer.append(line)
      yield "\n".join(buffer)                                          # always, last page
  So a page runs from its heading line up to, but EXCLUDING, the "\n" that ends the line before
  the next heading (in wiki.test.raw that line is the blank " " line, so pages end in "\n ");
  the last page runs to the end of the file and so keeps the file's final "\n" (it ends in
  " \n").  Lines before the first heading form a page only if they contain non-whitespace (in
  wiki.test.raw and in the committed input they are a single " " line, so they belong to no
  document).  Sub-headings " = = X = = " are not top-level (they become "== X ==").
  Each page is detokenised by `wikitext_detokenizer` (below, rule for rule, in order) and the
  detokenised string is tokenised and scored as one rolling loglikelihood:
  lm_eval/utils.py get_rolling_token_windows(tokens, prefix_token=EOT, max_seq_len=L,
  context_len=1) + make_disjoint_window, with lm-eval's HF model feeding
  (context+continuation)[-(L+1):][:-1] and scoring the continuation:
      first window: input [EOT] + tok[0:min(L,n)-1], scores tok[0:min(L,n)]
      then, with p = tokens predicted so far, k = min(n - p, L), e = p + k:
          input tok[e-L-1 : e-1] (L tokens), scores tok[p:e] (its last k positions)
  i.e. full windows are disjoint and condition on just the previous token, and the last
  (partial) window is a full L-token window shifted back so its k new tokens have context.
  nll(doc) = -sum of the scored log-probabilities (every token is scored exactly once).
  An empty token list scores nothing (nll 0).
  Metrics over the selected documents (lm_eval process_results + weighted_perplexity /
  bits_per_byte aggregation): words = len(re.split(r"\s+", page)) on the page BEFORE
  detokenisation (leading/trailing whitespace counts as empty words, as in lm-eval),
  bytes = len(page.encode("utf-8")):
      word_perplexity = exp(sum nll / sum words), byte_perplexity = exp(sum nll / sum bytes),
      bits_per_byte = sum nll / sum bytes / ln 2, token_perplexity = exp(sum nll / sum n_tokens)
  Per document: title (the page's first line, stripped), words, bytes, n_tokens, nll, sha256
  (of the UTF-8 detokenised text).  --limit N: the first N documents.

  --stride S (1 <= S < L; wikitext and ptb): overlapping windows instead.  With
  s = [EOT] + tok (so s[j+1] = tok[j]) and n = len(tok):
      b = 0, prev = 0
      loop: e = min(b + L, n); input s[b:e]; score s[prev+1 : e+1] (= tok[prev:e]), i.e. the
            predictions at input positions prev-b .. e-b-1; prev = e; stop if e == n; b += S
  So the first window is [EOT] + tok[0:L-1] scoring L tokens, each later window is L tokens
  (the last may be shorter) starting S tokens after the previous one and scores only its last
  S (or fewer) tokens, which have at least L-S tokens of context.  This is HF's "Perplexity of
  fixed-length models" recipe applied to s, with every window of L inputs scoring all the
  predictions not scored before (HF's version wastes the last logit of each window).

ptb  (Mikolov's ptb.test.txt)
  The file's text as-is (after the optional --limit) is one stream: tok = encode(text), scored
  with the rolling windows above (or --stride).  --limit N: the first N lines, each with its
  "\n" (text up to and including the N-th "\n"; the whole file if it has fewer lines).
  lines = text.count("\n") + (1 if text does not end with "\n" and is non-empty else 0);
  words = len(text.split()) (whitespace split); word_perplexity = exp(nll / (words + lines))
  (one end-of-sentence per line: 78,669 + 3,761 = 82,430 for the real file);
  token_perplexity = exp(nll / len(tok)).  n = lines.
  Per example: one entry for the stream: lines, words, bytes, n_tokens, nll, sha256 (of the text).

Output: a JSON object with exactly the keys task, n, seconds, the task's metrics, and with
--per-example also "examples".  seconds = reading the input + tokenising + scoring (not
loading the model).  Metrics with nothing to average over (n = 0) are null.  Printed to
stdout (and written to --json OUT).  A throughput line "examples/s" goes to stderr.
"""
import argparse
import bz2
import gzip
import hashlib
import json
import math
import os
import re
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EOT = 50256


# ----------------------------------------------------------------------------- input

def read_text(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:3] == b"BZh":
        raw = bz2.decompress(raw)
    elif raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def take(items, limit):
    return items if limit is None else items[:limit]


def load_lambada(path, limit):
    out = []
    for line in read_text(path).split("\n"):
        if line.strip():
            out.append(json.loads(line)["text"])
    return take(out, limit)


def load_hellaswag(path, limit):
    text = read_text(path)
    tasks = []
    if text.lstrip().startswith("{"):
        for line in text.split("\n"):
            if line.strip():
                ex = json.loads(line)
                tasks.append((ex["ctx"], list(ex["endings"]), int(ex["label"])))
    else:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % 6 != 0:
            raise SystemExit(f"{path}: {len(lines)} lines, not a multiple of 6")
        for i in range(0, len(lines), 6):
            tasks.append((lines[i], lines[i + 2:i + 6], int(lines[i + 1].strip())))
    for ctx, ends, label in tasks:
        if len(ends) != 4 or not 0 <= label < 4:
            raise SystemExit(f"bad hellaswag task: {ctx[:60]!r}")
    return take(tasks, limit)


def wikitext_pages(text):
    """EleutherAI/wikitext_document_level `page`s of a wiki.*.raw text (see the docstring)."""
    pages = []
    buf = []
    for line in text.split("\n"):
        r = line.replace("= = =", "===").replace("= =", "==").strip()
        if r.startswith("= ") and r.endswith(" ="):
            page = "\n".join(buf)
            if page.strip():
                pages.append(page)
            buf = []
        buf.append(line)
    pages.append("\n".join(buf))
    return pages


def wikitext_detokenizer(string):
    """lm_eval/tasks/wikitext/preprocess_wikitext.py `wikitext_detokenizer`: same rules, same
    order (checked equal on all 62 wiki.test.raw pages by crosscheck.py)."""
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)  # literal "/' 5/" -> "/'[0-9]/" (sic)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    for p in (":", ";", ".", "!", "?", ","):
        string = string.replace(" " + p + " ", p + " ")
    # brackets and quotes (pairs may span lines: \s and [^x] match "\n")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def ptb_take_lines(text, limit):
    if limit is None:
        return text
    pos = 0
    for _ in range(limit):
        i = text.find("\n", pos)
        if i < 0:
            return text
        pos = i + 1
    return text[:pos]


def count_lines(text):
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def wiki_words(page):
    return len(re.split(r"\s+", page))


# ----------------------------------------------------------------------------- windows

def rolling_windows(tok, L):
    """lm-eval get_rolling_token_windows(prefix=EOT, max_seq_len=L, context_len=1) +
    make_disjoint_window + HF input (ctx+cont)[-(L+1):][:-1].  Yields (input, first_scored_pos,
    targets): the targets are predicted at input positions first_scored_pos.. (one each)."""
    n = len(tok)
    if n == 0:
        return
    first = min(L, n)
    wins = [([EOT] + tok[:first - 1], tok[:first])]
    p = first
    while p < n:
        k = min(n - p, L)              # pred_len = L - context_len + 1 = L
        e = p + k
        wins.append((tok[e - L - 1:e - 1], tok[e - k:e]))
        p += k
    for a, b in wins:
        a = a[:len(a) - (len(b) - 1)]  # make_disjoint_window
        yield _to_input(a, b, L)


def _to_input(ctx, cont, L):
    inp = (ctx + cont)[-(L + 1):][:-1]
    # the last len(cont) logits predict cont
    return inp, len(inp) - len(cont), cont


def strided_windows(tok, L, S):
    """See the docstring: s = [EOT] + tok, windows of L inputs every S tokens."""
    n = len(tok)
    if n == 0:
        return
    s = [EOT] + tok
    b, prev = 0, 0
    while True:
        e = min(b + L, n)
        yield s[b:e], prev - b, tok[prev:e]
        prev = e
        if e == n:
            break
        b += S


# ----------------------------------------------------------------------------- model

class Model:
    def __init__(self, model_dir, dtype, threads):
        import torch
        from transformers import GPT2LMHeadModel
        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        m = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager")
        m = m.to(dtype=getattr(torch, dtype)).eval()
        self.m = m
        self.L = m.config.n_positions
        self.vocab = m.config.vocab_size

    def score(self, seqs, queries, batch, want_margin=False, head_chunk=2048):
        """seqs: token lists (len <= L).  queries[i]: (pos0, targets): target j is predicted by
        the logit at position pos0 + j.  Returns per sequence a list of (logprob, is_argmax,
        margin) per target; is_argmax: torch argmax (first index on ties) == target; margin =
        logp[target] - max over the other tokens (both None unless want_margin)."""
        torch = self.torch
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        out = [None] * len(seqs)
        with torch.no_grad():
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                T = max(len(seqs[i]) for i in idx)
                x = torch.zeros((len(idx), T), dtype=torch.long)
                rows, cols, tgts = [], [], []
                for r, i in enumerate(idx):
                    assert 0 < len(seqs[i]) <= self.L, len(seqs[i])
                    x[r, :len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
                    pos0, targets = queries[i]
                    for j, t in enumerate(targets):
                        rows.append(r)
                        cols.append(pos0 + j)
                        tgts.append(t)
                h = self.m.transformer(input_ids=x).last_hidden_state
                h = h[torch.tensor(rows), torch.tensor(cols)]
                tg = torch.tensor(tgts, dtype=torch.long)
                lps, margins, hits = [], [], []
                for c in range(0, h.shape[0], head_chunk):
                    logits = self.m.lm_head(h[c:c + head_chunk])
                    logp = torch.log_softmax(logits, dim=-1)
                    t = tg[c:c + head_chunk]
                    lp = logp.gather(1, t[:, None])[:, 0]
                    lps.append(lp)
                    if want_margin:
                        other = logp.scatter(1, t[:, None], float("-inf")).max(dim=1).values
                        margins.append(lp - other)
                        hits.append(logp.argmax(dim=1) == t)
                lp = torch.cat(lps).tolist()
                mg = torch.cat(margins).tolist() if want_margin else [None] * len(lp)
                ht = torch.cat(hits).tolist() if want_margin else [None] * len(lp)
                k = 0
                for i in idx:
                    nt = len(queries[i][1])
                    out[i] = list(zip(lp[k:k + nt], ht[k:k + nt], mg[k:k + nt]))
                    k += nt
        return out


# ----------------------------------------------------------------------------- tasks

def run_lambada(model, enc, args):
    L = model.L
    texts = load_lambada(args.data, args.limit)
    seqs, queries, meta = [], [], []
    for text in texts:
        parts = text.rsplit(" ", 1)
        context, last = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        ctx_ids = enc.encode_ordinary(context) if context else [EOT]
        tgt_ids = enc.encode_ordinary(" " + last)
        if len(tgt_ids) > L:
            raise SystemExit(f"target longer than the context: {last!r}")
        seq, pos0, _ = _to_input(ctx_ids, tgt_ids, L)  # lm-eval: (ctx+tgt)[-(L+1):][:-1]
        seqs.append(seq)
        queries.append((pos0, tgt_ids))
        meta.append((ctx_ids, tgt_ids))
    res = model.score(seqs, queries, args.batch, want_margin=True)
    examples = []
    for (ctx_ids, tgt_ids), r in zip(meta, res):
        logprob = math.fsum(lp for lp, _, _ in r)
        examples.append({"ctx_ids": ctx_ids, "tgt_ids": tgt_ids, "logprob": logprob,
                         "greedy": all(h for _, h, _ in r),
                         "greedy_margin": min(m for _, _, m in r)})
    n = len(examples)
    metrics = {
        "acc": sum(e["greedy"] for e in examples) / n if n else None,
        "ppl": math.exp(-math.fsum(e["logprob"] for e in examples) / n) if n else None,
    }
    return n, metrics, examples


def argmin_first(xs):
    best = 0
    for i in range(1, len(xs)):
        if xs[i] < xs[best]:
            best = i
    return best


def run_hellaswag(model, enc, args):
    L = model.L
    tasks = load_hellaswag(args.data, args.limit)
    seqs, queries, meta = [], [], []
    for ctx, endings, label in tasks:
        ctx_ids = enc.encode_ordinary(ctx) if ctx else [EOT]
        end_ids = [enc.encode_ordinary(" " + e) for e in endings]
        for e in end_ids:
            if len(e) >= L:
                raise SystemExit("ending longer than the context")
            row = (ctx_ids + e)[-L:]
            seqs.append(row)
            queries.append((len(row) - len(e) - 1, e))
        meta.append((ctx_ids, end_ids, label))
    res = model.score(seqs, queries, args.batch)
    examples = []
    for t, (ctx_ids, end_ids, label) in enumerate(meta):
        losses = [-math.fsum(r[0] for r in res[4 * t + i]) for i in range(4)]
        counts = [len(e) for e in end_ids]
        avg = [l / c for l, c in zip(losses, counts)]
        examples.append({"ctx_ids": ctx_ids, "end_ids": end_ids, "losses": losses,
                         "n_tokens": counts, "pred": argmin_first(losses),
                         "pred_norm": argmin_first(avg), "label": label})
    n = len(examples)
    metrics = {
        "acc": sum(e["pred"] == e["label"] for e in examples) / n if n else None,
        "acc_norm": sum(e["pred_norm"] == e["label"] for e in examples) / n if n else None,
    }
    return n, metrics, examples


def score_streams(model, token_lists, args):
    """nll per token list with rolling (or strided) windows, all windows batched together."""
    L = model.L
    seqs, queries, owner = [], [], []
    for d, tok in enumerate(token_lists):
        if args.stride:
            wins = strided_windows(tok, L, args.stride)
        else:
            wins = rolling_windows(tok, L)
        for inp, pos0, targets in wins:
            seqs.append(inp)
            queries.append((pos0, targets))
            owner.append(d)
    res = model.score(seqs, queries, args.batch)
    parts = [[] for _ in token_lists]
    counts = [0] * len(token_lists)
    for d, r in zip(owner, res):
        parts[d].extend(x[0] for x in r)
        counts[d] += len(r)
    for d, tok in enumerate(token_lists):
        assert counts[d] == len(tok), (counts[d], len(tok))
    return [-math.fsum(p) for p in parts]


def run_wikitext(model, enc, args):
    pages = take(wikitext_pages(read_text(args.data)), args.limit)
    detok = [wikitext_detokenizer(p) for p in pages]
    toks = [enc.encode_ordinary(t) for t in detok]
    nlls = score_streams(model, toks, args)
    examples = []
    for page, text, tok, nll in zip(pages, detok, toks, nlls):
        examples.append({"title": page.split("\n", 1)[0].strip(), "words": wiki_words(page),
                         "bytes": len(page.encode("utf-8")), "n_tokens": len(tok), "nll": nll,
                         "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
    nll = math.fsum(nlls)
    words = sum(e["words"] for e in examples)
    nbytes = sum(e["bytes"] for e in examples)
    ntok = sum(e["n_tokens"] for e in examples)
    metrics = {
        "word_perplexity": math.exp(nll / words) if words else None,
        "byte_perplexity": math.exp(nll / nbytes) if nbytes else None,
        "bits_per_byte": nll / nbytes / math.log(2) if nbytes else None,
        "token_perplexity": math.exp(nll / ntok) if ntok else None,
    }
    return len(examples), metrics, examples


def run_ptb(model, enc, args):
    text = ptb_take_lines(read_text(args.data), args.limit)
    tok = enc.encode_ordinary(text)
    (nll,) = score_streams(model, [tok], args)
    lines = count_lines(text)
    words = len(text.split())
    metrics = {
        "word_perplexity": math.exp(nll / (words + lines)) if words + lines else None,
        "token_perplexity": math.exp(nll / len(tok)) if tok else None,
    }
    examples = [{"lines": lines, "words": words, "bytes": len(text.encode("utf-8")),
                 "n_tokens": len(tok), "nll": nll,
                 "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}]
    return lines, metrics, examples


TASKS = {"lambada": run_lambada, "hellaswag": run_hellaswag, "wikitext": run_wikitext,
         "ptb": run_ptb}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face GPT-2 directory")
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32, help="sequences per forward pass")
    ap.add_argument("--json", default=None, help="also write the JSON here")
    ap.add_argument("--per-example", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        ap.error("--limit must be >= 0")
    if args.batch < 1:
        ap.error("--batch must be >= 1")

    import tiktoken
    enc = tiktoken.get_encoding("gpt2")
    model = Model(args.model, args.dtype, args.threads)
    if args.stride is not None:
        if args.task not in ("wikitext", "ptb"):
            ap.error("--stride applies to wikitext and ptb only")
        if not 1 <= args.stride < model.L:
            ap.error(f"--stride must be in [1, {model.L - 1}]")

    t0 = time.perf_counter()
    n, metrics, examples = TASKS[args.task](model, enc, args)
    seconds = time.perf_counter() - t0
    out = {"task": args.task, "n": n, "seconds": seconds}
    out.update(metrics)
    if args.per_example:
        out["examples"] = examples
    print(f"{args.task}: {n} examples in {seconds:.2f} s = {n / seconds if seconds else 0:.2f} "
          f"examples/s", file=sys.stderr)
    text = json.dumps(out)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
