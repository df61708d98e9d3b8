//! Data parallelism in one process: one model replica per device, built from the same weights
//! (`fork` keeps the parameter ids, so every rank's gradients are keyed alike), and the mean of
//! the ranks' gradients every step, so every rank applies the same AdamW update and the replicas
//! stay identical (PyTorch DDP's arithmetic; llm.c's `multi_gpu_async_reduce_gradient`).
//!
//! One interface, [`GradMean`], two implementations:
//! - [`GradMean::Nccl`] on CUDA: Burn's `DistributedContext` + `all_reduce(.., Mean)` through
//!   NCCL, one thread per device as burn-train's DDP does (a collective waits for every rank);
//! - [`GradMean::Transfer`] elsewhere (wgpu, flex, CUDA without NCCL): each bucket moved to the
//!   main device with `to_device`, summed, divided by N and copied back. Burn 0.22.1 implements
//!   `all_reduce` only for CUDA (wgpu and flex panic), and we ship no transport of our own.
//!
//! Both reduce buckets (~25 MB, `device.bucket_mb`) of the flattened gradients, not one tensor at a
//! time: llm.c reduces one flat buffer, PyTorch DDP 25 MB buckets; per tensor it would be 148
//! collectives a step for 117M. The mean is elementwise, so the buckets change nothing in it.
//!
//! Ranks run their forward/backward passes on threads of their own on GPUs (a device's queue is
//! fed while the others compute), and one after another on flex, whose replicas share the CPU
//! and its global RNG.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use gpt2_model::Gpt2;

/// How the ranks' gradients are averaged.
pub enum GradMean {
    /// One device: nothing to do.
    Single,
    /// Through the main device (rank 0) with `to_device`.
    Transfer {
        devices: Vec<Device>,
        bucket_elems: usize,
    },
    /// NCCL all-reduce on CUDA devices.
    #[cfg(feature = "cuda")]
    Nccl {
        devices: Vec<Device>,
        bucket_elems: usize,
        _context: burn::tensor::distributed::DistributedContext,
    },
}

/// Default bucket size: PyTorch DDP's 25 MB.
pub const DEFAULT_BUCKET_MB: f64 = 25.0;

impl GradMean {
    /// The reduction for these (plain, non-autodiff) devices of `kind`, in buckets of
    /// `bucket_mb` MB (10⁶ bytes) of f32 gradients.
    pub fn new(kind: &str, devices: &[Device], bucket_mb: f64) -> Self {
        if devices.len() == 1 {
            return Self::Single;
        }
        let bucket_elems = ((bucket_mb * 1e6 / 4.0) as usize).max(1);
        #[cfg(feature = "cuda")]
        if kind == "cuda" {
            use burn::tensor::distributed::{
                DistributedConfig, DistributedContext, ReduceOperation,
            };
            let config = DistributedConfig {
                all_reduce_op: ReduceOperation::Mean,
            };
            return Self::Nccl {
                devices: devices.to_vec(),
                bucket_elems,
                _context: DistributedContext::init(devices.to_vec(), config),
            };
        }
        let _ = kind;
        Self::Transfer {
            devices: devices.to_vec(),
            bucket_elems,
        }
    }

    /// What the logs and the plan call it.
    pub fn name(&self) -> String {
        match self {
            Self::Single => "none (1 device)".into(),
            Self::Transfer { bucket_elems, .. } => format!(
                "mean via the main device (to_device), in {:.1} MB buckets",
                *bucket_elems as f64 * 4e-6
            ),
            #[cfg(feature = "cuda")]
            Self::Nccl { bucket_elems, .. } => format!(
                "NCCL all-reduce (mean), in {:.1} MB buckets",
                *bucket_elems as f64 * 4e-6
            ),
        }
    }

