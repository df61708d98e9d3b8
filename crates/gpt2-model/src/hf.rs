//! Hugging Face interop: import GPT-2 weights from `model.safetensors` (+ `config.json`) and
//! export a directory that `transformers.GPT2LMHeadModel.from_pretrained` loads.
//!
//! Key mapping (HF ↔ ours): identical names, with HF LayerNorm `weight`/`bias` ↔ Burn
//! `gamma`/`beta`. HF's Conv1D stores weights as `[in, out]`, the layout of a Burn `Linear`
//! weight, so nothing is transposed. Keys may carry the `transformer.` prefix (files written by
//! `GPT2LMHeadModel.save_pretrained`) or not (hub checkpoints, `GPT2Model`). The non-parameter
//! buffers `h.{i}.attn.bias` / `h.{i}.attn.masked_bias` are skipped; `lm_head.weight` is skipped
//! after checking it equals `wte.weight` (the model ties them). Any other unknown key is an
//! error, as is a missing key, a wrong shape, a non-float dtype, or a NaN/inf value; each error
//! names the file and the key. The safetensors crate is used directly (no panicking loaders).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::config::{Gpt2Config, EOT_TOKEN};
use crate::error::{ModelError, Result};
use crate::model::{Block, Gpt2};

/// File name of the weights inside an HF model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the config inside an HF model directory.
pub const CONFIG_FILE: &str = "config.json";

/// The fields of HF's `GPT2Config` that define the architecture (others are ignored on read).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HfConfigIn {
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    n_positions: usize,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default)]
    activation_function: Option<String>,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default)]
    scale_attn_weights: Option<bool>,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: Option<bool>,
}

fn default_eps() -> f64 {
    1e-5
}

/// Locates weights and config: `path` is a directory holding `model.safetensors` (and maybe
/// `config.json`) or a `.safetensors` file (its directory is searched for `config.json`).
fn resolve(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() {
        (path.join(WEIGHTS_FILE), path.join(CONFIG_FILE))
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        (path.to_path_buf(), dir.join(CONFIG_FILE))
    }
}

/// Reads the architecture from an HF `config.json`.
pub fn read_hf_config(path: &Path) -> Result<Gpt2Config> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let hf: HfConfigIn = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    // Variants of HF's GPT2Config this model does not implement: refuse rather than load
    // weights into a model that would compute something else.
    let mut unsupported = Vec::new();
    if let Some(act) = hf.activation_function.as_deref() {
        if act != "gelu_new" && act != "gelu_pytorch_tanh" {
            unsupported.push(format!(
                "activation_function {act:?} is not tanh-GELU (gelu_new)"
            ));
        }
    }
    if let Some(inner) = hf.n_inner.filter(|&n| n != 4 * hf.n_embd) {
        unsupported.push(format!("n_inner {inner} != 4 * n_embd"));
    }
    if hf.scale_attn_weights == Some(false) {
        unsupported.push("scale_attn_weights = false".into());
    }
    if hf.scale_attn_by_inverse_layer_idx == Some(true) {
        unsupported.push("scale_attn_by_inverse_layer_idx = true".into());
    }
    if !unsupported.is_empty() {
        return Err(ModelError::CannotInferConfig {
            path: path.to_path_buf(),
            reason: format!("unsupported GPT-2 variant: {}", unsupported.join("; ")),
        });
    }
    let mut config = Gpt2Config::new(hf.n_layer, hf.n_head, hf.n_embd, hf.n_positions);
    config.vocab_size = hf.vocab_size;
    config.layer_norm_epsilon = hf.layer_norm_epsilon;
    config.validate()?;
    Ok(config)
}

/// The tensors of one file, keyed without the `transformer.` prefix.
struct Tensors<'a> {
    path: PathBuf,
    map: BTreeMap<String, TensorView<'a>>,
}

