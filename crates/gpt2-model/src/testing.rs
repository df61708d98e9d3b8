//! Test support shared by the crates' wgpu suites: the wgpu device the Cube-path tests run on.
//!
//! Those tests run wherever a wgpu adapter exists (a GPU's Vulkan/Metal/DX12 driver, or Mesa's
//! software Vulkan, lavapipe) and say plainly that they were skipped where none does. CI sets
//! `GPT2_REQUIRE_WGPU=1`, which turns a missing adapter into a failure, so a broken driver
//! install cannot pass as a green run of skipped tests.

use burn::tensor::{Device, DeviceType};

/// The environment variable that makes a missing wgpu adapter fail the tests.
pub const REQUIRE_WGPU: &str = "GPT2_REQUIRE_WGPU";

/// All wgpu devices, or `None` (after printing why `test` is skipped) when there are none.
///
/// # Panics
/// When there are none and `GPT2_REQUIRE_WGPU` is set.
pub fn wgpu_devices_or_skip(test: &str) -> Option<Vec<Device>> {
    // wgpu settles on OpenGL where no Vulkan driver exists; two devices and f16 fail inside its
    // EGL layer there, so such a machine counts as having no adapter.
    let api = crate::device::wgpu_graphics_api();
    let devices: Vec<Device> = match api.as_deref() {
        Some("Gl") | None => Vec::new(),
        Some(_) => Device::enumerate(DeviceType::Wgpu).into_iter().collect(),
    };
    if !devices.is_empty() {
        return Some(devices);
    }
    let found = if api.is_some() {
        "only an OpenGL adapter"
    } else {
        "no wgpu adapter"
    };
    let why = format!(
        "{found} (install a Vulkan driver; for tests Mesa's software one: \
         apt-get install mesa-vulkan-drivers libvulkan1)"
    );
    if std::env::var_os(REQUIRE_WGPU).is_some() {
        panic!("{test}: {why}, and {REQUIRE_WGPU} is set");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// The first wgpu device, or `None` as in [`wgpu_devices_or_skip`].
pub fn wgpu_or_skip(test: &str) -> Option<Device> {
    wgpu_devices_or_skip(test).map(|mut d| d.swap_remove(0))
}
