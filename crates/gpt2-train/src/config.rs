//! `gpt2 train`'s configuration: YAML (`configs/train/*.yaml`) + `--set key=value` overrides →
//! [`TrainConfig`] (unknown keys rejected) → [`TrainConfig::plan`], which reports every problem
//! at once and derives the numbers (accumulation steps, tokens per step, total steps, FLOPs).

use std::path::{Path, PathBuf};

use gpt2_model::{ComputeDtype, Gpt2Config, Recompute};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The model: a preset name (`gpt2-117m`, `tiny-cpu`, …), a preset with settings
/// (`{preset: gpt2-117m, recompute: gelu}`; with `init_from`, the settings alone), or an inline
/// architecture (which may set `recompute` too). `--set model.recompute=gelu` turns a preset
/// name into the second form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelSpec {
    Preset(String),
    Named(NamedModel),
    Inline(Gpt2Config),
}

/// A preset (or, with `init_from`, the source's architecture) and the model settings that are
/// not its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// What the backward recomputes instead of keeping (`none`, `gelu`, `gelu_layernorm`).
    #[serde(default)]
    pub recompute: Recompute,
}

impl ModelSpec {
    /// The `recompute` setting the spec gives (`none` for a bare preset name).
    fn recompute(&self) -> Recompute {
        match self {
            ModelSpec::Preset(_) => Recompute::None,
            ModelSpec::Named(n) => n.recompute,
            ModelSpec::Inline(m) => m.recompute,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A directory written by `gpt2 prepare` (holding `manifest.json`).
    pub shards: PathBuf,
    /// Check every shard's sha256 against the manifest before training.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Visit shards and windows in a seeded order that changes every epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Sequences per forward/backward pass on one device.
    pub micro_batch: usize,
    /// Tokens per sequence (≤ the model's context).
    pub seq_len: usize,
    /// Tokens per optimizer step over all devices and accumulation steps (GPT-3: 524,288).
    pub total_batch_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay (llm.c/nanoGPT: lr / 10).
    pub min_lr: f64,
    pub warmup_steps: u64,
    /// Length of the run in optimizer steps; or give `max_tokens`.
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default = "beta1")]
    pub beta1: f64,
    /// GPT-3: 0.95 (Burn's default 0.999 is not GPT-2's recipe).
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub eps: f64,
    /// Decoupled weight decay on ≥2-D parameters only (GPT-3: 0.1).
    #[serde(default = "wd")]
    pub weight_decay: f64,
    /// Clip the global L2 norm of all gradients to this (GPT-3: 1.0); 0 disables.
    #[serde(default = "clip")]
    pub grad_clip: f64,
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.95
}
fn eps() -> f64 {
    1e-8
}
fn wd() -> f64 {
    0.1
}
fn clip() -> f64 {
    1.0
}

/// Numeric precision of the run: the model's compute dtype (`f32 | bf16 | f16`). Parameters
/// and optimizer state stay f32 whatever it is; f16 adds dynamic loss scaling.
pub type Precision = ComputeDtype;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `flex` (pure-Rust CPU, default), `cuda` (NVIDIA) or `wgpu` (Vulkan/Metal/DX12 GPUs).
    #[serde(default = "flex")]
    pub kind: String,
    /// Devices to train on, one data-parallel replica each (default `[0]`): CUDA ordinals,
    /// indices into the wgpu adapters, or (flex) replicas sharing the CPU. Gradients are
    /// averaged over them every step; `batch.micro_batch` is per device.
    #[serde(default)]
    pub ids: Vec<usize>,
    /// wgpu only: the device list `ids` index into, by name — `discrete:N`, `integrated:N`,
    /// `virtual:N`, `cpu` (a software adapter such as lavapipe) or `default` (wgpu's choice).
    /// Empty (the default): every adapter wgpu finds, GPUs first. Two names that reach one
    /// adapter (`default` and `cpu` on a machine whose only adapter is lavapipe) are two devices
    /// sharing it: how CI runs two data-parallel ranks without two GPUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wgpu_devices: Vec<String>,
    /// The memory one device may use, in GB (10⁹ bytes), for the plan's estimate (`--dry-run`
    /// says whether the step fits). Default: the device's own size where its runtime states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
    /// Rows of the LM head computed at once: at most this many × 50,257 f32 logits exist at any
    /// moment. Default: from the device (wgpu: what fits its largest buffer; otherwise 256 MiB
    /// of logits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm_head_chunk_rows: Option<usize>,
    /// Flash attention on CUDA/wgpu (memory linear in the context); `false` uses the composed
    /// attention, which stores `[B, nh, T, T]` probabilities per layer (a fallback).
    #[serde(default = "yes")]
    pub flash_attention: bool,
    /// CUDA/wgpu: `fused` (default) runs LayerNorm, GELU, the loss rows, attention and the
    /// AdamW update as this project's CubeCL kernels; `composed` runs them as Burn's tensor ops
    /// (a fallback, and the reference they are measured against). flex has its own kernels.
    #[serde(default)]
    pub kernels: Kernels,
    /// Data parallel: the gradients are averaged over the devices in buckets of this many MB
    /// (10⁶ bytes) of the flattened f32 gradients, one reduction each (PyTorch DDP: 25).
    #[serde(default = "bucket_mb")]
    pub bucket_mb: f64,
}

