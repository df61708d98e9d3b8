//! Row kernels on plain `f32` slices for the CPU (flex) side of the fused ops in `fused.rs`:
//! the LM head's softmax + cross-entropy, evaluation's per-token NLL, attention's causal softmax
//! and its backward (the composed form's), GPT-2's GELU with its derivative, and causal attention
//! itself, one head at a time (`kernels/attention.rs`).
//!
//! Why our own: flex's softmax computes `exp` one scalar libm call at a time (macerator has no
//! SIMD exp), and that was 18% of a gpt2-10m training step (perf, experiments/RESULTS.md).
//! Here `exp` is a branch-free polynomial that LLVM vectorises, the loops are compiled for
//! AVX-512 and AVX2+FMA and picked at run time, rows run in parallel on rayon, and everything
//! works in place on the buffer the matmul just wrote (no extra `[N, V]` allocation).

use rayon::prelude::*;

/// Lanes of the partial max/sum accumulators (a multiple of every SIMD width we target).
const LANES: usize = 16;

/// `e^x` in f32 for `x <= 88`, relative error < 3·10⁻⁷ on the normal range (tested); inputs below
/// −87.3 give ~1.2·10⁻³⁸ (about the smallest normal) instead of a denormal or 0, which a softmax
/// cannot tell from 0. Cody–Waite reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, then a degree-7
/// Taylor polynomial for `e^r` and `2^n` built from its exponent bits. No branches, so a loop
/// over it vectorises.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split so that n·LN2_HI is exact for |n| ≤ 2^9
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.0);
    // n = round(x / ln 2) as a float, and as an integer from the low bits of `x/ln2 + ROUND`
    // (integer ops only: a float-to-int `as` cast saturates and checks for NaN, which stops
    // LLVM from vectorising the loop).
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits()); // n as a two's-complement i32
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = if x > *a { x } else { *a };
        }
    }
    let mut m = tail.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for a in acc {
        m = m.max(a);
    }
    m
}

/// `row[j] = e^(row[j] − shift)` in place; returns the sum.
#[inline(always)]
fn exp_in_place(row: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk.iter_mut()) {
            *x = exp_f32(*x - shift);
            *a += *x;
        }
    }
    let mut sum = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - shift);
        sum += *x;
    }
    sum + acc.iter().sum::<f32>()
}

#[inline(always)]
fn scale_in_place(row: &mut [f32], factor: f32) {
    for x in row {
        *x *= factor;
    }
}

/// One row of the LM head's loss: returns `−ln softmax(row)[target]` (as `lse − row[target]`)
/// and leaves `softmax(row) − onehot(target)` in `row`.
#[inline(always)]
fn xent_row(row: &mut [f32], target: usize) -> f64 {
    let picked = row[target];
    let max = row_max(row);
    let sum = exp_in_place(row, max);
    scale_in_place(row, 1.0 / sum);
    row[target] -= 1.0;
    (max as f64 + (sum as f64).ln()) - picked as f64
}

/// `(−ln softmax(row)[target], max(row) − row[target])` of one row, read only.
#[inline(always)]
fn nll_row(row: &[f32], target: usize) -> (f32, f32) {
    let max = row_max(row);
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let mut sum: f32 = chunks.remainder().iter().map(|&x| exp_f32(x - max)).sum();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += exp_f32(x - max);
        }
    }
    sum += acc.iter().sum::<f32>();
    let nll = ((max as f64 + (sum as f64).ln()) - row[target] as f64) as f32;
    (nll, max - row[target])
}

/// `dp[j] = p[j]·(dp[j] − delta)`: softmax's backward for one row, in place on `dp`.
#[inline(always)]
fn softmax_backward_row(p: &[f32], dp: &mut [f32], delta: f32) {
    for (d, &p) in dp.iter_mut().zip(p) {
        *d = p * (*d - delta);
    }
}

/// GPT-2's GELU constants: `gelu(x) = x·σ(x·(A + B·x²))` (see `model::gelu_tanh`).
pub const GELU_A: f32 = 1.595_769; // 2·√(2/π), to f32 precision
/// See [`GELU_A`].
pub const GELU_B: f32 = 0.044_715 * GELU_A;

#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-z))
}

