//! Exact and near-duplicate detection.
//!
//! Exact: a 128-bit xxh3 of the whitespace-normalised text. Near: MinHash over word 5-gram
//! shingles with LSH banding, as OpenWebText (Jaccard 0.5 on 5-gram sets) and openwebtext2
//! (datasketch MinHashLSH) did, with one difference: an LSH band collision only makes a
//! *candidate*, and a document is dropped only when the Jaccard estimated from the two MinHash
//! signatures (the fraction of equal signature values) reaches the threshold. datasketch accepts
//! every band collision; with its (b, r) split that dropped about 3.5% of genuinely distinct
//! documents on an unseen corpus (issue 14; numbers in experiments/RESULTS-data.md).
//!
//! Because candidates are verified, the bands are tuned for recall rather than balance: the
//! largest rows-per-band r (fewest low-Jaccard candidates) whose b bands still make a pair at
//! threshold + 0.1 a candidate with probability ≥ 0.99. For threshold 0.5 and 128 permutations
//! that is 19 bands × 3 rows; the verification then uses all 128 values.
//!
//! Memory per document, kept in stage 2 (`prepare`) for the documents kept so far:
//! - the signature, `num_perm` × u16 (256 B at 128 permutations): each 32-bit minimum folded to
//!   16 bits; two different minima then agree with probability 2^-16, which biases the estimate
//!   by < 0.00002;
//! - one u32 → u32 entry per band (band key → document number): 19 × 8 B plus hashbrown's control
//!   byte, at a load of 7/16 to 7/8 (tables are sized for the document count up front),
//!   i.e. 195–390 B;
//! - the exact-duplicate hash: 16 B + 1 B per bucket, 19–39 B.
//!
//! About 470–685 B per document in all; OpenWebText2's 17.1M documents need 8.0–11.7 GB, inside
//! a 24 GB machine. (Band keys are 32-bit: a chance collision between unrelated documents only
//! costs one signature comparison, since every candidate is verified.)
//!
//! Signatures are computed in parallel (in stage 1 of `prepare`); the index is consulted in
//! input order (stage 2), so the result does not depend on the thread count.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::{xxh3_128, xxh3_64, xxh3_64_with_seed};

/// MinHash settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinHashParams {
    /// Jaccard at or above which a verified candidate is a near duplicate.
    pub threshold: f64,
    pub num_perm: usize,
    pub bands: usize,
    pub rows: usize,
    pub ngram: usize,
}

/// Probability that a pair at Jaccard `s` shares at least one of `b` bands of `r` rows.
fn collide(s: f64, b: usize, r: usize) -> f64 {
    1.0 - (1.0 - s.powi(r as i32)).powi(b as i32)
}

impl MinHashParams {
    /// Choose bands × rows for a Jaccard `threshold` with at most `num_perm` permutations: the
    /// largest r for which some b with b·r ≤ num_perm makes a pair at threshold + 0.1 (or
    /// halfway to 1, whichever is lower) a candidate with probability ≥ 0.99, and the smallest such b (less memory). Falls back to
    /// one row per band, all permutations, when even that cannot reach 0.99.
    pub fn for_threshold(threshold: f64, num_perm: usize, ngram: usize) -> Self {
        // threshold + 0.1, but halfway to 1 for high thresholds: at Jaccard 1 every split
        // collides, which would pick a single band of all permutations.
        let target = (threshold + 0.1).min((threshold + 1.0) / 2.0);
        let mut best = (num_perm.max(1), 1);
        'r: for r in (1..=num_perm.max(1)).rev() {
            for b in 1..=num_perm / r {
                if collide(target, b, r) >= 0.99 {
                    best = (b, r);
                    break 'r;
                }
            }
        }
        Self {
            threshold,
            num_perm,
            bands: best.0,
            rows: best.1,
            ngram,
        }
    }

    /// Signature values that must agree for the estimated Jaccard to reach the threshold.
    fn min_agree(&self) -> usize {
        (self.threshold * self.num_perm as f64 - 1e-9)
            .ceil()
            .max(0.0) as usize
    }
}

/// Precomputed permutations: h_i(x) = a_i·x + c_i (mod 2^32) over a 32-bit shingle hash.
/// Multiply-add with odd a_i permutes u32, and the min over a set of such values is the MinHash
/// estimator; 32-bit lanes vectorise on every x86-64 (64-bit multiplies do not before AVX-512).
/// Performance notes: per-word `to_lowercase` allocations and a Vec per shingle were the first
/// costs (36 MB/s); ASCII words are now lowercased on the stack and shingles are folded from the
/// word hashes without allocating.
pub struct MinHasher {
    pub params: MinHashParams,
    a: Vec<u32>,
    c: Vec<u32>,
}

