"""PyTorch/transformers CPU throughput for the same shapes as bench_model.sh (side-by-side reference).

Usage: /work/venv-ref/bin/python experiments/bench_torch_reference.py
"""
import time, torch, torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel
torch.set_num_threads(2)
for name,(L,H,C,T,B,T_run,steps) in {"tiny":(2,2,64,64,8,64,5),"gpt2-117m":(12,12,768,1024,1,256,2)}.items():
    cfg=GPT2Config(n_layer=L,n_head=H,n_embd=C,n_positions=T,resid_pdrop=0,embd_pdrop=0,attn_pdrop=0)
    m=GPT2LMHeadModel(cfg)
    ids=torch.randint(0,50257,(B,T_run)); tg=torch.randint(0,50257,(B,T_run))
    def step():
        logits=m(input_ids=ids).logits
        loss=F.cross_entropy(logits.view(-1,50257),tg.view(-1)); loss.backward()
    step(); t0=time.time()
    for _ in range(steps): step()
    tr=B*T_run*steps/(time.time()-t0)
    with torch.no_grad():
        m(input_ids=ids); t0=time.time()
        for _ in range(steps): m(input_ids=ids)
    ev=B*T_run*steps/(time.time()-t0)
    print(f"torch {name}: train {tr:.0f} tok/s, eval {ev:.0f} tok/s")
