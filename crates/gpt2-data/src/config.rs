//! `prepare`'s configuration: YAML (`configs/data/*.yaml`) or flags → [`PrepareConfig`] →
//! [`PrepareConfig::validate`], which reports every problem at once → [`PreparePlan`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::readers::{expand_inputs, Format};
use crate::OnError;

/// What to do with bytes that are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Utf8Policy {
    /// Replace invalid sequences with U+FFFD and keep the document.
    #[default]
    Repair,
    /// Drop the document (counted as `invalid_utf8`).
    Drop,
}

/// Deduplication settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Drop documents whose whitespace-normalised text was seen before.
    pub exact: bool,
    /// Drop near duplicates by MinHash LSH.
    pub near: bool,
    /// Jaccard similarity of word 5-gram sets above which documents are near duplicates
    /// (OpenWebText: 0.5).
    pub threshold: f64,
    /// MinHash permutations (datasketch's default is 128).
    pub num_perm: usize,
    /// Words per shingle (OpenWebText: 5).
    pub ngram: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            exact: true,
            near: true,
            threshold: 0.5,
            num_perm: 128,
            ngram: 5,
        }
    }
}

/// The YAML file, as written by a user. Every field has a default except the inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Dataset name, the shard file prefix: `{name}_{split}_{idx:06}.bin`.
    pub name: String,
    /// Input files or directories, read in this order (relative paths are from the current
    /// directory).
    pub inputs: Vec<PathBuf>,
    /// Output directory for shards and `manifest.json`.
    pub out_dir: PathBuf,
    /// JSON/Parquet field holding plain text.
    pub text_field: String,
    /// JSON field holding HTML (used when the text field is absent), run through extraction.
    pub html_field: String,
    /// Target tokens per shard (llm.c: 1e8). A shard closes before the document that would
    /// overflow it; documents are never split across shards.
    pub shard_tokens: u64,
    /// Fraction of documents held out for validation (nanoGPT: 0.0005).
    pub val_fraction: f64,
    /// The validation split gets at least this many tokens (so small corpora still get a usable
    /// held-out set), but never more than half the documents.
    pub min_val_tokens: u64,
    /// Documents shorter than this many tokens are dropped (OpenWebText: 128).
    pub min_tokens: u64,
    /// Documents whose URL host is (a subdomain of) one of these are dropped (WebText removed
    /// Wikipedia).
    pub drop_url_domains: Vec<String>,
    pub dedup: DedupConfig,
    pub invalid_utf8: Utf8Policy,
    /// Bad records and unreadable files: skip and count (default) or stop with an error.
    pub on_error: OnError,
    /// Worker threads (0: all cores). The output is byte-identical for any value.
    pub threads: usize,
    /// Keep the per-input work files after success (a rerun then needs no re-tokenising).
    pub keep_work: bool,
    /// Read at most this many documents (records) of each input — for quick trial runs and
    /// tests on a slice of a corpus. `None` (default): everything.
    pub limit_documents: Option<u64>,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        Self {
            name: "data".into(),
            inputs: Vec::new(),
            out_dir: PathBuf::from("data/shards"),
            text_field: "text".into(),
            html_field: "html".into(),
            shard_tokens: 100_000_000,
            val_fraction: 0.0005,
            min_val_tokens: 100_000,
            min_tokens: 128,
            drop_url_domains: vec!["wikipedia.org".into()],
            dedup: DedupConfig::default(),
            invalid_utf8: Utf8Policy::Repair,
            on_error: OnError::Skip,
            threads: 0,
            keep_work: false,
            limit_documents: None,
        }
    }
}

/// A validated configuration with its inputs expanded.
#[derive(Debug, Clone)]
pub struct PreparePlan {
    pub config: PrepareConfig,
    pub inputs: Vec<(PathBuf, Format)>,
}

impl PrepareConfig {
    /// Parse a YAML file (unknown keys are errors).
    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Config {
            path: path.into(),
            problems: vec![format!("cannot read: {e}")],
        })?;
        serde_yaml::from_str(&text).map_err(|e| DataError::Config {
            path: path.into(),
            problems: vec![e.to_string()],
        })
    }

    /// Check everything and expand the inputs; all problems are reported together. `origin`
    /// names the config file (or "command line") in the error.
    pub fn validate(self, origin: &Path) -> Result<PreparePlan> {
        let mut p = Vec::new();
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !name_ok {
            p.push(format!("name `{}` must be non-empty ASCII letters, digits, '-' or '.' (it prefixes file names; '_' separates the split)", self.name));
        }
        if self.inputs.is_empty() {
            p.push("inputs: at least one input file or directory is required".into());
        }
        if self.shard_tokens < 1024 || self.shard_tokens > i32::MAX as u64 {
            p.push(format!(
                "shard_tokens {} must be between 1024 and {} (the llm.c header stores it as int32)",
                self.shard_tokens,
                i32::MAX
            ));
        }
        if !(0.0..0.5).contains(&self.val_fraction) {
            p.push(format!(
                "val_fraction {} must be in [0, 0.5)",
                self.val_fraction
            ));
        }
        if self.text_field.is_empty() {
            p.push("text_field must not be empty".into());
        }
        let d = &self.dedup;
        if !(d.threshold > 0.0 && d.threshold < 1.0) {
            p.push(format!("dedup.threshold {} must be in (0, 1)", d.threshold));
        }
        if d.num_perm == 0 || d.num_perm > 1024 {
            p.push(format!("dedup.num_perm {} must be in 1..=1024", d.num_perm));
        }
        if d.ngram == 0 || d.ngram > 32 {
            p.push(format!("dedup.ngram {} must be in 1..=32", d.ngram));
        }
        if self.out_dir.as_os_str().is_empty() {
            p.push("out_dir must not be empty".into());
        }
        let inputs = expand_inputs(&self.inputs, &mut p);
        if p.is_empty() {
            Ok(PreparePlan {
                config: self,
                inputs,
            })
        } else {
            Err(DataError::Config {
                path: origin.to_path_buf(),
                problems: p,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_keys() {
        let e = serde_yaml::from_str::<PrepareConfig>("inputs: [a]\nshard_tokns: 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard_tokns"), "{e}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let cfg = PrepareConfig {
            name: "bad_name".into(),
            inputs: vec!["/definitely/not/here.jsonl".into()],
            shard_tokens: 10,
            val_fraction: 0.7,
            dedup: DedupConfig {
                threshold: 1.5,
                ..Default::default()
            },
            ..Default::default()
        };
        let e = cfg.validate(Path::new("x.yaml")).unwrap_err().to_string();
        for needle in [
            "x.yaml",
            "name `bad_name`",
            "shard_tokens 10",
            "val_fraction 0.7",
            "dedup.threshold 1.5",
            "/definitely/not/here.jsonl",
        ] {
            assert!(e.contains(needle), "missing {needle} in {e}");
        }
    }
}
