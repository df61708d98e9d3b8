"""Checks that a directory written by our exporter loads in Hugging Face transformers.

`GPT2LMHeadModel.from_pretrained(DIR)` must load it without missing/unexpected keys, and its
logits for the ids in `DIR/burn_logits.safetensors` must match the logits Burn computed.

Usage:
    cargo run -p gpt2-model --example export_hf -- /tmp/gpt2-export tiny 7
    /work/venv-ref/bin/python crates/gpt2-model/tests/reference/check_export.py /tmp/gpt2-export
"""

import sys

import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel


def main(path: str) -> int:
    model, info = GPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    print("loading info:", info)
    ref = load_file(f"{path}/burn_logits.safetensors")
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"]).logits
    diff = (logits - ref["logits"]).abs().max().item()
    tied = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    print(f"max |logits diff| = {diff:.3e}; lm_head tied to wte: {tied}")
    ok = diff < 1e-4 and tied and not problems
    print("PASS" if ok else f"FAIL {problems}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