/// Which implementation of the fused ops the GPU backends run (`device.kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    #[default]
    Fused,
    Composed,
}

fn bucket_mb() -> f64 {
    crate::parallel::DEFAULT_BUCKET_MB
}

fn flex() -> String {
    "flex".into()
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            kind: flex(),
            ids: vec![],
            wgpu_devices: vec![],
            memory_gb: None,
            lm_head_chunk_rows: None,
            flash_attention: true,
            kernels: Kernels::Fused,
            bucket_mb: bucket_mb(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Validation loss every this many steps (0: only at the end).
    pub interval: u64,
    /// Tokens of the held-out split per evaluation (0: no validation loss, e.g. benchmarks).
    pub tokens: u64,
    /// Zero-shot tasks scored at the same steps (llm.c scores HellaSwag during training), e.g.
    /// `[{task: hellaswag, data: hellaswag_val.jsonl, limit: 500}]`; each adds a row to
    /// metrics.jsonl and a line to the plot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<crate::tasks::TaskSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoint every this many steps (and at the end unless `at_end` is false).
    pub interval: u64,
    /// Keep the newest K checkpoints…
    #[serde(default = "two")]
    pub keep_last: usize,
    /// …plus every checkpoint whose step is a multiple of this (0: none).
    #[serde(default)]
    pub keep_every: u64,
    /// Write a checkpoint when the last step is done (default). Benchmarks turn it off: a 1.5B
    /// model's checkpoint is 18 GB. SIGINT/SIGTERM still checkpoint.
    #[serde(default = "yes")]
    pub at_end: bool,
}

fn yes() -> bool {
    true
}

fn two() -> usize {
    2
}

/// Dynamic loss scaling for `precision: f16` (PyTorch `GradScaler`'s defaults): the loss is
/// multiplied by `scale` before backward; an overflow (non-finite gradient) skips the update and
/// halves the scale; `growth_interval` good steps in a row double it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossScaleConfig {
    pub init: f64,
    pub growth_interval: u64,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            init: 65536.0,
            growth_interval: 2000,
        }
    }
}

/// What to do when the loss or the gradient norm is NaN/Inf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NanPolicy {
    /// Stop with an error naming the step; nothing poisoned is checkpointed.
    #[default]
    Stop,
    /// Skip the update (weights and optimizer state unchanged) and count it.
    Skip,
}

/// A training run, as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where checkpoints, metrics.jsonl, the loss plot and plan.json go.
    pub run_dir: PathBuf,
    /// The architecture. May be left out with `init_from`, which then gives it; given with it,
    /// it must describe the same shape (it may still set `dropout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Start from these weights instead of a random init (nanoGPT's `init_from`): a Hugging
    /// Face GPT-2 directory, one of our checkpoints, or a run directory (its newest complete
    /// checkpoint). The optimizer, schedule and data position start fresh; `--resume` of this
    /// run's own checkpoints takes precedence. See `init.rs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    pub data: DataConfig,
    pub batch: BatchConfig,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub precision: Precision,
    /// Used with `precision: f16` only.
    #[serde(default)]
    pub loss_scale: LossScaleConfig,
    #[serde(default)]
    pub device: DeviceConfig,
    pub eval: EvalConfig,
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub seed: u64,
    /// Print a line every this many steps.
    #[serde(default = "ten")]
    pub log_interval: u64,
    #[serde(default)]
    pub nan_policy: NanPolicy,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Several processes (one per device) under mpirun, srun or torchrun: see `world.rs`.
    /// Empty: taken from the launcher's variables, if any.
    #[serde(default, skip_serializing_if = "is_default")]
    pub distributed: crate::world::DistributedConfig,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Where metrics go besides `metrics.jsonl` and `loss.svg` (always written).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// TensorBoard event files under `run_dir/tb/`: every scalar of metrics.jsonl, by step
    /// (W&B can sync them with `wandb sync` or `sync_tensorboard`). See `tensorboard.rs`.
    #[serde(default)]
    pub tensorboard: bool,
}

