//! Causal attention on the CPU, one head at a time, keeping only the row log-sum-exp for the
//! backward (FlashAttention's bargain, llm.c's `attention_forward` layout): flex's side of
//! `RowKernels::attention_forward`/`attention_backward`.
//!
//! Why: storing the probabilities `P` `[B, nh, T, T]` for the backward cost 16 f32 values per
//! channel, token and layer of gpt2-117m at T = 1024, half of everything a step kept
//! (experiments/RESULTS.md part 10). Here a head's scores exist one block of `ROW_BLOCK` query
//! rows at a time, in a buffer of the task's own, and the backward recomputes them from `q`, `k`
//! and the log-sum-exp. The blocks also skip the masked upper triangle, which the batched matmul
//! over `[B, nh, T, T]` computed and threw away.
//!
//! Per head (`q`, `k`, `v`, `O`, `dO` `[T, hd]`, `s` the scale) and block of rows `r0..r1`, keys
//! `0..r1`:
//! - forward: `S = s·q·kᵀ`, `P = softmax(S)` over each row's keys `0..=i`, `O = P·v`,
//!   `lse = max + ln Σ e^(S − max)`;
//! - backward: `P = e^(S − lse)`, `dv += Pᵀ·dO`, `dP = dO·vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`,
//!   `dq = s·dS·k`, `dk += s·dSᵀ·q`.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::{exp_in_place, row_max, scale_in_place, softmax_backward_row, LANES};

/// Query rows per block: the block's scores `[ROW_BLOCK, T]` stay in L2 (256 KB at T = 1024).
const ROW_BLOCK: usize = 64;

/// A row-major or transposed view of a matrix in a slice: element `(i, j)` at `i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// Rows of `cols` elements, one after another.
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of [`View::rows`].
    fn t(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// Whether an `m × n` matrix fits in the slice.
    fn holds(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// `dst[m × n] (row stride dst_rs) = beta·lhs·rhs`, plus `dst` itself when `accumulate`, on this
/// thread (the callers run one head per rayon task).
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_len: usize,
    dst_rs: usize,
    accumulate: bool,
    lhs: View<'_>,
    rhs: View<'_>,
    beta: f32,
) {
    assert!(
        lhs.holds(m, k) && rhs.holds(k, n) && (m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst_len),
        "attention matmul: {m}×{k}·{k}×{n} out of bounds"
    );
    // SAFETY: every element gemm reads or writes is inside the slices (checked just above), and
    // the caller owns `dst[..dst_len]` for the duration of the call.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

multiversion!(softmax_lse_rows(s: &mut [f32], first: usize, n: usize, lse: &mut [f32]) {
    // Row `i` is query `first + i`: it sees keys `0..=first + i`.
    for (i, (row, lse)) in s.chunks_exact_mut(n).zip(lse).enumerate() {
        let (live, future) = row.split_at_mut(first + i + 1);
        let max = row_max(live);
        let sum = exp_in_place(live, max);
        scale_in_place(live, 1.0 / sum);
        future.fill(0.0);
        *lse = max + sum.ln();
    }
});

multiversion!(probs_from_lse_rows(s: &mut [f32], first: usize, n: usize, lse: &[f32]) {
    for (i, (row, &lse)) in s.chunks_exact_mut(n).zip(lse).enumerate() {
        let (live, future) = row.split_at_mut(first + i + 1);
        exp_in_place(live, lse);
        future.fill(0.0);
    }
});

multiversion!(score_grad_rows(p: &[f32], dp: &mut [f32], delta: &[f32], n: usize) {
    for ((p, dp), &delta) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)).zip(delta) {
        softmax_backward_row(p, dp, delta);
    }
});

