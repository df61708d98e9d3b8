//! The Cube path against flex: each fused op (`fused.rs`) and the whole model's gradients on a
//! wgpu device, compared with the same computation on flex. wgpu shares Burn's CubeCL kernels,
//! Cube autodiff and our ops' Cube implementations (the composed `RowKernels` defaults) with
//! CUDA, so this is the CUDA training path short of NVRTC's code generation.
//!
//! Tolerance: relative error `max|wgpu − flex| / max|flex|` ≤ 1e-5 per tensor in f32 (the two
//! backends sum in different orders; nothing else may differ). Skipped, saying so, where no wgpu
//! adapter exists (`crate::testing`).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::{causal_attention_train, gelu_tanh, lm_head_loss, token_nll};
use crate::testing::wgpu_or_skip;
use crate::{Gpt2, Gpt2Config};

const REL: f32 = 1e-5;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32")
}

/// `max|a − b| / max|b|` (b the flex reference; floored so an all-zero reference compares
/// absolutely).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let top = b.iter().fold(0f32, |m, y| m.max(y.abs()));
    diff / top.max(1e-12)
}

fn assert_close(what: &str, wgpu: &[f32], flex: &[f32]) {
    assert!(
        wgpu.iter().all(|x| x.is_finite()),
        "{what}: non-finite on wgpu"
    );
    let e = rel_err(wgpu, flex);
    assert!(e <= REL, "{what}: relative error {e:e} > {REL:e}");
}

/// Deterministic values in [−scale/2, scale/2).
fn data(n: usize, salt: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 1013) as f32 / 1013.0 - 0.5) * scale)
        .collect()
}

fn leaf<const D: usize>(shape: [usize; D], salt: usize, scale: f32, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::<D>::from_data(TensorData::new(data(n, salt, scale), shape), device).require_grad()
}

fn ids<const D: usize>(shape: [usize; D], modulo: usize, device: &Device) -> Tensor<D, Int> {
    let n: usize = shape.iter().product();
    let v: Vec<i64> = (0..n).map(|i| ((i * 61 + 7) % modulo) as i64).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Runs `f` on flex and on wgpu (both with autodiff) and compares every returned tensor.
fn compare(name: &str, f: impl Fn(&Device) -> Vec<(&'static str, Vec<f32>)>) {
    let Some(wgpu) = wgpu_or_skip(name) else {
        return;
    };
    let on_flex = f(&Device::flex().autodiff());
    let on_wgpu = f(&wgpu.autodiff());
    for ((what, a), (_, b)) in on_wgpu.iter().zip(&on_flex) {
        assert_close(&format!("{name} {what}"), a, b);
    }
}

#[test]
fn lm_head_loss_on_wgpu_equals_flex_in_value_and_gradient() {
    // V odd and not a multiple of any tile; logits large enough that the softmax saturates.
    let (n, c, v) = (24, 16, 5003);
    compare("lm_head_loss", |device| {
        let (h, wte) = (leaf([n, c], 1, 4.0, device), leaf([v, c], 2, 4.0, device));
        let loss = lm_head_loss(h.clone(), wte.clone(), ids([n], v, device));
        let grads = (loss.clone() * 3.0).backward();
        vec![
            ("loss", values(loss)),
            ("dh", values(h.grad(&grads).expect("dh"))),
            ("dwte", values(wte.grad(&grads).expect("dwte"))),
        ]
    });
}

#[test]
fn training_attention_on_wgpu_equals_flex_in_value_and_gradient() {
    let shape = [2, 3, 37, 8]; // T = 37: partial tiles
    compare("causal_attention", |device| {
        let (q, k, v) = (
            leaf(shape, 1, 3.0, device),
            leaf(shape, 2, 3.0, device),
            leaf(shape, 3, 3.0, device),
        );
        let w =
            Tensor::<4>::from_data(TensorData::new(data(2 * 3 * 37 * 8, 9, 1.0), shape), device);
        let y = causal_attention_train(q.clone(), k.clone(), v.clone(), 1.0 / 8f64.sqrt());
        let grads = (y.clone() * w).sum().backward();
        vec![
            ("y", values(y)),
            ("dq", values(q.grad(&grads).expect("dq"))),
            ("dk", values(k.grad(&grads).expect("dk"))),
            ("dv", values(v.grad(&grads).expect("dv"))),
        ]
    });
}

#[test]
fn gelu_on_wgpu_equals_flex_in_value_and_gradient() {
    let shape = [3, 17, 64];
    compare("gelu", |device| {
        let x = leaf(shape, 4, 12.0, device);
        let w = Tensor::<3>::from_data(TensorData::new(data(3 * 17 * 64, 5, 1.0), shape), device);
        let y = gelu_tanh(x.clone());
        let grads = (y.clone() * w).sum().backward();
        vec![
            ("y", values(y)),
            ("dx", values(x.grad(&grads).expect("dx"))),
        ]
    });
}

#[test]
fn token_nll_on_wgpu_equals_flex() {
    let (n, v) = (40, 5003);
    compare("token_nll", |device| {
        let logits = leaf([n, v], 6, 30.0, device);
        vec![("nll", values(token_nll(logits, ids([n], v, device))))]
    });
}

/// Every parameter's gradient, in visiting order.
struct Grads<'a> {
    grads: &'a burn::tensor::Gradients,
    out: Vec<(String, Vec<f32>)>,
    path: Vec<String>,
}

impl ModuleVisitor for Grads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let g = p
            .val()
            .grad(self.grads)
            .expect("every parameter has a gradient");
        self.out.push((self.path.join("."), values(g)));
    }
}

#[test]
fn tiny_model_gradients_on_wgpu_equal_flex() {
    let Some(wgpu) = wgpu_or_skip("tiny_model_gradients") else {
        return;
    };
    let config = Gpt2Config::preset("tiny").expect("preset");
    let run = |device: &Device| {
        let model = Gpt2::new(&config, device, 5).expect("model");
        let (x, y) = (ids([2, 48], 50257, device), ids([2, 48], 50221, device));
        let loss = model.forward_loss(x, y);
        let grads = loss.backward();
        let mut v = Grads {
            grads: &grads,
            out: Vec::new(),
            path: Vec::new(),
        };
        model.visit(&mut v);
        (values(loss), v.out)
    };
    let (flex_loss, flex) = run(&Device::flex().autodiff());
    let (wgpu_loss, on_wgpu) = run(&wgpu.autodiff());
    assert_close("loss", &wgpu_loss, &flex_loss);
    assert_eq!(flex.len(), 2 + 12 * config.n_layer + 2);
    for ((name, a), (_, b)) in on_wgpu.iter().zip(&flex) {
        // The whole backward compounds rounding through every layer: 1e-4 relative.
        assert!(a.iter().all(|x| x.is_finite()), "{name}: non-finite");
        let e = rel_err(a, b);
        assert!(e <= 1e-4, "d{name}: relative error {e:e}");
    }
}
