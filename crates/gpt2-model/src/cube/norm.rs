//! LayerNorm for the CubeCL backends in llm.c's scheme (`layernorm_forward`,
//! `layernorm_backward`), f32 statistics:
//!
//! - forward, one cube per row: the mean, then the variance about it (two passes over the row,
//!   which the cache holds), `y = (x − μ)·rstd·γ + β`, and `(μ, rstd)` kept for the backward;
//! - backward, one cube per row: with `n = (x − μ)·rstd` and `g = dy·γ`,
//!   `dx = rstd·(g − mean(g) − n·mean(g·n))`;
//! - backward, one unit per channel and chunk of 4,096 rows: `dγ = Σ_rows dy·n`, `dβ = Σ_rows dy`,
//!   then the chunks summed. llm.c adds these with float atomics from the row kernel; WGSL has
//!   none, so the column sums are a kernel of their own (each sum in one fixed order:
//!   reproducible).

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::CubeDim;

use burn::backend::ops::FloatTensorOps;
use burn::backend::Cube;

/// Units per row.
pub(super) const ROW_UNITS: usize = 128;
const GRID_MAX: usize = 65_535;

/// `Σ value` over the cube's units (a tree in shared memory); every unit gets it.
#[cube]
fn block_sum(value: f32, shared: &mut Shared<[f32]>, #[comptime] block: usize) -> f32 {
    let tid = UNIT_POS_X as usize;
    shared[tid] = value;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if tid < stride {
            shared[tid] += shared[tid + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    sync_cube();
    total
}

#[cube]
fn cube_row() -> usize {
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

#[cube(launch)]
pub(super) fn layer_norm_forward_kernel(
    x: &Tensor<f32>,
    gamma: &Tensor<f32>,
    beta: &Tensor<f32>,
    y: &mut Tensor<f32>,
    stats: &mut Tensor<f32>,
    eps: f32,
    #[comptime] block: usize,
) {
    let row = cube_row();
    if row * 2 >= stats.len() {
        terminate!();
    }
    let c = x.shape(1);
    let base = row * c;
    let tid = UNIT_POS_X as usize;
    let mut shared = Shared::<[f32]>::new_slice(block);
    let mut s = 0.0f32.runtime();
    let mut j = tid;
    while j < c {
        s += x[base + j];
        j += block;
    }
    let mean = block_sum(s, &mut shared, block) / f32::cast_from(c as u32);
    let mut v = 0.0f32.runtime();
    j = tid;
    while j < c {
        let d = x[base + j] - mean;
        v += d * d;
        j += block;
    }
    let var = block_sum(v, &mut shared, block) / f32::cast_from(c as u32);
    let rstd = 1.0f32 / (var + eps).sqrt();
    j = tid;
    while j < c {
        y[base + j] = (x[base + j] - mean) * rstd * gamma[j] + beta[j];
        j += block;
    }
    if tid == 0 {
        stats[2 * row] = mean;
        stats[2 * row + 1] = rstd;
    }
}

#[cube(launch)]
pub(super) fn layer_norm_dx_kernel(
    x: &Tensor<f32>,
    gamma: &Tensor<f32>,
    stats: &Tensor<f32>,
    dy: &Tensor<f32>,
    dx: &mut Tensor<f32>,
    #[comptime] block: usize,
) {
    let row = cube_row();
    if row * 2 >= stats.len() {
        terminate!();
    }
    let c = x.shape(1);
    let base = row * c;
    let tid = UNIT_POS_X as usize;
    let mean = stats[2 * row];
    let rstd = stats[2 * row + 1];
    let mut shared = Shared::<[f32]>::new_slice(block);
    let mut sg = 0.0f32.runtime();
    let mut sgn = 0.0f32.runtime();
    let mut j = tid;
    while j < c {
        let g = dy[base + j] * gamma[j];
        sg += g;
        sgn += g * (x[base + j] - mean) * rstd;
        j += block;
    }
    let n_c = f32::cast_from(c as u32);
    let mean_g = block_sum(sg, &mut shared, block) / n_c;
    let mean_gn = block_sum(sgn, &mut shared, block) / n_c;
    j = tid;
    while j < c {
        let n = (x[base + j] - mean) * rstd;
        let g = dy[base + j] * gamma[j];
        dx[base + j] = rstd * (g - mean_g - n * mean_gn);
        j += block;
    }
}

/// One unit per channel `j` and chunk of rows `k` (grid axis y): `partial[k, j] = Σ dy·n` and
/// `partial[k, C + j] = Σ dy` over the chunk's rows. Chunks keep each unit's loop short
/// (lavapipe ends an invocation after 65,535 loop iterations) and the work spread.
#[cube(launch)]
pub(super) fn layer_norm_dparams_kernel(
    x: &Tensor<f32>,
    stats: &Tensor<f32>,
    dy: &Tensor<f32>,
    partial: &mut Tensor<f32>,
    #[comptime] chunk: usize,
) {
    let j = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let c = x.shape(1);
    if j >= c {
        terminate!();
    }
    let rows = x.shape(0);
    let first = CUBE_POS_Y as usize * chunk;
    let mut end = first + chunk;
    if end > rows {
        end = rows;
    }
    let mut dg = 0.0f32.runtime();
    let mut db = 0.0f32.runtime();
    for r in first..end {
        let g = dy[r * c + j];
        dg += g * (x[r * c + j] - stats[2 * r]) * stats[2 * r + 1];
        db += g;
    }
    let k = CUBE_POS_Y as usize;
    partial[k * 2 * c + j] = dg;
    partial[k * 2 * c + c + j] = db;
}

/// Rows per chunk of the parameter gradients' column sums.
pub(super) const DPARAMS_CHUNK: usize = 4096;
/// Units per cube of the parameter gradients' column sums (one per channel).
pub(super) const DPARAMS_UNITS: u32 = 64;

fn row_grid(rows: usize) -> CubeCount {
    CubeCount::Static(
        rows.clamp(1, GRID_MAX) as u32,
        rows.div_ceil(GRID_MAX).max(1) as u32,
        1,
    )
}

fn f32_rows(t: CubeTensor) -> CubeTensor {
    assert_eq!(t.dtype, DType::F32, "LayerNorm runs in f32");
    into_contiguous(t)
}

/// `(y [N, C], stats [N, 2] = (mean, rstd))` of f32 `x` `[N, C]`.
pub fn forward(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    eps: f64,
) -> (CubeTensor, CubeTensor) {
    let [x, gamma, beta] = [x, gamma, beta].map(f32_rows);
    let rows = x.meta.shape[0];
    let client = x.client.clone();
    let y = empty_device_contiguous_dtype(
        client.clone(),
        x.device.clone(),
        x.meta.shape.clone(),
        DType::F32,
    );
    let stats = empty_device_contiguous_dtype(
        client.clone(),
        x.device.clone(),
        Shape::new([rows, 2]),
        DType::F32,
    );
    layer_norm_forward_kernel::launch(
        &client,
        row_grid(rows),
        CubeDim::new_1d(ROW_UNITS as u32),
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        eps as f32,
        ROW_UNITS,
    );
    (y, stats)
}

/// `(dx [N, C], dγ [C], dβ [C])` from the forward's input, `γ`, its stats and `dy`.
pub fn backward(
    x: CubeTensor,
    gamma: CubeTensor,
    stats: CubeTensor,
    dy: CubeTensor,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [x, gamma, stats, dy] = [x, gamma, stats, dy].map(f32_rows);
    let [rows, c] = [x.meta.shape[0], x.meta.shape[1]];
    let client = x.client.clone();
    let empty = |shape: Shape| {
        empty_device_contiguous_dtype(client.clone(), x.device.clone(), shape, DType::F32)
    };
    let chunks = rows.div_ceil(DPARAMS_CHUNK).max(1);
    let (dx, partial) = (
        empty(Shape::new([rows, c])),
        empty(Shape::new([chunks, 2 * c])),
    );
    layer_norm_dx_kernel::launch(
        &client,
        row_grid(rows),
        CubeDim::new_1d(ROW_UNITS as u32),
        x.clone().into_tensor_arg(),
        gamma.into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        dy.clone().into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        ROW_UNITS,
    );
    layer_norm_dparams_kernel::launch(
        &client,
        CubeCount::Static(c.div_ceil(64) as u32, chunks as u32, 1),
        CubeDim::new_1d(DPARAMS_UNITS),
        x.into_tensor_arg(),
        stats.into_tensor_arg(),
        dy.into_tensor_arg(),
        partial.clone().into_tensor_arg(),
        DPARAMS_CHUNK,
    );
    // The chunks' partial sums in one fixed order (Burn's reduce: one unit per output).
    let sums = if chunks == 1 {
        partial
    } else {
        <Cube as FloatTensorOps<Cube>>::float_sum_dim(partial, 0)
    };
    let sums = <Cube as FloatTensorOps<Cube>>::float_reshape(sums, Shape::new([2 * c]));
    let half = |i: usize| {
        <Cube as FloatTensorOps<Cube>>::float_slice(
            sums.clone(),
            &[burn::tensor::Slice::new(
                (i * c) as isize,
                Some(((i + 1) * c) as isize),
                1,
            )],
        )
    };
    (dx, half(0), half(1))
}
