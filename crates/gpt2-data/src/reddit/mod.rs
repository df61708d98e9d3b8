//! `gpt2 urls`: WebText's link selection from pushshift submission dumps.
//!
//! WebText is "all outbound links from Reddit which received at least 3 karma" (GPT-2 paper §2.1).
//! Two readings exist: per submission (jcpeterson/openwebtext keeps a submission whose score ≥ 3)
//! and per URL (EleutherAI/openwebtext2 sums the scores of every submission of a URL). Both are
//! here as [`KarmaMode`]. Dumps are read as streams; memory grows only with the number of
//! distinct URLs, which is the output.
//!
//! Several dump files are read in parallel (`threads`), each into its own partial filter; the
//! partials are merged in input order with the same rules as one sequential pass (earliest
//! submission wins the displayed URL, ties to the earlier file; scores, counts and subreddits
//! add up), so the output is byte-identical for any thread count. One file is one stream
//! (zstd/xz/bz2 decode serially), so a single dump runs on one thread.

pub mod url;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder, TimestampSecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, IoContext, Result};
use crate::io::{open_reader, stream_error, AtomicFile};
use crate::OnError;

/// How karma is counted against the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KarmaMode {
    /// A URL is kept if one of its submissions scored ≥ the threshold (jcpeterson/openwebtext).
    #[default]
    Submission,
    /// A URL is kept if the scores of all its submissions sum to ≥ the threshold (openwebtext2).
    Sum,
}

/// Settings of the link filter.
#[derive(Debug, Clone)]
pub struct UrlFilterConfig {
    /// Karma threshold (WebText: 3).
    pub min_karma: i64,
    pub mode: KarmaMode,
    /// URLs shorter than this many characters are dropped (jcpeterson: "http://" + 3).
    pub min_url_chars: usize,
    pub blocked_domains: Vec<String>,
    pub blocked_extensions: Vec<String>,
    pub on_error: OnError,
    /// Dump files read at the same time (0: one per core). Does not change the output.
    pub threads: usize,
}

impl Default for UrlFilterConfig {
    fn default() -> Self {
        Self {
            min_karma: 3,
            mode: KarmaMode::Submission,
            min_url_chars: 10,
            blocked_domains: url::DEFAULT_BLOCKED_DOMAINS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            blocked_extensions: url::DEFAULT_BLOCKED_EXTENSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            on_error: OnError::Skip,
            threads: 0,
        }
    }
}

/// Why a URL string is dropped, before any karma or dedup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlDrop {
    ShortUrl,
    BadUrl,
    BlockedDomain,
    BlockedExtension,
}

impl UrlDrop {
    /// The counter's name in [`UrlCounts`].
    pub fn name(self) -> &'static str {
        match self {
            Self::ShortUrl => "short_url",
            Self::BadUrl => "bad_url",
            Self::BlockedDomain => "blocked_domain",
            Self::BlockedExtension => "blocked_extension",
        }
    }
}

impl UrlFilterConfig {
    /// The URL checks in order (length, syntax, domain, extension); the normalised URL if it passes.
    pub fn check_url<'a>(&self, raw: &'a str) -> Result<(url::UrlParts<'a>, String), UrlDrop> {
        if raw.chars().count() < self.min_url_chars {
            return Err(UrlDrop::ShortUrl);
        }
        let parts = url::parse(raw).ok_or(UrlDrop::BadUrl)?;
        if url::host_blocked(&parts.host, &self.blocked_domains) {
            return Err(UrlDrop::BlockedDomain);
        }
        if url::extension_blocked(parts.path, &self.blocked_extensions) {
            return Err(UrlDrop::BlockedExtension);
        }
        let key = url::normalize(&parts);
        Ok((parts, key))
    }
}

/// Per-reason counts. Every submission read lands in exactly one of the drop reasons or `passed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlCounts {
    pub submissions: u64,
    pub malformed: u64,
    pub self_post: u64,
    pub over_18: u64,
    pub no_url: u64,
    pub short_url: u64,
    pub bad_url: u64,
    pub blocked_domain: u64,
    pub blocked_extension: u64,
    pub passed: u64,
    pub unique_urls: u64,
    pub duplicate_submissions: u64,
    pub low_karma: u64,
    pub kept: u64,
}

