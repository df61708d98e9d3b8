#!/usr/bin/env python3
"""Make tests/reference/eval/{model/, model128/, expected.json} with scorer.py (see README.md).

Usage (from the repository root; needs experiments/.venv with tiktoken AND torch,
transformers, safetensors, numpy -- see README.md):
  python3 tests/reference/eval/make_eval_reference.py [--rebuild-model] [--fixtures DIR]

1. Builds the small random GPT-2 in tests/reference/eval/model/ if it is absent (or with
   --rebuild-model): GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=2,
   n_head=2), tied LM head, weights drawn with numpy's PCG64 seeded from SEED and the crc32
   of each parameter's name (see init_weights), saved with save_pretrained(safe_serialization=
   True).  Likewise tests/reference/eval/model128/: the same recipe (same seeds, same spec)
   with n_positions=128; it differs from model/ only in wpe, whose first 64 rows are even
   equal to model/'s (numpy draws the (128, 16) matrix row-major from the same stream).
2. Self-checks: the rolling/strided windows against a transcription of lm-eval's functions and
   against the alignment invariants, the page splitter and the detokeniser on small cases.
3. Runs scorer.py (in this process) with --per-example on the committed inputs (float32,
   default batch), again with --batch 1 and with --dtype float64, and records the largest
   |difference| of the per-example values; and, when the fixtures directory exists, on the
   real LAMBADA / HellaSwag / WikiText-2 / PTB fixtures (first 200 / 100 / 5 documents /
   300 lines), with whole-file statistics and sha256s.
   LAMBADA with model128 ("lambada_128"): inputs/lambada_long.jsonl (every example > 128
   tokens) and, with the fixtures, every real example whose ctx+tgt exceeds 128 tokens (the
   selected lines are written to a temporary file and scored, as the Rust test does).
4. Writes tests/reference/eval/expected.json.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SETUP_SH = os.path.join(ROOT, "experiments", "setup_tiktoken.sh")
VENV_PY = os.path.join(ROOT, "experiments", ".venv", "bin", "python")
CACHE_DIR = os.path.join(ROOT, "experiments", ".tiktoken-cache")
MODEL_DIR = os.path.join(HERE, "model")
MODEL128_DIR = os.path.join(HERE, "model128")
INPUTS = os.path.join(HERE, "inputs")
OUT = os.path.join(HERE, "expected.json")
DEFAULT_FIXTURES = "/work/shared/fixtures/evaldata"

SEED = 20240611
CONFIG = dict(vocab_size=50257, n_positions=64, n_embd=16, n_layer=2, n_head=2)
CONFIG128 = dict(CONFIG, n_positions=128)
LAMBADA_FIXTURE = "lambada_openai/lambada_test.jsonl"
# Word tokens whose embedding rows are scaled up, so the random model has a few favourite
# next words (greedy hits on the committed LAMBADA input) instead of a flat distribution.
BOOSTED_WORDS = [" the", " a", " and", " of", " to", " was", " he", " she", " it", " in",
                 " his", " her", " said", " door", " back", " night", " home", " again"]
BOOST = 2.5

# (task, committed input, scorer extra args)
COMMITTED = [
    ("lambada", "lambada.jsonl", []),
    ("hellaswag", "hellaswag.jsonl", []),
    ("hellaswag", "hellaswag.txt", []),
    ("wikitext", "wikitext.raw", []),
    ("wikitext", "wikitext.raw", ["--stride", "16"]),
    ("ptb", "ptb.txt", []),
    ("ptb", "ptb.txt", ["--stride", "48"]),
    ("ptb", "ptb.txt", ["--limit", "3"]),
]
# (task, fixture path relative to the fixtures dir, limit, extra args)
FIXTURES = [
    ("lambada", "lambada_openai/lambada_test.jsonl", 200, []),
    ("hellaswag", "hellaswag-klosax/hellaswag_val_full.txt.bz2", 100, []),
    ("wikitext", "wikitext-2-raw/wiki.test.raw", 5, []),
    ("wikitext", "wikitext-2-raw/wiki.test.raw", 5, ["--stride", "32"]),
    ("ptb", "ptb/ptb.test.txt", 300, []),
]


def ensure_env():
    if os.environ.get("_MAKE_EVAL_REFERENCE_INNER") == "1":
        return
    subprocess.run(["bash", SETUP_SH], check=True)
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=CACHE_DIR, HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", _MAKE_EVAL_REFERENCE_INNER="1")
    os.execve(VENV_PY, [VENV_PY, os.path.abspath(__file__)] + sys.argv[1:], env)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- model

def init_weights(model, enc):
    """Deterministic, non-trivial weights (numpy PCG64, independent of torch's RNG)."""
    import numpy as np
    import torch
    spec = {  # suffix -> (mean, std)
        "wte.weight": (0.0, 0.3), "wpe.weight": (0.0, 0.3),
        "ln_1.weight": (1.0, 0.1), "ln_2.weight": (1.0, 0.1), "ln_f.weight": (1.0, 0.1),
        "ln_1.bias": (0.0, 0.1), "ln_2.bias": (0.0, 0.1), "ln_f.bias": (0.0, 0.1),
        "attn.c_attn.weight": (0.0, 0.3), "attn.c_attn.bias": (0.0, 0.1),
        "attn.c_proj.weight": (0.0, 0.2), "attn.c_proj.bias": (0.0, 0.05),
        "mlp.c_fc.weight": (0.0, 0.3), "mlp.c_fc.bias": (0.0, 0.1),
        "mlp.c_proj.weight": (0.0, 0.2), "mlp.c_proj.bias": (0.0, 0.05),
    }
    with torch.no_grad():
        for name, p in model.named_parameters():
            (mean, std), = [v for k, v in spec.items() if name.endswith(k)]
            rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
            w = rng.normal(mean, std, size=tuple(p.shape)).astype(np.float32)
            if name.endswith("wte.weight"):
                for word in BOOSTED_WORDS:
                    (tid,) = enc.encode_ordinary(word)
                    w[tid] *= BOOST
            p.copy_(torch.from_numpy(w))


def build_model(enc, config, model_dir):
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(**config)
    model = GPT2LMHeadModel(cfg)
    init_weights(model, enc)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    for f in os.listdir(model_dir):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(model_dir, f))
        else:
            os.chmod(os.path.join(model_dir, f), 0o644)


