//! Stage 1: each input file → `part-NNNNN.tokens` (uint16 tokens, EOT before each document) and
//! `part-NNNNN.docs` (one record per document: token count, text bytes, hashes, metadata), then
//! `part-NNNNN.json`, the completion marker, written last. Documents are processed in parallel
//! batches whose results are collected in order.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::{minhash_params, work_dir, Counts, RunOptions};
use crate::clean::clean_owned;
use crate::config::{PrepareConfig, PreparePlan, Utf8Policy};
use crate::dedup::{key_hashes, MinHasher};
use crate::error::{DataError, IoContext, Result};
use crate::io::{write_atomic, AtomicFile, Committer};
use crate::progress::{Progress, Snapshot};
use crate::readers::{extract_html, Body, DocReader, Fields, Format, Record};
use crate::reddit::url as urlcheck;
use crate::tokenizer::{encode_ordinary, EOT};
use crate::OnError;

/// Documents are processed in batches of about this many raw bytes: big enough to keep every
/// core busy, small enough that memory stays flat whatever the corpus size.
const BATCH_BYTES: usize = 8 << 20;
const BATCH_DOCS: usize = 4096;

/// Seed of the split hash, different from the dedup hash so the val choice is independent of it.
const SPLIT_SEED: u64 = 0x7661_6c5f_7370_6c69;

/// The completion marker of one input's part files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartDone {
    pub index: usize,
    pub input: String,
    pub input_bytes: u64,
    pub input_mtime_ns: u128,
    pub settings: String,
    pub documents: u64,
    pub tokens: u64,
    pub counts: Counts,
}

/// Paths of part `i`'s files.
pub(super) fn part_paths(out_dir: &Path, i: usize) -> (PathBuf, PathBuf, PathBuf) {
    let w = work_dir(out_dir);
    (
        w.join(format!("part-{i:05}.tokens")),
        w.join(format!("part-{i:05}.docs")),
        w.join(format!("part-{i:05}.json")),
    )
}

/// Hash of the settings that change stage 1's output.
fn settings_fingerprint(cfg: &PrepareConfig) -> String {
    let s = serde_json::json!({
        "v": env!("CARGO_PKG_VERSION"),
        // The .docs record layout: 2 = MinHash signatures (u16 each) instead of band keys.
        "docs_format": 2,
        "text_field": cfg.text_field, "html_field": cfg.html_field, "min_tokens": cfg.min_tokens,
        "drop_url_domains": cfg.drop_url_domains, "limit_documents": cfg.limit_documents, "dedup": cfg.dedup, "invalid_utf8": cfg.invalid_utf8,
        "on_error": cfg.on_error,
    });
    format!("{:016x}", xxh3_64(s.to_string().as_bytes()))
}

fn input_identity(path: &Path) -> Result<(u64, u128)> {
    let md = std::fs::metadata(path).at(path)?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((md.len(), mtime))
}

/// Identifies a whole run: every setting that changes the output plus every input's identity.
pub(super) fn run_fingerprint(plan: &PreparePlan) -> Result<String> {
    let mut cfg = plan.config.clone();
    cfg.threads = 0;
    cfg.keep_work = false;
    let mut s = serde_json::to_string(&cfg).expect("config serialises");
    for (p, _) in &plan.inputs {
        let (len, mtime) = input_identity(p)?;
        s.push_str(&format!("|{}|{len}|{mtime}", p.display()));
    }
    Ok(format!("{:016x}", xxh3_64(s.as_bytes())))
}

/// A document's result in stage 1.
enum Outcome {
    Kept {
        tokens: Vec<u8>,
        text_bytes: u64,
        exact: u128,
        split: u64,
        sig: Vec<u16>,
        meta: Option<String>,
    },
    Dropped(fn(&mut Counts)),
}

struct Processed {
    outcome: Outcome,
    /// Per-document changes, as a partial Counts.
    changes: Counts,
}

/// Everything a worker needs, shared read-only.
struct Ctx<'a> {
    cfg: &'a PrepareConfig,
    hasher: MinHasher,
}

