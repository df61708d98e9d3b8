//! The kernels the fused ops (`fused.rs`) are built from, as [`RowKernels`], and their composed
//! forms: each a short sequence of the backend's own tensor ops. The composed forms are the
//! defaults (what a backend without kernels of its own runs) and the reference the kernels are
//! tested against: flex's in `flex.rs` (`kernels.rs`), the GPU backends' in `cube/`.

use burn::backend::tensor::IndexingUpdateOp;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Scalar, TensorMetadata};
use burn::tensor::{DType, FloatDType, Shape, Slice, TensorData};

use crate::kernels;

/// The numbers of one AdamW step (PyTorch `AdamW`, as nanoGPT and llm.c use it):
///
/// ```text
/// g ← g · grad_scale                      (clipping and loss-scale factor)
/// m ← β1 m + (1 − β1) g ;  v ← β2 v + (1 − β2) g²
/// p ← p − p · decay                       decay = lr · weight_decay (0 for 1-D parameters)
/// p ← p − lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + eps)
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub decay: f64,
    pub grad_scale: f64,
    /// The step count `t` (1 on the first update).
    pub step: u64,
}

impl AdamWHyper {
    /// `(1 − β1ᵗ, 1 − β2ᵗ)`.
    pub fn bias_corrections(&self) -> (f64, f64) {
        let t = self.step as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }

    /// The scalars of the update as the composed ops use them, each rounded from f64 to f32
    /// once: `[grad_scale, β1, 1 − β1, β2, 1 − β2, decay, 1 − β2ᵗ, eps, 1 − β1ᵗ, lr]`.
    pub fn kernel_scalars(&self) -> [f32; 10] {
        let (bc1, bc2) = self.bias_corrections();
        [
            self.grad_scale,
            self.beta1,
            1.0 - self.beta1,
            self.beta2,
            1.0 - self.beta2,
            self.decay,
            bc2,
            self.eps,
            bc1,
            self.lr,
        ]
        .map(|x| x as f32)
    }
}

/// The kernels the fused ops are built from, each with tensor inputs and outputs only. The
/// defaults compose the backend's own ops (the reference the others are tested against); flex
/// overrides them with the SIMD, multi-threaded, in-place kernels of `kernels.rs`, the Cube
/// backends with the CubeCL kernels of `cube/`.
pub trait RowKernels: Backend {
    /// `(mean −ln softmax(l)[t] as f32 [1], softmax(l) − onehot(t) as f32 [N, V])` for
    /// `logits` `[N, V]` and `targets` `[N]`.
    fn softmax_xent(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_softmax_xent::<Self>(logits, targets)
    }

    /// Per row of `logits` `[N, V]`, f32 `[N, 2]`: `−ln softmax(l)[t]` and `max(l) − l[t]`.
    fn token_nll_rows(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        composed_token_nll::<Self>(logits, targets)
    }

    /// Causal attention's forward: `(O, stats)`, where `stats` is whatever the backward needs
    /// besides the inputs and `O` (here the probabilities `P` `[B, nh, T, T]`).
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_attention_forward::<Self>(q, k, v, scale)
    }

    /// Causal attention's backward: `(dq, dk, dv)` from the forward's inputs, `O`, `stats` and
    /// the upstream `dO`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed_attention_backward::<Self>(q, k, v, o, stats, d_o, scale)
    }

    /// Softmax's backward `p ⊙ (dp − delta)`, `delta` `[.., T, 1]` broadcast along the rows.
    fn softmax_backward(
        p: FloatTensor<Self>,
        dp: FloatTensor<Self>,
        delta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_mul(p, Self::float_sub(dp, delta))
    }

    /// LayerNorm's forward on `x` `[N, C]`: `(y, stats)`, `stats` `[N, 2]` f32 holding each
    /// row's mean and `1/√(var + eps)`.
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_layer_norm_forward::<Self>(x, gamma, beta, eps)
    }

    /// LayerNorm's forward when nothing will be differentiated (evaluation, sampling): `y` only.
    fn layer_norm_inference(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm_forward(x, gamma, beta, eps).0
    }

    /// LayerNorm's backward: `(dx, dγ, dβ)` from the forward's `x`, `γ`, `stats` and `dy`:
    /// with `n = (x − μ)·rstd` and `g = dy·γ`, `dx = rstd·(g − mean(g) − n·mean(g·n))`,
    /// `dγ = Σ_rows dy·n`, `dβ = Σ_rows dy`.
    fn layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed_layer_norm_backward::<Self>(x, gamma, stats, dy)
    }

    /// One AdamW step (see [`AdamWHyper`]) with the backend's elementwise ops, each a pass over
    /// the tensor: `(p', m', v')`.
    fn adamw(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        h: &AdamWHyper,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed_adamw::<Self>(p, g, m, v, h)
    }

    /// GPT-2's GELU, `x·σ(x·(A + B·x²))` (`kernels::GELU_A`, `GELU_B`).
    fn gelu_tanh_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_gelu::<Self>(x)
    }

    /// `dy · gelu'(x)`.
    fn gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_gelu_backward::<Self>(x, dy)
    }
}

