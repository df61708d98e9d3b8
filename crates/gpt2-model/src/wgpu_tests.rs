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

use crate::model::{causal_attention, gelu_tanh, lm_head_loss};
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
    // V odd and not a multiple of any tile; logits large enough that the softmax saturates;
    // chunks of 7 rows do not divide N = 24.
    let (n, c, v) = (24, 16, 5003);
    for chunk in [0, 7] {
        compare(&format!("lm_head_loss chunk {chunk}"), |device| {
            let (h, wte) = (leaf([n, c], 1, 4.0, device), leaf([v, c], 2, 4.0, device));
            let loss = lm_head_loss(h.clone(), wte.clone(), ids([n], v, device), chunk);
            let grads = (loss.clone() * 3.0).backward();
            vec![
                ("loss", values(loss)),
                ("dh", values(h.grad(&grads).expect("dh"))),
                ("dwte", values(wte.grad(&grads).expect("dwte"))),
            ]
        });
    }
}

#[test]
fn training_attention_on_wgpu_equals_flex_in_value_and_gradient() {
    let shape = [2, 3, 37, 8]; // T = 37: partial tiles
    for flash in [true, false] {
        compare(&format!("causal_attention flash={flash}"), |device| {
            let (q, k, v) = (
                leaf(shape, 1, 3.0, device),
                leaf(shape, 2, 3.0, device),
                leaf(shape, 3, 3.0, device),
            );
            let w = Tensor::<4>::from_data(
                TensorData::new(data(2 * 3 * 37 * 8, 9, 1.0), shape),
                device,
            );
            let y = causal_attention(q.clone(), k.clone(), v.clone(), 1.0 / 8f64.sqrt(), flash);
            let grads = (y.clone() * w).sum().backward();
            vec![
                ("y", values(y)),
                ("dq", values(q.grad(&grads).expect("dq"))),
                ("dk", values(k.grad(&grads).expect("dk"))),
                ("dv", values(v.grad(&grads).expect("dv"))),
            ]
        });
    }
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
fn lm_head_nll_on_wgpu_equals_flex() {
    let (b, t) = (3, 20);
    let config = Gpt2Config {
        lm_head_chunk_rows: 7, // does not divide the 40 rows scored
        ..Gpt2Config::preset("tiny").expect("preset")
    };
    let Some(wgpu) = wgpu_or_skip("lm_head_nll") else {
        return;
    };
    let run = |device: &Device| {
        let model = Gpt2::new(&config, device, 3).expect("model");
        let rows: Vec<i64> = (0..(b * t) as i64).filter(|r| r % 3 != 1).collect();
        let m = rows.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [m]), device);
        values(model.forward_nll(ids([b, t], 50257, device), rows, ids([m], 50221, device)))
    };
    assert_close("forward_nll", &run(&wgpu), &run(&Device::flex()));
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

/// One forward and backward of `config` (seed 5, `[2, 48]` tokens) on `device`: the loss and
/// every parameter's gradient, by name.
fn loss_and_gradients(config: &Gpt2Config, device: &Device) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let model = Gpt2::new(config, device, 5).expect("model");
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
}

#[test]
fn tiny_model_gradients_on_wgpu_equal_flex() {
    let Some(wgpu) = wgpu_or_skip("tiny_model_gradients") else {
        return;
    };
    let config = Gpt2Config::preset("tiny").expect("preset");
    let (flex_loss, flex) = loss_and_gradients(&config, &Device::flex().autodiff());
    let (wgpu_loss, on_wgpu) = loss_and_gradients(&config, &wgpu.autodiff());
    assert_close("loss", &wgpu_loss, &flex_loss);
    assert_eq!(flex.len(), 2 + 12 * config.n_layer + 2);
    for ((name, a), (_, b)) in on_wgpu.iter().zip(&flex) {
        // The whole backward compounds rounding through every layer: 1e-4 relative.
        assert!(a.iter().all(|x| x.is_finite()), "{name}: non-finite");
        let e = rel_err(a, b);
        assert!(e <= 1e-4, "d{name}: relative error {e:e}");
    }
}

