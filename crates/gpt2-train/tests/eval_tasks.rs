//! `gpt2 eval --task` against an independent scorer: `tests/reference/eval/scorer.py` (written
//! from lm-eval-harness's and llm.c's definitions; Python tiktoken and transformers) scored a
//! small random GPT-2 (`tests/reference/eval/model`, context 64, so truncation and several
//! rolling windows happen) on committed inputs and on the real test sets; its per-example results
//! are in `expected.json`.
//!
//! Tolerances: the scorer also ran in float64; float32 vs float64 differs by ≤ 1e-5 absolute on
//! these per-example log-likelihoods (README there). Two float32 implementations summing in other
//! orders differ by a few times that, so log-likelihoods are held to 1e-5 relative (≥ 1e-4
//! absolute); every decision (greedy, pred, pred_norm) must be the same: the closest one is 0.0028
//! nats from a tie. Token ids, word and byte counts, and detokenised text must be equal.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use gpt2_train::tasks::{self, Examples, Task, TaskOptions, TaskReport};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("tests/reference/eval/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model() -> gpt2_model::Gpt2 {
    gpt2_model::load_hf(root().join("tests/reference/eval/model"), &Device::flex()).unwrap()
}

fn fixtures() -> Option<PathBuf> {
    let dir = root().join("../shared/fixtures/evaldata");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: ../shared/fixtures/evaldata is absent (the real test sets)");
        None
    }
}

fn close(what: &str, got: f64, want: f64) {
    let tol = (1e-5 * want.abs()).max(1e-4);
    assert!(
        (got - want).abs() <= tol,
        "{what}: {got} vs {want} (|diff| {:e} > {tol:e})",
        (got - want).abs()
    );
}