    /// Replaces every rank's gradient of every parameter of `model` (any replica: the ids are
    /// shared) by the mean over the ranks, on each rank's own device. The gradients are reduced
    /// as consecutive buckets of their flattened concatenation (a tensor may straddle two), one
    /// reduction per bucket instead of one per tensor (148 in 117M).
    pub fn mean(&self, model: &Gpt2, grads: &mut [GradientsParams]) {
        match self {
            Self::Single => {}
            Self::Transfer {
                devices,
                bucket_elems,
            } => {
                let layout = Layout::of(model, *bucket_elems);
                let flat: Vec<Vec<Tensor<1>>> =
                    grads.iter_mut().map(|g| layout.buckets(g)).collect();
                let main = &devices[0];
                let n = grads.len() as f64;
                let mut reduced: Vec<Vec<Tensor<1>>> = vec![Vec::new(); grads.len()];
                for k in 0..layout.bucket_count() {
                    let mut sum = flat[0][k].clone();
                    for rank in &flat[1..] {
                        sum = sum.add(rank[k].clone().to_device(main));
                    }
                    let mean = sum.div_scalar(n);
                    for (r, device) in devices.iter().enumerate() {
                        reduced[r].push(mean.clone().to_device(device));
                    }
                }
                for (g, buckets) in grads.iter_mut().zip(reduced) {
                    layout.unpack(&buckets, g);
                }
            }
            #[cfg(feature = "cuda")]
            Self::Nccl {
                devices,
                bucket_elems,
                ..
            } => {
                use burn::tensor::distributed::{all_reduce, ReduceOperation};
                let layout = Layout::of(model, *bucket_elems);
                std::thread::scope(|s| {
                    for (r, g) in grads.iter_mut().enumerate() {
                        let layout = &layout;
                        s.spawn(move || {
                            rank_stream(r).executes(|| {
                                let buckets: Vec<Tensor<1>> = layout
                                    .buckets(g)
                                    .into_iter()
                                    .map(|b| {
                                        all_reduce(b, ReduceOperation::Mean, devices.to_vec())
                                            .resolve()
                                    })
                                    .collect();
                                layout.unpack(&buckets, g);
                            })
                        });
                    }
                });
            }
        }
    }
}

/// Replaces this process's gradient (already the mean of its own replicas) by the mean over
/// the processes of `collective`: bucket by bucket, on the device with NCCL, else read to the
/// host, summed by the engine, divided by the number of processes and written back. With one replica
/// per process this is the arithmetic of [`GradMean::Transfer`] (an f32 sum, then a division
/// by N), so two processes produce the gradients two replicas in one process do.
pub fn mean_over_processes(
    collective: &crate::collective::Collective,
    model: &Gpt2,
    grads: &mut GradientsParams,
    bucket_mb: f64,
) {
    if collective.is_local() {
        return;
    }
    let bucket_elems = ((bucket_mb * 1e6 / 4.0) as usize).max(1);
    let layout = Layout::of(model, bucket_elems);
    let buckets = layout.buckets(grads);
    // NCCL: in place on the device (each bucket is the only holder of its buffer: the
    // gradients were taken out of `grads`).
    if collective.mean_on_device(&buckets) {
        layout.unpack(&buckets, grads);
        return;
    }
    let n = collective.world_size() as f32;
    let reduced: Vec<Tensor<1>> = buckets
        .into_iter()
        .map(|b| {
            let device = b.device();
            let mut v = b
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("gradients are f32");
            collective.sum_f32(&mut v);
            v.iter_mut().for_each(|x| *x /= n);
            let len = v.len();
            Tensor::from_data(burn::tensor::TensorData::new(v, [len]), &device)
        })
        .collect();
    layout.unpack(&reduced, grads);
}

/// Where each parameter's gradient lies in the flattened concatenation of all of them (visit
/// order), cut into buckets of `bucket_elems` values.
struct Layout {
    /// `(id, rank, shape, offset of its first value)`.
    params: Vec<(ParamId, usize, Vec<usize>, usize)>,
    total: usize,
    bucket_elems: usize,
}

