//! Model ops with hand-written backward passes, as a Burn backend extension: the tied LM head
//! with its cross-entropy (and, for evaluation, its per-token NLL), causal softmax attention and
//! GPT-2's GELU.
//!
//! Why: Burn 0.22's autodiff records every composed op with its own backward, so the loss costs
//! extra passes over the `[B·T, V]` logits, attention some dozen tracked ops over `[B, nh, T, T]`
//! and GELU six single-threaded ones. Here the forward runs on the inner backend and the backward
//! is the closed form, written once:
//!
//! - LM head + loss, in row chunks (llm.c's fused classifier): for each chunk of rows,
//!   `l = h_c·wteᵀ`, `p = softmax(l)`, `loss += Σ(lse − l[t])`, and with `G = p − onehot(t)`:
//!   `dh_c = G·wte`, `dwte += Gᵀ·h_c`, all while the chunk's logits exist; the full `[N, V]`
//!   never does. Backward: `dh`, `dwte` times `g_loss/N`.
//! - Attention: `S = (q·s)·kᵀ + causal`, `P = softmax(S)`, `O = P·v`. With `dO`:
//!   `dv = Pᵀ·dO`, `dP = dO·vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`, `dq = dS·k·s`, `dk = dSᵀ·(q·s)`.
//!   On flex from the stored `P` (`kernels.rs`); on the Cube backends flash attention
//!   (`cube/attention.rs`) keeps only the row log-sum-exp and recomputes `P` block by block.
//! - GELU: `y = x·σ(u)`, `u = x·(A + B·x²)`; `dx = dy·(σ(u) + x·σ(u)·(1 − σ(u))·(A + 3B·x²))`.
//!
//! The pieces the ops are built from are the [`RowKernels`] of each backend (`row_kernels.rs`):
//! `kernels.rs` on flex (`flex.rs`), CubeCL kernels on CUDA/wgpu (`cube/`), the composed tensor
//! ops as the reference. Tests: model.rs
//! (each op against its composed form, value and gradient), kernels.rs (against f64 formulas),
//! wgpu_tests.rs (Cube against flex), tests/hf_reference.rs (the whole network against PyTorch).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Autodiff, Backend, Flex, Scalar, TensorMetadata};
use burn::tensor::{FloatDType, Shape, Slice};

mod linear;

use crate::row_kernels::{
    cast_to, composed_attention_backward, composed_attention_forward, dims, to_f32,
};
pub use crate::row_kernels::{AdamWHyper, RowKernels};

/// The fused ops, as a backend extension: concrete backends run the forward, `Autodiff<B>`
/// adds the backward.
#[backend_extension(Flex, Cube: cfg(any(feature = "cuda", feature = "wgpu")), Autodiff)]
pub trait FusedOps: Backend {
    /// Mean cross-entropy (nats, f32 `[1]`) of the tied LM head: `h` `[N, C]`, `wte` `[V, C]`,
    /// `targets` `[N]` (ids `< V`), computed `chunk_rows` rows at a time (0: all at once), so at
    /// most `chunk_rows × V` logits exist at any moment.
    fn lm_head_loss(
        h: FloatTensor<Self>,
        wte: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk_rows: usize,
    ) -> FloatTensor<Self>;

    /// Per row of the tied LM head, f32 `[N, 2]`: `−ln softmax(h·wteᵀ)[t]` and how far the
    /// target's logit is below the row's largest (0 when the target is the greedy choice), in row
    /// chunks as [`FusedOps::lm_head_loss`]. Evaluation only (no gradient).
    fn lm_head_nll(
        h: FloatTensor<Self>,
        wte: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk_rows: usize,
    ) -> FloatTensor<Self>;

