//! Facts about the device a model runs on: its memory limits (one buffer's size on wgpu, shared
//! memory per cube, the device's capacity), the LM head's chunk size they imply, the peak memory a
//! run reports, and which graphics API a wgpu device came up on.
//!
//! wgpu caps every buffer at the adapter's storage-binding size (128 MiB on lavapipe, 128 MiB to
//! 4 GiB on real adapters), so one `[B·T, 50257]` f32 logits tensor (3.3 GB at 16 × 1024) cannot
//! exist there at all; CUDA has no such cap but the same tensor is memory a step does not need.
//! The LM head therefore runs in row chunks (`fused.rs`) sized here.

use burn::tensor::Device;

/// Logits (f32) the LM head may hold at once where the device sets no lower limit: 256 MiB, which
/// keeps each chunk's `[R, C]·[C, V]` product large enough to run at full speed (R ≈ 1,300 rows
/// at GPT-2's vocabulary).
pub const LM_HEAD_CHUNK_BUDGET: u64 = 256 << 20;

/// What a device can hold, as far as its runtime says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// The largest single buffer (wgpu: the adapter's maximum storage-binding size), `None` where
    /// the runtime states no limit below the device's size (flex).
    pub max_buffer_bytes: Option<u64>,
    /// The device's memory, when the runtime states it.
    pub capacity_bytes: Option<u64>,
    /// Shared memory per cube (workgroup), on the GPU backends.
    pub shared_memory_bytes: Option<usize>,
    /// Units (invocations) per cube, on the GPU backends.
    pub max_units_per_cube: Option<usize>,
}

/// The limits of `device` (autodiff or not).
pub fn device_memory(device: &Device) -> DeviceMemory {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(client) = cube_client(device) {
        let props = client.properties();
        let max_page = props.memory.max_page_size;
        return DeviceMemory {
            // CUDA states its whole memory as the page limit: no per-buffer cap below it.
            max_buffer_bytes: (max_page < props.memory.max_memory().unwrap_or(u64::MAX))
                .then_some(max_page),
            capacity_bytes: props.memory.max_memory(),
            shared_memory_bytes: Some(props.hardware.max_shared_memory_size),
            max_units_per_cube: Some(props.hardware.max_units_per_cube as usize),
        };
    }
    let _ = device;
    DeviceMemory {
        capacity_bytes: physical_memory_bytes(),
        ..DeviceMemory::default()
    }
}

/// The CubeCL client behind a CUDA or wgpu device.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(crate) fn cube_client(device: &Device) -> Option<burn_cubecl::cubecl::client::Client> {
    use burn::backend::DispatchDevice;
    match device.clone().without_autodiff().as_dispatch() {
        DispatchDevice::Cube(cube) => Some(cube.client()),
        _ => None,
    }
}

/// The host's memory (`MemTotal` of /proc/meminfo), for flex.
fn physical_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Rows of the LM head per chunk on `device` for a vocabulary of `vocab`: as many f32 logit rows
/// as fit in [`LM_HEAD_CHUNK_BUDGET`], or in 90% of the device's largest buffer where that is
/// smaller (the margin leaves room for the allocator's alignment and a transposed copy's
/// padding). At least one row.
pub fn lm_head_chunk_rows(device: &Device, vocab: usize) -> usize {
    chunk_rows_for(device_memory(device).max_buffer_bytes, vocab)
}

/// [`lm_head_chunk_rows`] for a device whose largest buffer is `max_buffer_bytes`.
pub fn chunk_rows_for(max_buffer_bytes: Option<u64>, vocab: usize) -> usize {
    let budget = max_buffer_bytes.map_or(LM_HEAD_CHUNK_BUDGET, |m| {
        (m / 10 * 9).min(LM_HEAD_CHUNK_BUDGET)
    });
    ((budget / (4 * vocab.max(1) as u64)) as usize).max(1)
}