def model_info(config, model_dir):
    st = os.path.join(model_dir, "model.safetensors")
    return {"dir": os.path.relpath(model_dir, ROOT), "config": config,
            "model.safetensors_sha256": sha256_file(st),
            "model.safetensors_bytes": os.path.getsize(st)}


# ----------------------------------------------------------------------------- self-checks

def lm_eval_rolling(token_list, prefix_token, max_seq_len, context_len):
    """Transcription of lm_eval/utils.py get_rolling_token_windows (for the self-check)."""
    assert 1 <= context_len <= max_seq_len
    if not token_list:
        return
    pred_len = max_seq_len - context_len + 1
    predicted = 0
    first_seq_len = min(max_seq_len, len(token_list))
    yield [prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len]
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        yield (token_list[window_end - max_seq_len - 1: window_end - 1],
               token_list[window_end - window_pred_len: window_end])
        predicted += window_pred_len


def selfcheck(scorer):
    EOT = scorer.EOT
    for L in (1, 2, 3, 5, 8, 64):
        for n in list(range(0, 3 * L + 3)) + [10 * L + 1]:
            tok = list(range(1000, 1000 + n))
            s = [EOT] + tok
            # rolling == lm-eval
            ref = []
            for a, b in lm_eval_rolling(tok, EOT, L, 1):
                a = a[: len(a) - (len(b) - 1)]
                ref.append(((a + b)[-(L + 1):][:-1], b))
            got = list(scorer.rolling_windows(tok, L))
            assert [(i, t) for i, _, t in got] == ref, (L, n)
            modes = [("rolling", got)]
            if L > 1:
                for S in sorted({1, max(1, L // 3), L - 1}):
                    modes.append((f"stride{S}", list(scorer.strided_windows(tok, L, S))))
            for mode, wins in modes:
                scored = []
                for inp, pos0, targets in wins:
                    assert 1 <= len(inp) <= L, (mode, L, n)
                    for j, t in enumerate(targets):
                        q = pos0 + j
                        assert 0 <= q < len(inp)
                        k = t - 1000  # index in tok; s[k] is the token before it
                        # the input up to q is the contiguous run of s ending at s[k]
                        assert inp[:q + 1] == s[k - q:k + 1], (mode, L, n, q, k)
                        scored.append(k)
                assert scored == list(range(n)), (mode, L, n)
            if L > 1:
                for S in sorted({1, max(1, L // 3), L - 1}):
                    for inp, pos0, targets in scorer.strided_windows(tok, L, S):
                        # every scored token has at least min(L - S, its index + 1) context
                        assert pos0 + 1 >= min(L - S, (targets[0] - 1000) + 1)
    # lambada input = lm-eval's (ctx+cont)[-(L+1):][:-1]; the last len(cont) logits score cont
    for L in (1, 2, 3, 8, 64):
        for nc in (1, 2, L - 1, L, L + 1, 3 * L):
            for nt in range(1, L + 1):
                if nc < 1:
                    continue
                ctx = list(range(1000, 1000 + nc))
                cont = list(range(5000, 5000 + nt))
                inp, pos0, tg = scorer._to_input(ctx, cont, L)
                full = ctx + cont
                assert inp == full[-(L + 1):][:-1] and tg == cont and len(inp) <= L
                assert len(inp) == min(L, nc + nt - 1) and pos0 + nt == len(inp)
                for j in range(nt):  # the input up to the scoring position ends just before tg[j]
                    q = pos0 + j
                    k = nc + j
                    assert inp[:q + 1] == full[k - q - 1:k], (L, nc, nt, j)
    # pages
    txt = " \n = A = \n \n x \n \n = = B = = \n y \n \n = C = \n z \n"
    assert scorer.wikitext_pages(txt) == [" = A = \n \n x \n \n = = B = = \n y \n ",
                                          " = C = \n z \n"]
    assert scorer.wikitext_pages("pre\n = A = \n") == ["pre", " = A = \n"]
    # detokeniser: a few hand-checked rules
    d = scorer.wikitext_detokenizer
    assert d(" the players ' union ") == " the players' union "
    assert d(" 1 @,@ 000 @.@ 5 km @-@ long ") == " 1,000.5 km-long "
    assert d(' he said " hello there " , and ( a b ) . ') == ' he said "hello there", and (a b). '
    assert d(" 20 ° C \n = = Sub = = \n N x N y Ann 's ") == " 20°C\n== Sub ==\nN x 1 y Ann's "


# ----------------------------------------------------------------------------- runs

def run_scorer(scorer, task, data, extra, dtype="float32", batch=None, model_dir=MODEL_DIR):
    argv = ["--model", model_dir, "--task", task, "--data", data, "--per-example",
            "--dtype", dtype] + extra
    if batch is not None:
        argv += ["--batch", str(batch)]
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return scorer.main(argv)


PER_EXAMPLE_FLOATS = {"lambada": ["logprob"], "hellaswag": ["losses"], "wikitext": ["nll"],
                      "ptb": ["nll"]}
PER_EXAMPLE_DECISIONS = {"lambada": ["greedy"], "hellaswag": ["pred", "pred_norm"],
                         "wikitext": [], "ptb": []}


def max_diff(task, a, b):
    """max |a-b| over the per-example float values, and whether the decisions agree."""
    m = 0.0
    m_rel = 0.0
    for ea, eb in zip(a["examples"], b["examples"], strict=True):
        for k in PER_EXAMPLE_FLOATS[task]:
            xa, xb = ea[k], eb[k]
            xa = xa if isinstance(xa, list) else [xa]
            xb = xb if isinstance(xb, list) else [xb]
            for u, v in zip(xa, xb, strict=True):
                m = max(m, abs(u - v))
                m_rel = max(m_rel, abs(u - v) / max(abs(v), 1e-30))
    same = all(ea[k] == eb[k] for ea, eb in zip(a["examples"], b["examples"])
               for k in PER_EXAMPLE_DECISIONS[task])
    return m, m_rel, same


def round_floats(x, nd=10):
    """Significant-digit rounding for the JSON (keeps ~1e-10 relative, far below f32 noise)."""
    if isinstance(x, float):
        return float(f"{x:.{nd}g}") if math.isfinite(x) else x
    if isinstance(x, list):
        return [round_floats(v, nd) for v in x]
    if isinstance(x, dict):
        return {k: round_floats(v, nd) for k, v in x.items()}
    return x


def margins(task, res):
    """Smallest decision margin over the examples (how close a decision is to flipping)."""
    if task == "lambada":
        return min((abs(e["greedy_margin"]) for e in res["examples"]), default=None)
    if task == "hellaswag":
        out = []
        for e in res["examples"]:
            for vals in (e["losses"], [l / c for l, c in zip(e["losses"], e["n_tokens"])]):
                s = sorted(vals)
                out.append(s[1] - s[0])
        return min(out, default=None)
    return None


def lambada_truncated(task, res, L):
    """{"truncated": number of examples that lose context tokens, i.e. ctx+tgt > L+1} for
    lambada (lm-eval feeds (ctx+tgt)[-(L+1):][:-1], so ctx+tgt = L+1 loses nothing)."""
    if task != "lambada":
        return {}
    return {"truncated": sum(len(e["ctx_ids"]) + len(e["tgt_ids"]) > L + 1
                             for e in res["examples"])}


def lambada_long_lines(scorer, enc, path, L):
    """0-based indices (into text.split("\\n")) of the non-empty lines whose ctx+tgt > L tokens,
    with ctx/tgt split and encoded exactly as scorer.run_lambada does."""
    out = []
    for i, line in enumerate(scorer.read_text(path).split("\n")):
        if not line.strip():
            continue
        parts = json.loads(line)["text"].rsplit(" ", 1)
        context, last = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        n = (len(enc.encode_ordinary(context)) if context else 1) + \
            len(enc.encode_ordinary(" " + last))
        if n > L:
            out.append(i)
    return out


def lambada_128_entries(scorer, enc, fixtures):
    """LAMBADA scored with model128 on inputs where every example exceeds its 128 positions."""
    import tempfile
    L = CONFIG128["n_positions"]
    runs = [("input", os.path.join(INPUTS, "lambada_long.jsonl"), None)]
    fpath = os.path.join(fixtures, LAMBADA_FIXTURE)
    if os.path.exists(fpath):
        runs.append(("fixture", fpath, lambada_long_lines(scorer, enc, fpath, L)))
    entries = []
    for kind, path, lines in runs:
        t0 = time.perf_counter()
        entry = {"task": "lambada", "model": os.path.relpath(MODEL128_DIR, ROOT)}
        with tempfile.TemporaryDirectory() as tmp:
            data = path
            if kind == "input":
                entry["input"] = os.path.relpath(path, ROOT)
                entry["input_sha256"] = sha256_file(path)
            else:
                all_lines = scorer.read_text(path).split("\n")
                selected = "".join(all_lines[i] + "\n" for i in lines)
                data = os.path.join(tmp, "lambada_over_128.jsonl")
                with open(data, "w", encoding="utf-8", newline="\n") as f:
                    f.write(selected)
                entry["fixture"] = LAMBADA_FIXTURE
                entry["fixture_sha256"] = sha256_file(path)
                entry["lines"] = lines
                entry["lines_sha256"] = sha256_file(data)
            res = run_scorer(scorer, "lambada", data, [], model_dir=MODEL128_DIR)
            res64 = run_scorer(scorer, "lambada", data, [], dtype="float64",
                               model_dir=MODEL128_DIR)
            res1 = run_scorer(scorer, "lambada", data, [], batch=1, model_dir=MODEL128_DIR)
        d64, _, same64 = max_diff("lambada", res, res64)
        d1, _, same1 = max_diff("lambada", res, res1)
        assert same64 and same1, "decisions differ between float32/float64/batch 1"
        assert all(len(e["ctx_ids"]) + len(e["tgt_ids"]) > L for e in res["examples"])
        res.pop("seconds")
        entry.update({"args": [], **lambada_truncated("lambada", res, L),
                      "min_decision_margin": margins("lambada", res),
                      "float64_max_abs_diff": d64, "batch1_max_abs_diff": d1,
                      "float64_metrics": {k: v for k, v in res64.items()
                                          if k not in ("examples", "seconds", "task", "n")},
                      "result": res})
        entries.append(entry)
        print(f"lambada   model128 {os.path.basename(path):22s} n={res['n']:<4d} "
              f"truncated={entry['truncated']} f64 diff {d64:.2e} b1 diff {d1:.2e} "
              f"{time.perf_counter() - t0:.1f}s")
    return entries


def whole_file_stats(scorer, enc, fixtures):
    stats = {}
    p = os.path.join(fixtures, "wikitext-2-raw/wiki.test.raw")
    if os.path.exists(p):
        pages = scorer.wikitext_pages(scorer.read_text(p))
        detok = [scorer.wikitext_detokenizer(x) for x in pages]
        stats["wikitext"] = {
            "file": "wikitext-2-raw/wiki.test.raw",
            "documents": len(pages),
            "words": sum(scorer.wiki_words(x) for x in pages),
            "bytes": sum(len(x.encode("utf-8")) for x in pages),
            "tokens": sum(len(enc.encode_ordinary(x)) for x in detok),
            "first_titles": [x.split("\n", 1)[0].strip() for x in pages[:5]],
            "last_title": pages[-1].split("\n", 1)[0].strip(),
            "detok_sha256_concat": hashlib.sha256("\x00".join(detok).encode()).hexdigest(),
        }
    p = os.path.join(fixtures, "ptb/ptb.test.txt")
    if os.path.exists(p):
        text = scorer.read_text(p)
        w, l = len(text.split()), scorer.count_lines(text)
        stats["ptb"] = {"file": "ptb/ptb.test.txt", "words": w, "lines": l,
                        "words_plus_lines": w + l, "bytes": len(text.encode("utf-8")),
                        "tokens": len(enc.encode_ordinary(text))}
    p = os.path.join(fixtures, "lambada_openai/lambada_test.jsonl")
    if os.path.exists(p):
        texts = scorer.load_lambada(p, None)
        lens, differ = [], 0
        for t in texts:
            c, w = t.rsplit(" ", 1)
            ci, ti = enc.encode_ordinary(c), enc.encode_ordinary(" " + w)
            lens.append(len(ci) + len(ti))
            if enc.encode_ordinary(c + " " + w)[len(ci):] != ti or \
                    enc.encode_ordinary(c + " " + w)[:len(ci)] != ci:
                differ += 1
        stats["lambada"] = {"file": "lambada_openai/lambada_test.jsonl", "examples": len(texts),
                            "max_ctx_plus_tgt_tokens": max(lens),
                            "ctx_plus_tgt_over_128": sum(n > 128 for n in lens),
                            "separate_vs_joint_encoding_differs": differ}
    p = os.path.join(fixtures, "hellaswag-klosax/hellaswag_val_full.txt.bz2")
    if os.path.exists(p):
        tasks = scorer.load_hellaswag(p, None)
        stats["hellaswag"] = {"file": "hellaswag-klosax/hellaswag_val_full.txt.bz2",
                              "tasks": len(tasks),
                              "label_counts": [sum(t[2] == i for t in tasks) for i in range(4)],
                              "max_row_tokens": max(len(enc.encode_ordinary(c)) + max(
                                  len(enc.encode_ordinary(" " + e)) for e in ends)
                                  for c, ends, _ in tasks)}
    return stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuild-model", action="store_true")
    ap.add_argument("--fixtures", default=DEFAULT_FIXTURES)
    args = ap.parse_args()
    ensure_env()
    sys.path.insert(0, HERE)
    import scorer
    import tiktoken
    import torch
    import transformers
    enc = tiktoken.get_encoding("gpt2")

    t_all = time.perf_counter()
    for config, model_dir in ((CONFIG, MODEL_DIR), (CONFIG128, MODEL128_DIR)):
        if args.rebuild_model or not os.path.exists(os.path.join(model_dir,
                                                                 "model.safetensors")):
            build_model(enc, config, model_dir)
            print(f"built {model_dir}")
    selfcheck(scorer)
    print("self-checks passed")

    out = {
        "about": "tests/reference/eval/README.md; made by make_eval_reference.py with scorer.py",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "tiktoken": tiktoken.__version__},
        "model": model_info(CONFIG, MODEL_DIR),
        "model128": model_info(CONFIG128, MODEL128_DIR),
        "committed": [],
        "fixtures": [],
        "lambada_128": [],
        "noise": {},
    }

    noise = {"float64_vs_float32_abs": 0.0, "float64_vs_float32_rel": 0.0,
             "batch1_vs_batch32_abs": 0.0, "decisions_same": True}
    for task, name, extra in COMMITTED:
        path = os.path.join(INPUTS, name)
        t0 = time.perf_counter()
        res = run_scorer(scorer, task, path, extra)
        res64 = run_scorer(scorer, task, path, extra, dtype="float64")
        res1 = run_scorer(scorer, task, path, extra, batch=1)
        d64, r64, same64 = max_diff(task, res, res64)
        d1, _, same1 = max_diff(task, res, res1)
        noise["float64_vs_float32_abs"] = max(noise["float64_vs_float32_abs"], d64)
        noise["float64_vs_float32_rel"] = max(noise["float64_vs_float32_rel"], r64)
        noise["batch1_vs_batch32_abs"] = max(noise["batch1_vs_batch32_abs"], d1)
        noise["decisions_same"] &= same64 and same1
        res.pop("seconds")
        entry = {"task": task, "input": f"tests/reference/eval/inputs/{name}",
                 "input_sha256": sha256_file(path), "args": extra,
                 **lambada_truncated(task, res, CONFIG["n_positions"]),
                 "min_decision_margin": margins(task, res),
                 "float64_max_abs_diff": d64, "batch1_max_abs_diff": d1,
                 "float64_metrics": {k: v for k, v in res64.items()
                                     if k not in ("examples", "seconds", "task", "n")},
                 "result": res}
        out["committed"].append(entry)
        print(f"{task:9s} {name:16s} {' '.join(extra):12s} n={res['n']:<4d} "
              f"f64 diff {d64:.2e} b1 diff {d1:.2e} {time.perf_counter() - t0:.1f}s")

    if os.path.isdir(args.fixtures):
        for task, rel, limit, extra in FIXTURES:
            path = os.path.join(args.fixtures, rel)
            if not os.path.exists(path):
                print(f"skip absent fixture {path}")
                continue
            t0 = time.perf_counter()
            res = run_scorer(scorer, task, path, ["--limit", str(limit)] + extra)
            res.pop("seconds")
            out["fixtures"].append({"task": task, "fixture": rel, "fixture_sha256":
                                    sha256_file(path), "args": ["--limit", str(limit)] + extra,
                                    **lambada_truncated(task, res, CONFIG["n_positions"]),
                                    "min_decision_margin": margins(task, res), "result": res})
            print(f"{task:9s} {rel:45s} n={res['n']:<4d} {time.perf_counter() - t0:.1f}s")
        out["whole_file_stats"] = whole_file_stats(scorer, enc, args.fixtures)
    out["lambada_128"] = lambada_128_entries(scorer, enc, args.fixtures)
    out["noise"] = noise
    write_json(round_floats(out), OUT)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes) in {time.perf_counter() - t_all:.1f}s")
    print(json.dumps(noise))


def write_json(obj, path):
    """Readable but compact: one line per example, per metric block."""
    def dump(x, indent):
        pad = "  " * indent
        if isinstance(x, dict) and indent < 4 and any(isinstance(v, (dict, list)) for v in
                                                      x.values()):
            items = [f'{pad}  {json.dumps(k)}: {dump(v, indent + 1)}' for k, v in x.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(x, list) and x and isinstance(x[0], dict) and indent < 4:
            items = [f"{pad}  {dump(v, indent + 1)}" for v in x]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(x, ensure_ascii=False)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(dump(obj, 0) + "\n")


if __name__ == "__main__":
    main()