    /// Causal `softmax(q·kᵀ·scale)·v` for `q, k, v` `[B, nh, T, hd]` (query `i` sees keys
    /// `0..=i`): with `flash`, the backend's [`RowKernels`] attention (flash attention on the
    /// Cube backends); without, the composed form that stores the probabilities.
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
        flash: bool,
    ) -> FloatTensor<Self>;

    /// GPT-2's tanh-approximate GELU, elementwise.
    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// LayerNorm over the last axis of f32 `x` `[.., C]` with weight `gamma` and bias `beta`
    /// `[C]`: `(x − mean)/√(var + eps)·γ + β`. Under autodiff `x` is kept for the backward in
    /// `keep` (a half-precision run's dtype: llm.c keeps its residual stream in bf16), else f32;
    /// the statistics stay f32.
    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        keep: Option<FloatDType>,
    ) -> FloatTensor<Self>;

    /// `ln(x)·W + b` in `dtype` (f32 where `None`) for f32 `x` `[.., C]`, the LayerNorm's
    /// `gamma`, `beta` `[C]` and the linear layer's f32 `w` `[C, out]`, `b` `[out]`: `[.., out]`
    /// in `dtype`. Keeps `x` in `dtype` and, unless `recompute`, `ln(x)` (`fused/linear.rs`).
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_linear(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        eps: f64,
        dtype: Option<FloatDType>,
        recompute: bool,
    ) -> FloatTensor<Self>;

    /// `gelu(h)·W + b` in `dtype` for `h` `[.., 4C]` in `dtype` and the f32 `w` `[4C, C]`, `b`
    /// `[C]`. Keeps `h` and, unless `recompute`, `gelu(h)` (`fused/linear.rs`).
    fn gelu_linear(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dtype: Option<FloatDType>,
        recompute: bool,
    ) -> FloatTensor<Self>;

    /// One AdamW update of one parameter: `p`, its gradient `g` and moments `m`, `v` (f32, one
    /// shape) → `(p', m', v')` (see [`AdamWHyper`] for the formula). Not differentiable.
    #[allow(clippy::too_many_arguments)]
    fn adamw_step(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        decay: f64,
        grad_scale: f64,
        step: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The concrete (forward-only) `FusedOps` of a backend with row kernels.
macro_rules! concrete_fused_ops {
    ($backend:ty) => {
        impl FusedOps for $backend {
            fn lm_head_loss(
                h: FloatTensor<Self>,
                wte: FloatTensor<Self>,
                targets: IntTensor<Self>,
                chunk_rows: usize,
            ) -> FloatTensor<Self> {
                lm_head_forward::<Self>(h, wte, targets, chunk_rows, false).0
            }

            fn lm_head_nll(
                h: FloatTensor<Self>,
                wte: FloatTensor<Self>,
                targets: IntTensor<Self>,
                chunk_rows: usize,
            ) -> FloatTensor<Self> {
                lm_head_nll_rows::<Self>(h, wte, targets, chunk_rows)
            }

            fn causal_attention(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                scale: f64,
                flash: bool,
            ) -> FloatTensor<Self> {
                attention_forward::<Self>(q, k, v, scale, flash).0
            }

            fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
                gelu_forward::<Self>(x)
            }

            fn layer_norm(
                x: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                beta: FloatTensor<Self>,
                eps: f64,
                _keep: Option<FloatDType>,
            ) -> FloatTensor<Self> {
                let shape = x.shape();
                let c = dims(&x).last().copied().unwrap_or(1);
                let rows = Self::float_reshape(x, Shape::new([shape.num_elements() / c, c]));
                Self::float_reshape(Self::layer_norm_inference(rows, gamma, beta, eps), shape)
            }

            fn layer_norm_linear(
                x: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                beta: FloatTensor<Self>,
                w: FloatTensor<Self>,
                b: FloatTensor<Self>,
                eps: f64,
                dtype: Option<FloatDType>,
                _recompute: bool,
            ) -> FloatTensor<Self> {
                linear::layer_norm_linear_inference::<Self>(x, gamma, beta, w, b, eps, dtype)
            }

            fn gelu_linear(
                h: FloatTensor<Self>,
                w: FloatTensor<Self>,
                b: FloatTensor<Self>,
                dtype: Option<FloatDType>,
                _recompute: bool,
            ) -> FloatTensor<Self> {
                linear::gelu_linear_inference::<Self>(h, w, b, dtype)
            }

            fn adamw_step(
                p: FloatTensor<Self>,
                g: FloatTensor<Self>,
                m: FloatTensor<Self>,
                v: FloatTensor<Self>,
                lr: f64,
                betas: [f64; 2],
                eps: f64,
                decay: f64,
                grad_scale: f64,
                step: u64,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                let h = AdamWHyper {
                    lr,
                    beta1: betas[0],
                    beta2: betas[1],
                    eps,
                    decay,
                    grad_scale,
                    step,
                };
                Self::adamw(p, g, m, v, &h)
            }
        }
    };
}

