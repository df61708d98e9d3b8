//! The AdamW kernel (`device.kernels: fused`, `crates/gpt2-model/src/cube/adamw.rs`) and Burn's
//! composed tensor ops (`device.kernels: composed`) on one wgpu device: optimizer state saved by
//! either resumes under the other bit-exact, so a run may switch implementations at a checkpoint.
//!
//! Its own test binary because it flips `set_composed_kernels`, which is process-wide: in the
//! other suites' binaries a concurrent test would see the switch.
#![cfg(feature = "wgpu")]

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use gpt2_model::device::set_composed_kernels;
use gpt2_model::{Gpt2, Gpt2Config};
use gpt2_train::optim::{AdamW, AdamWParams};

fn tokens(device: &Device, step: u64, mul: i64) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..64i64)
        .map(|i| (i * mul + step as i64 * 101) % 50257)
        .collect();
    Tensor::from_data(TensorData::new(v, [2, 32]), device)
}

/// One optimizer step of `model` on batch `step`: the gradients always from the fused
/// forward/backward (so both runs see the same ones), the update by the AdamW kernel or, with
/// `composed`, by Burn's tensor ops.
fn step(model: Gpt2, opt: &mut AdamW, device: &Device, step: u64, composed: bool) -> Gpt2 {
    set_composed_kernels(false);
    let loss = model.forward_loss(tokens(device, step, 37), tokens(device, step, 91));
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    set_composed_kernels(composed);
    let p = AdamWParams {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    // A clipping factor below 1, so the kernel's gradient scaling is exercised too.
    let model = opt.step(model, &mut grads, p, 0.7);
    set_composed_kernels(false);
    model
}

/// Every parameter's f32 bits, in module order.
fn bits(model: &Gpt2) -> Vec<u32> {
    struct Bits(Vec<u32>);
    impl ModuleVisitor for Bits {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v: Vec<f32> = p.val().into_data().try_to_vec().unwrap();
            self.0.extend(v.iter().map(|x| x.to_bits()));
        }
    }
    let mut b = Bits(Vec::new());
    model.visit(&mut b);
    b.0
}

/// Steps 1–3 with `first`, the optimizer state through its checkpoint file, steps 4–6 with
/// `then`; the final weights' bits and the final optimizer file's bytes.
fn run(device: &Device, dir: &std::path::Path, first: bool, then: bool) -> (Vec<u32>, Vec<u8>) {
    let cfg = Gpt2Config::preset("tiny").unwrap();
    let mut model = Gpt2::new(&cfg, device, 3).unwrap();
    let mut opt = AdamW::default();
    for k in 1..=3 {
        model = step(model, &mut opt, device, k, first);
    }
    let saved = dir.join(format!("opt-{first}-{then}-3.safetensors"));
    opt.save(&saved).unwrap();
    let inner = device.clone().without_autodiff();
    let mut opt = AdamW::load(&saved, &inner).unwrap();
    assert_eq!(opt.t, 3);
    for k in 4..=6 {
        model = step(model, &mut opt, device, k, then);
    }
    let end = dir.join(format!("opt-{first}-{then}-6.safetensors"));
    opt.save(&end).unwrap();
    (bits(&model), std::fs::read(&end).unwrap())
}

#[test]
fn adamw_state_resumes_bit_exact_across_the_kernel_and_the_composed_ops() {
    let Some(wgpu) = gpt2_model::testing::wgpu_or_skip("adamw kernel vs composed resume") else {
        return;
    };
    let device = wgpu.autodiff();
    let dir = tempfile::tempdir().unwrap();
    let (kernel, kernel_opt) = run(&device, dir.path(), false, false);
    for (first, then, what) in [
        (
            false,
            true,
            "kernel's checkpoint resumed by the composed ops",
        ),
        (
            true,
            false,
            "composed ops' checkpoint resumed by the kernel",
        ),
        (true, true, "composed ops throughout"),
    ] {
        let (w, o) = run(&device, dir.path(), first, then);
        let differ = w.iter().zip(&kernel).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{what}: {differ} of {} weights differ", w.len());
        assert!(
            o == kernel_opt,
            "{what}: the moments differ from the kernel run's"
        );
    }
}
