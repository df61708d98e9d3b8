//! Which devices run the work: `flex` (Burn's pure-Rust CPU backend, the default), `cuda`
//! (NVIDIA, kernels compiled by NVRTC) and `wgpu` (Vulkan, Metal or DX12 through WGSL shaders:
//! AMD, Intel and Apple GPUs, and Mesa's software Vulkan driver lavapipe, which CI tests on).
//!
//! Burn hands out `Device::cuda(id)` or `Device::wgpu(..)` whether or not such a device exists,
//! and the first operation then panics inside Burn's device thread. Every GPU device is
//! therefore probed here first (the runtime's own enumeration), so a missing driver or adapter
//! is an error that says what to install. `cuda` and `wgpu` share Burn's CubeCL backend, so the
//! wgpu path exercises the same kernels, autodiff and fused-op code as CUDA.

use burn::tensor::{DType, Device, DeviceKind};

use crate::config::DeviceConfig;
use crate::error::{Result, TrainError};

/// Device kinds a `device.kind` / `--device` may name.
pub const KINDS: &str = "flex (CPU), cuda, wgpu";

/// The device for inference (eval, sample): `cpu`/`flex`, `cuda` (GPU 0) or `wgpu` (the first
/// adapter). Never an autodiff device.
pub fn inference_device(kind: &str) -> Result<Device> {
    match kind {
        "cpu" | "flex" => Ok(Device::flex()),
        "cuda" => cuda_device(0),
        "wgpu" => wgpu_device(0),
        other => Err(TrainError::Device {
            requested: other.into(),
            message: "unknown device".into(),
            hint: "use cpu, cuda or wgpu".into(),
        }),
    }
}

/// The training devices of `device` (`kind`, `ids` — empty means device 0 — and, for wgpu,
/// `wgpu_devices`), one per data-parallel rank, plain (the trainer adds autodiff). Ids must be
/// distinct and exist.
pub fn training_devices(device: &DeviceConfig) -> Result<Vec<Device>> {
    let kind = device.kind.as_str();
    let ids = if device.ids.is_empty() {
        &[0][..]
    } else {
        &device.ids[..]
    };
    if let Some(dup) = duplicate(ids) {
        return Err(TrainError::Device {
            requested: format!("{kind} ids {ids:?}"),
            message: format!("device id {dup} is listed twice"),
            hint: "list each device once in device.ids".into(),
        });
    }
    if kind == "flex" && ids.iter().enumerate().any(|(i, &id)| i != id) {
        let n = ids.len();
        return Err(TrainError::Device {
            requested: format!("flex ids {ids:?}"),
            message: "flex is one CPU device; its replicas are numbered 0..N-1".into(),
            hint: format!("use device.ids {:?}", (0..n).collect::<Vec<_>>()),
        });
    }
    if kind == "wgpu" && !device.wgpu_devices.is_empty() {
        return named_wgpu_devices(&device.wgpu_devices, ids);
    }
    ids.iter()
        .map(|&id| match kind {
            // flex is one CPU device; several ids are several replicas on it (the data-parallel
            // arithmetic, checked without a GPU).
            "flex" => Ok(Device::flex()),
            "cuda" => cuda_device(id),
            "wgpu" => wgpu_device(id),
            other => Err(TrainError::Device {
                requested: other.into(),
                message: "unknown device kind".into(),
                hint: format!("device.kind is one of {KINDS}"),
            }),
        })
        .collect()
}

/// A `device.wgpu_devices` name as Burn's wgpu device kind.
pub fn parse_wgpu_name(name: &str) -> std::result::Result<DeviceKind, String> {
    let indexed = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|n| n.strip_prefix(':'))
            .map(|n| {
                n.parse::<usize>()
                    .map_err(|_| format!("`{name}`: the index must be a number"))
            })
    };
    Ok(match name {
        "default" => DeviceKind::DefaultDevice,
        "cpu" => DeviceKind::Cpu,
        _ => {
            if let Some(i) = indexed("discrete") {
                DeviceKind::DiscreteGpu(i?)
            } else if let Some(i) = indexed("integrated") {
                DeviceKind::IntegratedGpu(i?)
            } else if let Some(i) = indexed("virtual") {
                DeviceKind::VirtualGpu(i?)
            } else {
                return Err(format!(
                    "unknown wgpu device `{name}`: use discrete:N, integrated:N, virtual:N, cpu or default"
                ));
            }
        }
    })
}

