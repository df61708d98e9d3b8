//! The labelled near-duplicate evaluation (issue 14), shared by `tests/dedup_labelled.rs` and
//! `examples/dedup_eval.rs`: documents made by `experiments/dedup_eval/make_labelled.py` (real
//! text, pairs at known word-5-gram Jaccard, every document labelled with its exact highest
//! Jaccard to any other) go through a dedup decision in file order, and we count what was caught
//! and what was lost.

#![allow(dead_code)] // each user (test, example) needs a different part

use std::io::BufRead;
use std::path::Path;

/// One labelled document.
pub struct Doc {
    pub role: String,
    /// Exact Jaccard to its pair (base/variant), None for unrelated documents.
    pub jaccard: Option<f64>,
    /// Exact highest Jaccard to any other document of the set.
    pub max_jaccard: f64,
    pub text: String,
}

pub fn load(path: &Path) -> Vec<Doc> {
    let r = gpt2_data::io::open_reader(path, None).expect("labelled set opens");
    r.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.expect("line")).expect("json");
            Doc {
                role: v["role"].as_str().expect("role").to_string(),
                jaccard: v["jaccard"].as_f64(),
                max_jaccard: v["max_jaccard"].as_f64().expect("max_jaccard"),
                text: v["text"].as_str().expect("text").to_string(),
            }
        })
        .collect()
}

/// What the evaluation found.
pub struct Report {
    /// Per pair-Jaccard bucket (lower edge, 0.1 wide; 0.95 its own): (pairs, variants dropped).
    pub pair_buckets: Vec<(f64, usize, usize)>,
    /// Per max-Jaccard bucket (lower edge, 0.1 wide): (documents, dropped).
    pub max_buckets: Vec<(f64, usize, usize)>,
    /// Pairs at Jaccard ≥ threshold + 0.1, and how many were caught.
    pub high_pairs: usize,
    pub high_caught: usize,
    /// Documents whose highest Jaccard is below threshold − 0.1, and how many were dropped.
    pub low_docs: usize,
    pub low_dropped: usize,
}

fn bucket(j: f64) -> f64 {
    if j >= 0.945 {
        0.95
    } else {
        // Pairs are made to within 0.01 of 0.1, 0.2, …; round to the nearest target.
        ((j * 10.0).round() / 10.0).min(0.9)
    }
}

/// Feed `docs` in order to `is_dropped` (true = the document is dropped as a near or exact
/// duplicate of an earlier one) and tally against the labels.
pub fn evaluate(docs: &[Doc], threshold: f64, mut is_dropped: impl FnMut(&str) -> bool) -> Report {
    let dropped: Vec<bool> = docs.iter().map(|d| is_dropped(&d.text)).collect();
    let mut pair_buckets: Vec<(f64, usize, usize)> = Vec::new();
    let mut max_buckets: Vec<(f64, usize, usize)> = Vec::new();
    let mut r = Report {
        pair_buckets: Vec::new(),
        max_buckets: Vec::new(),
        high_pairs: 0,
        high_caught: 0,
        low_docs: 0,
        low_dropped: 0,
    };
    let add = |v: &mut Vec<(f64, usize, usize)>, b: f64, hit: bool| match v
        .iter_mut()
        .find(|x| (x.0 - b).abs() < 1e-9)
    {
        Some(x) => {
            x.1 += 1;
            x.2 += hit as usize;
        }
        None => v.push((b, 1, hit as usize)),
    };
    for (d, &drop) in docs.iter().zip(&dropped) {
        if d.role == "variant" {
            let j = d.jaccard.expect("a variant has its pair's Jaccard");
            add(&mut pair_buckets, bucket(j), drop);
            if j >= threshold + 0.1 - 1e-9 {
                r.high_pairs += 1;
                r.high_caught += drop as usize;
            }
        }
        add(
            &mut max_buckets,
            (d.max_jaccard * 10.0).floor().min(9.0) / 10.0,
            drop,
        );
        if d.max_jaccard < threshold - 0.1 {
            r.low_docs += 1;
            r.low_dropped += drop as usize;
        }
    }
    pair_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    max_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    r.pair_buckets = pair_buckets;
    r.max_buckets = max_buckets;
    r
}

impl Report {
    /// Markdown tables for experiments/RESULTS-data.md.
    pub fn markdown(&self) -> String {
        let mut s =
            String::from("| pair Jaccard | pairs | caught (variant dropped) |\n|---|---|---|\n");
        for (b, n, k) in &self.pair_buckets {
            s += &format!(
                "| {b:.2} | {n} | {k} ({:.1}%) |\n",
                100.0 * *k as f64 / *n as f64
            );
        }
        s += "\n| highest Jaccard to any other document | documents | dropped |\n|---|---|---|\n";
        for (b, n, k) in &self.max_buckets {
            s += &format!(
                "| {b:.1}–{:.1} | {n} | {k} ({:.2}%) |\n",
                b + 0.1,
                100.0 * *k as f64 / *n as f64
            );
        }
        s += &format!(
            "\nRecall at Jaccard ≥ threshold + 0.1: {}/{} ({:.1}%). Dropped among documents whose \
             highest Jaccard is below threshold − 0.1: {}/{} ({:.2}%).\n",
            self.high_caught,
            self.high_pairs,
            100.0 * self.high_caught as f64 / self.high_pairs.max(1) as f64,
            self.low_dropped,
            self.low_docs,
            100.0 * self.low_dropped as f64 / self.low_docs.max(1) as f64
        );
        s
    }
}
