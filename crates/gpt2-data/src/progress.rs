//! Progress for long runs: an indicatif bar on a terminal, plain periodic lines otherwise
//! (logs, CI), so piped output stays readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Live numbers shown by [`Progress::update`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    /// Input bytes consumed (compressed, as on disk) — drives the ETA.
    pub input_bytes: u64,
    /// Raw text bytes (UTF-8, before cleaning) — drives MB/s.
    pub text_bytes: u64,
    pub kept: u64,
    pub dropped: u64,
    pub tokens: u64,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    start: Instant,
    last_line: Instant,
    every: Duration,
    label: String,
}

impl Progress {
    /// `total`: input bytes expected. `quiet` disables plain lines too.
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b
        });
        let every = if quiet {
            Duration::MAX
        } else {
            Duration::from_secs(10)
        };
        Self {
            bar,
            total,
            start: Instant::now(),
            last_line: Instant::now(),
            every,
            label: label.to_string(),
        }
    }

    fn message(&self, s: &Snapshot) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        format!(
            "docs kept {} dropped {} | tokens {} | {:.1} MB/s",
            s.kept,
            s.dropped,
            s.tokens,
            s.text_bytes as f64 / 1e6 / secs
        )
    }

    pub fn update(&mut self, s: &Snapshot) {
        if let Some(b) = &self.bar {
            b.set_position(s.input_bytes.min(self.total));
            b.set_message(self.message(s));
        } else if self.last_line.elapsed() >= self.every {
            self.last_line = Instant::now();
            let pct = 100.0 * s.input_bytes as f64 / self.total.max(1) as f64;
            let secs = self.start.elapsed().as_secs_f64();
            let eta = if s.input_bytes > 0 {
                secs * (self.total as f64 / s.input_bytes as f64 - 1.0)
            } else {
                f64::NAN
            };
            eprintln!(
                "{}: {pct:5.1}% | {} | {secs:.0}s elapsed, ETA {eta:.0}s",
                self.label,
                self.message(s)
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