impl Layout {
    fn of(model: &Gpt2, bucket_elems: usize) -> Self {
        struct Visit(Vec<(ParamId, usize, Vec<usize>, usize)>, usize);
        impl ModuleVisitor for Visit {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let shape = param.shape().dims::<D>().to_vec();
                let n: usize = shape.iter().product();
                self.0.push((param.id, D, shape, self.1));
                self.1 += n;
            }
        }
        let mut v = Visit(Vec::new(), 0);
        model.visit(&mut v);
        Self {
            params: v.0,
            total: v.1,
            bucket_elems,
        }
    }

    fn bucket_count(&self) -> usize {
        self.total.div_ceil(self.bucket_elems)
    }

    /// Takes every gradient out of `g` and returns the buckets (each a concatenation of the
    /// pieces of the flattened gradients it covers).
    fn buckets(&self, g: &mut GradientsParams) -> Vec<Tensor<1>> {
        let flat: Vec<Tensor<1>> = self
            .params
            .iter()
            .map(|(id, rank, _, _)| take_flat(g, *id, *rank))
            .collect();
        (0..self.bucket_count())
            .map(|k| {
                let (start, end) = (
                    k * self.bucket_elems,
                    ((k + 1) * self.bucket_elems).min(self.total),
                );
                let pieces: Vec<Tensor<1>> = self
                    .params
                    .iter()
                    .zip(&flat)
                    .filter_map(|((_, _, shape, off), t)| {
                        let n: usize = shape.iter().product();
                        let (a, b) = (start.max(*off), end.min(off + n));
                        (a < b).then(|| t.clone().narrow(0, a - off, b - a))
                    })
                    .collect();
                if pieces.len() == 1 {
                    pieces.into_iter().next().expect("one piece")
                } else {
                    Tensor::cat(pieces, 0)
                }
            })
            .collect()
    }

    /// Cuts the reduced `buckets` back into each parameter's gradient and registers it in `g`.
    fn unpack(&self, buckets: &[Tensor<1>], g: &mut GradientsParams) {
        for (id, rank, shape, off) in &self.params {
            let n: usize = shape.iter().product();
            let (first, last) = (off / self.bucket_elems, (off + n - 1) / self.bucket_elems);
            let pieces: Vec<Tensor<1>> = (first..=last)
                .map(|k| {
                    let (start, end) = (
                        k * self.bucket_elems,
                        ((k + 1) * self.bucket_elems).min(self.total),
                    );
                    let (a, b) = (start.max(*off), end.min(off + n));
                    buckets[k].clone().narrow(0, a - start, b - a)
                })
                .collect();
            let flat = if pieces.len() == 1 {
                pieces.into_iter().next().expect("one piece")
            } else {
                Tensor::cat(pieces, 0)
            };
            debug_assert_eq!(*rank, shape.len());
            register_flat(g, *id, shape, flat);
        }
    }
}

/// Registers `flat` in `g` as the gradient of `id`, reshaped to `shape`.
pub(crate) fn register_flat(
    g: &mut GradientsParams,
    id: ParamId,
    shape: &[usize],
    flat: Tensor<1>,
) {
    match shape.len() {
        1 => g.register(id, flat),
        2 => g.register(id, flat.reshape([shape[0], shape[1]])),
        3 => g.register(id, flat.reshape([shape[0], shape[1], shape[2]])),
        other => unreachable!("GPT-2 has no {other}-D parameters"),
    }
}

/// A parameter's gradient taken out of `g`, flattened.
pub(crate) fn take_flat(g: &mut GradientsParams, id: ParamId, rank: usize) -> Tensor<1> {
    let missing = "every rank computes the same parameters' gradients";
    match rank {
        1 => g.remove::<1>(id).expect(missing),
        2 => g.remove::<2>(id).expect(missing).flatten(0, 1),
        3 => g.remove::<3>(id).expect(missing).flatten(0, 2),
        other => unreachable!("GPT-2 has no {other}-D parameters"),
    }
}

