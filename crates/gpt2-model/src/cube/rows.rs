//! Row and elementwise kernels for the CubeCL backends, one kernel per memory-bound op:
//!
//! - the LM head's loss rows (llm.c's `fused_classifier`): the row max and the sum of
//!   exponentials in one online pass, then `softmax − onehot(t)` written over the logits in
//!   place and the row's NLL; evaluation's variant writes the NLL and the greedy gap instead;
//! - GPT-2's GELU and its derivative, computed in f32 whatever the storage dtype.
//!
//! One cube per row, its units striding along the row and combining their partial `(max, sum)`
//! pairs by a tree in shared memory (no plane operations: lavapipe has none; no float atomics:
//! WGSL has none). Rows past 65,535 wrap onto the grid's second axis.

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use burn::backend::cubecl::dtype_to_storage_type;

use crate::kernels::{GELU_A, GELU_B};

/// Below any logit; WGSL has no −∞ literal.
const NEG_BIG: f32 = -1.0e30;
/// Units per row.
pub(super) const ROW_UNITS: usize = 256;
/// The grid's largest extent along one axis.
const GRID_MAX: usize = 65_535;

/// The row this cube owns (the grid is `min(rows, 65535) × ceil(rows / 65535)`).
#[cube]
fn cube_row() -> usize {
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

/// The row's max and `Σ exp(x − max)`, combined over the cube's units; every unit gets them.
#[cube]
fn row_max_sum(
    logits: &mut Tensor<f32>,
    base: usize,
    v: usize,
    out: &mut Array<f32>,
    #[comptime] block: usize,
) {
    let tid = UNIT_POS_X as usize;
    let mut m = NEG_BIG.runtime();
    let mut s = 0.0f32.runtime();
    let mut j = tid;
    while j < v {
        let x = logits[base + j];
        if x > m {
            s = s * (m - x).exp() + 1.0f32;
            m = x;
        } else {
            s += (x - m).exp();
        }
        j += block;
    }
    let mut sh_m = Shared::<[f32]>::new_slice(block);
    let mut sh_s = Shared::<[f32]>::new_slice(block);
    sh_m[tid] = m;
    sh_s[tid] = s;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if tid < stride {
            let (m1, s1) = (sh_m[tid], sh_s[tid]);
            let (m2, s2) = (sh_m[tid + stride], sh_s[tid + stride]);
            let mut mm = m1;
            if m2 > m1 {
                mm = m2;
            }
            sh_s[tid] = s1 * (m1 - mm).exp() + s2 * (m2 - mm).exp();
            sh_m[tid] = mm;
        }
        sync_cube();
        stride /= 2;
    }
    out[0] = sh_m[0];
    out[1] = sh_s[0];
}

/// In place: each row of `logits` becomes `softmax − onehot(t)`; `nll[row] = lse − l[t]`.
#[cube(launch)]
pub(super) fn softmax_xent_kernel<I: Int>(
    logits: &mut Tensor<f32>,
    targets: &Tensor<I>,
    nll: &mut Tensor<f32>,
    #[comptime] block: usize,
    #[define(I)] _int: ElemType,
) {
    let row = cube_row();
    if row >= nll.len() {
        terminate!();
    }
    let v = logits.shape(1);
    let base = row * v;
    let mut stats = Array::<f32>::new(2usize);
    row_max_sum(logits, base, v, &mut stats, block);
    let (max, sum) = (stats[0], stats[1]);
    let t = u32::cast_from(targets[row]) as usize;
    let picked = logits[base + t];
    // Every unit has read the target's logit before any unit overwrites the row.
    sync_cube();
    if UNIT_POS_X == 0 {
        nll[row] = max + sum.ln() - picked;
    }
    let inv = 1.0f32 / sum;
    let mut j = UNIT_POS_X as usize;
    while j < v {
        let mut g = (logits[base + j] - max).exp() * inv;
        if j == t {
            g -= 1.0f32;
        }
        logits[base + j] = g;
        j += block;
    }
}

/// `out[row] = (lse − l[t], max − l[t])`, the logits left as they are.
#[cube(launch)]
pub(super) fn token_nll_kernel<I: Int>(
    // Read only; `&mut` because the row reduction is shared with the in-place loss kernel.
    logits: &mut Tensor<f32>,
    targets: &Tensor<I>,
    out: &mut Tensor<f32>,
    #[comptime] block: usize,
    #[define(I)] _int: ElemType,
) {
    let row = cube_row();
    if row * 2 >= out.len() {
        terminate!();
    }
    let v = logits.shape(1);
    let base = row * v;
    let mut stats = Array::<f32>::new(2usize);
    row_max_sum(logits, base, v, &mut stats, block);
    if UNIT_POS_X == 0 {
        let picked = logits[base + u32::cast_from(targets[row]) as usize];
        out[2 * row] = stats[0] + stats[1].ln() - picked;
        out[2 * row + 1] = stats[0] - picked;
    }
}

/// `y = x·σ(x·(A + B·x²))`, in f32.
#[cube(launch)]
pub(super) fn gelu_kernel<F: Float>(
    x: &Tensor<F>,
    y: &mut Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= y.len() {
        terminate!();
    }
    let v = f32::cast_from(x[i]);
    let u = v * (GELU_A + GELU_B * v * v);
    y[i] = F::cast_from(v / (1.0f32 + (-u).exp()));
}

