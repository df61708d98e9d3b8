//! `init_from`: a run that starts from pretrained weights instead of a random init, as nanoGPT's
//! `init_from='gpt2-xl'` (fine-tuning, or continued pretraining on one's own text).
//!
//! The source is anything `gpt2 eval` accepts: a Hugging Face GPT-2 directory (`model.safetensors`
//! and `config.json`, e.g. written by `save_pretrained` or `gpt2 export`), one of our checkpoint
//! directories (complete: `DONE`), a run directory (its newest complete checkpoint), or a
//! `.safetensors` file. Only the weights are taken: the optimizer, the schedule and the data
//! position start fresh. The architecture comes from the source; a `model:` in the YAML must
//! describe the same one (it may still set `dropout`).
//!
//! Resolved at plan time, so a missing file, an incomplete checkpoint, a vocabulary that is not
//! GPT-2's or a conflicting `model:` is a plan error, and the plan records the weights' sha256.

use std::path::{Path, PathBuf};

use gpt2_model::{Gpt2Config, GPT2_VOCAB_SIZE};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Where a run's initial weights came from (recorded in the plan and every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitSource {
    /// `init_from` as written.
    pub from: PathBuf,
    /// What is loaded: a checkpoint or HF directory, or a `.safetensors` file.
    pub resolved: PathBuf,
    /// `checkpoint` (one of ours: it holds `state.json`) or `hf` (any other GPT-2 weights).
    pub kind: String,
    /// sha256 of the weights file (`model.safetensors`).
    pub sha256: String,
    /// Set when the run continues one of its own checkpoints instead (`--resume`): then the
    /// source is not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_for: Option<PathBuf>,
}

impl InitSource {
    /// The plan's line: the source, its kind and hash, and whether `--resume` overrides it.
    pub fn describe(&self) -> String {
        let base = format!(
            "{} ({}{}, sha256 {})",
            self.from.display(),
            if self.kind == "checkpoint" {
                "checkpoint"
            } else {
                "Hugging Face GPT-2"
            },
            if self.resolved == self.from {
                String::new()
            } else {
                format!(" {}", self.resolved.display())
            },
            self.sha256
        );
        match &self.ignored_for {
            Some(ckpt) => format!(
                "{base}; ignored: --resume continues this run's checkpoint {}",
                ckpt.display()
            ),
            None => format!("{base}; fresh optimizer, schedule and data position"),
        }
    }
}

/// Resolves `from` and reads its architecture; every problem is a message for the plan.
pub fn resolve(from: &Path) -> std::result::Result<(InitSource, Gpt2Config), String> {
    let resolved = crate::infer::resolve_checkpoint(from).map_err(|e| format!("init_from: {e}"))?;
    let config = gpt2_model::hf::source_config(&resolved).map_err(|e| {
        format!(
            "init_from: {e}\nHINT: point init_from at a GPT-2 model directory (model.safetensors + config.json), a checkpoint or a run directory"
        )
    })?;
    if config.vocab_size != GPT2_VOCAB_SIZE {
        return Err(format!(
            "init_from {}: its vocabulary has {} tokens; the shards hold GPT-2 BPE ids ({GPT2_VOCAB_SIZE} tokens), so the embedding rows would not match the tokens",
            resolved.display(),
            config.vocab_size
        ));
    }
    let weights = gpt2_model::hf::weights_file(&resolved);
    let sha256 = gpt2_data::shard::sha256_file(&weights).map_err(|e| format!("init_from: {e}"))?;
    let kind = if resolved.join(crate::checkpoint::STATE).is_file() {
        "checkpoint"
    } else {
        "hf"
    };
    Ok((
        InitSource {
            from: from.to_path_buf(),
            resolved,
            kind: kind.into(),
            sha256,
            ignored_for: None,
        },
        config,
    ))
}

/// Whether the YAML's `model:` describes the source's architecture: every field that shapes a
/// weight or the computation (not dropout, precision or the memory knobs, which a run may
/// choose). `Err` names both.
pub fn check_same_shape(
    yaml: &Gpt2Config,
    yaml_name: &str,
    source: &Gpt2Config,
    from: &Path,
) -> std::result::Result<(), String> {
    let shape = |c: &Gpt2Config| {
        (
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.block_size,
            c.vocab_size,
            c.layer_norm_epsilon,
        )
    };
    if shape(yaml) == shape(source) {
        return Ok(());
    }
    let show = |c: &Gpt2Config| {
        format!(
            "{} layers, {} heads, {} wide, context {}, vocab {}, LayerNorm eps {}",
            c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size, c.layer_norm_epsilon
        )
    };
    Err(format!(
        "model: {yaml_name} ({}) conflicts with init_from {} ({}): the shape comes from init_from, so remove `model:` or make it match",
        show(yaml),
        from.display(),
        show(source)
    ))
}

/// The weights a fresh run starts from: `init` loaded with the plan's architecture (dropout and
/// precision from the plan), or `None` for a random init.
pub fn load(
    init: Option<&InitSource>,
    model: &Gpt2Config,
    device: &burn::tensor::Device,
) -> Result<Option<gpt2_model::Gpt2>> {
    init.map(|s| {
        gpt2_model::load_hf_with_config(&s.resolved, Some(model.clone()), device)
            .map_err(Into::into)
    })
    .transpose()
}
