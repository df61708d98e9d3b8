//! `gpt2 eval`: held-out loss, perplexity and bits per byte of a checkpoint (ours or imported
//! HF GPT-2 weights) on token shards, or, with `--task`, one of the GPT-2 paper's zero-shot
//! evaluations on its test-set file. Flags are resolved here (which checkpoint, which shard
//! files); the measurements are `gpt2_train::eval::evaluate_shards` and `gpt2_train::tasks::run`
//! (see their module docs for exactly what is counted).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use gpt2_data::prepare::MANIFEST;
use gpt2_data::Manifest;
use gpt2_train::eval::{evaluate_shards, EvalOptions, EvalReport};
use gpt2_train::infer::load_checkpoint;
use gpt2_train::tasks::{Task, TaskOptions};

#[derive(Args)]
pub struct EvalArgs {
    /// A run directory (→ its newest complete checkpoint), a checkpoint directory
    /// (`run/checkpoints/step_NNNNNNNN`), or an HF GPT-2 model directory / `.safetensors` file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Shards to evaluate: a directory with manifest.json (its `--split` shards), a manifest.json
    /// path, `.bin` files, or a quoted glob of `.bin` files (wildcards `*`/`?` in the file name
    /// only). Repeatable; several values may follow one flag.
    #[arg(long, num_args = 1.., required_unless_present = "task", conflicts_with = "task")]
    pub shards: Vec<String>,
    /// A zero-shot task instead of shards: `lambada` (lm-eval's lambada_openai: acc, ppl),
    /// `hellaswag` (llm.c's scoring: acc, acc_norm), `wikitext` (lm-eval's word perplexity,
    /// byte perplexity, bits per byte) or `ptb` (word and token perplexity), on `--data`.
    #[arg(long, requires = "data", value_parser = ["lambada", "hellaswag", "wikitext", "ptb"])]
    pub task: Option<String>,
    /// The task's test-set file: OpenAI's lambada_test.jsonl; HellaSwag as rowanz's jsonl or
    /// llama.cpp's 6-line text (`.bz2` is read as is); WikiText's wiki.test.raw; PTB's
    /// ptb.test.txt. Nothing is downloaded.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// `--task`: score only the first N examples (documents for wikitext, lines for ptb).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Which split of a manifest to evaluate.
    #[arg(long, default_value = "val", value_parser = ["val", "train"])]
    pub split: String,
    /// Stop after this many predicted tokens over all shards (default: every token). The last,
    /// partially covered document's bytes are pro-rated by tokens for bits per byte.
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Window length in tokens (default: the model's context, block_size).
    #[arg(long)]
    pub context: Option<usize>,
    /// Window step (default: the context). With a smaller stride, each window after the first
    /// scores only its last `stride` tokens, so every token sees more context (slower). For
    /// `--task wikitext|ptb`: overlapping windows instead of lm-eval's rolling ones.
    #[arg(long)]
    pub stride: Option<usize>,
    /// Windows (shards) or sequences (`--task`, default 32) per forward pass. The LM head runs in
    /// row chunks, so the logits never exceed one chunk whatever the batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Also write the report (totals and per-shard table) as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Device: `cpu` (default), `cuda` or `wgpu` (Vulkan/Metal/DX12), each only in a binary
    /// built with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `gpt2 eval`: resolve checkpoint and shards, evaluate, print the table, write JSON.
pub fn run(a: EvalArgs) -> Result<()> {
    if let Some(task) = &a.task {
        return run_task(&a, task);
    }
    let shards = resolve_shards(&a.shards, &a.split)?;
    let device = gpt2_train::infer::inference_device(&a.device)?;
    let (model, from) = load_checkpoint(&a.checkpoint, &device)?;
    if !a.quiet {
        let c = model.config();
        eprintln!(
            "gpt2 eval: {} ({} layers, C = {}, context {}) on {} shard(s)",
            from.display(),
            c.n_layer,
            c.n_embd,
            c.block_size,
            shards.len()
        );
    }
    let opts = EvalOptions {
        context: a.context,
        stride: a.stride,
        batch: a.batch.unwrap_or(4),
        max_tokens: a.max_tokens,
    };
    let report = evaluate_shards(&model, &shards, &opts, !a.quiet)?;
    print_report(&report);
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report).context("serialising the report")? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `--task`: load the checkpoint, score the task's file, print its metrics, write JSON.
fn run_task(a: &EvalArgs, task: &str) -> Result<()> {
    let task = Task::parse(task).map_err(anyhow::Error::msg)?;
    let data = a.data.as_deref().context("--task needs --data FILE")?;
    let device = gpt2_train::infer::inference_device(&a.device)?;
    let (model, from) = load_checkpoint(&a.checkpoint, &device)?;
    if !a.quiet {
        eprintln!(
            "gpt2 eval: {} on {} ({})",
            from.display(),
            task.name(),
            data.display()
        );
    }
    let opts = TaskOptions {
        limit: a.limit,
        batch: a.batch.unwrap_or(32),
        stride: a.stride,
        progress: !a.quiet,
    };
    let report = gpt2_train::tasks::run(&model, task, data, &opts)?;
    let metrics: Vec<String> = report
        .metrics
        .pairs()
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    println!(
        "{}: {} | n {} | {:.1} s, {:.1} examples/s{}",
        task.name(),
        metrics.join(" | "),
        report.n,
        report.seconds,
        report.n as f64 / report.seconds.max(1e-9),
        report.stride.map_or(String::new(), |s| format!(
            " | overlapping windows, stride {s}"
        ))
    );
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report).context("serialising the report")? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_report(r: &EvalReport) {
    println!(
        "{:<40} {:>12} {:>9} {:>10} {:>7} {:>14}",
        "shard", "tokens", "nll", "ppl", "bpb", "bytes"
    );
    for s in &r.per_shard {
        let name = s.path.file_name().map_or_else(
            || s.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mark = if s.partial { " (partial)" } else { "" };
        println!(
            "{:<40} {:>12} {:>9.4} {:>10.3} {:>7.4} {:>14.0}{mark}",
            name,
            s.tokens,
            s.nll,
            s.nll.exp(),
            s.bpb,
            s.bytes
        );
    }
    println!(
        "{:<40} {:>12} {:>9.4} {:>10.3} {:>7.4} {:>14.0}",
        "total", r.tokens, r.nll, r.ppl, r.bpb, r.bytes
    );
    println!(
        "context {} stride {}; {:.1} s, {:.0} tokens/s{}",
        r.context,
        r.stride,
        r.seconds,
        r.tokens_per_sec,
        if r.partial {
            "; stopped by --max-tokens: the last document's bytes are pro-rated by tokens"
        } else {
            ""
        }
    );
}

/// `--shards` values → `.bin` paths, in order, without duplicates.
pub fn resolve_shards(values: &[String], split: &str) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for v in values {
        let p = Path::new(v);
        let found = if p.is_dir() {
            from_manifest(&p.join(MANIFEST), split)?
        } else if p.file_name().is_some_and(|n| n == MANIFEST) {
            from_manifest(p, split)?
        } else if v.contains(['*', '?']) {
            glob(p)?
        } else if p.is_file() {
            vec![p.to_path_buf()]
        } else {
            bail!("{v}: no such shard, directory or manifest");
        };
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

fn from_manifest(path: &Path, split: &str) -> Result<Vec<PathBuf>> {
    if !path.is_file() {
        bail!(
            "{}: not found (a shard directory must hold the manifest.json `gpt2 prepare` writes)",
            path.display()
        );
    }
    let m = Manifest::load(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let shards = m.shard_paths(dir, split);
    if shards.is_empty() {
        bail!("{}: no `{split}` shards in this manifest", path.display());
    }
    Ok(shards)
}

/// Files matching a pattern whose wildcards are in the file name only, sorted.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>> {
    let dir = pattern
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir.to_string_lossy().contains(['*', '?']) {
        bail!(
            "{}: wildcards are supported in the file name only",
            pattern.display()
        );
    }
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the directory", dir.display()))?;
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| wildcard(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .collect();
    out.sort();
    if out.is_empty() {
        bail!("{}: no file matches", pattern.display());
    }
    Ok(out)
}

/// `*` (any run) and `?` (one byte) matching.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"t_val_*.bin", b"t_val_000000.bin"));
        assert!(!wildcard(b"t_val_*.bin", b"t_val_000000.idx"));
        assert!(wildcard(b"*_??????.bin", b"x_train_000001.bin"));
        assert!(!wildcard(b"a?", b"a"));
    }
}
