//! `gpt2 eval`, `gpt2 sample` and `gpt2 export` as processes, on a `tiny` model saved the way
//! the trainer saves checkpoints and on shards prepared from a few sample documents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gpt2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = gpt2(args);
    assert!(
        o.status.success(),
        "gpt2 {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("stdout is UTF-8")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A run directory like the trainer's: a complete step-2 checkpoint (tiny model, seed 21) and an
/// incomplete step-4 one (no DONE); plus val shards from 12 sample documents.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let run = dir.join("run");
    let device = gpt2_train::infer::inference_device("cpu").unwrap();
    let model = gpt2_model::Gpt2::new(
        &gpt2_model::Gpt2Config::preset("tiny").unwrap(),
        &device,
        21,
    )
    .unwrap();
    for (step, done) in [(2, true), (4, false)] {
        let ck = gpt2_train::checkpoint::step_dir(&run, step);
        gpt2_model::save_hf(&model, &ck).unwrap();
        std::fs::write(ck.join("state.json"), "{}").unwrap();
        if done {
            std::fs::write(ck.join("DONE"), "2\n").unwrap();
        }
    }
    let shards = dir.join("shards");
    gpt2_data::prepare_documents(
        "t",
        &root().join("data/sample/sotu.jsonl.gz"),
        12,
        3000,
        &shards,
    )
    .unwrap();
    (run, shards)
}

