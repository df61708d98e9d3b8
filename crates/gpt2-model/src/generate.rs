//! Autoregressive sampling with a KV cache.
//!
//! The prompt runs through the model once, filling the per-layer key/value cache; every new
//! token then costs one single-position forward (`Gpt2::forward_cached`). Sampling happens on
//! the CPU from the last position's logits, with the request's own seeded RNG (`StdRng`), so
//! the same seed and prompt give the same tokens whatever else used the device RNG.
//! Filters follow nanoGPT `sample.py` / HF: temperature, then top-k, then top-p (nucleus).
//! When the context is full (`block_size` positions), generation continues like nanoGPT's
//! crop: the cache is dropped and the last `block_size` tokens are re-encoded each step
//! (learned absolute positions cannot slide), so each step sees exactly what nanoGPT's
//! `idx[:, -block_size:]` would.

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::EOT_TOKEN;
use crate::error::{ModelError, Result};
use crate::model::{Gpt2, KvCache};

/// Sampling settings of one [`Gpt2::generate`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// How many tokens to produce at most.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p` (`None`: all).
    pub top_p: Option<f32>,
    /// Seed of the sampling RNG.
    pub seed: u64,
    /// Stop after emitting `<|endoftext|>` (50256); the EOT token is included in the output.
    pub stop_at_eot: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 1.0,
            top_k: Some(200),
            top_p: None,
            seed: 1337,
            stop_at_eot: true,
        }
    }
}

impl GenerateConfig {
    fn validate(&self, prompt: &[u32], vocab_size: usize) -> Result<()> {
        let mut problems = Vec::new();
        if prompt.is_empty() {
            problems.push("prompt is empty (start with <|endoftext|> = 50256 for none)".into());
        }
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab_size) {
            problems.push(format!("prompt token {bad} >= vocab_size {vocab_size}"));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            problems.push(format!("temperature {} must be >= 0", self.temperature));
        }
        if self.top_k == Some(0) {
            problems.push("top_k must be >= 1".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                problems.push(format!("top_p {p} must be in (0, 1]"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::InvalidGenerate { problems })
        }
    }
}

impl Gpt2 {
    /// Generates up to `config.max_new_tokens` tokens after `prompt` and returns only the new
    /// ones. Runs without autodiff (on `self.valid()`), batch size 1.
    pub fn generate(&self, prompt: &[u32], config: &GenerateConfig) -> Result<Vec<u32>> {
        self.generate_streaming(prompt, config, |_| true)
    }

    /// [`Gpt2::generate`], handing each new token to `on_token` as soon as it is sampled (for
    /// streaming output); `on_token` returning `false` stops early.
    pub fn generate_streaming(
        &self,
        prompt: &[u32],
        config: &GenerateConfig,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let vocab = self.config().vocab_size;
        let block = self.config().block_size;
        config.validate(prompt, vocab)?;
        let model = self.valid(); // no autodiff graph, dropout off
        let device = model.device();
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut cache = KvCache::new(model.h.len());
        let mut context: Vec<u32> = prompt.to_vec();
        let mut out = Vec::with_capacity(config.max_new_tokens);
        let mut pending: Vec<u32> = crop(&context, block).to_vec();

        for _ in 0..config.max_new_tokens {
            if cache.len + pending.len() > block {
                // Context full: re-encode the last block_size tokens from position 0.
                cache.clear();
                pending = crop(&context, block).to_vec();
            }
            let ids: Vec<i64> = pending.iter().map(|&t| t as i64).collect();
            let n = ids.len();
            let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
            let logits = model.forward_cached(tokens, &mut cache); // (1, n, V)
            let last = logits.narrow(1, n - 1, 1).reshape([vocab]); // (V)
            let row: Vec<f32> = last
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("logits were converted to f32");
            let next = sample(&row[..vocab], config, &mut rng);
            out.push(next);
            context.push(next);
            pending = vec![next];
            if !on_token(next) || (config.stop_at_eot && next == EOT_TOKEN) {
                break;
            }
        }
        Ok(out)
    }
}

/// The last `n` tokens of `tokens` (all of them when shorter).
fn crop(tokens: &[u32], n: usize) -> &[u32] {
    &tokens[tokens.len().saturating_sub(n)..]
}

/// Picks the next token from one row of logits (length = vocab size, no padded columns).
pub fn sample(logits: &[f32], config: &GenerateConfig, rng: &mut StdRng) -> u32 {
    if config.temperature == 0.0 {
        return argmax(logits);
    }
    // (id, scaled logit), most likely first; a stable sort keeps ties in id order.
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l / config.temperature))
        .collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let Some(k) = config.top_k {
        cand.truncate(k.max(1));
    }
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| ((l - max) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = config.top_p {
        // Keep the smallest prefix whose mass reaches top_p (always at least one token).
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        cand.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, p) in probs.iter().enumerate() {
        u -= p;
        if u < 0.0 {
            return cand[i].0;
        }
    }
    cand[probs.len() - 1].0
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> GenerateConfig {
        GenerateConfig {
            temperature,
            top_k,
            top_p,
            ..GenerateConfig::default()
        }
    }

    #[test]
    fn greedy_is_argmax() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            sample(&[0.1, 3.0, 2.9, -1.0], &cfg(0.0, None, None), &mut rng),
            1
        );
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_small_is_greedy() {
        let mut rng = StdRng::seed_from_u64(1);
        let logits = [0.5, 0.4, 2.0, 1.9];
        for _ in 0..50 {
            assert_eq!(sample(&logits, &cfg(1.0, Some(1), None), &mut rng), 2);
            assert_eq!(sample(&logits, &cfg(1.0, None, Some(1e-3)), &mut rng), 2);
        }
    }

    #[test]
    fn top_k_never_samples_outside_the_k_best() {
        let mut rng = StdRng::seed_from_u64(2);
        let logits = [0.0, 5.0, 4.0, 0.1, 4.5];
        for _ in 0..500 {
            let t = sample(&logits, &cfg(2.0, Some(3), None), &mut rng);
            assert!([1, 2, 4].contains(&t), "{t}");
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let logits = [0.0, 3f32.ln()];
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, &cfg(1.0, None, None), &mut rng) == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..32)
                .map(|_| sample(&logits, &cfg(1.0, None, None), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
    }

    #[test]
    fn invalid_requests_list_every_problem() {
        let c = GenerateConfig {
            temperature: -1.0,
            top_k: Some(0),
            top_p: Some(1.5),
            ..GenerateConfig::default()
        };
        let ModelError::InvalidGenerate { problems } = c.validate(&[], 10).unwrap_err() else {
            panic!()
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        let ModelError::InvalidGenerate { problems } = GenerateConfig::default()
            .validate(&[3, 10], 10)
            .unwrap_err()
        else {
            panic!()
        };
        assert!(problems[0].contains("10"), "{problems:?}");
    }
}
