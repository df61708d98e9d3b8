//! flex's [`RowKernels`]: the SIMD, multi-threaded, in-place CPU kernels of `kernels.rs` on f32
//! tensors (the composed forms for other dtypes), and flex's own fused LayerNorm for inference.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::{Flex, Scalar};
use burn::tensor::{DType, TensorData};

use crate::kernels;
use crate::row_kernels::{
    composed_attention_forward, composed_gelu, composed_gelu_backward, dims, to_f32, RowKernels,
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
        if q.dtype() != DType::F32 {
            return composed_attention_forward::<Flex>(q, k, v, scale);
        }
        let qs = Flex::float_mul_scalar(q, Scalar::from(scale));
        let mut p = Flex::float_matmul(qs, Flex::float_swap_dims(k, 2, 3)); // (B, nh, T, T)
        let d = dims(&p);
        kernels::causal_softmax(flex_f32_mut(&mut p), d[2], d[3]);
        (Flex::float_matmul(p.clone(), v), p)
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
