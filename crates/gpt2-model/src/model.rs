//! GPT-2 in Burn, top to bottom in nanoGPT's reading order (`model.py`): helpers →
//! CausalSelfAttention → Mlp → Block → Gpt2. Field names are GPT-2's own (`wte`, `wpe`, `h`,
//! `ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`, `ln_f`) so HF/OpenAI
//! weights map one to one (Burn's LayerNorm calls weight/bias `gamma`/`beta`).
//!
//! Sources: Radford et al. 2019 (GPT-2), OpenAI `gpt-2/src/model.py`, karpathy/nanoGPT
//! `model.py`, HF `modeling_gpt2.py`. Pre-LayerNorm blocks, a final `ln_f`, biases everywhere,
//! tanh-approximate GELU, MLP width 4·C, LM head tied to `wte`.
//!
//! **Initialisation** (this project's stated choice, see GPT2-REFERENCE.md "Ours"): wte ~
//! N(0, 0.02) (OpenAI/nanoGPT), wpe ~ N(0, 0.01) (OpenAI `model.py`), every Linear weight ~
//! N(0, 0.02), except `attn.c_proj` and `mlp.c_proj` ~ N(0, 0.02/√(2·n_layer)) (GPT-2 paper §2.3's
//! residual scaling as nanoGPT/llm.c implement it: two residual adds per block), all biases 0,
//! LayerNorm weight 1 and bias 0. Burn's default initialisers (Kaiming uniform for Linear,
//! N(0, 1) for Embedding) are not used anywhere. Parameters are drawn eagerly, in a fixed order,
//! from our own `StdRng` seeded with the model seed (on the CPU, then uploaded), so the same seed
//! gives the same model on every backend.
//!
//! **Precision**: parameters are f32. With `compute_dtype` bf16/f16 the weights and activations
//! are cast for every matmul and the attention op, and cast back to f32 where they rejoin the
//! residual stream; the residual stream, LayerNorm and the softmax of the loss stay f32. GELU takes `c_fc`'s output
//! in the compute dtype and computes in f32 (the same values as casting first). What the backward
//! keeps is in the compute dtype, as llm.c keeps it: the matmuls' inputs, GELU's, and the
//! LayerNorms' inputs (the residual stream, rounded for the backward only); LayerNorm statistics
//! and attention's log-sum-exp stay f32.
//!
//! **Dropout**: `config.dropout` applies after the embedding sum and on the outputs of
//! `attn.c_proj` and `mlp.c_proj` (residual dropout). Burn's attention op has no dropout, so
//! there is no dropout on the attention weights (HF's `attn_pdrop`). Dropout only acts on an
//! autodiff device with the module in training mode.

use burn::backend::Dispatch;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::{AttentionModuleOptions, IndexingUpdateOp};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{ComputeDtype, Gpt2Config, Recompute};
use crate::error::Result;
use crate::fused::FusedOps;

/// Std of wte and of every Linear weight (OpenAI `model.py`, nanoGPT).
pub const INIT_STD: f64 = 0.02;
/// Std of wpe (OpenAI `model.py`: `tf.random_normal_initializer(stddev=0.01)`).
pub const INIT_STD_WPE: f64 = 0.01;

impl ComputeDtype {
    /// The dtype to cast to around matmuls, or `None` for the plain f32 path (no casts at all).
    pub fn cast_dtype(self) -> Option<FloatDType> {
        match self {
            ComputeDtype::F32 => None,
            ComputeDtype::Bf16 => Some(FloatDType::BF16),
            ComputeDtype::F16 => Some(FloatDType::F16),
        }
    }
}

/// `x·W + b` at `dtype`, the result left in `dtype` (a no-op cast where `x` already is).
fn linear_in<const D: usize>(layer: &Linear, x: Tensor<D>, dtype: Option<FloatDType>) -> Tensor<D> {
    match dtype {
        None => layer.forward(x),
        Some(dt) => linear(
            x.cast(dt),
            layer.weight.val().cast(dt),
            layer.bias.as_ref().map(|b| b.val().cast(dt)),
        ),
    }
}

/// The random source of initialisation: our own seeded RNG (ChaCha12 `StdRng`) plus the
/// target device. Values are drawn on the CPU in a fixed order and uploaded, so a seed gives
/// the same weights on every backend and whatever else uses the device's (global) RNG
/// concurrently, e.g. other tests or dropout.
struct Init {
    rng: StdRng,
    device: Device,
}

impl Init {
    fn new(seed: u64, device: &Device) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            device: device.clone(),
        }
    }

    /// A parameter ~ N(0, std²), drawn with the Box–Muller transform.
    fn normal<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Param<Tensor<D>> {
        let n: usize = shape.iter().product();
        let mut values = Vec::with_capacity(n + 1);
        while values.len() < n {
            // u1 in (0, 1] so that ln(u1) is finite.
            let u1 = 1.0 - self.rng.random::<f64>();
            let u2 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let theta = std::f64::consts::TAU * u2;
            values.push((r * theta.cos()) as f32);
            values.push((r * theta.sin()) as f32);
        }
        values.truncate(n);
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }

    /// A Linear `[d_in, d_out]` with weight ~ N(0, std²) and zero bias (Burn's LinearConfig
    /// would draw the bias from the weight's initializer, so it is built by hand).
    fn linear(&mut self, d_in: usize, d_out: usize, std: f64) -> Linear {
        Linear {
            weight: self.normal([d_in, d_out], std),
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], &self.device))),
        }
    }
}

