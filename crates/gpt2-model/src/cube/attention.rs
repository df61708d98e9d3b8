//! Flash-style causal attention for the CubeCL backends (CUDA, wgpu): memory linear in `T`.
//!
//! Dao et al., "FlashAttention" (2022) and "FlashAttention-2" (2023), in the scalar form a
//! WGSL device can run: one unit per query (forward, dQ) or key (dK/dV) row, the other side's rows
//! streamed through shared memory one block at a time, f32 accumulation for every input dtype.
//!
//! - Forward: `O = softmax(q·kᵀ·s + causal)·v` with the online softmax, saving only `O` and the
//!   per-row log-sum-exp `L = m + ln l` (f32). Key blocks wholly above the diagonal are never
//!   visited; on the diagonal block a row stops at its own key.
//! - Backward (recomputes `P = exp(S − L)` block by block, never stores it):
//!   1. `delta`: `D_i = Σ_d dO_id·O_id`, written next to `L_i` as `stats[i] = (L_i, D_i)`;
//!   2. `dq`: per query row, over key blocks up to the diagonal:
//!      `dS = P ⊙ (dO·vᵀ − D)`, `dq = s·dS·k`;
//!   3. `dkdv`: per key row, over query blocks from the diagonal down:
//!      `dv = Pᵀ·dO`, `dk = s·dSᵀ·q`.
//!
//! wgpu's limits shape it: at most 7 storage tensors per kernel (hence `stats` packing `L` and
//! `D`), shared memory sized from what the adapter reports (the block shrinks to fit; 16 KiB
//! holds blocks of 32, 16 and 8 rows for the forward, dQ and dK/dV at head size 64), no float
//! atomics (every output element has one writer), no plane operations, and a finite sentinel
//! instead of a −∞ literal. And lavapipe's: llvmpipe ends a shader invocation after 65,535
//! loop iterations in all (measured: outputs went wrong from the 448th query on at head size
//! 64), so the loops over the head dimension are unrolled (it is known when the kernel is
//! compiled) and only the loops over key and query blocks (and the tile copies, below) iterate.
//!
//! CUDA's register file shapes it too (`make check-cuda-kernels`, experiments/RESULTS.md part 9d):
//! at head size 64 every kernel spilled at the 255-register ceiling, because NVRTC kept live
//! whatever it could hoist or reuse across the loop over rows. So: the tile copies iterate
//! (unrolled, their `hd` index computations were hoisted out of the block loop); dQ's dO row and
//! dK/dV's K and V rows wait in shared memory (padded against bank conflicts), with a store to
//! shared memory in each row iteration so the compiler cannot hoist those loads back into
//! registers; and dQ and dK/dV add `ds·k`, `p·dO` and `ds·q` from global memory (L1), not from
//! the tiles the dot products just read, whose loaded values it would otherwise keep live beside
//! the accumulators. Every sum is the same as before, in the same order.

use burn::backend::ops::FloatTensorOps;
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use burn::backend::cubecl::dtype_to_storage_type;

/// Below any real attention score; WGSL has no −∞ literal. `exp(NEG_BIG − x)` is exactly 0.
const NEG_BIG: f32 = -1.0e30;
/// Above any real log-sum-exp: the `L` of a row past the end, so its `P = exp(S − L)` is 0.
const POS_BIG: f32 = 1.0e30;

/// The largest block size (rows per cube) whose shared tiles fit `shared_bytes` for `kernel`,
/// a power of two in `1..=64`; `None` when not even one row fits.
pub fn block_rows(
    head_dim: usize,
    shared_bytes: usize,
    max_units: usize,
    kernel: Kernel,
) -> Option<usize> {
    let per_row = kernel.shared_bytes_per_row(head_dim);
    let mut block = 64usize.min(max_units.max(1));
    while block > 1 && block * per_row > shared_bytes {
        block /= 2;
    }
    (block * per_row <= shared_bytes).then_some(block)
}

/// The three tiled kernels, for sizing their shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Forward: a key tile and a value tile.
    Forward,
    /// dQ: a key tile, a value tile and each unit's own dO row.
    Dq,
    /// dK/dV: a query tile, a dO tile, the rows' `(L, D)` and each unit's own K and V rows.
    DkDv,
}

impl Kernel {
    /// Every tiled kernel, for checks that must hold for all of them.
    pub const ALL: [Kernel; 3] = [Kernel::Forward, Kernel::Dq, Kernel::DkDv];

