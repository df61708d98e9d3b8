//! Input readers: every supported input becomes a stream of [`Record`]s in file order.
//!
//! - JSON lines (plain, `.gz`, `.zst`, `.xz`, `.bz2`): a `text` field (or an `html` field, which
//!   goes through main-text extraction); every other field is kept as metadata (url, karma, …).
//! - Parquet with a `text` column (the Hugging Face OpenWebText layout); other scalar columns are
//!   metadata.
//! - `.txt` files: one document each. `.html`/`.htm` files: one document each, extracted.
//! - A directory: the supported files below it, recursively, in sorted path order.
//!
//! Each input file is one unit of work for `prepare`'s resume.

use std::fs::File;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{DataError, IoContext, Result};
use crate::io::{open_reader, stream_error, strip_compression};

/// How an input file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Parquet,
    Txt,
    Html,
}

impl Format {
    /// From the file name with any compression extension removed; `None` if unsupported.
    pub fn detect(path: &Path) -> Option<Self> {
        let name = strip_compression(path).to_ascii_lowercase();
        let ext = name.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "jsonl" | "json" | "ndjson" => Some(Self::Jsonl),
            "parquet" => Some(Self::Parquet),
            "txt" => Some(Self::Txt),
            "html" | "htm" => Some(Self::Html),
            _ => None,
        }
    }
}

/// Expand `paths` (files or directories) into the list of input files, in order, each with its
/// format. Problems (missing paths, unsupported files, empty directories) are all collected.
pub fn expand_inputs(paths: &[PathBuf], problems: &mut Vec<String>) -> Vec<(PathBuf, Format)> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files, problems);
            files.sort();
            let before = out.len();
            out.extend(
                files
                    .into_iter()
                    .filter_map(|f| Format::detect(&f).map(|fmt| (f, fmt))),
            );
            if out.len() == before {
                problems.push(format!("{}: directory holds no supported input (.jsonl[.gz|.zst|.xz|.bz2], .parquet, .txt, .html)", p.display()));
            }
        } else if !p.exists() {
            problems.push(format!("{}: no such file or directory", p.display()));
        } else if let Err(e) = File::open(p) {
            problems.push(format!("{}: cannot be opened: {e}", p.display()));
        } else {
            match Format::detect(p) {
                Some(fmt) => out.push((p.clone(), fmt)),
                None => problems.push(format!("{}: unsupported input; expected .jsonl (optionally .gz/.zst/.xz/.bz2), .parquet, .txt or .html", p.display())),
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, files, problems);
                } else {
                    files.push(p);
                }
            }
        }
        Err(e) => problems.push(format!("{}: cannot be listed: {e}", dir.display())),
    }
}

/// The body of a document as read, before cleaning.
#[derive(Debug, Clone)]
pub enum Body {
    Text(String),
    Html(String),
    /// Bytes that are not valid UTF-8; the `invalid_utf8` policy decides.
    InvalidUtf8 {
        bytes: Vec<u8>,
        html: bool,
    },
}

/// One document as read.
#[derive(Debug, Clone)]
pub struct Record {
    pub body: Body,
    /// The `url` field, if any.
    pub url: Option<String>,
    /// Every other field, as a JSON object string.
    pub meta: Option<String>,
}

/// Field names for JSON lines and Parquet.
#[derive(Debug, Clone)]
pub struct Fields {
    pub text: String,
    pub html: String,
}

/// A stream of records from one input file.
pub struct DocReader {
    path: PathBuf,
    inner: Inner,
    /// Compressed bytes consumed so far (for progress).
    pub consumed: Arc<AtomicU64>,
}

enum Inner {
    Jsonl {
        reader: Box<dyn BufRead + Send>,
        line: u64,
        fields: Fields,
        buf: Vec<u8>,
    },
    Whole {
        reader: Option<Box<dyn BufRead + Send>>,
        html: bool,
    },
    Parquet {
        reader: ParquetRecordBatchReader,
        batch: Option<RecordBatch>,
        next_row: usize,
        row: u64,
        text_col: usize,
    },
}