/// The key/value cache of one attention layer: `[B, n_head, T_past, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    /// Keys and values seen so far, `None` before the first step.
    pub kv: Option<(Tensor<4>, Tensor<4>)>,
}

/// Key/value caches of all layers plus the number of positions already processed.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One entry per block.
    pub layers: Vec<LayerKv>,
    /// Positions already in the cache (the position of the next token).
    pub len: usize,
}

impl KvCache {
    /// An empty cache for `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_layer],
            len: 0,
        }
    }

    /// Forgets everything (next token is position 0 again).
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| l.kv = None);
        self.len = 0;
    }
}

/// Multi-head causal self-attention with a fused q,k,v projection.
#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// Fused q,k,v projection, weight `[C, 3C]` (HF Conv1D layout).
    pub c_attn: Linear,
    /// Output projection, weight `[C, C]`.
    pub c_proj: Linear,
    /// Residual dropout on the output.
    pub resid_dropout: Dropout,
    /// Number of heads.
    pub n_head: usize,
    #[module(skip)]
    compute_dtype: ComputeDtype,
    #[module(skip)]
    flash: bool,
}

impl CausalSelfAttention {
    fn new(config: &Gpt2Config, init: &mut Init) -> Self {
        let c = config.n_embd;
        let proj_std = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        Self {
            c_attn: init.linear(c, 3 * c, INIT_STD),
            c_proj: init.linear(c, c, proj_std),
            resid_dropout: DropoutConfig::new(config.dropout).init(),
            n_head: config.n_head,
            compute_dtype: config.compute_dtype,
            flash: config.flash_attention,
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, C]`; with a cache, its k/v grow from `[B, nh, T_past, hd]` to
    ///   `[B, nh, T_past + T, hd]` and queries attend to all past keys (causal mask aligned at the
    ///   bottom right, as Burn's `is_causal` does).
    /// - output: `[B, T, C]`
    pub fn forward(&self, x: Tensor<3>, cache: Option<&mut LayerKv>) -> Tensor<3> {
        let qkv = linear_in(&self.c_attn, x, self.compute_dtype.cast_dtype());
        self.attend(qkv, cache)
    }

    /// Attention from `c_attn`'s output `qkv` `[B, T, 3C]` (in the compute dtype) on: split
    /// into heads, attention, `c_proj`, dropout. Output `[B, T, C]` f32.
    fn attend(&self, qkv: Tensor<3>, cache: Option<&mut LayerKv>) -> Tensor<3> {
        let [b, t, c3] = qkv.dims();
        let c = c3 / 3;
        let (nh, hd) = (self.n_head, c / self.n_head);
        let dt = self.compute_dtype.cast_dtype();
        let head = |i: usize| {
            qkv.clone()
                .narrow(2, i * c, c) // (B, T, C)
                .reshape([b, t, nh, hd])
                .swap_dims(1, 2) // (B, nh, T, hd)
        };
        let (q, mut k, mut v) = (head(0), head(1), head(2));
        if let Some(cache) = cache {
            if let Some((past_k, past_v)) = cache.kv.take() {
                k = Tensor::cat(vec![past_k, k], 2); // (B, nh, T_past + T, hd)
                v = Tensor::cat(vec![past_v, v], 2);
            }
            cache.kv = Some((k.clone(), v.clone()));
        }
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = match dt {
            None => (q, k, v),
            Some(d) => (q.cast(d), k.cast(d), v.cast(d)),
        };
        // Without past keys (training, evaluation, a prompt's first pass) our fused op: flash
        // attention on the GPU backends, memory linear in T. With a KV cache Burn's op, whose
        // causal mask is aligned bottom-right.
        let y = if k.dims()[2] == t {
            causal_attention(q, k, v, scale, self.flash)
        } else {
            let options = AttentionModuleOptions {
                scale: Some(scale),
                softcap: None,
                is_causal: true,
            };
            attention(q, k, v, None, None, options)
        };
        // (B, nh, T, hd) → (B, T, C), heads side by side, still in the compute dtype: our
        // attention writes O as [B, T, nh, hd], so this is a view, and c_proj keeps the tensor
        // the attention's backward keeps as O instead of a copy.
        let y = y.swap_dims(1, 2).reshape([b, t, c]);
        self.resid_dropout
            .forward(linear_in(&self.c_proj, y, dt).cast(FloatDType::F32))
    }
}

/// Causal softmax attention, `softmax(q·kᵀ·scale + causal) · v`, as one op with a hand-written
/// backward (`fused.rs`). Burn 0.22's autodiff has no attention op of its own: on an autodiff
/// device `attention` is `attention_fallback`, ~12 tracked ops over `[B, nh, T, T]` (scale,
/// mask, max, sub, exp, sum, div, ...), each with its own backward. On flex this op keeps the
/// probabilities `P` and computes the gradients in closed form (experiments/RESULTS.md,
/// attempts); on the GPU backends with `flash` it is flash attention (`cube/attention.rs`): only
/// `O` and the row log-sum-exp are kept, and `P` is recomputed block by block in the backward.
///
/// # Shapes
/// - `q`, `k`, `v`: `[B, nh, T, hd]` → `[B, nh, T, hd]`
pub fn causal_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f64,
    flash: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::causal_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        scale,
        flash,
    ))
}

/// The position-wise MLP: `c_fc` (C → 4C), tanh-approximate GELU, `c_proj` (4C → C).
#[derive(Module, Debug)]
pub struct Mlp {
    /// Expansion, weight `[C, 4C]`.
    pub c_fc: Linear,
    /// Projection back, weight `[4C, C]`.
    pub c_proj: Linear,
    /// Residual dropout on the output.
    pub dropout: Dropout,
    #[module(skip)]
    compute_dtype: ComputeDtype,
}

impl Mlp {
    fn new(config: &Gpt2Config, init: &mut Init) -> Self {
        let c = config.n_embd;
        let proj_std = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        Self {
            c_fc: init.linear(c, 4 * c, INIT_STD),
            c_proj: init.linear(4 * c, c, proj_std),
            dropout: DropoutConfig::new(config.dropout).init(),
            compute_dtype: config.compute_dtype,
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, C]` → output `[B, T, C]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear_in(&self.c_fc, x, self.compute_dtype.cast_dtype()); // (B, T, 4C)
        self.project(h, false)
    }

    /// GELU and `c_proj` (one op, `fused/linear.rs`) from `c_fc`'s output `h` `[B, T, 4C]` in
    /// the compute dtype (GELU computes in f32 inside, so the backward keeps `h` at 2 bytes a
    /// value in half precision), then dropout: `[B, T, C]` f32. With `recompute` the backward
    /// recomputes GELU's output instead of keeping it.
    fn project(&self, h: Tensor<3>, recompute: bool) -> Tensor<3> {
        let dt = self.compute_dtype.cast_dtype();
        let bias = self
            .c_proj
            .bias
            .as_ref()
            .expect("GPT-2's linear layers have a bias");
        let y = Tensor::<3>::from_dispatch(<Dispatch as FusedOps>::gelu_linear(
            h.into_dispatch(),
            self.c_proj.weight.val().into_dispatch(),
            bias.val().into_dispatch(),
            dt,
            recompute,
        ));
        self.dropout.forward(y.cast(FloatDType::F32)) // (B, T, C)
    }
}

/// GPT-2's tanh-approximate GELU (HF `gelu_new`), `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`,
/// computed through the identity `0.5·(1 + tanh(z)) = sigmoid(2z)` as `x·sigmoid(x·(a + b·x²))`
/// with `a = 2√(2/π)`, `b = 0.044715·a`. One op with a closed-form backward (`fused.rs`): on
/// flex a single parallel, vectorised pass each way instead of Burn's `gelu_approximate`, eight
/// tracked single-threaded ops with a scalar `exp` (experiments/RESULTS.md, attempts).
pub fn gelu_tanh(x: Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::gelu(x.into_dispatch()))
}

/// A pre-LayerNorm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Causal self-attention.
    pub attn: CausalSelfAttention,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// The MLP.
    pub mlp: Mlp,
    #[module(skip)]
    eps: f64,
    /// The dtype the LayerNorms keep their input in for the backward (the compute dtype).
    #[module(skip)]
    compute_dtype: ComputeDtype,
    /// What the backward recomputes instead of keeping.
    #[module(skip)]
    recompute: Recompute,
}

impl Block {
    fn new(config: &Gpt2Config, init: &mut Init) -> Self {
        let device = init.device.clone();
        let ln = || {
            LayerNormConfig::new(config.n_embd)
                .with_epsilon(config.layer_norm_epsilon)
                .init(&device) // weight 1, bias 0
        };
        let ln_1 = ln();
        let attn = CausalSelfAttention::new(config, init);
        let ln_2 = ln();
        let mlp = Mlp::new(config, init);
        Self {
            ln_1,
            attn,
            ln_2,
            mlp,
            eps: config.layer_norm_epsilon,
            compute_dtype: config.compute_dtype,
            recompute: config.recompute,
        }
    }

    /// Assembles a block from loaded layers (used by the HF importer; no random draws).
    pub(crate) fn from_parts(
        config: &Gpt2Config,
        ln_1: LayerNorm,
        c_attn: Linear,
        attn_c_proj: Linear,
        ln_2: LayerNorm,
        c_fc: Linear,
        mlp_c_proj: Linear,
    ) -> Self {
        let dropout = || DropoutConfig::new(config.dropout).init();
        Self {
            ln_1,
            attn: CausalSelfAttention {
                c_attn,
                c_proj: attn_c_proj,
                resid_dropout: dropout(),
                n_head: config.n_head,
                compute_dtype: config.compute_dtype,
                flash: config.flash_attention,
            },
            ln_2,
            mlp: Mlp {
                c_fc,
                c_proj: mlp_c_proj,
                dropout: dropout(),
                compute_dtype: config.compute_dtype,
            },
            eps: config.layer_norm_epsilon,
            compute_dtype: config.compute_dtype,
            recompute: config.recompute,
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, C]` → output `[B, T, C]`
    ///
    /// Each LayerNorm is one op with the matmul after it, and GELU with the one after it
    /// (`fused/linear.rs`), so that `recompute` can leave their outputs out of what the backward
    /// keeps. In a half-precision run what is kept is in the compute dtype, the LayerNorms'
    /// inputs (the residual stream) included.
    pub fn forward(&self, x: Tensor<3>, cache: Option<&mut LayerKv>) -> Tensor<3> {
        let dt = self.compute_dtype.cast_dtype();
        let recompute_ln = self.recompute == Recompute::GeluLayernorm;
        let qkv = layer_norm_linear(
            &self.ln_1,
            &self.attn.c_attn,
            x.clone(),
            self.eps,
            dt,
            recompute_ln,
        );
        let x = x + self.attn.attend(qkv, cache);
        let h = layer_norm_linear(
            &self.ln_2,
            &self.mlp.c_fc,
            x.clone(),
            self.eps,
            dt,
            recompute_ln,
        );
        x + self.mlp.project(h, self.recompute != Recompute::None)
    }
}

/// `ln(x)` as one op with a hand-written backward (`fused.rs`): Burn's LayerNorm under autodiff
/// is some nine tracked ops (mean, subtract, square, mean, add, sqrt, divide, scale, shift), each
/// a pass with its own backward; this is one kernel forward and two backward on the GPU backends
/// (`cube/norm.rs`), f32 statistics. `x` is kept for the backward in f32.
///
/// # Shapes
/// - `x`: `[.., C]` → the same
pub fn layer_norm<const D: usize>(ln: &LayerNorm, x: Tensor<D>, eps: f64) -> Tensor<D> {
    layer_norm_keeping(ln, x, eps, None)
}

/// [`layer_norm`], keeping `x` for the backward in `keep` where given (the compute dtype of a
/// half-precision run: the residual stream is then kept at 2 bytes a value, as llm.c keeps it;
/// the backward computes in f32 from the rounded `x` and the f32 statistics).
pub fn layer_norm_keeping<const D: usize>(
    ln: &LayerNorm,
    x: Tensor<D>,
    eps: f64,
    keep: Option<FloatDType>,
) -> Tensor<D> {
    let beta = ln
        .beta
        .as_ref()
        .expect("GPT-2's LayerNorms have a bias")
        .val();
    Tensor::from_dispatch(<Dispatch as FusedOps>::layer_norm(
        x.into_dispatch(),
        ln.gamma.val().into_dispatch(),
        beta.into_dispatch(),
        eps,
        keep,
    ))
}

/// `ln(x)·W + b` as one op (`fused/linear.rs`): `x` `[B, T, C]` f32 → `[B, T, out]` in `dtype`.
/// Keeps `x` (in `dtype`) for the backward and, unless `recompute`, `ln(x)`.
fn layer_norm_linear(
    ln: &LayerNorm,
    layer: &Linear,
    x: Tensor<3>,
    eps: f64,
    dtype: Option<FloatDType>,
    recompute: bool,
) -> Tensor<3> {
    let beta = ln.beta.as_ref().expect("GPT-2's LayerNorms have a bias");
    let bias = layer
        .bias
        .as_ref()
        .expect("GPT-2's linear layers have a bias");
    Tensor::from_dispatch(<Dispatch as FusedOps>::layer_norm_linear(
        x.into_dispatch(),
        ln.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
        eps,
        dtype,
        recompute,
    ))
}

/// The GPT-2 language model (HF's `GPT2LMHeadModel`): embeddings, `n_layer` blocks, `ln_f`, and
/// an LM head that reuses `wte.weight` (tied; one parameter, gradients from both uses add up).
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embedding `[vocab_size, C]`; also the (transposed) LM head.
    pub wte: Embedding,
    /// Learned position embedding `[block_size, C]`.
    pub wpe: Embedding,
    /// Dropout on the embedding sum.
    pub drop: Dropout,
    /// The transformer blocks.
    pub h: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    #[module(skip)]
    config: Gpt2Config,
}

