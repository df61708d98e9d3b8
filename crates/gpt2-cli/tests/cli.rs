//! The `gpt2` binary as a user runs it: help texts, a prepare killed with SIGKILL and resumed
//! (byte-identical shards), and clear errors for bad configs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn gpt2() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpt2"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn help_explains_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["urls", "--help"],
        vec!["prepare", "--help"],
    ] {
        let out = gpt2().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage"), "{text}");
    }
    // The one-line summary at the top (Cargo's description) names every subcommand, not a
    // stale subset.
    let top = String::from_utf8_lossy(&gpt2().arg("--help").output().unwrap().stdout).to_string();
    let first = top.lines().next().unwrap_or_default();
    for cmd in ["urls", "prepare", "train", "eval", "sample", "export"] {
        assert!(first.contains(cmd), "--help summary lacks {cmd}: {first}");
    }
    let text =
        String::from_utf8_lossy(&gpt2().args(["prepare", "--help"]).output().unwrap().stdout)
            .to_string();
    for flag in [
        "--config",
        "--input",
        "--out",
        "--threads",
        "--shard-tokens",
        "--val-fraction",
        "--on-error",
    ] {
        assert!(text.contains(flag), "prepare --help lacks {flag}");
    }
}

/// `--version` names the commit the binary was built from, and every subcommand's help ends with
/// an example.
#[test]
fn version_names_the_commit_and_help_shows_examples() {
    let out = gpt2().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success());
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match commit {
        // Built from this checkout: the same commit (the build script reruns when HEAD moves).
        Some(c) => assert!(text.contains(&format!("(commit {c})")), "{text} vs {c}"),
        None => assert!(text.contains("(commit "), "{text}"),
    }
    // ...and what it was built with, feature by feature.
    let with = text.split("built with: ").nth(1).unwrap_or_default().trim();
    let mut expected = vec!["cpu"];
    for (on, name) in [
        (cfg!(feature = "wgpu"), "wgpu"),
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "mpi"), "mpi"),
    ] {
        if on {
            expected.push(name);
        }
    }
    assert_eq!(with, expected.join(", "), "{text}");
    // The training plan names the same build commit, also when run from a directory that is not
    // this checkout (it used to ask `git` in the working directory and print "unknown").
    let built = text
        .split("(commit ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_default()
        .to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let shards = elsewhere.path().join("shards");
    let ins = inputs(elsewhere.path(), 1);
    assert!(prepare(&ins, &shards).status().unwrap().success());
    let config = root().join("configs/train/tiny-cpu.yaml");
    let out = gpt2()
        .args(["train", "--dry-run", "--config"])
        .arg(&config)
        .arg("--set")
        .arg(format!("data.shards={}", shards.display()))
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{plan}");
    let row = plan
        .lines()
        .find(|l| l.trim_start().starts_with("commit "))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().nth(1),
        Some(built.as_str()),
        "{plan}"
    );
    for cmd in ["urls", "prepare", "train", "eval", "sample", "export"] {
        let out = gpt2().args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            help.contains("Example") && help.contains(&format!("gpt2 {cmd} ")),
            "{cmd}: {help}"
        );
    }
}

/// Split the sample corpus into `n` JSON-lines files so that resume has inputs to skip.
fn inputs(dir: &Path, n: usize) -> Vec<PathBuf> {
    use std::io::BufRead;
    let r = gpt2_data::io::open_reader(&root().join("data/sample/sotu.jsonl.gz"), None).unwrap();
    let lines: Vec<String> = r.lines().map(|l| l.unwrap()).collect();
    lines
        .chunks(lines.len().div_ceil(n))
        .enumerate()
        .map(|(i, c)| {
            let p = dir.join(format!("in{i:02}.jsonl"));
            std::fs::write(&p, c.join("\n") + "\n").unwrap();
            p
        })
        .collect()
}

fn prepare(inputs: &[PathBuf], out: &Path) -> Command {
    let mut c = gpt2();
    c.args([
        "prepare",
        "--quiet",
        "--name",
        "k",
        "--shard-tokens",
        "300000",
        "--threads",
        "1",
        "--out",
    ])
    .arg(out);
    for i in inputs {
        c.arg("--input").arg(i);
    }
    c
}

fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn kill_9_then_rerun_gives_byte_identical_shards() {
    let dir = tempfile::tempdir().unwrap();
    let ins = inputs(dir.path(), 12);
    let reference = dir.path().join("ref");
    assert!(prepare(&ins, &reference).status().unwrap().success());
    let want = outputs(&reference);
    assert!(want.iter().any(|(n, _)| n == "manifest.json"));

    // Kill a real process once some inputs are done but not all, then run again.
    let out = dir.path().join("out");
    let mut child = prepare(&ins, &out).stderr(Stdio::null()).spawn().unwrap();
    let work = out.join(".work");
    let start = Instant::now();
    loop {
        let done = std::fs::read_dir(&work)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0);
        if done >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "prepare made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "prepare finished before it could be killed; make the corpus bigger"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out.join("manifest.json").exists());
    let done_before = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert!(done_before < ins.len(), "killed too late to test resume");

    let rerun = prepare(&ins, &out).output().unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let got = outputs(&out);
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        if name == "manifest.json" {
            // Same content but for the output directory's name.
            let norm = |x: &[u8], d: &Path| {
                String::from_utf8_lossy(x).replace(&d.display().to_string(), "OUT")
            };
            let (a, b) = (norm(a, &out), norm(b, &reference));
            let strip = |s: &str| {
                s.lines()
                    .filter(|l| !l.contains("\"fingerprint\""))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(strip(&a), strip(&b));
        } else {
            assert!(a == b, "{name} differs after kill -9 and resume");
        }
    }
    // Running again has nothing to do.
    let again = prepare(&ins, &out).arg("--keep-work").output().unwrap();
    assert!(again.status.success());
    assert!(
        !out.join(".work").exists(),
        "an up-to-date run does no work"
    );
}

#[test]
fn bad_config_lists_every_problem_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "name: x\ninputs: [/nope.jsonl]\nshard_tokens: 5\nval_fraction: 2\n",
    )
    .unwrap();
    let out = gpt2()
        .args(["prepare", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad.yaml",
        "/nope.jsonl",
        "shard_tokens 5",
        "val_fraction 2",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    std::fs::write(&cfg, "inputs: [a]\nshard_tokns: 5\n").unwrap();
    let out = gpt2()
        .args(["prepare", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `shard_tokns`"));
}

#[test]
fn urls_writes_parquet_and_counts() {
    let fx = root().join("../shared/fixtures/pushshift/RS_v2_2005-06.xz");
    if !fx.exists() {
        eprintln!("SKIPPED: ../shared/fixtures not present");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("u.parquet");
    let o = gpt2()
        .arg("urls")
        .arg(&fx)
        .arg("--out")
        .arg(&out)
        .args(["--mode", "sum"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(gpt2_data::reddit::read_parquet(&out).unwrap().len(), 81);
    assert!(dir.path().join("u.counts.json").exists());
}
