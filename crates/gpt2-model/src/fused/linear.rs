//! The two matmuls that follow a LayerNorm or GELU, fused with it: `ln(x)·W + b` (`c_attn`,
//! `c_fc`) and `gelu(h)·W + b` (`mlp.c_proj`), each one op whose backward can recompute its
//! matmul's input instead of keeping it (llm.c's `-r`; `model.recompute`, `Recompute`).
//!
//! What each keeps for the backward:
//! - `ln(x)·W + b`: `x` (in the compute dtype), the f32 statistics and, unless recomputed, the
//!   matmul's input `ln(x)` in the compute dtype. Recomputed from `x` and the weights when
//!   needed: one LayerNorm forward.
//! - `gelu(h)·W + b`: `h` and, unless recomputed, `gelu(h)`. Recomputed: one GELU.
//!
//! The weights are kept as the f32 parameters (nothing extra) and cast again in the backward.
//! The same arithmetic runs whether or not an input is recomputed (it is made by the same
//! kernels from the same kept values), so on f32 the gradients are the same to the bit.
//!
//! The linear layer itself (`W` `[in, out]`, Burn's and HF's Conv1D layout): forward
//! `y = x·W + b` in the compute dtype; backward `dx = dy·Wᵀ` and `dW = xᵀ·dy` as matmuls in the
//! compute dtype (as Burn's linear computes them), `dW` handed back in f32, and `db = Σ dy`
//! summed in f32.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::TensorMetadata;
use burn::tensor::{FloatDType, Shape};

use super::{gelu_backward, gelu_forward};
use crate::row_kernels::{cast_to, dims, to_f32, RowKernels};

/// `t` in `dtype` (f32 where `None`).
fn at<B: RowKernels>(t: FloatTensor<B>, dtype: Option<FloatDType>) -> FloatTensor<B> {
    match dtype {
        Some(d) => cast_to::<B>(t, d.into()),
        None => to_f32::<B>(t),
    }
}

/// `t` as `[rows, last]`.
pub(super) fn rows<B: RowKernels>(t: FloatTensor<B>) -> FloatTensor<B> {
    let shape = t.shape();
    let c = dims(&t).last().copied().unwrap_or(1);
    B::float_reshape(t, Shape::new([shape.num_elements() / c, c]))
}

/// `y` `[N, out]` back to `like`'s leading dimensions.
pub(super) fn unrows<B: RowKernels>(y: FloatTensor<B>, like: &Shape) -> FloatTensor<B> {
    let mut shape = like.to_vec();
    *shape.last_mut().expect("rank ≥ 1") = dims(&y)[1];
    B::float_reshape(y, Shape::from(shape))
}

/// `x·W + b` for `x` `[N, in]` (already in `dtype`), `W` `[in, out]` and `b` `[out]` (f32
/// parameters, cast here), in `dtype`.
pub(super) fn linear_forward<B: RowKernels>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    b: FloatTensor<B>,
    dtype: Option<FloatDType>,
) -> FloatTensor<B> {
    let out = dims(&w)[1];
    let b = B::float_reshape(at::<B>(b, dtype), Shape::new([1, out]));
    B::float_add(B::float_matmul(x, at::<B>(w, dtype)), b)
}

/// `ln(x)·W + b` when nothing will be differentiated.
#[allow(clippy::too_many_arguments)]
pub(super) fn layer_norm_linear_inference<B: RowKernels>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    w: FloatTensor<B>,
    b: FloatTensor<B>,
    eps: f64,
    dtype: Option<FloatDType>,
) -> FloatTensor<B> {
    let shape = x.shape();
    let ln = B::layer_norm_inference(rows::<B>(x), gamma, beta, eps);
    unrows::<B>(linear_forward::<B>(at::<B>(ln, dtype), w, b, dtype), &shape)
}

/// `gelu(h)·W + b` when nothing will be differentiated.
pub(super) fn gelu_linear_inference<B: RowKernels>(
    h: FloatTensor<B>,
    w: FloatTensor<B>,
    b: FloatTensor<B>,
    dtype: Option<FloatDType>,
) -> FloatTensor<B> {
    let shape = h.shape();
    let g = gelu_forward::<B>(rows::<B>(h));
    unrows::<B>(linear_forward::<B>(g, w, b, dtype), &shape)
}

