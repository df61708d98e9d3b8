//! `gpt2 export`: a checkpoint → a Hugging Face GPT-2 directory that
//! `transformers.GPT2LMHeadModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`
//! load: `model.safetensors` + `config.json` (`gpt2_model::save_hf`), the tokenizer files
//! (`vocab.json`, `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`, made offline
//! by `gpt2_data::hf_tokenizer`) and `generation_config.json`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use gpt2_data::tokenizer::{EOT, VOCAB_SIZE};
use gpt2_train::infer::load_checkpoint;

#[derive(Args)]
pub struct ExportArgs {
    /// A run directory (→ its newest complete checkpoint), a checkpoint directory, or an HF
    /// GPT-2 model directory / `.safetensors` file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output directory (created; files in it with the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `gpt2 export`: load the checkpoint, write the HF weights, config and tokenizer files.
pub fn run(a: ExportArgs) -> Result<()> {
    let device = gpt2_train::infer::inference_device("cpu")?;
    let (model, from) = load_checkpoint(&a.checkpoint, &device)?;
    let same = |x: &std::path::Path| x.canonicalize().ok();
    if from.is_dir() && same(&from).is_some() && same(&from) == same(&a.out) {
        bail!(
            "{}: --out is the checkpoint itself; choose another directory",
            a.out.display()
        );
    }
    gpt2_model::save_hf(&model, &a.out)?;
    let vocab = model.config().vocab_size;
    if vocab == VOCAB_SIZE {
        gpt2_data::hf_tokenizer::write_tokenizer_files(&a.out, model.config().block_size)?;
        let gen = serde_json::json!({ "_from_model_config": true, "bos_token_id": EOT, "eos_token_id": EOT });
        let path = a.out.join("generation_config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&gen)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    } else {
        eprintln!("warning: vocab_size {vocab} is not GPT-2's {VOCAB_SIZE}: wrote the weights and config only, no tokenizer files");
    }
    eprintln!("exported {} → {}", from.display(), a.out.display());
    Ok(())
}