fn ten() -> u64 {
    10
}

/// The derived numbers of a run, printed at start and saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    pub config: TrainConfig,
    pub model: Gpt2Config,
    /// Replicas in the whole run: processes × devices per process.
    pub world_size: usize,
    /// This process's place among the processes (one process by default, and in plans saved
    /// before multi-process runs existed).
    #[serde(default)]
    pub world: crate::world::Place,
    /// The devices this process trains on (`device.ids` resolved for its local rank).
    #[serde(default)]
    pub process_device_ids: Vec<usize>,
    /// Micro-batches per optimizer step per device.
    pub grad_accum_steps: usize,
    pub tokens_per_step: u64,
    pub max_steps: u64,
    pub total_tokens: u64,
    pub num_params: u64,
    pub flops_per_token: u64,
    pub flops_per_step: u64,
    pub total_flops: f64,
    /// Where the initial weights come from (`init_from`), with their sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<crate::init::InitSource>,
    /// The commit of the code that runs the plan, recorded in the plan table and checkpoints.
    /// Set by the caller (the `gpt2` binary knows the commit it was built from); `None` prints
    /// "unknown". Not read from `git` at run time: the working directory may be another
    /// repository, or none.
    pub git_commit: Option<String>,
}

impl TrainConfig {
    /// Read YAML and apply `key.path=value` overrides (values parsed as YAML scalars).
    pub fn from_yaml_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let bad = |problems: Vec<String>| TrainError::Config {
            path: path.to_path_buf(),
            problems,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(vec![format!("cannot read: {e}")]))?;
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| bad(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        for o in overrides {
            if let Err(e) = apply_override(&mut value, o) {
                problems.push(e);
            }
        }
        if !problems.is_empty() {
            return Err(bad(problems));
        }
        serde_yaml::from_value(value).map_err(|e| {
            let e = e.to_string();
            // serde's message for an untagged enum names no field; say what `model` may be.
            bad(vec![if e.contains("untagged enum ModelSpec") {
                format!(
                    "model: expected a preset name (one of {}), a mapping {{preset: NAME, \
                     recompute: none | gelu | gelu_layernorm}}, or an inline architecture \
                     (n_layer, n_head, n_embd, block_size, optional recompute, ...): {e}",
                    gpt2_model::PRESET_NAMES.join(", ")
                )
            } else {
                e
            }])
        })
    }

