//! Token shards: llm.c's `.bin` format plus our sidecar document index.
//!
//! `.bin` (llm.c `dev/data/data_common.py`, `llmc/dataloader.h`): 256 little-endian int32 header
//! words — `[0]` magic 20240520, `[1]` version 1, `[2]` token count — then the tokens as uint16.
//! The file size must be 1024 + 2·ntok; every reader checks magic, version and size.
//!
//! `.idx` (ours): 256 int32 header words — `[0]` magic 20241128, `[1]` version 1, `[2]` number
//! of documents — then per document two u64: the token offset of its leading EOT in the `.bin`,
//! and the UTF-8 byte count of its cleaned text (what bits-per-byte divides by).
//!
//! `.meta.jsonl` (optional): one JSON object per document that carried metadata (url, karma, …)
//! in the input, with `"doc"` its index in the shard.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use crate::error::{DataError, IoContext, Result};
use crate::io::AtomicFile;

pub const SHARD_MAGIC: i32 = 20240520;
pub const SHARD_VERSION: i32 = 1;
pub const INDEX_MAGIC: i32 = 20241128;
pub const INDEX_VERSION: i32 = 1;
/// Header size in bytes (256 int32), for both files.
pub const HEADER_BYTES: usize = 1024;

/// Paths of one shard's files, from the `.bin` path.
pub fn index_path(bin: &Path) -> PathBuf {
    bin.with_extension("idx")
}
pub fn meta_path(bin: &Path) -> PathBuf {
    bin.with_extension("meta.jsonl")
}

fn header(magic: i32, version: i32, count: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&magic.to_le_bytes());
    h[4..8].copy_from_slice(&version.to_le_bytes());
    // llm.c stores the count in an int32; shards stay well below 2^31 tokens.
    h[8..12].copy_from_slice(&(count as i32).to_le_bytes());
    h
}

/// What a finished shard holds, for the manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ShardInfo {
    /// File name of the `.bin`, relative to the manifest's directory.
    pub file: String,
    pub split: String,
    pub tokens: u64,
    pub documents: u64,
    /// UTF-8 bytes of the documents' text.
    pub text_bytes: u64,
    /// sha256 of the `.bin` file.
    pub sha256: String,
    /// sha256 of the `.idx` file.
    pub index_sha256: String,
}

/// Writes one shard: tokens stream to `NAME.bin.tmp`, the index is kept in memory (16 bytes per
/// document) and both files are renamed into place by [`ShardWriter::finish`].
pub struct ShardWriter {
    bin: AtomicFile,
    tokens: u64,
    docs: Vec<(u64, u64)>,
    meta: Vec<String>,
    split: String,
}

