//! The training loop: the plan → replicas (a model, AdamW and loaders per device) → steps with
//! accumulation, gradient mean over devices, clipping, schedule, logging, validation,
//! checkpoints and exact resume. [`train`] reads top to bottom; its phases are the functions
//! below it in the same order: `replicas`, `step`, `validate`, `checkpoint`.
//!
//! Data parallel (`device.ids: [0, 1, ..]`, see `parallel.rs`): every rank draws its own
//! micro-batches (rank r of the loader), the ranks' gradients are averaged, the global norm is
//! clipped on the average, and every rank applies the same AdamW update, so N devices × a
//! accumulation steps train like 1 device × N·a over the same windows.
//!
//! Precision (which ops run in which dtype): parameters, AdamW moments and updates are f32
//! always; with `precision: bf16|f16` the model casts weights and activations to that dtype
//! around every matmul and the attention op and back to f32 (gpt2-model `compute_dtype`);
//! embeddings, LayerNorm, residual adds, GELU inputs/outputs, softmax of the loss and the loss
//! itself stay f32. f16 adds dynamic loss scaling (the loss is multiplied by the scale before
//! backward, gradients are divided by it before clipping; an overflow skips the update and
//! halves the scale). On `flex` (CPU) half precision runs but slowly: use f32 there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_train::metric::{LossInput, LossMetric, Metric, Numeric};
use gpt2_data::TokenLoader;
use gpt2_model::Gpt2;

use crate::checkpoint::{self, TrainState};
use crate::collective::Collective;
use crate::config::{NanPolicy, Precision, TrainPlan};
use crate::error::{IoContext, Result, TrainError};
use crate::eval::metric_metadata;
use crate::metrics::{self, MetricsLog, Record};
use crate::optim::{global_grad_norm, grad_squares, AdamW, AdamWParams};
use crate::parallel::{mean_over_processes, on_each_rank, replicate, GradMean};
use crate::schedule::lr_at;

/// Where to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Start fresh (an existing run directory's checkpoints are left alone, and overwritten
    /// step by step).
    No,
    /// The newest complete checkpoint in the run directory, if any; damaged ones are reported
    /// and skipped.
    Auto,
    /// This checkpoint directory.
    Path(PathBuf),
}

/// Options that do not change the result.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub resume: Resume,
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub step: u64,
    pub last_train_loss: f64,
    pub last_val_loss: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    /// Stopped early by SIGINT/SIGTERM.
    pub interrupted: bool,
    pub skipped_updates: u64,
    /// The run had already reached its last step: nothing was trained, and the losses are the
    /// last ones its metrics.jsonl recorded.
    pub already_finished: bool,
}

/// Peak dense bf16 FLOP/s used for MFU on CUDA: 788 TFLOP/s measured for an 8192³ bf16 matmul
/// on an H200 (the datasheet says ~989).
pub const PEAK_FLOPS_H200_BF16: f64 = 788e12;

/// The plain devices of the run (one per rank), each checked for the run's precision.
fn devices(plan: &TrainPlan) -> Result<Vec<Device>> {
    let d = &crate::config::DeviceConfig {
        ids: plan.process_device_ids.clone(),
        ..plan.config.device.clone()
    };
    let devices = crate::device::training_devices(d)?;
    // flex runs every dtype (half precision through conversions); GPU adapters may lack one.
    if let Some(dtype) = plan
        .model
        .compute_dtype
        .cast_dtype()
        .filter(|_| d.kind != "flex")
    {
        if devices
            .iter()
            .any(|dev| !crate::device::supports(dev, dtype.into()))
        {
            return Err(TrainError::Device {
                requested: format!("{} {:?}", d.kind, d.ids),
                message: format!(
                    "this device cannot compute in {dtype:?} (precision {:?})",
                    plan.config.precision
                ),
                hint: "use precision f32 (or f16 on an adapter with shader-f16 support)".into(),
            });
        }
    }
    Ok(devices)
}

/// Tokens `[B, T+1]` from the loader → (inputs, targets) `[B, T]`.
fn batch_tensors(
    tokens: &[u32],
    b: usize,
    t: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let row = t + 1;
    let mut x = Vec::with_capacity(b * t);
    let mut y = Vec::with_capacity(b * t);
    for r in tokens.chunks_exact(row) {
        x.extend(r[..t].iter().map(|&v| v as i64));
        y.extend(r[1..].iter().map(|&v| v as i64));
    }
    (
        Tensor::from_data(TensorData::new(x, [b, t]), device),
        Tensor::from_data(TensorData::new(y, [b, t]), device),
    )
}