impl DocReader {
    pub fn open(path: &Path, format: Format, fields: &Fields) -> Result<Self> {
        let consumed = Arc::new(AtomicU64::new(0));
        let inner = match format {
            Format::Jsonl => Inner::Jsonl {
                reader: open_reader(path, Some(consumed.clone()))?,
                line: 0,
                fields: fields.clone(),
                buf: Vec::new(),
            },
            Format::Txt | Format::Html => Inner::Whole {
                reader: Some(open_reader(path, Some(consumed.clone()))?),
                html: format == Format::Html,
            },
            Format::Parquet => open_parquet(path, &fields.text, consumed.clone())?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            inner,
            consumed,
        })
    }

    /// The next record; `Err(BadRecord)` for one bad record (reading may go on), `Err(BadInput)`
    /// when the file itself fails (reading must stop).
    pub fn next_record(&mut self) -> Option<Result<Record>> {
        match &mut self.inner {
            Inner::Jsonl {
                reader,
                line,
                fields,
                buf,
            } => loop {
                buf.clear();
                match reader.read_until(b'\n', buf) {
                    Ok(0) => return None,
                    Ok(_) => *line += 1,
                    Err(e) => {
                        return Some(Err(stream_error(
                            &self.path,
                            e,
                            &format!("read error after line {line}"),
                        )))
                    }
                }
                if buf.trim_ascii().is_empty() {
                    continue;
                }
                return Some(parse_json_line(&self.path, *line, buf, fields));
            },
            Inner::Whole { reader, html } => {
                let mut r = reader.take()?;
                let mut bytes = Vec::new();
                if let Err(e) = r.read_to_end(&mut bytes) {
                    return Some(Err(stream_error(&self.path, e, "read error")));
                }
                let body = match String::from_utf8(bytes) {
                    Ok(s) if *html => Body::Html(s),
                    Ok(s) => Body::Text(s),
                    Err(e) => Body::InvalidUtf8 {
                        bytes: e.into_bytes(),
                        html: *html,
                    },
                };
                Some(Ok(Record {
                    body,
                    url: None,
                    meta: None,
                }))
            }
            Inner::Parquet {
                reader,
                batch,
                next_row,
                row,
                text_col,
            } => loop {
                if let Some(b) = batch.as_ref().filter(|b| *next_row < b.num_rows()) {
                    let i = *next_row;
                    *next_row += 1;
                    *row += 1;
                    return Some(parquet_record(&self.path, *row - 1, b, i, *text_col));
                }
                match reader.next()? {
                    Ok(b) => {
                        *batch = Some(b);
                        *next_row = 0;
                    }
                    Err(e) => {
                        return Some(Err(DataError::BadInput {
                            path: self.path.clone(),
                            message: format!("parquet read error after row {row}: {e}"),
                            hint: "the file may be truncated or corrupt; re-download it".into(),
                        }))
                    }
                }
            },
        }
    }
}

fn parse_json_line(path: &Path, line: u64, buf: &[u8], fields: &Fields) -> Result<Record> {
    let bad = |message: String| DataError::BadRecord {
        path: path.to_path_buf(),
        line,
        message,
    };
    let (value, invalid) = match serde_json::from_slice::<serde_json::Value>(buf) {
        Ok(v) => (v, None),
        // serde_json rejects invalid UTF-8 anywhere in the line; parse the repaired text to find
        // the fields, and keep the raw bytes so the policy can decide.
        Err(e) if std::str::from_utf8(buf).is_err() => {
            let lossy = String::from_utf8_lossy(buf);
            match serde_json::from_str::<serde_json::Value>(&lossy) {
                Ok(v) => (v, Some(())),
                Err(_) => return Err(bad(format!("not valid JSON: {e}"))),
            }
        }
        Err(e) => return Err(bad(format!("not valid JSON: {e}"))),
    };
    let serde_json::Value::Object(mut obj) = value else {
        return Err(bad("a JSON line must be an object".into()));
    };
    let (text, html) = match (obj.remove(&fields.text), obj.remove(&fields.html)) {
        (Some(serde_json::Value::String(t)), _) => (t, false),
        (_, Some(serde_json::Value::String(h))) => (h, true),
        _ => {
            return Err(bad(format!(
                "no string field `{}` (or `{}`)",
                fields.text, fields.html
            )))
        }
    };
    let url = obj.get("url").and_then(|u| u.as_str()).map(str::to_string);
    let meta = (!obj.is_empty()).then(|| serde_json::Value::Object(obj).to_string());
    let body = match (invalid, html) {
        // U+FFFD in the repaired text marks where bytes were invalid; keep them so `drop` can act.
        (Some(()), _) => Body::InvalidUtf8 {
            bytes: text.into_bytes(),
            html,
        },
        (None, true) => Body::Html(text),
        (None, false) => Body::Text(text),
    };
    Ok(Record { body, url, meta })
}

