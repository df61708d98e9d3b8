//! Model ops with hand-written backward passes, as a Burn backend extension: the tied LM head
//! with its cross-entropy, causal softmax attention, GPT-2's GELU, and (forward only) the
//! per-token NLL of evaluation.
//!
//! Why: Burn 0.22's autodiff records every composed op with its own backward, so the loss costs
//! extra passes over the `[B·T, V]` logits (a surrogate product and its gradient), attention
//! some dozen tracked ops over `[B, nh, T, T]` and GELU six single-threaded ones. Here the
//! forward runs on the inner backend and the backward is the closed form, written once:
//!
//! - LM head + loss: `l = h·wteᵀ`, `p = softmax(l)`, `loss = mean_i(lse_i − l[i, t_i])`.
//!   With `G = (p − onehot(t))·g/N`: `dh = G·wte`, `dwte = Gᵀ·h`.
//! - Attention: `S = (q·s)·kᵀ + causal`, `P = softmax(S)`, `O = P·v`. With `dO`:
//!   `dv = Pᵀ·dO`, `dP = dO·vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`, `dq = dS·k·s`, `dk = dSᵀ·(q·s)`.
//! - GELU: `y = x·σ(u)`, `u = x·(A + B·x²)`; `dx = dy·(σ(u) + x·σ(u)·(1 − σ(u))·(A + 3B·x²))`.
//!
//! The row work (softmaxes, GELU) goes through [`RowKernels`]: composed tensor ops by default
//! (the CUDA backend), `kernels.rs` on flex. Tests: model.rs (each op against its composed
//! form, value and gradient), kernels.rs (against f64 formulas), tests/hf_reference.rs (the
//! whole network's gradients against PyTorch).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::IndexingUpdateOp;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Autodiff, Backend, Flex, Scalar, TensorMetadata};
use burn::tensor::{DType, FloatDType, Shape, TensorData};

use crate::kernels;

/// The fused ops, as a backend extension: concrete backends run the forward, `Autodiff<B>`
/// adds the backward.
#[backend_extension(Flex, Cube: cfg(any(feature = "cuda", feature = "wgpu")), Autodiff)]
pub trait FusedOps: Backend {
    /// Mean cross-entropy (nats, f32 `[1]`) of the tied LM head: `h` `[N, C]`, `wte` `[V, C]`,
    /// `targets` `[N]` (ids `< V`).
    fn lm_head_loss(
        h: FloatTensor<Self>,
        wte: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `softmax(q·kᵀ·scale + bias)·v` for `q, k, v` `[B, nh, T, hd]` and a constant additive
    /// `bias` `[1, 1, T, T]` (0 on and below the diagonal, −∞ above).
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;

    /// GPT-2's tanh-approximate GELU, elementwise.
    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `−ln softmax(logits)[t]` per row (f32 `[N]`) for `logits` `[N, V]`, `targets` `[N]`;
    /// evaluation only (no gradient).
    fn token_nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self>;
}

/// The row-wise pieces the fused ops are built from. The defaults compose the backend's own
/// ops (what a GPU backend runs); flex overrides them with the SIMD, multi-threaded, in-place
/// kernels of `kernels.rs`.
pub trait RowKernels: Backend {
    /// `(mean −ln softmax(l)[t] as f32 [1], softmax(l) − onehot(t) as f32 [N, V])` for
    /// `logits` `[N, V]` and `targets` `[N]`.
    fn softmax_xent(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [n, _] = [dims(&logits)[0], dims(&logits)[1]];
        let device = logits.device();
        let logits = to_f32::<Self>(logits);
        let targets = Self::int_reshape(targets, Shape::new([n, 1]));
        let p = Self::softmax(logits.clone(), 1);
        let loss = Self::float_mean(composed_nll::<Self>(logits, p.clone(), targets.clone())); // [1]
        let minus_one = Self::float_full(
            Shape::new([n, 1]),
            Scalar::from(-1.0f32),
            &device,
            FloatDType::F32,
        );
        let g = Self::float_scatter(1, p, targets, minus_one, IndexingUpdateOp::Add);
        (loss, g)
    }

    /// Softmax over the last axis of `scores` `[B, nh, T_q, T_k]` after adding the causal
    /// `bias` `[1, 1, T_q, T_k]`.
    fn causal_softmax(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_causal_softmax::<Self>(scores, bias)
    }

