//! The memory a training step needs, estimated from the plan and checked against the device:
//! `gpt2 train --dry-run` prints it, and `train` refuses a plan that breaks a hard device limit
//! (one buffer's size on wgpu, shared memory per workgroup) before anything is allocated, naming
//! the limit and the largest micro-batch that fits.
//!
//! The estimate, per device (each holds a replica), in bytes, with `P` parameters, `N = B·T`
//! tokens per micro-batch, `L` layers, `C` width, `V` vocabulary, `R` LM-head rows per chunk:
//!
//! - weights `4P`, gradients `4P` (`8P` with accumulation: the running sum and the newest),
//!   AdamW moments `8P` (with `distributed.zero: 1`, 8 × the largest share of P one process
//!   owns, `zero.rs`);
//! - activations: what the forward leaves for the backward, tensor by tensor as the code keeps
//!   it ([`kept_per_layer`], [`kept_outside_layers`]); measured to within 1% by
//!   `mem_activations_mb` (experiments/RESULTS.md part 10, `crates/gpt2-cli/tests/train_cli.rs`).
//!   Per layer and token, f32: `ln_1`'s input and output (C each), q, k, v (3C, views of
//!   `c_attn`'s output), the attention's output (C, also `c_proj`'s input; the composed
//!   attention keeps a copy for `c_proj`, C more), `ln_2`'s input and output (C each), GELU's
//!   input and output (4C each): 16 C, plus LayerNorm statistics and the attention's row
//!   log-sum-exp; `model.recompute` drops GELU's output and the LayerNorms' outputs. With
//!   bf16/f16 matmuls all of these are kept in half precision (the LayerNorms' inputs rounded
//!   for the backward), the statistics in f32. Outside the layers: `ln_f`'s input, the LM
//!   head's `dh` `[N, C]` and `dwte` `[V, C]` (the chunked head computes them in the forward);
//! - the largest temporary: one LM-head chunk's logits `R·V·4` (plus the half-precision product
//!   `R·V·2`), or the composed attention's backward `2·B·nh·T²·4`, whichever is larger.
//!
//! `experiments/RESULTS.md` sets it beside the measured peak (`mem_peak_mb`).

use gpt2_model::{DeviceMemory, Recompute};
use serde::Serialize;

use crate::config::TrainPlan;
use crate::error::{Result, TrainError};

/// One kind of tensor the forward keeps for the backward: per token (of the micro-batch) it
/// holds `values` elements of `bytes` each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    pub what: String,
    pub values: u64,
    pub bytes: u64,
}

impl Kept {
    fn new(what: impl Into<String>, values: u64, bytes: u64) -> Self {
        Self {
            what: what.into(),
            values,
            bytes,
        }
    }

    /// Nothing kept when `recomputed` (the entry is then dropped from the list).
    fn unless(mut self, recomputed: bool) -> Self {
        if recomputed {
            self.values = 0;
        }
        self
    }

    /// Bytes per token.
    pub fn per_token(&self) -> u64 {
        self.values * self.bytes
    }
}

/// Whether the step's attention is the composed form, which keeps the probabilities
/// `[B, nh, T, T]`: with `flash_attention: false`, and on flex in half precision (flex's own
/// attention kernel runs in f32 only).
fn keeps_probabilities(plan: &TrainPlan) -> bool {
    let half = plan.model.compute_dtype.cast_dtype().is_some();
    !plan.model.flash_attention || (plan.config.device.kind == "flex" && half)
}

