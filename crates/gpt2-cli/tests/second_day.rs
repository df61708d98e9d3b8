//! A user's second day, as processes: `gpt2 train` from pretrained weights (`init_from`: a
//! Hugging Face directory written by transformers, and one of our checkpoints), TensorBoard event
//! files read back by TensorBoard's own reader, and a finished run started again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The transformers-written GPT-2 of the evaluation reference (`save_pretrained`, keys
/// `transformer.*`, context 64; tests/reference/eval/README.md).
fn hf_model() -> PathBuf {
    root().join("tests/reference/eval/model")
}

fn gpt2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = gpt2(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "gpt2 {args:?} failed:\n{err}");
    err
}

fn fails(args: &[&str]) -> String {
    let o = gpt2(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "gpt2 {args:?} should have failed:\n{err}"
    );
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Train and val shards from 24 sample documents.
fn shards(dir: &Path) -> PathBuf {
    let out = dir.join("shards");
    gpt2_data::prepare_documents(
        "t",
        &root().join("data/sample/sotu.jsonl.gz"),
        24,
        4096,
        &out,
    )
    .unwrap();
    out
}

/// A run config: `head` holds `model:`/`init_from:` lines. No shuffling and one micro-batch of
/// 2 × 32 per step, so step 1 trains on the split's first 64 predictions, which is what
/// `gpt2 eval --split train --context 32 --max-tokens 64` scores.
fn config(dir: &Path, name: &str, head: &str, shards: &Path, lr: f64, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "run_dir: {}\n{head}\nseed: 5\ndata: {{shards: {}, shuffle: false}}\n\
             batch: {{micro_batch: 2, seq_len: 32, total_batch_tokens: 64}}\n\
             optimizer: {{lr: {lr:e}, min_lr: 0, warmup_steps: 0, max_steps: 2, weight_decay: 0}}\n\
             eval: {{interval: 0, tokens: 0}}\ncheckpoint: {{interval: 1, keep_last: 5}}\nlog_interval: 1\n{extra}",
            dir.join(name).display(),
            shards.display()
        ),
    )
    .unwrap();
    p
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_loss(run: &Path, step: u64) -> f64 {
    metrics(run)
        .iter()
        .find(|r| r["kind"] == "train" && r["step"] == step)
        .and_then(|r| r["loss"].as_f64())
        .unwrap()
}