/// `dx = dy·(σ(u) + x·σ(u)·(1 − σ(u))·(A + 3B·x²))`, `u = x·(A + B·x²)`, in f32.
#[cube(launch)]
pub(super) fn gelu_backward_kernel<F: Float>(
    x: &Tensor<F>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= dx.len() {
        terminate!();
    }
    let v = f32::cast_from(x[i]);
    let v2 = v * v;
    let s = 1.0f32 / (1.0f32 + (-(v * (GELU_A + GELU_B * v2))).exp());
    let slope = s + v * s * (1.0f32 - s) * (GELU_A + 3.0f32 * GELU_B * v2);
    dx[i] = F::cast_from(f32::cast_from(dy[i]) * slope);
}

/// The grid for `rows` rows of one cube each.
fn row_grid(rows: usize) -> CubeCount {
    let x = rows.clamp(1, GRID_MAX);
    CubeCount::Static(x as u32, rows.div_ceil(GRID_MAX).max(1) as u32, 1)
}

fn f32_contiguous(t: CubeTensor) -> CubeTensor {
    assert_eq!(t.dtype, DType::F32, "row kernels take f32 logits");
    into_contiguous(t)
}

/// `(mean NLL [1], softmax − onehot [N, V])` for f32 `logits` `[N, V]`, the second written over
/// the logits' own buffer when nothing else holds it.
pub fn softmax_xent(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
    let logits = f32_contiguous(logits);
    let targets = into_contiguous(targets);
    let rows = logits.meta.shape[0];
    let client = logits.client.clone();
    let nll = empty_device_contiguous_dtype(
        client.clone(),
        logits.device.clone(),
        Shape::new([rows]),
        DType::F32,
    );
    // The logits were just written by the head's matmul and nothing else refers to them, so
    // they are overwritten; a shared buffer is copied first rather than clobbered.
    let g = if logits.can_mut() {
        logits
    } else {
        logits.copy()
    };
    let int_dtype = targets.dtype;
    softmax_xent_kernel::launch(
        &client,
        row_grid(rows),
        CubeDim::new_1d(ROW_UNITS as u32),
        g.clone().into_tensor_arg(),
        targets.into_tensor_arg(),
        nll.clone().into_tensor_arg(),
        ROW_UNITS,
        dtype_to_storage_type(int_dtype),
    );
    // Burn's mean reduces in a fixed order (one unit per output), so the loss is reproducible.
    (
        <burn::backend::Cube as burn::backend::ops::FloatTensorOps<_>>::float_mean(nll),
        g,
    )
}

/// `[N, 2]`: the NLL and the greedy gap of each row of f32 `logits` `[N, V]`.
pub fn token_nll(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
    let logits = f32_contiguous(logits);
    let targets = into_contiguous(targets);
    let rows = logits.meta.shape[0];
    let client = logits.client.clone();
    let out = empty_device_contiguous_dtype(
        client.clone(),
        logits.device.clone(),
        Shape::new([rows, 2]),
        DType::F32,
    );
    let int_dtype = targets.dtype;
    token_nll_kernel::launch(
        &client,
        row_grid(rows),
        CubeDim::new_1d(ROW_UNITS as u32),
        logits.into_tensor_arg(),
        targets.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        ROW_UNITS,
        dtype_to_storage_type(int_dtype),
    );
    out
}

/// Units per cube of the elementwise kernels (GELU and its backward).
pub(super) const ELEMENTWISE_UNITS: u32 = 256;

fn elementwise_dim() -> CubeDim {
    CubeDim::new_1d(ELEMENTWISE_UNITS)
}

/// GPT-2's GELU of `x` (any float dtype; computed in f32).
pub fn gelu(x: CubeTensor) -> CubeTensor {
    let x = into_contiguous(x);
    let client = x.client.clone();
    let y = empty_device_contiguous_dtype(
        client.clone(),
        x.device.clone(),
        x.meta.shape.clone(),
        x.dtype,
    );
    let n = x.meta.num_elements();
    let dtype = x.dtype;
    gelu_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, n, elementwise_dim()),
        elementwise_dim(),
        x.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        dtype_to_storage_type(dtype),
    );
    y
}

/// `dy · gelu'(x)` (any float dtype; computed in f32).
pub fn gelu_backward(x: CubeTensor, dy: CubeTensor) -> CubeTensor {
    let (x, dy) = (into_contiguous(x), into_contiguous(dy));
    let client = x.client.clone();
    let dx = empty_device_contiguous_dtype(
        client.clone(),
        x.device.clone(),
        x.meta.shape.clone(),
        dy.dtype,
    );
    let n = x.meta.num_elements();
    let dtype = x.dtype;
    assert_eq!(dy.dtype, dtype, "gelu_backward: dy in x's dtype");
    gelu_backward_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, n, elementwise_dim()),
        elementwise_dim(),
        x.into_tensor_arg(),
        dy.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dtype_to_storage_type(dtype),
    );
    dx
}