/// What one transformer layer keeps per token for the backward, as the model code keeps it on
/// the plan's backend, in its compute dtype, with its attention, dropout and `recompute`.
pub fn kept_per_layer(plan: &TrainPlan) -> Vec<Kept> {
    let m = &plan.model;
    let (c, nh, t) = (
        m.n_embd as u64,
        m.n_head as u64,
        plan.config.batch.seq_len as u64,
    );
    let half = m.compute_dtype.cast_dtype().is_some();
    let (keep_ln, keep_gelu) = match m.recompute {
        Recompute::None => (true, true),
        Recompute::Gelu => (true, false),
        Recompute::GeluLayernorm => (false, false),
    };
    // The matmuls' inputs: half-precision copies (`linear_at` casts), else the f32 tensors.
    let (mm, mm_name) = if half { (2, "half") } else { (4, "f32") };
    let mut kept = vec![
        Kept::new(
            format!("ln_1 input: the residual stream ({mm_name})"),
            c,
            mm,
        ),
        Kept::new("ln_1 statistics: mean, 1/σ (f32)", 2, 4),
        Kept::new(format!("ln_1 output: c_attn's input ({mm_name})"), c, mm).unless(!keep_ln),
        Kept::new(
            format!("q, k, v: the attention's inputs ({mm_name})"),
            3 * c,
            mm,
        ),
    ];
    let flash = !keeps_probabilities(plan);
    if flash {
        kept.push(Kept::new("attention row log-sum-exp (f32)", nh, 4));
    } else {
        kept.push(Kept::new(
            format!("attention probabilities [B, nh, T, T] ({mm_name})"),
            nh * t,
            mm,
        ));
    }
    kept.push(Kept::new(format!("attention output O ({mm_name})"), c, mm));
    // Our attention kernels (flex f32, Cube flash) write O as [B, T, nh, hd]: the swap back to
    // [B, T, C] is a view and c_proj keeps the same tensor. The composed form's O is
    // [B, nh, T, hd] and c_proj's input a copy.
    if !flash {
        kept.push(Kept::new(
            format!("c_proj's input: O as [B, T, C], a copy ({mm_name})"),
            c,
            mm,
        ));
    }
    kept.extend([
        Kept::new(
            format!("ln_2 input: the residual stream after attention ({mm_name})"),
            c,
            mm,
        ),
        Kept::new("ln_2 statistics: mean, 1/σ (f32)", 2, 4),
        Kept::new(format!("ln_2 output: c_fc's input ({mm_name})"), c, mm).unless(!keep_ln),
        Kept::new(format!("c_fc output: GELU's input ({mm_name})"), 4 * c, mm),
        Kept::new(
            format!("GELU output: mlp.c_proj's input ({mm_name})"),
            4 * c,
            mm,
        )
        .unless(!keep_gelu),
    ]);
    kept.retain(|k| k.values > 0);
    if m.dropout > 0.0 {
        kept.push(Kept::new(
            "dropout masks after c_proj and mlp.c_proj (f32)",
            2 * c,
            4,
        ));
    }
    kept
}

/// What the step keeps per token outside the layers: `ln_f`'s input (in the compute dtype) and
/// statistics, the LM head's `dh` (in the compute dtype) and the embedding dropout's mask.
pub fn kept_outside_layers(plan: &TrainPlan) -> Vec<Kept> {
    let m = &plan.model;
    let c = m.n_embd as u64;
    let half = if m.compute_dtype.cast_dtype().is_some() {
        2
    } else {
        4
    };
    let mut kept = vec![
        Kept::new("ln_f input: the residual stream", c, half),
        Kept::new("ln_f statistics (f32)", 2, 4),
        Kept::new("the LM head's dh, computed in the forward", c, half),
    ];
    if m.dropout > 0.0 {
        kept.push(Kept::new("dropout mask after the embeddings (f32)", c, 4));
    }
    kept
}

/// What the step keeps that does not grow with the tokens, in bytes: the LM head's `dwte`
/// `[V, C]` in the head's dtype and, with half-precision matmuls, each layer's `attn.c_proj`
/// weight cast for its matmul (`C²` values; the fused LayerNorm/GELU + linear ops keep the f32
/// parameters and cast them again in the backward).
fn kept_constant(plan: &TrainPlan) -> u64 {
    let m = &plan.model;
    let (l, c, v) = (m.n_layer as u64, m.n_embd as u64, m.vocab_size as u64);
    match m.compute_dtype.cast_dtype() {
        None => v * c * 4,
        Some(_) => v * c * 2 + l * c * c * 2,
    }
}

