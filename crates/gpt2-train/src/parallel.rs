//! Data parallelism in one process: one model replica per device, built from the same weights
//! (`fork` keeps the parameter ids, so every rank's gradients are keyed alike), and the mean of
//! the ranks' gradients every step, so every rank applies the same AdamW update and the replicas
//! stay identical (PyTorch DDP's arithmetic; llm.c's `multi_gpu_async_reduce_gradient`).
//!
//! One interface, [`GradMean`], two implementations:
//! - [`GradMean::Nccl`] on CUDA: Burn's `DistributedContext` + `all_reduce(.., Mean)` through
//!   NCCL, one thread per device as burn-train's DDP does (a collective waits for every rank);
//! - [`GradMean::Transfer`] elsewhere (wgpu, flex, CUDA without NCCL): each gradient moved to the
//!   main device with `to_device`, summed, divided by N and copied back. Burn 0.22.1 implements
//!   `all_reduce` only for CUDA (wgpu and flex panic), and we ship no transport of our own.
//!
//! Ranks run their forward/backward passes on threads of their own on GPUs (a device's queue is
//! fed while the others compute), and one after another on flex, whose replicas share the CPU
//! and its global RNG.

#[cfg(feature = "cuda")]
use burn::module::ParamId;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use gpt2_model::Gpt2;

/// How the ranks' gradients are averaged.
pub enum GradMean {
    /// One device: nothing to do.
    Single,
    /// Through the main device (rank 0) with `to_device`.
    Transfer { devices: Vec<Device> },
    /// NCCL all-reduce on CUDA devices.
    #[cfg(feature = "cuda")]
    Nccl {
        devices: Vec<Device>,
        _context: burn::tensor::distributed::DistributedContext,
    },
}

impl GradMean {
    /// The reduction for these (plain, non-autodiff) devices of `kind`.
    pub fn new(kind: &str, devices: &[Device]) -> Self {
        if devices.len() == 1 {
            return Self::Single;
        }
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
                _context: DistributedContext::init(devices.to_vec(), config),
            };
        }
        let _ = kind;
        Self::Transfer {
            devices: devices.to_vec(),
        }
    }

    /// What the logs and the plan call it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Single => "none (1 device)",
            Self::Transfer { .. } => "mean via the main device (to_device)",
            #[cfg(feature = "cuda")]
            Self::Nccl { .. } => "NCCL all-reduce (mean)",
        }
    }

    /// Replaces every rank's gradient of every parameter of `model` (any replica: the ids are
    /// shared) by the mean over the ranks, on each rank's own device.
    pub fn mean(&self, model: &Gpt2, grads: &mut [GradientsParams]) {
        match self {
            Self::Single => {}
            Self::Transfer { devices } => {
                let mut v = TransferMean { devices, grads };
                model.visit(&mut v);
            }
            #[cfg(feature = "cuda")]
            Self::Nccl { devices, .. } => {
                let ids = param_ids(model);
                std::thread::scope(|s| {
                    for g in grads.iter_mut() {
                        let ids = &ids;
                        s.spawn(move || nccl_mean(ids, devices, g));
                    }
                });
            }
        }
    }
}

struct TransferMean<'a> {
    devices: &'a [Device],
    grads: &'a mut [GradientsParams],
}

impl ModuleVisitor for TransferMean<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let main = &self.devices[0];
        let mut parts = self.grads.iter_mut().map(|g| g.remove::<D>(param.id));
        let Some(Some(mut sum)) = parts.next() else {
            return; // no gradient on rank 0 (a frozen parameter): none anywhere
        };
        for g in parts {
            let g = g.expect("every rank computes the same parameters' gradients");
            sum = sum.add(g.to_device(main));
        }
        let mean = sum.div_scalar(self.grads.len() as f64);
        for (g, device) in self.grads.iter_mut().zip(self.devices) {
            g.register(param.id, mean.clone().to_device(device));
        }
    }
}

/// The parameter ids of `model` with their ranks, in visit order (for the per-device threads).
#[cfg(feature = "cuda")]
fn param_ids(model: &Gpt2) -> Vec<(ParamId, usize)> {
    struct Ids(Vec<(ParamId, usize)>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push((param.id, D));
        }
    }
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    ids.0
}

/// One rank's side of the NCCL mean: every rank issues the same all-reduces in the same order.
#[cfg(feature = "cuda")]
fn nccl_mean(ids: &[(ParamId, usize)], devices: &[Device], g: &mut GradientsParams) {
    use burn::tensor::distributed::{all_reduce, ReduceOperation};
    fn one<const D: usize>(id: ParamId, devices: &[Device], g: &mut GradientsParams) {
        if let Some(t) = g.remove::<D>(id) {
            let mean = all_reduce(t, ReduceOperation::Mean, devices.to_vec()).resolve();
            g.register(id, mean);
        }
    }
    for &(id, rank) in ids {
        match rank {
            1 => one::<1>(id, devices, g),
            2 => one::<2>(id, devices, g),
            3 => one::<3>(id, devices, g),
            other => unreachable!("GPT-2 has no {other}-D parameters"),
        }
    }
}

/// Runs `f(rank, item)` for every rank: on threads of their own when `parallel` (GPU devices),
/// in rank order otherwise. Results come back in rank order.
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
            .map(|(r, x)| s.spawn(move || f(r, x)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
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