fn process(rec: Record, ctx: &Ctx) -> Processed {
    let mut changes = Counts::default();
    let drop = |f: fn(&mut Counts), changes: Counts| Processed {
        outcome: Outcome::Dropped(f),
        changes,
    };
    let cfg = ctx.cfg;
    // Blocked URLs first: no point extracting or tokenising a Wikipedia page.
    if let Some(parts) = rec.url.as_deref().and_then(urlcheck::parse) {
        if urlcheck::host_blocked(&parts.host, &cfg.drop_url_domains) {
            return drop(|c| c.blocked_url += 1, changes);
        }
    }
    let (raw, is_html) = match rec.body {
        Body::Text(t) => (t, false),
        Body::Html(h) => (h, true),
        Body::InvalidUtf8 { bytes, html } => match cfg.invalid_utf8 {
            Utf8Policy::Drop => return drop(|c| c.invalid_utf8 += 1, changes),
            Utf8Policy::Repair => {
                changes.utf8_repaired = 1;
                (String::from_utf8_lossy(&bytes).into_owned(), html)
            }
        },
    };
    let text = if is_html {
        match extract_html(&raw, rec.url.as_deref()) {
            Some(t) => {
                changes.html_extracted = 1;
                t
            }
            None => return drop(|c| c.html_no_content += 1, changes),
        }
    } else {
        raw
    };
    let (text, report) = clean_owned(text);
    changes.nfc_changed = report.nfc_changed as u64;
    changes.controls_removed = report.controls_removed as u64;
    if text.trim().is_empty() {
        return drop(|c| c.empty += 1, changes);
    }
    let ids = encode_ordinary(&text);
    if (ids.len() as u64) < cfg.min_tokens {
        return drop(|c| c.too_short += 1, changes);
    }
    let mut tokens = Vec::with_capacity(2 * (ids.len() + 1));
    tokens.extend_from_slice(&(EOT as u16).to_le_bytes());
    for id in ids {
        // r50k ids are < 50257 < 65536, so uint16 is lossless (llm.c's format assumes it too).
        tokens.extend_from_slice(&(id as u16).to_le_bytes());
    }
    let (exact, split) = key_hashes(&text, SPLIT_SEED);
    let sig = if cfg.dedup.near {
        ctx.hasher.signature(&text)
    } else {
        Vec::new()
    };
    Processed {
        outcome: Outcome::Kept {
            tokens,
            text_bytes: text.len() as u64,
            exact,
            split,
            sig,
            meta: rec.meta,
        },
        changes,
    }
}