    /// Bytes of shared memory per row of a block. A unit's own rows are padded to `hd + 1`
    /// floats, so the 32 units of a warp reading element `d` of their rows hit 32 different
    /// banks.
    pub fn shared_bytes_per_row(self, head_dim: usize) -> usize {
        match self {
            Kernel::Forward => 2 * head_dim * 4,
            // ... + one float a row for the store that pins the own rows in shared memory.
            Kernel::Dq => (2 * head_dim + (head_dim + 1) + 1) * 4,
            Kernel::DkDv => (2 * head_dim + 2 + 2 * (head_dim + 1) + 1) * 4,
        }
    }
}

/// A unit's own row `row` of head `(b, h)` of `x` into its padded row of shared memory (zeros
/// when `live` is false); only that unit reads it, so no barrier is needed.
#[cube]
fn load_own_row<F: Float>(
    x: &Tensor<F>,
    rows: &mut Shared<[f32]>,
    b: usize,
    h: usize,
    row: usize,
    live: bool,
    #[comptime] hd: usize,
) {
    let base = b * x.stride(0) + h * x.stride(1) + row * x.stride(2);
    let own = UNIT_POS_X as usize * (hd + 1);
    #[unroll]
    for d in 0..hd {
        let mut value = 0.0f32.runtime();
        if live {
            value = f32::cast_from(x[base + d * x.stride(3)]);
        }
        rows[own + d] = value;
    }
}

/// Copies rows `first..first + block` of a `[B, nh, T, hd]` tensor (any strides) for head
/// `(b, h)` into a shared `[block, hd]` f32 tile, zeros past `T`. Consecutive units read
/// consecutive elements of a row.
#[cube]
fn load_tile<F: Float>(
    x: &Tensor<F>,
    tile: &mut Shared<[f32]>,
    b: usize,
    h: usize,
    first: usize,
    t_len: usize,
    #[comptime] hd: usize,
    #[comptime] block: usize,
) {
    let base = b * x.stride(0) + h * x.stride(1);
    // `block × hd` values, `hd` per unit. A loop, not unrolled: unrolled, NVRTC hoisted the `hd`
    // index computations out of the caller's block loop and kept them live (the kernels
    // spilled). lavapipe (llvmpipe) ends a shader invocation after 65,535 loop iterations in all:
    // this adds `2·hd` per block of rows, 17·T per unit in dK/dV at head size 64 with blocks of 8
    // (16 KiB of shared memory), so T = 1024 stays well inside it.
    for step in 0..hd {
        let idx = step * block + UNIT_POS_X as usize;
        let r = idx / hd;
        let d = idx % hd;
        let row = first + r;
        let mut value = 0.0f32.runtime();
        if row < t_len {
            value = f32::cast_from(x[base + row * x.stride(2) + d * x.stride(3)]);
        }
        tile[idx] = value;
    }
}

/// Row `row` of head `(b, h)` of `x` into a register array (times `factor`), zeros when `live`
/// is false.
#[cube]
fn load_row<F: Float>(
    x: &Tensor<F>,
    out: &mut Array<f32>,
    b: usize,
    h: usize,
    row: usize,
    live: bool,
    factor: f32,
    #[comptime] hd: usize,
) {
    let base = b * x.stride(0) + h * x.stride(1) + row * x.stride(2);
    #[unroll]
    for d in 0..hd {
        let mut value = 0.0f32.runtime();
        if live {
            value = f32::cast_from(x[base + d * x.stride(3)]) * factor;
        }
        out[d] = value;
    }
}

/// `acc += w · x[b, h, row, :]`, read from global memory (through L1). The index advances by the
/// last stride element by element, so there are no `hd` loop-invariant products `d · stride`
/// for the compiler to hoist out of the caller's loop (as it did with the tile copies').
#[cube]
fn add_global_row<F: Float>(
    acc: &mut Array<f32>,
    x: &Tensor<F>,
    b: usize,
    h: usize,
    row: usize,
    w: f32,
    #[comptime] hd: usize,
) {
    let step = x.stride(3);
    let mut idx = b * x.stride(0) + h * x.stride(1) + row * x.stride(2);
    #[unroll]
    for d in 0..hd {
        acc[d] += w * f32::cast_from(x[idx]);
        idx += step;
    }
}

/// Units per cube of the delta kernel (one per row).
pub(super) const DELTA_UNITS: u32 = 256;