multiversion!(row_dots(a: &[f32], b: &[f32], out: &mut [f32], hd: usize) {
    for ((a, b), out) in a.chunks_exact(hd).zip(b.chunks_exact(hd)).zip(out) {
        let mut acc = [0.0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let mut tail = 0.0;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        for (ca, cb) in ca.zip(cb) {
            for ((acc, x), y) in acc.iter_mut().zip(ca).zip(cb) {
                *acc += x * y;
            }
        }
        *out = tail + acc.iter().sum::<f32>();
    }
});

/// A pointer that rayon tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used by `forward`, whose tasks write disjoint elements (one head's columns each).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so that closures capture the whole (Sync) wrapper, not its field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Causal attention of `q`, `k`, `v` `[B, nh, T, hd]` (row-major) with scale `scale`: returns
/// `O` laid out `[B, T, nh, hd]` (the heads side by side, as `c_proj` reads them) and the row
/// log-sum-exp `[B, nh, T]`.
///
/// # Panics
/// If the slices are not `b·nh·t·hd` long.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, nh, t, hd]: [usize; 4],
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let len = b * nh * t * hd;
    assert!(
        q.len() == len && k.len() == len && v.len() == len,
        "attention forward: shape"
    );
    let mut o = vec![0.0f32; len];
    let mut lse = vec![0.0f32; b * nh * t];
    let out = SharedOut(o.as_mut_ptr());
    lse.par_chunks_mut(t.max(1))
        .enumerate()
        .for_each(|(bh, lse)| {
            let (bi, h) = (bh / nh, bh % nh);
            let head = bh * t * hd..(bh + 1) * t * hd;
            let (q, k, v) = (&q[head.clone()], &k[head.clone()], &v[head]);
            let mut s = vec![0.0f32; ROW_BLOCK.min(t) * t];
            for r0 in (0..t).step_by(ROW_BLOCK) {
                let (r1, rows) = ((r0 + ROW_BLOCK).min(t), (r0 + ROW_BLOCK).min(t) - r0);
                let s = &mut s[..rows * r1];
                let q_rows = View::rows(&q[r0 * hd..r1 * hd], hd);
                matmul(
                    rows,
                    r1,
                    hd,
                    s.as_mut_ptr(),
                    s.len(),
                    r1,
                    false,
                    q_rows,
                    View::t(k, hd),
                    scale,
                );
                softmax_lse_rows(s, r0, r1, &mut lse[r0..r1]);
                // Rows r0..r1 of this head in O [B, T, nh, hd]: row stride nh·hd.
                let first = (bi * t + r0) * nh * hd + h * hd;
                // `o` has `len` elements and outlives the loop; this task alone writes the
                // columns h·hd..(h+1)·hd of batch bi's rows (`matmul` checks the bounds).
                let dst = out.at(first);
                let dst_len = len - first;
                matmul(
                    rows,
                    hd,
                    r1,
                    dst,
                    dst_len,
                    nh * hd,
                    false,
                    View::rows(s, r1),
                    View::rows(v, hd),
                    1.0,
                );
            }
        });
    (o, lse)
}

