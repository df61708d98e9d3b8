"""Independent reference data for crates/gpt2-model (see tests/hf_reference.rs).

Builds a tiny GPT-2 with random weights using Hugging Face transformers on CPU torch
(float32, eager attention, no dropout), saves it the way `save_pretrained` does
(`model/model.safetensors` with `transformer.`-prefixed keys + `model/config.json`), and records
input ids, targets, logits, the mean cross-entropy loss, and gradients of a few parameters into
`reference.safetensors`. Biases and LayerNorm parameters are randomised too (HF would init them to
0/1), so that a mis-mapped bias or LayerNorm key changes the logits.

The same forward/backward is repeated in float64; the largest |f32 - f64| difference of each
recorded tensor is stored in the metadata, as the measured float32 noise the Rust test's
tolerances are compared against.

Usage (CI does not run this; its outputs are committed):
    python3 -m venv /work/venv-ref
    /work/venv-ref/bin/pip install torch transformers safetensors numpy
    /work/venv-ref/bin/python crates/gpt2-model/tests/reference/make_reference.py
"""

import copy
import json
import os

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_MODEL = os.path.join(HERE, "model")
OUT_REF = os.path.join(HERE, "reference.safetensors")

# Small enough for a committed fixture: wte is 1000 x 32 floats = 128 KB.
VOCAB, N_POS, N_EMBD, N_LAYER, N_HEAD = 1000, 64, 32, 2, 2
B, T = 2, 48
GRAD_KEYS = [
    "transformer.wte.weight",  # embedding + tied LM head contributions
    "transformer.wpe.weight",
    "transformer.h.0.ln_1.weight",
    "transformer.h.0.attn.c_attn.weight",
    "transformer.h.0.attn.c_attn.bias",
    "transformer.h.1.mlp.c_proj.weight",
    "transformer.h.1.mlp.c_proj.bias",
    "transformer.ln_f.weight",
    "transformer.ln_f.bias",
]


def build_model() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=N_POS,
        n_embd=N_EMBD,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=VOCAB - 1,  # GPT-2's EOT is the last id; keep it inside the small vocab
        eos_token_id=VOCAB - 1,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(1234)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or "ln_f" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn_like(p))
    model.eval()
    return model


def run(model: GPT2LMHeadModel, ids: torch.Tensor, targets: torch.Tensor):
    model.zero_grad()
    logits = model(input_ids=ids).logits  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    loss.backward()
    params = dict(model.named_parameters())
    grads = {k: params[k].grad.detach().clone() for k in GRAD_KEYS}
    return logits.detach(), loss.detach(), grads


def main() -> None:
    torch.set_num_threads(1)
    model = build_model()
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(0, VOCAB, (B, T), generator=g)
    targets = torch.randint(0, VOCAB, (B, T), generator=g)

    logits, loss, grads = run(model, ids, targets)
    model64 = copy.deepcopy(model).double()
    logits64, loss64, grads64 = run(model64, ids, targets)

    noise = {
        "logits": (logits.double() - logits64).abs().max().item(),
        "loss": abs(loss.item() - loss64.item()),
    }
    for k in GRAD_KEYS:
        noise["grad:" + k] = (grads[k].double() - grads64[k]).abs().max().item()

    model.save_pretrained(OUT_MODEL, safe_serialization=True)
    tensors = {
        "input_ids": ids.to(torch.int64).contiguous(),
        "targets": targets.to(torch.int64).contiguous(),
        "logits": logits.float().contiguous(),
        "loss": loss.float().reshape(1).contiguous(),
    }
    for k in GRAD_KEYS:
        tensors["grad." + k] = grads[k].float().contiguous()
    metadata = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "f32_vs_f64_max_abs_diff": json.dumps(noise),
        "note": "loss = mean cross-entropy over B*T positions with the given targets",
    }
    save_file(tensors, OUT_REF, metadata=metadata)
    for path in (OUT_REF, os.path.join(OUT_MODEL, "model.safetensors")):
        os.chmod(path, 0o644)
    print("loss", loss.item(), "keys", sorted(os.listdir(OUT_MODEL)))
    print(json.dumps(noise, indent=1))


if __name__ == "__main__":
    main()
