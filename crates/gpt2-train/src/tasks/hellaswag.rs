//! HellaSwag, scored as llm.c's `dev/data/hellaswag.py` does (completion style): the context's
//! tokens then `" " + ending` for each of the 4 endings; the loss is summed over the ending's
//! tokens only. `acc`: the ending with the smallest summed loss is the label; `acc_norm`: the
//! smallest mean loss per token (ties go to the first, as `argmin`).
//!
//! Input, told apart by content: rowanz/hellaswag's jsonl (`ctx`, `endings`, `label`), or
//! llama.cpp's text format, 6 lines per task (context, label, 4 endings).

use std::path::Path;

use gpt2_data::tokenizer::{encode_ordinary, EOT};
use gpt2_model::Gpt2;

use super::score::Query;
use super::{bad, keep_last, nonblank_lines, score_all, Examples, Metrics, TaskOptions};
use crate::error::Result;

/// One task's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Summed loss (nats) of each ending's tokens.
    pub losses: [f64; 4],
    pub n_tokens: [usize; 4],
    /// argmin of `losses`, and of `losses / n_tokens`.
    pub pred: usize,
    pub pred_norm: usize,
    pub label: usize,
}

/// A task as read: the 1-based line it starts on, context, endings, label.
struct Raw {
    line: usize,
    ctx: String,
    endings: Vec<String>,
    label: usize,
}

fn parse(path: &Path, text: &str, limit: usize) -> Result<Vec<Raw>> {
    if text.trim_start().starts_with('{') {
        parse_jsonl(path, text, limit)
    } else {
        parse_six_lines(path, text, limit)
    }
}

fn parse_jsonl(path: &Path, text: &str, limit: usize) -> Result<Vec<Raw>> {
    const EXPECTED: &str =
        "expected {\"ctx\": \"...\", \"endings\": [4 strings], \"label\": 0-3} (rowanz/hellaswag jsonl)";
    let mut out = Vec::new();
    for (line, raw) in nonblank_lines(text).take(limit) {
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| bad(path, Some(line), format!("not JSON ({e}); {EXPECTED}")))?;
        let ctx = v.get("ctx").and_then(|c| c.as_str());
        let endings: Option<Vec<String>> = v.get("endings").and_then(|e| e.as_array()).map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        });
        let label = v.get("label").and_then(|l| {
            l.as_u64()
                .or_else(|| l.as_str().and_then(|s| s.trim().parse().ok()))
        });
        match (ctx, endings, label) {
            (Some(ctx), Some(endings), Some(label)) if endings.len() == 4 && label < 4 => {
                out.push(Raw {
                    line,
                    ctx: ctx.to_string(),
                    endings,
                    label: label as usize,
                })
            }
            (_, _, Some(label)) if label >= 4 => {
                return Err(bad(
                    path,
                    Some(line),
                    format!("label {label} is outside 0-3"),
                ))
            }
            _ => return Err(bad(path, Some(line), EXPECTED.into())),
        }
    }
    Ok(out)
}

// `%` over `is_multiple_of`: rust-version 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn parse_six_lines(path: &Path, text: &str, limit: usize) -> Result<Vec<Raw>> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    if lines.len() % 6 != 0 {
        return Err(bad(
            path,
            Some(lines.len()),
            format!(
                "{} lines, not a multiple of 6: expected llama.cpp's HellaSwag text format (context, \
                 label 0-3, then 4 endings, per task) or rowanz/hellaswag jsonl",
                lines.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (k, task) in lines.chunks(6).enumerate().take(limit) {
        let line = 6 * k + 1;
        let label: usize = task[1].trim().parse().map_err(|_| {
            bad(
                path,
                Some(line + 1),
                format!(
                    "`{}` is not a label 0-3 (line 2 of a 6-line task)",
                    task[1].trim()
                ),
            )
        })?;
        if label >= 4 {
            return Err(bad(
                path,
                Some(line + 1),
                format!("label {label} is outside 0-3"),
            ));
        }
        out.push(Raw {
            line,
            ctx: task[0].to_string(),
            endings: task[2..6].iter().map(|s| s.to_string()).collect(),
            label,
        });
    }
    Ok(out)
}

pub(super) fn run(
    model: &Gpt2,
    path: &Path,
    text: &str,
    opts: &TaskOptions,
) -> Result<(usize, Metrics, Examples)> {
    let context = model.config().block_size;
    let tasks = parse(path, text, opts.limit.unwrap_or(usize::MAX))?;
    if tasks.is_empty() && opts.limit != Some(0) {
        return Err(bad(path, None, "no tasks in the file".into()));
    }
    let mut queries = Vec::with_capacity(4 * tasks.len());
    let mut counts = Vec::with_capacity(tasks.len());
    for t in &tasks {
        let ctx_ids = if t.ctx.is_empty() {
            vec![EOT]
        } else {
            encode_ordinary(&t.ctx)
        };
        let mut n = [0usize; 4];
        for (i, ending) in t.endings.iter().enumerate() {
            let end_ids = encode_ordinary(&format!(" {ending}"));
            n[i] = end_ids.len();
            let mut row = ctx_ids.clone();
            row.extend_from_slice(&end_ids);
            let row = keep_last(row, context, end_ids.len(), path, t.line)?;
            queries.push(Query {
                input: row[..row.len() - 1].to_vec(),
                first: row.len() - end_ids.len() - 1,
                targets: end_ids,
            });
        }
        counts.push(n);
    }
    let scores = score_all(model, &queries, opts, "hellaswag")?;
    let examples: Vec<Example> = tasks
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(k, (t, n_tokens))| {
            let losses: [f64; 4] =
                std::array::from_fn(|i| scores[4 * k + i].iter().map(|s| s.nll).sum());
            let mean: [f64; 4] = std::array::from_fn(|i| losses[i] / n_tokens[i].max(1) as f64);
            Example {
                losses,
                n_tokens,
                pred: argmin(&losses),
                pred_norm: argmin(&mean),
                label: t.label,
            }
        })
        .collect();
    let n = examples.len();
    let hits = |f: fn(&Example) -> bool| examples.iter().filter(|e| f(e)).count() as f64 / n as f64;
    Ok((
        n,
        Metrics::Hellaswag {
            acc: hits(|e| e.pred == e.label),
            acc_norm: hits(|e| e.pred_norm == e.label),
        },
        Examples::Hellaswag(examples),
    ))
}

/// The index of the smallest value, the first on ties (torch's `argmin`).
fn argmin(xs: &[f64; 4]) -> usize {
    (1..4).fold(0, |best, i| if xs[i] < xs[best] { i } else { best })
}