/// Mean validation loss over `tokens` tokens of the held-out split, without autodiff. Batches
/// are equal-sized, so burn-train's `LossMetric` (batch-weighted running mean) gives the mean.
pub fn evaluate(
    model: &Gpt2,
    loader: &mut TokenLoader,
    b: usize,
    t: usize,
    tokens: u64,
) -> Result<f64> {
    let model = model.valid();
    let device = model.device();
    loader.set_state(gpt2_data::LoaderState {
        epoch: 0,
        cursor: 0,
    });
    let n = (tokens / (b * t) as u64).clamp(1, loader.steps_per_epoch().max(1));
    let mut mean = LossMetric::new();
    for i in 0..n {
        let (x, y) = batch_tensors(&loader.next_batch(), b, t, &device);
        let loss = model.forward_loss(x, y);
        let meta = metric_metadata((i + 1) * (b * t) as u64, n * (b * t) as u64);
        mean.update(&LossInput::new(loss.reshape([1])), &meta)
            .map_err(|e| TrainError::Device {
                requested: format!("{device:?}"),
                message: format!("reading the validation loss back failed: {e:?}"),
                hint: "check the device (driver, memory) and rerun with --resume auto".into(),
            })?;
    }
    Ok(mean.final_value().current())
}

/// Seed of a rank's device RNG (dropout) for a step: a pure function, so resume needs no RNG
/// state. Rank 0's is the single-device seed; other ranks draw other masks.
fn step_seed(seed: u64, step: u64, rank: usize) -> u64 {
    (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ step.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add((rank as u64).wrapping_mul(0x632b_e59b_d9b4_e019))
}

/// One data-parallel rank: its autodiff device, model replica, AdamW state and data.
struct Rank {
    device: Device,
    /// `None` only while the optimizer consumes it during an update.
    model: Option<Gpt2>,
    opt: AdamW,
    train: TokenLoader,
    val: Option<TokenLoader>,
}

impl Rank {
    fn model(&self) -> &Gpt2 {
        self.model
            .as_ref()
            .expect("the model is back after every update")
    }

    /// Forward and backward over this rank's `grad_accum_steps` micro-batches: the gradient of
    /// its share of the step's loss (scaled by `scale / accum`), its mean loss, and the bytes
    /// the last micro-batch's forward left allocated for the backward (where the device counts
    /// them, `device::bytes_in_use`). The losses stay on the device until the end, so the device
    /// queue never waits for the host.
    fn accumulate(
        &mut self,
        plan: &TrainPlan,
        seed: u64,
        scale: f64,
    ) -> (GradientsParams, f64, Option<u64>) {
        let (b, t) = (plan.config.batch.micro_batch, plan.config.batch.seq_len);
        let accum_steps = plan.grad_accum_steps;
        self.device.seed(seed);
        let mut accum = GradientsAccumulator::<Gpt2>::new();
        let mut loss_sum: Option<Tensor<1>> = None;
        let mut activations = None;
        for i in 0..accum_steps {
            let (x, y) = batch_tensors(&self.train.next_batch(), b, t, &self.device);
            let model = self.model();
            let last = i + 1 == accum_steps;
            let before = last
                .then(|| gpt2_model::device::bytes_in_use(&self.device))
                .flatten();
            let loss = model.forward_loss(x, y);
            activations = before.and_then(|before| {
                Some(gpt2_model::device::bytes_in_use(&self.device)?.saturating_sub(before))
            });
            // Scale by 1/accum so the accumulated gradient is that of the mean over the step.
            let scaled = loss.clone().mul_scalar(scale / accum_steps as f64);
            let grads = GradientsParams::from_grads(scaled.backward(), model);
            accum.accumulate(model, grads);
            let loss = loss.detach();
            loss_sum = Some(loss_sum.map_or(loss.clone(), |s| s + loss));
        }
        let loss = loss_sum
            .expect("at least one micro-batch")
            .into_scalar::<f32>() as f64;
        (accum.grads(), loss / accum_steps as f64, activations)
    }
}

/// What one optimizer step measured.
struct StepStats {
    /// Mean training loss over all ranks and micro-batches.
    loss: f64,
    /// Global gradient norm of the averaged, unscaled gradients (before clipping).
    norm: f64,
    lr: f64,
    /// The most bytes a rank's last forward left for its backward (`Rank::accumulate`).
    activations: Option<u64>,
}

/// Run (or continue) training according to `plan`.
///
/// In a multi-process run (`plan.world`, see `world.rs`) every process calls this; global rank
/// 0 alone writes the run directory and prints, and a rank that fails prints its error and ends
/// the whole job (`Collective::abort`) rather than leave its peers waiting in a collective.
pub fn train(plan: TrainPlan, opts: &TrainOptions) -> Result<Summary> {
    let devices = devices(&plan)?;
    let timeout = plan.config.distributed.timeout_s;
    let collective = Collective::start(&plan.world, &devices[0], timeout)?;
    let rank = plan.world.rank;
    let result = run(plan, opts, &collective, devices);
    if let Err(e) = &result {
        if collective.world_size() > 1 {
            eprintln!("rank {rank}: error: {e}");
            collective.abort(1);
        }
    }
    result
}

fn run(
    plan: TrainPlan,
    opts: &TrainOptions,
    collective: &Collective,
    devices: Vec<Device>,
) -> Result<Summary> {
    let cfg = plan.config.clone();
    let run_dir = cfg.run_dir.clone();
    let main = plan.world.is_main();
    let say = |msg: String| {
        if !opts.quiet && main {
            eprintln!("{msg}");
        }
    };

    // --- Devices, and the plan fitted to them (refused here if it cannot fit). --------------
    gpt2_model::device::set_composed_kernels(
        cfg.device.kernels == crate::config::Kernels::Composed,
    );
    if cfg.device.kind == "flex" {
        // Before any step, so no forward's `mem_activations_mb` holds a thread's first buffer.
        gpt2_model::device::make_host_scratch();
    }
    let (plan, notes) = fit_to_device(plan, &devices[0])?;
    notes.into_iter().for_each(&say);
    if main {
        std::fs::create_dir_all(&run_dir).at(&run_dir)?;
        let plan_json = serde_json::to_vec_pretty(&plan).expect("plan serialises");
        gpt2_data::io::write_atomic(&run_dir.join("plan.json"), &plan_json)?;
    }

    // GPU ranks feed their queues from threads of their own; flex replicas share the CPU.
    let parallel = cfg.device.kind != "flex";
    // The GPU pools' pages sized for the step's largest tensor before anything is allocated, on
    // each rank's stream, so the memory report keeps every tensor a step holds
    // (`presize_memory_pages` says why).
    let largest = crate::memory::largest_tensor_bytes(&plan);
    on_each_rank(&mut devices.clone(), parallel, |_, d| {
        gpt2_model::device::presize_memory_pages(d, largest)
    });

    // --- Replicas: fresh, or from a checkpoint; one per device. ----------------------------
    let start = start_dir(&run_dir, &opts.resume)?;
    // ZeRO-1's cut of the parameters over the processes (none for zero 0 or one process).
    let shards = crate::memory::zero_shards(&plan);
    let (mut ranks, mut state) =
        replicas(&plan, &devices, shards.as_ref(), start.as_deref(), &say)?;
    let grad_mean = GradMean::new(&cfg.device.kind, &devices, cfg.device.bucket_mb);
    // Every process starts from the same weights (and, after a resume, the same checkpoint).
    same_weights_everywhere(collective, ranks[0].model(), state.step)?;
    if plan.world.world_size > 1 {
        say(format!(
            "data parallel: {} processes × {} {:?}, {} tokens/step in total, gradients: mean over the processes by {:?} ({}), in {} MB buckets",
            plan.world.world_size,
            cfg.device.kind,
            plan.process_device_ids,
            plan.tokens_per_step,
            plan.world.engine,
            if plan.world.engine == crate::world::Engine::Nccl {
                "on the devices"
            } else {
                "through the host"
            },
            cfg.device.bucket_mb
        ));
    } else if ranks.len() > 1 {
        say(format!(
            "data parallel: {} ranks on {} {:?}, {} tokens/step in total, gradients: {}",
            ranks.len(),
            cfg.device.kind,
            cfg.device.ids,
            plan.tokens_per_step,
            grad_mean.name()
        ));
    }

    if state.step >= plan.max_steps {
        // A finished run started again (`make demo` twice): nothing to train; report how it
        // ended rather than a step that never ran.
        return finished(&run_dir, &state, start);
    }
    // Rank 0's alone: the other processes train the same weights and write nothing.
    let mut log = main
        .then(|| MetricsLog::open(&run_dir, state.step, cfg.logging.tensorboard))
        .transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).at(&run_dir)?;
    }
    let bar = progress_bar(&plan, state.step, opts.quiet || !main);
    let mut summary = Summary {
        step: state.step,
        last_train_loss: f64::NAN,
        last_val_loss: None,
        last_checkpoint: None,
        interrupted: false,
        skipped_updates: state.skipped_updates,
        already_finished: false,
    };
    // MFU against the peak of all devices together.
    let peak = (cfg.device.kind == "cuda").then_some(PEAK_FLOPS_H200_BF16 * plan.world_size as f64);

    // --- Steps. ------------------------------------------------------------------------------
    while state.step < plan.max_steps {
        devices
            .iter()
            .for_each(gpt2_model::device::reset_peak_memory);
        let t0 = Instant::now();
        let StepStats {
            loss,
            norm,
            lr,
            activations,
        } = step(
            &plan,
            &mut ranks,
            &grad_mean,
            collective,
            shards.as_ref(),
            parallel,
            &mut state,
        )?;
        let activations_mb = activations.map(|b| b as f64 / 1e6);
        let mem = peak_memory(&devices);
        state.step += 1;
        summary.step = state.step;
        summary.last_train_loss = loss;
        summary.skipped_updates = state.skipped_updates;
        let secs = t0.elapsed().as_secs_f64();
        let tok_s = plan.tokens_per_step as f64 / secs; // all ranks together
        let mfu = peak.map(|p| plan.flops_per_step as f64 / secs / p);
        let last = state.step == plan.max_steps;
        if let Some(log) = log
            .as_mut()
            .filter(|_| state.step % cfg.log_interval == 0 || state.step == 1 || last)
        {
            log.append(&Record {
                step: state.step,
                kind: "train".into(),
                loss,
                lr: Some(lr),
                grad_norm: Some(norm),
                ms_per_step: Some(secs * 1e3),
                tokens_per_sec: Some(tok_s),
                mfu,
                tokens_seen: state.tokens_seen,
                mem_peak_mb: mem.map(|m| m.0),
                mem_peak_kind: mem.map(|m| m.1.into()),
                mem_activations_mb: activations_mb,
                scores: Default::default(),
            })?;
            let line = format!(
                "step {:>6}/{} | loss {loss:.4} | lr {lr:.3e} | grad norm {norm:.3} | {:.0} ms | {:.0} tok/s | MFU {} | mem {}{}",
                state.step,
                plan.max_steps,
                secs * 1e3,
                tok_s,
                mfu.map_or("-".into(), |m| format!("{:.1}%", m * 100.0)),
                mem.map_or("-".into(), |(mb, kind)| format!("{mb:.0} MB ({kind})")),
                activations_mb.map_or(String::new(), |mb| format!(", activations {mb:.1} MB"))
            );
            match &bar {
                Some(bar) => bar.println(line),
                None => say(line),
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(state.step);
            bar.set_message(format!("loss {loss:.4} | {tok_s:.0} tok/s"));
        }
        let eval_now = last || (cfg.eval.interval > 0 && state.step % cfg.eval.interval == 0);
        if eval_now {
            if let Some(v) = validate(&plan, &mut ranks, collective, parallel)? {
                summary.last_val_loss = Some(v);
                if let Some(log) = log.as_mut() {
                    log.append(&Record::loss(state.step, "val", v, state.tokens_seen))?;
                }
                say(format!("step {:>6} | val loss {v:.4}", state.step));
            }
        }
        // Zero-shot tasks and the plot: rank 0's model and files (the others go on to the next
        // step and wait for it there).
        if let Some(log) = log.as_mut().filter(|_| eval_now) {
            for row in eval_tasks(&plan, ranks[0].model(), state.step, state.tokens_seen)? {
                let shown: Vec<String> = row
                    .scores
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect();
                say(format!(
                    "step {:>6} | {} {}",
                    state.step,
                    row.kind,
                    shown.join(" | ")
                ));
                log.append(&row)?;
            }
            metrics::plot(&metrics::read(log.path())?, &run_dir.join("loss.svg"))?;
        }
        // A signal reaches the processes at different steps; they stop together at the first
        // step any of them saw it.
        let interrupted = agreed_any(collective, stop.load(Ordering::Relaxed));
        if (last && cfg.checkpoint.at_end)
            || interrupted
            || state.step % cfg.checkpoint.interval == 0
        {
            // ZeRO-1: the whole AdamW state gathered on rank 0 (every rank takes part).
            let gathered = shards.as_ref().and_then(|shards| {
                // The others' moments land in host memory (flex), not beside rank 0's on its
                // device: the checkpoint reads them to the host anyway.
                crate::zero::gather_optimizer(
                    collective,
                    shards,
                    plan.world.rank,
                    ranks[0].model(),
                    &ranks[0].opt,
                    &Device::flex(),
                )
            });
            if main {
                let opt = gathered.as_ref().unwrap_or(&ranks[0].opt);
                summary.last_checkpoint = Some(checkpoint(&plan, &state, ranks[0].model(), opt)?);
            }
            // Nobody runs ahead of a checkpoint that is not yet complete.
            collective.barrier();
        }
        if interrupted {
            summary.interrupted = true;
            let Some(log) = log.as_ref() else { break };
            metrics::plot(&metrics::read(log.path())?, &run_dir.join("loss.svg"))?;
            // Printed even with --quiet: the user needs to know how to continue.
            eprintln!(
                "interrupted: checkpoint written at step {}. Resume with:\n  gpt2 train --config <same config> --resume auto   (run dir {})",
                state.step,
                run_dir.display()
            );
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// The summary of a run resumed at its last step: its last train and val losses from
/// metrics.jsonl and the checkpoint it ended with.
fn finished(run_dir: &Path, state: &TrainState, checkpoint: Option<PathBuf>) -> Result<Summary> {
    let path = run_dir.join(metrics::FILE);
    let records = if path.exists() {
        metrics::read(&path)?
    } else {
        Vec::new()
    };
    let last = |kind: &str| {
        records
            .iter()
            .rev()
            .find(|r| r.kind == kind && r.step <= state.step && r.loss.is_finite())
            .map(|r| r.loss)
    };
    Ok(Summary {
        step: state.step,
        last_train_loss: last("train").unwrap_or(f64::NAN),
        last_val_loss: last("val"),
        last_checkpoint: checkpoint,
        interrupted: false,
        skipped_updates: state.skipped_updates,
        already_finished: true,
    })
}

/// `plan` with the LM head's chunk size taken from `device` (unless the config sets one), and
/// its memory estimate checked against the device's limits: an error where a tensor cannot fit
/// one buffer or flash attention cannot fit the shared memory, else notes for the log.
pub fn fit_to_device(mut plan: TrainPlan, device: &Device) -> Result<(TrainPlan, Vec<String>)> {
    let limits = gpt2_model::device_memory(device);
    if plan.model.lm_head_chunk_rows == 0 {
        plan.model.lm_head_chunk_rows =
            gpt2_model::device::chunk_rows_for(limits.max_buffer_bytes, plan.model.vocab_size);
    }
    let estimate = crate::memory::estimate(&plan, plan.model.lm_head_chunk_rows);
    let notes = crate::memory::check(&plan, &estimate, &limits)?;
    Ok((plan, notes))
}

/// For `--dry-run`: the memory estimate of `plan` on its first device as table rows, checked
/// against the device's limits (an error where it cannot fit). A device that cannot be opened
/// here (no GPU on this machine) leaves the estimate, checked against `device.memory_gb` only.
pub fn memory_rows(plan: TrainPlan) -> Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    let (plan, notes) = match devices(&plan) {
        Ok(devices) => fit_to_device(plan, &devices[0])?,
        Err(e) => {
            rows.push((
                "device".into(),
                format!("not opened here ({e}); estimate only"),
            ));
            let mut plan = plan;
            if plan.model.lm_head_chunk_rows == 0 {
                plan.model.lm_head_chunk_rows =
                    gpt2_model::device::chunk_rows_for(None, plan.model.vocab_size);
            }
            let est = crate::memory::estimate(&plan, plan.model.lm_head_chunk_rows);
            let notes = crate::memory::check(&plan, &est, &gpt2_model::DeviceMemory::default())?;
            (plan, notes)
        }
    };
    rows.extend(crate::memory::estimate(&plan, plan.model.lm_head_chunk_rows).rows());
    rows.extend(crate::memory::kept_rows(&plan));
    rows.extend(notes.into_iter().map(|n| ("fits".to_string(), n)));
    Ok(rows)
}

/// The step's peak memory in MB over the devices (the largest), and what it measures:
/// `"device"` (the GPU pools' high-water mark), `"heap"` (flex in the `gpt2` binary: the most
/// live heap bytes since the step began) or `"rss"` (flex elsewhere: the process's peak resident
/// set since the step began).
fn peak_memory(devices: &[Device]) -> Option<(f64, &'static str)> {
    devices
        .iter()
        .filter_map(gpt2_model::device::peak_memory_bytes)
        .map(|(bytes, source)| {
            let kind = match source {
                gpt2_model::device::PeakSource::DevicePools => "device",
                gpt2_model::device::PeakSource::ProcessRss => "rss",
                gpt2_model::device::PeakSource::Heap => "heap",
            };
            (bytes as f64 / 1e6, kind)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The checkpoint to start from: none, the newest complete one (damaged ones are reported and
/// skipped), or the one named.
fn start_dir(run_dir: &Path, resume: &Resume) -> Result<Option<PathBuf>> {
    Ok(match resume {
        Resume::No => None,
        Resume::Path(p) => Some(p.clone()),
        Resume::Auto => {
            let (done, broken) = checkpoint::list(run_dir)?;
            for b in &broken {
                eprintln!(
                    "warning: skipping incomplete or damaged checkpoint {}",
                    b.display()
                );
            }
            done.last().map(|d| d.1.clone())
        }
    })
}

/// The ranks (model replica, AdamW state, train and val loaders per device) and the run state,
/// fresh or from the checkpoint in `start`.
///
/// Resuming on another number of devices re-shards: the loader's cursor counts the windows
/// handed out to all ranks together, so the new ranks continue at the same place in the same
/// order, and with the same `total_batch_tokens` every step sees the same windows as before
/// (the gradient sums in another order, so equal up to rounding).
fn replicas(
    plan: &TrainPlan,
    devices: &[Device],
    shards: Option<&crate::zero::Shards>,
    start: Option<&Path>,
    say: &dyn Fn(String),
) -> Result<(Vec<Rank>, TrainState)> {
    let cfg = &plan.config;
    let main = devices[0].clone().autodiff();
    let (model, state) = match start {
        Some(dir) => {
            let state = checkpoint::load_state(dir)?;
            let model = gpt2_model::load_hf_with_config(dir, Some(plan.model.clone()), &main)?;
            say(format!(
                "resuming from {} (step {}, {} tokens seen){}",
                dir.display(),
                state.step,
                state.tokens_seen,
                if plan.init.is_some() {
                    "; init_from is not read"
                } else {
                    ""
                }
            ));
            let was = state.plan.world_size;
            if was != plan.world_size {
                say(format!(
                    "the checkpoint is from a {was}-replica run, this one has {}: re-sharding the data (same windows per step, same order)",
                    plan.world_size
                ));
            }
            (model, state)
        }
        None => {
            let model = match crate::init::load(plan.init.as_ref(), &plan.model, &main)? {
                Some(model) => {
                    let init = plan.init.as_ref().expect("loaded from it");
                    say(format!(
                        "weights from {} (sha256 {})",
                        init.resolved.display(),
                        init.sha256
                    ));
                    model
                }
                None => Gpt2::new(&plan.model, &main, cfg.seed)?,
            };
            let loss_scale = if cfg.precision == Precision::F16 {
                cfg.loss_scale.init
            } else {
                1.0
            };
            let state = TrainState {
                step: 0,
                tokens_seen: 0,
                loader: gpt2_data::LoaderState {
                    epoch: 0,
                    cursor: 0,
                },
                rank_loaders: Vec::new(),
                skipped_updates: 0,
                loss_scale,
                good_steps: 0,
                overflow_steps: 0,
                plan: plan.clone(),
            };
            (model, state)
        }
    };
    // Global replica ranks: this process's devices follow those of the processes before it.
    let world = plan.world_size;
    let first_rank = plan.world.rank * devices.len();
    let same_world = state.rank_loaders.len() == world;
    let autodiff: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let models = replicate(model, &autodiff);
    let (b, t) = (cfg.batch.micro_batch, cfg.batch.seq_len);
    let shuffle = cfg.data.shuffle.then_some(cfg.seed);
    let mut ranks = Vec::with_capacity(world);
    for (r, (model, device)) in models.into_iter().zip(autodiff).enumerate() {
        let opt = match start {
            Some(dir) => {
                // The whole state (any world size and ZeRO setting wrote the one format);
                // under ZeRO-1 this process keeps its own tensors' moments.
                let path = dir.join(checkpoint::OPTIMIZER);
                match shards {
                    // Read to the host, trimmed to this process's share, then moved to its
                    // device: the whole state never sits on the device.
                    Some(shards) => {
                        let mut opt = AdamW::load(&path, &Device::flex())?;
                        crate::zero::keep_own(&mut opt, &model, shards, plan.world.rank);
                        let own = crate::zero::owned_names(&model, shards, plan.world.rank);
                        opt.check_covers_some(&model, dir, |n| own.iter().any(|o| o == n))?;
                        opt.to_device(&devices[r])
                    }
                    None => {
                        let opt = AdamW::load(&path, &devices[r])?;
                        opt.check_covers(&model, dir)?;
                        opt
                    }
                }
            }
            None => AdamW::default(),
        };
        let g = first_rank + r;
        // The shards' checksums are verified once per process.
        let verify = cfg.data.verify && r == 0;
        let shards = &cfg.data.shards;
        let mut train =
            TokenLoader::from_manifest(shards, "train", b, t, g, world, shuffle, verify)?;
        train.set_state(if same_world {
            state.rank_loaders[g]
        } else {
            state.loader
        });
        let val = TokenLoader::from_manifest(shards, "val", b, t, g, world, None, verify).ok();
        if g == 0 && val.is_none() {
            eprintln!("warning: no usable `val` split in the shards (for {world} device(s) × batch {b}); validation loss is skipped");
        }
        ranks.push(Rank {
            device,
            model: Some(model),
            opt,
            train,
            val,
        });
    }
    let state = TrainState {
        plan: plan.clone(),
        ..state
    };
    Ok((ranks, state))
}

/// One optimizer step on every rank: forward/backward with accumulation, the gradient mean,
/// global-norm clipping, f16 loss scaling or the NaN policy, and the AdamW update.
// `%` over `is_multiple_of`: rust-version 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn step(
    plan: &TrainPlan,
    ranks: &mut [Rank],
    grad_mean: &GradMean,
    collective: &Collective,
    shards: Option<&crate::zero::Shards>,
    parallel: bool,
    state: &mut TrainState,
) -> Result<StepStats> {
    let cfg = &plan.config;
    let o = &cfg.optimizer;
    let step = state.step;
    let lr = lr_at(step, o.lr, o.min_lr, o.warmup_steps, plan.max_steps);
    // f16: the loss is scaled up so small gradients survive the half-precision backward.
    let f16 = cfg.precision == Precision::F16;
    let ls = if f16 { state.loss_scale } else { 1.0 };
    let first_rank = plan.world.rank * ranks.len();
    let out = on_each_rank(ranks, parallel, |r, rank| {
        rank.accumulate(plan, step_seed(cfg.seed, step, first_rank + r), ls)
    });
    let activations = out.iter().filter_map(|o| o.2).max();
    let (mut grads, losses): (Vec<GradientsParams>, Vec<f64>) =
        out.into_iter().map(|(g, l, _)| (g, l)).unzip();
    grad_mean.mean(ranks[0].model(), &mut grads);
    let plain = ranks[0].device.clone().without_autodiff();
    match shards {
        // ZeRO-1: this process keeps the mean gradient of its own tensors only.
        Some(shards) => crate::zero::reduce_scatter_mean(
            collective,
            shards,
            plan.world.rank,
            ranks[0].model(),
            &mut grads[0],
            &plain,
        ),
        None => mean_over_processes(
            collective,
            ranks[0].model(),
            &mut grads[0],
            cfg.device.bucket_mb,
        ),
    }
    // The losses summed over every replica of every process, then divided: (l₀ + l₁) / 2 for
    // two replicas wherever they run.
    let mut loss_sum = [losses.iter().sum::<f64>()];
    collective.sum_f64(&mut loss_sum);
    let loss = loss_sum[0] / plan.world_size as f64;
    // Every process holds the same mean gradient; rank 0's norm is the one all decide on
    // (clipping, f16 overflow, the NaN policy), so no rounding difference can split them.
    // Under ZeRO-1 each holds its own tensors' part, and the norm is assembled from all of them
    // in the same order, so it is the same number on every rank and the same as zero 0's.
    let norm = match shards {
        Some(_) => {
            let squares = grad_squares(ranks[0].model(), &grads[0], &plain);
            crate::zero::global_norm(collective, squares) / ls
        }
        None => {
            let mut norm = [global_grad_norm(ranks[0].model(), &grads[0], &plain) / ls];
            collective.broadcast_f64(&mut norm);
            norm[0]
        }
    };
    state.tokens_seen += plan.tokens_per_step;
    state.loader = ranks[0].train.state();
    // Every replica's loader advances one shared cursor by the same stride (gpt2-data's
    // `next_batch`), so all of them, in every process, hold the state rank 0 holds.
    state.rank_loaders = vec![state.loader; plan.world_size];
    let finite = loss.is_finite() && norm.is_finite();
    if f16 && loss.is_finite() && !norm.is_finite() {
        // Overflow of the scaled gradients: skip this update, halve the scale (GradScaler).
        state.loss_scale = (state.loss_scale * 0.5).max(1.0);
        state.good_steps = 0;
        state.overflow_steps += 1;
        if plan.world.is_main() {
            eprintln!(
                "warning: step {}: f16 gradient overflow; update skipped, loss scale now {}",
                step + 1,
                state.loss_scale
            );
        }
    } else if finite {
        // Unscale and clip in one factor.
        let scale = clip_scale(norm, o.grad_clip) / ls;
        if f16 {
            state.good_steps += 1;
            if state.good_steps % cfg.loss_scale.growth_interval == 0 {
                state.loss_scale *= 2.0;
            }
        }
        let p = AdamWParams {
            lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
        };
        // The same averaged gradient and the same update on every rank.
        for (rank, g) in ranks.iter_mut().zip(&mut grads) {
            let model = rank
                .model
                .take()
                .expect("the model is back after every update");
            let model = rank.opt.step(model, g, p, scale);
            // ZeRO-1: each rank updated its own tensors; everyone gets everyone's.
            rank.model = Some(match shards {
                Some(shards) => {
                    crate::zero::all_gather_weights(collective, shards, plan.world.rank, model)
                }
                None => model,
            });
        }
    } else {
        match cfg.nan_policy {
            NanPolicy::Stop => {
                let (what, value) = if loss.is_finite() {
                    ("gradient norm", norm)
                } else {
                    ("loss", loss)
                };
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    what,
                    value,
                });
            }
            NanPolicy::Skip => {
                state.skipped_updates += 1;
                if plan.world.is_main() {
                    eprintln!("warning: step {}: non-finite loss {loss} or gradient norm {norm}; update skipped ({} so far)", step + 1, state.skipped_updates);
                }
            }
        }
    }
    Ok(StepStats {
        loss,
        norm,
        lr,
        activations,
    })
}

/// Mean validation loss over the ranks, each on its share (rank r of the `val` split) of
/// `eval.tokens`; `None` without a usable `val` split or with `eval.tokens: 0`.
fn validate(
    plan: &TrainPlan,
    ranks: &mut [Rank],
    collective: &Collective,
    parallel: bool,
) -> Result<Option<f64>> {
    if plan.config.eval.tokens == 0 {
        return Ok(None);
    }
    // All processes skip together if any lacks its share of the val split, so no rank is left
    // waiting in the sum below.
    if agreed_any(collective, ranks.iter().any(|r| r.val.is_none())) {
        return Ok(None);
    }
    let c = &plan.config;
    let (b, t) = (c.batch.micro_batch, c.batch.seq_len);
    let tokens = c.eval.tokens / plan.world_size as u64;
    let losses = on_each_rank(ranks, parallel, |_, rank| {
        let model = rank
            .model
            .as_ref()
            .expect("the model is back after every update");
        let val = rank.val.as_mut().expect("checked above");
        evaluate(model, val, b, t, tokens)
    });
    let losses = losses.into_iter().collect::<Result<Vec<f64>>>()?;
    let mut sum = [losses.iter().sum::<f64>()];
    collective.sum_f64(&mut sum);
    Ok(Some(sum[0] / plan.world_size as f64))
}

/// Whether `flag` holds on any process (on the one process, whether it holds).
fn agreed_any(collective: &Collective, flag: bool) -> bool {
    let mut n = [if flag { 1.0 } else { 0.0 }];
    collective.sum_f64(&mut n);
    n[0] > 0.0
}

/// Checks that every process holds rank 0's weights, bit for bit: a 64-bit FNV-1a hash of every
/// parameter's f32 values in visit order, rank 0's broadcast (as two exact 32-bit halves) and
/// compared on each process. A process that differs (another config, another checkpoint) stops
/// the run before its first step instead of training apart.
fn same_weights_everywhere(collective: &Collective, model: &Gpt2, step: u64) -> Result<()> {
    if collective.world_size() == 1 {
        return Ok(());
    }
    let mine = weights_checksum(model);
    let mut theirs = [(mine >> 32) as f64, (mine & 0xffff_ffff) as f64];
    collective.broadcast_f64(&mut theirs);
    let rank0 = ((theirs[0] as u64) << 32) | theirs[1] as u64;
    let differ = agreed_any(collective, mine != rank0);
    if differ {
        return Err(TrainError::Distributed {
            message: format!(
                "the processes' weights differ at step {step} (this rank's checksum {mine:016x}, rank 0's {rank0:016x})"
            ),
            hint: "start every rank with the same config and, when resuming, let every rank see the same run directory (a shared filesystem)".into(),
        });
    }
    Ok(())
}

/// FNV-1a over the bits of every parameter's f32 values, in visit order.
fn weights_checksum(model: &Gpt2) -> u64 {
    use burn::module::{ModuleVisitor, Param};
    struct Hash(u64);
    impl ModuleVisitor for Hash {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 weights");
            for x in v {
                for byte in x.to_bits().to_le_bytes() {
                    self.0 = (self.0 ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
        }
    }
    let mut h = Hash(0xcbf2_9ce4_8422_2325);
    model.visit(&mut h);
    h.0
}

/// The run's `eval.tasks` (HellaSwag, as llm.c does during training, or any other task) scored
/// with rank 0's model: one metrics row per task, its metrics and example count as keys.
fn eval_tasks(plan: &TrainPlan, model: &Gpt2, step: u64, tokens_seen: u64) -> Result<Vec<Record>> {
    let mut rows = Vec::new();
    for spec in &plan.config.eval.tasks {
        let task = crate::tasks::Task::parse(&spec.task).map_err(|m| TrainError::Config {
            path: plan.config.run_dir.clone(),
            problems: vec![format!("eval.tasks: {m}")],
        })?;
        let opts = crate::tasks::TaskOptions {
            limit: spec.limit,
            ..Default::default()
        };
        let report = crate::tasks::run(model, task, &spec.data, &opts)?;
        let mut row = Record::loss(step, task.name(), f64::NAN, tokens_seen);
        row.scores = report
            .metrics
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain([("n".to_string(), report.n as f64)])
            .collect();
        rows.push(row);
    }
    Ok(rows)
}

/// Writes the step's checkpoint once, from rank 0 (the replicas are identical), and prunes.
fn checkpoint(plan: &TrainPlan, state: &TrainState, model: &Gpt2, opt: &AdamW) -> Result<PathBuf> {
    let c = &plan.config;
    let dir = checkpoint::save(&c.run_dir, state, |d| {
        gpt2_model::save_hf(model, d)?;
        opt.save(&d.join(checkpoint::OPTIMIZER))
    })?;
    checkpoint::prune(&c.run_dir, c.checkpoint.keep_last, c.checkpoint.keep_every)?;
    Ok(dir)
}

/// PyTorch's `clip_grad_norm_` factor: `clip / (norm + 1e-6)`, at most 1; 0 disables clipping.
pub fn clip_scale(norm: f64, clip: f64) -> f64 {
    if clip > 0.0 {
        (clip / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

fn progress_bar(plan: &TrainPlan, start: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(plan.max_steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(start);
    Some(bar)
}

/// The run directory's newest complete checkpoint (for eval/sample defaults).
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(checkpoint::list(run_dir)?.0.last().map(|d| d.1.clone()))
}
