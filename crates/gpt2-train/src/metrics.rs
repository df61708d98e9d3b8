//! `metrics.jsonl` (one JSON object per logged step or evaluation) and `loss.svg`, a plot of
//! train and val loss redrawn at every evaluation and at the end. Plain SVG, no plotting crate.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::tensorboard::EventWriter;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub step: u64,
    /// "train", "val", or an evaluation task's name (`hellaswag`, `lambada`, …).
    pub kind: String,
    /// Mean loss (nats) of a train or val row; absent (NaN here) on a task's row.
    #[serde(
        default = "nan",
        deserialize_with = "null_as_nan",
        skip_serializing_if = "is_nan"
    )]
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
    /// Peak memory of the step in MB (10⁶ bytes), see `mem_peak_kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_peak_mb: Option<f64>,
    /// What `mem_peak_mb` measures: `"device"` (CUDA/wgpu: the most memory the device's pools
    /// held at once, since the run started), `"heap"` (flex in the `gpt2` binary: the most live
    /// heap bytes at once during the step, the model and optimizer state included) or `"rss"`
    /// (flex elsewhere: the process's peak resident set during the step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_peak_kind: Option<String>,
    /// What the backward keeps, in MB (10⁶ bytes): the bytes the last micro-batch's forward left
    /// allocated, measured to the byte (CUDA/wgpu: the pools' live allocations; flex: the `gpt2`
    /// binary's live heap bytes). The largest over the ranks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_activations_mb: Option<f64>,
    /// A task's metrics (`acc`, `acc_norm`, `ppl`, `word_perplexity`, …) and its example count
    /// `n`, as top-level keys of the row.
    #[serde(flatten, default)]
    pub scores: BTreeMap<String, f64>,
}

impl Record {
    /// A train or val row with nothing else set.
    pub fn loss(step: u64, kind: &str, loss: f64, tokens_seen: u64) -> Self {
        Self {
            step,
            kind: kind.into(),
            loss,
            lr: None,
            grad_norm: None,
            ms_per_step: None,
            tokens_per_sec: None,
            mfu: None,
            tokens_seen,
            mem_peak_mb: None,
            mem_peak_kind: None,
            mem_activations_mb: None,
            scores: BTreeMap::new(),
        }
    }
}

impl Record {
    /// Every number of the row as it is written to metrics.jsonl, tagged `{kind}/{field}`
    /// (`train/loss`, `val/loss`, `hellaswag/acc_norm`); the step is the key, not a scalar.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let value = serde_json::to_value(self).expect("serialises");
        let Some(fields) = value.as_object() else {
            return Vec::new();
        };
        fields
            .iter()
            .filter(|(k, _)| k.as_str() != "step")
            .filter_map(|(k, v)| Some((format!("{}/{k}", self.kind), v.as_f64()?)))
            .collect()
    }
}

fn nan() -> f64 {
    f64::NAN
}

fn is_nan(x: &f64) -> bool {
    x.is_nan()
}

/// JSON has no NaN (serde_json writes `null`): read `null` back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The metrics file's name in the run directory.
pub const FILE: &str = "metrics.jsonl";

pub struct MetricsLog {
    path: PathBuf,
    /// The same rows as TensorBoard scalars (`logging.tensorboard`).
    tensorboard: Option<EventWriter>,
}

impl MetricsLog {
    /// Open `run_dir/metrics.jsonl`; records after `resume_step` (written by a run that then
    /// died) are dropped, so the file describes exactly the run that continues. With
    /// `tensorboard`, a new event file under `run_dir/tb/` supersedes the older files' events
    /// after `resume_step` the same way (`tensorboard.rs`).
    pub fn open(run_dir: &Path, resume_step: u64, tensorboard: bool) -> Result<Self> {
        let path = run_dir.join(FILE);
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
        let tensorboard = tensorboard
            .then(|| EventWriter::create(&run_dir.join(crate::tensorboard::DIR), resume_step + 1))
            .transpose()?;
        Ok(Self { path, tensorboard })
    }

