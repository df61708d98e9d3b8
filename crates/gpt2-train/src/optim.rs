//! AdamW with GPT-2's parameter groups and global-norm clipping, written out so that every
//! number is ours to checkpoint and every step is the textbook one (PyTorch `AdamW`, as
//! nanoGPT and llm.c use it):
//!
//! ```text
//! g ← g · min(1, clip / (‖g‖₂ + 1e-6))      ‖g‖ over ALL parameters together (Burn clips per tensor)
//! p ← p − lr · wd · p                         decoupled decay, ≥2-D parameters only
//! m ← β1 m + (1 − β1) g ;  v ← β2 v + (1 − β2) g²
//! p ← p − lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + eps)
//! ```
//!
//! State (m, v per parameter, and t) is keyed by the parameter's module path
//! (`h.0.attn.c_attn.weight`), not by Burn's `ParamId`, so it survives save/load of the model.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use gpt2_model::{adamw_step, AdamWHyper, Gpt2};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{IoContext, Result, TrainError};

/// Hyper-parameters of one step.
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// Optimizer state: first and second moments (f32, on the training device's inner backend)
/// and the step count t.
#[derive(Default)]
pub struct AdamW {
    pub t: u64,
    moments: BTreeMap<String, (Tensor<1>, Tensor<1>)>,
}

impl AdamW {
    /// One update of `model` with `grads` scaled by `grad_scale` (the clipping factor).
    pub fn step(
        &mut self,
        model: Gpt2,
        grads: &mut GradientsParams,
        p: AdamWParams,
        grad_scale: f64,
    ) -> Gpt2 {
        self.t += 1;
        let mut mapper = StepMapper {
            opt: self,
            grads,
            p,
            grad_scale,
            path: Vec::new(),
        };
        model.map(&mut mapper)
    }

    /// Number of parameters holding state (for the resume check).
    pub fn len(&self) -> usize {
        self.moments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.moments.is_empty()
    }

    /// Write m and v (f32, safetensors) and t.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, (m, v)) in &self.moments {
            for (suffix, t) in [("exp_avg", m), ("exp_avg_sq", v)] {
                let data = t.clone().into_data();
                let values: Vec<f32> = data
                    .try_to_vec()
                    .map_err(|e| ckpt_err(path, format!("reading {name}: {e:?}")))?;
                let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                bufs.push((format!("{name}.{suffix}"), vec![values.len()], bytes));
            }
        }
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(k, shape, b)| {
                (
                    k.clone(),
                    TensorView::new(Dtype::F32, shape.clone(), b).expect("length matches shape"),
                )
            })
            .collect();
        let mut meta = std::collections::HashMap::new();
        meta.insert("t".to_string(), self.t.to_string());
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| ckpt_err(path, e.to_string()))?;
        std::fs::write(path, bytes).at(path)
    }

    /// Read what [`AdamW::save`] wrote, placing tensors on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| ckpt_err(path, e.to_string()))?;
        let t = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("t"))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| ckpt_err(path, "no step count `t` in the metadata".into()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| ckpt_err(path, e.to_string()))?;
        let mut halves: BTreeMap<String, (Option<Tensor<1>>, Option<Tensor<1>>)> = BTreeMap::new();
        for (key, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(ckpt_err(
                    path,
                    format!("{key}: dtype {:?}, expected F32", view.dtype()),
                ));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let n = values.len();
            let tensor = Tensor::<1>::from_data(TensorData::new(values, [n]), device);
            let (name, which) = key
                .rsplit_once('.')
                .ok_or_else(|| ckpt_err(path, format!("unexpected key {key}")))?;
            let entry = halves.entry(name.to_string()).or_default();
            match which {
                "exp_avg" => entry.0 = Some(tensor),
                "exp_avg_sq" => entry.1 = Some(tensor),
                _ => return Err(ckpt_err(path, format!("unexpected key {key}"))),
            }
        }
        let mut moments = BTreeMap::new();
        for (name, (m, v)) in halves {
            match (m, v) {
                (Some(m), Some(v)) => moments.insert(name, (m, v)),
                _ => {
                    return Err(ckpt_err(
                        path,
                        format!("{name}: exp_avg or exp_avg_sq missing"),
                    ))
                }
            };
        }
        Ok(Self { t, moments })
    }

    /// The moments of the parameter `name` (module path), if it has state.
    pub fn moments_of(&self, name: &str) -> Option<&(Tensor<1>, Tensor<1>)> {
        self.moments.get(name)
    }

    /// Sets the moments of the parameter `name` (ZeRO-1's gather for a checkpoint).
    pub fn insert(&mut self, name: String, m: Tensor<1>, v: Tensor<1>) {
        self.moments.insert(name, (m, v));
    }

    /// The same state on `device`.
    pub fn to_device(self, device: &Device) -> Self {
        Self {
            t: self.t,
            moments: self
                .moments
                .into_iter()
                .map(|(k, (m, v))| (k, (m.to_device(device), v.to_device(device))))
                .collect(),
        }
    }

    /// Keeps the state of the parameters `keep` accepts (ZeRO-1: a rank's own).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.moments.retain(|name, _| keep(name));
    }

    /// Check that every parameter of `model` that `covered` names has state (after a load).
    pub fn check_covers(&self, model: &Gpt2, path: &Path) -> Result<()> {
        self.check_covers_some(model, path, |_| true)
    }

    /// [`AdamW::check_covers`] for the parameters `covered` accepts (ZeRO-1: a rank's own).
    pub fn check_covers_some(
        &self,
        model: &Gpt2,
        path: &Path,
        covered: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let mut names = param_names(model);
        names.retain(|n| covered(n));
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !self.moments.contains_key(*n))
            .collect();
        if self.t > 0 && !missing.is_empty() {
            return Err(ckpt_err(
                path,
                format!(
                    "optimizer state missing for {} parameters (first: {})",
                    missing.len(),
                    missing[0]
                ),
            ));
        }
        Ok(())
    }
}

