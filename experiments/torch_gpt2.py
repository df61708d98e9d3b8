"""The PyTorch side of our benchmarks: GPT-2 written from its equations (nanoGPT style), trained
the way `gpt2 train` trains, on the same shards in the same order.

Nothing here imports our code or transformers' model: it is the independent peer the Rust
trainer is measured against (experiments/bench_train.sh on CPU, experiments/gpu.sh on an H200).

  python experiments/torch_gpt2.py train --preset tiny-cpu --shards data/shards/sotu \
      --micro-batch 8 --seq-len 128 --total-batch-tokens 2048 --steps 20 --threads 2
  python experiments/torch_gpt2.py eval  --preset tiny-cpu --shards data/shards/sotu \
      --micro-batch 8 --seq-len 128 --batches 8 --threads 2
  python experiments/torch_gpt2.py train --preset gpt2-117m --device cuda --dtype bf16 --compile \
      --micro-batch 16 --seq-len 1024 --total-batch-tokens 16384 --steps 30 --synthetic

Prints one JSON object per step ({"step", "loss", "ms", "tokens_per_sec"}) and a final
{"summary": ...} line with the steady-state mean (steps after --warmup-steps-excluded).

Matching `gpt2 train`: AdamW(β 0.9/0.95, eps 1e-8, wd 0.1 on ≥2-D params only), linear warmup
then cosine to min_lr as a function of the step, clipping by the global norm, gradient
accumulation with the loss scaled by 1/accum, tied LM head, GPT-2 init (N(0, 0.02), residual
projections N(0, 0.02/sqrt(2L))), GELU tanh, LayerNorm eps 1e-5, no dropout. Data: the
manifest's train shards in order, windows of T+1 tokens every T tokens (no shuffle), exactly
as TokenLoader with `shuffle: false`.
"""
import argparse, json, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# (n_layer, n_head, n_embd, n_positions): crates/gpt2-model/src/config.rs presets.
PRESETS = {
    "tiny": (2, 2, 64, 64),
    "tiny-cpu": (4, 4, 128, 128),
    "gpt2-10m": (6, 5, 160, 1024),
    "gpt2-117m": (12, 12, 768, 1024),
    "gpt2-345m": (24, 16, 1024, 1024),
    "gpt2-762m": (36, 20, 1280, 1024),
    "gpt2-1542m": (48, 25, 1600, 1024),
}
VOCAB = 50257


class Attention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.attn = Attention(c, h)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, n_positions):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            elif name.endswith(("c_proj.weight", "mlp_proj.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets=None):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied LM head
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, VOCAB), targets.reshape(-1))


def lr_at(step, lr, min_lr, warmup, max_steps):  # crates/gpt2-train/src/schedule.rs
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= max_steps or max_steps <= warmup:
        return min_lr
    ratio = (step - warmup) / (max_steps - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (lr - min_lr)


def windows(shards_dir, split, b, t):
    """Yields (B, T+1) int64 arrays: TokenLoader's order with shuffle off, epochs repeating."""
    manifest = json.load(open(os.path.join(shards_dir, "manifest.json")))
    files = [s["file"] for s in manifest["shards"] if s["split"] == split]
    if not files:
        sys.exit(f"no {split} shards in {shards_dir}/manifest.json")
    arrays = [np.memmap(os.path.join(shards_dir, f), dtype=np.uint16, mode="r", offset=1024) for f in files]
    index = [(a, w * t) for a in arrays for w in range((len(a) - 1) // t)]
    if len(index) < b:
        sys.exit(f"{split}: {len(index)} windows of {t}+1 tokens, fewer than one batch of {b}")
    cursor = 0
    while True:
        if cursor + b > len(index):
            cursor = 0
        yield np.stack([a[s : s + t + 1].astype(np.int64) for a, s in index[cursor : cursor + b]])
        cursor += b


def synthetic(b, t, seed=0):
    g = np.random.default_rng(seed)
    while True:
        yield g.integers(0, VOCAB, size=(b, t + 1), dtype=np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "eval"])
    ap.add_argument("--preset", default="tiny-cpu", choices=PRESETS)
    ap.add_argument("--shards", help="a prepared shard directory (manifest.json)")
    ap.add_argument("--synthetic", action="store_true", help="random token ids instead of shards")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--total-batch-tokens", type=int, default=0, help="0: one micro-batch per step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", type=int, default=8, help="eval: forward passes to time")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--max-steps", type=int, default=150, help="schedule length (the LR curve)")
    ap.add_argument("--warmup-steps-excluded", type=int, default=2, help="untimed steps at the start")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--seed", type=int, default=1337)
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    model = GPT(*PRESETS[a.preset]).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    fwd = torch.compile(model) if a.compile else model
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")
    b, t = a.micro_batch, a.seq_len
    split = "train" if a.mode == "train" else "val"
    data = synthetic(b, t) if a.synthetic else windows(a.shards, split, b, t)

    def batch():
        w = torch.from_numpy(next(data)).to(dev, non_blocking=True)
        return w[:, :-1], w[:, 1:]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    rows = []
    if a.mode == "eval":
        model.eval()
        with torch.no_grad():
            for i in range(a.batches + a.warmup_steps_excluded):
                x, y = batch()
                sync(); t0 = time.perf_counter()
                with autocast:
                    loss = fwd(x, y)
                loss = loss.item(); sync()
                ms = 1e3 * (time.perf_counter() - t0)
                rows.append({"step": i, "loss": loss, "ms": ms, "tokens_per_sec": b * t / ms * 1e3})
                print(json.dumps(rows[-1]), flush=True)
    else:
        accum = max(1, a.total_batch_tokens // (b * t)) if a.total_batch_tokens else 1
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=cuda,
        )
        for step in range(a.steps):
            sync(); t0 = time.perf_counter()
            total = 0.0
            for _ in range(accum):
                x, y = batch()
                with autocast:
                    loss = fwd(x, y) / accum
                loss.backward()
                total += loss.detach()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, a.lr, a.min_lr, a.warmup, a.max_steps)
            opt.step()
            opt.zero_grad(set_to_none=True)
            total = total.item(); sync()
            ms = 1e3 * (time.perf_counter() - t0)
            rows.append({"step": step + 1, "loss": total, "grad_norm": norm.item(), "ms": ms,
                         "tokens_per_sec": accum * b * t / ms * 1e3})
            print(json.dumps(rows[-1]), flush=True)

    timed = rows[a.warmup_steps_excluded:] or rows
    ms = sum(r["ms"] for r in timed) / len(timed)
    summary = {"mode": a.mode, "preset": a.preset, "params": n_params, "device": a.device,
               "dtype": a.dtype, "compile": a.compile, "threads": torch.get_num_threads(),
               "micro_batch": b, "seq_len": t, "timed_steps": len(timed), "ms_per_step": ms,
               "tokens_per_sec": sum(r["tokens_per_sec"] for r in timed) / len(timed),
               "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
               "torch": torch.__version__}
    if cuda:
        summary["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