/// Cube `(query block, b·nh + h)`, one unit per query row.
#[cube(launch)]
pub(super) fn flash_forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    o: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let nh = q.shape(1);
    let t_len = q.shape(2);
    let bh = CUBE_POS_Y as usize;
    let b = bh / nh;
    let h = bh % nh;
    let qb = CUBE_POS_X as usize;
    let tid = UNIT_POS_X as usize;
    let i = qb * block + tid;
    let live = i < t_len;

    let mut qi = Array::<f32>::new(hd);
    load_row::<F>(q, &mut qi, b, h, i, live, scale, hd);
    let mut acc = Array::<f32>::new(hd);
    #[unroll]
    for d in 0..hd {
        acc[d] = 0.0f32;
    }
    let mut scores = Array::<f32>::new(block);
    let mut k_tile = Shared::<[f32]>::new_slice(block * hd);
    let mut v_tile = Shared::<[f32]>::new_slice(block * hd);
    let mut m = NEG_BIG.runtime();
    let mut l = 0.0f32.runtime();
    for kb in 0..qb + 1 {
        load_tile::<F>(k, &mut k_tile, b, h, kb * block, t_len, hd, block);
        load_tile::<F>(v, &mut v_tile, b, h, kb * block, t_len, hd, block);
        sync_cube();
        // Every key of an earlier block; up to the row's own key on the diagonal.
        let mut n_keys = block.runtime();
        if kb == qb {
            n_keys = tid + 1;
        }
        let mut m_new = m;
        for jj in 0..n_keys {
            let mut dot = 0.0f32.runtime();
            #[unroll]
            for d in 0..hd {
                dot += qi[d] * k_tile[jj * hd + d];
            }
            scores[jj] = dot;
            if dot > m_new {
                m_new = dot;
            }
        }
        let correction = (m - m_new).exp();
        l *= correction;
        #[unroll]
        for d in 0..hd {
            acc[d] *= correction;
        }
        for jj in 0..n_keys {
            let p = (scores[jj] - m_new).exp();
            l += p;
            #[unroll]
            for d in 0..hd {
                acc[d] += p * v_tile[jj * hd + d];
            }
        }
        m = m_new;
        sync_cube();
    }
    if live {
        let row = bh * t_len + i;
        let inv = 1.0f32 / l;
        // Through `o`'s strides: the caller lays it out [B, T, nh, hd] (see `forward`).
        let base = b * o.stride(0) + h * o.stride(1) + i * o.stride(2);
        let o_stride = o.stride(3);
        #[unroll]
        for d in 0..hd {
            o[base + d * o_stride] = F::cast_from(acc[d] * inv);
        }
        lse[row] = m + l.ln();
    }
}

/// One unit per row: `stats[row] = (L_row, Σ_d dO·O)`.
#[cube(launch)]
pub(super) fn flash_delta_kernel<F: Float>(
    d_o: &Tensor<F>,
    o: &Tensor<F>,
    lse: &Tensor<f32>,
    stats: &mut Tensor<f32>,
    #[comptime] hd: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let nh = d_o.shape(1);
    let t_len = d_o.shape(2);
    let i = row % t_len;
    let bh = row / t_len;
    let b = bh / nh;
    let h = bh % nh;
    let base = b * d_o.stride(0) + h * d_o.stride(1) + i * d_o.stride(2);
    let o_base = b * o.stride(0) + h * o.stride(1) + i * o.stride(2);
    let mut delta = 0.0f32.runtime();
    #[unroll]
    for d in 0..hd {
        delta += f32::cast_from(d_o[base + d * d_o.stride(3)])
            * f32::cast_from(o[o_base + d * o.stride(3)]);
    }
    stats[2 * row] = lse[row];
    stats[2 * row + 1] = delta;
}