impl<'a> Tensors<'a> {
    fn new(path: &Path, st: &SafeTensors<'a>) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (name, view) in st.tensors() {
            let key = name
                .strip_prefix("transformer.")
                .unwrap_or(&name)
                .to_string();
            let parts: Vec<&str> = key.split('.').collect();
            let buffer = matches!(parts.as_slice(), ["h", _, "attn", "bias" | "masked_bias"]);
            if buffer {
                continue;
            }
            if map.insert(key.clone(), view).is_some() {
                // Both `wte.weight` and `transformer.wte.weight`: ambiguous.
                return Err(ModelError::UnexpectedTensor {
                    path: path.to_path_buf(),
                    key: name,
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    fn shape_of(&self, key: &str) -> Option<Vec<usize>> {
        self.map.get(key).map(|v| v.shape().to_vec())
    }

    /// Removes `key` and returns its values as f32, after checking shape, dtype and finiteness.
    fn take(&mut self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let view = self
            .map
            .remove(key)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                key: key.to_string(),
            })?;
        if view.shape() != expected {
            return Err(ModelError::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: self.path.clone(),
                    key: key.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(ModelError::NonFinite {
                path: self.path.clone(),
                key: key.to_string(),
                count: bad,
            });
        }
        Ok(values)
    }

    fn param<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Param<Tensor<D>>> {
        let values = self.take(key, &shape)?;
        let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), device);
        Ok(Param::from_tensor(tensor))
    }

    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, dev: &Device) -> Result<Linear> {
        Ok(Linear {
            weight: self.param(&format!("{prefix}.weight"), [d_in, d_out], dev)?,
            bias: Some(self.param(&format!("{prefix}.bias"), [d_out], dev)?),
        })
    }

    fn layer_norm(&mut self, prefix: &str, config: &Gpt2Config, dev: &Device) -> Result<LayerNorm> {
        let c = config.n_embd;
        let mut ln = LayerNormConfig::new(c)
            .with_epsilon(config.layer_norm_epsilon)
            .init(dev);
        ln.gamma = self.param(&format!("{prefix}.weight"), [c], dev)?;
        ln.beta = Some(self.param(&format!("{prefix}.bias"), [c], dev)?);
        Ok(ln)
    }
}

