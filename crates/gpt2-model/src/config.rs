//! GPT-2 model configuration: the size table, named presets, YAML loading, validation, and the
//! closed-form parameter and FLOP counts.
//!
//! The four GPT-2 sizes follow OpenAI's released checkpoints (and nanoGPT's `GPTConfig` table);
//! the parameter counts in the table below are the ones those checkpoints hold (tied embedding
//! counted once), see `/work/shared/GPT2-REFERENCE.md`.
//!
//! | preset       | n_layer | n_head | n_embd | block_size | parameters    |
//! |--------------|---------|--------|--------|------------|---------------|
//! | `gpt2-117m`  | 12      | 12     | 768    | 1024       | 124,439,808   |
//! | `gpt2-345m`  | 24      | 16     | 1024   | 1024       | 354,823,168   |
//! | `gpt2-762m`  | 36      | 20     | 1280   | 1024       | 774,030,080   |
//! | `gpt2-1542m` | 48      | 25     | 1600   | 1024       | 1,557,611,200 |
//! | `gpt2-10m`   | 6       | 5      | 160    | 1024       | 10,060,960    |
//! | `tiny-cpu`   | 4       | 4      | 128    | 128        | 7,242,624     |
//! | `tiny`       | 2       | 2      | 64     | 64         | 3,320,640     |

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// GPT-2's vocabulary: 50,000 BPE merges + 256 byte tokens + `<|endoftext|>`.
pub const GPT2_VOCAB_SIZE: usize = 50257;
/// The `<|endoftext|>` token id (the last one of the GPT-2 vocabulary).
pub const EOT_TOKEN: u32 = 50256;

/// Precision of the matmuls and attention. Parameters, LayerNorm, softmax of the loss and the
/// residual stream always stay f32 ("fp32 master weights"); this only chooses what the weights
/// and activations are cast to around each matmul and the attention op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// Everything in f32 (the only sensible choice on CPU: flex has no fast bf16).
    #[default]
    F32,
    /// bfloat16 matmuls/attention (GPUs with bf16 tensor cores).
    Bf16,
    /// float16 matmuls/attention (no loss scaling is done: prefer bf16 for training).
    F16,
}

/// Architecture hyper-parameters of a GPT-2 model (names as in HF's `GPT2Config` / nanoGPT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpt2Config {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Number of attention heads per block (`n_embd` must divide by it).
    pub n_head: usize,
    /// Width of the residual stream (C).
    pub n_embd: usize,
    /// Context length: the number of learned positions (HF `n_positions`; 1024 for GPT-2).
    pub block_size: usize,
    /// Vocabulary size (50257 for GPT-2's BPE; no padding is applied).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Dropout probability after the embeddings, on the attention and MLP residual branches.
    /// Reproductions pretrain with 0.0 (the default); HF's config.json says 0.1.
    /// Burn's fused attention op has no dropout, so there is no dropout on attention weights.
    #[serde(default)]
    pub dropout: f64,
    /// LayerNorm epsilon (1e-5 in OpenAI's code and HF).
    #[serde(default = "default_layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// Precision of matmuls and attention (params and LayerNorm/softmax/loss stay f32).
    #[serde(default)]
    pub compute_dtype: ComputeDtype,
    /// Rows of the LM head computed at once (training loss and evaluation NLL): at most
    /// `lm_head_chunk_rows × vocab_size` logits exist at any moment. 0 (the default): chosen from
    /// the device, see [`crate::device::lm_head_chunk_rows`].
    #[serde(default)]
    pub lm_head_chunk_rows: usize,
    /// Training attention on the GPU backends (CUDA, wgpu): flash attention kernels (`true`, the
    /// default: memory linear in `T`) or the composed form that stores the `[B, nh, T, T]`
    /// probabilities (`false`: a fallback should the kernels misbehave on some device). flex
    /// always uses its own kernels.
    #[serde(default = "default_true")]
    pub flash_attention: bool,
    /// What the backward recomputes instead of keeping from the forward (llm.c's `-r`).
    #[serde(default)]
    pub recompute: Recompute,
}

/// What a training step recomputes in the backward instead of keeping from the forward: less
/// memory for a little more arithmetic. The gradients are the same (to the bit in f32: the same
/// kernels run on the same kept values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// Keep everything the backward needs.
    #[default]
    None,
    /// Keep GELU's input, not its output (4 C per token and layer less; llm.c's `-r 1`).
    Gelu,
    /// Also recompute both LayerNorms' outputs from their inputs (2 C more less; llm.c's `-r 2`).
    GeluLayernorm,
}

