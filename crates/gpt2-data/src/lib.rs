//! The GPT-2 WebText data pipeline, with no Burn dependency:
//!
//! - [`reddit`]: `gpt2 urls`, the Reddit karma filter over pushshift dumps (WebText's link
//!   selection) → a Parquet URL list for an external scraper.
//! - [`readers`] → [`clean`] → [`tokenizer`] → [`dedup`] → [`shard`], orchestrated by
//!   [`prepare`]: documents → llm.c-compatible token shards with a held-out split and manifest.
//! - [`loader`]: deterministic, resumable (B, T+1) batches for the trainer.
//! - [`hf_tokenizer`]: GPT-2's Hugging Face tokenizer files (`vocab.json`, `merges.txt`, …) made
//!   offline from the bundled ranks, for `gpt2 export`.

pub mod bpe;
pub mod clean;
pub mod config;
pub mod dedup;
pub mod error;
pub mod hf_tokenizer;
pub mod io;
pub mod loader;
pub mod prepare;
pub mod pretokenize;
pub mod progress;
pub mod readers;
pub mod reddit;
pub mod shard;
pub mod tokenizer;

pub use config::{PrepareConfig, PreparePlan};
pub use error::{DataError, Result};
pub use loader::{LoaderState, TokenLoader};
pub use prepare::{prepare_documents, run_prepare, Counts, Manifest, RunOptions};
pub use shard::ShardReader;

/// What to do with a bad record or an unreadable input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Count it, warn with its position, and go on.
    #[default]
    Skip,
    /// Stop with an error naming the file and line/row.
    Fail,
}
