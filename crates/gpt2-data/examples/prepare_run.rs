//! `gpt2 prepare`'s library call without the binary, with the binary's allocator (mimalloc,
//! never purging), for measuring the data pipeline without rebuilding Burn's dependents:
//! `cargo run -p gpt2-data --example prepare_run -- THREADS OUT_DIR INPUT...`

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As crates/gpt2-cli/src/main.rs: `mi_option_purge_delay` (index 15) = -1, never purge.
    // SAFETY: sets a process-wide integer option before any allocation matters.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
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
