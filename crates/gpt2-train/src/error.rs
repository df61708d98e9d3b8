//! The trainer's error type: every variant names the file, key or step involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A YAML run config that does not parse or validate; lists every problem.
    #[error("{path}: invalid training configuration:\n  - {}", problems.join("\n  - "))]
    Config {
        path: PathBuf,
        problems: Vec<String>,
    },

    #[error(transparent)]
    Data(#[from] gpt2_data::DataError),

    #[error(transparent)]
    Model(#[from] gpt2_model::ModelError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be used.
    #[error("{path}: {message}\nHINT: {hint}")]
    Checkpoint {
        path: PathBuf,
        message: String,
        hint: String,
    },

    /// The requested device does not exist (or this binary cannot drive it).
    #[error("device {requested}: {message}\nHINT: {hint}")]
    Device {
        requested: String,
        message: String,
        hint: String,
    },

    /// A multi-process run that cannot start or continue (rendezvous, MPI, ranks disagreeing).
    #[error("distributed run: {message}\nHINT: {hint}")]
    Distributed { message: String, hint: String },

    /// An evaluation task's input file that does not hold what the task reads.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    EvalData {
        path: PathBuf,
        /// 1-based, where the problem is on one line.
        line: Option<usize>,
        message: String,
    },

    /// Loss or gradient norm became NaN/Inf under `nan_policy: stop`.
    #[error("step {step}: {what} is {value}; stopping (nan_policy: stop). The last checkpoint is intact.\nHINT: lower the learning rate, check the data, or set `nan_policy: skip` to skip such updates")]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
    },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| TrainError::Io {
            path: path.into(),
            source,
        })
    }
}
