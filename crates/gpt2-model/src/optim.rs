//! The optimizer's update as a tensor-level op, for the trainer's AdamW: one kernel per parameter
//! tensor on the GPU backends (`cube/adamw.rs`; composed with `set_composed_kernels`), the
//! backend's elementwise ops on flex. The formula is [`AdamWHyper`]'s; the trainer keeps the state
//! (moments, step count, groups).

use burn::backend::Dispatch;
use burn::tensor::Tensor;

pub use crate::fused::AdamWHyper;
use crate::fused::FusedOps;

/// One AdamW step of a flattened parameter `p` with gradient `g` and moments `m`, `v` (f32, one
/// length): `(p', m', v')`, through the backend's fused op.
pub fn adamw_step(
    p: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    h: &AdamWHyper,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (p, m, v) = <Dispatch as FusedOps>::adamw_step(
        p.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        h.lr,
        [h.beta1, h.beta2],
        h.eps,
        h.decay,
        h.grad_scale,
        h.step,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}
