//! NCCL between processes, one CUDA device each (the trainer's `distributed.backend: nccl`),
//! through cudarc's NCCL bindings on buffers that Burn's CUDA backend owns.
//!
//! Burn 0.22.1's own collectives (cubecl-cuda `compute/communication.rs`) keep the NCCL unique
//! id in a process-local map and number ranks by local device, so they cannot span processes.
//! Here the trainer exchanges the id itself (MPI or TCP), every process joins with
//! `ncclCommInitRank`, and a collective runs on buffers reached through CubeCL:
//!
//! 1. each bucket's `CubeTensor` is pinned with `Client::get_resource` (its device pointer,
//!    offsets included; while pinned the allocation is never freed or handed out again), which
//!    also orders the calling thread's stream behind the stream that wrote the buffer;
//! 2. `Client::sync` waits for that stream, so Burn's writes to the buffers are done;
//! 3. the all-reduces run in one NCCL group on a stream of our own, in the device's primary
//!    context (the one cubecl-cuda uses);
//! 4. that stream is synchronised before the pins are dropped, so later Burn kernels see the
//!    result and nothing reuses a buffer NCCL still writes.
//!
//! cudarc opens libcuda and libnccl at run time (nothing links against them at build time), so
//! this compiles without CUDA or NCCL installed; it has never run (no GPU has been lent to this
//! work). cudarc looks for `libnccl.so` (not NCCL's soname `libnccl.so.2`): install
//! `libnccl-dev`, or put a `libnccl.so → libnccl.so.2` link on `LD_LIBRARY_PATH`.

use std::ffi::{c_char, c_void};

use burn::backend::Cube;
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::tensor::CubeTensor;
use cubecl_runtime::runtime::Runtime;
use cudarc::driver::{result as cu, sys as cusys};
use cudarc::nccl::{result as nccl, sys as ncclsys};

/// cubecl-cuda's server type, named through its runtime (the module that defines it is private).
type CudaServer = <cubecl_cuda::CudaRuntime as Runtime>::Server;

fn err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

/// Length of an NCCL unique id.
pub const ID_BYTES: usize = 128;

/// Whether libnccl can be opened; an error that says what to install otherwise.
pub fn check_library() -> Result<(), String> {
    // SAFETY: only tries to open the library.
    if unsafe { ncclsys::is_culib_present() } {
        Ok(())
    } else {
        Err(
            "libnccl.so not found: install NCCL (libnccl2 and libnccl-dev, whose libnccl.so \
             cudarc opens), or put a libnccl.so → libnccl.so.2 link on LD_LIBRARY_PATH"
                .into(),
        )
    }
}

/// A new NCCL unique id (rank 0 makes it; the others receive it).
pub fn unique_id() -> Result<[u8; ID_BYTES], String> {
    check_library()?;
    let id = nccl::get_uniqueid().map_err(err("ncclGetUniqueId"))?;
    Ok(id.internal.map(|c| c as u8))
}

/// The CUDA ordinal of `device`, or an error for another kind.
fn ordinal(device: &Device) -> Result<usize, String> {
    use burn::backend::DispatchDevice;
    match device.clone().without_autodiff().as_dispatch() {
        DispatchDevice::Cube(cubecl::Device::Cuda(d)) => Ok(d.index),
        other => Err(format!("NCCL runs on CUDA devices, not {other:?}")),
    }
}

/// One process's member of an NCCL communicator, with the stream its collectives run on.
pub struct Comm {
    comm: ncclsys::ncclComm_t,
    stream: cusys::CUstream,
    ctx: cusys::CUcontext,
    /// A device buffer for the small host-value collectives (`sum_f64`), `SCALARS` f64 long.
    scratch: cusys::CUdeviceptr,
}

const SCALARS: usize = 64;

impl Comm {
    /// Joins the communicator `id` as `rank` of `world_size` on `device` (collective: every rank
    /// calls it, and it returns once all have joined).
    pub fn join(
        device: &Device,
        rank: usize,
        world_size: usize,
        id: &[u8; ID_BYTES],
    ) -> Result<Self, String> {
        check_library()?;
        let ctx = primary_context(ordinal(device)?)?;
        let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map_err(err("cuStreamCreate"))?;
        let mut comm: ncclsys::ncclComm_t = std::ptr::null_mut();
        let id = ncclsys::ncclUniqueId {
            internal: id.map(|b| b as c_char),
        };
        // SAFETY: `comm` is written by NCCL on success; every rank passes the same id.
        unsafe { nccl::comm_init_rank(&mut comm, world_size as i32, id, rank as i32) }
            .map_err(err("ncclCommInitRank"))?;
        // SAFETY: the context is current; the size is positive.
        let scratch = unsafe { cu::malloc_sync(SCALARS * 8) }.map_err(err("cuMemAlloc"))?;
        Ok(Self {
            comm,
            stream,
            ctx,
            scratch,
        })
    }

