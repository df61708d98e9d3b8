//! Our CubeCL kernels as the CUDA C++ that cubecl-cuda would hand NVRTC on an A100 (sm_80) or
//! an H100 (sm_90), generated without a GPU or a driver, for `make check-cuda-kernels`
//! (`scripts/cuda_kernels.py` compiles them with NVIDIA's NVRTC and ptxas).
//!
//! What the source depends on, and how each is matched to a real run (cubecl 0.11.3):
//! - the kernel's arguments: every tensor as a plain handle (`into_tensor_arg` never aliases),
//!   the comptime values training uses (head sizes 32 and 64, the block rows [`block_rows`] picks
//!   for the card's opt-in shared memory, the row kernels' unit counts) and the dtype (`f32`,
//!   `f16`, `bf16` for the kernels generic over it; Burn's `i32` for token ids);
//! - the launch settings: the cube size (it becomes `__launch_bounds__`), checked mode, u32
//!   addresses, as the generated `launch` sets them;
//! - the compilation options cubecl-cuda's runtime derives from the compute capability
//!   (`runtime.rs`): warp size 32, grid constants, dp4a and fast math from sm_70/61, fast tanh
//!   (CUDA ≥ 12.8 at build time), clusters and `elect.sync` from sm_90.
//!
//! Device properties are read only for validation our kernels never reach; shapes and strides
//! are run-time metadata and never reach the source.

use std::sync::Arc;

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::DType;
use cubecl::ir::{
    features::Features, DeviceIdentity, DeviceProperties, HardwareProperties,
    MemoryDeviceProperties,
};
use cubecl::prelude::*;
use cubecl::Compiler as _;
use cubecl_cuda::{CudaCompilationOptions, CudaCompiler, CudaRuntime};
use cubecl_runtime::runtime::Runtime as _;

use super::attention::{
    block_rows, flash_delta_kernel, flash_dkdv_kernel, flash_dq_kernel, flash_forward_kernel,
    Kernel,
};
use super::{adamw, norm, rows};