/// What one optimizer step holds on one device, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    /// `optimizer` is one process's ZeRO-1 share, not the whole state.
    pub zero_sharded: bool,
    pub activations: u64,
    /// Bytes per token that each layer keeps for the backward ([`kept_per_layer`]).
    pub per_layer_per_token: u64,
    /// Bytes per token kept outside the layers ([`kept_outside_layers`]).
    pub outside_per_token: u64,
    /// Bytes kept whatever the micro-batch (the head's `dwte`, half-precision weight copies).
    pub constant: u64,
    /// Tokens per micro-batch and layers: `activations = tokens·(layers·per_layer_per_token +
    /// outside_per_token) + constant`.
    pub tokens: u64,
    pub layers: u64,
    /// The largest single temporary of the step and what it is.
    pub largest_temporary: u64,
    pub largest_temporary_is: String,
    /// Rows of the LM head per chunk.
    pub lm_head_chunk_rows: usize,
    pub total: u64,
}

/// One tensor that must fit in a single device buffer: its name and size for the run's
/// micro-batch, and its size per sequence when it grows with the micro-batch.
struct Buffer {
    name: String,
    bytes: u64,
    per_sequence: Option<u64>,
}

/// The estimate for `plan` with the LM head in chunks of `chunk_rows` rows.
pub fn estimate(plan: &TrainPlan, chunk_rows: usize) -> MemoryEstimate {
    let m = &plan.model;
    let b = &plan.config.batch;
    let p = plan.num_params;
    let (l, v) = (m.n_layer as u64, m.vocab_size as u64);
    let (bsz, t, nh) = (b.micro_batch as u64, b.seq_len as u64, m.n_head as u64);
    let n = bsz * t;
    let half = m.compute_dtype.cast_dtype().is_some();
    let per_layer: u64 = kept_per_layer(plan).iter().map(Kept::per_token).sum();
    let outside: u64 = kept_outside_layers(plan).iter().map(Kept::per_token).sum();
    let constant = kept_constant(plan);
    let activations = n * (l * per_layer + outside) + constant;
    let rows = chunk_rows.min(n as usize).max(1) as u64;
    let head = rows * v * if half { 6 } else { 4 };
    let composed = if keeps_probabilities(plan) {
        2 * bsz * nh * t * t * 4
    } else {
        0
    };
    let (largest_temporary, largest_temporary_is) = if composed > head {
        (
            composed,
            format!("attention backward [{bsz}, {nh}, {t}, {t}] × 2"),
        )
    } else {
        (head, format!("LM-head chunk logits [{rows}, {v}]"))
    };
    let weights = 4 * p;
    let gradients = if plan.grad_accum_steps > 1 {
        8 * p
    } else {
        4 * p
    };
    // ZeRO-1: this process's share of the moments (the largest share: `zero.rs`).
    let optimizer = 8 * match zero_shards(plan) {
        Some(shards) => shards.largest(),
        None => p,
    };
    MemoryEstimate {
        weights,
        gradients,
        optimizer,
        zero_sharded: zero_shards(plan).is_some(),
        activations,
        per_layer_per_token: per_layer,
        outside_per_token: outside,
        constant,
        tokens: n,
        layers: l,
        largest_temporary,
        largest_temporary_is,
        lm_head_chunk_rows: rows as usize,
        total: weights + gradients + optimizer + activations + largest_temporary,
    }
}

/// The largest single tensor a step of `plan` allocates, in bytes (the plan's LM-head chunk rows
/// must be set): what the trainer sizes the GPU pools' pages for before it starts.
pub fn largest_tensor_bytes(plan: &TrainPlan) -> u64 {
    buffers(plan, plan.model.lm_head_chunk_rows)
        .iter()
        .map(|b| b.bytes)
        .max()
        .unwrap_or(0)
}