/// `ids` into the named wgpu devices, each checked against the adapters wgpu finds.
fn named_wgpu_devices(names: &[String], ids: &[usize]) -> Result<Vec<Device>> {
    let bad = |requested: String, message: String| TrainError::Device {
        requested,
        message,
        hint: "check device.ids and device.wgpu_devices against `vulkaninfo --summary`".into(),
    };
    #[cfg(feature = "wgpu")]
    let found = wgpu_devices();
    #[cfg(not(feature = "wgpu"))]
    let found: Vec<Device> = Vec::new();
    ids.iter()
        .map(|&id| {
            let name = names.get(id).ok_or_else(|| {
                bad(
                    format!("wgpu:{id}"),
                    format!("device.wgpu_devices names {} device(s)", names.len()),
                )
            })?;
            let kind = parse_wgpu_name(name).map_err(|e| bad(format!("wgpu:{id}"), e))?;
            let wanted = wgpu_by_kind(kind.clone())?;
            // `default` lands on whichever adapter exists; the others must be among them.
            if found.is_empty() || (kind != DeviceKind::DefaultDevice && !found.contains(&wanted)) {
                return Err(wgpu_missing(&format!("wgpu:{id} ({name})"), found.len()));
            }
            Ok(wanted)
        })
        .collect()
}

fn wgpu_by_kind(kind: DeviceKind) -> Result<Device> {
    #[cfg(feature = "wgpu")]
    return Ok(Device::wgpu(kind));
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = kind;
        Err(wgpu_unbuilt("wgpu"))
    }
}

fn duplicate(ids: &[usize]) -> Option<usize> {
    ids.iter()
        .enumerate()
        .find(|(i, id)| ids[..*i].contains(id))
        .map(|(_, &id)| id)
}

/// Whether `device` computes in `dtype` (f16 needs a wgpu adapter with `shader-f16`; no WGSL
/// adapter has bf16).
pub fn supports(device: &Device, dtype: DType) -> bool {
    dtype == DType::F32 || device.supports_dtype(dtype)
}

/// CUDA device `id`, after checking that it exists.
pub fn cuda_device(id: usize) -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        let found = Device::enumerate(burn::tensor::DeviceType::Cuda).len();
        if id < found {
            return Ok(Device::cuda(id));
        }
        Err(TrainError::Device {
            requested: format!("cuda:{id}"),
            message: format!("{found} CUDA device(s) found"),
            hint: "check `nvidia-smi` and that the NVIDIA driver (libcuda) and CUDA runtime \
                   libraries (NVRTC) are installed, or use the CPU (device.kind: flex, --device cpu)"
                .into(),
        })
    }
    #[cfg(not(feature = "cuda"))]
    Err(TrainError::Device {
        requested: format!("cuda:{id}"),
        message: "this binary was built without the `cuda` feature".into(),
        hint:
            "build with `cargo build --release --features cuda` (works offline, see docs/gpus.md), \
               or use the CPU (device.kind: flex, --device cpu)"
                .into(),
    })
}

/// The wgpu devices this machine has, in a stable order: each adapter wgpu finds on the graphics
/// API it settles on (Vulkan on Linux, Metal on macOS, DX12 on Windows), GPUs first. None where
/// wgpu would settle on OpenGL (a machine without a Vulkan driver): two devices or f16 fail inside
/// wgpu's EGL layer there, so it is reported as missing, with the driver to install.
#[cfg(feature = "wgpu")]
pub fn wgpu_devices() -> Vec<Device> {
    if gl_only() {
        return Vec::new();
    }
    Device::enumerate(burn::tensor::DeviceType::Wgpu)
        .into_iter()
        .collect()
}