// The composed forms behind `RowKernels`' defaults, also flex's fallback for non-f32 inputs.

/// `lse − l[t]` per row, `[N, 1]`, with `lse = m − ln(max p)`: `m` the row max of `l` and
/// `p = softmax(l)` (`max p ≥ 1/V`, so its log is finite); `targets` `[N, 1]`.
pub(crate) fn composed_nll<B: Backend>(
    logits: FloatTensor<B>,
    p: FloatTensor<B>,
    targets: IntTensor<B>,
) -> FloatTensor<B> {
    let m = B::float_max_dim(logits.clone(), 1); // (N, 1)
    let lse = B::float_sub(m, B::float_log(B::float_max_dim(p, 1)));
    B::float_sub(lse, B::float_gather(1, logits, targets))
}

/// The additive causal mask for `scores` `[B, nh, T, T]`: `[1, 1, T, T]`, 0 on and below the
/// diagonal, −∞ above, in the scores' dtype.
pub(crate) fn causal_bias<B: Backend>(scores: &FloatTensor<B>) -> FloatTensor<B> {
    let t = dims(scores)[3];
    let mask: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let bias = B::float_from_data(TensorData::new(mask, [1, 1, t, t]), &scores.device());
    match scores.dtype() {
        DType::F32 => bias,
        dtype => B::float_cast(bias, dtype.into()),
    }
}

/// The default `adamw`: the formula of [`AdamWHyper`] in the backend's tensor ops, in the order
/// the trainer has always computed it (so flex's results, and its checkpoints, do not change).
pub(crate) fn composed_adamw<B: Backend>(
    p: FloatTensor<B>,
    g: FloatTensor<B>,
    m: FloatTensor<B>,
    v: FloatTensor<B>,
    h: &AdamWHyper,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let s = |x: f64| Scalar::from(x);
    let g = B::float_mul_scalar(g, s(h.grad_scale));
    let m = B::float_add(
        B::float_mul_scalar(m, s(h.beta1)),
        B::float_mul_scalar(g.clone(), s(1.0 - h.beta1)),
    );
    let v = B::float_add(
        B::float_mul_scalar(v, s(h.beta2)),
        B::float_mul_scalar(B::float_mul(g.clone(), g), s(1.0 - h.beta2)),
    );
    let (bc1, bc2) = h.bias_corrections();
    let decayed = if h.decay > 0.0 {
        B::float_sub(p.clone(), B::float_mul_scalar(p, s(h.decay)))
    } else {
        p
    };
    let denom = B::float_add_scalar(
        B::float_sqrt(B::float_div_scalar(v.clone(), s(bc2))),
        s(h.eps),
    );
    let update = B::float_mul_scalar(
        B::float_div(B::float_div_scalar(m.clone(), s(bc1)), denom),
        s(h.lr),
    );
    (B::float_sub(decayed, update), m, v)
}

/// `(mean, rstd)` columns of `x` `[N, C]` and the normalised `x`.
pub(crate) fn composed_layer_norm_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let c = dims(&x)[1];
    let mean = B::float_mean_dim(x.clone(), 1); // (N, 1)
    let centered = B::float_sub(x, mean.clone());
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), 1);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, Scalar::from(eps))));
    let norm = B::float_mul(centered, rstd.clone());
    let y = B::float_add(
        B::float_mul(norm, B::float_reshape(gamma, Shape::new([1, c]))),
        B::float_reshape(beta, Shape::new([1, c])),
    );
    (y, B::float_cat(vec![mean, rstd], 1))
}

pub(crate) fn composed_layer_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    stats: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let c = dims(&x)[1];
    let col = |i: usize| {
        B::float_slice(
            stats.clone(),
            &[
                Slice::full(),
                Slice::new(i as isize, Some(i as isize + 1), 1),
            ],
        )
    };
    let (mean, rstd) = (col(0), col(1)); // (N, 1) each
    let norm = B::float_mul(B::float_sub(x, mean), rstd.clone());
    let g = B::float_mul(dy.clone(), B::float_reshape(gamma, Shape::new([1, c])));
    let mean_g = B::float_mean_dim(g.clone(), 1);
    let mean_gn = B::float_mean_dim(B::float_mul(g.clone(), norm.clone()), 1);
    let dx = B::float_mul(
        rstd,
        B::float_sub(B::float_sub(g, mean_g), B::float_mul(norm.clone(), mean_gn)),
    );
    let dgamma = B::float_reshape(
        B::float_sum_dim(B::float_mul(dy.clone(), norm), 0),
        Shape::new([c]),
    );
    let dbeta = B::float_reshape(B::float_sum_dim(dy, 0), Shape::new([c]));
    (dx, dgamma, dbeta)
}

