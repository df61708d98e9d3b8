//! Loading models for inference (eval, sample, export): which checkpoint (the device comes
//! from [`crate::device`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use gpt2_model::Gpt2;

use crate::error::{Result, TrainError};

pub use crate::device::{cuda_device, inference_device};

/// Resolves `--checkpoint`: a checkpoint directory of a run (must be complete: `DONE`), a run
/// directory (→ its newest complete checkpoint), an HF model directory (`model.safetensors` +
/// `config.json`), or a `.safetensors` file. Returns the path `load_hf` reads.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    let bad = |message: String, hint: &str| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
        hint: hint.into(),
    };
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(bad(
            "no such file or directory".into(),
            "pass a run directory, a checkpoint directory, or an HF model directory",
        ));
    }
    if path.join(crate::checkpoint::STATE).exists() && !path.join(crate::checkpoint::DONE).exists()
    {
        return Err(bad(
            "incomplete checkpoint (no DONE marker): it was being written when the run stopped"
                .into(),
            "use an earlier checkpoint, or the run directory to take the newest complete one",
        ));
    }
    if path.join(gpt2_model::hf::WEIGHTS_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if crate::checkpoint::checkpoints_dir(path).is_dir() {
        return crate::train::latest_checkpoint(path)?.ok_or_else(|| {
            bad(
                "the run directory has no complete checkpoint".into(),
                "train longer (checkpoint.interval), or pass a checkpoint directory",
            )
        });
    }
    Err(bad(
        format!(
            "neither a checkpoint (no {}) nor a run directory (no checkpoints/)",
            gpt2_model::hf::WEIGHTS_FILE
        ),
        "pass a run directory, a checkpoint directory, or an HF model directory",
    ))
}

/// Resolves `path` (see [`resolve_checkpoint`]) and loads the weights onto `device` (plain,
/// non-autodiff device for inference). Returns the model and the directory or file it came from.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<(Gpt2, PathBuf)> {
    let resolved = resolve_checkpoint(path)?;
    let model = gpt2_model::load_hf(&resolved, device)?;
    Ok((model, resolved))
}

/// Logits `[T, V]` of one sequence, flattened row-major (for comparing exported weights).
pub fn logits_of(model: &Gpt2, ids: &[u32]) -> Vec<f32> {
    let model = model.valid();
    let x: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(x, [1, ids.len()]), &model.device());
    model
        .forward(t)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}
