//! Stage 2: deduplicate in input order, choose the validation documents, write the shards and,
//! last, the manifest. Reads only stage 1's part files, so it is cheap to redo after a crash.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::stage1::{part_paths, DocEntries, PartDone};
use super::{minhash_params, Counts, InputInfo, Manifest, MANIFEST, MANIFEST_FORMAT};
use crate::config::PreparePlan;
use crate::dedup::{DedupIndex, Verdict};
use crate::error::{DataError, IoContext, Result};
use crate::shard::{ShardInfo, ShardWriter};

pub(super) fn run(plan: &PreparePlan, parts: &[PartDone], fingerprint: String) -> Result<Manifest> {
    let cfg = &plan.config;
    let out = &cfg.out_dir;
    // An old manifest must never describe shards we are about to replace.
    let manifest_path = out.join(MANIFEST);
    if manifest_path.exists() {
        std::fs::remove_file(&manifest_path).at(&manifest_path)?;
    }
    remove_old_shards(out, &cfg.name)?;

    // Pass A: dedup in input order; remember (split hash, tokens) of the kept documents.
    let params = minhash_params(cfg);
    // Sized for every stage-1 document, so the index's memory per document is what the dedup
    // module documents (no growth headroom beyond hashbrown's own).
    let documents: u64 = parts.iter().map(|p| p.documents).sum();
    let mut index = DedupIndex::new(params, cfg.dedup.near, documents as usize);
    let mut counts = Counts::default();
    let mut keep = Vec::new(); // one bool per stage-1 document
    let mut kept_docs: Vec<(u64, u64)> = Vec::new();
    for part in parts {
        counts.add(&part.counts);
        let (_, docs_p, _) = part_paths(out, part.index);
        let mut entries = DocEntries::open(&docs_p)?;
        while let Some(e) = entries.next_entry()? {
            let exact = if cfg.dedup.exact {
                e.exact
            } else {
                u128::from(keep.len() as u64) << 64 | 1
            };
            let verdict = index.check_insert(exact, &e.sig);
            match verdict {
                Verdict::Unique => kept_docs.push((e.split, e.ntok)),
                Verdict::ExactDuplicate => counts.exact_duplicate += 1,
                Verdict::NearDuplicate => counts.near_duplicate += 1,
            }
            keep.push(verdict == Verdict::Unique);
        }
    }
    counts.kept = kept_docs.len() as u64;
    let checked = keep.len().max(1) as f64;
    let dedup_index_bytes = index.approx_bytes() as u64;
    drop(index);

    let val_cutoff = choose_val_cutoff(kept_docs, cfg.val_fraction, cfg.min_val_tokens);

    // Pass B: copy tokens into shards.
    let mut writers = Writers::new(out, &cfg.name, cfg.shard_tokens);
    let mut doc_i = 0usize;
    let mut inputs = Vec::with_capacity(parts.len());
    for part in parts {
        let (tok_p, docs_p, _) = part_paths(out, part.index);
        let mut entries = DocEntries::open(&docs_p)?;
        let mut tokens = BufReader::with_capacity(1 << 20, File::open(&tok_p).at(&tok_p)?);
        let mut buf = Vec::new();
        while let Some(e) = entries.next_entry()? {
            buf.resize(2 * e.ntok as usize, 0);
            tokens.read_exact(&mut buf).at(&tok_p)?;
            if keep[doc_i] {
                let val = val_cutoff.is_some_and(|c| e.split <= c);
                writers.push(
                    if val { "val" } else { "train" },
                    &buf,
                    e.text_bytes,
                    e.meta.as_deref(),
                )?;
            }
            doc_i += 1;
        }
        inputs.push(InputInfo {
            path: part.input.clone(),
            bytes: part.input_bytes,
            documents: part.documents,
            tokens: part.tokens,
        });
    }
    let shards = writers.finish()?;

    let mut config = cfg.clone();
    config.threads = 0;
    let sum = |split: &str, f: fn(&ShardInfo) -> u64| {
        shards.iter().filter(|s| s.split == split).map(f).sum()
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: 1,
        name: cfg.name.clone(),
        config,
        minhash_bands: params.bands,
        minhash_rows: params.rows,
        fingerprint,
        inputs,
        train_tokens: sum("train", |s| s.tokens),
        val_tokens: sum("val", |s| s.tokens),
        train_documents: sum("train", |s| s.documents),
        val_documents: sum("val", |s| s.documents),
        shards,
        counts,
        dedup_index_bytes,
        dedup_index_bytes_per_document: dedup_index_bytes as f64 / checked,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    crate::io::write_atomic(&manifest_path, &json)?;
    Ok(manifest)
}

/// The validation set is the documents with the smallest split hashes: at least
/// `ceil(fraction · n)` of them and at least `min_tokens` tokens, but never more than half of the
/// documents (training must keep data). Returns the largest split hash that goes to val.
fn choose_val_cutoff(mut docs: Vec<(u64, u64)>, fraction: f64, min_tokens: u64) -> Option<u64> {
    if docs.len() < 2 || (fraction <= 0.0 && min_tokens == 0) {
        return None;
    }
    docs.sort_unstable();
    let want_docs = ((fraction * docs.len() as f64).ceil() as usize).max(1);
    let max_docs = docs.len() / 2;
    let mut tokens = 0;
    let mut cutoff = None;
    for (i, (h, n)) in docs.iter().enumerate() {
        if i >= max_docs || (i >= want_docs && tokens >= min_tokens) {
            break;
        }
        tokens += n;
        cutoff = Some(*h);
    }
    cutoff
}

fn remove_old_shards(out: &Path, name: &str) -> Result<()> {
    let prefixes = [format!("{name}_train_"), format!("{name}_val_")];
    for e in std::fs::read_dir(out).at(out)?.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| fname.starts_with(p.as_str())) {
            std::fs::remove_file(e.path()).at(e.path())?;
        }
    }
    Ok(())
}