/// Run stage 1 over every input not already done. `None` if stopped early on request.
pub(super) fn run(plan: &PreparePlan, opts: &RunOptions) -> Result<Option<Vec<PartDone>>> {
    let cfg = &plan.config;
    crate::io::create_dir_all(&work_dir(&cfg.out_dir))?;
    let settings = settings_fingerprint(cfg);
    let ctx = Ctx {
        cfg,
        hasher: MinHasher::new(minhash_params(cfg)),
    };
    let total: u64 = plan
        .inputs
        .iter()
        .map(|(p, _)| input_identity(p).map_or(0, |i| i.0))
        .sum();
    let mut progress = Progress::new("prepare", total, opts.quiet);
    let mut snap = Snapshot::default();
    // Parts finished by an earlier run, found first so that the input after the current one
    // (the next not done) can be opened while the current one's last batch is processed.
    let mut finished = Vec::with_capacity(plan.inputs.len());
    for (i, (path, _)) in plan.inputs.iter().enumerate() {
        let (len, mtime) = input_identity(path)?;
        let (tok_p, _, json_p) = part_paths(&cfg.out_dir, i);
        finished.push(load_done(&json_p, &tok_p).filter(|prev| {
            prev.input == path.display().to_string()
                && prev.input_bytes == len
                && prev.input_mtime_ns == mtime
                && prev.settings == settings
        }));
    }
    let mut done = Vec::with_capacity(plan.inputs.len());
    // A part's files are made durable (and its marker written after them) in the background
    // while the next input is processed; all of it before stage 2 reads them.
    let mut committer = Committer::start()?;
    // The first input to do is opened while the tokeniser's tables are built (~60 ms, one
    // thread), so neither waits for the other.
    let mut prefetched: Option<(usize, Result<Opened>)> = None;
    if let Some(j) = finished.iter().position(Option::is_none) {
        let (path, format) = &plan.inputs[j];
        let ((), opened) = rayon::join(crate::pretokenize::warm_up, || {
            Opened::open(path, *format, cfg)
        });
        prefetched = Some((j, opened));
    }
    for (i, (path, format)) in plan.inputs.iter().enumerate() {
        if opts.stop_after_inputs == Some(i) {
            committer.finish()?;
            return Ok(None);
        }
        let (len, mtime) = input_identity(path)?;
        let (tok_p, docs_p, json_p) = part_paths(&cfg.out_dir, i);
        if let Some(prev) = finished[i].take() {
            snap.input_bytes += len;
            snap.kept += prev.documents;
            snap.tokens += prev.tokens;
            done.push(prev);
            continue;
        }
        let opened = match prefetched.take() {
            Some((j, opened)) if j == i => opened,
            _ => Opened::open(path, *format, cfg),
        };
        let next = (i + 1..plan.inputs.len())
            .find(|&j| finished[j].is_none())
            .map(|j| (j, plan.inputs[j].0.as_path(), plan.inputs[j].1));
        let written = process_input(
            opened,
            next.map(|(_, p, f)| (p, f)),
            &ctx,
            &tok_p,
            &docs_p,
            &mut progress,
            &mut snap,
        )?;
        prefetched = next.zip(written.next).map(|((j, _, _), o)| (j, o));
        let counts = written.counts;
        let part = PartDone {
            index: i,
            input: path.display().to_string(),
            input_bytes: len,
            input_mtime_ns: mtime,
            settings: settings.clone(),
            documents: counts.kept,
            tokens: written.tokens,
            counts,
        };
        let marker = serde_json::to_vec_pretty(&part).expect("serialises");
        let [tok_f, docs_f] = written.files;
        committer.submit(Box::new(move || {
            tok_f.commit()?;
            docs_f.commit()?;
            write_atomic(&json_p, &marker)
        }))?;
        done.push(part);
    }
    committer.finish()?;
    progress.finish();
    Ok(Some(done))
}

/// A marker counts only if it parses and its tokens file has the size it claims.
fn load_done(json: &Path, tokens: &Path) -> Option<PartDone> {
    let d: PartDone = serde_json::from_slice(&std::fs::read(json).ok()?).ok()?;
    (std::fs::metadata(tokens).ok()?.len() == 2 * d.tokens).then_some(d)
}

/// An input opened and its first batch read (possibly ahead of its turn).
struct Opened {
    reader: DocReader,
    first: Result<Batch>,
    /// What is left of the `limit_documents` budget after the first batch.
    remaining: Option<u64>,
}

impl Opened {
    /// `Err` only when the input cannot be opened; a bad first batch is kept in `first`.
    fn open(path: &Path, format: Format, cfg: &PrepareConfig) -> Result<Self> {
        let fields = Fields {
            text: cfg.text_field.clone(),
            html: cfg.html_field.clone(),
        };
        let mut reader = DocReader::open(path, format, &fields)?;
        let mut remaining = cfg.limit_documents;
        let first = read_batch(&mut reader, cfg.on_error, &mut remaining);
        Ok(Self {
            reader,
            first,
            remaining,
        })
    }
}

/// One input's results: its part files, written but not yet committed (the caller queues
/// that), and the next input opened, if it was.
struct Written {
    counts: Counts,
    tokens: u64,
    files: [AtomicFile; 2],
    next: Option<Result<Opened>>,
}

