//! `gpt2 urls`: flags → [`UrlFilterConfig`] → [`run_urls`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gpt2_data::reddit::{counts_path, run_urls, KarmaMode, UrlFilterConfig};
use gpt2_data::OnError;

#[derive(Args)]
pub struct UrlsArgs {
    /// Pushshift submission dumps (RS_*.zst with --long=31 windows, .xz, .bz2, .gz or plain
    /// JSON lines), merged in the order given (read in parallel, see --threads).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output Parquet file (url, normalized_url, karma, num_submissions, subreddits,
    /// first_seen). Drop counts go beside it as `<out>.counts.json`.
    #[arg(long, short)]
    out: PathBuf,
    /// Also write the kept URLs, one per line, for a scraper.
    #[arg(long)]
    txt: Option<PathBuf>,
    /// Minimum karma (WebText: 3).
    #[arg(long, default_value_t = 3)]
    min_karma: i64,
    /// `submission`: one submission must reach the threshold (jcpeterson/openwebtext);
    /// `sum`: the scores of all submissions of the URL are added (openwebtext2).
    #[arg(long, value_enum, default_value_t = Mode::Submission)]
    mode: Mode,
    /// Replace the built-in domain blocklist with this file (one domain per line, `#` comments).
    #[arg(long)]
    blocklist: Option<PathBuf>,
    /// Block one more domain (and its subdomains); repeatable.
    #[arg(long = "block-domain")]
    block_domains: Vec<String>,
    /// Remove a domain from the blocklist; repeatable.
    #[arg(long = "allow-domain")]
    allow_domains: Vec<String>,
    /// Malformed lines and damaged files: `skip` (count and warn) or `fail`.
    #[arg(long, value_enum, default_value_t = ErrorPolicy::Skip)]
    on_error: ErrorPolicy,
    /// Dump files read in parallel (0: one per core). The output is the same for any value;
    /// one file is one stream, so this helps only with several inputs.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Submission,
    Sum,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ErrorPolicy {
    Skip,
    Fail,
}

impl From<ErrorPolicy> for OnError {
    fn from(p: ErrorPolicy) -> Self {
        match p {
            ErrorPolicy::Skip => OnError::Skip,
            ErrorPolicy::Fail => OnError::Fail,
        }
    }
}

pub fn run(a: UrlsArgs) -> Result<()> {
    let mut cfg = UrlFilterConfig {
        min_karma: a.min_karma,
        mode: match a.mode {
            Mode::Submission => KarmaMode::Submission,
            Mode::Sum => KarmaMode::Sum,
        },
        on_error: a.on_error.into(),
        threads: a.threads,
        ..Default::default()
    };
    if let Some(path) = &a.blocklist {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading blocklist {}", path.display()))?;
        cfg.blocked_domains = text
            .lines()
            .map(|l| {
                l.split('#')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|l| !l.is_empty())
            .collect();
    }
    cfg.blocked_domains
        .extend(a.block_domains.iter().map(|d| d.to_ascii_lowercase()));
    cfg.blocked_domains
        .retain(|d| !a.allow_domains.iter().any(|x| x.eq_ignore_ascii_case(d)));
    let (counts, skipped) = run_urls(&a.inputs, &a.out, a.txt.as_deref(), cfg)?;
    for s in &skipped {
        eprintln!("warning: skipped: {s}");
    }
    let json = serde_json::to_value(&counts)?;
    let rows: Vec<(String, String)> = json
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    crate::print_table("gpt2 urls: counts", &rows);
    eprintln!(
        "wrote {} ({} URLs) and {}",
        a.out.display(),
        counts.kept,
        counts_path(&a.out).display()
    );
    Ok(())
}
