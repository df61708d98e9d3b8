//! The one error type of the data crate. Every variant names the file (and, where it has one,
//! the line or row) and most carry a hint saying what to do, in the llm.c `HINT:` habit.

use std::path::PathBuf;

/// Everything that can go wrong while filtering URLs, preparing shards or reading them back.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A record (JSON line, Parquet row) that cannot be used, with its position.
    #[error("{path}:{line}: {message}\nHINT: fix or remove the record, or pass `--on-error skip` (`on_error: skip` in a prepare config) to count and skip bad records")]
    BadRecord {
        path: PathBuf,
        /// 1-based line number (JSON lines) or 0-based row (Parquet).
        line: u64,
        message: String,
    },

    /// A whole input file that cannot be read (truncated stream, missing column, unknown format).
    #[error("{path}: {message}\nHINT: {hint}")]
    BadInput {
        path: PathBuf,
        message: String,
        hint: String,
    },

    /// A YAML configuration that does not parse or does not validate; lists every problem.
    #[error("{path}: invalid configuration:\n  - {}", problems.join("\n  - "))]
    Config {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// A token shard (or its index) that fails a check.
    #[error("{path}: {message}\nHINT: {hint}")]
    Shard {
        path: PathBuf,
        message: String,
        hint: String,
    },

    /// Parquet or Arrow failures while writing or reading columnar files.
    #[error("{path}: parquet: {message}")]
    Parquet { path: PathBuf, message: String },

    /// A token-loader request that cannot be met (too few tokens, bad rank).
    #[error("token loader: {0}")]
    Loader(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Attach a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| DataError::Io {
            path: path.into(),
            source,
        })
    }
}
