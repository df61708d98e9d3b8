//! Writes every CubeCL kernel of ours as the CUDA C++ cubecl-cuda would compile on an A100
//! (sm_80) and an H100 (sm_90), without a GPU: `OUT/<arch>/<kernel>.<dtype>[.<variant>].cu` and
//! `OUT/sources.jsonl` (one line per file: kernel, arch, dtype, threads, dynamic shared bytes,
//! entry point). `make check-cuda-kernels` then compiles them with NVRTC and ptxas
//! (scripts/cuda_kernels.py).
//!
//!   target/debug/examples/cuda_kernels target/cuda-kernels
//!
//! (`make test` builds it with the workspace's features; `cargo run -p gpt2-model --features
//! cuda --example cuda_kernels` works too, but builds Burn's crates again with other features.)

use std::io::Write;
use std::path::PathBuf;

use gpt2_model::cube::offline::{kernel_sources, nvrtc_arch, A100, H100};

fn main() -> Result<(), String> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/cuda-kernels".into()),
    );
    let mut index = Vec::new();
    for card in [A100, H100] {
        let arch = format!("sm_{}", card.sm);
        let dir = out.join(&arch);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for k in kernel_sources(card)? {
            let variant = k.variant.replace(' ', ".").replace('=', "");
            let name = if variant.is_empty() {
                format!("{}.{}.cu", k.kernel, k.dtype)
            } else {
                format!("{}.{}.{variant}.cu", k.kernel, k.dtype)
            };
            let path = dir.join(&name);
            std::fs::write(&path, &k.source).map_err(|e| format!("{}: {e}", path.display()))?;
            index.push(serde_json::json!({
                "kernel": k.kernel,
                "origin": "ours",
                "arch": arch,
                "nvrtc_arch": nvrtc_arch(card.sm),
                "dtype": k.dtype,
                "variant": k.variant,
                "source": path,
                "entry": k.entry,
                "threads": k.threads,
                "dynamic_shared_bytes": k.shared_bytes,
                "shared_optin_limit": card.shared_optin,
            }));
        }
    }
    let path = out.join("sources.jsonl");
    let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for line in &index {
        writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!(
        "wrote {} kernel sources and {}",
        index.len(),
        path.display()
    );
    Ok(())
}