/// Set by [`set_composed_kernels`].
static COMPOSED_KERNELS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// On the GPU backends, run every fused op with the composed tensor ops instead of this crate's
/// CubeCL kernels (`cube/`), for the whole process: the trainer's `device.kernels: composed`. A
/// fallback should a kernel misbehave on some GPU, and the reference the kernels are measured
/// against. flex is unaffected (its kernels are CPU code).
pub fn set_composed_kernels(on: bool) {
    COMPOSED_KERNELS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_composed_kernels`] is on.
pub fn composed_kernels() -> bool {
    COMPOSED_KERNELS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where a peak-memory figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakSource {
    /// The GPU runtime's memory pools: the most memory they held at once (their high-water marks),
    /// since the process started.
    DevicePools,
    /// The process's peak resident set (`VmHWM`), on flex without a counting allocator:
    /// everything the process holds, the model included, since the last [`reset_peak_memory`].
    ProcessRss,
    /// The most live heap bytes at once since the last [`reset_peak_memory`], on flex where the
    /// binary counts them ([`set_host_counters`]): what the tensors held, without the
    /// allocator's retained free pages or the program itself.
    Heap,
}

/// The peak memory so far on `device`, in bytes, and what it measures.
pub fn peak_memory_bytes(device: &Device) -> Option<(u64, PeakSource)> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(client) = cube_client(device) {
        let scope = cubecl_runtime::memory_management::MemoryScope::Device;
        return Some((pools_peak_bytes(&client, scope), PeakSource::DevicePools));
    }
    let _ = device;
    if let Some(host) = HOST_COUNTERS.get() {
        return Some(((host.peak)(), PeakSource::Heap));
    }
    process_peak_rss().map(|b| (b, PeakSource::ProcessRss))
}

/// The heap counters of a binary with a counting allocator (the `gpt2` binary has one: gpt2-cli's
/// `main.rs`); what flex's tensors hold is heap memory.
#[derive(Debug, Clone, Copy)]
pub struct HostCounters {
    /// The live heap bytes now.
    pub live: fn() -> u64,
    /// The most live heap bytes at once since the last `reset_peak`.
    pub peak: fn() -> u64,
    /// Starts a new peak window at the live bytes now.
    pub reset_peak: fn(),
}

static HOST_COUNTERS: std::sync::OnceLock<HostCounters> = std::sync::OnceLock::new();

/// Registers the process's heap counters (once; later calls are ignored).
pub fn set_host_counters(counters: HostCounters) {
    let _ = HOST_COUNTERS.set(counters);
}

/// Makes, on every rayon thread and the calling one, the scratch buffer gemm keeps per thread
/// for the rest of the process (`gemm_common::gemm::L2_SLAB`: the size of the L2 cache, 1 MiB
/// here, allocated the first time a thread runs a flex matmul). Left to chance, a thread made its
/// buffer inside whichever forward it first ran a matmul in, and that forward's
/// [`bytes_in_use`] difference grew by a megabyte: every thread's in step 1 (31 MB instead of
/// 13.5 on 16 threads), and in CI a step-2 forward of the smallest micro-batch, once. Call before
/// measuring on flex; on the GPU backends it only costs the buffers.
pub fn make_host_scratch() {
    let touch = || gemm_common::gemm::L2_SLAB.with(|_| ());
    rayon::broadcast(|_| touch());
    touch();
}

/// The bytes allocated on `device` now, to the byte: on CUDA/wgpu the live allocations in the
/// memory pools (CubeCL's `bytes_in_use`: no padding, no free pages), on flex the live heap bytes
/// where a counting allocator is registered ([`set_host_counters`]), else `None`. The
/// difference across a forward pass is what the backward keeps (`mem_activations_mb`); unlike
/// [`peak_memory_bytes`] it does not move in steps of a pool page.
pub fn bytes_in_use(device: &Device) -> Option<u64> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(client) = cube_client(device) {
        let scope = cubecl_runtime::memory_management::MemoryScope::Device;
        let report = client.memory_report(scope);
        return Some(pools(&report).map(|p| p.usage.bytes_in_use).sum());
    }
    let _ = device;
    HOST_COUNTERS.get().map(|host| (host.live)())
}

/// Every memory pool of a report: each stream's and its auxiliary streams', dynamic,
/// persistent and dedicated.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn pools(
    report: &cubecl_runtime::memory_management::MemoryReport,
) -> impl Iterator<Item = &cubecl_runtime::memory_management::MemoryPoolReport> {
    report.streams.iter().flat_map(|s| {
        s.pools
            .dynamic
            .iter()
            .chain([&s.pools.persistent, &s.pools.dedicated])
            .chain(s.auxiliary.iter().flat_map(|a| {
                a.pools
                    .dynamic
                    .iter()
                    .chain([&a.pools.persistent, &a.pools.dedicated])
            }))
    })
}

/// Size the GPU memory pools' pages, on the calling thread's stream, for allocations of up to
/// `bytes` before a run allocates its working set. No-op on flex.
///
/// Why: CubeCL's default (adaptive) pools carve allocations from pages sized after the largest
/// allocation so far. An allocation that outgrows them starts a pool of larger pages; the old
/// pool serves nothing new and, once drained, leaves the memory report together with its
/// high-water mark. A first training step that grows the pages as its tensors grow (embeddings,
/// then the MLP's `[B·T, 4C]`, then the LM head's logits chunk) therefore read a peak far below
/// what it held (gpt2-10m at 16 × 1024 on lavapipe: 378 MB after the first step; 1,482 MB with
/// the pages sized first, against a plan estimate of 1,952 MB; experiments/RESULTS.md, part 6).
/// `bytes` should be an allocation the run makes anyway (the trainer passes its largest tensor),
/// so the pages end at the size they would have grown to.
pub fn presize_memory_pages(device: &Device, bytes: u64) {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(client) = cube_client(device) {
        // Reserved and dropped at once: the pool keeps its page size, the page itself is reused.
        drop(client.empty(bytes as usize));
    }
    let _ = (device, bytes);
}

/// The sum of every pool's high-water mark on `client`'s device over `scope`, in bytes.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(crate) fn pools_peak_bytes(
    client: &burn_cubecl::cubecl::client::Client,
    scope: cubecl_runtime::memory_management::MemoryScope,
) -> u64 {
    pools(&client.memory_report(scope))
        .map(pool_peak_bytes)
        .sum()
}

/// A pool's high-water mark in bytes: its peak page count times its page size, or, for pools
/// whose pages are sized per allocation, the larger of what it holds now and its peak page count
/// times its largest allocation (an upper bound).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn pool_peak_bytes(pool: &cubecl_runtime::memory_management::MemoryPoolReport) -> u64 {
    use cubecl_runtime::memory_management::MemoryPoolKind;
    match pool.kind {
        MemoryPoolKind::Sliced { page_size, .. } | MemoryPoolKind::Adaptive { page_size, .. } => {
            pool.pages_peak * page_size
        }
        _ => pool
            .usage
            .bytes_reserved
            .max(pool.pages_peak * pool.largest_alloc),
    }
}

/// The graphics API wgpu devices come up on here (`"Vulkan"`, `"Metal"`, `"Dx12"`, `"Gl"`), or
/// `None` when wgpu finds no adapter on any of them. wgpu falls back to OpenGL where no Vulkan
/// driver exists; that path cannot run two devices or f16 (it fails inside wgpu's EGL layer), so
/// the trainer refuses it (gpt2-train's device probe).
#[cfg(feature = "wgpu")]
pub fn wgpu_graphics_api() -> Option<String> {
    use burn_cubecl::cubecl::wgpu::{AutoGraphicsApi, GraphicsApi};
    if Device::enumerate(burn::tensor::DeviceType::Wgpu).is_empty() {
        return None;
    }
    Some(format!("{:?}", AutoGraphicsApi::backend()))
}

/// `VmHWM` of /proc/self/status.
fn process_peak_rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Starts a new peak-memory window where that is possible: on flex, the heap counters' peak
/// and the process's `VmHWM` (Linux `clear_refs`), so the next [`peak_memory_bytes`] is the peak
/// since now. The GPU pools' high-water marks cannot be reset; theirs stays the peak since the
/// process started.
pub fn reset_peak_memory(device: &Device) {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if cube_client(device).is_some() {
        return;
    }
    let _ = device;
    if let Some(host) = HOST_COUNTERS.get() {
        (host.reset_peak)();
    }
    // "5" resets the peak resident set size (Documentation/filesystems/proc.rst). Failure (no
    // /proc, a kernel without it) only means the figure stays the peak since the start.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_the_buffer_limit_and_the_budget() {
        // lavapipe: 128 MiB per buffer → 90% of it in f32 rows of 50,257 logits.
        let rows = chunk_rows_for(Some(128 << 20), 50257);
        assert_eq!(rows, (128u64 << 20) as usize / 10 * 9 / (4 * 50257));
        assert!(rows as u64 * 4 * 50257 <= 128 << 20);
        // No buffer limit: the 256 MiB budget.
        assert_eq!(chunk_rows_for(None, 50257), (256 << 20) / (4 * 50257));
        // A tiny limit still gives one row.
        assert_eq!(chunk_rows_for(Some(100), 50257), 1);
    }

    #[test]
    fn flex_reports_the_process_peak_and_resets_it() {
        let device = Device::flex();
        let (before, source) = peak_memory_bytes(&device).expect("Linux has VmHWM");
        assert_eq!(source, PeakSource::ProcessRss);
        assert!(before > 0);
        assert!(device_memory(&device).capacity_bytes.is_some());
    }
}