    /// Replaces each of `buckets` (f32, contiguous, each the only holder of its buffer) by its
    /// mean over the ranks, in place: one NCCL group of `ncclAvg` all-reduces.
    pub fn all_reduce_mean(&self, buckets: &[Tensor<1>]) -> Result<(), String> {
        // The pins (and the tensors) live until the stream is synchronised below.
        let mut held = Vec::with_capacity(buckets.len());
        for t in buckets {
            let ct: CubeTensor = t
                .clone()
                .without_autodiff()
                .try_into_primitive::<Cube>()
                .map_err(err("a gradient bucket is not a CubeCL tensor"))?;
            if ct.dtype != DType::F32 || !ct.is_contiguous() {
                return Err(format!(
                    "NCCL buckets must be contiguous f32, not {:?}",
                    ct.dtype
                ));
            }
            let n = ct.meta.num_elements();
            let pin = ct
                .client
                .get_resource::<CudaServer>(ct.handle.clone())
                .map_err(err("pinning a gradient bucket"))?;
            let ptr = pin.resource().ptr;
            held.push((ct, pin, ptr, n));
        }
        if let Some((ct, ..)) = held.first() {
            cubecl::future::block_on(ct.client.sync()).map_err(err("waiting for the device"))?;
        }
        self.make_current()?;
        nccl::group_start().map_err(err("ncclGroupStart"))?;
        for &(_, _, ptr, n) in &held {
            // SAFETY: `ptr` is a live, pinned device buffer of `n` f32 values that nothing else
            // reads or writes until the stream is synchronised.
            unsafe {
                nccl::all_reduce(
                    ptr as *const c_void,
                    ptr as *mut c_void,
                    n,
                    ncclsys::ncclDataType_t::ncclFloat32,
                    ncclsys::ncclRedOp_t::ncclAvg,
                    self.comm,
                    self.stream as _,
                )
            }
            .map_err(err("ncclAllReduce"))?;
        }
        nccl::group_end().map_err(err("ncclGroupEnd"))?;
        self.synchronize()?;
        drop(held);
        Ok(())
    }

    /// Elementwise sum of host values over the ranks (at most 64 at a time), through the
    /// device: `ncclSum` in f64.
    pub fn sum_f64(&self, buf: &mut [f64]) -> Result<(), String> {
        self.scalars(buf, None)
    }

    /// Rank `root`'s host values on every rank.
    pub fn broadcast_f64(&self, root: usize, buf: &mut [f64]) -> Result<(), String> {
        self.scalars(buf, Some(root))
    }

    fn scalars(&self, buf: &mut [f64], root: Option<usize>) -> Result<(), String> {
        for chunk in buf.chunks_mut(SCALARS) {
            self.make_current()?;
            // SAFETY: `scratch` holds SCALARS f64; the copies and the collective run in order
            // on `stream`, which is synchronised before `chunk` is read.
            unsafe {
                cu::memcpy_htod_async(self.scratch, chunk, self.stream)
                    .map_err(err("cuMemcpyHtoD"))?;
                let p = self.scratch as *mut c_void;
                match root {
                    None => nccl::all_reduce(
                        p,
                        p,
                        chunk.len(),
                        ncclsys::ncclDataType_t::ncclFloat64,
                        ncclsys::ncclRedOp_t::ncclSum,
                        self.comm,
                        self.stream as _,
                    ),
                    Some(root) => nccl::broadcast(
                        p,
                        p,
                        chunk.len(),
                        ncclsys::ncclDataType_t::ncclFloat64,
                        root as i32,
                        self.comm,
                        self.stream as _,
                    ),
                }
                .map_err(err("an NCCL collective of host values"))?;
                cu::memcpy_dtoh_async(chunk, self.scratch, self.stream)
                    .map_err(err("cuMemcpyDtoH"))?;
            }
            self.synchronize()?;
        }
        Ok(())
    }

    /// Every rank waits for all (an all-reduce of one value).
    pub fn barrier(&self) -> Result<(), String> {
        self.sum_f64(&mut [0.0])
    }

    /// Tears the communicator down without waiting for the others (a rank that failed).
    pub fn abort(&self) {
        // SAFETY: the communicator is not used again; the process exits next.
        unsafe {
            let _ = nccl::comm_abort(self.comm);
        }
    }

    fn make_current(&self) -> Result<(), String> {
        // SAFETY: `ctx` is the retained primary context of this communicator's device.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(err("cuCtxSetCurrent"))
    }

    fn synchronize(&self) -> Result<(), String> {
        // SAFETY: `stream` was created by this communicator and is live.
        unsafe { cu::stream::synchronize(self.stream) }.map_err(err("cuStreamSynchronize"))
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        // SAFETY: nothing uses these handles after the drop.
        unsafe {
            let _ = cu::ctx::set_current(self.ctx);
            let _ = nccl::comm_destroy(self.comm);
            let _ = cu::free_sync(self.scratch);
            let _ = cu::stream::destroy(self.stream);
        }
    }
}

/// The device's primary context (cubecl-cuda's), retained and current on this thread.
fn primary_context(ordinal: usize) -> Result<cusys::CUcontext, String> {
    cu::init().map_err(err("cuInit"))?;
    let dev = cu::device::get(ordinal as i32).map_err(err("cuDeviceGet"))?;
    // SAFETY: `dev` is a valid device; the retained context outlives the communicator (it is
    // cubecl-cuda's too, and never released here).
    let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(err("cuDevicePrimaryCtxRetain"))?;
    // SAFETY: as above.
    unsafe { cu::ctx::set_current(ctx) }.map_err(err("cuCtxSetCurrent"))?;
    Ok(ctx)
}
