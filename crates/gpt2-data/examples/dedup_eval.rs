//! Recall and false-drop rate of `prepare`'s near-duplicate removal on a labelled set made by
//! `experiments/dedup_eval/make_labelled.py` (issue 14); prints Markdown for RESULTS-data.md.
//! `cargo run -p gpt2-data --example dedup_eval -- LABELLED.jsonl.gz [THRESHOLD]`

#[path = "../tests/common/labelled.rs"]
mod labelled;

use gpt2_data::clean::dedup_key;
use gpt2_data::dedup::{exact_hash, DedupIndex, MinHashParams, MinHasher, Verdict};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "crates/gpt2-data/tests/data/dedup_labelled.jsonl.gz".into());
    let threshold: f64 = args
        .next()
        .map_or(0.5, |t| t.parse().expect("threshold is a number"));
    let docs = labelled::load(std::path::Path::new(&path));
    let h = MinHasher::new(MinHashParams::for_threshold(threshold, 128, 5));
    let mut idx = DedupIndex::new(h.params, true, docs.len());
    let t = std::time::Instant::now();
    let r = labelled::evaluate(&docs, threshold, |text| {
        idx.check_insert(exact_hash(&dedup_key(text)), &h.signature(text)) != Verdict::Unique
    });
    println!(
        "{path}: {} documents, threshold {threshold}, {:?}, {:.2} s, index {} bytes/document\n",
        docs.len(),
        h.params,
        t.elapsed().as_secs_f64(),
        idx.approx_bytes() / docs.len().max(1)
    );
    print!("{}", r.markdown());
}