/// The linear layer's gradients `(dx, dW, db)` from its input `x` `[N, in]` (in `dtype`), `W`
/// and the upstream `dy` `[N, out]`: `dx` in `dtype`, `dW` and `db` in f32.
fn linear_backward<B: RowKernels>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    dy: FloatTensor<B>,
    dtype: Option<FloatDType>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let dy = at::<B>(dy, dtype);
    let dx = B::float_matmul(dy.clone(), B::float_transpose(at::<B>(w, dtype)));
    let dw = to_f32::<B>(B::float_matmul(B::float_transpose(x), dy.clone()));
    let out = dims(&dy)[1];
    let db = B::float_reshape(B::float_sum_dim(to_f32::<B>(dy), 0), Shape::new([out]));
    (dx, dw, db)
}

/// What `ln(x)·W + b`'s backward needs.
#[derive(Clone, Debug)]
pub(super) struct LayerNormLinearState<B: RowKernels> {
    /// `[N, C]`, in the compute dtype.
    pub x: FloatTensor<B>,
    pub gamma: FloatTensor<B>,
    pub beta: FloatTensor<B>,
    /// `[N, 2]` f32: mean, 1/σ.
    pub stats: FloatTensor<B>,
    /// `ln(x)` in the compute dtype, unless it is recomputed.
    pub ln: Option<FloatTensor<B>>,
    pub w: FloatTensor<B>,
    pub eps: f64,
    pub dtype: Option<FloatDType>,
    /// The input's shape.
    pub shape: Shape,
}

#[derive(Debug)]
pub(super) struct LayerNormLinearBackward;

impl<B: RowKernels> Backward<B, 5> for LayerNormLinearBackward {
    type State = LayerNormLinearState<B>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta, node_w, node_b] = ops.parents;
        let dy = rows::<B>(grads.consume::<B>(&ops.node));
        let s = ops.state;
        let x = to_f32::<B>(s.x);
        let ln = match s.ln {
            Some(ln) => ln,
            None => {
                let (ln, _) = B::layer_norm_forward(x.clone(), s.gamma.clone(), s.beta, s.eps);
                at::<B>(ln, s.dtype)
            }
        };
        let (d_ln, dw, db) = linear_backward::<B>(ln, s.w, dy, s.dtype);
        let (dx, dgamma, dbeta) = B::layer_norm_backward(x, s.gamma, s.stats, to_f32::<B>(d_ln));
        for (node, grad) in [
            (node_x, B::float_reshape(dx, s.shape)),
            (node_gamma, dgamma),
            (node_beta, dbeta),
            (node_w, dw),
            (node_b, db),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// What `gelu(h)·W + b`'s backward needs.
#[derive(Clone, Debug)]
pub(super) struct GeluLinearState<B: RowKernels> {
    /// `[N, 4C]`, in the compute dtype.
    pub h: FloatTensor<B>,
    /// `gelu(h)`, unless it is recomputed.
    pub gelu: Option<FloatTensor<B>>,
    pub w: FloatTensor<B>,
    pub dtype: Option<FloatDType>,
    /// The input's shape.
    pub shape: Shape,
}

#[derive(Debug)]
pub(super) struct GeluLinearBackward;

impl<B: RowKernels> Backward<B, 3> for GeluLinearBackward {
    type State = GeluLinearState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_h, node_w, node_b] = ops.parents;
        let dy = rows::<B>(grads.consume::<B>(&ops.node));
        let s = ops.state;
        let gelu = s.gelu.unwrap_or_else(|| gelu_forward::<B>(s.h.clone()));
        let (d_gelu, dw, db) = linear_backward::<B>(gelu, s.w, dy, s.dtype);
        let dh = gelu_backward::<B>(s.h, d_gelu);
        for (node, grad) in [
            (node_h, B::float_reshape(dh, s.shape)),
            (node_w, dw),
            (node_b, db),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}
