//! Helpers of the `gpt2 train` process tests (train_cli.rs, mpi.rs): shards prepared by the
//! CLI from the bundled sample, a tiny run config, and readers of what a run wrote.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Shards from 30 sample documents, prepared by the CLI itself.
pub fn shards(dir: &Path) -> PathBuf {
    use std::io::BufRead;
    let input = dir.join("docs.jsonl");
    let r = gpt2_data::io::open_reader(&root().join("data/sample/sotu.jsonl.gz"), None).unwrap();
    let lines: Vec<String> = r.lines().take(30).map(|l| l.unwrap()).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = dir.join("shards");
    let st = Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args(["prepare", "--quiet", "--min-val-tokens", "4096", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

pub fn write_config(dir: &Path, name: &str, shards: &Path, steps: u64) -> PathBuf {
    write_config_on(dir, name, shards, steps, "kind: flex")
}

/// `device` is the body of the config's `device:` mapping, e.g. `kind: wgpu, ids: [0, 1]`.
pub fn write_config_on(dir: &Path, name: &str, shards: &Path, steps: u64, device: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "run_dir: {}\nmodel: tiny\nseed: 11\ndata: {{shards: {}}}\nbatch: {{micro_batch: 2, seq_len: 32, total_batch_tokens: 128}}\n\
             optimizer: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 2, max_steps: {steps}}}\neval: {{interval: 0, tokens: 256}}\n\
             checkpoint: {{interval: 2, keep_last: 10}}\nlog_interval: 1\ndevice: {{{device}}}\n",
            dir.join(name).display(),
            shards.display()
        ),
    )
    .unwrap();
    p
}

pub fn train(cfg: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpt2"));
    c.args(["train", "--quiet", "--config"]).arg(cfg);
    c
}

pub fn wait_for(child: &mut Child, path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before {} appeared",
            path.display()
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn losses(run: &Path) -> Vec<String> {
    // The loss values as written (full precision), by step; ms/tokens-per-second differ.
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {} {}",
                v["step"], v["kind"], v["loss"], v["grad_norm"]
            )
        })
        .collect()
}

pub fn final_weights(run: &Path, step: u64) -> Vec<u8> {
    std::fs::read(
        run.join("checkpoints")
            .join(format!("step_{step:08}"))
            .join("model.safetensors"),
    )
    .unwrap()
}