impl ShardWriter {
    pub fn create(path: &Path, split: &str) -> Result<Self> {
        let mut bin = AtomicFile::create(path)?;
        // Placeholder header; the real one (with the token count) is written at finish.
        bin.write_all(&[0u8; HEADER_BYTES]).at(path)?;
        Ok(Self {
            bin,
            tokens: 0,
            docs: Vec::new(),
            meta: Vec::new(),
            split: split.to_string(),
        })
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn documents(&self) -> u64 {
        self.docs.len() as u64
    }

    /// Append one document: `tokens` must start with EOT. `meta` is the document's metadata as a
    /// JSON object string without the `doc` field (or `None`).
    pub fn push(&mut self, tokens: &[u8], text_bytes: u64, meta: Option<&str>) -> Result<()> {
        if let Some(m) = meta {
            let doc = self.docs.len();
            let body = m.trim_start().strip_prefix('{').unwrap_or(m);
            let sep = if body.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            self.meta.push(format!("{{\"doc\":{doc}{sep}{body}"));
        }
        self.docs.push((self.tokens, text_bytes));
        self.bin
            .write_all(tokens)
            .at(self.bin.path().to_path_buf())?;
        self.tokens += tokens.len() as u64 / 2;
        Ok(())
    }

    /// Write the header and index, rename both into place; returns the manifest entry.
    pub fn finish(mut self) -> Result<ShardInfo> {
        use std::io::{Seek, SeekFrom};
        let path = self.bin.path().to_path_buf();
        let head = header(SHARD_MAGIC, SHARD_VERSION, self.tokens);
        {
            let f = self.bin.file_mut()?;
            f.seek(SeekFrom::Start(0)).at(&path)?;
            f.write_all(&head).at(&path)?;
        }
        // The header (with the count) is known only now, and sha256 cannot be re-prefixed, so the
        // manifest's digest is taken from the final file (read back at page-cache speed).
        self.bin.commit()?;
        let sha256 = sha256_file(&path)?;

        let idx_path = index_path(&path);
        let mut idx = AtomicFile::create(&idx_path)?;
        idx.write_all(&header(INDEX_MAGIC, INDEX_VERSION, self.docs.len() as u64))
            .at(&idx_path)?;
        for (off, bytes) in &self.docs {
            idx.write_all(&off.to_le_bytes()).at(&idx_path)?;
            idx.write_all(&bytes.to_le_bytes()).at(&idx_path)?;
        }
        idx.commit()?;
        let index_sha256 = sha256_file(&idx_path)?;
        if !self.meta.is_empty() {
            let mp = meta_path(&path);
            let mut m = AtomicFile::create(&mp)?;
            for line in &self.meta {
                writeln!(m, "{line}").at(&mp)?;
            }
            m.commit()?;
        }
        Ok(ShardInfo {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            split: self.split,
            tokens: self.tokens,
            documents: self.docs.len() as u64,
            text_bytes: self.docs.iter().map(|d| d.1).sum(),
            sha256,
            index_sha256,
        })
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).at(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).at(path)?;
    Ok(hex::encode(h.finalize()))
}

fn shard_err(path: &Path, message: String) -> DataError {
    DataError::Shard {
        path: path.to_path_buf(),
        message,
        hint: "the shard is damaged or not a GPT-2 token shard; delete the output directory's shards and re-run `gpt2 prepare`".into(),
    }
}

fn read_header(path: &Path, bytes: &[u8], magic: i32, version: i32, what: &str) -> Result<u64> {
    if bytes.len() < HEADER_BYTES {
        return Err(shard_err(
            path,
            format!(
                "file is {} bytes, shorter than the {HEADER_BYTES}-byte {what} header",
                bytes.len()
            ),
        ));
    }
    let word = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if word(0) != magic {
        return Err(shard_err(
            path,
            format!(
                "bad magic number {} in {what} header (expected {magic})",
                word(0)
            ),
        ));
    }
    if word(1) != version {
        return Err(shard_err(
            path,
            format!(
                "unsupported {what} version {} (expected {version})",
                word(1)
            ),
        ));
    }
    u64::try_from(word(2))
        .map_err(|_| shard_err(path, format!("negative count {} in {what} header", word(2))))
}

/// A memory-mapped token shard with its document index, checked on open.
pub struct ShardReader {
    path: PathBuf,
    map: Mmap,
    ntok: u64,
    /// (token offset, UTF-8 bytes) per document; empty if the shard has no `.idx` (plain llm.c).
    docs: Vec<(u64, u64)>,
}

impl ShardReader {
    /// Open and check magic, version and size (of the `.bin`, and of the `.idx` if present).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        // SAFETY: the map is read-only and shards are never modified in place (they are written
        // under a temporary name and renamed), so the bytes cannot change under us.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let ntok = read_header(path, &map, SHARD_MAGIC, SHARD_VERSION, "shard")?;
        let expected = HEADER_BYTES as u64 + 2 * ntok;
        if map.len() as u64 != expected {
            return Err(shard_err(path, format!("file size {} does not match the header's {ntok} tokens (expected {expected} bytes): truncated or overwritten", map.len())));
        }
        let idx = index_path(path);
        let docs = if idx.exists() {
            read_index(&idx, ntok)?
        } else {
            Vec::new()
        };
        Ok(Self {
            path: path.to_path_buf(),
            map,
            ntok,
            docs,
        })
    }

    /// Open and also compare the file's sha256 with the manifest's.
    pub fn open_verified(path: &Path, expected_sha256: &str) -> Result<Self> {
        let r = Self::open(path)?;
        let actual = hex::encode(Sha256::digest(&r.map[..]));
        if actual != expected_sha256 {
            return Err(shard_err(
                path,
                format!("sha256 {actual} differs from the manifest's {expected_sha256}"),
            ));
        }
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.ntok
    }

    pub fn is_empty(&self) -> bool {
        self.ntok == 0
    }

    /// Token `i`.
    pub fn token(&self, i: u64) -> u16 {
        let o = HEADER_BYTES + 2 * i as usize;
        u16::from_le_bytes([self.map[o], self.map[o + 1]])
    }