fn open_parquet(path: &Path, text_field: &str, consumed: Arc<AtomicU64>) -> Result<Inner> {
    let file = File::open(path).at(path)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bad = |message: String| {
        DataError::BadInput { path: path.to_path_buf(), message, hint: "is this a Parquet file with a text column? set `text_field` to the column holding the text".into() }
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let Some((text_col, field)) = schema.column_with_name(text_field) else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(bad(format!(
            "no `{text_field}` column (columns: {})",
            names.join(", ")
        )));
    };
    if !matches!(
        field.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Err(bad(format!(
            "column `{text_field}` has type {}, expected a string type",
            field.data_type()
        )));
    }
    let reader = builder
        .with_batch_size(1024)
        .build()
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    // Parquet reads by column chunk, not as a stream; count the whole file as consumed up front.
    consumed.store(len, std::sync::atomic::Ordering::Relaxed);
    Ok(Inner::Parquet {
        reader,
        batch: None,
        next_row: 0,
        row: 0,
        text_col,
    })
}

fn string_at(col: &dyn Array, i: usize) -> Option<String> {
    if col.is_null(i) {
        return None;
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Some(col.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Some(col.as_string_view().value(i).to_string()),
        _ => None,
    }
}

fn parquet_record(
    path: &Path,
    row: u64,
    b: &RecordBatch,
    i: usize,
    text_col: usize,
) -> Result<Record> {
    let Some(text) = string_at(b.column(text_col).as_ref(), i) else {
        return Err(DataError::BadRecord {
            path: path.to_path_buf(),
            line: row,
            message: "text is null (row numbers in Parquet errors are 0-based)".into(),
        });
    };
    let mut meta = serde_json::Map::new();
    let mut url = None;
    for (j, field) in b.schema().fields().iter().enumerate() {
        if j == text_col {
            continue;
        }
        let col = b.column(j);
        let v = if let Some(s) = string_at(col.as_ref(), i) {
            serde_json::Value::String(s)
        } else if col.is_null(i) {
            continue;
        } else {
            match arrow::util::display::array_value_to_string(col, i) {
                Ok(s) => s
                    .parse::<serde_json::Number>()
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::String(s)),
                Err(_) => continue,
            }
        };
        if field.name() == "url" {
            url = v.as_str().map(str::to_string);
        }
        meta.insert(field.name().clone(), v);
    }
    let meta = (!meta.is_empty()).then(|| serde_json::Value::Object(meta).to_string());
    Ok(Record {
        body: Body::Text(text),
        url,
        meta,
    })
}

/// Main text of an HTML page (boilerplate, navigation and scripts removed) via dom_smoothie, a
/// Rust port of Mozilla's Readability (the family of extractors Dragnet/newspaper belong to).
/// `None` when no readable content is found.
pub fn extract_html(html: &str, url: Option<&str>) -> Option<String> {
    let cfg = dom_smoothie::Config {
        text_mode: dom_smoothie::TextMode::Formatted,
        ..Default::default()
    };
    let url = url.filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    let mut r = dom_smoothie::Readability::new(html, url, Some(cfg.clone()))
        .or_else(|_| dom_smoothie::Readability::new(html, None, Some(cfg)))
        .ok()?;
    let article = r.parse().ok()?;
    let text = article.text_content.trim().to_string();
    (!text.is_empty()).then_some(text)
}
