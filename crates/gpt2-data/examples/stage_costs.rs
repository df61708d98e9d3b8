//! Where `prepare`'s single-thread time goes, stage by stage, on a JSON-lines corpus:
//! `cargo run --release -p gpt2-data --example stage_costs -- data/sample/sotu.jsonl.gz`

use std::io::BufRead;
use std::time::Instant;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/sample/sotu.jsonl.gz".into());
    let t = Instant::now();
    let r = gpt2_data::io::open_reader(std::path::Path::new(&path), None).expect("open");
    let lines: Vec<String> = r.lines().map(|l| l.expect("line")).collect();
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let texts: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();
    let parse = t.elapsed().as_secs_f64();
    let mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let time = |name: &str, f: &dyn Fn(&str)| {
        let t = Instant::now();
        for x in &texts {
            f(x);
        }
        let s = t.elapsed().as_secs_f64();
        println!("{name:<28} {s:6.3} s  {:7.1} MB/s", mb / s);
    };
    println!("{mb:.1} MB of text; read+decompress {read:.3} s, JSON parse {parse:.3} s");
    time("clean (NFC, controls)", &|x| {
        let _ = gpt2_data::clean::clean(x);
    });
    time("dedup key + xxh3", &|x| {
        let _ = gpt2_data::dedup::exact_hash(&gpt2_data::clean::dedup_key(x));
    });
    let h = gpt2_data::dedup::MinHasher::new(gpt2_data::dedup::MinHashParams::for_threshold(
        0.5, 128, 5,
    ));
    time("minhash signature", &|x| drop(h.signature(x)));
    time("tokenise: tiktoken-rs regex", &|x| {
        drop(gpt2_data::tokenizer::encode_ordinary_reference(x))
    });
    time("tokenise: fast path (warm)", &|x| {
        drop(gpt2_data::tokenizer::encode_ordinary(x))
    });
}