    /// Validate everything and derive the plan; every problem is reported together.
    // `!(x > 0.0)` on purpose: it also rejects NaN. `%` over `is_multiple_of`: rust-version 1.85.
    #[allow(clippy::neg_cmp_op_on_partial_ord, clippy::manual_is_multiple_of)]
    pub fn plan(self, origin: &Path) -> Result<TrainPlan> {
        let mut p = Vec::new();
        let yaml_model = match &self.model {
            Some(ModelSpec::Preset(name)) => match Gpt2Config::from_name_or_path(name) {
                Ok(m) => Some((m, name.clone())),
                Err(e) => {
                    p.push(format!("model: {e}"));
                    None
                }
            },
            Some(ModelSpec::Named(NamedModel {
                preset: Some(name), ..
            })) => match Gpt2Config::from_name_or_path(name) {
                Ok(m) => Some((m, name.clone())),
                Err(e) => {
                    p.push(format!("model: {e}"));
                    None
                }
            },
            Some(ModelSpec::Named(NamedModel { preset: None, .. })) => {
                if self.init_from.is_none() {
                    p.push(
                        "model: a mapping without `preset` needs init_from (the weights' own \
                         architecture); name a preset or give the architecture inline"
                            .into(),
                    );
                }
                None
            }
            Some(ModelSpec::Inline(m)) => match m.validate() {
                Ok(()) => Some((m.clone(), "the inline architecture".to_string())),
                Err(e) => {
                    p.push(format!("model: {e}"));
                    None
                }
            },
            None => None,
        };
        let mut init = None;
        let model = match (&self.init_from, yaml_model) {
            (None, None) => {
                if self.model.is_none() {
                    p.push("model: required (a preset such as tiny-cpu or gpt2-117m, or an inline architecture), unless init_from gives the weights".into());
                }
                None
            }
            (None, Some((m, _))) => Some(m),
            (Some(from), yaml) => match crate::init::resolve(from) {
                Ok((source, shape)) => {
                    init = Some(source);
                    match yaml {
                        // The YAML's own settings (dropout) on the source's shape.
                        Some((m, name)) => {
                            match crate::init::check_same_shape(&m, &name, &shape, from) {
                                Ok(()) => Some(m),
                                Err(e) => {
                                    p.push(e);
                                    None
                                }
                            }
                        }
                        None => Some(shape),
                    }
                }
                Err(e) => {
                    p.push(e);
                    None
                }
            },
        };
        let b = &self.batch;
        if b.micro_batch == 0 || b.seq_len == 0 {
            p.push(format!(
                "batch.micro_batch ({}) and batch.seq_len ({}) must be positive",
                b.micro_batch, b.seq_len
            ));
        }
        if let Some(m) = &model {
            if b.seq_len > m.block_size {
                p.push(format!(
                    "batch.seq_len {} exceeds the model's context {}",
                    b.seq_len, m.block_size
                ));
            }
        }
        let place = match crate::world::Place::from_env(&self.distributed, &self.device.kind) {
            Ok(place) => place,
            Err(problems) => {
                p.extend(problems);
                crate::world::Place::default()
            }
        };
        p.extend(place.build_problem());
        let process_device_ids = place
            .device_ids(&self.device.kind, &self.device.ids)
            .unwrap_or_else(|e| {
                p.push(e);
                vec![0]
            });
        if !(self.distributed.timeout_s > 0.0) {
            p.push(format!(
                "distributed.timeout_s {} must be positive (seconds the rendezvous waits)",
                self.distributed.timeout_s
            ));
        }
        if self.distributed.zero > 1 {
            p.push(format!(
                "distributed.zero {} must be 0 or 1 (ZeRO stage 1 shards the AdamW state; stages 2 and 3 are not implemented)",
                self.distributed.zero
            ));
        }
        let world_size = process_device_ids.len().max(1) * place.world_size;
        let ids = &self.device.ids;
        if let Some(dup) = ids
            .iter()
            .enumerate()
            .find(|(i, id)| ids[..*i].contains(id))
        {
            p.push(format!(
                "device.ids {ids:?} lists device {} twice: one replica per device",
                dup.1
            ));
        }
        let per_micro = b.micro_batch * b.seq_len * world_size;
        let grad_accum_steps = if per_micro > 0
            && b.total_batch_tokens % per_micro == 0
            && b.total_batch_tokens > 0
        {
            b.total_batch_tokens / per_micro
        } else {
            p.push(if place.world_size > 1 {
                format!(
                    "batch.total_batch_tokens {} must be a positive multiple of micro_batch × seq_len × world size = {per_micro} \
                     (world size {} from {:?}): the world does not divide the batch",
                    b.total_batch_tokens, place.world_size, place.launcher
                )
            } else {
                format!(
                    "batch.total_batch_tokens {} must be a positive multiple of micro_batch × seq_len × devices = {per_micro}",
                    b.total_batch_tokens
                )
            });
            1
        };
        let o = &self.optimizer;
        if !(o.lr > 0.0) || o.min_lr < 0.0 || o.min_lr > o.lr {
            p.push(format!(
                "optimizer: need lr > 0 and 0 ≤ min_lr ≤ lr (lr {}, min_lr {})",
                o.lr, o.min_lr
            ));
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            p.push(format!(
                "optimizer.beta1 {} and beta2 {} must be in [0, 1)",
                o.beta1, o.beta2
            ));
        }
        if !(o.eps > 0.0) || o.weight_decay < 0.0 || o.grad_clip < 0.0 {
            p.push(format!(
                "optimizer: eps {} must be > 0, weight_decay {} and grad_clip {} ≥ 0",
                o.eps, o.weight_decay, o.grad_clip
            ));
        }
        let tokens_per_step = b.total_batch_tokens as u64;
        let max_steps = match (o.max_steps, o.max_tokens) {
            (Some(s), None) if s > 0 => s,
            (None, Some(t)) if t >= tokens_per_step && tokens_per_step > 0 => t / tokens_per_step,
            (Some(_), Some(_)) => {
                p.push("optimizer: give max_steps or max_tokens, not both".into());
                1
            }
            _ => {
                p.push("optimizer: max_steps (> 0) or max_tokens (≥ one batch) is required".into());
                1
            }
        };
        if o.warmup_steps > max_steps {
            p.push(format!(
                "optimizer.warmup_steps {} exceeds the run's {max_steps} steps",
                o.warmup_steps
            ));
        }
        if self.checkpoint.interval == 0 {
            p.push("checkpoint.interval must be positive".into());
        }
        if self.checkpoint.keep_last == 0 {
            p.push("checkpoint.keep_last must be at least 1 (resume needs a checkpoint)".into());
        }
        if !(self.loss_scale.init >= 1.0) || self.loss_scale.growth_interval == 0 {
            p.push(format!(
                "loss_scale: init {} must be ≥ 1 and growth_interval {} positive",
                self.loss_scale.init, self.loss_scale.growth_interval
            ));
        }
        for t in &self.eval.tasks {
            if let Err(e) = crate::tasks::Task::parse(&t.task) {
                p.push(format!("eval.tasks: {e}"));
            }
            if !t.data.is_file() {
                p.push(format!(
                    "eval.tasks: {} data {} is not a file",
                    t.task,
                    t.data.display()
                ));
            }
        }
        if self.log_interval == 0 {
            p.push("log_interval must be positive".into());
        }
        if let Some(gb) = self.device.memory_gb.filter(|g| !(*g > 0.0)) {
            p.push(format!("device.memory_gb {gb} must be positive"));
        }
        if !(self.device.bucket_mb > 0.0) {
            p.push(format!(
                "device.bucket_mb {} must be positive",
                self.device.bucket_mb
            ));
        }
        if self.device.lm_head_chunk_rows == Some(0) {
            p.push("device.lm_head_chunk_rows must be positive (leave it out for the device's default)".into());
        }
        if !self.device.wgpu_devices.is_empty() && self.device.kind != "wgpu" {
            p.push(format!(
                "device.wgpu_devices is for device.kind wgpu, not {}",
                self.device.kind
            ));
        }
        match self.device.kind.as_str() {
            // bf16/f16 run on flex too (the tests use it), but slowly: flex has no fast
            // half-precision matmuls. Use f32 on CPU for real work.
            "flex" => {}
            "cuda" => {
                if !cfg!(feature = "cuda") {
                    p.push("device.kind cuda: this binary was built without the `cuda` feature (cargo build --release --features cuda)".into());
                }
            }
            "wgpu" => {
                for name in &self.device.wgpu_devices {
                    if let Err(e) = crate::device::parse_wgpu_name(name) {
                        p.push(format!("device.wgpu_devices: {e}"));
                    }
                }
                if !cfg!(feature = "wgpu") {
                    p.push("device.kind wgpu: this binary was built without the `wgpu` feature (cargo build --release --features wgpu)".into());
                }
                // WGSL has no bf16 type: no wgpu adapter can run it (Burn's matmul would panic
                // inside a kernel). f16 needs the adapter's shader-f16, checked at start.
                if self.precision == Precision::Bf16 {
                    p.push("precision bf16 is not available on device.kind wgpu (WGSL shaders have no bf16 type): use f16 (dynamic loss scaling) or f32".into());
                }
            }
            other => p.push(format!(
                "device.kind `{other}` must be one of {}",
                crate::device::KINDS
            )),
        }
        if !self.data.shards.join(gpt2_data::prepare::MANIFEST).exists() {
            p.push(format!(
                "data.shards: {} holds no manifest.json (run `gpt2 prepare` first)",
                self.data.shards.display()
            ));
        }
        let Some(mut model) = model.filter(|_| p.is_empty()) else {
            return Err(TrainError::Config {
                path: origin.to_path_buf(),
                problems: p,
            });
        };
        model.compute_dtype = self.precision;
        model.lm_head_chunk_rows = self.device.lm_head_chunk_rows.unwrap_or(0);
        model.flash_attention = self.device.flash_attention;
        model.recompute = self
            .model
            .as_ref()
            .map_or(Recompute::None, ModelSpec::recompute);
        let flops_per_token = model.flops_per_token(b.seq_len);
        Ok(TrainPlan {
            num_params: model.num_params(),
            flops_per_step: flops_per_token * tokens_per_step,
            total_flops: flops_per_token as f64 * (tokens_per_step * max_steps) as f64,
            flops_per_token,
            model,
            world_size,
            world: place,
            process_device_ids,
            grad_accum_steps,
            tokens_per_step,
            max_steps,
            total_tokens: tokens_per_step * max_steps,
            init,
            git_commit: None,
            config: self,
        })
    }
}