impl Gpt2 {
    /// Builds a freshly initialised model (see the module docs for the init) on `device`.
    ///
    /// The weights come from our own RNG seeded with `seed` (drawn on the CPU in a fixed order),
    /// so the same seed gives bit-identical weights on any backend and regardless of what else
    /// uses the device RNG. The device RNG (dropout masks) is deliberately left alone: flex's is
    /// global to the process, so building a model (say, for evaluation) must not reset the
    /// trainer's dropout stream; seed it in the trainer (`device.seed`, e.g. from seed and step).
    pub fn new(config: &Gpt2Config, device: &Device, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut init = Init::new(seed, device);
        let (v, t, c) = (config.vocab_size, config.block_size, config.n_embd);
        let wte = Embedding {
            weight: init.normal([v, c], INIT_STD),
        };
        let wpe = Embedding {
            weight: init.normal([t, c], INIT_STD_WPE),
        };
        let h = (0..config.n_layer)
            .map(|_| Block::new(config, &mut init))
            .collect();
        let ln_f = LayerNormConfig::new(c)
            .with_epsilon(config.layer_norm_epsilon)
            .init(device);
        Ok(Self {
            wte,
            wpe,
            drop: DropoutConfig::new(config.dropout).init(),
            h,
            ln_f,
            config: config.clone(),
        })
    }

