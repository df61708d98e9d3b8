"""The LM head's products (and softmax) in PyTorch at one shape, the peer of
crates/gpt2-model/examples/probe_head.rs (experiments/RESULTS.md, attempt 14).

    experiments/.venv/bin/python experiments/probe_head.py 1024 160 5
"""
import sys
import time

import torch

torch.set_num_threads(2)
n, c, reps = map(int, sys.argv[1:4])
v = 50257
x = torch.randn(n, c)
wte = torch.randn(v, c)
g = torch.randn(n, v)


def t(name, f):
    f()
    s = time.perf_counter()
    for _ in range(reps):
        f()
    print(f"{name:40} {(time.perf_counter() - s) * 1e3 / reps:8.1f} ms")


t("logits x·wteᵀ", lambda: x @ wte.T)
t("dx = G·wte", lambda: g @ wte)
t("dwte = Gᵀ·x", lambda: g.T @ x)
t("softmax", lambda: torch.softmax(g, 1))
