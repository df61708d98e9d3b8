//! Records the git commit the binary is built from, for `gpt2 --version` (and so a result can
//! name the code that produced it). "unknown" outside a git checkout (a crates.io tarball). Also
//! the backends and launchers it was built with (cargo features), so a user, or a script such as
//! scripts/cuda_standin.sh, can ask a binary what it can run on.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GPT2_GIT_COMMIT={commit}");
    let mut built = vec!["cpu"];
    for (feature, name) in [("WGPU", "wgpu"), ("CUDA", "cuda"), ("MPI", "mpi")] {
        if std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_some() {
            built.push(name);
        }
    }
    println!("cargo:rustc-env=GPT2_BUILT_WITH={}", built.join(", "));
    // Rebuild when HEAD moves: HEAD itself (branch switches) and the ref it points to (commits).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