/// Compiles `$body` (a closure over slices) three times, for AVX-512F, AVX2+FMA and the
/// baseline, and runs the best one the CPU supports.
macro_rules! multiversion {
    ($name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub mod attention;

multiversion!(xent_rows(rows: &mut [f32], targets: &[usize], nll: &mut [f64], v: usize) {
    for ((row, &t), out) in rows.chunks_exact_mut(v).zip(targets).zip(nll) {
        *out = xent_row(row, t);
    }
});

multiversion!(nll_rows(rows: &[f32], targets: &[usize], out: &mut [f32], v: usize) {
    for ((row, &t), out) in rows.chunks_exact(v).zip(targets).zip(out.chunks_exact_mut(2)) {
        (out[0], out[1]) = nll_row(row, t);
    }
});

multiversion!(softmax_backward_rows(p: &[f32], dp: &mut [f32], delta: &[f32], t: usize) {
    for ((p, dp), &delta) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)).zip(delta) {
        softmax_backward_row(p, dp, delta);
    }
});

multiversion!(gelu_slice(x: &mut [f32]) {
    for x in x.iter_mut() {
        *x *= sigmoid(*x * (GELU_A + GELU_B * *x * *x));
    }
});

multiversion!(gelu_backward_slice(x: &[f32], dy: &mut [f32]) {
    // d/dx x·σ(u) = σ(u) + x·σ(u)·(1 − σ(u))·u',  u = x·(A + B·x²),  u' = A + 3B·x².
    for (d, &x) in dy.iter_mut().zip(x) {
        let x2 = x * x;
        let s = sigmoid(x * (GELU_A + GELU_B * x2));
        *d *= s + x * s * (1.0 - s) * (GELU_A + 3.0 * GELU_B * x2);
    }
});

/// Elements handed to one rayon task at a time by the elementwise kernels.
const ELEMS_PER_TASK: usize = 1 << 14;

/// `x ← gelu(x)` elementwise (GPT-2's tanh approximation), in place, in parallel.
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(ELEMS_PER_TASK).for_each(gelu_slice);
}

/// `dy ← dy · gelu'(x)` elementwise, in place, in parallel.
pub fn gelu_backward(x: &[f32], dy: &mut [f32]) {
    assert_eq!(x.len(), dy.len(), "gelu_backward: shape");
    dy.par_chunks_mut(ELEMS_PER_TASK)
        .zip(x.par_chunks(ELEMS_PER_TASK))
        .for_each(|(dy, x)| gelu_backward_slice(x, dy));
}

/// Rows handed to one rayon task at a time.
const ROWS_PER_TASK: usize = 16;

/// In place on `logits` `[N, V]` (row-major): each row becomes `softmax − onehot(target)`.
/// Returns the mean of `−ln softmax(row)[target]` over the rows, summed in f64.
///
/// # Panics
/// If `logits.len() != targets.len() · v` or a target is `>= v`.
pub fn softmax_xent(logits: &mut [f32], targets: &[usize], v: usize) -> f64 {
    assert_eq!(logits.len(), targets.len() * v, "softmax_xent: shape");
    assert!(
        targets.iter().all(|&t| t < v),
        "softmax_xent: target >= {v}"
    );
    let mut nll = vec![0.0f64; targets.len()];
    logits
        .par_chunks_mut(v * ROWS_PER_TASK)
        .zip(targets.par_chunks(ROWS_PER_TASK))
        .zip(nll.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((rows, t), out)| xent_rows(rows, t, out, v));
    nll.iter().sum::<f64>() / targets.len().max(1) as f64
}

/// For each row of `logits` `[N, V]`: `−ln softmax(row)[target]` and `max(row) − row[target]`
/// (0 exactly when the target is a greedy choice), as `[N, 2]` row-major (evaluation; nothing
/// written to `logits`).
///
/// # Panics
/// If `logits.len() != targets.len() · v` or a target is `>= v`.
pub fn token_nll(logits: &[f32], targets: &[usize], v: usize) -> Vec<f32> {
    assert_eq!(logits.len(), targets.len() * v, "token_nll: shape");
    assert!(targets.iter().all(|&t| t < v), "token_nll: target >= {v}");
    let mut out = vec![0.0f32; 2 * targets.len()];
    out.par_chunks_mut(2 * ROWS_PER_TASK)
        .zip(logits.par_chunks(v * ROWS_PER_TASK))
        .zip(targets.par_chunks(ROWS_PER_TASK))
        .for_each(|((out, rows), t)| nll_rows(rows, t, out, v));
    out
}

