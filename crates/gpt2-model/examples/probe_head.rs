//! Probe: the LM head's three products on flex at one shape, each way we can write them
//! (experiments/RESULTS.md, attempt 14; experiments/probe_head.py times the same products in
//! PyTorch). `RAYON_NUM_THREADS=2 cargo run -p gpt2-model --example probe_head -- 1024 160 5`

use std::time::Instant;

// This probe uses Burn alone; in a `cuda` build it still links cubecl-llvm, whose LLVM symbols
// only gpt2-llvm-stubs provides (gpt2-model's lib.rs does the same).
#[cfg(feature = "cuda")]
use gpt2_llvm_stubs as _;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::{Device, Distribution, Tensor};

fn time<F: FnMut() -> Tensor<3>>(name: &str, reps: usize, mut f: F) {
    let _ = f().into_data();
    let start = Instant::now();
    for _ in 0..reps {
        let _ = f().into_data();
    }
    println!(
        "{name:40} {:8.1} ms",
        start.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

fn main() {
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("usage: probe_head N C REPS"))
        .collect();
    let [n, c, reps] = args[..] else {
        panic!("usage: probe_head N C REPS")
    };
    let v = 50257;
    let device = Device::flex();
    let d = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<3>::random([1, n, c], d, &device);
    let wte = Tensor::<2>::random([v, c], d, &device);
    let g = Tensor::<3>::random([1, n, v], d, &device);

    time("logits x·wteᵀ", reps, || {
        x.clone().matmul(wte.clone().transpose().unsqueeze())
    });
    time("dx = G·wte (one product)", reps, || {
        g.clone().matmul(wte.clone().unsqueeze())
    });
    // Split-k: V = 50257 = 29 · 1733, as 29 batched (N, 1733)·(1733, C) products, summed.
    let (s, vs) = (29, v / 29);
    time("dx split-k 29×1733 batched, sum", reps, || {
        let gs = g.clone().reshape([n, s, vs]).swap_dims(0, 1); // (S, N, V/S) strided view
        gs.matmul(wte.clone().reshape([s, vs, c])).sum_dim(0)
    });
    time("dx 4 row blocks", reps, || {
        g.clone()
            .reshape([4, n / 4, v])
            .matmul(wte.clone().unsqueeze())
            .reshape([1, n, c])
    });
    time("dwteᵀ = xᵀ·G", reps, || {
        x.clone().swap_dims(1, 2).matmul(g.clone())
    });
    time("dwte = Gᵀ·x", reps, || {
        g.clone().swap_dims(1, 2).matmul(x.clone())
    });
}