impl std::fmt::Display for Recompute {
    /// The name the configuration uses (`none`, `gelu`, `gelu_layernorm`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Recompute::None => "none",
            Recompute::Gelu => "gelu",
            Recompute::GeluLayernorm => "gelu_layernorm",
        })
    }
}

fn default_true() -> bool {
    true
}

fn default_vocab_size() -> usize {
    GPT2_VOCAB_SIZE
}

fn default_layer_norm_epsilon() -> f64 {
    1e-5
}

/// Names of the built-in presets, in size order.
pub const PRESET_NAMES: [&str; 7] = [
    "tiny",
    "tiny-cpu",
    "gpt2-10m",
    "gpt2-117m",
    "gpt2-345m",
    "gpt2-762m",
    "gpt2-1542m",
];

impl Gpt2Config {
    /// A config with GPT-2's defaults (vocab 50257, dropout 0, eps 1e-5, f32 compute).
    pub fn new(n_layer: usize, n_head: usize, n_embd: usize, block_size: usize) -> Self {
        Self {
            n_layer,
            n_head,
            n_embd,
            block_size,
            vocab_size: GPT2_VOCAB_SIZE,
            dropout: 0.0,
            layer_norm_epsilon: default_layer_norm_epsilon(),
            compute_dtype: ComputeDtype::F32,
            lm_head_chunk_rows: 0,
            flash_attention: true,
            recompute: Recompute::None,
        }
    }

    /// Returns a named preset (see [`PRESET_NAMES`] and the table in the module docs).
    pub fn preset(name: &str) -> Result<Self> {
        let config = match name {
            // Unit tests and smoke runs: builds and steps in well under a second.
            "tiny" => Self::new(2, 2, 64, 64),
            // The CPU demo: trains visibly in minutes on 2 cores; head dim 32.
            "tiny-cpu" => Self::new(4, 4, 128, 128),
            // ~10M parameters for benchmarks; 8.0M of them are the 50257 x 160 embedding.
            "gpt2-10m" => Self::new(6, 5, 160, 1024),
            "gpt2-117m" => Self::new(12, 12, 768, 1024),
            "gpt2-345m" => Self::new(24, 16, 1024, 1024),
            "gpt2-762m" => Self::new(36, 20, 1280, 1024),
            "gpt2-1542m" => Self::new(48, 25, 1600, 1024),
            _ => {
                return Err(ModelError::UnknownPreset {
                    name: name.to_string(),
                    known: PRESET_NAMES.join(", "),
                })
            }
        };
        Ok(config)
    }

    /// Reads a YAML config file (unknown keys are an error) and validates it.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: Self = serde_yaml::from_str(&text).map_err(|source| ModelError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// A preset name, or else a path to a YAML file.
    pub fn from_name_or_path(name_or_path: &str) -> Result<Self> {
        if PRESET_NAMES.contains(&name_or_path) {
            Self::preset(name_or_path)
        } else {
            Self::from_yaml_file(name_or_path)
        }
    }