/// The gradients `(dq, dk, dv)` `[B, nh, T, hd]` of [`forward`] from its inputs, its `O` and
/// log-sum-exp, and the upstream `dO`, all `[B, nh, T, hd]` row-major (`lse` `[B, nh, T]`).
///
/// # Panics
/// If a slice has the wrong length.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    [b, nh, t, hd]: [usize; 4],
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let len = b * nh * t * hd;
    assert!(
        [q, k, v, o, d_o].iter().all(|x| x.len() == len) && lse.len() == b * nh * t,
        "attention backward: shape"
    );
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
    let per_head = (t * hd).max(1);
    dq.par_chunks_mut(per_head)
        .zip(dk.par_chunks_mut(per_head))
        .zip(dv.par_chunks_mut(per_head))
        .enumerate()
        .for_each(|(bh, ((dq, dk), dv))| {
            let head = bh * t * hd..(bh + 1) * t * hd;
            let (q, k, v) = (&q[head.clone()], &k[head.clone()], &v[head.clone()]);
            let (o, d_o, lse) = (&o[head.clone()], &d_o[head], &lse[bh * t..(bh + 1) * t]);
            let mut delta = vec![0.0f32; t];
            row_dots(d_o, o, &mut delta, hd);
            let block = ROW_BLOCK.min(t) * t;
            let (mut p, mut dp) = (vec![0.0f32; block], vec![0.0f32; block]);
            for r0 in (0..t).step_by(ROW_BLOCK) {
                let (r1, rows) = ((r0 + ROW_BLOCK).min(t), (r0 + ROW_BLOCK).min(t) - r0);
                let (p, dp) = (&mut p[..rows * r1], &mut dp[..rows * r1]);
                let (q_rows, do_rows) = (&q[r0 * hd..r1 * hd], &d_o[r0 * hd..r1 * hd]);
                matmul(
                    rows,
                    r1,
                    hd,
                    p.as_mut_ptr(),
                    p.len(),
                    r1,
                    false,
                    View::rows(q_rows, hd),
                    View::t(k, hd),
                    scale,
                );
                probs_from_lse_rows(p, r0, r1, &lse[r0..r1]);
                matmul(
                    r1,
                    hd,
                    rows,
                    dv.as_mut_ptr(),
                    dv.len(),
                    hd,
                    true,
                    View::t(p, r1),
                    View::rows(do_rows, hd),
                    1.0,
                );
                matmul(
                    rows,
                    r1,
                    hd,
                    dp.as_mut_ptr(),
                    dp.len(),
                    r1,
                    false,
                    View::rows(do_rows, hd),
                    View::t(v, hd),
                    1.0,
                );
                score_grad_rows(p, dp, &delta[r0..r1], r1);
                let dq_rows = &mut dq[r0 * hd..r1 * hd];
                matmul(
                    rows,
                    hd,
                    r1,
                    dq_rows.as_mut_ptr(),
                    dq_rows.len(),
                    hd,
                    false,
                    View::rows(dp, r1),
                    View::rows(k, hd),
                    scale,
                );
                matmul(
                    r1,
                    hd,
                    rows,
                    dk.as_mut_ptr(),
                    dk.len(),
                    hd,
                    true,
                    View::t(dp, r1),
                    View::rows(q_rows, hd),
                    scale,
                );
            }
        });
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    /// Causal attention in f64, straight from the formula, and its gradients for upstream `dO`.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        d_o: &[f32],
        [b, nh, t, hd]: [usize; 4],
        s: f64,
    ) -> [Vec<f64>; 5] {
        let len = b * nh * t * hd;
        let (mut o, mut lse) = (vec![0.0; len], vec![0.0; b * nh * t]);
        let (mut dq, mut dk, mut dv) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        let at = |x: &[f32], bh: usize, i: usize, d: usize| x[(bh * t + i) * hd + d] as f64;
        for bh in 0..b * nh {
            for i in 0..t {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        s * (0..hd)
                            .map(|d| at(q, bh, i, d) * at(k, bh, j, d))
                            .sum::<f64>()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                lse[bh * t + i] = max + sum.ln();
                let p: Vec<f64> = scores.iter().map(|x| (x - max).exp() / sum).collect();
                let dp: Vec<f64> = (0..=i)
                    .map(|j| (0..hd).map(|d| at(d_o, bh, i, d) * at(v, bh, j, d)).sum())
                    .collect();
                let delta: f64 = (0..=i).map(|j| p[j] * dp[j]).sum();
                for d in 0..hd {
                    let row = (bh * t + i) * hd + d;
                    o[row] = (0..=i).map(|j| p[j] * at(v, bh, j, d)).sum();
                    for j in 0..=i {
                        let ds = p[j] * (dp[j] - delta);
                        dq[row] += s * ds * at(k, bh, j, d);
                        dk[(bh * t + j) * hd + d] += s * ds * at(q, bh, i, d);
                        dv[(bh * t + j) * hd + d] += p[j] * at(d_o, bh, i, d);
                    }
                }
            }
        }
        [o, lse, dq, dk, dv]
    }

    fn worst(ours: &[f32], exact: &[f64]) -> f64 {
        let scale = exact.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let err = ours
            .iter()
            .zip(exact)
            .fold(0.0f64, |m, (&a, &e)| m.max((a as f64 - e).abs()));
        err / scale
    }

    /// Against the f64 formula, with T spanning several row blocks and not a multiple of one
    /// (150 = 2·64 + 22), B·nh tasks more than the threads, and values large enough that the
    /// softmax is far from uniform. Bound: 1e-5 of the largest magnitude, f32 with sums of ≤150
    /// terms (measured ≤ 2e-6).
    #[test]
    fn forward_and_backward_are_the_formula() {
        let shape = [2, 3, 150, 16];
        let len: usize = shape.iter().product();
        let gen = |seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 3.0)
                .collect()
        };
        let (q, k, v, d_o) = (gen(1), gen(2), gen(3), gen(4));
        let s = 0.25f32;
        let [o_ref, lse_ref, dq_ref, dk_ref, dv_ref] = reference(&q, &k, &v, &d_o, shape, s as f64);
        // O comes back [B, T, nh, hd]; the reference is [B, nh, T, hd].
        let (o, lse) = super::forward(&q, &k, &v, shape, s);
        let [b, nh, t, hd] = shape;
        let mut o_bnth = vec![0.0f32; len];
        for bi in 0..b {
            for h in 0..nh {
                for i in 0..t {
                    for d in 0..hd {
                        o_bnth[((bi * nh + h) * t + i) * hd + d] =
                            o[((bi * t + i) * nh + h) * hd + d];
                    }
                }
            }
        }
        let (dq, dk, dv) = super::backward(&q, &k, &v, &o_bnth, &lse, &d_o, shape, s);
        for (what, ours, exact) in [
            ("O", &o_bnth, &o_ref),
            ("lse", &lse, &lse_ref),
            ("dq", &dq, &dq_ref),
            ("dk", &dk, &dk_ref),
            ("dv", &dv, &dv_ref),
        ] {
            let err = worst(ours, exact);
            assert!(err < 1e-5, "{what}: relative error {err:e}");
        }
    }
}