/// The tensors of a step that must each fit one buffer.
fn buffers(plan: &TrainPlan, chunk_rows: usize) -> Vec<Buffer> {
    let m = &plan.model;
    let b = &plan.config.batch;
    let (c, v, t, nh) = (
        m.n_embd as u64,
        m.vocab_size as u64,
        b.seq_len as u64,
        m.n_head as u64,
    );
    let bsz = b.micro_batch as u64;
    // A chunk never has more rows than the micro-batch has tokens.
    let chunk_rows = chunk_rows.min(b.micro_batch * b.seq_len).max(1);
    let mut out = vec![
        Buffer {
            name: format!("the MLP activations [{} × {t}, {}] f32", bsz, 4 * c),
            bytes: bsz * t * 4 * c * 4,
            per_sequence: Some(t * 4 * c * 4),
        },
        Buffer {
            name: format!("the token embedding wte (and its gradient) [{v}, {c}] f32"),
            bytes: v * c * 4,
            per_sequence: None,
        },
        Buffer {
            name: format!("one LM-head chunk's logits [{chunk_rows}, {v}] f32"),
            bytes: chunk_rows as u64 * v * 4,
            per_sequence: None,
        },
    ];
    if !m.flash_attention {
        out.push(Buffer {
            name: format!("the attention probabilities [{bsz}, {nh}, {t}, {t}] f32"),
            bytes: bsz * nh * t * t * 4,
            per_sequence: Some(nh * t * t * 4),
        });
    }
    out
}

/// Refuses `plan` where a tensor cannot fit one of the device's buffers or flash attention's
/// tiles cannot fit its shared memory; returns notes for the plan table (the estimate against the
/// device's memory, which is a warning, not a refusal: the figure is an estimate).
pub fn check(
    plan: &TrainPlan,
    estimate: &MemoryEstimate,
    device: &DeviceMemory,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if let Some(limit) = device.max_buffer_bytes {
        let bufs = buffers(plan, estimate.lm_head_chunk_rows);
        let fits = bufs
            .iter()
            .filter_map(|b| b.per_sequence.map(|s| limit / s))
            .min()
            .unwrap_or(u64::MAX);
        for b in bufs.iter().filter(|b| b.bytes > limit) {
            let advice = match b.per_sequence {
                _ if bufs
                    .iter()
                    .any(|x| x.per_sequence.is_none() && x.bytes > limit) =>
                {
                    "no micro-batch fits: the model itself is too large for this device's buffers"
                        .to_string()
                }
                Some(_) if fits == 0 => format!(
                    "not even one sequence of {} tokens fits: lower batch.seq_len",
                    plan.config.batch.seq_len
                ),
                Some(_) => format!("the largest micro-batch that fits is {fits}"),
                None => "lower device.lm_head_chunk_rows".to_string(),
            };
            problems.push(format!(
                "{} needs {} in one buffer; the device's largest buffer is {} ({advice})",
                b.name,
                mb(b.bytes),
                mb(limit)
            ));
        }
    }
    if let (Some(shared), Some(units), true) = (
        device.shared_memory_bytes,
        device.max_units_per_cube,
        plan.model.flash_attention,
    ) {
        let hd = plan.model.n_embd / plan.model.n_head;
        if let Some(need) = flash_attention_shortfall(hd, shared, units) {
            problems.push(format!(
                "flash attention with head size {hd} needs {need} B of shared memory per \
                 workgroup; the device has {shared} B (set device.flash_attention: false to use \
                 the composed attention)"
            ));
        }
    }
    let budget = plan
        .config
        .device
        .memory_gb
        .map(|g| ((g * 1e9) as u64, "device.memory_gb"))
        .or(device.capacity_bytes.map(|c| (c, "the device's memory")));
    if let Some((budget, what)) = budget {
        notes.push(format!(
            "estimate {} {} {what} ({})",
            mb(estimate.total),
            verdict(estimate.total, budget),
            mb(budget)
        ));
    }
    if problems.is_empty() {
        Ok(notes)
    } else {
        Err(TrainError::Device {
            requested: format!("{} {:?}", plan.config.device.kind, plan.config.device.ids),
            message: problems.join("; "),
            hint: "lower batch.micro_batch (keeping total_batch_tokens: more accumulation) or \
                   batch.seq_len, or train on a device with larger limits"
                .into(),
        })
    }
}

/// How much more than the estimate a step has been measured to hold: on lavapipe the two-step
/// peaks ran 19–25% above it at T ≤ 256 (the memory pools reserve pages of fixed sizes, which
/// weighs most where the tensors are small; experiments/RESULTS.md, part 6). The three-step
/// maxima measured later reach 34% at T = 64, one page more; the margin has not been raised.
const MEASURED_OVERSHOOT: f64 = 1.25;

