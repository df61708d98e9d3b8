//! AdamW in one kernel per parameter tensor (llm.c's `adamw_kernel3`): the gradient's scale
//! (clipping, loss-scale), both moments, decoupled weight decay, bias correction and the update,
//! one read and one write of each f32 value, where Burn's composed form takes about twenty
//! elementwise kernels per tensor. The formula is [`crate::fused::AdamWHyper`]'s.

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use crate::fused::AdamWHyper;

/// Units per cube of the AdamW kernel (also what the offline CUDA check compiles for).
pub(super) const UNITS: u32 = 256;

/// The composed update's operations in its order, one rounding each (the scalars are the f64
/// values rounded to f32 once, as the composed ops round them), so the two agree to the bit.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn adamw_kernel(
    p: &Tensor<f32>,
    g: &Tensor<f32>,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    p_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    v_out: &mut Tensor<f32>,
    s: Sequence<f32>,
) {
    let i = ABSOLUTE_POS;
    if i >= p_out.len() {
        terminate!();
    }
    let grad = g[i] * *s.index(0);
    let m_beta = m[i] * *s.index(1);
    let m_grad = grad * *s.index(2);
    let m_new = m_beta + m_grad;
    let v_beta = v[i] * *s.index(3);
    let g2 = grad * grad;
    let v_grad = g2 * *s.index(4);
    let v_new = v_beta + v_grad;
    let x = p[i];
    let mut decayed = x;
    if *s.index(5) > 0.0f32 {
        let shrink = x * *s.index(5);
        decayed = x - shrink;
    }
    let v_hat = v_new / *s.index(6);
    let denom = v_hat.sqrt() + *s.index(7);
    let m_hat = m_new / *s.index(8);
    let ratio = m_hat / denom;
    let update = ratio * *s.index(9);
    p_out[i] = decayed - update;
    m_out[i] = m_new;
    v_out[i] = v_new;
}

/// `(p', m', v')` of one AdamW step on f32 tensors of one shape.
pub fn step(
    p: CubeTensor,
    g: CubeTensor,
    m: CubeTensor,
    v: CubeTensor,
    h: &AdamWHyper,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [p, g, m, v] = [p, g, m, v].map(|t| {
        assert_eq!(
            t.dtype,
            DType::F32,
            "AdamW runs on f32 master weights and moments"
        );
        into_contiguous(t)
    });
    let client = p.client.clone();
    let n = p.meta.num_elements();
    let empty = || {
        empty_device_contiguous_dtype(
            client.clone(),
            p.device.clone(),
            Shape::new([n]),
            DType::F32,
        )
    };
    let (p_out, m_out, v_out) = (empty(), empty(), empty());
    let dim = CubeDim::new_1d(UNITS);
    let mut scalars = SequenceArg::new();
    for x in h.kernel_scalars() {
        scalars.push(x);
    }
    adamw_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, n, dim),
        dim,
        p.into_tensor_arg(),
        g.into_tensor_arg(),
        m.into_tensor_arg(),
        v.into_tensor_arg(),
        p_out.clone().into_tensor_arg(),
        m_out.clone().into_tensor_arg(),
        v_out.clone().into_tensor_arg(),
        scalars,
    );
    (p_out, m_out, v_out)
}
