//! `gpt2 prepare`: YAML and/or flags → [`PrepareConfig`] → validated plan → [`run_prepare`].

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use gpt2_data::config::Utf8Policy;
use gpt2_data::{run_prepare, PrepareConfig, RunOptions};

use crate::urls::ErrorPolicy;

/// Flags override the config file's values; without `--config`, the defaults apply.
#[derive(Args)]
pub struct PrepareArgs {
    /// YAML config (see configs/data/). Unknown keys are errors.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Input file or directory (JSON lines [.gz/.zst/.xz/.bz2], .parquet, .txt, .html);
    /// repeatable; replaces the config's inputs.
    #[arg(long = "input", short = 'i')]
    inputs: Vec<PathBuf>,
    /// Output directory for shards and manifest.json.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Dataset name, the shard prefix (`{name}_{split}_{idx:06}.bin`).
    #[arg(long)]
    name: Option<String>,
    /// Worker threads (0 = all cores); the output is identical for any value.
    #[arg(long)]
    threads: Option<usize>,
    /// Target tokens per shard (default 1e8).
    #[arg(long)]
    shard_tokens: Option<u64>,
    /// Fraction of documents held out for validation (default 0.0005).
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Minimum validation tokens (default 100000; never more than half the documents).
    #[arg(long)]
    min_val_tokens: Option<u64>,
    /// Drop documents shorter than this many tokens (default 128).
    #[arg(long)]
    min_tokens: Option<u64>,
    /// Near-duplicate Jaccard threshold (default 0.5).
    #[arg(long)]
    dedup_threshold: Option<f64>,
    /// Disable MinHash near-duplicate removal (exact dedup stays on).
    #[arg(long)]
    no_near_dedup: bool,
    /// Invalid UTF-8: repair (U+FFFD) or drop the document.
    #[arg(long, value_parser = ["repair", "drop"])]
    invalid_utf8: Option<String>,
    /// Bad records and unreadable inputs: skip (count, warn) or fail.
    #[arg(long, value_enum)]
    on_error: Option<ErrorPolicy>,
    /// Read at most this many documents of each input (a quick trial on a slice).
    #[arg(long)]
    limit_documents: Option<u64>,
    /// Keep the per-input work files after success.
    #[arg(long)]
    keep_work: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: PrepareArgs) -> Result<()> {
    let (mut cfg, origin) = match &a.config {
        Some(p) => (PrepareConfig::from_yaml_file(p)?, p.clone()),
        None => (PrepareConfig::default(), PathBuf::from("command line")),
    };
    if !a.inputs.is_empty() {
        cfg.inputs = a.inputs.clone();
    }
    macro_rules! set { ($($f:ident => $g:ident),*) => { $(if let Some(v) = a.$f.clone() { cfg.$g = v; })* } }
    set!(out => out_dir, name => name, threads => threads, shard_tokens => shard_tokens, val_fraction => val_fraction, min_val_tokens => min_val_tokens, min_tokens => min_tokens);
    if a.limit_documents.is_some() {
        cfg.limit_documents = a.limit_documents;
    }
    if let Some(t) = a.dedup_threshold {
        cfg.dedup.threshold = t;
    }
    if a.no_near_dedup {
        cfg.dedup.near = false;
    }
    if let Some(p) = a.invalid_utf8.as_deref() {
        cfg.invalid_utf8 = if p == "drop" {
            Utf8Policy::Drop
        } else {
            Utf8Policy::Repair
        };
    }
    if let Some(p) = a.on_error {
        cfg.on_error = p.into();
    }
    cfg.keep_work |= a.keep_work;
    let plan = cfg.validate(&origin)?;
    print_plan(&plan.config, plan.inputs.len(), &origin);
    let start = std::time::Instant::now();
    let m = run_prepare(
        &plan,
        &RunOptions {
            quiet: a.quiet,
            ..Default::default()
        },
    )?;
    let secs = start.elapsed().as_secs_f64();
    let rows: Vec<(String, String)> = m
        .counts
        .rows()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::print_table("gpt2 prepare: documents", &rows);
    let mb = m.counts.raw_bytes as f64 / 1e6;
    let summary = vec![
        (
            "train".to_string(),
            format!("{} tokens, {} documents", m.train_tokens, m.train_documents),
        ),
        (
            "val".to_string(),
            format!("{} tokens, {} documents", m.val_tokens, m.val_documents),
        ),
        ("shards".to_string(), m.shards.len().to_string()),
        (
            "dedup index".to_string(),
            format!(
                "{} bytes ({:.1} bytes/document)",
                m.dedup_index_bytes, m.dedup_index_bytes_per_document
            ),
        ),
        (
            "time".to_string(),
            format!("{secs:.1} s ({:.1} MB/s of raw text)", mb / secs.max(1e-9)),
        ),
    ];
    crate::print_table("gpt2 prepare: output", &summary);
    eprintln!(
        "wrote {}",
        Path::new(&plan.config.out_dir)
            .join(gpt2_data::prepare::MANIFEST)
            .display()
    );
    Ok(())
}

fn print_plan(cfg: &PrepareConfig, n_inputs: usize, origin: &Path) {
    let rows = vec![
        ("config".to_string(), origin.display().to_string()),
        ("inputs".to_string(), format!("{n_inputs} files")),
        ("out_dir".to_string(), cfg.out_dir.display().to_string()),
        ("name".to_string(), cfg.name.clone()),
        ("shard_tokens".to_string(), cfg.shard_tokens.to_string()),
        (
            "val".to_string(),
            format!(
                "fraction {} of documents, at least {} tokens",
                cfg.val_fraction, cfg.min_val_tokens
            ),
        ),
        ("min_tokens".to_string(), cfg.min_tokens.to_string()),
        (
            "dedup".to_string(),
            format!(
                "exact {}, near {} (Jaccard {}, {} perms, {}-grams)",
                cfg.dedup.exact,
                cfg.dedup.near,
                cfg.dedup.threshold,
                cfg.dedup.num_perm,
                cfg.dedup.ngram
            ),
        ),
        (
            "threads".to_string(),
            if cfg.threads == 0 {
                "all cores".into()
            } else {
                cfg.threads.to_string()
            },
        ),
    ];
    crate::print_table("gpt2 prepare: plan", &rows);
}