/// `gpt2 eval` of `run` on 700 tokens of `shards` in batches of 3, JSON to `json`; the table.
fn eval_700(run: &Path, shards: &Path, json: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "eval",
        "--checkpoint",
        s(run),
        "--shards",
        s(shards),
        "--max-tokens",
        "700",
        "--batch",
        "3",
        "--json",
        s(json),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn eval_sample_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (run, shards) = fixture(dir.path());

    // --- eval: run dir → newest complete checkpoint; manifest dir, manifest path, glob agree.
    let json = dir.path().join("eval.json");
    let table = eval_700(&run, &shards, &json, &[]);
    assert!(
        table.contains("total") && table.contains("partial"),
        "{table}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["tokens"], 700);
    let nll = r["nll"].as_f64().unwrap();
    assert!(
        nll > 5.0 && nll < 12.0,
        "an untrained model is near ln(50257) = 10.8: {nll}"
    );
    assert!((r["ppl"].as_f64().unwrap() - nll.exp()).abs() < 1e-6 * nll.exp());
    let bpb = r["bpb"].as_f64().unwrap();
    assert!(bpb > 1.0 && bpb < 6.0, "{bpb}");
    assert_eq!(r["context"], 64);
    // Forward-only throughput, as `make bench` reads it: scored tokens over the measured time.
    let (secs, tps) = (
        r["seconds"].as_f64().unwrap(),
        r["tokens_per_sec"].as_f64().unwrap(),
    );
    assert!(
        secs > 0.0 && (tps * secs - 700.0).abs() < 1e-6 * 700.0,
        "{secs} s, {tps} tokens/s"
    );
    let ck2 = gpt2_train::checkpoint::step_dir(&run, 2);
    let val_glob = format!("{}/t_val_*.bin", s(&shards));
    for shards_arg in [s(&shards.join("manifest.json")), val_glob.as_str()] {
        let j2 = dir.path().join("eval2.json");
        ok(&[
            "eval",
            "--checkpoint",
            s(&ck2),
            "--shards",
            shards_arg,
            "--max-tokens",
            "700",
            "--json",
            s(&j2),
            "--quiet",
        ]);
        let r2: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&j2).unwrap()).unwrap();
        assert!(
            (r2["nll"].as_f64().unwrap() - nll).abs() < 1e-6,
            "{shards_arg}"
        );
    }

    // Clear errors naming the path.
    let o = gpt2(&[
        "eval",
        "--checkpoint",
        s(&gpt2_train::checkpoint::step_dir(&run, 4)),
        "--shards",
        s(&shards),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("step_00000004") && err.contains("incomplete"),
        "{err}"
    );
    let o = gpt2(&[
        "eval",
        "--checkpoint",
        s(&dir.path().join("nope")),
        "--shards",
        s(&shards),
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nope"));
    let o = gpt2(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--shards",
        s(&shards),
        "--stride",
        "65",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("stride 65"));

    // --- sample: same seed, same text; the text is the decoded ids; --max-new-tokens holds.
    let sample = |seed: &str, tag: &str| {
        let j = dir.path().join(format!("sample-{tag}.json"));
        let out = ok(&[
            "sample",
            "--checkpoint",
            s(&run),
            "--prompt",
            "The President said",
            "--max-new-tokens",
            "12",
            "--seed",
            seed,
            "--ignore-eot",
            "--json",
            s(&j),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        (out, v)
    };
    let (a, va) = sample("5", "a");
    let (b, _) = sample("5", "b");
    let (c, _) = sample("6", "c");
    assert_eq!(a, b);
    assert_ne!(a, c);
    let ids: Vec<u32> = va["samples"][0]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids.len(), 12);
    assert_eq!(
        a.trim_end_matches('\n'),
        gpt2_data::tokenizer::decode_lossy(&ids)
    );
    assert_eq!(
        va["prompt_ids"].as_array().unwrap().len(),
        gpt2_data::tokenizer::encode_ordinary("The President said").len()
    );

    // Prompt from stdin; several samples.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args([
            "sample",
            "--checkpoint",
            s(&run),
            "--max-new-tokens",
            "5",
            "--num-samples",
            "2",
            "--temperature",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Fellow citizens")
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("--- sample 1 ---") && text.contains("--- sample 2 ---"),
        "{text}"
    );

    // --- export, then re-import: equal logits and equal eval.
    let out = dir.path().join("hf");
    ok(&["export", "--checkpoint", s(&run), "--out", s(&out)]);
    for f in [
        "model.safetensors",
        "config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let vocab: std::collections::HashMap<String, u32> =
        serde_json::from_str(&std::fs::read_to_string(out.join("vocab.json")).unwrap()).unwrap();
    assert_eq!(vocab.len(), 50257);
    assert_eq!(vocab["Ġworld"], 995);
    let merges = std::fs::read_to_string(out.join("merges.txt")).unwrap();
    assert_eq!(merges.lines().count(), 50_001);
    assert_eq!(merges.lines().nth(1), Some("Ġ t"));
    let device = gpt2_train::infer::inference_device("cpu").unwrap();
    let (orig, _) = gpt2_train::infer::load_checkpoint(&run, &device).unwrap();
    let (back, _) = gpt2_train::infer::load_checkpoint(&out, &device).unwrap();
    let ids = gpt2_data::tokenizer::encode_ordinary("Hello world, this is a test of the export.");
    assert_eq!(
        gpt2_train::infer::logits_of(&orig, &ids),
        gpt2_train::infer::logits_of(&back, &ids)
    );
    let j3 = dir.path().join("eval3.json");
    ok(&[
        "eval",
        "--checkpoint",
        s(&out),
        "--shards",
        s(&shards),
        "--max-tokens",
        "700",
        "--batch", // as the first eval: the f32 NLL sums are per batch, so equal means equal
        "3",
        "--json",
        s(&j3),
        "--quiet",
    ]);
    let r3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&j3).unwrap()).unwrap();
    assert_eq!(r3["nll"], r["nll"]);
    let o = gpt2(&["export", "--checkpoint", s(&out), "--out", s(&out)]);
    assert!(!o.status.success());
}

#[test]
fn help_documents_every_flag() {
    for (cmd, flags) in [
        (
            "eval",
            &[
                "--checkpoint",
                "--shards",
                "--split",
                "--max-tokens",
                "--context",
                "--stride",
                "--batch",
                "--json",
                "--device",
            ][..],
        ),
        (
            "sample",
            &[
                "--checkpoint",
                "--prompt",
                "--max-new-tokens",
                "--temperature",
                "--top-k",
                "--top-p",
                "--seed",
                "--num-samples",
                "--ignore-eot",
                "--json",
            ][..],
        ),
        ("export", &["--checkpoint", "--out"][..]),
    ] {
        let help = ok(&[cmd, "--help"]);
        for f in flags {
            assert!(help.contains(f), "{cmd} --help lacks {f}:\n{help}");
        }
    }
}

/// `gpt2 eval` and greedy `gpt2 sample` on a wgpu device give flex's numbers and tokens.
/// Skipped, saying so, where no wgpu adapter exists (CI requires one).
#[cfg(feature = "wgpu")]
#[test]
fn eval_and_greedy_sample_on_wgpu_equal_flex() {
    if gpt2_model::testing::wgpu_or_skip("eval/sample on wgpu").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (run, shards) = fixture(dir.path());
    let on = |device: &str| {
        let json = dir.path().join(format!("eval-{device}.json"));
        eval_700(&run, &shards, &json, &["--device", device]);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let sample = ok(&[
            "sample",
            "--checkpoint",
            s(&run),
            "--prompt",
            "The President said",
            "--max-new-tokens",
            "16",
            "--temperature",
            "0",
            "--ignore-eot",
            "--device",
            device,
        ]);
        (r, sample)
    };
    let ((rf, sf), (rw, sw)) = (on("cpu"), on("wgpu"));
    assert_eq!(rw["tokens"], rf["tokens"]);
    for key in ["nll", "bpb"] {
        let (w, f) = (rw[key].as_f64().unwrap(), rf[key].as_f64().unwrap());
        assert!(
            (w - f).abs() <= 1e-5 * f.abs(),
            "{key}: wgpu {w} vs flex {f}"
        );
    }
    assert_eq!(sw, sf, "greedy samples differ");
}