    /// Assembles a model from already-built parts (used by the HF importer).
    pub(crate) fn from_parts(
        config: Gpt2Config,
        wte: Embedding,
        wpe: Embedding,
        h: Vec<Block>,
        ln_f: LayerNorm,
    ) -> Self {
        Self {
            wte,
            wpe,
            drop: DropoutConfig::new(config.dropout).init(),
            h,
            ln_f,
            config,
        }
    }

    /// Changes the settings that hold no parameters (matmul precision and dropout), e.g. to
    /// train an imported checkpoint in bf16 or with dropout. Weights are untouched.
    pub fn with_runtime_settings(
        mut self,
        compute_dtype: ComputeDtype,
        dropout: f64,
    ) -> Result<Self> {
        let mut config = self.config.clone();
        config.compute_dtype = compute_dtype;
        config.dropout = dropout;
        config.validate()?;
        self.drop.prob = dropout;
        for block in &mut self.h {
            block.attn.compute_dtype = compute_dtype;
            block.attn.resid_dropout.prob = dropout;
            block.mlp.compute_dtype = compute_dtype;
            block.mlp.dropout.prob = dropout;
            block.compute_dtype = compute_dtype;
        }
        self.config = config;
        Ok(self)
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.wte.weight.val().device()
    }

    /// Exact parameter count of this module (tied embedding counted once, since it is one
    /// parameter); equals `config().num_params()`.
    pub fn num_params(&self) -> usize {
        Module::num_params(self)
    }