fn ckpt_err(path: &Path, message: String) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
        hint: "the checkpoint is damaged; resume from an earlier one (--resume PATH) or delete it"
            .into(),
    }
}

struct StepMapper<'a> {
    opt: &'a mut AdamW,
    grads: &'a mut GradientsParams,
    p: AdamWParams,
    grad_scale: f64,
    path: Vec<String>,
}

impl ModuleMapper for StepMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let name = self.path.join(".");
        let p = self.p;
        let shape = tensor.shape();
        let numel = shape.num_elements();
        let require_grad = tensor.is_require_grad();
        let x = tensor.inner().reshape([numel]); // (n,) no graph
        let g = grad.reshape([numel]);
        let device = x.device();
        let (m, v) = self.opt.moments.remove(&name).unwrap_or_else(|| {
            (
                Tensor::zeros([numel], &device),
                Tensor::zeros([numel], &device),
            )
        });
        let hyper = AdamWHyper {
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            // Weight decay on ≥2-D parameters only (weights and embeddings; not biases/LayerNorm).
            decay: if D >= 2 { p.lr * p.weight_decay } else { 0.0 },
            grad_scale: self.grad_scale,
            step: self.opt.t,
        };
        // One kernel per tensor on the GPU backends (unless `device.kernels: composed`); flex's
        // tensor ops on the CPU. The same formula, gpt2_model::AdamWHyper.
        let (new, m, v) = adamw_step(x, g, m, v, &hyper);
        self.opt.moments.insert(name, (m, v));
        let mut new = Tensor::<D>::from_inner(new.reshape(shape));
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Global L2 norm of all gradients (one number over every parameter), as a host f64.
pub fn global_grad_norm(model: &Gpt2, grads: &GradientsParams, device: &Device) -> f64 {
    norm_of_squares(&grad_squares(model, grads, device))
}

/// `Σ g²` of each parameter's gradient, in visit order (0 where `grads` has none, as under
/// ZeRO-1 for another rank's tensors), read to the host at once.
pub fn grad_squares(model: &Gpt2, grads: &GradientsParams, device: &Device) -> Vec<f32> {
    struct Squares<'a> {
        grads: &'a GradientsParams,
        device: &'a Device,
        out: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Squares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push(match self.grads.get::<D>(param.id) {
                Some(g) => sum_of_squares(g),
                None => Tensor::zeros([1], self.device),
            });
        }
    }
    // Gradients live on the plain (non-autodiff) device.
    let device = &device.clone().without_autodiff();
    let mut v = Squares {
        grads,
        device,
        out: Vec::new(),
    };
    model.visit(&mut v);
    if v.out.is_empty() {
        return Vec::new();
    }
    Tensor::cat(v.out, 0)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 sums")
}

/// `√(Σ squares)`, the f32 sum taken in visit order (the order every rank and both ZeRO settings
/// share, so all decide clipping on the same number).
pub fn norm_of_squares(squares: &[f32]) -> f64 {
    (squares.iter().fold(0f32, |s, x| s + x) as f64).sqrt()
}

/// `Σ g²` as a `[1]` tensor, summed in an order fixed by the shape alone.
///
/// Not `Tensor::sum`: on the CubeCL backends (CUDA, and wgpu where the adapter has float atomics,
/// lavapipe among them) Burn's full sum is one kernel whose workgroups add their partial sums
/// into the result with atomic float adds, in whatever order they finish, so the same gradients
/// gave norms that differed in the last bit from run to run (issue 23: a resumed two-device run
/// whose step-5 norm differed by one f32 ulp of the sum). `sum_dim` reduces each output element in
/// one fixed order, so a `[rows, cols]` view summed over columns, then rows, is bit-reproducible
/// and still parallel over rows.
pub fn sum_of_squares<const D: usize>(g: Tensor<D>) -> Tensor<1> {
    let n = g.shape().num_elements();
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols);
    let flat = g.reshape([n]);
    let sq = flat.clone().mul(flat);
    let sq = if rows * cols == n {
        sq
    } else {
        let pad = Tensor::<1>::zeros([rows * cols - n], &sq.device());
        Tensor::cat(vec![sq, pad], 0)
    };
    sq.reshape([rows, cols]).sum_dim(1).sum_dim(0).reshape([1])
}

/// Module paths of every float parameter, in visit order.
pub fn param_names(model: &Gpt2) -> Vec<String> {
    struct Names {
        path: Vec<String>,
        out: Vec<String>,
    }
    impl ModuleVisitor for Names {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            self.out.push(self.path.join("."));
        }
    }
    let mut n = Names {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut n);
    n.out
}