/// Cube `(query block, b·nh + h)`, one unit per query row: `dq`.
#[cube(launch)]
pub(super) fn flash_dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_o: &Tensor<F>,
    stats: &Tensor<f32>,
    dq: &mut Tensor<F>,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let nh = q.shape(1);
    let t_len = q.shape(2);
    let bh = CUBE_POS_Y as usize;
    let b = bh / nh;
    let h = bh % nh;
    let qb = CUBE_POS_X as usize;
    let tid = UNIT_POS_X as usize;
    let i = qb * block + tid;
    let live = i < t_len;
    let row = bh * t_len + i;

    let mut qi = Array::<f32>::new(hd);
    load_row::<F>(q, &mut qi, b, h, i, live, scale, hd);
    // The dO row waits in shared memory: q, dO and the accumulator in registers spilled.
    let mut do_rows = Shared::<[f32]>::new_slice(block * (hd + 1));
    // Written once a row iteration: a store to shared memory inside the loop keeps the compiler
    // from hoisting the own-row loads out of it into registers (which spilled).
    let mut pin = Shared::<[f32]>::new_slice(block);
    load_own_row::<F>(d_o, &mut do_rows, b, h, i, live, hd);
    let own = tid * (hd + 1);
    let mut acc = Array::<f32>::new(hd);
    #[unroll]
    for d in 0..hd {
        acc[d] = 0.0f32;
    }
    let mut lse_i = POS_BIG.runtime();
    let mut delta_i = 0.0f32.runtime();
    if live {
        lse_i = stats[2 * row];
        delta_i = stats[2 * row + 1];
    }
    let mut k_tile = Shared::<[f32]>::new_slice(block * hd);
    let mut v_tile = Shared::<[f32]>::new_slice(block * hd);
    for kb in 0..qb + 1 {
        load_tile::<F>(k, &mut k_tile, b, h, kb * block, t_len, hd, block);
        load_tile::<F>(v, &mut v_tile, b, h, kb * block, t_len, hd, block);
        sync_cube();
        let mut n_keys = block.runtime();
        if kb == qb {
            n_keys = tid + 1;
        }
        for jj in 0..n_keys {
            let mut s = 0.0f32.runtime();
            let mut dp = 0.0f32.runtime();
            #[unroll]
            for d in 0..hd {
                s += qi[d] * k_tile[jj * hd + d];
                dp += do_rows[own + d] * v_tile[jj * hd + d];
            }
            let ds = (s - lse_i).exp() * (dp - delta_i);
            pin[tid] = ds;
            // `ds·k` from K itself (L1), not the tile the dot product just read: both compilers
            // would keep those 64 loaded values live beside q and the accumulator, and spill.
            let key = kb * block + jj;
            if key < t_len {
                add_global_row::<F>(&mut acc, k, b, h, key, ds, hd);
            }
        }
        sync_cube();
    }
    if live {
        #[unroll]
        for d in 0..hd {
            dq[row * hd + d] = F::cast_from(acc[d] * scale);
        }
    }
}

/// Cube `(key block, b·nh + h)`, one unit per key row: `dk` and `dv`.
#[cube(launch)]
pub(super) fn flash_dkdv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_o: &Tensor<F>,
    stats: &Tensor<f32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let nh = q.shape(1);
    let t_len = q.shape(2);
    let bh = CUBE_POS_Y as usize;
    let b = bh / nh;
    let h = bh % nh;
    let kb = CUBE_POS_X as usize;
    let tid = UNIT_POS_X as usize;
    let j = kb * block + tid;
    let live = j < t_len;

    // The unit's K and V rows wait in shared memory: with both accumulators in registers,
    // four rows of `hd` floats per unit spilled.
    let mut k_rows = Shared::<[f32]>::new_slice(block * (hd + 1));
    let mut v_rows = Shared::<[f32]>::new_slice(block * (hd + 1));
    load_own_row::<F>(k, &mut k_rows, b, h, j, live, hd);
    load_own_row::<F>(v, &mut v_rows, b, h, j, live, hd);
    let own = tid * (hd + 1);
    // The unit's rows as slices (cubecl folds them back into `own + d` indices).
    let k_own = k_rows.slice(own, own + hd);
    let v_own = v_rows.slice(own, own + hd);
    let mut dk_acc = Array::<f32>::new(hd);
    let mut dv_acc = Array::<f32>::new(hd);
    #[unroll]
    for d in 0..hd {
        dk_acc[d] = 0.0f32;
        dv_acc[d] = 0.0f32;
    }
    let mut q_tile = Shared::<[f32]>::new_slice(block * hd);
    let mut do_tile = Shared::<[f32]>::new_slice(block * hd);
    let mut lse_tile = Shared::<[f32]>::new_slice(block);
    let mut delta_tile = Shared::<[f32]>::new_slice(block);
    // Written once a row iteration: a store to shared memory inside the loop keeps the compiler
    // from hoisting the own-row loads out of it into registers (which spilled).
    let mut pin = Shared::<[f32]>::new_slice(block);
    // Spelled out: the cube macro translates the arithmetic, not `div_ceil`.
    #[allow(clippy::manual_div_ceil)]
    let n_blocks = (t_len + block - 1) / block;
    for qb in kb..n_blocks {
        let first = qb * block;
        load_tile::<F>(q, &mut q_tile, b, h, first, t_len, hd, block);
        load_tile::<F>(d_o, &mut do_tile, b, h, first, t_len, hd, block);
        let row = first + tid;
        // Rows past the end get L = +big, so their P is 0 and they add nothing.
        let mut lse_r = POS_BIG.runtime();
        let mut delta_r = 0.0f32.runtime();
        if row < t_len {
            lse_r = stats[2 * (bh * t_len + row)];
            delta_r = stats[2 * (bh * t_len + row) + 1];
        }
        lse_tile[tid] = lse_r;
        delta_tile[tid] = delta_r;
        sync_cube();
        // Queries at or after this key: all of a later block, from the key's own row on the
        // diagonal.
        let mut start = 0usize.runtime();
        if qb == kb {
            start = tid;
        }
        for ii in start..block {
            let mut s = 0.0f32.runtime();
            let mut dp = 0.0f32.runtime();
            #[unroll]
            for d in 0..hd {
                s += q_tile[ii * hd + d] * k_own[d];
                dp += do_tile[ii * hd + d] * v_own[d];
            }
            let p = (s * scale - lse_tile[ii]).exp();
            let ds = p * (dp - delta_tile[ii]);
            pin[tid] = p;
            // `p·dO` and `ds·q` from dO and Q themselves (L1), not the tiles the dot products just
            // read: kept live, those 2·hd values beside both accumulators spilled.
            let r = first + ii;
            if r < t_len {
                add_global_row::<F>(&mut dv_acc, d_o, b, h, r, p, hd);
                add_global_row::<F>(&mut dk_acc, q, b, h, r, ds, hd);
            }
        }
        sync_cube();
    }
    if live {
        let row = bh * t_len + j;
        #[unroll]
        for d in 0..hd {
            dk[row * hd + d] = F::cast_from(dk_acc[d] * scale);
            dv[row * hd + d] = F::cast_from(dv_acc[d]);
        }
    }
}

