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

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel(
    p: &Tensor<f32>,
    g: &Tensor<f32>,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    p_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    v_out: &mut Tensor<f32>,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    decay: f32,
    grad_scale: f32,
    bc1: f32,
    bc2: f32,
) {
    let i = ABSOLUTE_POS;
    if i >= p_out.len() {
        terminate!();
    }
    let grad = g[i] * grad_scale;
    let m_new = m[i] * beta1 + grad * (1.0f32 - beta1);
    let v_new = v[i] * beta2 + grad * grad * (1.0f32 - beta2);
    let x = p[i];
    let decayed = x - x * decay;
    let denom = (v_new / bc2).sqrt() + eps;
    p_out[i] = decayed - m_new / bc1 / denom * lr;
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
        assert_eq!(t.dtype, DType::F32, "AdamW runs on f32 master weights and moments");
        into_contiguous(t)
    });
    let client = p.client.clone();
    let n = p.meta.num_elements();
    let empty = || {
        empty_device_contiguous_dtype(client.clone(), p.device.clone(), Shape::new([n]), DType::F32)
    };
    let (p_out, m_out, v_out) = (empty(), empty(), empty());
    let dim = CubeDim::new_1d(256);
    let [lr, beta1, beta2, eps, decay, grad_scale, bc1, bc2] = h.kernel_values();
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
        lr,
        beta1,
        beta2,
        eps,
        decay,
        grad_scale,
        bc1,
        bc2,
    );
    (p_out, m_out, v_out)
}