/// Works the architecture out from tensor shapes: vocab and C from `wte`, context from `wpe`,
/// depth from the highest `h.{i}`. The head count is not visible in any shape; GPT-2 always
/// uses 64-wide heads, so `n_head = n_embd / 64` (pass a config explicitly otherwise).
fn infer_config(t: &Tensors<'_>) -> Result<Gpt2Config> {
    let fail = |reason: String| ModelError::CannotInferConfig {
        path: t.path.clone(),
        reason,
    };
    let wte = t
        .shape_of("wte.weight")
        .ok_or_else(|| fail("no wte.weight".into()))?;
    let wpe = t
        .shape_of("wpe.weight")
        .ok_or_else(|| fail("no wpe.weight".into()))?;
    let (&[v, c], &[ctx, _]) = (wte.as_slice(), wpe.as_slice()) else {
        return Err(fail(format!("wte {wte:?} / wpe {wpe:?} are not 2-D")));
    };
    let n_layer = t
        .map
        .keys()
        .filter_map(|k| {
            k.strip_prefix("h.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |i| i + 1);
    if c % 64 != 0 {
        return Err(fail(format!(
            "n_embd {c} is not a multiple of 64; add a config.json with n_head"
        )));
    }
    let mut config = Gpt2Config::new(n_layer, c / 64, c, ctx);
    config.vocab_size = v;
    config.validate()?;
    Ok(config)
}

/// The architecture of an HF GPT-2 checkpoint without loading its weights: `config.json` beside
/// the weights when present, else inferred from the tensor shapes (as [`load_hf`] does).
pub fn source_config(path: impl AsRef<Path>) -> Result<Gpt2Config> {
    let (weights, config_path) = resolve(path.as_ref());
    if config_path.is_file() {
        return read_hf_config(&config_path);
    }
    let bytes = std::fs::read(&weights).map_err(|e| ModelError::io(&weights, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
        path: weights.clone(),
        reason: e.to_string(),
    })?;
    infer_config(&Tensors::new(&weights, &st)?)
}

/// The weights file of an HF checkpoint: `model.safetensors` in a directory, or the file given.
pub fn weights_file(path: impl AsRef<Path>) -> PathBuf {
    resolve(path.as_ref()).0
}

/// Imports an HF GPT-2 checkpoint. `path` is a model directory or a `.safetensors` file; the
/// architecture comes from `config.json` beside it when present, else from the tensor shapes.
pub fn load_hf(path: impl AsRef<Path>, device: &Device) -> Result<Gpt2> {
    load_hf_with_config(path, None, device)
}

/// Like [`load_hf`], with an explicit architecture (`None`: config.json or inferred).
/// Dropout and `compute_dtype` are taken from `config` when given, else 0.0 / f32.
pub fn load_hf_with_config(
    path: impl AsRef<Path>,
    config: Option<Gpt2Config>,
    device: &Device,
) -> Result<Gpt2> {
    let (weights, config_path) = resolve(path.as_ref());
    let bytes = std::fs::read(&weights).map_err(|e| ModelError::io(&weights, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
        path: weights.clone(),
        reason: e.to_string(),
    })?;
    let mut t = Tensors::new(&weights, &st)?;
    let config = match config {
        Some(c) => {
            c.validate()?;
            c
        }
        None if config_path.is_file() => read_hf_config(&config_path)?,
        None => infer_config(&t)?,
    };
    let (v, ctx, c) = (config.vocab_size, config.block_size, config.n_embd);
    let wte = Embedding {
        weight: t.param("wte.weight", [v, c], device)?,
    };
    let wpe = Embedding {
        weight: t.param("wpe.weight", [ctx, c], device)?,
    };
    let mut h = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let p = format!("h.{i}");
        let ln_1 = t.layer_norm(&format!("{p}.ln_1"), &config, device)?;
        let c_attn = t.linear(&format!("{p}.attn.c_attn"), c, 3 * c, device)?;
        let attn_proj = t.linear(&format!("{p}.attn.c_proj"), c, c, device)?;
        let ln_2 = t.layer_norm(&format!("{p}.ln_2"), &config, device)?;
        let c_fc = t.linear(&format!("{p}.mlp.c_fc"), c, 4 * c, device)?;
        let mlp_proj = t.linear(&format!("{p}.mlp.c_proj"), 4 * c, c, device)?;
        h.push(Block::from_parts(
            &config, ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj,
        ));
    }
    let ln_f = t.layer_norm("ln_f", &config, device)?;
    check_tied_head(&mut t, &wte, v, c)?;
    if let Some(key) = t.map.keys().next() {
        return Err(ModelError::UnexpectedTensor {
            path: weights,
            key: key.clone(),
        });
    }
    Ok(Gpt2::from_parts(config, wte, wpe, h, ln_f))
}

/// An `lm_head.weight` must be the tied `wte.weight`; anything else would be silently lost.
fn check_tied_head(t: &mut Tensors<'_>, wte: &Embedding, v: usize, c: usize) -> Result<()> {
    if !t.map.contains_key("lm_head.weight") {
        return Ok(());
    }
    let head = t.take("lm_head.weight", &[v, c])?;
    let wte: Vec<f32> = wte
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    if head != wte {
        return Err(ModelError::CannotInferConfig {
            path: t.path.clone(),
            reason: "lm_head.weight differs from wte.weight (untied head is not supported)".into(),
        });
    }
    Ok(())
}

/// The HF `config.json` we write: what `GPT2LMHeadModel.from_pretrained` needs.
#[derive(Debug, Serialize)]
struct HfConfigOut {
    model_type: &'static str,
    architectures: [&'static str; 1],
    activation_function: &'static str,
    vocab_size: usize,
    n_positions: usize,
    n_ctx: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_inner: Option<usize>,
    layer_norm_epsilon: f64,
    initializer_range: f64,
    resid_pdrop: f64,
    embd_pdrop: f64,
    attn_pdrop: f64,
    bos_token_id: u32,
    eos_token_id: u32,
    tie_word_embeddings: bool,
    scale_attn_weights: bool,
    torch_dtype: &'static str,
}

fn f32_bytes(tensor: Tensor<1>) -> Vec<u8> {
    let values: Vec<f32> = tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `(HF key, shape, little-endian f32 bytes)` of every tensor to export.
type Exported = Vec<(String, Vec<usize>, Vec<u8>)>;

fn put1(out: &mut Exported, key: String, t: Tensor<1>) {
    out.push((key, t.dims().to_vec(), f32_bytes(t)));
}

fn put2(out: &mut Exported, key: String, t: Tensor<2>) {
    let shape = t.dims().to_vec();
    let n: usize = shape.iter().product();
    out.push((key, shape, f32_bytes(t.reshape([n]))));
}

fn put_linear(out: &mut Exported, key: &str, l: &Linear) {
    put2(out, format!("{key}.weight"), l.weight.val());
    if let Some(b) = &l.bias {
        put1(out, format!("{key}.bias"), b.val());
    }
}

fn put_layer_norm(out: &mut Exported, key: &str, ln: &LayerNorm) {
    put1(out, format!("{key}.weight"), ln.gamma.val());
    if let Some(b) = &ln.beta {
        put1(out, format!("{key}.bias"), b.val());
    }
}

/// Every parameter under its HF key (with the `transformer.` prefix).
fn hf_tensors(model: &Gpt2) -> Exported {
    let mut out = Vec::new();
    put2(
        &mut out,
        "transformer.wte.weight".into(),
        model.wte.weight.val(),
    );
    put2(
        &mut out,
        "transformer.wpe.weight".into(),
        model.wpe.weight.val(),
    );
    for (i, b) in model.h.iter().enumerate() {
        let p = format!("transformer.h.{i}");
        put_layer_norm(&mut out, &format!("{p}.ln_1"), &b.ln_1);
        put_linear(&mut out, &format!("{p}.attn.c_attn"), &b.attn.c_attn);
        put_linear(&mut out, &format!("{p}.attn.c_proj"), &b.attn.c_proj);
        put_layer_norm(&mut out, &format!("{p}.ln_2"), &b.ln_2);
        put_linear(&mut out, &format!("{p}.mlp.c_fc"), &b.mlp.c_fc);
        put_linear(&mut out, &format!("{p}.mlp.c_proj"), &b.mlp.c_proj);
    }
    put_layer_norm(&mut out, "transformer.ln_f", &model.ln_f);
    out
}

/// Writes `dir/model.safetensors` (f32, HF keys with the `transformer.` prefix, no
/// `lm_head.weight` since it is tied) and `dir/config.json`, loadable by
/// `GPT2LMHeadModel.from_pretrained(dir)`. Files are written to a temporary name and renamed.
pub fn save_hf(model: &Gpt2, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let config = model.config();
    let tensors = hf_tensors(model);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("byte length matches shape by construction");
            (k.clone(), view)
        })
        .collect();
    let weights = dir.join(WEIGHTS_FILE);
    let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    // transformers refuses safetensors files without metadata format "pt".
    let metadata = Some([("format".to_string(), "pt".to_string())].into());
    safetensors::serialize_to_file(views, metadata, &tmp).map_err(|e| ModelError::Safetensors {
        path: tmp.clone(),
        reason: e.to_string(),
    })?;
    std::fs::rename(&tmp, &weights).map_err(|e| ModelError::io(&weights, e))?;

    let hf = HfConfigOut {
        model_type: "gpt2",
        architectures: ["GPT2LMHeadModel"],
        activation_function: "gelu_new",
        vocab_size: config.vocab_size,
        n_positions: config.block_size,
        n_ctx: config.block_size,
        n_embd: config.n_embd,
        n_layer: config.n_layer,
        n_head: config.n_head,
        n_inner: None,
        layer_norm_epsilon: config.layer_norm_epsilon,
        initializer_range: 0.02,
        resid_pdrop: config.dropout,
        embd_pdrop: config.dropout,
        attn_pdrop: 0.0, // Burn's attention op has no dropout
        bos_token_id: EOT_TOKEN,
        eos_token_id: EOT_TOKEN,
        tie_word_embeddings: true,
        scale_attn_weights: true,
        torch_dtype: "float32",
    };
    let config_path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(&hf).map_err(|source| ModelError::Json {
        path: config_path.clone(),
        source,
    })?;
    std::fs::write(&config_path, json + "\n").map_err(|e| ModelError::io(&config_path, e))?;
    Ok(())
}
