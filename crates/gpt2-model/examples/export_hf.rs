//! Writes a freshly initialised model in HF layout plus the logits Burn computes for fixed ids,
//! so `tests/reference/check_export.py` can load it with `GPT2LMHeadModel.from_pretrained` and
//! compare.
//!
//! Usage: `cargo run -p gpt2-model --example export_hf -- OUT_DIR [PRESET] [SEED]`
//! Writes `OUT_DIR/model.safetensors`, `OUT_DIR/config.json`, `OUT_DIR/burn_logits.safetensors`.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use gpt2_model::{save_hf, Gpt2, Gpt2Config};
use safetensors::tensor::{Dtype, TensorView};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(
        args.first()
            .ok_or("usage: export_hf OUT_DIR [PRESET] [SEED]")?,
    );
    let preset = args.get(1).map_or("tiny", String::as_str);
    let seed: u64 = args.get(2).map_or(Ok(7), |s| s.parse())?;
    let config = Gpt2Config::from_name_or_path(preset)?;
    let device = Device::flex();
    let model = Gpt2::new(&config, &device, seed)?;
    save_hf(&model, &out)?;

    let (b, t) = (2, config.block_size.min(40));
    let ids: Vec<i64> = (0..b * t)
        .map(|i| ((i * 7919 + 13) % config.vocab_size) as i64)
        .collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, t]), &device);
    let logits: Vec<f32> = model
        .forward(tokens)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let id_bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let logit_bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "input_ids",
            TensorView::new(Dtype::I64, vec![b, t], &id_bytes)?,
        ),
        (
            "logits",
            TensorView::new(Dtype::F32, vec![b, t, config.vocab_size], &logit_bytes)?,
        ),
    ];
    safetensors::serialize_to_file(views, None, &out.join("burn_logits.safetensors"))?;
    println!("wrote {} ({preset}, seed {seed})", out.display());
    Ok(())
}