/// `recompute` on the Cube path: one step of `tiny` on wgpu in f32 and f16 with each mode, every
/// gradient against `none` on the same device. f32: equal to the bit (the recomputed LayerNorm
/// and GELU are the same kernels on the same kept values, and CubeCL's kernels are
/// deterministic). f16: `gelu` is exact too; `gelu_layernorm` recomputes the LayerNorms from
/// their inputs as kept, rounded to f16, so its gradients differ by that rounding: measured
/// 8.5e-4 of the largest value per tensor at most (`c_attn`'s weight); 1e-2 allowed.
#[test]
fn recompute_modes_on_wgpu_give_the_same_gradients() {
    use crate::{ComputeDtype, Recompute};
    let Some(wgpu) = wgpu_or_skip("recompute modes") else {
        return;
    };
    let device = wgpu.autodiff();
    let run = |dtype: ComputeDtype, recompute: Recompute| {
        let config = Gpt2Config {
            compute_dtype: dtype,
            recompute,
            ..Gpt2Config::preset("tiny").expect("preset")
        };
        loss_and_gradients(&config, &device)
    };
    for dtype in [ComputeDtype::F32, ComputeDtype::F16] {
        let (loss, reference) = run(dtype, Recompute::None);
        for mode in [Recompute::Gelu, Recompute::GeluLayernorm] {
            let (mode_loss, grads) = run(dtype, mode);
            assert_eq!(mode_loss, loss, "{dtype:?} {mode:?}: loss");
            let exact = dtype == ComputeDtype::F32 || mode == Recompute::Gelu;
            for ((name, a), (_, b)) in grads.iter().zip(&reference) {
                if exact {
                    assert!(a == b, "{dtype:?} {mode:?}: d{name} differs");
                } else {
                    let e = rel_err(a, b);
                    assert!(
                        e <= 1e-2,
                        "{dtype:?} {mode:?}: d{name}: relative error {e:e}"
                    );
                }
            }
        }
    }
}

/// Flash attention's kernels (`cube/attention.rs`) against the composed attention (the
/// `RowKernels` defaults: `P` materialised, Burn's softmax) on the same wgpu device: `O` and
/// `dq`, `dk`, `dv` for a non-uniform `dO`, over sequence lengths around the block sizes (1, a
/// block minus one, a block, a block plus one, 67, 128, and 1024 with one head), head sizes 16
/// and 64, with the shared memory the adapter reports and with WebGPU's default 16 KiB (smaller
/// blocks, more of them). f32 within 1e-5 relative; f16 inputs within 1e-2 of the f32 result.
#[test]
fn flash_attention_kernels_equal_the_composed_attention() {
    use crate::cube::attention;
    use crate::row_kernels::{composed_attention_backward, composed_attention_forward};
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::{Cube, DispatchDevice};
    use burn::tensor::{DType, FloatDType};
    use burn_cubecl::tensor::CubeTensor;

    let Some(wgpu) = wgpu_or_skip("flash_attention_kernels") else {
        return;
    };
    let DispatchDevice::Cube(device) = wgpu.as_dispatch().clone() else {
        panic!("a wgpu device is a Cube device");
    };
    let tensor = |shape: [usize; 4], salt: usize, dtype: DType| -> CubeTensor {
        let n = shape.iter().product();
        let t = Cube::float_from_data(TensorData::new(data(n, salt, 3.0), shape), &device);
        match dtype {
            DType::F32 => t,
            _ => Cube::float_cast(t, FloatDType::from(dtype)),
        }
    };
    let read = |t: CubeTensor| -> Vec<f32> {
        burn::tensor::try_read_sync(Cube::float_into_data(t))
            .expect("sync read")
            .expect("read back")
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32")
    };
    let mut cases: Vec<[usize; 4]> = Vec::new();
    for hd in [16, 64] {
        for t in [1, 15, 16, 17, 67, 128] {
            cases.push([2, 3, t, hd]);
        }
        cases.push([1, 1, 1024, hd]);
    }
    for shape in cases {
        let scale = 1.0 / (shape[3] as f64).sqrt();
        let f32_inputs = [1, 2, 3, 4].map(|salt| tensor(shape, salt, DType::F32));
        let [q, k, v, d_o] = f32_inputs.clone();
        let (o, p) = composed_attention_forward::<Cube>(q.clone(), k.clone(), v.clone(), scale);
        let (dq, dk, dv) = composed_attention_backward::<Cube>(q, k, v, o.clone(), p, d_o, scale);
        let want = [o, dq, dk, dv].map(read);
        for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::F16, 1e-2)] {
            for cap in [None, Some(16 * 1024)] {
                let [q, k, v, d_o] = [1, 2, 3, 4].map(|salt| tensor(shape, salt, dtype));
                let (o, saved) = attention::forward(q, k, v, scale, cap);
                let (dq, dk, dv) = attention::backward(saved, d_o, cap);
                let got = [o, dq, dk, dv].map(read);
                for (name, (a, b)) in ["O", "dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
                    let what = format!("{name} {shape:?} {dtype:?} shared {cap:?}");
                    assert!(a.iter().all(|x| x.is_finite()), "{what}: non-finite");
                    // Relative to the reference's largest value, floored at 1: the inputs and
                    // the terms of dS = P ⊙ (dP − D) are O(1), and at T = 1 the exact dq and dk
                    // are 0 (a softmax over one key has no gradient), where the composed form
                    // leaves ~3e-7 of rounding from that cancellation.
                    let diff = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    let top = b.iter().fold(0f32, |m, y| m.max(y.abs())).max(1.0);
                    let e = diff / top;
                    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
                }
            }
        }
    }
}