/// One output row: a distinct normalised URL and what Reddit said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRow {
    /// The URL as first submitted.
    pub url: String,
    pub normalized_url: String,
    /// Max score (submission mode) or summed score (sum mode).
    pub karma: i64,
    pub num_submissions: u64,
    pub subreddits: Vec<String>,
    /// Earliest `created_utc`, seconds since the epoch.
    pub first_seen: i64,
}

/// The fields of a pushshift submission we use; the rest are ignored. Types vary across years
/// of dumps, so each field is taken as any JSON value and interpreted leniently.
#[derive(Deserialize)]
struct Submission {
    #[serde(default)]
    url: serde_json::Value,
    #[serde(default)]
    score: serde_json::Value,
    #[serde(default)]
    is_self: serde_json::Value,
    #[serde(default)]
    over_18: serde_json::Value,
    #[serde(default)]
    subreddit: serde_json::Value,
    #[serde(default)]
    created_utc: Option<serde_json::Value>,
}

struct Group {
    url: String,
    first_seen: i64,
    max_score: i64,
    sum_score: i64,
    n: u64,
    subreddits: Vec<String>,
}

/// The filter's state across input files.
pub struct UrlFilter {
    cfg: UrlFilterConfig,
    counts: UrlCounts,
    groups: HashMap<String, Group>,
    /// First few skipped records, for the warning printed at the end.
    pub skipped: Vec<String>,
}

impl UrlFilter {
    pub fn new(cfg: UrlFilterConfig) -> Self {
        Self {
            cfg,
            counts: UrlCounts::default(),
            groups: HashMap::new(),
            skipped: Vec::new(),
        }
    }

