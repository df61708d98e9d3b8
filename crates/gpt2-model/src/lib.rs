//! GPT-2 in Burn 0.22: config and presets, the model (nanoGPT reading order), init, parameter
//! and FLOP counts, KV-cache generation, and HF safetensors import/export.
//!
//! Backends are chosen by device (`Device::flex()` on CPU, `.autodiff()` for training); the
//! model code has no backend type parameter.

pub mod config;
pub mod error;
pub mod model;

pub use config::{ComputeDtype, Gpt2Config, EOT_TOKEN, GPT2_VOCAB_SIZE, PRESET_NAMES};
pub use error::{ModelError, Result};
pub use model::{cross_entropy, Block, CausalSelfAttention, Gpt2, KvCache, LayerKv, Mlp};
pub mod generate;
pub mod hf;

pub use generate::GenerateConfig;
pub use hf::{load_hf, load_hf_with_config, read_hf_config, save_hf};