/// The CubeCL device behind the wgpu test device, and helpers to move data in and out of it.
mod cube_io {
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::{Cube, DispatchDevice};
    use burn::tensor::{DType, Device, FloatDType, TensorData};
    use burn_cubecl::tensor::CubeTensor;

    pub fn device(wgpu: &Device) -> burn_cubecl::CubeDevice {
        match wgpu.as_dispatch() {
            DispatchDevice::Cube(d) => d.clone(),
            _ => panic!("a wgpu device is a Cube device"),
        }
    }

    pub fn tensor<const D: usize>(
        values: Vec<f32>,
        shape: [usize; D],
        dtype: DType,
        device: &burn_cubecl::CubeDevice,
    ) -> CubeTensor {
        let t = Cube::float_from_data(TensorData::new(values, shape), device);
        match dtype {
            DType::F32 => t,
            _ => Cube::float_cast(t, FloatDType::from(dtype)),
        }
    }

    pub fn read(t: CubeTensor) -> Vec<f32> {
        burn::tensor::try_read_sync(Cube::float_into_data(t))
            .expect("sync read")
            .expect("read back")
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32")
    }

    pub fn ints(values: Vec<i64>, device: &burn_cubecl::CubeDevice) -> CubeTensor {
        use burn::backend::ops::IntTensorOps;
        let n = values.len();
        Cube::int_from_data(TensorData::new(values, [n]), device)
    }
}

/// `max|a − b| / max(max|b|, floor)`.
fn rel_err_floor(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    diff / b.iter().fold(0f32, |m, y| m.max(y.abs())).max(floor)
}

