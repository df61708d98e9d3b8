#!/usr/bin/env python3
"""Optional: check scorer.py against the real lm-evaluation-harness code and llm.c's recipe.

Not needed to make expected.json; run it when scorer.py changes.  It needs lm_eval (0.4.13
was used) importable, without its heavy dependencies (datasets etc. are not used):

  experiments/.venv/bin/python -m pip install --target /tmp/lmeval_pkgs --no-deps \
      lm_eval==0.4.13 accelerate psutil jinja2 markupsafe more_itertools sqlitedict dill peft
  PYTHONPATH=/tmp/lmeval_pkgs TIKTOKEN_CACHE_DIR=$PWD/experiments/.tiktoken-cache \
      HF_HUB_OFFLINE=1 experiments/.venv/bin/python tests/reference/eval/crosscheck.py

What it compares (on the committed inputs and, when present, the fixtures):
* wikitext: lm_eval.tasks.wikitext.preprocess_wikitext.wikitext_detokenizer and process_results
  (words, bytes) against ours, and lm_eval's HFLM.loglikelihood_rolling (its own
  get_rolling_token_windows / make_disjoint_window / _loglikelihood_tokens, prefix token =
  the tokenizer's bos = EOT, max_length = n_positions) against our per-document nll.  The
  HF tokenizer is GPT2TokenizerFast built from the same vocab.bpe/encoder.json tiktoken uses.
* ptb: loglikelihood_rolling of the whole stream.
* lambada: HFLM.loglikelihood((context, " " + last_word)) against our logprob/greedy on ALL
  examples, truncated ones included: model/ (n_positions 64) on inputs/lambada.jsonl and the
  fixture's first 200 examples; model128/ (n_positions 128) on inputs/lambada_long.jsonl and
  every fixture example whose ctx+tgt exceeds 128 tokens (the same "lines" as expected.json's
  lambada_128 entry, asserted).  It also asserts that lm-eval's own encoding of each pair
  (HFLM._encode_pair: the target encoded jointly, encode(ctx+tgt)[len(ctx):]) gives exactly
  our ctx_ids/tgt_ids, and that lm-eval warned "Truncating" for exactly the examples with
  ctx+tgt > n_positions + 1.  lm-eval's own per-example outputs (logprob, is_greedy) are
  written to tests/reference/eval/lmeval_lambada.json for the Rust tests.
* hellaswag: a line-by-line transcription of llm.c's evaluate() (full logits, F.cross_entropy,
  shifted mask) on each task, against our losses/pred/pred_norm.
Prints the max |difference| per check and exits non-zero on a decision mismatch or a
difference above 1e-3.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import scorer  # noqa: E402

FIX = "/work/shared/fixtures/evaldata"
MODEL = os.path.join(HERE, "model")
MODEL128 = os.path.join(HERE, "model128")
LMEVAL_OUT = os.path.join(HERE, "lmeval_lambada.json")
INPUTS = os.path.join(HERE, "inputs")
CACHE = os.environ.get("TIKTOKEN_CACHE_DIR", os.path.join(ROOT, "experiments", ".tiktoken-cache"))


def run(task, data, extra=(), model_dir=MODEL):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return scorer.main(["--model", model_dir, "--task", task, "--data", data,
                            "--per-example", *extra])


def rel(path):
    return os.path.relpath(path, ROOT)


def enc_tiktoken():
    import tiktoken
    return tiktoken.get_encoding("gpt2")


def lm_eval_version():
    from importlib.metadata import version
    return version("lm_eval")


def main():
    import torch
    import torch.nn.functional as F
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    import importlib.util
    import lm_eval
    # load the task file directly: lm_eval.tasks/__init__ would import `datasets`
    spec = importlib.util.spec_from_file_location("preprocess_wikitext", os.path.join(
        os.path.dirname(lm_eval.__file__), "tasks", "wikitext", "preprocess_wikitext.py"))
    pw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pw)

    import shutil
    import tempfile
    tokdir = tempfile.mkdtemp()
    shutil.copy(os.path.join(CACHE, "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6"),
                os.path.join(tokdir, "vocab.json"))
    shutil.copy(os.path.join(CACHE, "6d1cbeee0f20b3d9449abfede4726ed8212e3aee"),
                os.path.join(tokdir, "merges.txt"))
    tok = GPT2TokenizerFast.from_pretrained(tokdir)
    assert tok.encode("Hello world") == [15496, 995] and tok.eos_token_id == scorer.EOT
    model = GPT2LMHeadModel.from_pretrained(MODEL, attn_implementation="eager").eval()
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=16, device="cpu")
    assert lm.prefix_token_id == scorer.EOT and lm.max_length == model.config.n_positions
    model128 = GPT2LMHeadModel.from_pretrained(MODEL128, attn_implementation="eager").eval()
    lm128 = HFLM(pretrained=model128, tokenizer=tok, batch_size=16, device="cpu")
    assert lm128.prefix_token_id == scorer.EOT and lm128.max_length == 128 == \
        model128.config.n_positions
    bad = []

    def check(name, diffs, decisions_ok=True):
        m = max(diffs, default=0.0)
        print(f"{name:40s} n={len(diffs):4d} max|diff|={m:.3g} decisions_same={decisions_ok}")
        if m > 1e-3 or not decisions_ok:
            bad.append(name)

    def rolling(strings):
        reqs = [Instance("loglikelihood_rolling", {}, (s,), i) for i, s in enumerate(strings)]
        return lm.loglikelihood_rolling(reqs, disable_tqdm=True)

    # wikitext
    wiki = [(os.path.join(INPUTS, "wikitext.raw"), None)]
    if os.path.exists(os.path.join(FIX, "wikitext-2-raw/wiki.test.raw")):
        wiki.append((os.path.join(FIX, "wikitext-2-raw/wiki.test.raw"), 5))
    for path, limit in wiki:
        pages = scorer.take(scorer.wikitext_pages(scorer.read_text(path)), limit)
        ours = run("wikitext", path, ["--limit", str(limit)] if limit else [])
        theirs_text = [pw.wikitext_detokenizer({"page": p}) for p in pages]
        assert [scorer.wikitext_detokenizer(p) for p in pages] == theirs_text
        ll = rolling(theirs_text)
        for p, e, l in zip(pages, ours["examples"], ll):
            r = pw.process_results({"page": p}, [l])
            assert r["word_perplexity"][1] == e["words"]
            assert r["byte_perplexity"][1] == e["bytes"]
        check(f"wikitext nll {os.path.basename(path)}",
              [abs(-l - e["nll"]) for l, e in zip(ll, ours["examples"])])
        # whole-file detokeniser equality (cheap)
        if limit:
            allp = scorer.wikitext_pages(scorer.read_text(path))
            same = all(pw.wikitext_detokenizer({"page": p}) == scorer.wikitext_detokenizer(p)
                       for p in allp)
            check(f"wikitext detok all {len(allp)} pages", [], same)

    # ptb
    for path, limit in [(os.path.join(INPUTS, "ptb.txt"), None),
                        (os.path.join(FIX, "ptb/ptb.test.txt"), 300)]:
        if not os.path.exists(path):
            continue
        text = scorer.ptb_take_lines(scorer.read_text(path), limit)
        ours = run("ptb", path, ["--limit", str(limit)] if limit else [])
        (ll,) = rolling([text])
        check(f"ptb nll {os.path.basename(path)}", [abs(-ll - ours["examples"][0]["nll"])])

    # lambada: all examples, truncated ones included
    import hashlib
    import json
    import logging
    import make_eval_reference as mer  # only for its helpers (nothing runs on import)

    class Truncations(logging.Handler):
        def __init__(self):
            super().__init__()
            self.n = 0

        def emit(self, record):
            self.n += "Truncating" in record.getMessage()

    trunc = Truncations()
    hf_logger = logging.getLogger("lm_eval.models.huggingface")
    hf_logger.addHandler(trunc)
    hf_logger.propagate = False  # one warning per truncated example otherwise
    with open(os.path.join(HERE, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    fix_lambada = os.path.join(FIX, "lambada_openai/lambada_test.jsonl")
    # (model dir, HFLM, path, --limit, selected line indices or None)
    lam_runs = [(MODEL, lm, os.path.join(INPUTS, "lambada.jsonl"), None, None),
                (MODEL, lm, fix_lambada, 200, None),
                (MODEL128, lm128, os.path.join(INPUTS, "lambada_long.jsonl"), None, None)]
    if os.path.exists(fix_lambada):
        lines = mer.lambada_long_lines(scorer, enc_tiktoken(), fix_lambada, 128)
        (exp_entry,) = [e for e in expected["lambada_128"] if "fixture" in e]
        assert lines == exp_entry["lines"], "over-128 lines differ from expected.json"
        lam_runs.append((MODEL128, lm128, fix_lambada, None, lines))
    lmeval_runs = []
    tmpdir = tempfile.mkdtemp()
    for model_dir, hflm, path, limit, lines in lam_runs:
        if not os.path.exists(path):
            continue
        L = hflm.max_length
        data = path
        if lines is not None:
            all_lines = scorer.read_text(path).split("\n")
            data = os.path.join(tmpdir, "lambada_selected.jsonl")
            with open(data, "w", encoding="utf-8", newline="\n") as f:
                f.write("".join(all_lines[i] + "\n" for i in lines))
        texts = scorer.load_lambada(data, limit)
        ours = run("lambada", data, ["--limit", str(limit)] if limit else [], model_dir)
        assert len(ours["examples"]) == len(texts)
        reqs = []
        for i, (t, e) in enumerate(zip(texts, ours["examples"])):
            c, w = t.rsplit(" ", 1)
            # lm-eval's own encoding (target encoded jointly) must give our ids
            assert hflm._encode_pair(c, " " + w) == (e["ctx_ids"], e["tgt_ids"]), (path, i)
            reqs.append(Instance("loglikelihood", {}, (c, " " + w), i))
        n_trunc = sum(len(e["ctx_ids"]) + len(e["tgt_ids"]) > L + 1 for e in ours["examples"])
        trunc.n = 0
        res = hflm.loglikelihood(reqs, disable_tqdm=True)
        assert trunc.n == n_trunc, (path, trunc.n, n_trunc)
        diffs = [abs(l - e["logprob"]) for (l, _), e in zip(res, ours["examples"], strict=True)]
        same = all(g == e["greedy"] for (_, g), e in zip(res, ours["examples"]))
        name = f"lambada {os.path.basename(path)} L={L}"
        if limit:
            name += f" --limit {limit}"
        if lines is not None:
            name += " (>128 lines)"
        check(f"{name} ({n_trunc} truncated)", diffs, same)
        entry = {"model": rel(model_dir)}
        if path.startswith(FIX):
            entry.update({"fixture": os.path.relpath(path, FIX), "fixture_sha256":
                          mer.sha256_file(path)})
        else:
            entry.update({"input": rel(path), "input_sha256": mer.sha256_file(path)})
        if lines is not None:
            entry["lines"] = lines
        entry.update({"args": ["--limit", str(limit)] if limit else [], "n": len(res),
                      "truncated": n_trunc, "max_abs_diff_vs_scorer": max(diffs, default=0.0),
                      "examples": [{"logprob": l, "is_greedy": g} for l, g in res]})
        lmeval_runs.append(entry)
    hf_logger.removeHandler(trunc)
    hf_logger.propagate = True
    import transformers
    mer.write_json({
        "about": "lm-eval-harness's own HFLM.loglikelihood((context, ' ' + last_word)) outputs "
                 "(logprob, is_greedy) per LAMBADA example; made by crosscheck.py (see README.md)",
        "versions": {"lm_eval": lm_eval_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "hflm": {"batch_size": 16, "device": "cpu", "dtype": "float32",
                 "tokenizer": "GPT2TokenizerFast from tiktoken's gpt2 vocab/merges"},
        "runs": lmeval_runs}, LMEVAL_OUT)
    with open(LMEVAL_OUT, "rb") as f:
        print(f"wrote {LMEVAL_OUT} (sha256 {hashlib.sha256(f.read()).hexdigest()[:16]}...)")

    # hellaswag: llm.c evaluate() transcription
    for path, limit in [(os.path.join(INPUTS, "hellaswag.jsonl"), None),
                        (os.path.join(INPUTS, "hellaswag.txt"), None),
                        (os.path.join(FIX, "hellaswag-klosax/hellaswag_val_full.txt.bz2"), 100)]:
        if not os.path.exists(path):
            continue
        ours = run("hellaswag", path, ["--limit", str(limit)] if limit else [])
        diffs, same = [], True
        L = model.config.n_positions
        for e in ours["examples"]:
            rows = [(e["ctx_ids"] + x)[-L:] for x in e["end_ids"]]
            masks = [([0] * len(e["ctx_ids"]) + [1] * len(x))[-L:] for x in e["end_ids"]]
            T = max(len(r) for r in rows)
            tokens = torch.zeros((4, T), dtype=torch.long)
            mask = torch.zeros((4, T), dtype=torch.long)
            for i, (r, m) in enumerate(zip(rows, masks)):
                tokens[i, :len(r)] = torch.tensor(r)
                mask[i, :len(m)] = torch.tensor(m)
            with torch.no_grad():
                logits = model(tokens).logits
            shift_logits = logits[..., :-1, :].contiguous()
            shift_tokens = tokens[..., 1:].contiguous()
            losses = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)),
                                     shift_tokens.view(-1), reduction="none").view(4, -1)
            shift_mask = mask[..., 1:].contiguous()
            sum_loss = (losses * shift_mask).sum(dim=1)
            avg_loss = sum_loss / shift_mask.sum(dim=1)
            diffs += [abs(a - b) for a, b in zip(sum_loss.tolist(), e["losses"])]
            same &= sum_loss.argmin().item() == e["pred"] and avg_loss.argmin().item() == e["pred_norm"]
        check(f"hellaswag {os.path.basename(path)} vs llm.c", diffs, same)

    if bad:
        print("FAILED:", bad)
        sys.exit(1)
    print("all cross-checks passed")


if __name__ == "__main__":
    main()
