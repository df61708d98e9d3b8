//! Batched scoring of token sequences: each sequence is run once, forward only, and the NLL (and
//! whether the target was the greedy choice) is read at the positions asked for.
//!
//! Sequences are sorted by length, longest first, and right-padded to the longest of their batch:
//! attention is causal, so the padding after a sequence's last token changes none of its
//! predictions. Only the positions asked for go through the LM head (`Gpt2::forward_nll`), in
//! row chunks, so a batch never holds `[B, T, V]` logits.

use burn::tensor::{Int, Tensor, TensorData};
use gpt2_model::Gpt2;

use crate::error::{Result, TrainError};

/// One sequence to run and what to read from it: the target predicted at input position
/// `first + j` is `targets[j]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The model's input, at most the model's context.
    pub input: Vec<u32>,
    /// The input position predicting `targets[0]`.
    pub first: usize,
    pub targets: Vec<u32>,
}

/// The score of one target token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    /// `−ln p(target)`, nats.
    pub nll: f64,
    /// The target's logit is the row's largest (the greedy choice).
    pub greedy: bool,
}

/// The scores of each query's targets, in the queries' order. `batch` sequences per forward pass;
/// `progress` is called with the number of queries done so far.
pub fn score(
    model: &Gpt2,
    queries: &[Query],
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<TokenScore>>> {
    let context = model.config().block_size;
    for q in queries {
        assert!(
            !q.input.is_empty()
                && q.input.len() <= context
                && q.first + q.targets.len() <= q.input.len(),
            "a query must fit the context: {} inputs, targets at {}..{}",
            q.input.len(),
            q.first,
            q.first + q.targets.len()
        );
    }
    let mut order: Vec<usize> = (0..queries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(queries[i].input.len()));
    let mut out = vec![Vec::new(); queries.len()];
    let device = model.device();
    let mut done = 0;
    for group in order.chunks(batch.max(1)) {
        let t = queries[group[0]].input.len();
        let b = group.len();
        let mut x = vec![0i64; b * t];
        let (mut rows, mut targets) = (Vec::new(), Vec::new());
        for (r, &i) in group.iter().enumerate() {
            let q = &queries[i];
            for (k, &tok) in q.input.iter().enumerate() {
                x[r * t + k] = tok as i64;
            }
            for (j, &target) in q.targets.iter().enumerate() {
                rows.push((r * t + q.first + j) as i64);
                targets.push(target as i64);
            }
        }
        let m = rows.len();
        if m > 0 {
            let x = Tensor::<2, Int>::from_data(TensorData::new(x, [b, t]), &device);
            let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [m]), &device);
            let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [m]), &device);
            let scores: Vec<f32> = model
                .forward_nll(x, rows, targets)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| TrainError::Device {
                    requested: format!("{device:?}"),
                    message: format!("reading the scores back failed: {e:?}"),
                    hint: "check the device (driver, memory) and rerun".into(),
                })?;
            let mut k = 0;
            for &i in group {
                out[i] = (0..queries[i].targets.len())
                    .map(|j| {
                        let row = &scores[2 * (k + j)..2 * (k + j) + 2];
                        TokenScore {
                            nll: row[0] as f64,
                            greedy: row[1] <= 0.0,
                        }
                    })
                    .collect();
                k += queries[i].targets.len();
            }
        }
        done += b;
        progress(done);
    }
    Ok(out)
}

