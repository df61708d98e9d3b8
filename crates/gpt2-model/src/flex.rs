//! flex's [`RowKernels`]: the SIMD, multi-threaded, in-place CPU kernels of `kernels.rs` on f32
//! tensors (the composed forms for other dtypes), and flex's own fused LayerNorm for inference.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::Flex;
use burn::tensor::{DType, TensorData};

use crate::kernels;
use crate::row_kernels::{
    composed_attention_backward, composed_attention_forward, composed_gelu, composed_gelu_backward,
    dims, to_f32, RowKernels,
};

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

/// `[B, nh, T, hd]` of training attention's `q` (its keys `k` are as many: no past).
fn attention_shape(q: &FlexTensor, k: &FlexTensor) -> [usize; 4] {
    let (d, dk) = (dims(q), dims(k));
    assert!(
        d.len() == 4 && d == dk,
        "flex attention: q {d:?} and k {dk:?} must be the same [B, nh, T, hd]"
    );
    [d[0], d[1], d[2], d[3]]
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
    fn layer_norm_inference(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
    ) -> FlexTensor {
        // flex's own fused, SIMD LayerNorm (one pass per row); training needs the statistics
        // too and takes the composed forward.
        <Flex as ModuleOps<Flex>>::layer_norm(x, gamma, Some(beta), eps)
    }

    fn softmax_xent(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        let v = dims(&logits)[1];
        let mut g = to_f32::<Flex>(logits);
        let ids = flex_ids(&targets);
        let loss = kernels::softmax_xent(flex_f32_mut(&mut g), &ids, v);
        let loss = FlexTensor::from_data(TensorData::new(vec![loss as f32], [1]));
        (loss, g)
    }

    fn token_nll_rows(logits: FlexTensor, targets: FlexTensor) -> FlexTensor {
        let [n, v] = [dims(&logits)[0], dims(&logits)[1]];
        let logits = to_f32::<Flex>(logits);
        let rows = kernels::token_nll(&flex_f32(&logits), &flex_ids(&targets), v);
        FlexTensor::from_data(TensorData::new(rows, [n, 2]))
    }

    fn attention_forward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        scale: f64,
    ) -> (FlexTensor, FlexTensor) {
        if q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
            return composed_attention_forward::<Flex>(q, k, v, scale);
        }
        let shape = attention_shape(&q, &k);
        let [b, nh, t, hd] = shape;
        let (o, lse) = kernels::attention::forward(
            &flex_f32(&q),
            &flex_f32(&k),
            &flex_f32(&v),
            shape,
            scale as f32,
        );
        // O is written [B, T, nh, hd] and handed back as its [B, nh, T, hd] view: the model's
        // swap back to [B, T, C] is then free, and the backward's saved O and `c_proj`'s saved
        // input are one tensor.
        let o = FlexTensor::from_data(TensorData::new(o, [b, t, nh, hd]));
        let lse = FlexTensor::from_data(TensorData::new(lse, [b, nh, t]));
        (Flex::float_swap_dims(o, 1, 2), lse)
    }

    fn attention_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        o: FlexTensor,
        stats: FlexTensor,
        d_o: FlexTensor,
        scale: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        // `stats` is what `attention_forward` returned for the same dtype: the log-sum-exp for
        // f32, the probabilities otherwise.
        if q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
            return composed_attention_backward::<Flex>(q, k, v, o, stats, d_o, scale);
        }
        let shape = attention_shape(&q, &k);
        let d_o = to_f32::<Flex>(d_o);
        let (dq, dk, dv) = kernels::attention::backward(
            &flex_f32(&q),
            &flex_f32(&k),
            &flex_f32(&v),
            &flex_f32(&o),
            &flex_f32(&stats),
            &flex_f32(&d_o),
            shape,
            scale as f32,
        );
        let grad = |x: Vec<f32>| FlexTensor::from_data(TensorData::new(x, shape));
        (grad(dq), grad(dk), grad(dv))
    }

    fn softmax_backward(p: FlexTensor, dp: FlexTensor, delta: FlexTensor) -> FlexTensor {
        if p.dtype() != DType::F32 || dp.dtype() != DType::F32 || delta.dtype() != DType::F32 {
            return Flex::float_mul(p, Flex::float_sub(dp, delta));
        }
        let t = *dims(&p).last().expect("rank 4");
        let mut dp = dp;
        kernels::softmax_backward(&flex_f32(&p), flex_f32_mut(&mut dp), &flex_f32(&delta), t);
        dp
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
}