impl TrainPlan {
    /// (name, value) rows for the table printed at start.
    pub fn rows(&self) -> Vec<(String, String)> {
        let c = &self.config;
        vec![
            (
                "model".into(),
                format!(
                    "{} layers, {} heads, {} wide, context {} ({:.2}M params), recompute {}",
                    self.model.n_layer,
                    self.model.n_head,
                    self.model.n_embd,
                    self.model.block_size,
                    self.num_params as f64 / 1e6,
                    self.model.recompute
                ),
            ),
            ("data".into(), c.data.shards.display().to_string()),
            (
                "init".into(),
                self.init.as_ref().map_or_else(
                    || format!("random (seed {})", c.seed),
                    crate::init::InitSource::describe,
                ),
            ),
            (
                "batch".into(),
                format!(
                    "{} × {} tokens × {} accumulation × {} device(s) = {} tokens/step",
                    c.batch.micro_batch,
                    c.batch.seq_len,
                    self.grad_accum_steps,
                    self.world_size,
                    self.tokens_per_step
                ),
            ),
            (
                "steps".into(),
                format!("{} ({} tokens)", self.max_steps, self.total_tokens),
            ),
            (
                "lr".into(),
                format!(
                    "{} → {} (warmup {}, cosine)",
                    c.optimizer.lr, c.optimizer.min_lr, c.optimizer.warmup_steps
                ),
            ),
            (
                "AdamW".into(),
                format!(
                    "β ({}, {}), eps {}, weight decay {} (2-D only), clip {}",
                    c.optimizer.beta1,
                    c.optimizer.beta2,
                    c.optimizer.eps,
                    c.optimizer.weight_decay,
                    c.optimizer.grad_clip
                ),
            ),
            (
                "precision".into(),
                format!("{:?} on {}", c.precision, c.device.kind),
            ),
            (
                "devices".into(),
                if self.world.world_size > 1 {
                    format!(
                        "{} × {}, one per process (this one: ids {:?}), gradients averaged every step",
                        self.world_size, c.device.kind, self.process_device_ids
                    )
                } else {
                    format!(
                        "{} × {} (ids {:?}), gradients averaged every step",
                        self.world_size,
                        c.device.kind,
                        if c.device.ids.is_empty() {
                            vec![0]
                        } else {
                            c.device.ids.clone()
                        }
                    )
                },
            ),
            (
                "world".into(),
                if c.distributed.zero == 1 && self.world.world_size > 1 {
                    format!(
                        "{}; ZeRO-1: each process keeps the AdamW moments of its 1/{} of the parameters",
                        self.world.describe(),
                        self.world.world_size
                    )
                } else {
                    self.world.describe()
                },
            ),
            (
                "FLOPs".into(),
                format!(
                    "{:.3e}/token, {:.3e}/step, {:.3e} total",
                    self.flops_per_token as f64, self.flops_per_step as f64, self.total_flops
                ),
            ),
            ("run dir".into(), c.run_dir.display().to_string()),
            (
                "commit".into(),
                self.git_commit.clone().unwrap_or_else(|| "unknown".into()),
            ),
        ]
    }
}

