//! Throughput of the model on the CPU (flex) backend: forward+backward (training, no
//! optimizer step) and forward-only (eval) tokens per second for one preset and batch shape.
//!
//! Usage: `cargo run -p gpt2-model --example bench_model -- PRESET BATCH SEQ STEPS`
//! (threads: `RAYON_NUM_THREADS`). Prints one Markdown table row per mode. The first step of
//! each mode is a warm-up and is not timed. Achieved FLOP/s use `flops_per_token` (6N + 12·L·C·T,
//! nanoGPT's estimate_mfu) for training and a third of it for the forward pass.

use std::time::Instant;

// The `gpt2` binary's allocator setup (see crates/gpt2-cli/src/main.rs): mimalloc, never purging.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use gpt2_model::{Gpt2, Gpt2Config};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn batch(b: usize, t: usize, vocab: usize, step: usize, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..b * t)
        .map(|i| ((i * 7919 + step * 104729) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(ids, [b, t]), device)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: process-wide integer option; 15 = mi_option_purge_delay, -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset: String = arg(&args, 0, "tiny".to_string());
    let (b, t, steps): (usize, usize, usize) =
        (arg(&args, 1, 4), arg(&args, 2, 64), arg(&args, 3, 5));
    let config = Gpt2Config::from_name_or_path(&preset)?;
    let t = t.min(config.block_size);
    let v = config.vocab_size;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let train_flops = config.flops_per_token(t) as f64;

    let device = Device::flex().autodiff();
    let model = Gpt2::new(&config, &device, 1337)?;
    let mut timed = 0.0;
    let mut loss_value = 0.0;
    for step in 0..=steps {
        let start = Instant::now();
        let loss = model.forward_loss(
            batch(b, t, v, step, &device),
            batch(b, t, v, step + 1, &device),
        );
        let grads = loss.backward();
        loss_value = loss.into_scalar::<f32>();
        drop(grads);
        if step > 0 {
            timed += start.elapsed().as_secs_f64();
        }
    }
    let tps = (b * t * steps) as f64 / timed;
    println!(
        "| {preset} | {} | train fwd+bwd | {b}x{t} | {threads} | {steps} | {tps:.0} | {:.2} | loss {loss_value:.3} |",
        config.num_params(),
        tps * train_flops / 1e9
    );

    let eval = model.valid();
    let device = eval.device();
    let mut timed = 0.0;
    for step in 0..=steps {
        let start = Instant::now();
        let logits = eval.forward(batch(b, t, v, step, &device));
        let _ = logits.narrow(2, 0, 1).sum().into_scalar::<f32>();
        if step > 0 {
            timed += start.elapsed().as_secs_f64();
        }
    }
    let tps = (b * t * steps) as f64 / timed;
    println!(
        "| {preset} | {} | eval fwd | {b}x{t} | {threads} | {steps} | {tps:.0} | {:.2} | |",
        config.num_params(),
        tps * train_flops / 3.0 / 1e9
    );
    Ok(())
}