    /// Training FLOPs per token, see [`Gpt2Config::flops_per_token`].
    pub fn flops_per_token(&self, seq_len: usize) -> u64 {
        self.config.flops_per_token(seq_len)
    }

    /// Full forward pass.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]` token ids, `T <= block_size`
    /// - output: logits `[B, T, vocab_size]` (f32)
    ///
    /// # Panics
    /// If `T > block_size` (positions beyond the learned table do not exist).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.forward_from(tokens, 0, None)
    }

    /// Incremental forward: processes `tokens` as the positions right after those in `cache`
    /// and appends their keys/values to it. Logits equal those of [`Gpt2::forward`] on the whole
    /// sequence at the same positions.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T_new]`, `cache.len + T_new <= block_size`
    /// - output: logits `[B, T_new, vocab_size]`
    pub fn forward_cached(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let offset = cache.len;
        let [_, t] = tokens.dims();
        let logits = self.forward_from(tokens, offset, Some(&mut cache.layers));
        cache.len += t;
        logits
    }

    fn forward_from(
        &self,
        tokens: Tensor<2, Int>,
        offset: usize,
        caches: Option<&mut Vec<LayerKv>>,
    ) -> Tensor<3> {
        self.lm_head(self.hidden(tokens, offset, caches))
    }

    /// Everything before the LM head: embeddings, the blocks and `ln_f`, `[B, T, C]`.
    fn hidden(
        &self,
        tokens: Tensor<2, Int>,
        offset: usize,
        caches: Option<&mut Vec<LayerKv>>,
    ) -> Tensor<3> {
        let [_, t] = tokens.dims();
        assert!(
            offset + t <= self.config.block_size,
            "sequence of {} positions exceeds block_size {}",
            offset + t,
            self.config.block_size
        );
        let device = tokens.device();
        let pos =
            Tensor::<1, Int>::arange(offset as i64..(offset + t) as i64, &device).reshape([1, t]); // (1, T)
        let tok_emb = self.wte.forward(tokens); // (B, T, C)
        let pos_emb = self.wpe.forward(pos); // (1, T, C)
        let mut x = self.drop.forward(tok_emb + pos_emb);
        match caches {
            Some(caches) => {
                assert_eq!(
                    caches.len(),
                    self.h.len(),
                    "KV cache has the wrong layer count"
                );
                for (block, cache) in self.h.iter().zip(caches.iter_mut()) {
                    x = block.forward(x, Some(cache));
                }
            }
            None => {
                for block in &self.h {
                    x = block.forward(x, None);
                }
            }
        }
        layer_norm_keeping(
            &self.ln_f,
            x,
            self.config.layer_norm_epsilon,
            self.config.compute_dtype.cast_dtype(),
        )
    }

    /// The tied LM head: `x · wteᵀ`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, C]` → logits `[B, T, vocab_size]`
    pub fn lm_head(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let w = self.wte.weight.val(); // (V, C)
        let [v, _] = w.dims();
        // One (1, B·T, C)·(1, C, V) product. It was 4 batched row blocks while the loss ran
        // unfused (flex gives each matrix of a batched product its own thread); with the fused
        // loss, one product is as fast or faster on 2 cores and B batched products are slower
        // (experiments/RESULTS.md, attempts).
        let x = x.reshape([1, b * t, c]);
        let w = w.transpose().unsqueeze::<3>(); // (1, C, V)
        let logits = match self.config.compute_dtype.cast_dtype() {
            None => x.matmul(w),
            Some(d) => x.cast(d).matmul(w.cast(d)).cast(FloatDType::F32),
        }; // (1, B·T, V)
        logits.reshape([b, t, v])
    }

    /// Mean cross-entropy of `logits` against `targets`, see [`cross_entropy`].
    pub fn loss(&self, logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
        cross_entropy(logits, targets)
    }

    /// Mean cross-entropy of the next-token predictions (the training loss), `[1]`. The same
    /// value as `loss(forward(tokens), targets)`, but the LM head and the loss are one op
    /// ([`lm_head_loss`]) computed in row chunks, so the `[B, T, V]` logits never exist.
    ///
    /// # Shapes
    /// - `tokens`, `targets`: `[B, T]`, `T <= block_size`, targets `< vocab_size`
    pub fn forward_loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let [b, t] = tokens.dims();
        let chunk = self.lm_head_chunk_rows(&tokens.device());
        let (h, wte) = self.head_inputs(self.hidden(tokens, 0, None));
        lm_head_loss(h, wte, targets.reshape([b * t]), chunk)
    }

    /// For chosen positions of `tokens`, `−ln p(target)` and how far the target's logit is below
    /// the largest (0 when the target is the greedy choice), without autodiff: `[M, 2]` f32, row
    /// `k` for the flat position `rows[k] = b·T + i` (position `i` of sequence `b`) and its
    /// `targets[k]`. Only those positions go through the LM head, in row chunks, so evaluation
    /// never holds `[B, T, V]` logits nor pays the head for positions it does not score.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]`, `T <= block_size`; `rows`, `targets`: `[M]`, rows `< B·T`, targets
    ///   `< vocab_size`
    pub fn forward_nll(
        &self,
        tokens: Tensor<2, Int>,
        rows: Tensor<1, Int>,
        targets: Tensor<1, Int>,
    ) -> Tensor<2> {
        let chunk = self.lm_head_chunk_rows(&tokens.device());
        let [b, t] = tokens.dims();
        let x = self
            .hidden(tokens, 0, None)
            .reshape([b * t, self.config.n_embd]);
        let x = x.select(0, rows).unsqueeze::<3>(); // (1, M, C)
        let (h, wte) = self.head_inputs(x);
        Tensor::from_dispatch(<Dispatch as FusedOps>::lm_head_nll(
            h.without_autodiff().into_dispatch(),
            wte.without_autodiff().into_dispatch(),
            targets.without_autodiff().into_dispatch(),
            chunk,
        ))
    }

    /// Rows of the LM head per chunk on `device`: the config's `lm_head_chunk_rows`, or what
    /// the device allows ([`crate::device::lm_head_chunk_rows`]).
    pub fn lm_head_chunk_rows(&self, device: &Device) -> usize {
        match self.config.lm_head_chunk_rows {
            0 => crate::device::lm_head_chunk_rows(device, self.config.vocab_size),
            rows => rows,
        }
    }

    /// `ln_f`'s output as `[B·T, C]` and the tied head's weight, both in the compute dtype.
    fn head_inputs(&self, x: Tensor<3>) -> (Tensor<2>, Tensor<2>) {
        let [b, t, c] = x.dims();
        let h = x.reshape([b * t, c]);
        let wte = self.wte.weight.val();
        match self.config.compute_dtype.cast_dtype() {
            None => (h, wte),
            Some(d) => (h.cast(d), wte.cast(d)),
        }
    }
}