/// LayerNorm's kernels (`cube/norm.rs`) against the composed form, value and the three
/// gradients, with row lengths that are not multiples of the 128 units per row (130, 50) and
/// more rows than one chunk of the parameter-gradient sums (4,096), in f32 (LayerNorm's only
/// dtype).
#[test]
fn layer_norm_kernels_equal_the_composed_layer_norm() {
    use crate::cube::norm;
    use crate::row_kernels::{composed_layer_norm_backward, composed_layer_norm_forward};
    use burn::backend::Cube;
    use burn::tensor::DType;
    let Some(wgpu) = wgpu_or_skip("layer_norm kernels") else {
        return;
    };
    let device = cube_io::device(&wgpu);
    for (n, c) in [(7, 130), (4100, 50), (3, 768)] {
        let t = |v: Vec<f32>, shape: &[usize]| match shape.len() {
            1 => cube_io::tensor(v, [shape[0]], DType::F32, &device),
            _ => cube_io::tensor(v, [shape[0], shape[1]], DType::F32, &device),
        };
        let x = || t(data(n * c, 1, 6.0), &[n, c]);
        let gamma = || t(data(c, 2, 2.0).iter().map(|g| g + 1.0).collect(), &[c]);
        let beta = || t(data(c, 3, 1.0), &[c]);
        let dy = || t(data(n * c, 4, 2.0), &[n, c]);
        let (y, stats) = norm::forward(x(), gamma(), beta(), 1e-5);
        let (dx, dg, db) = norm::backward(x(), gamma(), stats, dy());
        let (y0, stats0) = composed_layer_norm_forward::<Cube>(x(), gamma(), beta(), 1e-5);
        let (dx0, dg0, db0) = composed_layer_norm_backward::<Cube>(x(), gamma(), stats0, dy());
        for (name, a, b) in [
            ("y", y, y0),
            ("dx", dx, dx0),
            ("dgamma", dg, dg0),
            ("dbeta", db, db0),
        ] {
            let (a, b) = (cube_io::read(a), cube_io::read(b));
            assert!(
                a.iter().all(|x| x.is_finite()),
                "{name} [{n}, {c}]: non-finite"
            );
            let e = rel_err_floor(&a, &b, 1.0);
            assert!(e <= REL, "{name} [{n}, {c}]: relative error {e:e}");
        }
    }
}

/// GELU's kernels (`cube/rows.rs`) against the composed form: f32 within 1e-5, f16 inputs
/// within 1e-2 of the f32 result; a length that is not a multiple of the 256 units per cube.
#[test]
fn gelu_kernels_equal_the_composed_gelu_in_f32_and_f16() {
    use crate::cube::rows;
    use crate::row_kernels::{composed_gelu, composed_gelu_backward};
    use burn::backend::Cube;
    use burn::tensor::DType;
    let Some(wgpu) = wgpu_or_skip("gelu kernels") else {
        return;
    };
    let device = cube_io::device(&wgpu);
    let n = 3 * 17 * 67;
    let t = |salt, scale, dtype| cube_io::tensor(data(n, salt, scale), [n], dtype, &device);
    let want_y = cube_io::read(composed_gelu::<Cube>(t(1, 12.0, DType::F32)));
    let want_dx = cube_io::read(composed_gelu_backward::<Cube>(
        t(1, 12.0, DType::F32),
        t(2, 2.0, DType::F32),
    ));
    for (dtype, tol) in [(DType::F32, REL), (DType::F16, 1e-2)] {
        let y = cube_io::read(rows::gelu(t(1, 12.0, dtype)));
        let dx = cube_io::read(rows::gelu_backward(t(1, 12.0, dtype), t(2, 2.0, dtype)));
        for (name, a, b) in [("y", &y, &want_y), ("dx", &dx, &want_dx)] {
            let e = rel_err_floor(a, b, 1e-12);
            assert!(e <= tol, "gelu {name} {dtype:?}: relative error {e:e}");
        }
    }
}

/// The loss-row kernels (`cube/rows.rs`) against the composed forms: the mean loss and
/// `softmax − onehot`, and evaluation's (NLL, greedy gap) rows, for a vocabulary that is not a
/// multiple of the 256 units per row and logits large enough to saturate the softmax.
#[test]
fn loss_row_kernels_equal_the_composed_rows() {
    use crate::cube::rows;
    use crate::row_kernels::{composed_softmax_xent, composed_token_nll};
    use burn::backend::Cube;
    use burn::tensor::DType;
    let Some(wgpu) = wgpu_or_skip("loss row kernels") else {
        return;
    };
    let device = cube_io::device(&wgpu);
    let (n, v) = (37, 5003);
    let logits = || cube_io::tensor(data(n * v, 6, 40.0), [n, v], DType::F32, &device);
    let targets = || {
        cube_io::ints(
            (0..n as i64).map(|i| (i * 61 + 7) % v as i64).collect(),
            &device,
        )
    };
    let (loss, g) = rows::softmax_xent(logits(), targets());
    let (loss0, g0) = composed_softmax_xent::<Cube>(logits(), targets());
    let e = rel_err_floor(&cube_io::read(loss), &cube_io::read(loss0), 1e-12);
    assert!(e <= REL, "loss: relative error {e:e}");
    let e = rel_err_floor(&cube_io::read(g), &cube_io::read(g0), 1e-12);
    assert!(e <= REL, "softmax − onehot: relative error {e:e}");
    let rows_out = cube_io::read(rows::token_nll(logits(), targets()));
    let rows0 = cube_io::read(composed_token_nll::<Cube>(logits(), targets()));
    let e = rel_err_floor(&rows_out, &rows0, 1e-12);
    assert!(e <= REL, "token nll rows: relative error {e:e}");
}