    pub fn append(&mut self, r: &Record) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .at(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(r).expect("serialises")).at(&self.path)?;
        if let Some(tb) = &mut self.tensorboard {
            tb.scalars(r.step, &r.scalars())?;
        }
        Ok(())
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

/// Draw train (blue) and val (orange) loss against step into an SVG file and, when the run
/// evaluates tasks during training (`eval.tasks`), their accuracies in a panel below.
pub fn plot(records: &[Record], out: &Path) -> Result<()> {
    let series = |kind: &str, key: Option<&str>| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| {
                let y = match key {
                    None => r.loss,
                    Some(k) => *r.scores.get(k)?,
                };
                y.is_finite().then_some((r.step as f64, y))
            })
            .collect()
    };
    let loss = vec![
        ("train loss".to_string(), series("train", None)),
        ("val loss".to_string(), series("val", None)),
    ];
    let mut tasks: Vec<String> = records
        .iter()
        .filter(|r| !matches!(r.kind.as_str(), "train" | "val"))
        .map(|r| r.kind.clone())
        .collect();
    tasks.sort();
    tasks.dedup();
    let acc: Vec<(String, Vec<(f64, f64)>)> = tasks
        .iter()
        .flat_map(|t| {
            ["acc", "acc_norm"]
                .into_iter()
                .map(move |k| (format!("{t} {k}"), series(t, Some(k))))
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let w = 720.0;
    let h = if acc.is_empty() { 420.0 } else { 700.0 };
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    svg += &panel(&loss, (0.0, 0.0, w, 420.0));
    if !acc.is_empty() {
        svg += &panel(&acc, (0.0, 420.0, w, 280.0));
    }
    svg += "</svg>\n";
    let tmp = out.with_extension("svg.tmp");
    fs::write(&tmp, svg).at(&tmp)?;
    fs::rename(&tmp, out).at(out)
}

/// One panel of the plot: `series` (name, points) against step in the box `(x, y, w, h)`.
fn panel(series: &[(String, Vec<(f64, f64)>)], (ox, oy, w, h): (f64, f64, f64, f64)) -> String {
    const COLORS: [&str; 6] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let pad = 50.0;
    let all: Vec<&(f64, f64)> = series.iter().flat_map(|s| &s.1).collect();
    let mut svg = String::new();
    if all.is_empty() {
        return svg;
    }
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
    let sx = |x: f64| ox + pad + (x - x0) / (x1 - x0) * (w - 2.0 * pad);
    let sy = |y: f64| oy + h - pad - (y - y0) / (y1 - y0) * (h - 2.0 * pad);
    let (left, bottom) = (ox + pad, oy + h - pad);
    svg += &format!(
        "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"black\"/>\n",
        ox + w - pad
    );
    svg += &format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"black\"/>\n",
        oy + pad
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        svg += &format!(
            "<text x=\"{}\" y=\"{:.1}\">{y:.3}</text>\n",
            ox + 5.0,
            sy(y) + 4.0
        );
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x:.0}</text>\n",
            sx(x),
            bottom + 18.0
        );
    }
    let mut legend_x = ox + 70.0;
    for ((name, pts), color) in series.iter().zip(COLORS.iter().cycle()) {
        if !pts.is_empty() {
            let path: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                path.join(" ")
            );
            for (x, y) in pts.iter().filter(|_| pts.len() < 100) {
                svg += &format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{color}\"/>\n",
                    sx(*x),
                    sy(*y)
                );
            }
        }
        svg += &format!(
            "<text x=\"{legend_x}\" y=\"{}\" fill=\"{color}\">{name}</text>\n",
            oy + 20.0
        );
        legend_x += 12.0 + 7.0 * name.len() as f64;
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n",
        ox + w / 2.0,
        oy + h - 8.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, kind: &str, loss: f64) -> Record {
        Record::loss(step, kind, loss, 0)
    }

    #[test]
    fn resume_truncates_and_plot_draws_both_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), 0, false).unwrap();
        for s in 1..=6 {
            log.append(&rec(s, "train", 10.0 - s as f64)).unwrap();
        }
        log.append(&rec(4, "val", 6.5)).unwrap();
        let log = MetricsLog::open(dir.path(), 4, false).unwrap();
        let r = read(log.path()).unwrap();
        assert_eq!(r.iter().map(|x| x.step).max(), Some(4));
        assert_eq!(r.len(), 5);
        plot(&r, &dir.path().join("loss.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
    }

    /// A task's row has its metrics as top-level keys and no loss; it reads back as written and
    /// is drawn in the accuracy panel.
    #[test]
    fn task_rows_round_trip_and_are_plotted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), 0, false).unwrap();
        log.append(&rec(2, "train", 9.0)).unwrap();
        let mut row = Record::loss(2, "hellaswag", f64::NAN, 0);
        row.scores = [("acc", 0.25), ("acc_norm", 0.5), ("n", 8.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        log.append(&row).unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(line["acc_norm"], 0.5);
        assert!(line.get("loss").is_none(), "{line}");
        let back = read(log.path()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].scores, row.scores);
        assert!(back[1].loss.is_nan());
        plot(&back, &dir.path().join("loss.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(svg.contains("hellaswag acc_norm"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 3);
    }
}
