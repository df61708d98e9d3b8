//! Throughput of `gpt2 urls`'s filter (the library call the command makes) over several dump
//! files, for `experiments/bench_urls.sh`:
//! `cargo run -p gpt2-data --example urls_throughput -- THREADS OUT.parquet FILE...`
//! Prints seconds and MB/s of input bytes (plain JSON lines in the benchmark, so MB of JSON).

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .and_then(|t| t.parse().ok())
        .expect("usage: urls_throughput THREADS OUT.parquet FILE...");
    let out = PathBuf::from(args.next().expect("OUT.parquet"));
    let inputs: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let bytes: u64 = inputs
        .iter()
        .map(|p| std::fs::metadata(p).expect("input exists").len())
        .sum();
    let cfg = gpt2_data::reddit::UrlFilterConfig {
        threads,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let (counts, _) = gpt2_data::reddit::run_urls(&inputs, &out, None, cfg).expect("run_urls");
    let s = t.elapsed().as_secs_f64();
    println!(
        "{threads} {s:.2} {:.1} {} {}",
        bytes as f64 / 1e6 / s,
        counts.submissions,
        counts.kept
    );
}