/// Whether wgpu's only graphics API here is OpenGL.
#[cfg(feature = "wgpu")]
fn gl_only() -> bool {
    gpt2_model::device::wgpu_graphics_api().as_deref() == Some("Gl")
}

/// wgpu device `id` (an index into [`wgpu_devices`]), after checking that it exists.
pub fn wgpu_device(id: usize) -> Result<Device> {
    #[cfg(feature = "wgpu")]
    {
        let mut found = wgpu_devices();
        if id < found.len() {
            return Ok(found.swap_remove(id));
        }
        Err(wgpu_missing(&format!("wgpu:{id}"), found.len()))
    }
    #[cfg(not(feature = "wgpu"))]
    Err(wgpu_unbuilt(&format!("wgpu:{id}")))
}

fn wgpu_missing(requested: &str, found: usize) -> TrainError {
    #[cfg(feature = "wgpu")]
    let gl = if gl_only() {
        " (wgpu found only OpenGL, which is not supported: no Vulkan, Metal or DX12 driver)"
    } else {
        ""
    };
    #[cfg(not(feature = "wgpu"))]
    let gl = "";
    TrainError::Device {
        requested: requested.into(),
        message: format!("{found} wgpu adapter(s) found{gl}"),
        hint:
            "install a Vulkan driver: your GPU vendor's, or Mesa's software one for testing \
               (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1; `vulkaninfo \
               --summary` lists what Vulkan sees), or use the CPU (device.kind: flex, --device cpu)"
                .into(),
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_unbuilt(requested: &str) -> TrainError {
    TrainError::Device {
        requested: requested.into(),
        message: "this binary was built without the `wgpu` feature".into(),
        hint: "build with `cargo build --release --features wgpu`, or use the CPU \
               (device.kind: flex, --device cpu)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_unbuilt_and_duplicate_devices_are_clear_errors() {
        let e = inference_device("tpu").unwrap_err().to_string();
        assert!(
            e.contains("unknown device") && e.contains("cpu, cuda or wgpu"),
            "{e}"
        );
        #[cfg(not(feature = "cuda"))]
        {
            let e = inference_device("cuda").unwrap_err().to_string();
            assert!(
                e.contains("without the `cuda` feature") && e.contains("--features cuda"),
                "{e}"
            );
        }
        #[cfg(not(feature = "wgpu"))]
        {
            let e = inference_device("wgpu").unwrap_err().to_string();
            assert!(
                e.contains("without the `wgpu` feature") && e.contains("--features wgpu"),
                "{e}"
            );
        }
        assert!(inference_device("cpu").is_ok());
        let flex = |ids: &[usize]| {
            training_devices(&DeviceConfig {
                ids: ids.to_vec(),
                ..DeviceConfig::default()
            })
        };
        let e = flex(&[0, 1, 0]).unwrap_err().to_string();
        assert!(e.contains("device id 0 is listed twice"), "{e}");
        assert_eq!(flex(&[]).unwrap().len(), 1);
        assert_eq!(flex(&[0, 1]).unwrap().len(), 2);
        let e = flex(&[0, 5]).unwrap_err().to_string();
        assert!(e.contains("numbered 0..N-1") && e.contains("[0, 1]"), "{e}");
    }

    #[test]
    fn wgpu_device_names_parse_or_say_what_is_allowed() {
        assert_eq!(
            parse_wgpu_name("discrete:1"),
            Ok(DeviceKind::DiscreteGpu(1))
        );
        assert_eq!(parse_wgpu_name("cpu"), Ok(DeviceKind::Cpu));
        assert_eq!(parse_wgpu_name("default"), Ok(DeviceKind::DefaultDevice));
        assert!(parse_wgpu_name("integrated:x")
            .unwrap_err()
            .contains("must be a number"));
        assert!(parse_wgpu_name("gpu0")
            .unwrap_err()
            .contains("discrete:N, integrated:N"));
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn a_wgpu_id_past_the_adapters_names_the_count_and_what_to_install() {
        let n = wgpu_devices().len();
        let e = wgpu_device(n + 3).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{n} wgpu adapter(s) found")) && e.contains("mesa-vulkan-drivers"),
            "{e}"
        );
    }
}