/// In place on `dp` `[rows, T]`: `dp = p ⊙ (dp − delta)` with one `delta` per row.
pub fn softmax_backward(p: &[f32], dp: &mut [f32], delta: &[f32], t: usize) {
    assert!(
        p.len() == dp.len() && p.len() == delta.len() * t,
        "softmax_backward: shape"
    );
    dp.par_chunks_mut(t * ROWS_PER_TASK)
        .zip(p.par_chunks(t * ROWS_PER_TASK))
        .zip(delta.par_chunks(ROWS_PER_TASK))
        .for_each(|((dp, p), delta)| softmax_backward_rows(p, dp, delta, t));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, exact) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((ours - exact).abs() / exact);
            x += 0.000_37;
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1.3e-38 && exp_f32(-1000.0) >= 0.0);
    }

    #[test]
    fn softmax_xent_and_token_nll_are_the_f64_formula() {
        let (n, v) = (37, 203); // not multiples of the lanes or of the rows per task
        let logits: Vec<f32> = (0..n * v)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 40.0)
            .collect();
        let targets: Vec<usize> = (0..n).map(|i| (i * 61) % v).collect();
        let mut g = logits.clone();
        let loss = softmax_xent(&mut g, &targets, v);
        let per_token = token_nll(&logits, &targets, v);
        let mut expected = 0.0;
        for (r, &t) in targets.iter().enumerate() {
            let row: Vec<f64> = logits[r * v..(r + 1) * v]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = row.iter().map(|x| (x - m).exp()).sum();
            expected += m + sum.ln() - row[t];
            let nll = m + sum.ln() - row[t];
            assert!(
                (per_token[2 * r] as f64 - nll).abs() < 1e-5 * nll.abs().max(1.0),
                "row {r}"
            );
            // The gap in f32, as the kernel computes it: the row max minus the target logit.
            let raw = &logits[r * v..(r + 1) * v];
            let max32 = raw.iter().cloned().fold(f32::MIN, f32::max);
            assert_eq!(per_token[2 * r + 1], max32 - raw[t], "row {r}: gap");
            for (j, &x) in row.iter().enumerate() {
                let want = (x - m).exp() / sum - if j == t { 1.0 } else { 0.0 };
                assert!((g[r * v + j] as f64 - want).abs() < 1e-6, "row {r} col {j}");
            }
        }
        expected /= n as f64;
        assert!(
            (loss - expected).abs() < 1e-5 * expected,
            "{loss} vs {expected}"
        );
    }

    #[test]
    fn gelu_and_its_derivative_are_gpt2s_formula() {
        let x: Vec<f32> = (0..40_001)
            .map(|i| (i as f32 - 20_000.0) / 1000.0)
            .collect();
        let mut y = x.clone();
        gelu(&mut y);
        let mut d = vec![1.0; x.len()];
        gelu_backward(&x, &mut d);
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let f = |x: f64| 0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh());
        for (i, &x) in x.iter().enumerate() {
            let xd = x as f64;
            let h = 1e-4;
            let df = (f(xd + h) - f(xd - h)) / (2.0 * h);
            assert!(
                (y[i] as f64 - f(xd)).abs() < 2e-6 * (1.0 + xd.abs()),
                "gelu({x})"
            );
            assert!(
                (d[i] as f64 - df).abs() < 1e-5,
                "gelu'({x}): {} vs {df}",
                d[i]
            );
        }
    }

    #[test]
    fn softmax_backward_is_p_times_dp_minus_delta() {
        let t = 21;
        let p: Vec<f32> = (0..3 * t).map(|i| (i % 7) as f32 / 7.0).collect();
        let dp0: Vec<f32> = (0..3 * t).map(|i| (i % 5) as f32 - 2.0).collect();
        let delta = [0.5f32, -1.0, 2.0];
        let mut dp = dp0.clone();
        softmax_backward(&p, &mut dp, &delta, t);
        for i in 0..3 * t {
            assert_eq!(dp[i], p[i] * (dp0[i] - delta[i / t]));
        }
    }
}