    /// Checks every constraint and reports all violations together.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` needs Rust 1.87; MSRV is 1.85
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.n_layer == 0 {
            problems.push("n_layer must be > 0".to_string());
        }
        if self.n_head == 0 {
            problems.push("n_head must be > 0".to_string());
        }
        if self.n_embd == 0 {
            problems.push("n_embd must be > 0".to_string());
        }
        if self.n_head > 0 && self.n_embd % self.n_head != 0 {
            problems.push(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.block_size == 0 {
            problems.push("block_size (context length) must be > 0".to_string());
        }
        if self.vocab_size == 0 {
            problems.push("vocab_size must be > 0".to_string());
        }
        if self.vocab_size > i32::MAX as usize {
            problems.push(format!(
                "vocab_size ({}) exceeds i32 range",
                self.vocab_size
            ));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            problems.push(format!("dropout ({}) must be in [0, 1)", self.dropout));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            problems.push(format!(
                "layer_norm_epsilon ({}) must be finite and > 0",
                self.layer_norm_epsilon
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::InvalidConfig { problems })
        }
    }

    /// Width of one attention head (`n_embd / n_head`).
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Exact number of parameters, the tied wte/LM-head counted once:
    /// `V·C + T·C + L·(12·C² + 13·C) + 2·C`.
    ///
    /// Per block: ln_1 and ln_2 `2·2C`, c_attn `C·3C + 3C`, attn.c_proj `C·C + C`,
    /// c_fc `C·4C + 4C`, mlp.c_proj `4C·C + C`; plus ln_f `2C`.
    pub fn num_params(&self) -> u64 {
        let (v, t, c, l) = (
            self.vocab_size as u64,
            self.block_size as u64,
            self.n_embd as u64,
            self.n_layer as u64,
        );
        v * c + t * c + l * (12 * c * c + 13 * c) + 2 * c
    }

    /// Parameters without the position embedding: the `N` of nanoGPT's `estimate_mfu`
    /// (`get_num_params(non_embedding=True)` subtracts wpe only, because wte is also the
    /// LM head and its matmul costs FLOPs).
    pub fn num_params_non_embedding(&self) -> u64 {
        self.num_params() - (self.block_size * self.n_embd) as u64
    }

    /// Training FLOPs per token at sequence length `seq_len` (forward + backward), nanoGPT's
    /// `estimate_mfu` / PaLM appendix B convention: `6·N + 12·n_layer·n_embd·T`, with
    /// `N = num_params_non_embedding()`. The second term is attention's QKᵀ and AV matmuls.
    pub fn flops_per_token(&self, seq_len: usize) -> u64 {
        6 * self.num_params_non_embedding() + 12 * (self.n_layer * self.n_embd * seq_len) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_released_checkpoints() {
        let expect = [
            ("gpt2-117m", 124_439_808u64),
            ("gpt2-345m", 354_823_168),
            ("gpt2-762m", 774_030_080),
            ("gpt2-1542m", 1_557_611_200),
        ];
        for (name, n) in expect {
            let c = Gpt2Config::preset(name).unwrap();
            c.validate().unwrap();
            assert_eq!(c.head_dim(), 64, "{name}");
            assert_eq!(c.num_params(), n, "{name}");
        }
    }

    #[test]
    fn small_presets_are_valid_and_sized_as_documented() {
        for name in PRESET_NAMES {
            Gpt2Config::preset(name).unwrap().validate().unwrap();
        }
        assert_eq!(
            Gpt2Config::preset("gpt2-10m").unwrap().num_params(),
            10_060_960
        );
        assert_eq!(
            Gpt2Config::preset("tiny-cpu").unwrap().num_params(),
            7_242_624
        );
        assert_eq!(Gpt2Config::preset("tiny").unwrap().num_params(), 3_320_640);
    }

    #[test]
    fn recompute_displays_the_name_the_config_reads() {
        for mode in [Recompute::None, Recompute::Gelu, Recompute::GeluLayernorm] {
            let parsed: Recompute = serde_yaml::from_str(&mode.to_string()).unwrap();
            assert_eq!(parsed, mode);
        }
    }

    #[test]
    fn unknown_preset_lists_known_ones() {
        let err = Gpt2Config::preset("gpt2-xxl").unwrap_err().to_string();
        assert!(
            err.contains("gpt2-xxl") && err.contains("gpt2-117m"),
            "{err}"
        );
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let mut c = Gpt2Config::new(0, 5, 64, 0);
        c.vocab_size = 0;
        c.dropout = 1.0;
        c.layer_norm_epsilon = 0.0;
        let ModelError::InvalidConfig { problems } = c.validate().unwrap_err() else {
            panic!("wrong variant")
        };
        assert_eq!(problems.len(), 6, "{problems:?}");
        for needle in [
            "n_layer",
            "divisible",
            "block_size",
            "vocab_size",
            "dropout",
            "epsilon",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:?}"
            );
        }
    }

    #[test]
    fn flops_follow_nanogpt_estimate_mfu() {
        let c = Gpt2Config::preset("gpt2-117m").unwrap();
        // nanoGPT: N = 124,439,808 - 1024*768 = 123,653,376; 6N + 12*12*768*1024.
        assert_eq!(c.num_params_non_embedding(), 123_653_376);
        assert_eq!(
            c.flops_per_token(1024),
            6 * 123_653_376 + 12 * 12 * 768 * 1024
        );
    }

    #[test]
    fn yaml_rejects_unknown_keys_and_applies_defaults() {
        let c: Gpt2Config =
            serde_yaml::from_str("n_layer: 2\nn_head: 2\nn_embd: 8\nblock_size: 4\n").unwrap();
        assert_eq!(c.vocab_size, 50257);
        assert_eq!(c.layer_norm_epsilon, 1e-5);
        assert_eq!(c.compute_dtype, ComputeDtype::F32);
        let bad = serde_yaml::from_str::<Gpt2Config>(
            "n_layer: 2\nn_head: 2\nn_embd: 8\nblock_size: 4\nn_heads: 3\n",
        );
        assert!(bad.is_err());
        let dt: Gpt2Config = serde_yaml::from_str(
            "n_layer: 2\nn_head: 2\nn_embd: 8\nblock_size: 4\ncompute_dtype: bf16\n",
        )
        .unwrap();
        assert_eq!(dt.compute_dtype, ComputeDtype::Bf16);
    }
}
