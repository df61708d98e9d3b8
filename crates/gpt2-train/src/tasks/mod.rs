//! The GPT-2 paper's zero-shot evaluations (`gpt2 eval --task`), scored as the harnesses people
//! compare with score them: LAMBADA as lm-eval-harness's `lambada_openai`, HellaSwag as llm.c's
//! `hellaswag.py`, WikiText as lm-eval-harness's `wikitext` (documents, detokeniser, rolling
//! windows, word perplexity), and Penn Treebank as one stream with the same windows.
//!
//! Forward only and batched (`score.rs`: sequences sorted by length, padded, the LM head run on
//! the scored positions only). Tests: `tests/eval_tasks.rs` against an independent Python scorer
//! on a small transformers GPT-2 (`tests/reference/eval/`), on committed inputs and on the real
//! test sets in `../shared/fixtures/evaldata` where present.

mod corpus;
mod hellaswag;
mod lambada;
pub mod score;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use gpt2_model::Gpt2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

pub use corpus::{wikitext_detokenize, wikitext_pages, wikitext_words};

/// Which evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Lambada,
    Hellaswag,
    Wikitext,
    Ptb,
}

impl Task {
    /// The task named `name`, or an error listing the four.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "lambada" => Ok(Task::Lambada),
            "hellaswag" => Ok(Task::Hellaswag),
            "wikitext" => Ok(Task::Wikitext),
            "ptb" => Ok(Task::Ptb),
            other => Err(format!(
                "unknown task `{other}`: use lambada, hellaswag, wikitext or ptb"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::Lambada => "lambada",
            Task::Hellaswag => "hellaswag",
            Task::Wikitext => "wikitext",
            Task::Ptb => "ptb",
        }
    }
}

/// How to run a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// The first `limit` examples (documents for wikitext, lines for ptb); more than the file
    /// holds is not an error.
    pub limit: Option<usize>,
    /// Sequences per forward pass.
    pub batch: usize,
    /// wikitext/ptb: overlapping windows advancing by this many tokens instead of lm-eval's
    /// rolling windows.
    pub stride: Option<usize>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            limit: None,
            batch: 32,
            stride: None,
            progress: false,
        }
    }
}

/// A task's result: the keys of the JSON report (`task`, `n`, `seconds`, then the task's own).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    pub task: Task,
    /// Examples scored (documents for wikitext, lines for ptb).
    pub n: usize,
    /// Reading, tokenising and scoring, not loading the model.
    pub seconds: f64,
    /// The task's metrics by name (`acc`, `ppl`, `acc_norm`, `word_perplexity`, …).
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Present when `--stride` replaced the rolling windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stride: Option<usize>,
    /// Per-example details, for tests and debugging (not in the JSON report).
    #[serde(skip)]
    pub examples: Examples,
}

/// The metrics of each task, named as lm-eval-harness and llm.c name them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Metrics {
    Lambada {
        acc: f64,
        ppl: f64,
    },
    Hellaswag {
        acc: f64,
        acc_norm: f64,
    },
    Wikitext {
        word_perplexity: f64,
        byte_perplexity: f64,
        bits_per_byte: f64,
        token_perplexity: f64,
    },
    Ptb {
        word_perplexity: f64,
        token_perplexity: f64,
    },
}

impl Metrics {
    /// `(name, value)` pairs, in report order.
    pub fn pairs(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Metrics::Lambada { acc, ppl } => vec![("acc", acc), ("ppl", ppl)],
            Metrics::Hellaswag { acc, acc_norm } => vec![("acc", acc), ("acc_norm", acc_norm)],
            Metrics::Wikitext {
                word_perplexity,
                byte_perplexity,
                bits_per_byte,
                token_perplexity,
            } => vec![
                ("word_perplexity", word_perplexity),
                ("byte_perplexity", byte_perplexity),
                ("bits_per_byte", bits_per_byte),
                ("token_perplexity", token_perplexity),
            ],
            Metrics::Ptb {
                word_perplexity,
                token_perplexity,
            } => vec![
                ("word_perplexity", word_perplexity),
                ("token_perplexity", token_perplexity),
            ],
        }
    }
}