/// Set `a.b.c` in a YAML mapping to `value` (parsed as YAML, so numbers stay numbers).
fn apply_override(root: &mut serde_yaml::Value, kv: &str) -> std::result::Result<(), String> {
    let (key, raw) = kv
        .split_once('=')
        .ok_or_else(|| format!("--set {kv}: expected key=value"))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(raw).map_err(|e| format!("--set {kv}: {e}"))?;
    let parts: Vec<&str> = key.split('.').collect();
    // `model.<setting>` on `model: <preset>`: the preset becomes `{preset: <preset>}`.
    if parts.len() > 1 && parts[0] == "model" {
        if let Some(map) = root.as_mapping_mut() {
            let k = serde_yaml::Value::String("model".into());
            if let Some(serde_yaml::Value::String(name)) = map.get(&k).cloned() {
                let mut named = serde_yaml::Mapping::new();
                named.insert("preset".into(), serde_yaml::Value::String(name));
                map.insert(k, serde_yaml::Value::Mapping(named));
            }
        }
    }
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| format!("--set {kv}: `{}` is not a mapping", parts[..i].join(".")))?;
        let k = serde_yaml::Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map
            .entry(k)
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(extra: &str) -> String {
        format!(
            "run_dir: /tmp/x\nmodel: tiny\ndata: {{shards: /nonexistent}}\nbatch: {{micro_batch: 2, seq_len: 32, total_batch_tokens: 256}}\n\
             optimizer: {{lr: 0.001, min_lr: 0.0001, warmup_steps: 2, max_steps: 10}}\neval: {{interval: 5, tokens: 1024}}\n\
             checkpoint: {{interval: 5}}\n{extra}"
        )
    }

    #[test]
    fn unknown_keys_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml("sed: 3\n")).unwrap();
        let e = TrainConfig::from_yaml_file(&p, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `sed`"), "{e}");
        std::fs::write(&p, yaml("")).unwrap();
        let c = TrainConfig::from_yaml_file(
            &p,
            &[
                "optimizer.lr=0.5".into(),
                "seed=7".into(),
                "batch.micro_batch=4".into(),
            ],
        )
        .unwrap();
        assert_eq!((c.optimizer.lr, c.seed, c.batch.micro_batch), (0.5, 7, 4));
        assert_eq!(c.optimizer.beta2, 0.95);
    }

    #[test]
    fn model_recompute_on_a_preset_inline_or_with_init_from() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml("")).unwrap();
        let named = |recompute| {
            Some(ModelSpec::Named(NamedModel {
                preset: Some("tiny".into()),
                recompute,
            }))
        };
        // `--set model.recompute=…` turns `model: tiny` into `{preset: tiny, recompute: …}`.
        let c = TrainConfig::from_yaml_file(&p, &["model.recompute=gelu".into()]).unwrap();
        assert_eq!(c.model, named(Recompute::Gelu));
        std::fs::write(
            &p,
            yaml("").replace(
                "model: tiny",
                "model: {preset: tiny, recompute: gelu_layernorm}",
            ),
        )
        .unwrap();
        let c = TrainConfig::from_yaml_file(&p, &[]).unwrap();
        assert_eq!(c.model, named(Recompute::GeluLayernorm));
        assert_eq!(
            c.model.as_ref().unwrap().recompute(),
            Recompute::GeluLayernorm
        );
        // Inline architectures carry it as a field.
        let inline = "model: {n_layer: 2, n_head: 2, n_embd: 64, block_size: 64, recompute: gelu}";
        std::fs::write(&p, yaml("").replace("model: tiny", inline)).unwrap();
        let c = TrainConfig::from_yaml_file(&p, &[]).unwrap();
        assert_eq!(c.model.as_ref().unwrap().recompute(), Recompute::Gelu);
        // A wrong value says what `model` may be.
        std::fs::write(&p, yaml("")).unwrap();
        let e = TrainConfig::from_yaml_file(&p, &["model.recompute=sometimes".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("recompute: none | gelu | gelu_layernorm"), "{e}");
        // Settings without a preset need init_from.
        std::fs::write(
            &p,
            yaml("").replace("model: tiny", "model: {recompute: gelu}"),
        )
        .unwrap();
        let e = TrainConfig::from_yaml_file(&p, &[])
            .unwrap()
            .plan(&p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a mapping without `preset` needs init_from"),
            "{e}"
        );
    }

    #[test]
    fn plan_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml("")).unwrap();
        let mut c = TrainConfig::from_yaml_file(&p, &[]).unwrap();
        c.batch.total_batch_tokens = 100;
        c.batch.seq_len = 4096;
        c.optimizer.warmup_steps = 50;
        c.optimizer.beta2 = 1.5;
        let e = c.plan(&p).unwrap_err().to_string();
        for needle in [
            "total_batch_tokens 100",
            "seq_len 4096",
            "warmup_steps 50",
            "beta2 1.5",
            "manifest.json",
        ] {
            assert!(e.contains(needle), "missing {needle}: {e}");
        }
    }
}