impl MinHasher {
    pub fn new(params: MinHashParams) -> Self {
        // splitmix64 from a fixed seed: the permutations are part of the output's definition.
        let mut state = 0x5e_ed0f_9e27_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u32
        };
        let a = (0..params.num_perm).map(|_| next() | 1).collect();
        let c = (0..params.num_perm).map(|_| next()).collect();
        Self { params, a, c }
    }

    /// The MinHash signature of `text`, each value folded to 16 bits. Words are lowercase runs
    /// of alphanumerics (so punctuation and layout do not matter); a text shorter than one
    /// n-gram is one shingle.
    pub fn signature(&self, text: &str) -> Vec<u16> {
        thread_local! {
            static WORDS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let n = self.params.ngram.max(1);
        let mut sig = vec![u32::MAX; self.params.num_perm];
        WORDS.with(|words| {
            let mut words = words.borrow_mut();
            words.clear();
            word_hashes(text, &mut words);
            min_hashes(&mut sig, &self.a, &self.c, &words, n);
            if words.capacity() > 1 << 20 {
                *words = Vec::new();
            }
        });
        // Minima are small numbers (their high bits are mostly 0), so fold high into low.
        sig.iter().map(|&v| (v ^ (v >> 16)) as u16).collect()
    }
}

/// Fold every shingle of `words` into the running minima `sig`. The 32-bit multiply of the
/// inner loop needs SSE4.1/AVX2 to vectorise, which the baseline x86-64 target lacks; on
/// unseen text this loop was 10% of `prepare`'s time, so it is compiled a second time for AVX2
/// and chosen once per document at run time. Integer arithmetic: both give the same bits.
fn min_hashes(sig: &mut [u32], a: &[u32], c: &[u32], words: &[u64], n: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature(enable = "avx2")` function.
        unsafe { min_hashes_avx2(sig, a, c, words, n) };
        return;
    }
    min_hashes_portable(sig, a, c, words, n);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn min_hashes_avx2(sig: &mut [u32], a: &[u32], c: &[u32], words: &[u64], n: usize) {
    min_hashes_portable(sig, a, c, words, n);
}

#[inline(always)]
fn min_hashes_portable(sig: &mut [u32], a: &[u32], c: &[u32], words: &[u64], n: usize) {
    let mut shingle = |h: u64| {
        let x = (h ^ (h >> 32)) as u32;
        for ((s, a), c) in sig.iter_mut().zip(a).zip(c) {
            *s = (*s).min(a.wrapping_mul(x).wrapping_add(*c));
        }
    };
    if words.len() < n {
        shingle(fold(words));
    } else {
        for win in words.windows(n) {
            shingle(fold(win));
        }
    }
}

/// The key of band `b` (rows `b·r .. (b+1)·r`) of a signature.
fn band_key(sig: &[u16], b: usize, r: usize) -> u32 {
    let mut bytes = [0u8; 64];
    let rows = &sig[b * r..(b + 1) * r];
    if rows.len() * 2 <= bytes.len() {
        for (d, v) in bytes.chunks_exact_mut(2).zip(rows) {
            d.copy_from_slice(&v.to_le_bytes());
        }
        xxh3_64_with_seed(&bytes[..rows.len() * 2], b as u64) as u32
    } else {
        let v: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        xxh3_64_with_seed(&v, b as u64) as u32
    }
}

/// Estimated Jaccard of two signatures: the fraction of positions where they agree.
pub fn estimate_jaccard(a: &[u16], b: &[u16]) -> f64 {
    agreeing(a, b) as f64 / a.len().max(1) as f64
}

fn agreeing(a: &[u16], b: &[u16]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// The hashes of `text`'s words (lowercase runs of alphanumerics), in order.
fn word_hashes(text: &str, out: &mut Vec<u64>) {
    if !text.is_ascii() {
        out.extend(
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(word_hash),
        );
        return;
    }
    // ASCII: the same words and hashes from a byte scan (for ASCII, `char::is_alphanumeric` is
    // `is_ascii_alphanumeric`), without decoding characters (this split was 8% of `prepare`).
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        out.push(word_hash(&text[start..i]));
    }
}

/// Hash of a word, lowercased.
fn word_hash(w: &str) -> u64 {
    let b = w.as_bytes();
    if b.len() <= 64 && w.is_ascii() {
        let mut buf = [0u8; 64];
        for (d, s) in buf.iter_mut().zip(b) {
            *d = s.to_ascii_lowercase();
        }
        xxh3_64(&buf[..b.len()])
    } else {
        xxh3_64(w.to_lowercase().as_bytes())
    }
}

/// Order-sensitive combination of word hashes (one shingle), with a final avalanche.
fn fold(words: &[u64]) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for w in words {
        h = (h.rotate_left(23) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// Hash for exact duplicates (of [`crate::clean::dedup_key`] text).
pub fn exact_hash(key: &str) -> u128 {
    xxh3_128(key.as_bytes())
}

/// `(exact_hash(&dedup_key(text)), xxh3_64_with_seed(dedup_key(text), seed))`, with the key
/// built in a reused per-thread buffer (no allocation per document) and hashed in one pass each.
/// Streaming the words into two `Xxh3` states instead was slower: a state update per word.
pub fn key_hashes(text: &str, seed: u64) -> (u128, u64) {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|k| {
        let mut key = k.borrow_mut();
        key.clear();
        if text.is_ascii() {
            // The same key from a byte scan: the ASCII characters `char::is_whitespace` accepts
            // are space, \t, \n, \x0b, \x0c and \r (`u8::is_ascii_whitespace` lacks \x0b).
            // Unicode-aware `split_whitespace` was 7% of `prepare` on unseen text.
            let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if ws(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !ws(b[i]) {
                    i += 1;
                }
                if !key.is_empty() {
                    key.push(' ');
                }
                key.push_str(&text[start..i]);
            }
        } else {
            for w in text.split_whitespace() {
                if !key.is_empty() {
                    key.push(' ');
                }
                key.push_str(w);
            }
        }
        (
            xxh3_128(key.as_bytes()),
            xxh3_64_with_seed(key.as_bytes(), seed),
        )
    })
}

/// Outcome of checking a document against the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unique,
    ExactDuplicate,
    NearDuplicate,
}

/// Band keys and exact hashes are already uniform hashes: use them as their own hash instead of
/// running SipHash over them again.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        // hashbrown takes its control byte from the top 7 bits: spread a u32 key over them.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

type Fast = BuildHasherDefault<IdentityHasher>;

/// A band key shared by more kept documents than this stops collecting candidates (the later
/// documents are still indexed under their other bands). Bounds the verification work per
/// document when boilerplate makes one key very common; at most this many comparisons per band.
const MAX_SHARED: usize = 256;

/// The in-memory index of the documents kept so far, consulted in input order.
pub struct DedupIndex {
    params: MinHashParams,
    near: bool,
    exact: HashSet<u128, Fast>,
    /// Signatures of the kept documents, `num_perm` values each, by kept-document number.
    sigs: Vec<u16>,
    /// Per band: key → the first kept document with it.
    bands: Vec<HashMap<u32, u32, Fast>>,
    /// (band, key) → the further kept documents with it (rare: only pairs that collided and
    /// were verified distinct, or chance collisions of 32-bit keys).
    shared: HashMap<u64, Vec<u32>, Fast>,
    kept: u32,
}

impl DedupIndex {
    /// An index for about `capacity` documents (tables are sized up front so that their memory
    /// is known; more documents still fit).
    pub fn new(params: MinHashParams, near: bool, capacity: usize) -> Self {
        let bands = if near { params.bands } else { 0 };
        Self {
            params,
            near,
            exact: HashSet::with_capacity_and_hasher(capacity, Fast::default()),
            sigs: Vec::with_capacity(if near { capacity * params.num_perm } else { 0 }),
            bands: (0..bands)
                .map(|_| HashMap::with_capacity_and_hasher(capacity, Fast::default()))
                .collect(),
            shared: HashMap::default(),
            kept: 0,
        }
    }

    fn sig(&self, doc: u32) -> &[u16] {
        let n = self.params.num_perm;
        &self.sigs[doc as usize * n..(doc as usize + 1) * n]
    }

    /// Is some kept document sharing a band with `sig` at estimated Jaccard ≥ threshold?
    fn has_near_duplicate(&self, sig: &[u16], keys: &[u32]) -> bool {
        let need = self.params.min_agree();
        let mut checked: Vec<u32> = Vec::new();
        for (b, (key, map)) in keys.iter().zip(&self.bands).enumerate() {
            let Some(&first) = map.get(key) else {
                continue;
            };
            let more = self.shared.get(&shared_key(b, *key));
            for doc in std::iter::once(first).chain(more.into_iter().flatten().copied()) {
                if checked.contains(&doc) {
                    continue;
                }
                if agreeing(sig, self.sig(doc)) >= need {
                    return true;
                }
                checked.push(doc);
            }
        }
        false
    }

    /// Check a document and, if unique, add it. `sig` is its [`MinHasher::signature`] (ignored,
    /// and may be empty, when near-duplicate removal is off).
    pub fn check_insert(&mut self, exact: u128, sig: &[u16]) -> Verdict {
        if self.exact.contains(&exact) {
            return Verdict::ExactDuplicate;
        }
        if !self.near {
            self.exact.insert(exact);
            return Verdict::Unique;
        }
        let r = self.params.rows;
        let keys: Vec<u32> = (0..self.params.bands)
            .map(|b| band_key(sig, b, r))
            .collect();
        if self.has_near_duplicate(sig, &keys) {
            return Verdict::NearDuplicate;
        }
        self.exact.insert(exact);
        let doc = self.kept;
        self.kept += 1;
        self.sigs.extend_from_slice(sig);
        for (b, (key, map)) in keys.iter().zip(&mut self.bands).enumerate() {
            if map.try_insert_or_exists(*key, doc) {
                let v = self.shared.entry(shared_key(b, *key)).or_default();
                if v.len() < MAX_SHARED {
                    v.push(doc);
                }
            }
        }
        Verdict::Unique
    }

    /// Bytes held by the index (table capacity × entry size, plus the signatures), for the
    /// bytes-per-document report in the manifest.
    pub fn approx_bytes(&self) -> usize {
        // hashbrown stores the entry plus one control byte per bucket; capacity() is 7/8 of the
        // buckets.
        let buckets = |cap: usize| cap * 8 / 7;
        buckets(self.exact.capacity()) * (16 + 1)
            + self
                .bands
                .iter()
                .map(|m| buckets(m.capacity()) * (8 + 1))
                .sum::<usize>()
            + self.sigs.capacity() * 2
            + self
                .shared
                .values()
                .map(|v| 8 + 24 + 1 + v.capacity() * 4)
                .sum::<usize>()
    }
}

fn shared_key(band: usize, key: u32) -> u64 {
    (band as u64) << 32 | u64::from(key)
}

/// `insert` that keeps the existing value: true when the key was already there.
trait InsertOrExists {
    fn try_insert_or_exists(&mut self, key: u32, doc: u32) -> bool;
}

impl InsertOrExists for HashMap<u32, u32, Fast> {
    fn try_insert_or_exists(&mut self, key: u32, doc: u32) -> bool {
        match self.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => true,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(doc);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jaccard_5grams(a: &str, b: &str) -> f64 {
        let grams = |t: &str| {
            let w: Vec<String> = t
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect();
            w.windows(5).map(|x| x.join(" ")).collect::<HashSet<_>>()
        };
        let (a, b) = (grams(a), grams(b));
        a.intersection(&b).count() as f64 / a.union(&b).count() as f64
    }

    #[test]
    fn params_for_half_threshold_favour_recall() {
        let p = MinHashParams::for_threshold(0.5, 128, 5);
        assert!(p.bands * p.rows <= 128);
        assert_eq!((p.bands, p.rows), (19, 3), "{p:?}");
        // A pair at threshold + 0.1 is a candidate with probability ≥ 0.99; one more row per
        // band could not reach that within 128 permutations.
        assert!(collide(0.6, p.bands, p.rows) >= 0.99);
        assert!(collide(0.6, 128 / (p.rows + 1), p.rows + 1) < 0.99);
        assert_eq!(p.min_agree(), 64);
        // Every configurable threshold keeps high recall just above it, and never degenerates
        // into one band of all permutations.
        for t in [0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95] {
            let p = MinHashParams::for_threshold(t, 128, 5);
            let above = (t + 0.1).min((t + 1.0) / 2.0);
            assert!(collide(above, p.bands, p.rows) >= 0.99, "{t}: {p:?}");
            assert!(p.bands >= 2 && p.bands * p.rows <= 128, "{t}: {p:?}");
        }
    }

    #[test]
    fn near_duplicates_collide_and_different_texts_do_not() {
        let base: String = (0..400)
            .map(|i| format!("word{} ", i % 97 + i / 7))
            .collect();
        // A copy with ~3% of words changed: Jaccard on 5-grams still well above 0.5.
        let near: String = base
            .split(' ')
            .enumerate()
            .map(|(i, w)| if i % 37 == 0 { "CHANGED" } else { w })
            .collect::<Vec<_>>()
            .join(" ");
        let other: String = (0..400)
            .map(|i| format!("other{} ", i * 13 % 101))
            .collect();
        assert!(jaccard_5grams(&base, &near) > 0.5);
        assert!(jaccard_5grams(&base, &other) < 0.1);
        let h = MinHasher::new(MinHashParams::for_threshold(0.5, 128, 5));
        let mut idx = DedupIndex::new(h.params, true, 4);
        assert_eq!(idx.check_insert(1, &h.signature(&base)), Verdict::Unique);
        assert_eq!(
            idx.check_insert(2, &h.signature(&near)),
            Verdict::NearDuplicate
        );
        assert_eq!(idx.check_insert(3, &h.signature(&other)), Verdict::Unique);
        assert_eq!(
            idx.check_insert(1, &h.signature(&base)),
            Verdict::ExactDuplicate
        );
        let est = estimate_jaccard(&h.signature(&base), &h.signature(&near));
        assert!((est - jaccard_5grams(&base, &near)).abs() < 0.15, "{est}");
    }

    #[test]
    fn ascii_word_scan_equals_the_unicode_split() {
        let long = "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(2);
        let texts = [
            "The quick, brown FOX jumped over 3 lazy dogs.",
            "x",
            "",
            "  --  ",
            "a_b-c'd\x0be\x7ff\x00g 1.5e10",
            &long,
            "MiXeD cAsE 42abc ABC42",
        ];
        for t in texts {
            let mut fast = Vec::new();
            word_hashes(t, &mut fast);
            let reference: Vec<u64> = t
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(word_hash)
                .collect();
            assert!(t.is_ascii());
            assert_eq!(fast, reference, "{t:?}");
        }
        // A non-ASCII text takes the Unicode path: "Café" and "café" are the same word.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        word_hashes("Café au lait", &mut a);
        word_hashes("café au LAIT", &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn streamed_key_hashes_equal_the_hashes_of_the_key() {
        let r = crate::io::open_reader(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../data/sample/sotu.jsonl.gz"),
            None,
        )
        .expect("sample corpus");
        use std::io::BufRead;
        let mut texts: Vec<String> = r
            .lines()
            .take(20)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l.expect("line")).expect("json");
                v["text"].as_str().expect("text").to_string()
            })
            .collect();
        texts.extend(
            [
                "",
                "  ",
                " a ",
                "a\t\nb  c\u{a0}d\u{2028}",
                "x",
                "a\x0bb\x0cc\rd\x1fe\x7f f",
            ]
            .map(String::from),
        );
        for t in &texts {
            let key = crate::clean::dedup_key(t);
            assert_eq!(
                key_hashes(t, 7),
                (exact_hash(&key), xxh3_64_with_seed(key.as_bytes(), 7)),
                "{:?}",
                &t[..t.len().min(40)]
            );
        }
    }

    /// The defect of issue 14: a band collision alone used to drop the document. Two signatures
    /// that share band 0 exactly but agree on only a third of their values are both kept; the
    /// same pair agreeing on 60% is a near duplicate.
    #[test]
    fn a_band_collision_is_verified_before_dropping() {
        let p = MinHashParams::for_threshold(0.5, 128, 5);
        let a: Vec<u16> = (0..128u16).map(|i| i.wrapping_mul(7919)).collect();
        let with_agreement = |k: usize| -> Vec<u16> {
            a.iter()
                .enumerate()
                .map(|(i, &v)| if i < k { v } else { v ^ 0x5555 })
                .collect()
        };
        let mut idx = DedupIndex::new(p, true, 4);
        assert_eq!(idx.check_insert(1, &a), Verdict::Unique);
        let third = with_agreement(128 / 3);
        assert_eq!(band_key(&third, 0, p.rows), band_key(&a, 0, p.rows));
        assert_eq!(idx.check_insert(2, &third), Verdict::Unique);
        assert_eq!(
            idx.check_insert(3, &with_agreement(77)),
            Verdict::NearDuplicate
        );
        // Both kept documents stay candidates under the shared key: one agreeing with the
        // second at 100% apart from a few values is caught through it.
        let mut near_third = third.clone();
        near_third[127] ^= 1;
        assert_eq!(idx.check_insert(4, &near_third), Verdict::NearDuplicate);
    }
}
