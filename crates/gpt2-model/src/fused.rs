//! Two training ops with hand-written backward passes, as a Burn backend extension: the tied LM
//! head with its cross-entropy, and causal softmax attention.
//!
//! Why: Burn 0.22's autodiff records every composed op with its own backward, so the loss costs
//! extra passes over the `[B·T, V]` logits (a surrogate product and its gradient) and attention
//! some dozen tracked ops over `[B, nh, T, T]`. Here the forward runs on the inner backend (flex's
//! fused softmax, its gemm) and the backward is the closed form, written once:
//!
//! - LM head + loss: `l = h·wteᵀ`, `p = softmax(l)`, `loss = mean_i(lse_i − l[i, t_i])`.
//!   With `G = (p − onehot(t))·g/N`: `dh = G·wte`, `dwte = Gᵀ·h`.
//! - Attention: `S = (q·s)·kᵀ + causal`, `P = softmax(S)`, `O = P·v`. With `dO`:
//!   `dv = Pᵀ·dO`, `dP = dO·vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`, `dq = dS·k·s`, `dk = dSᵀ·(q·s)`.
//!
//! Tests in model.rs check values and gradients against the composed (autodiff) forms.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::IndexingUpdateOp;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Autodiff, Backend, Flex, Scalar, TensorMetadata};
use burn::tensor::{DType, FloatDType, Shape};

/// The fused ops. Concrete backends get the forward from the default bodies; `Autodiff<B>`
/// adds the backward.
#[backend_extension(Flex, Cube: cfg(feature = "cuda"), Autodiff)]
pub trait FusedOps: Backend {
    /// Mean cross-entropy (nats, f32 `[1]`) of the tied LM head: `h` `[N, C]`, `wte` `[V, C]`,
    /// `targets` `[N]` (ids `< V`).
    fn lm_head_loss(
        h: FloatTensor<Self>,
        wte: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        lm_head_forward::<Self>(h, wte, targets).0
    }

    /// `softmax(q·kᵀ·scale + bias)·v` for `q, k, v` `[B, nh, T, hd]` and a constant additive
    /// `bias` `[1, 1, T, T]` (0 on and below the diagonal, −∞ above).
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        attention_forward::<Self>(q, k, v, bias, scale).0
    }
}

impl FusedOps for Flex {}
#[cfg(feature = "cuda")]
impl FusedOps for burn::backend::Cube {}

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

/// Returns `(loss [1], p [N, V] f32)`. Matmul in the inputs' dtype, softmax and loss in f32.
fn lm_head_forward<B: Backend>(
    h: FloatTensor<B>,
    wte: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let n = dims(&h)[0];
    let logits = to_f32::<B>(B::float_matmul(h, B::float_transpose(wte))); // (N, V)
    let targets = B::int_reshape(targets, Shape::new([n, 1]));
    let p = B::softmax(logits.clone(), 1);
    // -ln p[t] = lse - l[t], with lse = m - ln(max p) (max p ≥ 1/V, so its log is finite).
    let m = B::float_max_dim(logits.clone(), 1); // (N, 1)
    let lse = B::float_sub(m, B::float_log(B::float_max_dim(p.clone(), 1)));
    let picked = B::float_gather(1, logits, targets);
    let loss = B::float_mean(B::float_sub(lse, picked)); // [1]
    (loss, p)
}

/// `G·scale` for `G = p − onehot(targets)`, in `dtype` (consumes `p`, usually in place).
fn lm_head_dlogits<B: Backend>(
    p: FloatTensor<B>,
    targets: IntTensor<B>,
    dtype: DType,
) -> FloatTensor<B> {
    let [n, _] = [dims(&p)[0], dims(&p)[1]];
    let device = p.device();
    let targets = B::int_reshape(targets, Shape::new([n, 1]));
    let minus_one = B::float_full(Shape::new([n, 1]), Scalar::from(-1.0f32), &device, FloatDType::F32);
    let g = B::float_scatter(1, p, targets, minus_one, IndexingUpdateOp::Add);
    if dtype == DType::F32 {
        g
    } else {
        B::float_cast(g, dtype.into())
    }
}

/// Returns `(O, state)` with the state the backward needs: `(q·s, k, v, P, O)`.
#[allow(clippy::type_complexity)]
fn attention_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> (FloatTensor<B>, AttentionState<B>) {
    let qs = B::float_mul_scalar(q, Scalar::from(scale));
    let scores = B::float_matmul(qs.clone(), B::float_swap_dims(k.clone(), 2, 3)); // (B, nh, T, T)
    let p = B::softmax(B::float_add(scores, bias), 3);
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
    /// `(h, wte, p, targets)`.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_h, node_wte] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // [1]
        let (h, wte, p, targets) = ops.state;
        let n = dims(&h)[0];
        let g = lm_head_dlogits::<B>(p, targets, h.dtype()); // (N, V), unscaled
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

impl<B: Backend> Backward<B, 3> for AttentionBackward {
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
        let ds = B::float_mul(p, B::float_sub(dp, delta));
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

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
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
                let (loss, p) = lm_head_forward::<B>(h.clone(), wte.clone(), targets.clone());
                prep.finish((h, wte, p, targets), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                lm_head_forward::<B>(h.into_primitive(), wte.into_primitive(), targets).0,
            ),
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
