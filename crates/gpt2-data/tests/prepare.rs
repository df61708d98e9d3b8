//! `prepare` end to end on real files: every reader, every drop reason, the error policies,
//! thread-count independence and resume after an interruption.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gpt2_data::config::Utf8Policy;
use gpt2_data::prepare::{work_dir, MANIFEST};
use gpt2_data::{run_prepare, Manifest, OnError, PrepareConfig, RunOptions, ShardReader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

/// Real prose: paragraphs of the sample corpus, `n` documents of a few thousand characters.
fn real_docs(n: usize) -> Vec<String> {
    use std::io::BufRead;
    let r = gpt2_data::io::open_reader(&root().join("data/sample/sotu.jsonl.gz"), None).unwrap();
    r.lines()
        .take(n)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn cfg(inputs: Vec<PathBuf>, out: &Path) -> PrepareConfig {
    PrepareConfig {
        name: "t".into(),
        inputs,
        out_dir: out.to_path_buf(),
        min_val_tokens: 1000,
        ..Default::default()
    }
}

fn run(c: PrepareConfig) -> gpt2_data::Result<Manifest> {
    let plan = c.validate(Path::new("test"))?;
    run_prepare(&plan, &quiet())
}

fn jsonl(path: &Path, rows: &[serde_json::Value]) {
    let body: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(path, body.join("\n") + "\n").unwrap();
}

/// (name, sha256) of every output file but the manifest (which names its own directory).
fn shard_bytes(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file() && e.file_name() != MANIFEST)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                gpt2_data::shard::sha256_file(&e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_reader_and_drop_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let docs = real_docs(8);
    let html = format!(
        "<html><head><title>T</title></head><body><nav><a href='/'>Home</a> | <a href='/x'>Menu</a></nav>\
         <article><h1>Address</h1>{}</article><footer>Copyright footer boilerplate</footer></body></html>",
        docs[5].split("\n").filter(|p| !p.trim().is_empty()).map(|p| format!("<p>{p}</p>")).collect::<String>()
    );
    // JSON lines, zstd-compressed, with metadata, a Wikipedia page, an HTML field, a short doc,
    // an exact duplicate (layout whitespace only) and a malformed line.
    let mut rows = vec![
        serde_json::json!({"text": docs[0], "url": "http://example.com/a", "karma": 12}),
        serde_json::json!({"text": docs[1], "url": "https://en.wikipedia.org/wiki/X"}),
        serde_json::json!({"html": html, "url": "http://example.com/h"}),
        serde_json::json!({"text": "Too short."}),
        serde_json::json!({"text": docs[0].replace("\n", "\n\n  ")}),
    ];
    // A near duplicate: the same address with one sentence edited.
    rows.push(serde_json::json!({"text": docs[2].replacen("the", "THE EDITED", 3)}));
    rows.push(serde_json::json!({"text": docs[2]}));
    let body: Vec<String> = rows
        .iter()
        .map(|r| r.to_string())
        .chain(std::iter::once("{not json".to_string()))
        .collect();
    let zst = d.join("a.jsonl.zst");
    std::fs::write(
        &zst,
        zstd::encode_all((body.join("\n") + "\n").as_bytes(), 3).unwrap(),
    )
    .unwrap();
    // Parquet with a text column and a url column.
    let pq = d.join("b.parquet");
    {
        use arrow::array::{ArrayRef, StringArray};
        let text: ArrayRef = Arc::new(StringArray::from(vec![docs[3].as_str()]));
        let url: ArrayRef = Arc::new(StringArray::from(vec!["http://example.org/p"]));
        let batch =
            arrow::record_batch::RecordBatch::try_from_iter(vec![("text", text), ("url", url)])
                .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&pq).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    // A directory of .txt files (one with a NUL byte and CRLF), and an .html file.
    let txt = d.join("txt");
    std::fs::create_dir(&txt).unwrap();
    std::fs::write(
        txt.join("1.txt"),
        docs[4].replace('\n', "\r\n").replacen(' ', "\0 ", 1),
    )
    .unwrap();
    std::fs::write(
        txt.join("2.html"),
        html.replace("Address", "Other address")
            .replace(&docs[5][..40], &docs[6][..40]),
    )
    .unwrap();
    std::fs::write(txt.join("ignored.bin"), b"not an input").unwrap();

    let out = d.join("out");
    let m = run(cfg(vec![zst, pq, txt], &out)).unwrap();
    let c = &m.counts;
    assert_eq!(c.input_files, 4, "{c:?}");
    assert_eq!(c.malformed, 1);
    assert_eq!(c.blocked_url, 1);
    assert_eq!(c.too_short, 1);
    assert_eq!(c.exact_duplicate, 1);
    assert!(c.near_duplicate >= 1, "{c:?}");
    assert_eq!(c.html_extracted, 2);
    assert_eq!(c.controls_removed, 1);
    assert_eq!(c.documents, 11);
    assert_eq!(c.dropped() + c.kept, c.documents);
    assert_eq!(m.train_documents + m.val_documents, c.kept);

    // Metadata survives; the extracted HTML lost its navigation and footer.
    let mut all_meta = String::new();
    let mut texts = Vec::new();
    for s in &m.shards {
        let p = out.join(&s.file);
        all_meta += &std::fs::read_to_string(gpt2_data::shard::meta_path(&p)).unwrap_or_default();
        let r = ShardReader::open_verified(&p, &s.sha256).unwrap();
        let docs = r.documents().to_vec();
        for (i, (off, bytes)) in docs.iter().enumerate() {
            let end = docs.get(i + 1).map_or(r.len(), |d| d.0);
            let mut ids = vec![0u32; (end - off) as usize];
            r.read_into(*off, &mut ids);
            assert_eq!(ids[0], gpt2_data::tokenizer::EOT);
            let text = gpt2_data::tokenizer::decode_lossy(&ids[1..]);
            assert_eq!(text.len() as u64, *bytes);
            texts.push(text);
        }
    }
    assert!(
        all_meta.contains("\"karma\":12") && all_meta.contains("example.org/p"),
        "{all_meta}"
    );
    let extracted = texts
        .iter()
        .find(|t| t.contains("Address"))
        .expect("HTML document kept");
    assert!(
        !extracted.contains("Copyright footer") && !extracted.contains("Menu"),
        "{extracted}"
    );
    assert!(texts.iter().all(|t| !t.contains('\0') && !t.contains('\r')));
}

#[test]
fn bad_inputs_fail_clearly_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.jsonl");
    jsonl(
        &good,
        &real_docs(3)
            .iter()
            .map(|t| serde_json::json!({ "text": t }))
            .collect::<Vec<_>>(),
    );
    let bad_line = d.join("bad.jsonl");
    std::fs::write(
        &bad_line,
        format!(
            "{}\n{{\"text\": 5}}\n",
            serde_json::json!({"text": real_docs(4)[3]})
        ),
    )
    .unwrap();
    let empty = d.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let truncated = d.join("cut.jsonl.zst");
    let full = zstd::encode_all(std::fs::read(&good).unwrap().as_slice(), 3).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let no_text = d.join("notext.parquet");
    {
        use arrow::array::{ArrayRef, Int64Array};
        let col: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let batch = arrow::record_batch::RecordBatch::try_from_iter(vec![("id", col)]).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&no_text).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let invalid_utf8 = d.join("latin1.txt");
    let mut bytes = real_docs(5)[4].clone().into_bytes();
    bytes.extend_from_slice(b" caf\xe9 \xff\xfe end");
    std::fs::write(&invalid_utf8, &bytes).unwrap();

    let out = d.join("out");
    // fail: each problem names its file (and line).
    let fail = |inputs: Vec<PathBuf>| {
        let mut c = cfg(inputs, &out);
        c.on_error = OnError::Fail;
        run(c).unwrap_err().to_string()
    };
    let e = fail(vec![good.clone(), bad_line.clone()]);
    assert!(e.contains("bad.jsonl:2") && e.contains("`text`"), "{e}");
    let e = fail(vec![truncated.clone()]);
    assert!(e.contains("cut.jsonl.zst") && e.contains("HINT"), "{e}");
    let e = fail(vec![no_text.clone()]);
    assert!(
        e.contains("notext.parquet") && e.contains("no `text` column") && e.contains("id"),
        "{e}"
    );
    assert!(
        !out.join(MANIFEST).exists(),
        "no manifest after a failed run"
    );
    // Unreadable and missing paths are reported together, before any work.
    let e = run(cfg(
        vec![d.join("missing.jsonl"), d.join("also-missing.parquet")],
        &out,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("missing.jsonl") && e.contains("also-missing.parquet"),
        "{e}"
    );

    // skip: everything readable is kept and every problem is counted.
    let m = run(cfg(
        vec![
            good,
            bad_line,
            empty,
            truncated,
            no_text,
            invalid_utf8.clone(),
        ],
        &out,
    ))
    .unwrap();
    let c = &m.counts;
    assert_eq!(c.malformed, 1);
    assert_eq!(
        c.input_errors, 2,
        "truncated stream and parquet without text: {c:?}"
    );
    assert_eq!(c.utf8_repaired, 1);
    assert!(c.kept >= 5, "{c:?}");
    for s in &m.shards {
        ShardReader::open_verified(&out.join(&s.file), &s.sha256).unwrap();
    }
    // The drop policy for invalid UTF-8.
    let mut c = cfg(vec![invalid_utf8], &d.join("out2"));
    c.invalid_utf8 = Utf8Policy::Drop;
    c.min_val_tokens = 0;
    let m = run(c).unwrap();
    assert_eq!((m.counts.invalid_utf8, m.counts.kept), (1, 0));
}

/// Inputs for the determinism tests: the whole sample corpus in four files, four compressions.
fn split_corpus(d: &Path) -> Vec<PathBuf> {
    use std::io::BufRead;
    let r = gpt2_data::io::open_reader(&root().join("data/sample/sotu.jsonl.gz"), None).unwrap();
    let lines: Vec<String> = r.lines().map(|l| l.unwrap()).collect();
    let chunks: Vec<&[String]> = lines.chunks(lines.len().div_ceil(4)).collect();
    let mut paths = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let body = chunk.join("\n") + "\n";
        let (name, bytes) = match i {
            0 => (
                "p0.jsonl.zst",
                zstd::encode_all(body.as_bytes(), 3).unwrap(),
            ),
            1 => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(body.as_bytes()).unwrap();
                ("p1.jsonl.xz", e.finish().unwrap())
            }
            2 => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(body.as_bytes()).unwrap();
                ("p2.jsonl.gz", e.finish().unwrap())
            }
            _ => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                e.write_all(body.as_bytes()).unwrap();
                ("p3.jsonl.bz2", e.finish().unwrap())
            }
        };
        std::fs::write(d.join(name), bytes).unwrap();
        paths.push(d.join(name));
    }
    paths
}

