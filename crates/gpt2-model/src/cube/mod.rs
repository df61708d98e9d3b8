//! The CubeCL side of the fused ops (CUDA and wgpu share it): kernels written for Burn's
//! `CubeBackend`, plugged into `fused.rs` through [`RowKernels`].
//!
//! - [`attention`]: flash attention, forward and backward, memory linear in `T`;
//! - [`rows`]: the LM head's loss rows and evaluation's NLL rows, GELU and its derivative;
//! - [`norm`]: LayerNorm, forward and backward;
//! - [`adamw`]: the optimizer step, one kernel per parameter tensor.
//!
//! [`crate::device::set_composed_kernels`] turns them all off for the process, back to the
//! composed tensor ops (`row_kernels.rs`): a fallback should a kernel misbehave on some GPU, and
//! the "before" of the launch-count benchmark.

pub mod adamw;
pub mod attention;
pub mod norm;
#[cfg(feature = "cuda")]
pub mod offline;
pub mod rows;

use burn::backend::Cube;
use burn::backend::TensorMetadata;
use burn_cubecl::tensor::CubeTensor;

use crate::device::composed_kernels;
use crate::row_kernels::{
    composed_adamw, composed_attention_backward, composed_attention_forward, composed_gelu,
    composed_gelu_backward, composed_layer_norm_backward, composed_layer_norm_forward,
    composed_softmax_xent, composed_token_nll, AdamWHyper, RowKernels,
};

impl RowKernels for Cube {
    fn adamw(
        p: CubeTensor,
        g: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        h: &AdamWHyper,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        if composed_kernels() {
            return composed_adamw::<Cube>(p, g, m, v, h);
        }
        adamw::step(p, g, m, v, h)
    }

    fn layer_norm_forward(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        eps: f64,
    ) -> (CubeTensor, CubeTensor) {
        if composed_kernels() {
            return composed_layer_norm_forward::<Cube>(x, gamma, beta, eps);
        }
        norm::forward(x, gamma, beta, eps)
    }

    fn layer_norm_backward(
        x: CubeTensor,
        gamma: CubeTensor,
        stats: CubeTensor,
        dy: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        if composed_kernels() {
            return composed_layer_norm_backward::<Cube>(x, gamma, stats, dy);
        }
        norm::backward(x, gamma, stats, dy)
    }

    fn softmax_xent(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
        if composed_kernels() {
            return composed_softmax_xent::<Cube>(logits, targets);
        }
        rows::softmax_xent(logits, targets)
    }

    fn token_nll_rows(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
        if composed_kernels() {
            return composed_token_nll::<Cube>(logits, targets);
        }
        rows::token_nll(logits, targets)
    }

    fn gelu_tanh_forward(x: CubeTensor) -> CubeTensor {
        if composed_kernels() {
            return composed_gelu::<Cube>(x);
        }
        rows::gelu(x)
    }

    fn gelu_tanh_backward(x: CubeTensor, dy: CubeTensor) -> CubeTensor {
        if composed_kernels() {
            return composed_gelu_backward::<Cube>(x, dy);
        }
        rows::gelu_backward(x, dy)
    }

    fn attention_forward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        scale: f64,
    ) -> (CubeTensor, CubeTensor) {
        if composed_kernels() {
            return composed_attention_forward::<Cube>(q, k, v, scale);
        }
        let (o, saved) = attention::forward(q, k, v, scale, None);
        (o, saved.lse)
    }

    fn attention_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        o: CubeTensor,
        stats: CubeTensor,
        d_o: CubeTensor,
        scale: f64,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        // The forward kept the probabilities `[B, nh, T, T]` when it ran composed, the row
        // log-sum-exp `[B·nh·T]` when it ran flash.
        if stats.shape().num_dims() == 4 {
            return composed_attention_backward::<Cube>(q, k, v, o, stats, d_o, scale);
        }
        let saved = attention::FlashSaved {
            q,
            k,
            v,
            o,
            lse: stats,
            scale,
        };
        attention::backward(saved, d_o, None)
    }
}