/// One open shard per split; a shard closes before the document that would overflow it.
/// A closed shard is finished (header, fsync, sha256, index) on its own thread while the next
/// one is written: those are waits for the disk and a hash, not work the writer must wait for.
struct Writers<'a> {
    out: &'a Path,
    name: &'a str,
    target: u64,
    open: Vec<(String, ShardWriter, usize)>,
    next_idx: std::collections::BTreeMap<String, usize>,
    finishing: std::collections::VecDeque<std::thread::JoinHandle<Result<ShardInfo>>>,
    done: Vec<ShardInfo>,
}

/// Shards finishing in the background at most; the writer waits for the oldest beyond that.
const MAX_FINISHING: usize = 2;

impl<'a> Writers<'a> {
    fn new(out: &'a Path, name: &'a str, target: u64) -> Self {
        Self {
            out,
            name,
            target,
            open: Vec::new(),
            next_idx: Default::default(),
            finishing: Default::default(),
            done: Vec::new(),
        }
    }

    /// Finish `w` on a background thread.
    fn close(&mut self, w: ShardWriter) -> Result<()> {
        while self.finishing.len() >= MAX_FINISHING {
            self.join_oldest()?;
        }
        let t = std::thread::Builder::new()
            .name("shard".into())
            .spawn(move || w.finish())
            .map_err(|e| DataError::Loader(format!("cannot start a shard thread: {e}")))?;
        self.finishing.push_back(t);
        Ok(())
    }

    fn join_oldest(&mut self) -> Result<()> {
        if let Some(t) = self.finishing.pop_front() {
            let info = t
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            self.done.push(info);
        }
        Ok(())
    }

    fn push(
        &mut self,
        split: &str,
        tokens: &[u8],
        text_bytes: u64,
        meta: Option<&str>,
    ) -> Result<()> {
        let ntok = tokens.len() as u64 / 2;
        let pos = self.open.iter().position(|(s, _, _)| s == split);
        if let Some(p) = pos {
            let w = &self.open[p].1;
            if w.documents() > 0 && w.tokens() + ntok > self.target {
                let (_, w, _) = self.open.remove(p);
                self.close(w)?;
            }
        }
        let p = match self.open.iter().position(|(s, _, _)| s == split) {
            Some(p) => p,
            None => {
                let idx = self.next_idx.entry(split.to_string()).or_insert(0);
                let path = self
                    .out
                    .join(format!("{}_{split}_{:06}.bin", self.name, *idx));
                self.open
                    .push((split.to_string(), ShardWriter::create(&path, split)?, *idx));
                *idx += 1;
                self.open.len() - 1
            }
        };
        self.open[p].1.push(tokens, text_bytes, meta)
    }

    /// Close the open shards; the list is ordered val first, then train, each by index.
    fn finish(mut self) -> Result<Vec<ShardInfo>> {
        for (_, w, _) in std::mem::take(&mut self.open) {
            self.close(w)?;
        }
        while !self.finishing.is_empty() {
            self.join_oldest()?;
        }
        self.done
            .sort_by(|a, b| (a.split != "val", &a.file).cmp(&(b.split != "val", &b.file)));
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::choose_val_cutoff;

    #[test]
    fn val_takes_fraction_or_min_tokens_but_at_most_half() {
        let docs: Vec<(u64, u64)> = (0..100u64).map(|i| ((i * 7919) % 100, 10)).collect();
        // 5% of 100 docs = 5 docs (50 tokens) ≥ min 20 tokens → cutoff is the 5th smallest hash.
        assert_eq!(choose_val_cutoff(docs.clone(), 0.05, 20), Some(4));
        // min tokens 200 → 20 docs.
        assert_eq!(choose_val_cutoff(docs.clone(), 0.0005, 200), Some(19));
        // Never more than half.
        assert_eq!(choose_val_cutoff(docs.clone(), 0.0005, 1_000_000), Some(49));
        assert_eq!(choose_val_cutoff(vec![(1, 5)], 0.5, 0), None);
    }
}
