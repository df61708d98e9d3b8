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
    Kernel, DELTA_UNITS,
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

/// Generates each kernel for one card and collects the sources.
struct Emitter {
    card: Card,
    props: Arc<DeviceProperties>,
    target: Arc<cubecl::ir::TargetProperties>,
    out: Vec<KernelSource>,
}

impl Emitter {
    /// `build(settings, device properties, target properties)` makes the kernel as its launch
    /// does; the settings carry `threads` as the cube size, so the two cannot disagree.
    fn emit<K: CubeKernel>(
        &mut self,
        kernel: &'static str,
        dtype: &'static str,
        variant: String,
        threads: u32,
        build: impl FnOnce(
            KernelSettings,
            Arc<DeviceProperties>,
            Arc<cubecl::ir::TargetProperties>,
        ) -> K,
    ) -> Result<(), String> {
        let k = build(settings(threads), self.props.clone(), self.target.clone());
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

/// Every kernel of ours, in every dtype and comptime variant training launches on `card`, with
/// the cube sizes and comptime values of their launches (the same constants).
pub fn kernel_sources(card: Card) -> Result<Vec<KernelSource>, String> {
    let mut e = Emitter {
        card,
        props: properties(card),
        target: Arc::new(CudaRuntime::target_properties()),
        out: Vec::new(),
    };
    let t = tensor;
    for (name, dtype) in FLOATS {
        let ty = dtype_to_storage_type(dtype);
        for hd in HEAD_SIZES {
            // What `block_for` picks on this card: its opt-in shared memory, 1,024 units a cube.
            let rows = |k: Kernel| {
                block_rows(hd, card.shared_optin, 1024, k).ok_or_else(|| {
                    format!(
                        "flash attention: head size {hd} does not fit sm_{}",
                        card.sm
                    )
                })
            };
            let (fw, dq, qt) = (
                rows(Kernel::Forward)?,
                rows(Kernel::Dq)?,
                rows(Kernel::DkDv)?,
            );
            let tiles = |block: usize| format!("hd={hd} block={block}");
            e.emit("flash_forward", name, tiles(fw), fw as u32, |s, p, tp| {
                flash_forward_kernel::FlashForwardKernel::new(
                    s,
                    p,
                    tp,
                    t(),
                    t(),
                    t(),
                    t(),
                    t(),
                    (),
                    hd,
                    fw,
                    ty,
                )
            })?;
            e.emit(
                "flash_delta",
                name,
                format!("hd={hd}"),
                DELTA_UNITS,
                |s, p, tp| {
                    flash_delta_kernel::FlashDeltaKernel::new(s, p, tp, t(), t(), t(), t(), hd, ty)
                },
            )?;
            e.emit("flash_dq", name, tiles(dq), dq as u32, |s, p, tp| {
                flash_dq_kernel::FlashDqKernel::new(
                    s,
                    p,
                    tp,
                    t(),
                    t(),
                    t(),
                    t(),
                    t(),
                    t(),
                    (),
                    hd,
                    dq,
                    ty,
                )
            })?;
            e.emit("flash_dkdv", name, tiles(qt), qt as u32, |s, p, tp| {
                flash_dkdv_kernel::FlashDkdvKernel::new(
                    s,
                    p,
                    tp,
                    t(),
                    t(),
                    t(),
                    t(),
                    t(),
                    t(),
                    t(),
                    (),
                    hd,
                    qt,
                    ty,
                )
            })?;
        }
        let units = rows::ELEMENTWISE_UNITS;
        e.emit("gelu", name, String::new(), units, |s, p, tp| {
            rows::gelu_kernel::GeluKernel::new(s, p, tp, t(), t(), ty)
        })?;
        e.emit("gelu_backward", name, String::new(), units, |s, p, tp| {
            rows::gelu_backward_kernel::GeluBackwardKernel::new(s, p, tp, t(), t(), t(), ty)
        })?;
    }
    // Token ids: Burn's default int type on the Cube backends.
    let ids = dtype_to_storage_type(DType::I32);
    let block = rows::ROW_UNITS;
    let variant = format!("block={block}");
    e.emit(
        "softmax_xent",
        "i32",
        variant.clone(),
        block as u32,
        |s, p, tp| {
            rows::softmax_xent_kernel::SoftmaxXentKernel::new(s, p, tp, t(), t(), t(), block, ids)
        },
    )?;
    e.emit("token_nll", "i32", variant, block as u32, |s, p, tp| {
        rows::token_nll_kernel::TokenNllKernel::new(s, p, tp, t(), t(), t(), block, ids)
    })?;
    let block = norm::ROW_UNITS;
    let variant = format!("block={block}");
    e.emit(
        "layer_norm_forward",
        "f32",
        variant.clone(),
        block as u32,
        |s, p, tp| {
            norm::layer_norm_forward_kernel::LayerNormForwardKernel::new(
                s,
                p,
                tp,
                t(),
                t(),
                t(),
                t(),
                t(),
                (),
                block,
            )
        },
    )?;
    e.emit("layer_norm_dx", "f32", variant, block as u32, |s, p, tp| {
        norm::layer_norm_dx_kernel::LayerNormDxKernel::new(s, p, tp, t(), t(), t(), t(), t(), block)
    })?;
    let chunk = norm::DPARAMS_CHUNK;
    let variant = format!("chunk={chunk}");
    e.emit(
        "layer_norm_dparams",
        "f32",
        variant,
        norm::DPARAMS_UNITS,
        |s, p, tp| {
            norm::layer_norm_dparams_kernel::LayerNormDparamsKernel::new(
                s,
                p,
                tp,
                t(),
                t(),
                t(),
                t(),
                chunk,
            )
        },
    )?;
    e.emit("adamw", "f32", String::new(), adamw::UNITS, |s, p, tp| {
        // The ten scalars `AdamWHyper::kernel_scalars` passes.
        let scalars: SequenceCompilationArg<f32> = (0..10).map(|_| ()).collect();
        adamw::adamw_kernel::AdamwKernel::new(s, p, tp, t(), t(), t(), t(), t(), t(), t(), scalars)
    })?;
    Ok(e.out)
}