pub(crate) fn composed_gelu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let x2 = B::float_mul(x.clone(), x.clone());
    let inner = B::float_mul_scalar(x2, Scalar::from(kernels::GELU_B));
    let inner = B::float_add_scalar(inner, Scalar::from(kernels::GELU_A));
    let s = B::sigmoid(B::float_mul(inner, x.clone()));
    B::float_mul(x, s)
}

/// `dy·(σ(u) + x·σ(u)·(1 − σ(u))·(A + 3B·x²))` with `u = x·(A + B·x²)`.
pub(crate) fn composed_gelu_backward<B: Backend>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let (a, b) = (Scalar::from(kernels::GELU_A), kernels::GELU_B);
    let x2 = B::float_mul(x.clone(), x.clone());
    let inner = B::float_add_scalar(B::float_mul_scalar(x2.clone(), Scalar::from(b)), a);
    let s = B::sigmoid(B::float_mul(inner, x.clone()));
    let du = B::float_add_scalar(B::float_mul_scalar(x2, Scalar::from(3.0 * b)), a);
    let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), Scalar::from(1.0f32));
    let slope = B::float_mul(B::float_mul(x, s.clone()), B::float_mul(one_minus_s, du));
    B::float_mul(dy, B::float_add(s, slope))
}

/// The default `softmax_xent`: Burn's softmax, then the loss and `p − onehot` by a scatter.
pub(crate) fn composed_softmax_xent<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [n, _] = [dims(&logits)[0], dims(&logits)[1]];
    let device = logits.device();
    let logits = to_f32::<B>(logits);
    let targets = B::int_reshape(targets, Shape::new([n, 1]));
    let p = B::softmax(logits.clone(), 1);
    let nll = composed_nll::<B>(logits, p.clone(), targets.clone());
    let loss = B::float_mean(nll); // [1]
    let minus_one = B::float_full(
        Shape::new([n, 1]),
        Scalar::from(-1.0f32),
        &device,
        FloatDType::F32,
    );
    let g = B::float_scatter(1, p, targets, minus_one, IndexingUpdateOp::Add);
    (loss, g)
}

/// The default `token_nll_rows`.
pub(crate) fn composed_token_nll<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> FloatTensor<B> {
    let n = dims(&logits)[0];
    let logits = to_f32::<B>(logits);
    let targets = B::int_reshape(targets, Shape::new([n, 1]));
    let p = B::softmax(logits.clone(), 1);
    let nll = composed_nll::<B>(logits.clone(), p, targets.clone());
    let gap = B::float_sub(
        B::float_max_dim(logits.clone(), 1),
        B::float_gather(1, logits, targets),
    );
    B::float_cat(vec![nll, gap], 1)
}

/// The default `attention_backward`, from the probabilities `p` the composed forward stored.
pub(crate) fn composed_attention_backward<B: RowKernels>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    o: FloatTensor<B>,
    p: FloatTensor<B>,
    d_o: FloatTensor<B>,
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let dv = B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), d_o.clone());
    let dp = B::float_matmul(d_o.clone(), B::float_swap_dims(v, 2, 3)); // (B, nh, T, T)
    let delta = B::float_sum_dim(B::float_mul(d_o, o), 3); // (B, nh, T, 1)
    let ds = B::softmax_backward(p, dp, delta);
    let dq = B::float_mul_scalar(B::float_matmul(ds.clone(), k), Scalar::from(scale));
    let qs = B::float_mul_scalar(q, Scalar::from(scale));
    let dk = B::float_matmul(B::float_swap_dims(ds, 2, 3), qs);
    (dq, dk, dv)
}

/// The default `attention_forward`, callable from an override that falls back to it.
pub(crate) fn composed_attention_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let qs = B::float_mul_scalar(q, Scalar::from(scale));
    let scores = B::float_matmul(qs, B::float_swap_dims(k, 2, 3)); // (B, nh, T, T)
    let p = B::softmax(B::float_add(scores.clone(), causal_bias::<B>(&scores)), 3);
    (B::float_matmul(p.clone(), v), p)
}

pub(crate) fn dims(t: &impl TensorMetadata) -> Vec<usize> {
    t.shape().to_vec()
}

pub(crate) fn to_f32<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    if t.dtype() == DType::F32 {
        t
    } else {
        B::float_cast(t, FloatDType::F32)
    }
}

pub(crate) fn cast_to<B: Backend>(t: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    if t.dtype() == dtype {
        t
    } else {
        B::float_cast(t, dtype.into())
    }
}