#[test]
fn output_is_identical_for_any_thread_count_and_after_interruption() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = split_corpus(dir.path());
    let make = |out: &str, threads: usize| {
        let mut c = cfg(inputs.clone(), &dir.path().join(out));
        c.threads = threads;
        c.shard_tokens = 500_000; // several shards
        c
    };
    let m1 = run(make("t1", 1)).unwrap();
    let m2 = run(make("t2", 2)).unwrap();
    assert!(m1.shards.len() >= 4);
    // Manifests differ only where the output directory is named.
    let same = |mut m: Manifest| {
        m.config.out_dir = PathBuf::new();
        m.fingerprint.clear();
        m
    };
    assert_eq!(same(m1.clone()), same(m2));
    let a = shard_bytes(&dir.path().join("t1"));
    assert_eq!(a, shard_bytes(&dir.path().join("t2")));

    // Interrupted after two inputs (work files left as a crash leaves them), then rerun.
    let c = make("r", 2);
    let plan = c.clone().validate(Path::new("test")).unwrap();
    let e = run_prepare(
        &plan,
        &RunOptions {
            quiet: true,
            stop_after_inputs: Some(2),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("stopped"));
    let work = work_dir(&dir.path().join("r"));
    assert!(work.join("part-00001.json").exists() && !work.join("part-00002.json").exists());
    // Damage the second part's marker: that input alone must be redone.
    std::fs::write(work.join("part-00001.json"), "{").unwrap();
    let m3 = run(c).unwrap();
    assert_eq!(same(m3), same(m1));
    assert_eq!(shard_bytes(&dir.path().join("r")), a);
    assert!(!work.exists(), "work files are removed after success");
}

#[test]
fn limit_documents_reads_a_slice_of_each_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(
        vec![root().join("data/sample/sotu.jsonl.gz")],
        &dir.path().join("out"),
    );
    c.limit_documents = Some(5);
    let m = run(c.clone()).unwrap();
    assert_eq!(
        (m.counts.documents, m.counts.kept, m.counts.input_files),
        (5, 5, 1)
    );
    // A different limit is a different run, not "up to date".
    c.limit_documents = Some(7);
    assert_eq!(run(c).unwrap().counts.documents, 7);
}