/// Mean cross-entropy (nats, f32) of the tied LM head `h·wteᵀ` against `targets`, as one op with
/// a hand-written backward (`fused.rs`), `chunk_rows` rows at a time (0: all at once): each
/// chunk's logits go straight into a row kernel (on flex the vectorised, in-place one of
/// `kernels.rs`) that leaves `G = softmax − onehot(t)` in their buffer, from which the chunk's
/// `dh = G·wte` and its share of `dwte = Gᵀ·h` are taken before the next chunk; the backward
/// scales them by `1/N`. Matmuls run in the inputs' dtype, the softmax in f32.
///
/// # Shapes
/// - `h`: `[N, C]`, `wte`: `[V, C]`, `targets`: `[N]` with ids `< V` → `[1]`
pub fn lm_head_loss(
    h: Tensor<2>,
    wte: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk_rows: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::lm_head_loss(
        h.into_dispatch(),
        wte.into_dispatch(),
        targets.into_dispatch(),
        chunk_rows,
    ))
}

fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == FloatDType::F32.into() {
        x
    } else {
        x.cast(FloatDType::F32)
    }
}

/// Mean token-level cross-entropy (nats), in f32, with a fused gradient, for logits you already
/// have ([`Gpt2::loss`]). Training does not take this path: [`Gpt2::forward_loss`] fuses the LM
/// head into the loss as well ([`lm_head_loss`]).
///
/// Value: `mean_i(lse_i - l[i, t_i])` where `lse_i = m_i - ln(max_j p_ij)`, `m` the row max of
/// the logits and `p = softmax(l)` (the row max of `p` is at least 1/V, so its log cannot
/// underflow). Gradient with respect to the logits: exactly `(p - onehot(t)) / N`, injected
/// through the surrogate `sum(l · stopgrad(p - onehot)) / N`, whose value is subtracted again.
///
/// Why: `log_softmax` is not fused in Burn 0.22's flex backend and autodiff records it as six
/// ops, each a pass plus an allocation over `[B·T, V]` in the forward and again in the backward.
/// On the `tiny` preset (vocab 50257) that made the loss cost more than the whole network; this
/// version uses flex's fused softmax and one `[B·T, V]` product (see experiments/RESULTS-model.md).
/// [`cross_entropy_reference`] is the textbook form; tests check both give the same value and
/// gradients, and the HF reference test checks the gradients against PyTorch.
///
/// # Shapes
/// - `logits`: `[B, T, V]`, `targets`: `[B, T]` with ids `< V`
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let n = b * t;
    let logits = to_f32(logits).reshape([n, v]); // (N, V), tracked

    // Off the autodiff backend, not just detached: Burn's autodiff has no softmax of its own and
    // decomposes it into five ops (one a single-threaded scalar `exp` over [N, V]); the inner
    // backend's softmax is flex's fused, row-parallel SIMD kernel.
    let plain = logits.clone().without_autodiff(); // (N, V), no graph from here on
    let device = plain.device();
    let targets = targets.without_autodiff().reshape([n, 1]);
    let p = softmax(plain.clone(), 1); // (N, V)
    let nll = nll_from_softmax(plain, p.clone(), targets.clone()).mean(); // [1]
    let minus_one = Tensor::<2>::full([n, 1], -1.0, &device);
    let dlogits = p.scatter(1, targets, minus_one, IndexingUpdateOp::Add); // p - onehot
    let surrogate = (logits * dlogits).sum().div_scalar(n as f64); // gradient (p - onehot)/N
    surrogate.clone() - surrogate.detach() + nll
}