/// The AdamW kernel (`cube/adamw.rs`) against the composed update (the formula the trainer
/// has always run) over 30 steps on the same gradients, with weight decay and a clipping
/// factor: weights and both moments within 1e-6 relative.
#[test]
fn adamw_kernel_equals_the_composed_update_over_30_steps() {
    use crate::cube::adamw;
    use crate::row_kernels::{composed_adamw, AdamWHyper};
    use burn::backend::Cube;
    use burn::tensor::DType;
    let Some(wgpu) = wgpu_or_skip("adamw kernel") else {
        return;
    };
    let device = cube_io::device(&wgpu);
    let n = 10_007;
    let t = |v: Vec<f32>| cube_io::tensor(v, [n], DType::F32, &device);
    let init = || (t(data(n, 1, 0.2)), t(vec![0.0; n]), t(vec![0.0; n]));
    let (mut p, mut m, mut v) = init();
    let (mut p0, mut m0, mut v0) = init();
    for step in 1..=30u64 {
        let h = AdamWHyper {
            lr: 6e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            decay: 6e-4 * 0.1,
            grad_scale: 0.7,
            step,
        };
        let g = || t(data(n, 10 + step as usize, 0.05));
        (p, m, v) = adamw::step(p, g(), m, v, &h);
        (p0, m0, v0) = composed_adamw::<Cube>(p0, g(), m0, v0, &h);
    }
    for (name, a, b) in [
        ("weights", p, p0),
        ("exp_avg", m, m0),
        ("exp_avg_sq", v, v0),
    ] {
        let e = rel_err_floor(&cube_io::read(a), &cube_io::read(b), 1e-30);
        assert!(e <= 1e-6, "{name}: relative error {e:e}");
    }
}

/// The peak memory a run reports counts every tensor it held at once, also when its tensors grow:
/// 1, 10 and 60 MB held together, then dropped, read a peak of at least their 71 MB on their
/// stream once the pages are sized for the largest (`presize_memory_pages`). Without that, each
/// larger tensor starts a pool of larger pages, the smaller pools drain when their tensors go,
/// and the report forgets them.
#[test]
fn peak_memory_keeps_tensors_of_growing_sizes_once_pages_are_presized() {
    use cubecl_runtime::memory_management::MemoryScope;
    let Some(wgpu) = wgpu_or_skip("peak memory") else {
        return;
    };
    let client = crate::device::cube_client(&wgpu).expect("a wgpu device is a Cube device");
    const MB: usize = 1_000_000;
    // A stream of its own: other tests' tensors neither add to this peak nor hide it.
    let peak = burn::tensor::StreamId::allocate().executes(|| {
        crate::device::presize_memory_pages(&wgpu, 60 * MB as u64);
        let held: Vec<Tensor<1>> = [1, 10, 60]
            .iter()
            .map(|m| Tensor::<1>::zeros([m * MB / 4], &wgpu))
            .collect();
        let sum: f32 = held
            .iter()
            .map(|t| t.clone().sum().into_scalar::<f32>())
            .sum();
        assert_eq!(sum, 0.0);
        drop(held);
        // A later allocation, which lets drained pools go.
        let _ = Tensor::<1>::ones([MB / 4], &wgpu)
            .sum()
            .into_scalar::<f32>();
        crate::device::pools_peak_bytes(&client, MemoryScope::CurrentStream)
    });
    assert!(
        peak >= 71 * MB as u64,
        "peak {peak} B < the 71 MB held at once"
    );
}