/// Read one input in batches, process each batch in parallel while the next is read, and write
/// the kept documents in order. While the last batch is processed, `next` (the following input
/// to do) is opened and its first batch read: without that, reading and parsing each input's
/// first batch left all but one core idle (a whole input, for inputs under one batch).
fn process_input(
    opened: Result<Opened>,
    next: Option<(&Path, Format)>,
    ctx: &Ctx,
    tok_p: &Path,
    docs_p: &Path,
    progress: &mut Progress,
    snap: &mut Snapshot,
) -> Result<Written> {
    let cfg = ctx.cfg;
    let mut counts = Counts::default();
    let Opened {
        mut reader,
        first,
        mut remaining,
    } = match opened {
        Ok(o) => o,
        Err(e) if cfg.on_error == OnError::Skip => {
            eprintln!("warning: skipping input: {e}");
            counts.input_errors = 1;
            return Ok(Written {
                counts,
                tokens: 0,
                files: [AtomicFile::create(tok_p)?, AtomicFile::create(docs_p)?],
                next: None,
            });
        }
        Err(e) => return Err(e),
    };
    let mut tok_out = AtomicFile::create(tok_p)?;
    let mut docs_out = AtomicFile::create(docs_p)?;
    let base_input = snap.input_bytes;
    let mut batch = first?;
    let mut next_opened = None;
    let mut tokens_written = 0;
    counts.add(&batch.counts);
    while !batch.records.is_empty() {
        let records = std::mem::take(&mut batch.records);
        let stopped = batch.stopped;
        let (results, next_batch) = rayon::join(
            || {
                records
                    .into_par_iter()
                    .map(|r| process(r, ctx))
                    .collect::<Vec<_>>()
            },
            || {
                if stopped {
                    next_opened = next.map(|(p, f)| Opened::open(p, f, cfg));
                    Ok(Batch::default())
                } else {
                    read_batch(&mut reader, cfg.on_error, &mut remaining)
                }
            },
        );
        for p in results {
            counts.add(&p.changes);
            match p.outcome {
                Outcome::Dropped(f) => f(&mut counts),
                Outcome::Kept {
                    tokens,
                    text_bytes,
                    exact,
                    split,
                    sig,
                    meta,
                } => {
                    counts.kept += 1;
                    snap.tokens += tokens.len() as u64 / 2;
                    tok_out.write_all(&tokens).at(tok_p)?;
                    tokens_written += tokens.len() as u64 / 2;
                    write_doc_record(
                        &mut docs_out,
                        docs_p,
                        tokens.len() as u64 / 2,
                        text_bytes,
                        exact,
                        split,
                        &sig,
                        meta.as_deref(),
                    )?;
                }
            }
        }
        snap.text_bytes += batch.raw_bytes;
        batch = next_batch?;
        counts.add(&batch.counts);
        snap.input_bytes = base_input + reader.consumed.load(Ordering::Relaxed);
        progress.update(&Snapshot {
            kept: snap.kept + counts.kept,
            dropped: snap.dropped + counts.dropped(),
            ..*snap
        });
    }
    snap.kept += counts.kept;
    snap.dropped += counts.dropped();
    Ok(Written {
        counts,
        tokens: tokens_written,
        files: [tok_out, docs_out],
        next: next_opened,
    })
}

#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    raw_bytes: u64,
    /// The file ended early (skip policy); no further reads.
    stopped: bool,
    counts: Counts,
}