    /// `−ln softmax(logits)[t]` per row, `[N]`.
    fn token_nll_rows(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        let n = dims(&logits)[0];
        let logits = to_f32::<Self>(logits);
        let targets = Self::int_reshape(targets, Shape::new([n, 1]));
        let p = Self::softmax(logits.clone(), 1);
        let nll = composed_nll::<Self>(logits, p, targets);
        Self::float_reshape(nll, Shape::new([n]))
    }

    /// GPT-2's GELU, `x·σ(x·(A + B·x²))` (`kernels::GELU_A`, `GELU_B`).
    fn gelu_tanh_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_gelu::<Self>(x)
    }

    /// `dy · gelu'(x)`.
    fn gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_gelu_backward::<Self>(x, dy)
    }

    /// Softmax's backward `p ⊙ (dp − delta)`, `delta` `[.., T, 1]` broadcast along the rows.
    fn softmax_backward(
        p: FloatTensor<Self>,
        dp: FloatTensor<Self>,
        delta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed_softmax_backward::<Self>(p, dp, delta)
    }
}

// The composed forms behind `RowKernels`' defaults, also flex's fallback for non-f32 inputs.

/// `lse − l[t]` per row, `[N, 1]`, with `lse = m − ln(max p)`: `m` the row max of `l` and
/// `p = softmax(l)` (`max p ≥ 1/V`, so its log is finite); `targets` `[N, 1]`.
fn composed_nll<B: Backend>(
    logits: FloatTensor<B>,
    p: FloatTensor<B>,
    targets: IntTensor<B>,
) -> FloatTensor<B> {
    let m = B::float_max_dim(logits.clone(), 1); // (N, 1)
    let lse = B::float_sub(m, B::float_log(B::float_max_dim(p, 1)));
    B::float_sub(lse, B::float_gather(1, logits, targets))
}

fn composed_causal_softmax<B: Backend>(
    scores: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    B::softmax(B::float_add(scores, bias), 3)
}

fn composed_softmax_backward<B: Backend>(
    p: FloatTensor<B>,
    dp: FloatTensor<B>,
    delta: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_mul(p, B::float_sub(dp, delta))
}

fn composed_gelu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let x2 = B::float_mul(x.clone(), x.clone());
    let inner = B::float_mul_scalar(x2, Scalar::from(kernels::GELU_B));
    let inner = B::float_add_scalar(inner, Scalar::from(kernels::GELU_A));
    let s = B::sigmoid(B::float_mul(inner, x.clone()));
    B::float_mul(x, s)
}

/// `dy·(σ(u) + x·σ(u)·(1 − σ(u))·(A + 3B·x²))` with `u = x·(A + B·x²)`.
fn composed_gelu_backward<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let (a, b) = (Scalar::from(kernels::GELU_A), kernels::GELU_B);
    let x2 = B::float_mul(x.clone(), x.clone());
    let inner = B::float_add_scalar(B::float_mul_scalar(x2.clone(), Scalar::from(b)), a);
    let s = B::sigmoid(B::float_mul(inner, x.clone()));
    let du = B::float_add_scalar(B::float_mul_scalar(x2, Scalar::from(3.0 * b)), a);
    let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), Scalar::from(1.0f32));
    let slope = B::float_mul(B::float_mul(x, s.clone()), B::float_mul(one_minus_s, du));
    B::float_mul(dy, B::float_add(s, slope))
}

/// The concrete (forward-only) `FusedOps` of a backend with row kernels.
macro_rules! concrete_fused_ops {
    ($backend:ty) => {
        impl FusedOps for $backend {
            fn lm_head_loss(
                h: FloatTensor<Self>,
                wte: FloatTensor<Self>,
                targets: IntTensor<Self>,
            ) -> FloatTensor<Self> {
                lm_head_forward::<Self>(h, wte, targets).0
            }

            fn causal_attention(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                bias: FloatTensor<Self>,
                scale: f64,
            ) -> FloatTensor<Self> {
                attention_forward::<Self>(q, k, v, bias, scale).0
            }

            fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
                Self::gelu_tanh_forward(x)
            }

            fn token_nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
                Self::token_nll_rows(logits, targets)
            }
        }
    };
}

concrete_fused_ops!(Flex);
#[cfg(any(feature = "cuda", feature = "wgpu"))]
concrete_fused_ops!(burn::backend::Cube);
#[cfg(any(feature = "cuda", feature = "wgpu"))]
impl RowKernels for burn::backend::Cube {}

