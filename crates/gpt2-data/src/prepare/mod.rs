//! `gpt2 prepare`: documents → cleaned, deduplicated, tokenised, split, sharded.
//!
//! Two stages, so that an interrupted run resumes per input file and still produces the same
//! bytes as an uninterrupted one:
//!
//! 1. [`stage1`], per input file, in parallel over documents: read → extract HTML → drop
//!    blocked URLs → clean → tokenise (EOT first) → drop short documents → hash (exact key,
//!    split key, MinHash band keys). Results go to `out_dir/.work/part-NNNNN.*`, written
//!    atomically with a completion marker last; a rerun skips inputs whose marker matches.
//! 2. [`stage2`], serial and cheap: in input order, consult the dedup index, choose the
//!    validation documents by hash, and copy tokens into shards. `manifest.json` is written last.
//!
//! Every order-dependent decision happens in stage 2 in input order, and stage 1 collects
//! parallel results in order, so the output does not depend on the thread count.

mod stage1;
mod stage2;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{PrepareConfig, PreparePlan};
use crate::dedup::MinHashParams;
use crate::error::{DataError, IoContext, Result};
use crate::shard::ShardInfo;

/// Counters for the manifest and the end-of-run table. Every document read ends in exactly one
/// of the drop reasons or `kept`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Input files read completely.
    pub input_files: u64,
    /// Input files that failed to open or stopped early (skipped under `on_error: skip`).
    pub input_errors: u64,
    /// Documents (records) read.
    pub documents: u64,
    /// UTF-8 bytes of the raw text or HTML read.
    pub raw_bytes: u64,
    // Drop reasons.
    pub malformed: u64,
    pub invalid_utf8: u64,
    pub html_no_content: u64,
    pub blocked_url: u64,
    pub empty: u64,
    pub too_short: u64,
    pub exact_duplicate: u64,
    pub near_duplicate: u64,
    pub kept: u64,
    // Changes that did not drop the document.
    pub utf8_repaired: u64,
    pub html_extracted: u64,
    pub nfc_changed: u64,
    pub controls_removed: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        macro_rules! sum { ($($f:ident),*) => { $(self.$f += o.$f;)* } }
        sum!(
            input_files,
            input_errors,
            documents,
            raw_bytes,
            malformed,
            invalid_utf8,
            html_no_content,
            blocked_url,
            empty,
            too_short,
            exact_duplicate,
            near_duplicate,
            kept,
            utf8_repaired,
            html_extracted,
            nfc_changed,
            controls_removed
        );
    }

    /// Documents dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.invalid_utf8
            + self.html_no_content
            + self.blocked_url
            + self.empty
            + self.too_short
            + self.exact_duplicate
            + self.near_duplicate
    }

    /// (name, value) rows for printing.
    pub fn rows(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("input files", self.input_files),
            ("input errors (skipped)", self.input_errors),
            ("documents read", self.documents),
            ("raw bytes", self.raw_bytes),
            ("dropped: malformed record", self.malformed),
            ("dropped: invalid UTF-8", self.invalid_utf8),
            ("dropped: HTML without content", self.html_no_content),
            ("dropped: blocked URL (Wikipedia)", self.blocked_url),
            ("dropped: empty", self.empty),
            ("dropped: too short", self.too_short),
            ("dropped: exact duplicate", self.exact_duplicate),
            ("dropped: near duplicate", self.near_duplicate),
            ("kept", self.kept),
            ("changed: UTF-8 repaired", self.utf8_repaired),
            ("changed: HTML extracted", self.html_extracted),
            ("changed: NFC", self.nfc_changed),
            ("changed: control chars removed", self.controls_removed),
        ]
    }
}

/// One input file in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputInfo {
    pub path: String,
    pub bytes: u64,
    /// Documents that left stage 1 (before deduplication).
    pub documents: u64,
    pub tokens: u64,
}