/// A card the kernels are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Card {
    /// Compute capability × 10: 80 (A100), 90 (H100).
    pub sm: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`, what cubecl-cuda reports as the
    /// shared memory a cube may use.
    pub shared_optin: usize,
    pub multiprocessors: u32,
}

/// NVIDIA A100 (sm_80): 163 KiB opt-in shared memory per block, 108 SMs.
pub const A100: Card = Card {
    sm: 80,
    shared_optin: 166_912,
    multiprocessors: 108,
};

/// NVIDIA H100 SXM (sm_90): 227 KiB opt-in shared memory per block, 132 SMs.
pub const H100: Card = Card {
    sm: 90,
    shared_optin: 232_448,
    multiprocessors: 132,
};

/// One generated kernel variant.
#[derive(Debug, Clone)]
pub struct KernelSource {
    /// Our name for the kernel (`flash_forward`, `layer_norm_dx`, …).
    pub kernel: &'static str,
    /// `f32`, `f16`, `bf16` (the float type it computes in) or `i32` (its token ids).
    pub dtype: &'static str,
    /// The comptime values it was generated with, e.g. `hd=64 block=64`.
    pub variant: String,
    /// Threads per block (the cube size; `__launch_bounds__`).
    pub threads: u32,
    /// Dynamic shared memory the launch reserves, in bytes.
    pub shared_bytes: usize,
    /// The entry point's name in the source.
    pub entry: String,
    /// CUDA C++, exactly as NVRTC receives it.
    pub source: String,
}

/// The architecture flag cubecl-cuda passes NVRTC (`compute/context.rs`): `sm_90a` from 9.0 on.
pub fn nvrtc_arch(sm: u32) -> String {
    if sm >= 90 {
        format!("sm_{sm}a")
    } else {
        format!("sm_{sm}")
    }
}

fn properties(card: Card) -> Arc<DeviceProperties> {
    Arc::new(DeviceProperties::new(
        Features::default(),
        MemoryDeviceProperties::new(80 << 30, 512),
        HardwareProperties {
            load_width: 128,
            vector_register_count: None,
            plane_size_min: 32,
            plane_size_max: 32,
            max_bindings: 1024,
            max_shared_memory_size: card.shared_optin,
            max_cube_count: (i32::MAX as u32, u16::MAX as u32, u16::MAX as u32),
            max_units_per_cube: 1024,
            max_cube_dim: (1024, 1024, 64),
            num_streaming_multiprocessors: Some(card.multiprocessors),
            num_tensor_cores: Some(4),
            min_tensor_cores_dim: Some(8),
            num_cpu_cores: None,
            last_level_cache_size: None,
            max_vector_size: VectorSize::MAX,
            cube_mma_reserved_shared_memory: 0,
        },
        cubecl::profile::TimingMethod::Device,
        DeviceIdentity {
            name: format!("offline sm_{}", card.sm),
            fingerprint: format!("offline-sm{}", card.sm),
            physical: None,
        },
    ))
}

fn options(card: Card) -> CudaCompilationOptions {
    let mut o = CudaCompilationOptions::default();
    o.cpp.warp_size = 32;
    let f = &mut o.cpp.supports_features;
    f.fast_math = true;
    f.dp4a = true;
    f.grid_constants = true;
    // cubecl-cuda: `CUDA_VERSION >= 12080`, cudarc's compile-time toolkit version.
    f.fast_tanh = cudarc_cuda_version() >= 12080;
    if card.sm >= 90 {
        f.clusters = true;
        f.elect_sync = true;
    }
    o
}

/// The toolkit version cubecl-cuda's build was made for (cudarc's `CUDA_VERSION`: from `nvcc`
/// where the build machine has it, else the newest cudarc knows).
fn cudarc_cuda_version() -> u32 {
    cudarc::driver::sys::CUDA_VERSION
}

fn tensor() -> TensorCompilationArg {
    TensorCompilationArg {
        meta: TensorMetaCompilationArg { len: (), rank: () },
        buffer: BufferCompilationArg { inplace: None },
    }
}

fn settings(threads: u32) -> KernelSettings {
    KernelSettings::new(
        CubeDim::new_1d(threads).into(),
        ExecutionMode::Checked,
        AddressType::U32,
    )
}

struct Emitter {
    card: Card,
    props: Arc<DeviceProperties>,
    target: Arc<cubecl::ir::TargetProperties>,
    out: Vec<KernelSource>,
}

impl Emitter {
    fn emit(
        &mut self,
        kernel: &'static str,
        dtype: &'static str,
        variant: String,
        threads: u32,
        k: impl CubeKernel,
    ) -> Result<(), String> {
        let def = cubecl::define_kernel(&k)
            .map_err(|e| format!("{kernel} {dtype} {variant}: expanding the kernel: {e:?}"))?;
        let entry = def.settings.kernel_name.clone();
        let repr = CudaCompiler::default()
            .compile(def, &options(self.card))
            .map_err(|e| format!("{kernel} {dtype} {variant}: CUDA C++ generation: {e:?}"))?;
        self.out.push(KernelSource {
            kernel,
            dtype,
            variant,
            threads,
            shared_bytes: repr.shared_memory_size(),
            entry,
            source: repr.to_string(),
        });
        Ok(())
    }
}

const FLOATS: [(&str, DType); 3] = [
    ("f32", DType::F32),
    ("f16", DType::F16),
    ("bf16", DType::BF16),
];

/// Head sizes training meets: 64 in every GPT-2 size, 32 in the small presets.
const HEAD_SIZES: [usize; 2] = [32, 64];

/// Every kernel of ours, in every dtype and comptime variant training launches on `card`.
pub fn kernel_sources(card: Card) -> Result<Vec<KernelSource>, String> {
    let mut e = Emitter {
        card,
        props: properties(card),
        target: Arc::new(CudaRuntime::target_properties()),
        out: Vec::new(),
    };
    let (p, tp) = (e.props.clone(), e.target.clone());
    for (name, dtype) in FLOATS {
        let ty = dtype_to_storage_type(dtype);
        for hd in HEAD_SIZES {
            let rows = |k: Kernel| {
                block_rows(hd, card.shared_optin, 1024, k).ok_or_else(|| {
                    format!(
                        "flash attention: head size {hd} does not fit sm_{}",
                        card.sm
                    )
                })
            };
            let kv = rows(Kernel::KeyValueTiles)?;
            let qt = rows(Kernel::QueryTiles)?;
            let s = settings(kv as u32);
            let k = flash_forward_kernel::FlashForwardKernel::new(
                s,
                p.clone(),
                tp.clone(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                (),
                hd,
                kv,
                ty,
            );
            e.emit(
                "flash_forward",
                name,
                format!("hd={hd} block={kv}"),
                kv as u32,
                k,
            )?;
            let k = flash_delta_kernel::FlashDeltaKernel::new(
                settings(256),
                p.clone(),
                tp.clone(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                hd,
                ty,
            );
            e.emit("flash_delta", name, format!("hd={hd}"), 256, k)?;
            let k = flash_dq_kernel::FlashDqKernel::new(
                settings(kv as u32),
                p.clone(),
                tp.clone(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                (),
                hd,
                kv,
                ty,
            );
            e.emit(
                "flash_dq",
                name,
                format!("hd={hd} block={kv}"),
                kv as u32,
                k,
            )?;
            let k = flash_dkdv_kernel::FlashDkdvKernel::new(
                settings(qt as u32),
                p.clone(),
                tp.clone(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                tensor(),
                (),
                hd,
                qt,
                ty,
            );
            e.emit(
                "flash_dkdv",
                name,
                format!("hd={hd} block={qt}"),
                qt as u32,
                k,
            )?;
        }
        let (threads, k) = rows::offline_gelu(p.clone(), tp.clone(), ty);
        e.emit("gelu", name, String::new(), threads, k)?;
        let (threads, k) = rows::offline_gelu_backward(p.clone(), tp.clone(), ty);
        e.emit("gelu_backward", name, String::new(), threads, k)?;
    }
    let ids = dtype_to_storage_type(DType::I32);
    let (threads, k) = rows::offline_softmax_xent(p.clone(), tp.clone(), ids);
    e.emit(
        "softmax_xent",
        "i32",
        format!("block={threads}"),
        threads,
        k,
    )?;
    let (threads, k) = rows::offline_token_nll(p.clone(), tp.clone(), ids);
    e.emit("token_nll", "i32", format!("block={threads}"), threads, k)?;
    let (threads, k) = norm::offline_forward(p.clone(), tp.clone());
    e.emit(
        "layer_norm_forward",
        "f32",
        format!("block={threads}"),
        threads,
        k,
    )?;
    let (threads, k) = norm::offline_dx(p.clone(), tp.clone());
    e.emit(
        "layer_norm_dx",
        "f32",
        format!("block={threads}"),
        threads,
        k,
    )?;
    let (threads, chunk, k) = norm::offline_dparams(p.clone(), tp.clone());
    e.emit(
        "layer_norm_dparams",
        "f32",
        format!("chunk={chunk}"),
        threads,
        k,
    )?;
    let (threads, k) = adamw::offline(p, tp);
    e.emit("adamw", "f32", String::new(), threads, k)?;
    Ok(e.out)
}

/// Compiled-kernel settings shared by the per-file `offline_*` constructors.
pub(super) fn offline_settings(threads: u32) -> KernelSettings {
    settings(threads)
}

/// A tensor argument as every launch of ours passes it (a plain handle).
pub(super) fn offline_tensor() -> TensorCompilationArg {
    tensor()
}
