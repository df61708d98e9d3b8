//! The CubeCL side of the fused ops (CUDA and wgpu share it): kernels written for Burn's
//! `CubeBackend`, plugged into `fused.rs` through [`RowKernels`].
//!
//! - [`attention`]: flash attention, forward and backward, memory linear in `T`;
//! - [`rows`]: the LM head's loss rows and evaluation's NLL rows, GELU and its derivative;
//! - [`norm`]: LayerNorm, forward and backward;
//! - [`adamw`]: the optimizer step, one kernel per parameter tensor.

pub mod adamw;
pub mod attention;
pub mod norm;
pub mod rows;

use burn::backend::Cube;
use burn_cubecl::tensor::CubeTensor;

use crate::fused::{AdamWHyper, RowKernels};

impl RowKernels for Cube {
    fn adamw(
        p: CubeTensor,
        g: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        h: &AdamWHyper,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        adamw::step(p, g, m, v, h)
    }

    fn layer_norm_forward(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        eps: f64,
    ) -> (CubeTensor, CubeTensor) {
        norm::forward(x, gamma, beta, eps)
    }

    fn layer_norm_backward(
        x: CubeTensor,
        gamma: CubeTensor,
        stats: CubeTensor,
        dy: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        norm::backward(x, gamma, stats, dy)
    }

    fn softmax_xent(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
        rows::softmax_xent(logits, targets)
    }

    fn token_nll_rows(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
        rows::token_nll(logits, targets)
    }

    fn gelu_tanh_forward(x: CubeTensor) -> CubeTensor {
        rows::gelu(x)
    }

    fn gelu_tanh_backward(x: CubeTensor, dy: CubeTensor) -> CubeTensor {
        rows::gelu_backward(x, dy)
    }

    fn attention_forward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        scale: f64,
    ) -> (CubeTensor, CubeTensor) {
        let (o, saved) = attention::forward(q, k, v, scale, None);
        (o, saved.lse)
    }

    fn attention_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        o: CubeTensor,
        lse: CubeTensor,
        d_o: CubeTensor,
        scale: f64,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let saved = attention::FlashSaved {
            q,
            k,
            v,
            o,
            lse,
            scale,
        };
        attention::backward(saved, d_o, None)
    }
}