    /// Stream one dump (any supported compression) through the filter.
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let mut reader = open_reader(path, None)?;
        let mut line = Vec::new();
        let mut lineno = 0u64;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    let err = stream_error(path, e, &format!("read error after line {lineno}"));
                    match self.cfg.on_error {
                        OnError::Fail => return Err(err),
                        OnError::Skip => {
                            self.note_skip(format!("{err}"));
                            break;
                        }
                    }
                }
            }
            lineno += 1;
            // A blank line is counted as malformed (it is not a submission), like any bad line.
            let trimmed = line.trim_ascii();
            self.counts.submissions += 1;
            // Only a JSON object is a submission (serde would also accept an array for a struct).
            let parsed =
                serde_json::from_slice::<serde_json::Value>(trimmed).and_then(|v| match v {
                    serde_json::Value::Object(_) => serde_json::from_value::<Submission>(v),
                    _ => Err(serde::de::Error::custom("not a JSON object")),
                });
            match parsed {
                Ok(s) => self.add(s),
                Err(e) => {
                    self.counts.malformed += 1;
                    let err = DataError::BadRecord {
                        path: path.to_path_buf(),
                        line: lineno,
                        message: format!("not a submission JSON object: {e}"),
                    };
                    match self.cfg.on_error {
                        OnError::Fail => return Err(err),
                        OnError::Skip => {
                            self.note_skip(format!("{}:{lineno}: {e}", path.display()))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Fold in the filter of a later input, as if its submissions had been read after ours.
    pub fn merge(&mut self, later: UrlFilter) {
        let (a, b) = (&mut self.counts, later.counts);
        a.submissions += b.submissions;
        a.malformed += b.malformed;
        a.self_post += b.self_post;
        a.over_18 += b.over_18;
        a.no_url += b.no_url;
        a.short_url += b.short_url;
        a.bad_url += b.bad_url;
        a.blocked_domain += b.blocked_domain;
        a.blocked_extension += b.blocked_extension;
        a.passed += b.passed;
        for msg in later.skipped {
            self.note_skip(msg);
        }
        for (key, g) in later.groups {
            match self.groups.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(g);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let m = o.get_mut();
                    // Sequentially, a later submission replaces the URL only when strictly
                    // earlier, so ties stay with the earlier file.
                    if g.first_seen < m.first_seen {
                        m.first_seen = g.first_seen;
                        m.url = g.url;
                    }
                    m.max_score = m.max_score.max(g.max_score);
                    m.sum_score += g.sum_score;
                    m.n += g.n;
                    for sr in g.subreddits {
                        if !m.subreddits.contains(&sr) {
                            m.subreddits.push(sr);
                        }
                    }
                }
            }
        }
    }

    fn note_skip(&mut self, msg: String) {
        if self.skipped.len() < 10 {
            self.skipped.push(msg);
        }
    }

    fn add(&mut self, s: Submission) {
        let c = &mut self.counts;
        let t = serde_json::Value::Bool(true);
        if s.is_self == t {
            c.self_post += 1;
            return;
        }
        if s.over_18 == t {
            c.over_18 += 1;
            return;
        }
        let raw = match &s.url {
            serde_json::Value::String(u) if !u.is_empty() => u.as_str(),
            serde_json::Value::Null | serde_json::Value::String(_) => {
                c.no_url += 1;
                return;
            }
            _ => {
                c.bad_url += 1;
                return;
            }
        };
        let key = match self.cfg.check_url(raw) {
            Ok((_, key)) => key,
            Err(reason) => {
                match reason {
                    UrlDrop::ShortUrl => c.short_url += 1,
                    UrlDrop::BadUrl => c.bad_url += 1,
                    UrlDrop::BlockedDomain => c.blocked_domain += 1,
                    UrlDrop::BlockedExtension => c.blocked_extension += 1,
                }
                return;
            }
        };
        c.passed += 1;
        let score = s
            .score
            .as_i64()
            .or_else(|| s.score.as_f64().map(|f| f as i64))
            .unwrap_or(0);
        let created = created_utc(s.created_utc.as_ref());
        let g = self.groups.entry(key).or_insert_with(|| Group {
            url: raw.to_string(),
            first_seen: created,
            max_score: score,
            sum_score: 0,
            n: 0,
            subreddits: Vec::new(),
        });
        if created < g.first_seen {
            g.first_seen = created;
            g.url = raw.to_string();
        }
        g.max_score = g.max_score.max(score);
        g.sum_score += score;
        g.n += 1;
        if let serde_json::Value::String(sr) = s.subreddit {
            if !g.subreddits.contains(&sr) {
                g.subreddits.push(sr);
            }
        }
    }

    /// Apply the karma rule; rows sorted by normalised URL.
    pub fn finish(mut self) -> (Vec<UrlRow>, UrlCounts, Vec<String>) {
        let c = &mut self.counts;
        c.unique_urls = self.groups.len() as u64;
        c.duplicate_submissions = c.passed - c.unique_urls;
        let sorted: BTreeMap<String, Group> = self.groups.into_iter().collect();
        let mut rows = Vec::new();
        for (key, mut g) in sorted {
            let karma = match self.cfg.mode {
                KarmaMode::Submission => g.max_score,
                KarmaMode::Sum => g.sum_score,
            };
            if karma < self.cfg.min_karma {
                c.low_karma += 1;
                continue;
            }
            g.subreddits.sort();
            rows.push(UrlRow {
                url: g.url,
                normalized_url: key,
                karma,
                num_submissions: g.n,
                subreddits: g.subreddits,
                first_seen: g.first_seen,
            });
        }
        c.kept = rows.len() as u64;
        (rows, self.counts, self.skipped)
    }
}

/// pushshift stores `created_utc` as an integer, a float, or a numeric string, depending on year.
fn created_utc(v: Option<&serde_json::Value>) -> i64 {
    match v {
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(i64::MAX),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(|f| f as i64)
            .unwrap_or(i64::MAX),
        _ => i64::MAX,
    }
}

/// Run the filter over `inputs` in order and write `out` (Parquet), `out` with `.counts.json`,
/// and optionally a plain URL list for a scraper.
pub fn run_urls(
    inputs: &[PathBuf],
    out: &Path,
    txt: Option<&Path>,
    cfg: UrlFilterConfig,
) -> Result<(UrlCounts, Vec<String>)> {
    let (rows, counts, skipped) = filter_files(inputs, cfg)?.finish();
    write_parquet(out, &rows)?;
    let counts_path = counts_path(out);
    let json = serde_json::to_vec_pretty(&counts).expect("counts serialise");
    crate::io::write_atomic(&counts_path, &json)?;
    if let Some(txt) = txt {
        let mut f = AtomicFile::create(txt)?;
        for r in &rows {
            writeln!(f, "{}", r.url).at(txt)?;
        }
        f.commit()?;
    }
    Ok((counts, skipped))
}

/// Read `inputs` with `cfg.threads` files at a time and merge the partial filters in input
/// order. Files are taken in groups of `threads`, so at most that many partial maps exist besides
/// the merged one. With `on_error: fail`, the error is the one the first failing file (in input
/// order) gives, as in a sequential pass.
pub fn filter_files(inputs: &[PathBuf], cfg: UrlFilterConfig) -> Result<UrlFilter> {
    use rayon::prelude::*;
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    };
    let mut merged = UrlFilter::new(cfg.clone());
    if threads <= 1 {
        for path in inputs {
            merged.add_file(path)?;
        }
        return Ok(merged);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| DataError::BadInput {
            path: PathBuf::from("<threads>"),
            message: format!("cannot start {threads} reader threads: {e}"),
            hint: "pass a smaller --threads".into(),
        })?;
    for group in inputs.chunks(threads) {
        let parts: Vec<(UrlFilter, Result<()>)> = pool.install(|| {
            group
                .par_iter()
                .map(|path| {
                    let mut f = UrlFilter::new(cfg.clone());
                    let r = f.add_file(path);
                    (f, r)
                })
                .collect()
        });
        for (part, r) in parts {
            r?;
            merged.merge(part);
        }
    }
    Ok(merged)
}