/// What the backward pass needs from the forward: the inputs, `O` and `L`.
#[derive(Debug, Clone)]
pub struct FlashSaved {
    pub q: CubeTensor,
    pub k: CubeTensor,
    pub v: CubeTensor,
    pub o: CubeTensor,
    /// `[B·nh·T]` f32 log-sum-exp of each row's scores.
    pub lse: CubeTensor,
    pub scale: f64,
}

fn dims4(t: &CubeTensor) -> [usize; 4] {
    let s = &t.meta.shape;
    [s[0], s[1], s[2], s[3]]
}

/// Shared memory the kernels may use: what the adapter reports, at most `cap`.
fn shared_budget(t: &CubeTensor, cap: Option<usize>) -> (usize, usize) {
    let hw = &t.client.properties().hardware;
    let bytes = cap.map_or(hw.max_shared_memory_size, |c| {
        c.min(hw.max_shared_memory_size)
    });
    (bytes, hw.max_units_per_cube as usize)
}

fn block_for(t: &CubeTensor, hd: usize, kernel: Kernel, cap: Option<usize>) -> usize {
    let (bytes, units) = shared_budget(t, cap);
    block_rows(hd, bytes, units, kernel).unwrap_or_else(|| {
        panic!(
            "attention head size {hd} needs {} B of shared memory per row; the device has {bytes} B \
             (the training plan checks this before it starts)",
            kernel.shared_bytes_per_row(hd)
        )
    })
}

