//! The README's commands, run as written, so the first page a newcomer reads cannot rot.
//!
//! Every fenced block whose info string is exactly `sh` runs, in README order, with
//! `bash -euo pipefail` in one scratch directory that holds copies of `configs/` and
//! `data/sample/` (what a fresh clone has), with the built `gpt2` first on PATH; later blocks use
//! earlier blocks' outputs (shards, a run directory). Blocks that need a GPU or data we do not
//! bundle are marked `sh no-run`, and the lines just before them must say what they need. Blocks
//! marked `sh evaldata` score the GPT-2 paper's test sets, which we do not bundle either: they
//! run with `EVALDATA` set to ../shared/fixtures/evaldata where that exists (as in CI) and are
//! reported as skipped where it does not. This
//! runs inside `make test` (`cargo test --workspace`), which is why the README's `make demo` /
//! `make test` block itself is `sh no-run`.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// README.md stays a first read; the reference lives in docs/ (issue 21).
const MAX_README_BYTES: usize = 10_240;

/// Fence info strings we accept. Anything else (`shell`, `bash`, `sh norun`) is a typo that
/// would silently keep a block from running, so it fails here instead.
const INFO_STRINGS: [&str; 7] = ["sh", "sh no-run", "sh evaldata", "yaml", "text", "json", ""];

/// A `sh no-run` block must be introduced by a sentence with one of these words (compared in
/// lower case), saying why it cannot run on a fresh clone.
const NEEDS_WORDS: [&str; 7] = [
    "gpu",
    "cuda",
    "dumps",
    "external",
    "download",
    "openwebtext",
    "needs",
];

/// How many lines before a `sh no-run` fence may hold that sentence.
const NEEDS_WITHIN_LINES: usize = 3;

/// One fenced code block of the README.
struct Block {
    /// The info string after the opening fence, trimmed.
    info: String,
    /// 1-based line number of the opening fence.
    line: usize,
    body: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    let path = root().join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README's ``` fenced blocks in order. A fence line inside an open block closes it only
/// when nothing follows the backticks.
fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        if open.is_some() {
            if fence.is_some_and(|rest| rest.trim().is_empty()) {
                blocks.push(open.take().expect("checked: a block is open"));
            } else if let Some(block) = open.as_mut() {
                block.body.push_str(line);
                block.body.push('\n');
            }
        } else if let Some(info) = fence {
            open = Some(Block {
                info: info.trim().to_string(),
                line: i + 1,
                body: String::new(),
            });
        }
    }
    if let Some(block) = open {
        panic!(
            "README.md: the block opened at line {} is never closed",
            block.line
        );
    }
    blocks
}

/// The first command line of a block, for messages.
fn first_command(body: &str) -> &str {
    body.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("")
}

/// Copies `from` into `to` recursively (files and directories; symlinks are followed).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        }
    }
}

#[test]
fn readme_stays_short() {
    let size = readme().len();
    assert!(
        size <= MAX_README_BYTES,
        "README.md is {size} bytes, more than {MAX_README_BYTES}: move the detail into docs/"
    );
}

#[test]
fn every_fence_has_a_known_info_string() {
    for b in fenced_blocks(&readme()) {
        assert!(
            INFO_STRINGS.contains(&b.info.as_str()),
            "README.md line {}: fence info string `{}` is not one of {INFO_STRINGS:?}",
            b.line,
            b.info
        );
    }
}

#[test]
fn every_no_run_block_says_what_it_needs() {
    let text = readme();
    let lines: Vec<&str> = text.lines().collect();
    for b in fenced_blocks(&text) {
        if b.info != "sh no-run" {
            continue;
        }
        let fence = b.line - 1; // 0-based index of the fence line
        let before = lines[fence.saturating_sub(NEEDS_WITHIN_LINES)..fence]
            .join(" ")
            .to_lowercase();
        assert!(
            NEEDS_WORDS.iter().any(|w| before.contains(w)),
            "README.md line {}: a `sh no-run` block (`{}`) must follow, within {NEEDS_WITHIN_LINES} \
             lines, a sentence saying what it needs (one of {NEEDS_WORDS:?}); found: {before:?}",
            b.line,
            first_command(&b.body)
        );
    }
}

#[test]
fn every_sh_block_runs_as_written() {
    let blocks: Vec<Block> = fenced_blocks(&readme())
        .into_iter()
        .filter(|b| b.info == "sh" || b.info == "sh evaldata")
        .collect();
    let evaldata = root().join("../shared/fixtures/evaldata");
    assert!(
        !blocks.is_empty(),
        "README.md has no runnable `sh` block: the tour must show commands that run"
    );

    // A fresh clone's inputs, and a directory whose `gpt2` is the binary under test.
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let work = tmp.path().join("repo");
    copy_dir(&root().join("configs"), &work.join("configs"));
    copy_dir(&root().join("data/sample"), &work.join("data/sample"));
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin directory");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gpt2"), bin.join("gpt2"))
        .expect("symlink to the gpt2 binary");
    let path = match std::env::var_os("PATH") {
        Some(p) => format!("{}:{}", bin.display(), p.to_string_lossy()),
        None => bin.display().to_string(),
    };

    let total = Instant::now();
    for b in &blocks {
        if b.info == "sh evaldata" && !evaldata.is_dir() {
            eprintln!(
                "README.md line {}: SKIPPED (needs the test sets; {} is absent): {}",
                b.line,
                evaldata.display(),
                first_command(&b.body)
            );
            continue;
        }
        let start = Instant::now();
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", b.body.as_str()])
            .current_dir(&work)
            .env("PATH", &path)
            .env("EVALDATA", &evaldata)
            .stdin(Stdio::null())
            .output()
            .expect("bash runs");
        eprintln!(
            "README.md line {}: {:.1} s: {}",
            b.line,
            start.elapsed().as_secs_f64(),
            first_command(&b.body)
        );
        assert!(
            out.status.success(),
            "README.md line {}: the block failed ({}):\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            b.line,
            out.status,
            b.body,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "README.md: {} sh blocks in {:.1} s",
        blocks.len(),
        total.elapsed().as_secs_f64()
    );
}