/// Read up to one batch; `remaining` (the `limit_documents` budget left for this input) counts
/// down with every record read and ends the input at zero.
fn read_batch(
    reader: &mut DocReader,
    on_error: OnError,
    remaining: &mut Option<u64>,
) -> Result<Batch> {
    let mut b = Batch::default();
    let mut bytes = 0usize;
    while bytes < BATCH_BYTES && b.records.len() < BATCH_DOCS {
        if *remaining == Some(0) {
            b.stopped = true;
            b.counts.input_files = 1;
            break;
        }
        if let Some(r) = remaining.as_mut() {
            *r -= 1;
        }
        match reader.next_record() {
            None => {
                b.stopped = true;
                b.counts.input_files = 1;
                break;
            }
            Some(Ok(r)) => {
                let n = match &r.body {
                    Body::Text(t) | Body::Html(t) => t.len(),
                    Body::InvalidUtf8 { bytes, .. } => bytes.len(),
                };
                bytes += n;
                b.counts.documents += 1;
                b.counts.raw_bytes += n as u64;
                b.records.push(r);
            }
            Some(Err(e @ DataError::BadRecord { .. })) => {
                b.counts.documents += 1;
                b.counts.malformed += 1;
                if on_error == OnError::Fail {
                    return Err(e);
                }
                if b.counts.malformed <= 3 {
                    eprintln!("warning: skipping record: {e}");
                }
            }
            Some(Err(e)) => {
                if on_error == OnError::Fail {
                    return Err(e);
                }
                eprintln!("warning: input ends early, keeping the records before the damage: {e}");
                b.counts.input_errors = 1;
                b.stopped = true;
                break;
            }
        }
    }
    b.raw_bytes = b.counts.raw_bytes;
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
fn write_doc_record(
    out: &mut AtomicFile,
    p: &Path,
    ntok: u64,
    text_bytes: u64,
    exact: u128,
    split: u64,
    sig: &[u16],
    meta: Option<&str>,
) -> Result<()> {
    let mut rec = Vec::with_capacity(48 + 2 * sig.len() + meta.map_or(0, str::len));
    rec.extend_from_slice(&(ntok as u32).to_le_bytes());
    rec.extend_from_slice(&text_bytes.to_le_bytes());
    rec.extend_from_slice(&exact.to_le_bytes());
    rec.extend_from_slice(&split.to_le_bytes());
    rec.extend_from_slice(&(sig.len() as u16).to_le_bytes());
    for b in sig {
        rec.extend_from_slice(&b.to_le_bytes());
    }
    let m = meta.unwrap_or("").as_bytes();
    rec.extend_from_slice(&(m.len() as u32).to_le_bytes());
    rec.extend_from_slice(m);
    out.write_all(&rec).at(p)
}

/// One record of a `.docs` file.
pub(super) struct DocEntry {
    pub ntok: u64,
    pub text_bytes: u64,
    pub exact: u128,
    pub split: u64,
    /// The MinHash signature (empty when near-duplicate removal is off).
    pub sig: Vec<u16>,
    pub meta: Option<String>,
}

/// Sequential reader of a `.docs` file.
pub(super) struct DocEntries {
    path: PathBuf,
    r: BufReader<File>,
}

impl DocEntries {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            r: BufReader::with_capacity(1 << 20, File::open(path).at(path)?),
        })
    }

    pub fn next_entry(&mut self) -> Result<Option<DocEntry>> {
        let mut head = [0u8; 4 + 8 + 16 + 8 + 2];
        match self.r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).at(&self.path),
        }
        let ntok = u32::from_le_bytes(head[0..4].try_into().expect("4")) as u64;
        let text_bytes = u64::from_le_bytes(head[4..12].try_into().expect("8"));
        let exact = u128::from_le_bytes(head[12..28].try_into().expect("16"));
        let split = u64::from_le_bytes(head[28..36].try_into().expect("8"));
        let nb = u16::from_le_bytes(head[36..38].try_into().expect("2")) as usize;
        let mut rest = vec![0u8; 2 * nb + 4];
        self.r.read_exact(&mut rest).at(&self.path)?;
        let sig = rest[..2 * nb]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes(c.try_into().expect("2")))
            .collect();
        let mlen = u32::from_le_bytes(rest[2 * nb..].try_into().expect("4")) as usize;
        let meta = if mlen > 0 {
            let mut m = vec![0u8; mlen];
            self.r.read_exact(&mut m).at(&self.path)?;
            Some(String::from_utf8(m).map_err(|_| DataError::BadInput {
                path: self.path.clone(),
                message: "corrupt work file".into(),
                hint: "delete the .work directory and re-run".into(),
            })?)
        } else {
            None
        };
        Ok(Some(DocEntry {
            ntok,
            text_bytes,
            exact,
            split,
            sig,
            meta,
        }))
    }
}