/// `gpt2 eval` of `model` on the first 64 predictions of the train split.
fn eval_first_batch(model: &Path, shards: &Path, dir: &Path) -> f64 {
    let json = dir.join("eval.json");
    ok(&[
        "eval",
        "--quiet",
        "--checkpoint",
        s(model),
        "--shards",
        s(shards),
        "--split",
        "train",
        "--context",
        "32",
        "--max-tokens",
        "64",
        "--json",
        s(&json),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(v["tokens"], 64);
    v["nll"].as_f64().unwrap()
}

/// A safetensors file's tensors as f32 values by parameter name: HF's `transformer.` prefix
/// dropped, the attention-mask buffers and a tied `lm_head.weight` left out.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("transformer.").unwrap_or(&k).to_string(), v))
        .filter(|(k, _)| !k.ends_with("attn.bias") && !k.ends_with("masked_bias"))
        .filter(|(k, _)| k != "lm_head.weight")
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
            let values = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (k, values)
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `init_from` a source: the plan names it with its sha256, step 1's loss equals `gpt2 eval` of
/// the source on the same 64 predictions, and the weights before the first update are the
/// source's. The update is made invisible (lr 1e-30 and no weight decay move no f32 weight of
/// these magnitudes), so the step-1 checkpoint holds exactly the weights the run started from.
fn check_init_from(dir: &Path, name: &str, source: &Path, weights: &Path, shards: &Path) {
    let cfg = config(
        dir,
        name,
        &format!("init_from: {}", source.display()),
        shards,
        1e-30,
        "",
    );
    let plan = ok(&[
        "train",
        "--quiet",
        "--config",
        s(&cfg),
        "--set",
        "optimizer.max_steps=1",
    ]);
    let init_row = plan
        .lines()
        .find(|l| l.trim_start().starts_with("init "))
        .unwrap_or_default();
    assert!(
        init_row.contains(s(source)) && init_row.contains(&sha256(weights)),
        "{plan}"
    );
    let run = dir.join(name);
    let trained = step_loss(&run, 1);
    let evaluated = eval_first_batch(source, shards, dir);
    // Both are f32 on the CPU over the same 64 predictions, batched differently (one 2 × 32
    // training batch with autodiff vs eval's windows): equal to float rounding.
    assert!(
        (trained - evaluated).abs() <= 1e-5 * evaluated.abs(),
        "{name}: step 1 loss {trained} vs gpt2 eval {evaluated}"
    );
    let after = tensors(&run.join("checkpoints/step_00000001/model.safetensors"));
    let before = tensors(weights);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (k, v) in &before {
        assert!(after[k] == *v, "{name}: {k} differs from the source");
    }
}

#[test]
fn init_from_an_hf_directory_and_from_our_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shards = shards(d);

    // An HF directory written by transformers.
    let hf = hf_model();
    check_init_from(d, "from_hf", &hf, &hf.join("model.safetensors"), &shards);

    // Our own run, trained 2 steps from a random init: its run directory names its newest
    // checkpoint, step 2.
    let base = config(d, "base", "model: tiny", &shards, 3e-3, "");
    ok(&["train", "--quiet", "--config", s(&base)]);
    let base_run = d.join("base");
    let step2 = base_run.join("checkpoints/step_00000002");
    check_init_from(
        d,
        "from_ours",
        &base_run,
        &step2.join("model.safetensors"),
        &shards,
    );

    // A YAML `model:` of the same shape is accepted (it may set dropout); `--resume auto` in a
    // run directory that has checkpoints continues them and says init_from is not read.
    let cfg = config(
        d,
        "from_ours",
        &format!(
            "init_from: {}\nmodel: {{n_layer: 2, n_head: 2, n_embd: 64, block_size: 64}}",
            base_run.display()
        ),
        &shards,
        1e-30,
        "",
    );
    let out = ok(&["train", "--config", s(&cfg), "--resume", "auto"]);
    assert!(
        out.contains("ignored: --resume continues this run's checkpoint")
            && out.contains("init_from is not read")
            && out.contains("resuming from"),
        "{out}"
    );
    assert!(d.join("from_ours/checkpoints/step_00000002/DONE").exists());
}

#[test]
fn bad_init_sources_are_plan_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shards = shards(d);
    let plan_error = |name: &str, head: String| -> String {
        let cfg = config(d, name, &head, &shards, 1e-3, "");
        fails(&["train", "--dry-run", "--config", s(&cfg)])
    };

    let missing = d.join("no-such-model");
    let e = plan_error("missing", format!("init_from: {}", missing.display()));
    assert!(
        e.contains("no-such-model") && e.contains("no such file or directory"),
        "{e}"
    );

    // A directory without weights.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(hf_model().join("config.json"), empty.join("config.json")).unwrap();
    let e = plan_error("noweights", format!("init_from: {}", empty.display()));
    assert!(
        e.contains("init_from") && e.contains("model.safetensors"),
        "{e}"
    );

    // Another vocabulary than GPT-2's.
    let other = d.join("other-vocab");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(
        hf_model().join("model.safetensors"),
        other.join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(hf_model().join("config.json"))
        .unwrap()
        .replace("\"vocab_size\": 50257", "\"vocab_size\": 32000");
    std::fs::write(other.join("config.json"), config).unwrap();
    let e = plan_error("vocab", format!("init_from: {}", other.display()));
    assert!(e.contains("32000") && e.contains("50257"), "{e}");

    // A conflicting `model:` names both shapes.
    let e = plan_error(
        "shape",
        format!("model: tiny-cpu\ninit_from: {}", hf_model().display()),
    );
    assert!(
        e.contains("tiny-cpu (4 layers") && e.contains("(2 layers, 2 heads, 16 wide"),
        "{e}"
    );

    // A checkpoint without its DONE marker (a write that was interrupted).
    let ck = d.join("run/checkpoints/step_00000004");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::copy(
        hf_model().join("model.safetensors"),
        ck.join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(hf_model().join("config.json"), ck.join("config.json")).unwrap();
    std::fs::write(ck.join("state.json"), "{}").unwrap();
    let e = plan_error("notdone", format!("init_from: {}", ck.display()));
    assert!(e.contains("incomplete checkpoint (no DONE marker)"), "{e}");

    // Neither `model:` nor `init_from`.
    let e = plan_error("nothing", String::new());
    assert!(e.contains("model: required"), "{e}");
}

/// The Python that runs TensorBoard's reader: `GPT2_PYTHON`, else `python3`, if it imports
/// `tensorboard`. Missing: SKIPPED, or a failure where CI sets `GPT2_REQUIRE_TENSORBOARD`.
fn tensorboard_python() -> Option<String> {
    let python = std::env::var("GPT2_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(python);
    }
    assert!(
        std::env::var_os("GPT2_REQUIRE_TENSORBOARD").is_none(),
        "GPT2_REQUIRE_TENSORBOARD is set but {python} cannot import tensorboard (pip install tensorboard)"
    );
    eprintln!("SKIPPED: {python} cannot import tensorboard (pip install tensorboard; GPT2_PYTHON names the interpreter)");
    None
}

/// Every scalar TensorBoard's `EventAccumulator` reads from `tb`: tag → [(step, value)].
fn read_tensorboard(python: &str, tb: &Path) -> BTreeMap<String, Vec<(u64, f64)>> {
    let script = "import json, sys\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        ea = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0})\n\
        ea.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(tb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// TensorBoard's reader sees every number of metrics.jsonl once, at its step, also after a
/// resume that repeats steps an interrupted run had logged; then a finished run started again
/// reports how it ended.
#[test]
fn tensorboard_scalars_equal_metrics_across_a_resume_and_a_finished_run_reports_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shards = shards(d);
    let cfg = config(
        d,
        "tb",
        "model: tiny",
        &shards,
        3e-3,
        "logging: {tensorboard: true}\n",
    );
    // A task scored at every evaluation, as llm.c scores HellaSwag: its metrics are scalars too.
    let tasks = format!(
        "eval.tasks=[{{task: hellaswag, data: {}}}]",
        root()
            .join("tests/reference/eval/inputs/hellaswag.jsonl")
            .display()
    );
    let sets = [
        "--set",
        "optimizer.max_steps=6",
        "--set",
        "checkpoint.interval=3",
        "--set",
        "eval.interval=3",
        "--set",
        "eval.tokens=128",
        "--set",
        &tasks,
    ];
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--quiet", "--config", s(&cfg)];
        args.extend_from_slice(&sets);
        args.extend_from_slice(extra);
        ok(&args)
    };
    train(&[]);
    let run = d.join("tb");
    // The run "died" after logging steps 4–6 but before step 6's checkpoint: it continues from
    // step 3 and logs 4–6 again.
    std::fs::remove_dir_all(run.join("checkpoints/step_00000006")).unwrap();
    let first = metrics(&run);
    train(&["--resume", "auto"]);
    let rows = metrics(&run);
    assert_eq!(
        rows.len(),
        first.len(),
        "metrics.jsonl keeps one row per step and kind"
    );
    let tb_files = std::fs::read_dir(run.join("tb")).unwrap().count();
    assert_eq!(tb_files, 2, "one event file per start");

    // A finished run started again trains nothing and reports its last losses and checkpoint.
    let again = train(&["--resume", "auto"]);
    let last = |kind: &str| {
        rows.iter()
            .rev()
            .find(|r| r["kind"] == kind)
            .and_then(|r| r["loss"].as_f64())
            .unwrap()
    };
    let done = again.lines().last().unwrap_or_default();
    assert_eq!(
        done,
        format!(
            "already finished (nothing to train): step 6 | train loss {:.4} | val loss {:.4} | checkpoint {}",
            last("train"),
            last("val"),
            run.join("checkpoints/step_00000006").display()
        ),
        "{again}"
    );
    assert_eq!(metrics(&run), rows, "a rerun leaves metrics.jsonl alone");
    assert_eq!(std::fs::read_dir(run.join("tb")).unwrap().count(), tb_files);

    let Some(python) = tensorboard_python() else {
        return;
    };
    let scalars = read_tensorboard(&python, &run.join("tb"));
    let mut expected: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for r in &rows {
        let step = r["step"].as_u64().unwrap();
        let kind = r["kind"].as_str().unwrap();
        for (k, v) in r.as_object().unwrap() {
            if let (false, Some(x)) = (k == "step", v.as_f64()) {
                expected
                    .entry(format!("{kind}/{k}"))
                    .or_default()
                    .push((step, x));
            }
        }
    }
    for tag in [
        "train/loss",
        "val/loss",
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_sec",
        "train/mem_peak_mb",
        "hellaswag/acc_norm",
    ] {
        assert!(expected.contains_key(tag), "metrics.jsonl has no {tag}");
    }
    assert_eq!(
        scalars.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (tag, want) in &expected {
        let got = &scalars[tag];
        let steps: Vec<u64> = got.iter().map(|p| p.0).collect();
        assert_eq!(
            steps,
            want.iter().map(|p| p.0).collect::<Vec<_>>(),
            "{tag}: steps"
        );
        // TensorBoard's simple_value is a 32-bit float.
        for ((_, g), (step, w)) in got.iter().zip(want) {
            assert_eq!(*g as f32, *w as f32, "{tag} at step {step}");
        }
    }
}
