//! GPT-2 in Burn 0.22: config and presets, the model (nanoGPT reading order), init, parameter
//! and FLOP counts, KV-cache generation, and HF safetensors import/export.
//!
//! Backends are chosen by device (`Device::flex()` on CPU, `.autodiff()` for training); the
//! model code has no backend type parameter. Files, in the order data flows through them:
//! [`config`] (sizes, presets, YAML, validation, counts) → [`model`] (the network, init, loss;
//! its training attention and LM-head loss are ops with hand-written backward passes in `fused.rs`)
//! → [`params`] (weight-decay groups) → [`generate`] (KV-cache sampling) → [`hf`] (Hugging
//! Face weights in and out); [`error`] holds the crate's one error type.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use gpt2_model::{GenerateConfig, Gpt2, Gpt2Config};
//!
//! let config = Gpt2Config::preset("tiny")?; // 2 layers, 2 heads, C = 64, context 64
//! let device = Device::flex().autodiff(); // CPU, with gradients
//! let model = Gpt2::new(&config, &device, 1337)?;
//! let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![464i64, 3290, 318, 257], [1, 4]), &device);
//! let targets = Tensor::<2, Int>::from_data(TensorData::new(vec![3290i64, 318, 257, 922], [1, 4]), &device);
//! let loss = model.forward_loss(ids, targets); // mean cross-entropy, [1]
//! let grads = loss.backward();
//! assert!(model.wte.weight.val().grad(&grads).is_some());
//!
//! let new_tokens = model.generate(&[464, 3290], &GenerateConfig { max_new_tokens: 5, ..Default::default() })?;
//! assert!(new_tokens.len() <= 5);
//! # Ok::<(), gpt2_model::ModelError>(())
//! ```

// Links the aborting LLVM stand-ins into every CUDA build (see .cargo/config.toml); an unused
// dependency would otherwise be dropped by rustc before the link.
#[cfg(feature = "cuda")]
use gpt2_llvm_stubs as _;

pub mod config;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod cube;
pub mod device;
pub mod error;
mod flex;
mod fused;
pub mod generate;
pub mod hf;
mod kernels;
pub mod model;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod optim;
pub mod params;
mod row_kernels;
#[cfg(feature = "wgpu")]
#[doc(hidden)]
pub mod testing;
#[cfg(all(test, feature = "wgpu"))]
mod wgpu_tests;

pub use config::{ComputeDtype, Gpt2Config, Recompute, EOT_TOKEN, GPT2_VOCAB_SIZE, PRESET_NAMES};
pub use device::{device_memory, DeviceMemory};
pub use error::{ModelError, Result};
pub use generate::GenerateConfig;
pub use hf::{load_hf, load_hf_with_config, read_hf_config, save_hf};
pub use model::{
    causal_attention, cross_entropy, cross_entropy_reference, gelu_tanh, lm_head_loss, Block,
    CausalSelfAttention, Gpt2, KvCache, LayerKv, Mlp,
};
pub use optim::{adamw_step, AdamWHyper};
pub use params::DecayGroups;