/// Causal attention forward: returns `O` `[B, nh, T, hd]` (the inputs' dtype) and the state the
/// backward needs. `O` is laid out `[B, T, nh, hd]` and returned as that buffer's `[B, nh, T, hd]`
/// view, so the model's swap back to `[B, T, C]` for `c_proj` is free and `c_proj` keeps the very
/// tensor the backward keeps as `O` (llm.c's `atty`), not a copy. `q`, `k`, `v` may have any
/// strides. `shared_cap` bounds the shared memory per cube below the adapter's own limit (tests
/// use it to check small devices).
pub fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    scale: f64,
    shared_cap: Option<usize>,
) -> (CubeTensor, FlashSaved) {
    let [b, nh, t, hd] = dims4(&q);
    let dtype = q.dtype;
    let client = q.client.clone();
    let block = block_for(&q, hd, Kernel::Forward, shared_cap);
    let o = empty_device_contiguous_dtype(
        client.clone(),
        q.device.clone(),
        Shape::new([b, t, nh, hd]),
        dtype,
    );
    let o = <burn::backend::Cube as FloatTensorOps<burn::backend::Cube>>::float_swap_dims(o, 1, 2);
    let lse = empty_device_contiguous_dtype(
        client.clone(),
        q.device.clone(),
        Shape::new([b * nh * t]),
        DType::F32,
    );
    let blocks = t.div_ceil(block) as u32;
    flash_forward_kernel::launch(
        &client,
        CubeCount::Static(blocks, (b * nh) as u32, 1),
        CubeDim::new_1d(block as u32),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        o.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        scale as f32,
        hd,
        block,
        dtype_to_storage_type(dtype),
    );
    let saved = FlashSaved {
        q,
        k,
        v,
        o: o.clone(),
        lse,
        scale,
    };
    (o, saved)
}

/// Causal attention backward from the saved state and `dO`: `(dq, dk, dv)`, contiguous, in the
/// inputs' dtype.
pub fn backward(
    saved: FlashSaved,
    d_o: CubeTensor,
    shared_cap: Option<usize>,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let FlashSaved {
        q,
        k,
        v,
        o,
        lse,
        scale,
    } = saved;
    let [b, nh, t, hd] = dims4(&q);
    let dtype = q.dtype;
    assert_eq!(d_o.dtype, dtype, "flash attention: dO in the inputs' dtype");
    let client = q.client.clone();
    let device = q.device.clone();
    let rows = b * nh * t;

    let stats = empty_device_contiguous_dtype(
        client.clone(),
        device.clone(),
        Shape::new([2 * rows]),
        DType::F32,
    );
    let cube_dim = CubeDim::new_1d(DELTA_UNITS);
    flash_delta_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, rows, cube_dim),
        cube_dim,
        d_o.clone().into_tensor_arg(),
        o.into_tensor_arg(),
        lse.into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        hd,
        dtype_to_storage_type(dtype),
    );

    let empty = || {
        empty_device_contiguous_dtype(
            client.clone(),
            device.clone(),
            Shape::new([b, nh, t, hd]),
            dtype,
        )
    };
    let (dq, dk, dv) = (empty(), empty(), empty());
    let block = block_for(&q, hd, Kernel::Dq, shared_cap);
    flash_dq_kernel::launch(
        &client,
        CubeCount::Static(t.div_ceil(block) as u32, (b * nh) as u32, 1),
        CubeDim::new_1d(block as u32),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        d_o.clone().into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        scale as f32,
        hd,
        block,
        dtype_to_storage_type(dtype),
    );
    let block = block_for(&q, hd, Kernel::DkDv, shared_cap);
    flash_dkdv_kernel::launch(
        &client,
        CubeCount::Static(t.div_ceil(block) as u32, (b * nh) as u32, 1),
        CubeDim::new_1d(block as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        d_o.into_tensor_arg(),
        stats.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        scale as f32,
        hd,
        block,
        dtype_to_storage_type(dtype),
    );
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fit_the_shared_memory_and_shrink_for_wide_heads() {
        // 16 KiB, the WebGPU default, head size 64: the forward's K and V tiles take 512 B a row
        // → 32 rows (16 KiB exactly); dQ adds its padded dO row (776 B) → 16; dK/dV has Q and
        // dO tiles, (L, D) and padded K and V rows (1,044 B) → 8.
        assert_eq!(block_rows(64, 16384, 256, Kernel::Forward), Some(32));
        assert_eq!(block_rows(64, 16384, 256, Kernel::Dq), Some(16));
        assert_eq!(block_rows(64, 16384, 256, Kernel::DkDv), Some(8));
        assert_eq!(block_rows(16, 16384, 256, Kernel::DkDv), Some(32));
        assert_eq!(block_rows(16, 32768, 256, Kernel::DkDv), Some(64));
        // An H100's opt-in 227 KiB: 64 rows for all three (dK/dV: 66,816 B).
        for kernel in Kernel::ALL {
            assert_eq!(
                block_rows(64, 232_448, 1024, kernel),
                Some(64),
                "{kernel:?}"
            );
        }
        assert_eq!(block_rows(64, 16384, 8, Kernel::Forward), Some(8));
        // A head too wide for the device at all.
        assert_eq!(block_rows(4096, 16384, 256, Kernel::Forward), None);
    }
}
