//! `metrics.jsonl` (one JSON object per logged step or evaluation) and `loss.svg`, a plot of
//! train and val loss redrawn at every evaluation and at the end. Plain SVG, no plotting crate.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub step: u64,
    /// "train" or "val".
    pub kind: String,
    pub loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_per_step: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    pub tokens_seen: u64,
}

pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Open `run_dir/metrics.jsonl`; records after `resume_step` (written by a run that then
    /// died) are dropped, so the file describes exactly the run that continues.
    pub fn open(run_dir: &Path, resume_step: u64) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        if path.exists() {
            let kept: Vec<String> = read(&path)?
                .into_iter()
                .filter(|r| r.step <= resume_step)
                .map(|r| serde_json::to_string(&r).expect("serialises"))
                .collect();
            let tmp = path.with_extension("jsonl.tmp");
            fs::write(
                &tmp,
                kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
            )
            .at(&tmp)?;
            fs::rename(&tmp, &path).at(&path)?;
        }
        Ok(Self { path })
    }

    pub fn append(&self, r: &Record) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .at(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(r).expect("serialises")).at(&self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// All records of a metrics file (malformed lines, e.g. a torn last line after a crash, are skipped).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = fs::read_to_string(path).at(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Draw train (blue) and val (orange) loss against step into an SVG file.
pub fn plot(records: &[Record], out: &Path) -> Result<()> {
    let (w, h, pad) = (720.0, 420.0, 50.0);
    let pts = |kind: &str| {
        records
            .iter()
            .filter(|r| r.kind == kind && r.loss.is_finite())
            .map(|r| (r.step as f64, r.loss))
            .collect::<Vec<_>>()
    };
    let (train, val) = (pts("train"), pts("val"));
    let all: Vec<&(f64, f64)> = train.iter().chain(&val).collect();
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    if !all.is_empty() {
        let (x0, x1) = (
            all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
            all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
        );
        let (y0, y1) = (
            all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
            all.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
        );
        let (x1, y1) = (
            if x1 > x0 { x1 } else { x0 + 1.0 },
            if y1 > y0 { y1 } else { y0 + 1.0 },
        );
        let sx = |x: f64| pad + (x - x0) / (x1 - x0) * (w - 2.0 * pad);
        let sy = |y: f64| h - pad - (y - y0) / (y1 - y0) * (h - 2.0 * pad);
        svg += &format!(
            "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
            h - pad,
            w - pad,
            h - pad
        );
        svg += &format!(
            "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n",
            h - pad
        );
        for i in 0..=4 {
            let y = y0 + (y1 - y0) * i as f64 / 4.0;
            let x = x0 + (x1 - x0) * i as f64 / 4.0;
            svg += &format!("<text x=\"5\" y=\"{:.1}\">{y:.3}</text>\n", sy(y) + 4.0);
            svg += &format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x:.0}</text>\n",
                sx(x),
                h - pad + 18.0
            );
        }
        for (series, color) in [(&train, "#1f77b4"), (&val, "#ff7f0e")] {
            if series.is_empty() {
                continue;
            }
            let path: Vec<String> = series
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                path.join(" ")
            );
            for (x, y) in series.iter().filter(|_| series.len() < 100) {
                svg += &format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{color}\"/>\n",
                    sx(*x),
                    sy(*y)
                );
            }
        }
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n",
            w / 2.0,
            h - 8.0
        );
        svg += "<text x=\"70\" y=\"20\" fill=\"#1f77b4\">train loss</text><text x=\"170\" y=\"20\" fill=\"#ff7f0e\">val loss</text>\n";
    }
    svg += "</svg>\n";
    let tmp = out.with_extension("svg.tmp");
    fs::write(&tmp, svg).at(&tmp)?;
    fs::rename(&tmp, out).at(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, kind: &str, loss: f64) -> Record {
        Record {
            step,
            kind: kind.into(),
            loss,
            lr: None,
            grad_norm: None,
            ms_per_step: None,
            tokens_per_sec: None,
            mfu: None,
            tokens_seen: 0,
        }
    }

    #[test]
    fn resume_truncates_and_plot_draws_both_series() {
        let dir = tempfile::tempdir().unwrap();
        let log = MetricsLog::open(dir.path(), 0).unwrap();
        for s in 1..=6 {
            log.append(&rec(s, "train", 10.0 - s as f64)).unwrap();
        }
        log.append(&rec(4, "val", 6.5)).unwrap();
        let log = MetricsLog::open(dir.path(), 4).unwrap();
        let r = read(log.path()).unwrap();
        assert_eq!(r.iter().map(|x| x.step).max(), Some(4));
        assert_eq!(r.len(), 5);
        plot(&r, &dir.path().join("loss.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