concrete_fused_ops!(Flex);
#[cfg(any(feature = "cuda", feature = "wgpu"))]
concrete_fused_ops!(burn::backend::Cube);

/// Row ranges of at most `chunk_rows` rows (0: one range) covering `0..n`.
pub(crate) fn row_chunks(n: usize, chunk_rows: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = if chunk_rows == 0 {
        n.max(1)
    } else {
        chunk_rows
    };
    (0..n)
        .step_by(chunk)
        .map(move |start| (start, (start + chunk).min(n)))
}

fn rows_of<B: Backend>(t: FloatTensor<B>, (start, end): (usize, usize)) -> FloatTensor<B> {
    B::float_slice(t, &[Slice::new(start as isize, Some(end as isize), 1)])
}

fn int_rows_of<B: Backend>(t: IntTensor<B>, (start, end): (usize, usize)) -> IntTensor<B> {
    B::int_slice(t, &[Slice::new(start as isize, Some(end as isize), 1)])
}

/// The head's gradients for a unit upstream gradient, before the `1/N` of the mean:
/// `(Σ G·wte, Σ Gᵀ·h)` in the dtypes of `h` and `wte`.
type HeadGrads<B> = (FloatTensor<B>, FloatTensor<B>);

/// The chunked LM head + cross-entropy: the mean loss (f32 `[1]`) and, when `grads`, the
/// gradients of `h` and `wte` (see [`HeadGrads`]). Matmuls in the inputs' dtype, softmax and loss
/// in f32, `dwte` accumulated over the chunks in f32.
fn lm_head_forward<B: RowKernels>(
    h: FloatTensor<B>,
    wte: FloatTensor<B>,
    targets: IntTensor<B>,
    chunk_rows: usize,
    grads: bool,
) -> (FloatTensor<B>, Option<HeadGrads<B>>) {
    let n = dims(&h)[0];
    let (h_dtype, wte_dtype) = (h.dtype(), wte.dtype());
    let wte_t = B::float_transpose(wte.clone()); // (C, V)
    let mut loss: Option<FloatTensor<B>> = None;
    let mut dh_parts = Vec::new();
    let mut dwte: Option<FloatTensor<B>> = None;
    for range in row_chunks(n, chunk_rows) {
        let rows = range.1 - range.0;
        let h_c = rows_of::<B>(h.clone(), range);
        let logits = to_f32::<B>(B::float_matmul(h_c.clone(), wte_t.clone())); // (R, V)
        let (mean_c, g) = B::softmax_xent(logits, int_rows_of::<B>(targets.clone(), range));
        let sum_c = B::float_mul_scalar(mean_c, Scalar::from(rows as f64));
        loss = Some(match loss {
            None => sum_c,
            Some(acc) => B::float_add(acc, sum_c),
        });
        if grads {
            let g = cast_to::<B>(g, h_dtype); // (R, V), unscaled
            dh_parts.push(B::float_matmul(g.clone(), wte.clone())); // (R, C)
            let dw = to_f32::<B>(B::float_matmul(B::float_transpose(g), h_c)); // (V, C)
            dwte = Some(match dwte {
                None => dw,
                Some(acc) => B::float_add(acc, dw),
            });
        }
    }
    let loss = B::float_mul_scalar(
        loss.expect("at least one row"),
        Scalar::from(1.0 / n as f64),
    );
    let grads = grads.then(|| {
        let dh = if dh_parts.len() == 1 {
            dh_parts.pop().expect("one part")
        } else {
            B::float_cat(dh_parts, 0)
        };
        (dh, cast_to::<B>(dwte.expect("at least one row"), wte_dtype))
    });
    (loss, grads)
}