/// The estimate against a memory budget: "fits" only with the measured overshoot to spare.
fn verdict(total: u64, budget: u64) -> &'static str {
    if total as f64 * MEASURED_OVERSHOOT <= budget as f64 {
        "fits"
    } else if total <= budget {
        "fits only barely (measured peaks have run up to 25% above the estimate)"
    } else {
        "does NOT fit"
    }
}

/// The shared memory flash attention needs beyond `shared` bytes, when its tiles cannot fit.
fn flash_attention_shortfall(head_dim: usize, shared: usize, units: usize) -> Option<usize> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    {
        use gpt2_model::cube::attention::{block_rows, Kernel};
        for kernel in Kernel::ALL {
            if block_rows(head_dim, shared, units, kernel).is_none() {
                return Some(kernel.shared_bytes_per_row(head_dim));
            }
        }
        None
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    {
        let _ = (head_dim, shared, units);
        None
    }
}

/// The ZeRO-1 cut of the plan's parameters over its processes, where it shards anything.
pub fn zero_shards(plan: &TrainPlan) -> Option<crate::zero::Shards> {
    (plan.config.distributed.zero == 1 && plan.world.world_size > 1).then(|| {
        crate::zero::Shards::of(
            &crate::zero::param_sizes(&plan.model),
            plan.world.world_size,
        )
    })
}

/// Bytes as MB (10⁶), one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl MemoryEstimate {
    /// Rows for the plan table.
    pub fn rows(&self) -> Vec<(String, String)> {
        vec![
            (
                "memory/device".into(),
                format!(
                    "{} total: weights {}, gradients {}, AdamW {}{}, activations {}",
                    mb(self.total),
                    mb(self.weights),
                    mb(self.gradients),
                    mb(self.optimizer),
                    if self.zero_sharded {
                        " (ZeRO-1: this process's share)"
                    } else {
                        ""
                    },
                    mb(self.activations)
                ),
            ),
            (
                "activations".into(),
                format!(
                    "{} tokens × ({} layers × {} + {}) B + {} B = {} B (the list: \
                     `gpt2 train --dry-run`)",
                    self.tokens,
                    self.layers,
                    self.per_layer_per_token,
                    self.outside_per_token,
                    self.constant,
                    self.activations
                ),
            ),
            (
                "largest temporary".into(),
                format!(
                    "{} ({}; LM head in chunks of {} rows)",
                    mb(self.largest_temporary),
                    self.largest_temporary_is,
                    self.lm_head_chunk_rows
                ),
            ),
        ]
    }
}

/// The per-layer and outside-the-layers lists of what the forward keeps, as plan-table rows:
/// each tensor's values and bytes per token.
pub fn kept_rows(plan: &TrainPlan) -> Vec<(String, String)> {
    let row = |prefix: &str, k: &Kept| {
        (
            format!("{prefix} {}", k.what),
            format!(
                "{} values × {} B = {} B/token",
                k.values,
                k.bytes,
                k.per_token()
            ),
        )
    };
    let layer = kept_per_layer(plan);
    let outside = kept_outside_layers(plan);
    let mut rows: Vec<_> = layer.iter().map(|k| row("layer:", k)).collect();
    rows.push((
        "layer: total".into(),
        format!(
            "{} B/token × {} layers",
            layer.iter().map(Kept::per_token).sum::<u64>(),
            plan.model.n_layer
        ),
    ));
    rows.extend(outside.iter().map(|k| row("outside:", k)));
    rows.push((
        "constant".into(),
        format!(
            "{} (the head's dwte; half-precision weight copies)",
            mb(kept_constant(plan))
        ),
    ));
    rows
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn a_budget_within_the_measured_overshoot_is_called_tight_not_fitting() {
        assert_eq!(verdict(100, 200), "fits");
        assert_eq!(verdict(100, 125), "fits");
        assert!(verdict(100, 124).starts_with("fits only barely"));
        assert!(verdict(100, 100).starts_with("fits only barely"));
        assert_eq!(verdict(100, 99), "does NOT fit");
    }
}
