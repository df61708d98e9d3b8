//! The one error type of the `gpt2-model` crate.
//!
//! Every variant that comes from a file carries its path; every variant about a tensor names
//! the key and, where it applies, the expected and actual shape, so a damaged or mismatched
//! checkpoint can be diagnosed from the message alone.

use std::path::PathBuf;

/// Errors returned by the model crate (configs, weights files, generation arguments).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A YAML model config could not be parsed (unknown keys are rejected).
    #[error("cannot parse model config {path}: {source}")]
    Yaml {
        /// The YAML file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_yaml::Error,
    },

    /// A JSON file (HF `config.json`) could not be parsed or written.
    #[error("cannot parse/write JSON {path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// The config failed validation; every problem found is listed.
    #[error("invalid GPT-2 config: {}", problems.join("; "))]
    InvalidConfig {
        /// One human-readable line per problem.
        problems: Vec<String>,
    },

    /// A preset name that does not exist.
    #[error("unknown model preset {name:?} (known: {known})")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// Comma-separated list of known presets.
        known: String,
    },

    /// The safetensors container itself is damaged (bad header, truncated data, ...).
    #[error("damaged safetensors file {path}: {reason}")]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// What the safetensors parser reported.
        reason: String,
    },

    /// A tensor the model needs is missing from the weights file.
    #[error("{path}: missing tensor {key:?}")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The key looked for (without the optional `transformer.` prefix).
        key: String,
    },

    /// A tensor in the weights file is not one the importer knows.
    #[error("{path}: unexpected tensor {key:?} (not a GPT-2 parameter or known buffer)")]
    UnexpectedTensor {
        /// The weights file.
        path: PathBuf,
        /// The key found.
        key: String,
    },

    /// A tensor has the wrong shape for the configured model.
    #[error("{path}: tensor {key:?} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        actual: Vec<usize>,
    },

    /// A tensor has a dtype the importer cannot convert to f32.
    #[error("{path}: tensor {key:?} has unsupported dtype {dtype} (expected F32, F16 or BF16)")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The stored dtype.
        dtype: String,
    },

    /// A tensor holds NaN or infinite values.
    #[error("{path}: tensor {key:?} holds {count} non-finite values")]
    NonFinite {
        /// The weights file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// How many values are NaN or infinite.
        count: usize,
    },

    /// The model size could not be worked out from `config.json` or from tensor shapes.
    #[error("cannot infer the GPT-2 config from {path}: {reason}")]
    CannotInferConfig {
        /// The weights file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// Generation arguments are invalid; every problem found is listed.
    #[error("invalid generation request: {}", problems.join("; "))]
    InvalidGenerate {
        /// One human-readable line per problem.
        problems: Vec<String>,
    },
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