/// Per-example details of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Examples {
    #[default]
    None,
    Lambada(Vec<lambada::Example>),
    Hellaswag(Vec<hellaswag::Example>),
    /// One entry per document (wikitext) or for the whole stream (ptb).
    Corpus(Vec<corpus::Document>),
}

pub use corpus::Document;
pub use hellaswag::Example as HellaswagExample;
pub use lambada::Example as LambadaExample;

/// Runs `task` on the file `data` with `model` (on the model's device, without autodiff).
pub fn run(model: &Gpt2, task: Task, data: &Path, opts: &TaskOptions) -> Result<TaskReport> {
    if opts.batch == 0 {
        return Err(bad(data, None, "--batch must be at least 1".into()));
    }
    if let Some(s) = opts.stride {
        let context = model.config().block_size;
        if !matches!(task, Task::Wikitext | Task::Ptb) {
            return Err(bad(
                data,
                None,
                "--stride applies to wikitext and ptb only".into(),
            ));
        }
        if s == 0 || s >= context {
            return Err(bad(
                data,
                None,
                format!("--stride {s} must be in 1..{context} (the model's context)"),
            ));
        }
    }
    let model = model.valid();
    let started = Instant::now();
    let text = read_text(data)?;
    let (n, metrics, examples) = match task {
        Task::Lambada => lambada::run(&model, data, &text, opts)?,
        Task::Hellaswag => hellaswag::run(&model, data, &text, opts)?,
        Task::Wikitext => corpus::run_wikitext(&model, &text, opts)?,
        Task::Ptb => corpus::run_ptb(&model, &text, opts)?,
    };
    Ok(TaskReport {
        task,
        n,
        seconds: started.elapsed().as_secs_f64(),
        metrics,
        stride: opts.stride,
        examples,
    })
}

/// The file as UTF-8 text, decompressed by content (`BZh` → bzip2, `1f 8b` → gzip), whatever its
/// name: the HellaSwag text set is distributed as `.txt.bz2`.
fn read_text(path: &Path) -> Result<String> {
    let raw = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decompressed = if raw.starts_with(b"BZh") {
        let mut out = Vec::new();
        bzip2::read::MultiBzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, None, format!("not a readable bzip2 stream: {e}")))?;
        out
    } else if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, None, format!("not a readable gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    String::from_utf8(decompressed).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        bad(path, Some(line), format!("invalid UTF-8 at byte {at}"))
    })
}

/// An input-file error naming the file, the line (1-based) and what was expected.
fn bad(path: &Path, line: Option<usize>, message: String) -> TrainError {
    TrainError::EvalData {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// The text of a task file's `(line number, line)` pairs, skipping blank lines.
fn nonblank_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// A progress bar over `total` sequences (on a terminal, when asked).
fn progress_bar(total: usize, opts: &TaskOptions, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} sequences {{per_sec}} ETA {{eta}}"
        ))
        .expect("static template")
        .progress_chars("=> "),
    );
    Some(bar)
}

/// Scores `queries` with a progress bar.
fn score_all(
    model: &Gpt2,
    queries: &[score::Query],
    opts: &TaskOptions,
    what: &str,
) -> Result<Vec<Vec<score::TokenScore>>> {
    let bar = progress_bar(queries.len(), opts, what);
    let out = score::score(model, queries, opts.batch, |done| {
        if let Some(bar) = &bar {
            bar.set_position(done as u64);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(out)
}

/// `ids` cut to their last `context` tokens, where the last `keep` must survive.
fn keep_last(
    ids: Vec<u32>,
    context: usize,
    keep: usize,
    path: &Path,
    line: usize,
) -> Result<Vec<u32>> {
    if keep >= context {
        return Err(bad(
            path,
            Some(line),
            format!(
                "the scored continuation has {keep} tokens; the model's context ({context}) \
                 must hold it and at least one token before it"
            ),
        ));
    }
    let cut = ids.len().saturating_sub(context);
    Ok(ids[cut..].to_vec())
}

/// Where a task's data is passed through training configs (`eval.tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub task: String,
    /// The test-set file.
    pub data: PathBuf,
    /// Score only the first `limit` examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}