/// `[N, 2]` rows of (NLL, max − target logit), chunk by chunk.
fn lm_head_nll_rows<B: RowKernels>(
    h: FloatTensor<B>,
    wte: FloatTensor<B>,
    targets: IntTensor<B>,
    chunk_rows: usize,
) -> FloatTensor<B> {
    let n = dims(&h)[0];
    let wte_t = B::float_transpose(wte);
    let mut parts: Vec<FloatTensor<B>> = row_chunks(n, chunk_rows)
        .map(|range| {
            let logits = B::float_matmul(rows_of::<B>(h.clone(), range), wte_t.clone());
            B::token_nll_rows(
                to_f32::<B>(logits),
                int_rows_of::<B>(targets.clone(), range),
            )
        })
        .collect();
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        B::float_cat(parts, 0)
    }
}

/// The backend's attention with `flash`, the composed one without.
fn attention_forward<B: RowKernels>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f64,
    flash: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    if flash {
        B::attention_forward(q, k, v, scale)
    } else {
        composed_attention_forward::<B>(q, k, v, scale)
    }
}

/// GELU of `x` in f32, returned in `x`'s dtype. A half-precision `x` (the output of `c_fc`'s
/// half-precision matmul) is widened for the arithmetic, so the result is the f32 GELU of the
/// same values rounded once, as `mlp.c_proj`'s half-precision input would round it anyway; only
/// the half-precision `x` is kept for the backward, not an f32 copy.
pub(crate) fn gelu_forward<B: RowKernels>(x: FloatTensor<B>) -> FloatTensor<B> {
    let dtype = x.dtype();
    cast_to::<B>(B::gelu_tanh_forward(to_f32::<B>(x)), dtype)
}

/// GELU's backward in f32 from the kept `x`, returned in `x`'s dtype (see [`gelu_forward`]).
pub(crate) fn gelu_backward<B: RowKernels>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let dtype = x.dtype();
    cast_to::<B>(
        B::gelu_tanh_backward(to_f32::<B>(x), to_f32::<B>(dy)),
        dtype,
    )
}

/// What attention's backward needs from its forward.
#[derive(Clone, Debug)]
struct AttentionState<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    o: FloatTensor<B>,
    stats: FloatTensor<B>,
    scale: f64,
    flash: bool,
}

#[derive(Debug)]
struct LmHeadLossBackward;