    /// Tokens `[start, start + out.len())` into `out`, widened to u32.
    pub fn read_into(&self, start: u64, out: &mut [u32]) {
        let o = HEADER_BYTES + 2 * start as usize;
        let bytes = &self.map[o..o + 2 * out.len()];
        for (dst, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *dst = u16::from_le_bytes([b[0], b[1]]) as u32;
        }
    }

    /// (token offset, UTF-8 bytes) of each document, from the sidecar index.
    pub fn documents(&self) -> &[(u64, u64)] {
        &self.docs
    }

    /// UTF-8 bytes of the documents whose leading EOT lies in `[start, end)`.
    pub fn text_bytes_between(&self, start: u64, end: u64) -> u64 {
        let lo = self.docs.partition_point(|d| d.0 < start);
        let hi = self.docs.partition_point(|d| d.0 < end);
        self.docs[lo..hi].iter().map(|d| d.1).sum()
    }
}

fn read_index(path: &Path, ntok: u64) -> Result<Vec<(u64, u64)>> {
    let bytes = std::fs::read(path).at(path)?;
    let n = read_header(path, &bytes, INDEX_MAGIC, INDEX_VERSION, "index")?;
    let expected = HEADER_BYTES as u64 + 16 * n;
    if bytes.len() as u64 != expected {
        return Err(shard_err(
            path,
            format!(
                "index size {} does not match its {n} documents (expected {expected} bytes)",
                bytes.len()
            ),
        ));
    }
    let mut docs = Vec::with_capacity(n as usize);
    let mut prev = None;
    for rec in bytes[HEADER_BYTES..].chunks_exact(16) {
        let off = u64::from_le_bytes(rec[0..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
        if off >= ntok || prev.is_some_and(|p| off <= p) {
            return Err(shard_err(
                path,
                format!("document offset {off} out of order or beyond the shard's {ntok} tokens"),
            ));
        }
        prev = Some(off);
        docs.push((off, len));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(tokens: &[u16]) -> Vec<u8> {
        tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
    }

    #[test]
    fn round_trip_and_llmc_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x_train_000000.bin");
        let mut w = ShardWriter::create(&p, "train").unwrap();
        w.push(
            &bytes(&[50256, 1, 2, 3]),
            10,
            Some(r#"{"url":"http://a.com"}"#),
        )
        .unwrap();
        w.push(&bytes(&[50256, 4]), 3, None).unwrap();
        let info = w.finish().unwrap();
        assert_eq!((info.tokens, info.documents, info.text_bytes), (6, 2, 13));
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(raw.len(), 1024 + 12);
        assert_eq!(i32::from_le_bytes(raw[0..4].try_into().unwrap()), 20240520);
        assert_eq!(i32::from_le_bytes(raw[4..8].try_into().unwrap()), 1);
        assert_eq!(i32::from_le_bytes(raw[8..12].try_into().unwrap()), 6);
        let r = ShardReader::open_verified(&p, &info.sha256).unwrap();
        assert_eq!(
            (0..6).map(|i| r.token(i)).collect::<Vec<_>>(),
            vec![50256, 1, 2, 3, 50256, 4]
        );
        assert_eq!(r.documents(), &[(0, 10), (4, 3)]);
        assert_eq!(r.text_bytes_between(1, 6), 3);
        let meta = std::fs::read_to_string(meta_path(&p)).unwrap();
        assert_eq!(meta, "{\"doc\":0,\"url\":\"http://a.com\"}\n");
        assert!(!crate::io::tmp_path(&p).exists());
    }

    #[test]
    fn detects_truncation_bad_magic_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.bin");
        let mut w = ShardWriter::create(&p, "val").unwrap();
        w.push(&bytes(&[50256, 7, 8]), 2, None).unwrap();
        let info = w.finish().unwrap();
        let good = std::fs::read(&p).unwrap();

        std::fs::write(&p, &good[..good.len() - 1]).unwrap();
        let e = ShardReader::open(&p).err().unwrap().to_string();
        assert!(
            e.contains("file size") && e.contains("s.bin") && e.contains("HINT"),
            "{e}"
        );

        let mut bad = good.clone();
        bad[0] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(ShardReader::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("bad magic"));

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&p, &flipped).unwrap();
        assert!(ShardReader::open(&p).is_ok());
        assert!(ShardReader::open_verified(&p, &info.sha256)
            .err()
            .unwrap()
            .to_string()
            .contains("sha256"));
    }
}
