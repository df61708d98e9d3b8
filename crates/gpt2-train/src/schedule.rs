//! Learning-rate schedule: linear warmup, then cosine decay to `min_lr` (GPT-3 paper §B;
//! nanoGPT `get_lr`, llm.c). A pure function of the step, so resume needs no scheduler state.

/// The learning rate at optimizer step `step` (0-based).
///
/// - `step < warmup`: `lr · (step + 1) / warmup` (never zero at step 0, as llm.c).
/// - `warmup ≤ step ≤ max_steps`: cosine from `lr` down to `min_lr`.
/// - beyond `max_steps`: `min_lr`.
pub fn lr_at(step: u64, lr: f64, min_lr: f64, warmup: u64, max_steps: u64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= max_steps || max_steps <= warmup {
        return min_lr;
    }
    let ratio = (step - warmup) as f64 / (max_steps - warmup) as f64;
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    min_lr + coeff * (lr - min_lr)
}

#[cfg(test)]
mod tests {
    use super::lr_at;

    #[test]
    fn warmup_then_cosine_to_min() {
        let f = |s| lr_at(s, 6e-4, 6e-5, 10, 110);
        assert!((f(0) - 6e-5).abs() < 1e-12); // 1/10 of peak
        assert!((f(9) - 6e-4).abs() < 1e-12); // end of warmup = peak
        assert!((f(10) - 6e-4).abs() < 1e-12); // cosine starts at peak
        assert!((f(60) - (6e-5 + 0.5 * (6e-4 - 6e-5))).abs() < 1e-12); // halfway
        assert!((f(110) - 6e-5).abs() < 1e-12);
        assert!((f(500) - 6e-5).abs() < 1e-12);
        for s in 10..110 {
            assert!(f(s + 1) <= f(s), "monotone after warmup");
        }
    }
}
