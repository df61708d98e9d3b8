//! Token ids equal Python tiktoken's `gpt2` encoding (tests/reference/make_tiktoken_ids.py →
//! tiktoken_ids.json) on hand-written edge cases and real text from the sample corpus, and the
//! shards `prepare` writes hold exactly those ids.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use gpt2_data::tokenizer::{encode_ordinary, EOT};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample_docs() -> Vec<Value> {
    let r = gpt2_data::io::open_reader(&root().join("data/sample/sotu.jsonl.gz"), None).unwrap();
    r.lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// (name, text, expected ids) for every reference entry.
fn reference() -> Vec<(String, String, Vec<u32>)> {
    let p = root().join("tests/reference/tiktoken_ids.json");
    let entries: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let docs = sample_docs();
    entries
        .iter()
        .map(|e| {
            let text = match &e["text"] {
                Value::String(s) => s.clone(),
                t => {
                    let doc = docs[t["sotu_doc_index"].as_u64().unwrap() as usize]["text"]
                        .as_str()
                        .unwrap();
                    doc.chars()
                        .take(e["truncate_chars"].as_u64().unwrap() as usize)
                        .collect()
                }
            };
            let ids = e["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            (e["name"].as_str().unwrap().to_string(), text, ids)
        })
        .collect()
}

#[test]
fn ids_equal_python_tiktoken() {
    let cases = reference();
    assert!(cases.len() >= 30);
    let mut real_tokens = 0;
    for (name, text, ids) in &cases {
        assert_eq!(&encode_ordinary(text), ids, "{name}");
        if name.starts_with("sotu") {
            real_tokens += ids.len();
        }
    }
    assert!(
        real_tokens > 10_000,
        "real text covered: {real_tokens} tokens"
    );
    let eot = cases
        .iter()
        .find(|c| c.1.contains("<|endoftext|>"))
        .expect("a literal <|endoftext|> case");
    assert!(!eot.2.contains(&EOT));
}

#[test]
fn fast_path_equals_tiktoken_rs_on_the_whole_sample_corpus() {
    // 237 documents, ~12 MB of real prose with curly quotes, dashes, numbers and tables.
    for d in sample_docs() {
        let text = d["text"].as_str().unwrap();
        assert_eq!(
            encode_ordinary(text),
            gpt2_data::tokenizer::encode_ordinary_reference(text),
            "{}",
            d["id"]
        );
    }
}

#[test]
fn prepared_shards_hold_the_reference_ids() {
    // The first sample documents, prepared without dedup/split surprises: each document's tokens
    // in the shard must be EOT followed by tiktoken's ids for its (already clean) text.
    let cases: Vec<_> = reference()
        .into_iter()
        .filter(|c| c.0.starts_with("sotu"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    let lines: Vec<String> = cases
        .iter()
        .map(|c| serde_json::json!({ "text": c.1 }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let cfg = gpt2_data::PrepareConfig {
        name: "ref".into(),
        inputs: vec![input],
        out_dir: dir.path().join("out"),
        val_fraction: 0.0,
        min_val_tokens: 0,
        ..Default::default()
    };
    let plan = cfg.validate(Path::new("test")).unwrap();
    let m = gpt2_data::run_prepare(
        &plan,
        &gpt2_data::RunOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.shards.len(), 1);
    let r = gpt2_data::ShardReader::open(&dir.path().join("out").join(&m.shards[0].file)).unwrap();
    let mut expected = Vec::new();
    for c in &cases {
        expected.push(EOT);
        expected.extend(&c.2);
    }
    let mut got = vec![0u32; r.len() as usize];
    r.read_into(0, &mut got);
    assert_eq!(got, expected);
    let bytes: Vec<u64> = r.documents().iter().map(|d| d.1).collect();
    assert_eq!(
        bytes,
        cases.iter().map(|c| c.1.len() as u64).collect::<Vec<_>>()
    );
}