/// A flex tensor's elements as one contiguous slice (copying only a strided or shared one).
fn flex_f32_mut(t: &mut FlexTensor) -> &mut [f32] {
    if !t.is_contiguous() {
        *t = t.to_contiguous();
    }
    let (start, end) = t.layout().contiguous_offsets().expect("contiguous");
    &mut t.storage_mut::<f32>()[start..end]
}

fn flex_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("f32").to_vec()),
    }
}

fn flex_ids(t: &FlexTensor) -> Vec<usize> {
    // Any integer dtype, read as i64. Ids are non-negative by construction (the embedding lookup
    // before the loss would already have failed on a bad one); a negative one wraps and fails
    // the kernels' range check.
    let data = t.clone().into_data().convert::<i64>();
    let ids = data.as_slice::<i64>().expect("i64 after convert");
    ids.iter().map(|&x| x as usize).collect()
}

impl RowKernels for Flex {
    fn softmax_xent(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        let v = dims(&logits)[1];
        let mut g = to_f32::<Flex>(logits);
        let ids = flex_ids(&targets);
        let loss = kernels::softmax_xent(flex_f32_mut(&mut g), &ids, v);
        let loss = FlexTensor::from_data(TensorData::new(vec![loss as f32], [1]));
        (loss, g)
    }

    fn causal_softmax(scores: FlexTensor, bias: FlexTensor) -> FlexTensor {
        if scores.dtype() != DType::F32 {
            return composed_causal_softmax::<Flex>(scores, bias);
        }
        let d = dims(&scores);
        let (t_q, t_k) = (d[2], d[3]);
        let mut p = scores;
        kernels::causal_softmax(flex_f32_mut(&mut p), t_q, t_k);
        p
    }

    fn token_nll_rows(logits: FlexTensor, targets: FlexTensor) -> FlexTensor {
        let [n, v] = [dims(&logits)[0], dims(&logits)[1]];
        let logits = to_f32::<Flex>(logits);
        let nll = kernels::token_nll(&flex_f32(&logits), &flex_ids(&targets), v);
        FlexTensor::from_data(TensorData::new(nll, [n]))
    }

    fn gelu_tanh_forward(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return composed_gelu::<Flex>(x);
        }
        let mut y = x; // the caller keeps its own handle, so this writes a copy
        kernels::gelu(flex_f32_mut(&mut y));
        y
    }

    fn gelu_tanh_backward(x: FlexTensor, dy: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 || dy.dtype() != DType::F32 {
            return composed_gelu_backward::<Flex>(x, dy);
        }
        let mut dx = dy;
        kernels::gelu_backward(&flex_f32(&x), flex_f32_mut(&mut dx));
        dx
    }

    fn softmax_backward(p: FlexTensor, dp: FlexTensor, delta: FlexTensor) -> FlexTensor {
        if p.dtype() != DType::F32 || dp.dtype() != DType::F32 || delta.dtype() != DType::F32 {
            return composed_softmax_backward::<Flex>(p, dp, delta);
        }
        let t = *dims(&p).last().expect("rank 4");
        let mut dp = dp;
        kernels::softmax_backward(&flex_f32(&p), flex_f32_mut(&mut dp), &flex_f32(&delta), t);
        dp
    }
}

fn dims(t: &impl TensorMetadata) -> Vec<usize> {
    t.shape().to_vec()
}

fn to_f32<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    if t.dtype() == DType::F32 {
        t
    } else {
        B::float_cast(t, FloatDType::F32)
    }
}

/// Returns `(loss [1], G = softmax − onehot [N, V] f32)`. Matmul in the inputs' dtype, softmax and
/// loss in f32.
fn lm_head_forward<B: RowKernels>(
    h: FloatTensor<B>,
    wte: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let logits = to_f32::<B>(B::float_matmul(h, B::float_transpose(wte))); // (N, V)
    B::softmax_xent(logits, targets)
}

/// Returns `(O, state)` with the state the backward needs: `(q·s, k, v, P, O)`.
#[allow(clippy::type_complexity)]
fn attention_forward<B: RowKernels>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> (FloatTensor<B>, AttentionState<B>) {
    let qs = B::float_mul_scalar(q, Scalar::from(scale));
    let scores = B::float_matmul(qs.clone(), B::float_swap_dims(k.clone(), 2, 3)); // (B, nh, T, T)
    let p = B::causal_softmax(scores, bias);
    let o = B::float_matmul(p.clone(), v.clone()); // (B, nh, T, hd)
    let state = AttentionState {
        qs,
        k,
        v,
        p,
        o: o.clone(),
        scale,
    };
    (o, state)
}