/// `manifest.json`: written last; its presence means every listed shard is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub name: String,
    /// The resolved configuration (`threads` is recorded as 0: it cannot change the output).
    pub config: PrepareConfig,
    /// The band/row split derived from `dedup.threshold` and `dedup.num_perm`.
    pub minhash_bands: usize,
    pub minhash_rows: usize,
    /// Identifies config + inputs; a rerun with the same fingerprint has nothing to do.
    pub fingerprint: String,
    pub inputs: Vec<InputInfo>,
    pub shards: Vec<ShardInfo>,
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub train_documents: u64,
    pub val_documents: u64,
    pub counts: Counts,
    /// Memory held by the dedup index at the end, and per document checked.
    pub dedup_index_bytes: u64,
    pub dedup_index_bytes_per_document: f64,
}

pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_FORMAT: &str = "gpt2-token-shards";

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        serde_json::from_str(&text).map_err(|e| DataError::Shard {
            path: path.to_path_buf(),
            message: format!("not a valid manifest: {e}"),
            hint: "re-run `gpt2 prepare` to rewrite it".into(),
        })
    }

    /// Shards of one split, with full paths.
    pub fn shard_paths(&self, dir: &Path, split: &str) -> Vec<PathBuf> {
        self.shards
            .iter()
            .filter(|s| s.split == split)
            .map(|s| dir.join(&s.file))
            .collect()
    }
}

/// Options that do not change the output.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress output.
    pub quiet: bool,
    /// Stop (as if killed) after this many input files of stage 1 — for tests of resume.
    pub stop_after_inputs: Option<usize>,
}

pub(crate) fn minhash_params(cfg: &PrepareConfig) -> MinHashParams {
    MinHashParams::for_threshold(cfg.dedup.threshold, cfg.dedup.num_perm, cfg.dedup.ngram)
}

/// The work directory for stage 1's per-input results.
pub fn work_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(".work")
}

/// A small corpus in one call: the first `documents` documents of `input`, default settings
/// otherwise, at least `min_val_tokens` held out, no progress output. What tests, examples and
/// quick experiments need; real runs go through a YAML config and [`run_prepare`].
pub fn prepare_documents(
    name: &str,
    input: &std::path::Path,
    documents: u64,
    min_val_tokens: u64,
    out_dir: &std::path::Path,
) -> Result<Manifest> {
    let cfg = crate::PrepareConfig {
        name: name.into(),
        inputs: vec![input.to_path_buf()],
        limit_documents: Some(documents),
        out_dir: out_dir.to_path_buf(),
        min_val_tokens,
        ..Default::default()
    };
    let plan = cfg.validate(input)?; // problems are reported against the input file
    let opts = RunOptions {
        quiet: true,
        ..Default::default()
    };
    run_prepare(&plan, &opts)
}

/// Run both stages. Returns the manifest (also written to `out_dir/manifest.json`).
pub fn run_prepare(plan: &PreparePlan, opts: &RunOptions) -> Result<Manifest> {
    let cfg = &plan.config;
    crate::io::create_dir_all(&cfg.out_dir)?;
    let fingerprint = stage1::run_fingerprint(plan)?;
    let manifest_path = cfg.out_dir.join(MANIFEST);
    if let Ok(m) = Manifest::load(&manifest_path) {
        if m.fingerprint == fingerprint
            && m.shards.iter().all(|s| cfg.out_dir.join(&s.file).exists())
        {
            if !opts.quiet {
                eprintln!(
                    "{}: up to date (same config and inputs); nothing to do",
                    manifest_path.display()
                );
            }
            return Ok(m);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| DataError::Loader(format!("thread pool: {e}")))?;
    let t1 = std::time::Instant::now();
    let parts = pool.install(|| stage1::run(plan, opts))?;
    let stage1_secs = t1.elapsed().as_secs_f64();
    let Some(parts) = parts else {
        // Stopped early on request (tests): leave the work directory as a crash would.
        return Err(DataError::Loader(
            "stopped after the requested number of inputs".into(),
        ));
    };
    let t2 = std::time::Instant::now();
    let manifest = stage2::run(plan, &parts, fingerprint)?;
    if !opts.quiet {
        eprintln!("stage 1 (read, clean, tokenise, hash) {stage1_secs:.2} s; stage 2 (dedup, split, write shards) {:.2} s", t2.elapsed().as_secs_f64());
    }
    if !cfg.keep_work {
        let _ = std::fs::remove_dir_all(work_dir(&cfg.out_dir));
    }
    Ok(manifest)
}
