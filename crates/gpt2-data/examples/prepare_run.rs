//! `gpt2 prepare`'s library call without the binary (and without its mimalloc allocator), for
//! measuring the data pipeline while the `gpt2` binary cannot be rebuilt (it needs Burn):
//! `cargo run -p gpt2-data --example prepare_run -- THREADS OUT_DIR INPUT...`

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .and_then(|t| t.parse().ok())
        .expect("usage: prepare_run THREADS OUT_DIR INPUT...");
    let out = std::path::PathBuf::from(args.next().expect("OUT_DIR"));
    let cfg = gpt2_data::PrepareConfig {
        name: "bench".into(),
        inputs: args.map(Into::into).collect(),
        out_dir: out,
        threads,
        ..Default::default()
    };
    let plan = cfg
        .validate(std::path::Path::new("<args>"))
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = gpt2_data::RunOptions {
        quiet: true,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let m = gpt2_data::run_prepare(&plan, &opts).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{threads} threads: {:.2} s, {} documents kept, {} near duplicates",
        t.elapsed().as_secs_f64(),
        m.counts.kept,
        m.counts.near_duplicate
    );
}