/// What attention's backward needs from its forward.
#[derive(Clone, Debug)]
struct AttentionState<B: Backend> {
    qs: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    p: FloatTensor<B>,
    o: FloatTensor<B>,
    scale: f64,
}

#[derive(Debug)]
struct LmHeadLossBackward;

impl<B: Backend> Backward<B, 2> for LmHeadLossBackward {
    /// `(h, wte, G = softmax − onehot)`.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_h, node_wte] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // [1]
        let (h, wte, g) = ops.state;
        let n = dims(&h)[0];
        let g = match h.dtype() {
            DType::F32 => g,
            dtype => B::float_cast(g, dtype.into()),
        }; // (N, V), unscaled
           // The scalar factor g_loss / N is applied to the small results, not to [N, V].
        let factor = B::float_mul_scalar(to_f32::<B>(grad), Scalar::from(1.0 / n as f64)); // [1]
        let factor = B::float_reshape(factor, Shape::new([1, 1]));
        let scaled = |t: FloatTensor<B>| {
            let dtype = t.dtype();
            let out = B::float_mul(to_f32::<B>(t), factor.clone());
            if dtype == DType::F32 {
                out
            } else {
                B::float_cast(out, dtype.into())
            }
        };
        if let Some(node) = node_h {
            let dh = B::float_matmul(g.clone(), wte); // (N, C)
            grads.register::<B>(node.id, scaled(dh));
        }
        if let Some(node) = node_wte {
            let dwte = B::float_matmul(B::float_transpose(g), h); // (V, C)
            grads.register::<B>(node.id, scaled(dwte));
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: RowKernels> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let d_o = grads.consume::<B>(&ops.node); // (B, nh, T, hd)
        let AttentionState {
            qs,
            k,
            v,
            p,
            o,
            scale,
        } = ops.state;
        if let Some(node) = node_v {
            let dv = B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), d_o.clone());
            grads.register::<B>(node.id, dv);
        }
        if node_q.is_none() && node_k.is_none() {
            return;
        }
        let dp = B::float_matmul(d_o.clone(), B::float_swap_dims(v, 2, 3)); // (B, nh, T, T)
        let delta = B::float_sum_dim(B::float_mul(d_o, o), 3); // (B, nh, T, 1)
        let ds = B::softmax_backward(p, dp, delta);
        if let Some(node) = node_q {
            let dq = B::float_matmul(ds.clone(), k);
            grads.register::<B>(node.id, B::float_mul_scalar(dq, Scalar::from(scale)));
        }
        if let Some(node) = node_k {
            let dk = B::float_matmul(B::float_swap_dims(ds, 2, 3), qs);
            grads.register::<B>(node.id, dk);
        }
    }
}

/// The backward of an evaluation-only op: contributes nothing.
#[derive(Debug)]
struct NoGradient;

impl<B: Backend> Backward<B, 1> for NoGradient {
    type State = ();

    fn backward(self, _: Ops<(), 1>, _: &mut Gradients, _: &mut Checkpointer) {}
}

#[derive(Debug)]
struct GeluBackward;

impl<B: RowKernels> Backward<B, 1> for GeluBackward {
    /// The input `x` (the derivative is recomputed from it).
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::gelu_tanh_backward(ops.state, dy));
        }
    }
}

impl<B: RowKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn token_nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        // An evaluation op: no gradient flows back through it.
        let prep = NoGradient.prepare::<C>([logits.node()]).compute_bound();
        prep.stateless(B::token_nll_rows(logits.into_primitive(), targets))
    }

    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                prep.finish(x.clone(), B::gelu_tanh_forward(x))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_tanh_forward(x.into_primitive())),
        }
    }

    fn lm_head_loss(
        h: FloatTensor<Self>,
        wte: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        match LmHeadLossBackward
            .prepare::<C>([h.node(), wte.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (h, wte) = (h.into_primitive(), wte.into_primitive());
                let (loss, g) = lm_head_forward::<B>(h.clone(), wte.clone(), targets);
                prep.finish((h, wte, g), loss)
            }
            OpsKind::UnTracked(prep) => prep
                .finish(lm_head_forward::<B>(h.into_primitive(), wte.into_primitive(), targets).0),
        }
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let bias = bias.into_primitive();
        match AttentionBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (o, state) = attention_forward::<B>(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    bias,
                    scale,
                );
                prep.finish(state, o)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                attention_forward::<B>(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    bias,
                    scale,
                )
                .0,
            ),
        }
    }
}
