//! Tokeniser throughput on a JSON-lines corpus, and (with `--check`) whether every document's
//! ids equal tiktoken-rs's `encode_ordinary` (itself checked against Python tiktoken in
//! `tests/tokenizer.rs`). Used by `experiments/bench_data.sh` on unseen text:
//! `cargo run -p gpt2-data --example tokenize_check -- CORPUS.jsonl [--check]`

use std::io::BufRead;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: tokenize_check CORPUS.jsonl [--check]");
    let check = args.next().as_deref() == Some("--check");
    let r = gpt2_data::io::open_reader(std::path::Path::new(&path), None).expect("corpus opens");
    let texts: Vec<String> = r
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.expect("line")).expect("JSON");
            v["text"].as_str().expect("a text field").to_string()
        })
        .collect();
    let mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let _ = gpt2_data::tokenizer::encode_ordinary("build the tables before timing");
    let t = std::time::Instant::now();
    let tokens: usize = texts
        .iter()
        .map(|x| gpt2_data::tokenizer::encode_ordinary(x).len())
        .sum();
    let s = t.elapsed().as_secs_f64();
    println!(
        "{mb:.1} MB, {tokens} tokens, 1 thread: {s:.2} s, {:.1} MB/s",
        mb / s
    );
    if check {
        let bad = texts
            .iter()
            .filter(|x| {
                gpt2_data::tokenizer::encode_ordinary(x)
                    != gpt2_data::tokenizer::encode_ordinary_reference(x)
            })
            .count();
        println!(
            "documents whose ids differ from tiktoken-rs: {bad} of {}",
            texts.len()
        );
        if bad > 0 {
            std::process::exit(1);
        }
    }
}
