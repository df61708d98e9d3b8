//! LAMBADA, as lm-eval-harness's `lambada_openai` scores it (its `lambada_openai.yaml`): the
//! context is the text up to its last space, the target `" " + last word`, each encoded on its
//! own; `acc` counts examples whose every target token is the greedy choice, `ppl` is
//! `exp(−mean over examples of the target's summed log-probability)`.
//!
//! An example longer than the model's context L is cut as lm-eval's `HFLM.loglikelihood` cuts
//! it: the input is `(context + target)[-(L+1):][:-1]`, the last L tokens *before the last target
//! token*, which is predicted, not fed. So a truncated example keeps L − len(target) + 1
//! context tokens, and a small-context model's perplexity equals lm-eval's
//! (tests/reference/eval/lmeval_lambada.json holds lm-eval's own outputs).
//!
//! Input: OpenAI's `lambada_test.jsonl`, one `{"text": ...}` per line.

use std::path::Path;

use gpt2_data::tokenizer::{encode_ordinary, EOT};
use gpt2_model::Gpt2;

use super::score::Query;
use super::{bad, nonblank_lines, score_all, Examples, Metrics, TaskOptions};
use crate::error::Result;

/// One example's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub context_ids: Vec<u32>,
    pub target_ids: Vec<u32>,
    /// The target's summed log-probability (nats, ≤ 0).
    pub logprob: f64,
    /// Every target token was the greedy choice.
    pub greedy: bool,
}

pub(super) fn run(
    model: &Gpt2,
    path: &Path,
    text: &str,
    opts: &TaskOptions,
) -> Result<(usize, Metrics, Examples)> {
    let context = model.config().block_size;
    let mut queries = Vec::new();
    let mut pairs = Vec::new();
    for (line, raw) in nonblank_lines(text).take(opts.limit.unwrap_or(usize::MAX)) {
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
            bad(
                path,
                Some(line),
                format!("not JSON ({e}); expected {{\"text\": \"...\"}}"),
            )
        })?;
        let passage = value.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
            bad(
                path,
                Some(line),
                "expected {\"text\": \"...\"} (a string field `text`)".into(),
            )
        })?;
        let (ctx, last) = match passage.rsplit_once(' ') {
            Some((c, w)) => (c, w),
            None => ("", passage),
        };
        // lm-eval conditions an empty context on <|endoftext|>.
        let ctx_ids = if ctx.is_empty() {
            vec![EOT]
        } else {
            encode_ordinary(ctx)
        };
        let tgt_ids = encode_ordinary(&format!(" {last}"));
        let mut seq = ctx_ids.clone();
        seq.extend_from_slice(&tgt_ids);
        if tgt_ids.len() > context {
            return Err(bad(
                path,
                Some(line),
                format!(
                    "the target has {} tokens; the model's context ({context}) must hold it",
                    tgt_ids.len()
                ),
            ));
        }
        // lm-eval's (ctx + tgt)[-(L+1):][:-1]: the last target token is predicted, never fed.
        let seq = &seq[seq.len().saturating_sub(context + 1)..];
        queries.push(Query {
            input: seq[..seq.len() - 1].to_vec(),
            first: seq.len() - tgt_ids.len() - 1,
            targets: tgt_ids.clone(),
        });
        pairs.push((ctx_ids, tgt_ids));
    }
    if queries.is_empty() && opts.limit != Some(0) {
        return Err(bad(
            path,
            None,
            "no examples: expected one {\"text\": ...} per line".into(),
        ));
    }
    let scores = score_all(model, &queries, opts, "lambada")?;
    let examples: Vec<Example> = pairs
        .into_iter()
        .zip(scores)
        .map(|((context_ids, target_ids), s)| Example {
            context_ids,
            target_ids,
            logprob: -s.iter().map(|t| t.nll).sum::<f64>(),
            greedy: s.iter().all(|t| t.greedy),
        })
        .collect();
    let n = examples.len();
    let acc = examples.iter().filter(|e| e.greedy).count() as f64 / n as f64;
    let mean_logprob = examples.iter().map(|e| e.logprob).sum::<f64>() / n as f64;
    Ok((
        n,
        Metrics::Lambada {
            acc,
            ppl: (-mean_logprob).exp(),
        },
        Examples::Lambada(examples),
    ))
}