/// Where the counts of a run writing `out` are saved.
pub fn counts_path(out: &Path) -> PathBuf {
    out.with_extension("counts.json")
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("url", DataType::Utf8, false),
        Field::new("normalized_url", DataType::Utf8, false),
        Field::new("karma", DataType::Int64, false),
        Field::new("num_submissions", DataType::Int64, false),
        Field::new(
            "subreddits",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            "first_seen",
            DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
            false,
        ),
    ])
}

/// Write rows as one Parquet file (zstd-compressed), atomically.
pub fn write_parquet(out: &Path, rows: &[UrlRow]) -> Result<()> {
    let pq = |e: &dyn std::fmt::Display| DataError::Parquet {
        path: out.to_path_buf(),
        message: e.to_string(),
    };
    let schema = Arc::new(schema());
    let mut subs = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for s in &r.subreddits {
            subs.values().append_value(s);
        }
        subs.append(true);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.url.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.normalized_url.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.karma))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.num_submissions as i64),
        )),
        Arc::new(subs.finish()),
        Arc::new(
            TimestampSecondArray::from_iter_values(rows.iter().map(|r| r.first_seen))
                .with_timezone("UTC"),
        ),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| pq(&e))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let tmp = crate::io::tmp_path(out);
    let file = File::create(&tmp).at(&tmp)?;
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| pq(&e))?;
    w.write(&batch).map_err(|e| pq(&e))?;
    let file = w.into_inner().map_err(|e| pq(&e))?;
    file.sync_all().at(&tmp)?;
    std::fs::rename(&tmp, out).at(out)?;
    crate::io::sync_dir(out)
}

/// Read a URL Parquet file written by [`write_parquet`] (used by tests and by `prepare` to join
/// karma metadata).
pub fn read_parquet(path: &Path) -> Result<Vec<UrlRow>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampSecondType};
    let pq = |e: &dyn std::fmt::Display| DataError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::open(path).at(path)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| pq(&e))?
        .build()
        .map_err(|e| pq(&e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.map_err(|e| pq(&e))?;
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| pq(&format!("missing column `{name}`")))
        };
        let (url, norm, karma, n, subs, first) = (
            col("url")?,
            col("normalized_url")?,
            col("karma")?,
            col("num_submissions")?,
            col("subreddits")?,
            col("first_seen")?,
        );
        let (url, norm) = (url.as_string::<i32>(), norm.as_string::<i32>());
        let (karma, n) = (
            karma.as_primitive::<Int64Type>(),
            n.as_primitive::<Int64Type>(),
        );
        let first = first.as_primitive::<TimestampSecondType>();
        let subs = subs.as_list::<i32>();
        for i in 0..b.num_rows() {
            let s = subs.value(i);
            let s = s.as_string::<i32>();
            rows.push(UrlRow {
                url: url.value(i).to_string(),
                normalized_url: norm.value(i).to_string(),
                karma: karma.value(i),
                num_submissions: n.value(i) as u64,
                subreddits: (0..s.len()).map(|j| s.value(j).to_string()).collect(),
                first_seen: first.value(i),
            });
        }
    }
    Ok(rows)
}