/// lm-eval-harness's rolling windows over a token stream (`get_rolling_token_windows` with the
/// `<|endoftext|>` prefix, `max_seq_len = context`, `context_len = 1`, then
/// `make_disjoint_window`): the first window is `[EOT] + tok[..L−1]` scoring `tok[..L]`; each next
/// one scores the following `k ≤ L` tokens with the `L` tokens before them as input, so every
/// token is scored exactly once and windows after the first see a full context.
pub fn rolling_windows(tok: &[u32], context: usize) -> Vec<Query> {
    let n = tok.len();
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let first = context.min(n);
    let mut input = vec![gpt2_data::tokenizer::EOT];
    input.extend_from_slice(&tok[..first - 1]);
    out.push(Query {
        input,
        first: 0,
        targets: tok[..first].to_vec(),
    });
    let mut p = first;
    while p < n {
        let k = (n - p).min(context);
        let e = p + k;
        // lm-eval's input tok[e − L − 1 .. e − 1], clipped at the start of the stream.
        let start = (e - 1).saturating_sub(context);
        let input = tok[start..e - 1].to_vec();
        out.push(Query {
            first: input.len() - k,
            input,
            targets: tok[p..e].to_vec(),
        });
        p = e;
    }
    out
}

/// Overlapping windows (`--stride S`, HF's "perplexity of fixed-length models" over
/// `s = [EOT] + tok`): windows of up to `L` inputs starting every `S` tokens, each scoring the
/// tokens not scored before, which therefore see at least `L − S` tokens of context.
pub fn strided_windows(tok: &[u32], context: usize, stride: usize) -> Vec<Query> {
    let n = tok.len();
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let mut s = Vec::with_capacity(n + 1);
    s.push(gpt2_data::tokenizer::EOT);
    s.extend_from_slice(tok);
    let (mut b, mut prev) = (0usize, 0usize);
    loop {
        let e = (b + context).min(n);
        out.push(Query {
            input: s[b..e].to_vec(),
            first: prev - b,
            targets: tok[prev..e].to_vec(),
        });
        prev = e;
        if e == n {
            break;
        }
        b += stride;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token scored once, each by the logit of the input position holding its predecessor
    /// (`EOT` for the first), no window longer than the context.
    fn check(tok: &[u32], windows: &[Query], context: usize) {
        let mut scored = Vec::new();
        for w in windows {
            assert!(w.input.len() <= context && w.first + w.targets.len() <= w.input.len());
            scored.extend_from_slice(&w.targets);
            // The input at the first scored position is the token before the first target.
            let before = w.input[w.first];
            let at = scored.len() - w.targets.len();
            let want = if at == 0 {
                gpt2_data::tokenizer::EOT
            } else {
                tok[at - 1]
            };
            assert_eq!(before, want);
        }
        assert_eq!(scored, tok);
    }

    #[test]
    fn rolling_windows_are_lm_evals() {
        let tok: Vec<u32> = (1..=10).collect();
        let w = rolling_windows(&tok, 4);
        check(&tok, &w, 4);
        // [EOT,1,2,3] → 1..4; [4,5,6,7]... lm-eval: e = 8, input tok[3..7] = 4,5,6,7 → 5..8.
        assert_eq!(w[0].input, vec![50256, 1, 2, 3]);
        assert_eq!((w[1].input.clone(), w[1].first), (vec![4, 5, 6, 7], 0));
        // The last partial window keeps a full context: e = 10, input tok[5..9] = 6..9, scores 9, 10.
        assert_eq!((w[2].input.clone(), w[2].first), (vec![6, 7, 8, 9], 2));
        assert_eq!(w[2].targets, vec![9, 10]);
        for n in [1, 3, 4, 5, 8, 9, 17] {
            let tok: Vec<u32> = (1..=n).collect();
            check(&tok, &rolling_windows(&tok, 4), 4);
        }
        assert!(rolling_windows(&[], 4).is_empty());
    }

    #[test]
    fn strided_windows_score_each_token_once_with_context() {
        for (n, l, s) in [(10, 4, 2), (9, 4, 3), (3, 8, 2), (17, 5, 1)] {
            let tok: Vec<u32> = (1..=n).collect();
            let w = strided_windows(&tok, l, s);
            check(&tok, &w, l);
            for x in &w[1..] {
                assert!(
                    x.first >= l - s,
                    "{n} {l} {s}: later windows see ≥ L − S tokens"
                );
            }
        }
    }
}