/// `lse - l[t]` per row, with `lse = m - ln(max p)`: `m` the row max of `l`, `p = softmax(l)`.
fn nll_from_softmax(l: Tensor<2>, p: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<2> {
    let lse = l.clone().max_dim(1) - p.max_dim(1).log(); // (N, 1)
    lse - l.gather(1, targets) // (N, 1)
}

/// Mean token-level cross-entropy via `log_softmax` + `gather`: the textbook form, kept as the
/// reference [`cross_entropy`] is tested against (slower on CPU, same value and gradient).
///
/// # Shapes
/// - `logits`: `[B, T, V]`, `targets`: `[B, T]` → output `[1]`
pub fn cross_entropy_reference(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(to_f32(logits).reshape([b * t, v]), 1); // (B*T, V)
    let picked = logp.gather(1, targets.reshape([b * t, 1])); // (B*T, 1)
    picked.mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    fn max_diff(x: &[f32], y: &[f32]) -> f32 {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max)
    }

    /// A LayerNorm that keeps its input in half precision for the backward (a half-precision
    /// run's residual stream, `layer_norm_keeping`) against one that keeps it in f32: the same
    /// output and `dbeta` to the bit (neither depends on what is kept), and `dx`, `dgamma` off by
    /// the rounding of `x` only. Rows with an offset of 3 standard deviations make that rounding
    /// count (x̂'s error grows with |x|/σ). Relative to the largest gradient, measured: bf16
    /// 5.8e-3 (dx) and 1.9e-3 (dgamma), f16 6.4e-4 and 6.2e-5 (2^-9 and 2^-12 rounding); bounds
    /// 1.5e-2 and 2e-3. Non-zero too: the kept dtype must matter.
    #[test]
    fn layer_norm_keeping_half_input_bounds_the_gradient_error() {
        let device = Device::flex().autodiff();
        let (rows, c) = (6, 64);
        let x: Vec<f32> = (0..rows * c)
            .map(|i| {
                let (r, j) = (i / c, i % c);
                (((i * 7919) % 1013) as f32 / 1013.0 - 0.5) * 2.0
                    + (r as f32 - 2.5) * 1.2
                    + if j == 5 { 8.0 } else { 0.0 }
            })
            .collect();
        let w: Vec<f32> = (0..rows * c)
            .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.3)
            .collect();
        let w = Tensor::<2>::from_data(TensorData::new(w, [rows, c]), &device);
        let mut ln = LayerNormConfig::new(c).init(&device);
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect();
        ln.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [c]), &device));
        let run = |keep: Option<FloatDType>| {
            let x = Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, c]), &device)
                .require_grad();
            let y = layer_norm_keeping(&ln, x.clone(), 1e-5, keep);
            let grads = (y.clone() * w.clone()).sum().backward();
            let beta = ln.beta.as_ref().unwrap().val();
            (
                values(y),
                values(x.grad(&grads).unwrap()),
                values(ln.gamma.val().grad(&grads).unwrap()),
                values(beta.grad(&grads).unwrap()),
            )
        };
        let f32_kept = run(None);
        for (keep, bound) in [(FloatDType::BF16, 1.5e-2), (FloatDType::F16, 2e-3)] {
            let half_kept = run(Some(keep));
            assert_eq!(half_kept.0, f32_kept.0, "{keep:?}: output");
            assert_eq!(half_kept.3, f32_kept.3, "{keep:?}: dbeta");
            for (what, a, b) in [
                ("dx", &half_kept.1, &f32_kept.1),
                ("dgamma", &half_kept.2, &f32_kept.2),
            ] {
                let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let err = max_diff(a, b) / scale;
                assert!(
                    err > 0.0 && err < bound,
                    "{keep:?} {what}: relative error {err:e}"
                );
            }
        }
    }

    /// The fused LM head + loss against the textbook composition (matmul, `log_softmax`,
    /// gather, mean) under autodiff: the loss and the gradients of `h` and `wte`, with an upstream
    /// gradient other than 1, for ordinary logits and for huge ones (target probabilities that
    /// underflow f32), unchunked and in chunks of 3, 4 and 1 rows (none divides N = 10 but 1).
    #[test]
    fn lm_head_loss_equals_the_composed_head_and_loss() {
        let device = Device::flex().autodiff();
        let (n, c, v) = (10, 6, 300);
        let targets: Vec<i64> = (0..n as i64).map(|i| (i * 61 + 7) % v as i64).collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
        for (scale, chunk) in [(1.0f32, 0), (300.0, 0), (1.0, 3), (300.0, 4), (1.0, 1)] {
            let leaf = |rows: usize, salt: usize| {
                let data: Vec<f32> = (0..rows * c)
                    .map(|i| (((i * 7919 + salt * 104_729) % 1013) as f32 / 1013.0 - 0.5) * scale)
                    .collect();
                Tensor::<2>::from_data(TensorData::new(data, [rows, c]), &device).require_grad()
            };
            let run = |fused: bool| {
                let (h, wte) = (leaf(n, 1), leaf(v, 2));
                let loss = if fused {
                    lm_head_loss(h.clone(), wte.clone(), targets.clone(), chunk)
                } else {
                    let logits = h.clone().matmul(wte.clone().transpose()).reshape([1, n, v]);
                    cross_entropy_reference(logits, targets.clone().reshape([1, n]))
                };
                let grads = (loss.clone() * 3.0).backward();
                let g = |x: &Tensor<2>| values(x.grad(&grads).unwrap());
                (values(loss), g(&h), g(&wte))
            };
            let (a, b) = (run(true), run(false));
            assert!(a.0[0].is_finite(), "{scale}/{chunk}: loss {}", a.0[0]);
            let rel = (a.0[0] - b.0[0]).abs() / b.0[0].abs().max(1.0);
            assert!(rel < 1e-5, "{scale}/{chunk}: loss {} vs {}", a.0[0], b.0[0]);
            for (name, x, y) in [("dh", &a.1, &b.1), ("dwte", &a.2, &b.2)] {
                let top = y.iter().fold(0f32, |m, g| m.max(g.abs()));
                let diff = max_diff(x, y);
                assert!(
                    diff <= 1e-5 * top.max(1e-3),
                    "{scale}/{chunk} {name}: max |diff| {diff}"
                );
            }
        }
    }

    /// The fused training attention against Burn's attention op (causal, same scale): outputs and
    /// the gradients of q, k and v under a non-uniform upstream gradient.
    #[test]
    fn training_attention_equals_burns_attention_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        let shape = [2, 3, 7, 4];
        let n: usize = shape.iter().product();
        let leaf = |salt: usize| {
            let data: Vec<f32> = (0..n)
                .map(|i| (((i * 7919 + salt * 104_729) % 1013) as f32 / 1013.0 - 0.5) * 3.0)
                .collect();
            Tensor::<4>::from_data(TensorData::new(data, shape), &device).require_grad()
        };
        let weights: Vec<f32> = (0..n)
            .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.3)
            .collect();
        let w = Tensor::<4>::from_data(TensorData::new(weights, shape), &device);
        let scale = 0.5;
        let run = |ours: bool| {
            let (q, k, v) = (leaf(1), leaf(2), leaf(3));
            let y = if ours {
                causal_attention(q.clone(), k.clone(), v.clone(), scale, true)
            } else {
                let options = AttentionModuleOptions {
                    scale: Some(scale),
                    softcap: None,
                    is_causal: true,
                };
                attention(q.clone(), k.clone(), v.clone(), None, None, options)
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let g = |x: &Tensor<4>| values(x.grad(&grads).unwrap());
            (values(y), g(&q), g(&k), g(&v))
        };
        let (a, b) = (run(true), run(false));
        for (name, x, y) in [
            ("y", &a.0, &b.0),
            ("dq", &a.1, &b.1),
            ("dk", &a.2, &b.2),
            ("dv", &a.3, &b.3),
        ] {
            let diff = max_diff(x, y);
            assert!(diff < 1e-5, "{name}: max |diff| {diff}");
        }
    }
}