impl<B: Backend> Backward<B, 2> for LmHeadLossBackward {
    /// `(dh, dwte)` for a unit upstream gradient, before the `1/N`.
    type State = (FloatTensor<B>, FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_h, node_wte] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // [1]
        let (dh, dwte, n) = ops.state;
        // The scalar factor g_loss / N applied to the results, not to anything `[N, V]`.
        let factor = B::float_mul_scalar(to_f32::<B>(grad), Scalar::from(1.0 / n as f64)); // [1]
        let factor = B::float_reshape(factor, Shape::new([1, 1]));
        let scaled = |t: FloatTensor<B>| {
            let dtype = t.dtype();
            cast_to::<B>(B::float_mul(to_f32::<B>(t), factor.clone()), dtype)
        };
        if let Some(node) = node_h {
            grads.register::<B>(node.id, scaled(dh));
        }
        if let Some(node) = node_wte {
            grads.register::<B>(node.id, scaled(dwte));
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: RowKernels> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let d_o = grads.consume::<B>(&ops.node); // (B, nh, T, hd)
        let AttentionState {
            q,
            k,
            v,
            o,
            stats,
            scale,
            flash,
        } = ops.state;
        let d_o = cast_to::<B>(d_o, q.dtype());
        let (dq, dk, dv) = if flash {
            B::attention_backward(q, k, v, o, stats, d_o, scale)
        } else {
            composed_attention_backward::<B>(q, k, v, o, stats, d_o, scale)
        };
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The backward of an evaluation-only op: contributes nothing.
#[derive(Debug)]
struct NoGradient;

impl<B: Backend, const N: usize> Backward<B, N> for NoGradient {
    type State = ();

    fn backward(self, _: Ops<(), N>, _: &mut Gradients, _: &mut Checkpointer) {}
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: RowKernels> Backward<B, 3> for LayerNormBackward {
    /// `(x [N, C], γ, stats, the input's shape)`.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Shape);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, stats, shape) = ops.state;
        // Kept in half precision in a half-precision run; the kernels take f32.
        let x = to_f32::<B>(x);
        let dy = B::float_reshape(dy, x.shape());
        let (dx, dgamma, dbeta) = B::layer_norm_backward(x, gamma, stats, dy);
        for (node, grad) in [
            (node_x, B::float_reshape(dx, shape)),
            (node_gamma, dgamma),
            (node_beta, dbeta),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: RowKernels> Backward<B, 1> for GeluBackward {
    /// The input `x` (the derivative is recomputed from it).
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, gelu_backward::<B>(ops.state, dy));
        }
    }
}

impl<B: RowKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn adamw_step(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        decay: f64,
        grad_scale: f64,
        step: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // The optimizer works on the parameters' inner tensors; on autodiff ones it is the same
        // update, untracked.
        let h = AdamWHyper {
            lr,
            beta1: betas[0],
            beta2: betas[1],
            eps,
            decay,
            grad_scale,
            step,
        };
        let untracked = |parent: &FloatTensor<Self>, out| {
            NoGradient
                .prepare::<C>([parent.node()])
                .compute_bound()
                .stateless(out)
        };
        let (p2, m2, v2) = B::adamw(
            p.clone().into_primitive(),
            g.into_primitive(),
            m.clone().into_primitive(),
            v.clone().into_primitive(),
            &h,
        );
        (untracked(&p, p2), untracked(&m, m2), untracked(&v, v2))
    }

    fn lm_head_nll(
        h: FloatTensor<Self>,
        wte: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk_rows: usize,
    ) -> FloatTensor<Self> {
        // An evaluation op: no gradient flows back through it.
        let prep = NoGradient
            .prepare::<C>([h.node(), wte.node()])
            .compute_bound();
        prep.stateless(lm_head_nll_rows::<B>(
            h.into_primitive(),
            wte.into_primitive(),
            targets,
            chunk_rows,
        ))
    }

    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        keep: Option<FloatDType>,
    ) -> FloatTensor<Self> {
        let shape = x.shape();
        let c = dims(&x).last().copied().unwrap_or(1);
        let rows = Shape::new([shape.num_elements() / c, c]);
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = B::float_reshape(x.into_primitive(), rows);
                let gamma = gamma.into_primitive();
                let (y, stats) =
                    B::layer_norm_forward(x.clone(), gamma.clone(), beta.into_primitive(), eps);
                let kept = match keep {
                    Some(dtype) => cast_to::<B>(x, dtype.into()),
                    None => x,
                };
                prep.finish(
                    (kept, gamma, stats, shape.clone()),
                    B::float_reshape(y, shape),
                )
            }
            OpsKind::UnTracked(prep) => {
                let x = B::float_reshape(x.into_primitive(), rows);
                let y =
                    B::layer_norm_inference(x, gamma.into_primitive(), beta.into_primitive(), eps);
                prep.finish(B::float_reshape(y, shape))
            }
        }
    }

    fn layer_norm_linear(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        eps: f64,
        dtype: Option<FloatDType>,
        recompute: bool,
    ) -> FloatTensor<Self> {
        let shape = x.shape();
        match linear::LayerNormLinearBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node(), w.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = linear::rows::<B>(x.into_primitive());
                let (gamma, beta) = (gamma.into_primitive(), beta.into_primitive());
                let (w, b) = (w.into_primitive(), b.into_primitive());
                let (ln, stats) =
                    B::layer_norm_forward(x.clone(), gamma.clone(), beta.clone(), eps);
                let ln = match dtype {
                    Some(d) => cast_to::<B>(ln, d.into()),
                    None => ln,
                };
                let y = linear::linear_forward::<B>(ln.clone(), w.clone(), b, dtype);
                let state = linear::LayerNormLinearState {
                    x: match dtype {
                        Some(d) => cast_to::<B>(x, d.into()),
                        None => x,
                    },
                    gamma,
                    beta,
                    stats,
                    ln: (!recompute).then_some(ln),
                    w,
                    eps,
                    dtype,
                    shape: shape.clone(),
                };
                prep.finish(state, linear::unrows::<B>(y, &shape))
            }
            OpsKind::UnTracked(prep) => prep.finish(linear::layer_norm_linear_inference::<B>(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                w.into_primitive(),
                b.into_primitive(),
                eps,
                dtype,
            )),
        }
    }

    fn gelu_linear(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dtype: Option<FloatDType>,
        recompute: bool,
    ) -> FloatTensor<Self> {
        let shape = h.shape();
        match linear::GeluLinearBackward
            .prepare::<C>([h.node(), w.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let h = linear::rows::<B>(h.into_primitive());
                let (w, b) = (w.into_primitive(), b.into_primitive());
                let g = gelu_forward::<B>(h.clone());
                let y = linear::linear_forward::<B>(g.clone(), w.clone(), b, dtype);
                let state = linear::GeluLinearState {
                    h,
                    gelu: (!recompute).then_some(g),
                    w,
                    dtype,
                    shape: shape.clone(),
                };
                prep.finish(state, linear::unrows::<B>(y, &shape))
            }
            OpsKind::UnTracked(prep) => prep.finish(linear::gelu_linear_inference::<B>(
                h.into_primitive(),
                w.into_primitive(),
                b.into_primitive(),
                dtype,
            )),
        }
    }

    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                prep.finish(x.clone(), gelu_forward::<B>(x))
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu_forward::<B>(x.into_primitive())),
        }
    }

    fn lm_head_loss(
        h: FloatTensor<Self>,
        wte: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk_rows: usize,
    ) -> FloatTensor<Self> {
        let n = dims(&h)[0];
        match LmHeadLossBackward
            .prepare::<C>([h.node(), wte.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (h, wte) = (h.into_primitive(), wte.into_primitive());
                let (loss, grads) = lm_head_forward::<B>(h, wte, targets, chunk_rows, true);
                let (dh, dwte) = grads.expect("asked for the gradients");
                prep.finish((dh, dwte, n), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                lm_head_forward::<B>(
                    h.into_primitive(),
                    wte.into_primitive(),
                    targets,
                    chunk_rows,
                    false,
                )
                .0,
            ),
        }
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
        flash: bool,
    ) -> FloatTensor<Self> {
        match AttentionBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let (o, stats) =
                    attention_forward::<B>(q.clone(), k.clone(), v.clone(), scale, flash);
                let state = AttentionState {
                    q,
                    k,
                    v,
                    o: o.clone(),
                    stats,
                    scale,
                    flash,
                };
                prep.finish(state, o)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                attention_forward::<B>(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    scale,
                    flash,
                )
                .0,
            ),
        }
    }
}
