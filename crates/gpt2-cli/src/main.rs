//! `gpt2`: the command line of the GPT-2 WebText reproduction. Each subcommand parses flags,
//! resolves them into the library's settings and calls the library; nothing else lives here.

mod eval;
mod export;
mod prepare;
mod sample;
mod train;
mod urls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Reproduce GPT-2's WebText pretraining: select Reddit links, prepare token shards, train,
/// evaluate, sample, and export to Hugging Face.
#[derive(Parser)]
#[command(
    name = "gpt2",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("GPT2_GIT_COMMIT"),
        "), built with: ",
        env!("GPT2_BUILT_WITH")
    ),
    about,
    long_about = None,
    after_help = "Start with `make demo` (prepare the bundled corpus, train the tiny-cpu model); \
                  `gpt2 <command> --help` shows each command's options and an example."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Filter pushshift Reddit submission dumps into the URL list an external scraper fetches
    /// (WebText's link selection: karma ≥ 3, no Wikipedia, no media hosts, deduplicated).
    #[command(
        after_help = "Example:\n  gpt2 urls RS_2017-*.zst --out data/urls.parquet --txt data/urls.txt"
    )]
    Urls(urls::UrlsArgs),
    /// Turn documents (JSON lines, Parquet, .txt or .html) into GPT-2 token shards with a
    /// held-out split: clean, filter, deduplicate, tokenise, shard (llm.c format).
    #[command(
        after_help = "Example (the bundled sample corpus → data/shards/sotu):\n  gpt2 prepare --config configs/data/sample.yaml"
    )]
    Prepare(prepare::PrepareArgs),
    /// Pretrain GPT-2 from a YAML run config: AdamW, warmup + cosine, global-norm clipping,
    /// gradient accumulation, periodic validation, atomic checkpoints and exact resume.
    #[command(
        after_help = "Examples:\n  gpt2 train --config configs/train/tiny-cpu.yaml --resume auto\n  gpt2 train --config configs/train/gpt2-117m.yaml --dry-run"
    )]
    Train(train::TrainArgs),
    /// Held-out loss (nats/token), perplexity and bits per byte of a checkpoint (ours or HF
    /// GPT-2 weights) on token shards, with a per-shard table and optional JSON.
    #[command(
        after_help = "Example:\n  gpt2 eval --checkpoint runs/tiny-cpu --shards data/shards/sotu --json runs/tiny-cpu/eval.json"
    )]
    Eval(eval::EvalArgs),
    /// Generate text from a checkpoint, streamed to stdout as it is sampled (KV cache;
    /// temperature, top-k, top-p, seed).
    #[command(
        after_help = "Example:\n  gpt2 sample --checkpoint runs/tiny-cpu --prompt \"Fellow citizens\" --max-new-tokens 50"
    )]
    Sample(sample::SampleArgs),
    /// Write a checkpoint as a Hugging Face GPT-2 directory: model.safetensors, config.json and
    /// the tokenizer files (vocab.json, merges.txt, …).
    #[command(
        after_help = "Example:\n  gpt2 export --checkpoint runs/tiny-cpu --out exported/tiny-cpu"
    )]
    Export(export::ExportArgs),
}

// Training allocates and frees the same large buffers (activations, logits, gradients) every
// step. glibc hands big ones back to the OS and the next step faults them in again, page by
// page: ~15% of a CPU step went to page faults. mimalloc told never to purge keeps them
// (experiments/RESULTS.md, "attempts").
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// mimalloc, counting the bytes of live allocations: flex's tensors live on the heap, so the
/// count's change across a forward pass is what the backward keeps (`mem_activations_mb`,
/// gpt2-model `device::bytes_in_use`), and their most at once (`mem_peak_mb`). Two relaxed
/// atomics per allocation.
struct CountingAlloc;

static LIVE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The most `LIVE_BYTES` at once since the last `reset_peak_bytes` (`mem_peak_mb` on flex).
static PEAK_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn live_bytes() -> u64 {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

fn peak_bytes() -> u64 {
    PEAK_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

fn reset_peak_bytes() {
    PEAK_BYTES.store(live_bytes(), std::sync::atomic::Ordering::Relaxed);
}

/// Counts `size` more live bytes and raises the peak to the new total.
fn count_alloc(size: usize) {
    let live =
        LIVE_BYTES.fetch_add(size as u64, std::sync::atomic::Ordering::Relaxed) + size as u64;
    PEAK_BYTES.fetch_max(live, std::sync::atomic::Ordering::Relaxed);
}

// SAFETY: every call goes to mimalloc with the same arguments; the counter only observes.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_alloc(new_size);
            LIVE_BYTES.fetch_sub(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
}

/// `mi_option_purge_delay` = -1 ("no purging at all"). The option is not exported by name;
/// 15 is its index in `mi_option_e` of mimalloc.h (v3, as built by libmimalloc-sys =0.1.49).
fn keep_freed_memory() {
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide integer option; mimalloc reads it when deciding to purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> ExitCode {
    keep_freed_memory();
    gpt2_model::device::set_host_counters(gpt2_model::device::HostCounters {
        live: live_bytes,
        peak: peak_bytes,
        reset_peak: reset_peak_bytes,
    });
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Urls(a) => urls::run(a),
        Command::Prepare(a) => prepare::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Export(a) => export::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Print `rows` as a two-column table.
pub(crate) fn print_table(title: &str, rows: &[(String, String)]) {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    eprintln!("{title}");
    for (k, v) in rows {
        eprintln!("  {k:<w$}  {v}");
    }
}