fn opts_from(args: &Value) -> TaskOptions {
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut o = TaskOptions {
        batch: 7, // not the scorer's 32: batching must not change a result
        ..TaskOptions::default()
    };
    for pair in args.chunks(2) {
        match pair[0] {
            "--limit" => o.limit = Some(pair[1].parse().unwrap()),
            "--stride" => o.stride = Some(pair[1].parse().unwrap()),
            other => panic!("unexpected scorer argument {other}"),
        }
    }
    o
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Compares one run of ours with the scorer's result for it.
fn check(run: &Value, ours: &TaskReport) {
    let want = &run["result"];
    let label = format!("{} {:?}", run["task"], run["args"]);
    assert_eq!(ours.n as u64, want["n"].as_u64().unwrap(), "{label}: n");
    for (name, value) in ours.metrics.pairs() {
        let w = want[name].as_f64().unwrap();
        // Perplexities are exponentials of sums: compare their logarithms.
        if name.contains("perplexity") || name == "ppl" {
            close(&format!("{label}: ln {name}"), value.ln(), w.ln());
        } else {
            close(&format!("{label}: {name}"), value, w);
        }
    }
    let examples = want["examples"].as_array().unwrap();
    match &ours.examples {
        Examples::Lambada(ex) => {
            assert_eq!(ex.len(), examples.len());
            for (i, (a, b)) in ex.iter().zip(examples).enumerate() {
                assert_eq!(
                    a.context_ids,
                    ids(&b["ctx_ids"]),
                    "{label} #{i}: context ids"
                );
                assert_eq!(a.target_ids, ids(&b["tgt_ids"]), "{label} #{i}: target ids");
                close(
                    &format!("{label} #{i} logprob"),
                    a.logprob,
                    b["logprob"].as_f64().unwrap(),
                );
                assert_eq!(
                    a.greedy,
                    b["greedy"].as_bool().unwrap(),
                    "{label} #{i}: greedy"
                );
            }
        }
        Examples::Hellaswag(ex) => {
            assert_eq!(ex.len(), examples.len());
            for (i, (a, b)) in ex.iter().zip(examples).enumerate() {
                for k in 0..4 {
                    close(
                        &format!("{label} #{i} loss {k}"),
                        a.losses[k],
                        b["losses"][k].as_f64().unwrap(),
                    );
                    assert_eq!(a.n_tokens[k] as u64, b["n_tokens"][k].as_u64().unwrap());
                }
                for (key, got) in [
                    ("pred", a.pred),
                    ("pred_norm", a.pred_norm),
                    ("label", a.label),
                ] {
                    same_count(&format!("{label} #{i}"), key, got as u64, b);
                }
            }
        }
        Examples::Corpus(docs) => {
            assert_eq!(docs.len(), examples.len());
            for (i, (a, b)) in docs.iter().zip(examples).enumerate() {
                if let Some(title) = b.get("title") {
                    assert_eq!(a.title, title.as_str().unwrap(), "{label} #{i}: title");
                }
                for (key, got) in [("n_tokens", a.n_tokens), ("bytes", a.bytes)] {
                    same_count(&format!("{label} #{i}"), key, got as u64, b);
                }
                let words = b["words"].as_u64().unwrap()
                    + b.get("lines").and_then(|l| l.as_u64()).unwrap_or(0);
                assert_eq!(a.words as u64, words, "{label} #{i}: words");
                let sha = hex(&Sha256::digest(a.scored_text.as_bytes()));
                assert_eq!(
                    sha,
                    b["sha256"].as_str().unwrap(),
                    "{label} #{i}: scored text"
                );
                close(
                    &format!("{label} #{i} nll"),
                    a.nll,
                    b["nll"].as_f64().unwrap(),
                );
            }
        }
        Examples::None => panic!("{label}: no per-example results"),
    }
}

/// `got` equals the scorer's integer `want[key]` (a prediction, a label or a count).
fn same_count(label: &str, key: &str, got: u64, want: &Value) {
    let w = want[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{label}: the reference has no integer {key}"));
    assert_eq!(got, w, "{label}: {key}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn committed_inputs_match_the_python_scorer() {
    let model = model();
    for run in reference()["committed"].as_array().unwrap() {
        let task = Task::parse(run["task"].as_str().unwrap()).unwrap();
        let input = root().join(run["input"].as_str().unwrap());
        let report = tasks::run(&model, task, &input, &opts_from(&run["args"])).unwrap();
        check(run, &report);
    }
}

#[test]
fn real_test_sets_match_the_python_scorer() {
    let Some(dir) = fixtures() else { return };
    let model = model();
    for run in reference()["fixtures"].as_array().unwrap() {
        let task = Task::parse(run["task"].as_str().unwrap()).unwrap();
        let input = dir.join(run["fixture"].as_str().unwrap());
        let report = tasks::run(&model, task, &input, &opts_from(&run["args"])).unwrap();
        check(run, &report);
    }
}

/// The input a reference run names: a committed file, or a fixture (`None` where the fixtures
/// are absent), cut to its `lines` (0-based line indices) when it lists them, written to `tmp`.
fn reference_input(run: &Value, tmp: &Path) -> Option<PathBuf> {
    let path = match (run.get("input"), run.get("fixture")) {
        (Some(input), _) => root().join(input.as_str().unwrap()),
        (None, Some(fixture)) => fixtures()?.join(fixture.as_str().unwrap()),
        _ => panic!("a reference run without input or fixture: {run}"),
    };
    let Some(lines) = run.get("lines").and_then(|l| l.as_array()) else {
        return Some(path);
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let all: Vec<&str> = text.split('\n').collect();
    let picked: String = lines
        .iter()
        .map(|i| format!("{}\n", all[i.as_u64().unwrap() as usize]))
        .collect();
    let out = tmp.join(format!("lines-{}.jsonl", lines.len()));
    std::fs::write(&out, &picked).unwrap();
    if let Some(sha) = run.get("lines_sha256") {
        assert_eq!(
            hex(&Sha256::digest(picked.as_bytes())),
            sha.as_str().unwrap()
        );
    }
    Some(out)
}

fn model_at(dir: &Value) -> gpt2_model::Gpt2 {
    gpt2_model::load_hf(root().join(dir.as_str().unwrap()), &Device::flex()).unwrap()
}

/// LAMBADA past a 128-token context (`tests/reference/eval/model128`): the scorer's results on
/// hand-written passages of 138–300 tokens and on every real example over 128 tokens.
#[test]
fn lambada_past_a_128_token_context_matches_the_python_scorer() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = reference()["lambada_128"].as_array().unwrap().clone();
    assert!(runs.iter().all(|r| r["truncated"].as_u64().unwrap() > 0));
    for run in &runs {
        let Some(input) = reference_input(run, tmp.path()) else {
            continue;
        };
        let model = model_at(&run["model"]);
        let report = tasks::run(&model, Task::Lambada, &input, &opts_from(&run["args"])).unwrap();
        check(run, &report);
    }
}

/// `--task lambada` gives lm-eval-harness's own numbers: its `HFLM.loglikelihood` outputs
/// (`lmeval_lambada.json`, written by crosscheck.py with lm_eval 0.4.13) for the 64- and
/// 128-token models, on examples that fit and on examples it truncates: the same per-example
/// log-likelihood (1e-5 relative), the same greedy decision, and so the same ppl and acc.
#[test]
fn lambada_equals_lm_evals_loglikelihood_on_truncated_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let path = root().join("tests/reference/eval/lmeval_lambada.json");
    let lmeval: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for run in lmeval["runs"].as_array().unwrap() {
        let Some(input) = reference_input(run, tmp.path()) else {
            continue;
        };
        let label = format!("{} on {}", run["model"], input.display());
        let model = model_at(&run["model"]);
        let report = tasks::run(&model, Task::Lambada, &input, &opts_from(&run["args"])).unwrap();
        let Examples::Lambada(ours) = &report.examples else {
            panic!("{label}: not LAMBADA results");
        };
        let theirs = run["examples"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{label}");
        let context = model.config().block_size;
        let truncated = ours
            .iter()
            .filter(|e| e.context_ids.len() + e.target_ids.len() > context + 1)
            .count();
        assert_eq!(
            truncated as u64,
            run["truncated"].as_u64().unwrap(),
            "{label}"
        );
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            close(
                &format!("{label} #{i}"),
                a.logprob,
                b["logprob"].as_f64().unwrap(),
            );
            assert_eq!(a.greedy, b["is_greedy"].as_bool().unwrap(), "{label} #{i}");
        }
        let n = theirs.len() as f64;
        let mean: f64 = theirs
            .iter()
            .map(|e| e["logprob"].as_f64().unwrap())
            .sum::<f64>()
            / n;
        let acc = theirs.iter().filter(|e| e["is_greedy"] == true).count() as f64 / n;
        let pairs = report.metrics.pairs();
        let get = |k: &str| pairs.iter().find(|p| p.0 == k).unwrap().1;
        close(&format!("{label}: ln ppl"), get("ppl").ln(), -mean);
        assert_eq!(get("acc"), acc, "{label}: acc");
    }
}

/// The whole WikiText test file: lm-eval's document count, and its words and bytes before
/// detokenisation (the denominators of word perplexity and bits per byte), and the detokenised
/// text of every document.
#[test]
fn wikitext_documents_words_and_detokenisation_of_the_whole_test_file() {
    let Some(dir) = fixtures() else { return };
    let want = &reference()["whole_file_stats"]["wikitext"];
    let text = std::fs::read_to_string(dir.join(want["file"].as_str().unwrap())).unwrap();
    let pages = tasks::wikitext_pages(&text);
    assert_eq!(pages.len() as u64, want["documents"].as_u64().unwrap());
    let words: usize = pages.iter().map(|p| tasks::wikitext_words(p)).sum();
    let bytes: usize = pages.iter().map(|p| p.len()).sum();
    assert_eq!(words as u64, want["words"].as_u64().unwrap());
    assert_eq!(bytes as u64, want["bytes"].as_u64().unwrap());
    let detok: Vec<String> = pages
        .iter()
        .map(|p| tasks::wikitext_detokenize(p))
        .collect();
    // The scorer hashed its detokenised documents joined by NUL bytes.
    assert_eq!(
        hex(&Sha256::digest(detok.join("\0").as_bytes())),
        want["detok_sha256_concat"].as_str().unwrap()
    );
    let tokens: usize = detok
        .iter()
        .map(|d| gpt2_data::tokenizer::encode_ordinary(d).len())
        .sum();
    assert_eq!(tokens as u64, want["tokens"].as_u64().unwrap());
    let titles: Vec<&str> = pages
        .iter()
        .map(|p| p.split('\n').next().unwrap().trim())
        .collect();
    assert_eq!(titles.last().copied(), want["last_title"].as_str());
}

/// Bad input is a clear error naming the file, the line and what was expected; a `--limit`
/// beyond the file is not an error.
#[test]
fn bad_task_files_are_clear_errors() {
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let err = |task: Task, path: &Path| {
        tasks::run(&model, task, path, &TaskOptions::default())
            .unwrap_err()
            .to_string()
    };
    let p = write("l.jsonl", "{\"text\": \"a b c\"}\nnot json\n");
    let e = err(Task::Lambada, &p);
    assert!(
        e.contains("l.jsonl, line 2") && e.contains("not JSON"),
        "{e}"
    );
    let p = write("l2.jsonl", "{\"txt\": \"a b\"}\n");
    let e = err(Task::Lambada, &p);
    assert!(e.contains("line 1") && e.contains("`text`"), "{e}");
    let p = write("empty.jsonl", "\n\n");
    assert!(err(Task::Lambada, &p).contains("no examples"));
    let p = write(
        "h.jsonl",
        "{\"ctx\": \"x\", \"endings\": [\"a\", \"b\", \"c\", \"d\"], \"label\": 7}\n",
    );
    let e = err(Task::Hellaswag, &p);
    assert!(
        e.contains("h.jsonl, line 1") && e.contains("label 7 is outside 0-3"),
        "{e}"
    );
    let p = write(
        "h2.jsonl",
        "{\"ctx\": \"x\", \"endings\": [\"a\"], \"label\": 0}\n",
    );
    assert!(err(Task::Hellaswag, &p).contains("4 strings"));
    let p = write("h.txt", "ctx\n0\na\nb\nc\n");
    let e = err(Task::Hellaswag, &p);
    assert!(e.contains("not a multiple of 6"), "{e}");
    let p = write("h2.txt", "ctx\nzero\na\nb\nc\nd\n");
    let e = err(Task::Hellaswag, &p);
    assert!(
        e.contains("h2.txt, line 2") && e.contains("not a label 0-3"),
        "{e}"
    );
    let p = write("bad.raw", "caf\u{e9}");
    std::fs::write(&p, [b'c', b'a', 0xff, b'\n']).unwrap();
    assert!(err(Task::Wikitext, &p).contains("invalid UTF-8"));
    // A limit past the end scores what there is.
    let p = write("ok.jsonl", "{\"text\": \"the cat sat\"}\n");
    let r = tasks::run(
        &model,
        Task::Lambada,
        &p,
        &TaskOptions {
            limit: Some(100),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.n, 1);
    let e = tasks::run(
        &model,
        Task::Lambada,
        &p,
        &TaskOptions {
            stride: Some(8),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--stride applies to wikitext and ptb only"),
        "{e}"
    );
}