/// Runs `f(rank, item)` for every rank: on threads of their own when `parallel` (GPU devices),
/// each on its rank's stream ([`rank_stream`]), in rank order otherwise. Results come back in
/// rank order.
pub fn on_each_rank<T: Send, R: Send>(
    items: &mut [T],
    parallel: bool,
    f: impl Fn(usize, &mut T) -> R + Sync,
) -> Vec<R> {
    if !parallel || items.len() == 1 {
        return items.iter_mut().enumerate().map(|(r, x)| f(r, x)).collect();
    }
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .iter_mut()
            .enumerate()
            .map(|(r, x)| s.spawn(move || rank_stream(r).executes(|| f(r, x))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The CubeCL stream rank `rank` submits its work on, the same for the whole process.
///
/// CubeCL gives every OS thread a stream of its own, and every stream its own memory pools. The
/// ranks run on threads spawned for each step, so without a fixed stream each step started new
/// pools on every device beside the old ones (a 2-device tiny run's reported peak grew by 91 MB
/// a step, 347 → 984 MB over 8 steps; experiments/RESULTS.md) and synchronised across streams.
/// Two runs in one process share these streams, which only orders their work (a stream is FIFO).
pub fn rank_stream(rank: usize) -> burn::tensor::StreamId {
    use burn::tensor::StreamId;
    static STREAMS: std::sync::Mutex<Vec<StreamId>> = std::sync::Mutex::new(Vec::new());
    let mut streams = STREAMS.lock().unwrap_or_else(|e| e.into_inner());
    while streams.len() <= rank {
        streams.push(StreamId::allocate());
    }
    streams[rank]
}

/// `model` on each device: rank 0 is `model` itself, the others `fork`s of it (same weights,
/// same parameter ids, their own autodiff graph).
pub fn replicate(model: Gpt2, devices: &[Device]) -> Vec<Gpt2> {
    let mut out = Vec::with_capacity(devices.len());
    for d in &devices[1..] {
        out.push(model.clone().fork(d));
    }
    out.insert(0, model);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Each rank's work runs on one stream for every step (not one per spawned thread), and the
    /// ranks' streams differ.
    #[test]
    fn ranks_keep_their_stream_from_step_to_step() {
        let streams = || {
            on_each_rank(&mut [(), (), ()], true, |_, _| {
                burn::tensor::StreamId::current()
            })
        };
        let (first, second) = (streams(), streams());
        assert_eq!(first, second);
        assert!(first[0] != first[1] && first[1] != first[2] && first[0] != first[2]);
    }

    /// Rank `r`'s made-up gradient of every parameter of `model`, on `device`.
    fn grads_for(model: &Gpt2, r: usize, device: &Device) -> GradientsParams {
        struct Fill<'a>(GradientsParams, usize, &'a Device, usize);
        impl ModuleVisitor for Fill<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let shape = param.shape();
                let n = shape.num_elements();
                let v: Vec<f32> = (0..n)
                    .map(|i| {
                        ((i * 7919 + self.1 * 104_729 + self.3 * 31) % 1013) as f32 / 101.3 - 5.0
                    })
                    .collect();
                let t = Tensor::<D>::from_data(TensorData::new(v, shape), self.2);
                self.0.register(param.id, t);
                self.3 += 1;
            }
        }
        let mut f = Fill(GradientsParams::new(), r, device, 0);
        model.visit(&mut f);
        f.0
    }

    fn flat(model: &Gpt2, g: &GradientsParams) -> Vec<f32> {
        struct Read<'a>(&'a GradientsParams, Vec<f32>);
        impl ModuleVisitor for Read<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let t = self.0.get::<D>(param.id).expect("a gradient");
                self.1.extend(
                    t.into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .expect("f32"),
                );
            }
        }
        let mut r = Read(g, Vec::new());
        model.visit(&mut r);
        r.1
    }

    /// The bucketed mean equals the per-tensor mean `(g₀ + g₁) / 2` bit for bit, with buckets of
    /// 1,000 values (which cut tensors across buckets: the tiny model's wte alone is 3.2M values,
    /// its biases 64) and with one bucket holding everything.
    pub(crate) fn bucketed_mean_equals_the_per_tensor_mean(devices: &[Device]) {
        let config = gpt2_model::Gpt2Config::preset("tiny").expect("preset");
        let model = Gpt2::new(&config, &devices[0], 1).expect("model");
        let want: Vec<f32> = {
            let g: Vec<GradientsParams> = devices
                .iter()
                .enumerate()
                .map(|(r, d)| grads_for(&model, r, d))
                .collect();
            let (a, b) = (flat(&model, &g[0]), flat(&model, &g[1]));
            a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect()
        };
        for bucket_mb in [4e-3, 1e6] {
            let mean = GradMean::new("test", devices, bucket_mb);
            let mut g: Vec<GradientsParams> = devices
                .iter()
                .enumerate()
                .map(|(r, d)| grads_for(&model, r, d))
                .collect();
            mean.mean(&model, &mut g);
            for (r, g) in g.iter().enumerate() {
                assert!(
                    flat(&model, g) == want,
                    "rank {r}, buckets of {bucket_mb} MB"
                );
            }
        }
    }

    #[test]
    fn bucketed_mean_on_two_flex_replicas() {
        bucketed_mean_equals_the_per_tensor_mean(&[Device::flex(), Device::flex()]);
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn bucketed_mean_on_two_wgpu_devices() {
        let Some(adapters) = gpt2_model::testing::wgpu_devices_or_skip("bucketed mean") else {
            return;
        };
        let devices = if adapters.len() >= 2 {
            adapters[..2].to_vec()
        } else {
            vec![
                Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
                Device::wgpu(burn::tensor::DeviceKind::Cpu),
            ]
        };
        bucketed_mean_equals_the_per_tensor_mean(&devices);
    }
}
