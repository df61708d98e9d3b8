//! Exact and near-duplicate detection.
//!
//! Exact: a 128-bit xxh3 of the whitespace-normalised text. Near: MinHash over word 5-gram
//! shingles with LSH banding, as OpenWebText (Jaccard 0.5 on 5-gram sets) and openwebtext2
//! (datasketch MinHashLSH) did. The band/row split is chosen like datasketch's
//! `_optimal_param`: the (b, r) with b·r ≤ num_perm that minimises the false-positive plus
//! false-negative probability mass around the threshold. A document is a near duplicate when
//! one of its band keys was already seen in an earlier kept document; datasketch does not verify
//! candidates either.
//!
//! Signatures are computed in parallel (in stage 1 of `prepare`); the index is consulted in
//! input order (stage 2), so the result does not depend on the thread count.

use std::collections::HashSet;

use xxhash_rust::xxh3::{xxh3_128, xxh3_64, xxh3_64_with_seed};

/// MinHash settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinHashParams {
    pub num_perm: usize,
    pub bands: usize,
    pub rows: usize,
    pub ngram: usize,
}

impl MinHashParams {
    /// Choose bands × rows for a Jaccard `threshold` with at most `num_perm` permutations.
    pub fn for_threshold(threshold: f64, num_perm: usize, ngram: usize) -> Self {
        let mut best = (f64::INFINITY, 1, 1);
        for b in 1..=num_perm {
            for r in 1..=num_perm / b {
                let fp = integrate(
                    |s| 1.0 - (1.0 - s.powi(r as i32)).powi(b as i32),
                    0.0,
                    threshold,
                );
                let fn_ = integrate(|s| (1.0 - s.powi(r as i32)).powi(b as i32), threshold, 1.0);
                let err = 0.5 * fp + 0.5 * fn_;
                if err < best.0 {
                    best = (err, b, r);
                }
            }
        }
        Self {
            num_perm,
            bands: best.1,
            rows: best.2,
            ngram,
        }
    }
}

fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let n = 200;
    let h = (b - a) / n as f64;
    (0..n).map(|i| f(a + (i as f64 + 0.5) * h)).sum::<f64>() * h
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

    /// Band keys of `text`: one u64 per band. Words are lowercase runs of alphanumerics (so
    /// punctuation and layout do not matter); a text shorter than one n-gram is one shingle.
    pub fn band_keys(&self, text: &str) -> Vec<u64> {
        let words: Vec<u64> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(word_hash)
            .collect();
        let n = self.params.ngram.max(1);
        let mut sig = vec![u32::MAX; self.params.num_perm];
        let mut shingle = |h: u64| {
            let x = (h ^ (h >> 32)) as u32;
            for ((s, a), c) in sig.iter_mut().zip(&self.a).zip(&self.c) {
                *s = (*s).min(a.wrapping_mul(x).wrapping_add(*c));
            }
        };
        if words.len() < n {
            shingle(fold(&words));
        } else {
            for win in words.windows(n) {
                shingle(fold(win));
            }
        }
        let r = self.params.rows;
        (0..self.params.bands)
            .map(|b| {
                let bytes: Vec<u8> = sig[b * r..(b + 1) * r]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                xxh3_64_with_seed(&bytes, b as u64)
            })
            .collect()
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

/// Outcome of checking a document against the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unique,
    ExactDuplicate,
    NearDuplicate,
}

/// The in-memory index, consulted in input order.
#[derive(Default)]
pub struct DedupIndex {
    exact: HashSet<u128>,
    /// One set per band; keys of different bands never collide by construction.
    bands: Vec<HashSet<u64>>,
    near: bool,
}

impl DedupIndex {
    pub fn new(bands: usize, near: bool) -> Self {
        Self {
            exact: HashSet::new(),
            bands: (0..bands).map(|_| HashSet::new()).collect(),
            near,
        }
    }

    /// Check a document and, if unique, add it.
    pub fn check_insert(&mut self, exact: u128, band_keys: &[u64]) -> Verdict {
        if self.exact.contains(&exact) {
            return Verdict::ExactDuplicate;
        }
        if self.near
            && band_keys
                .iter()
                .zip(&self.bands)
                .any(|(k, set)| set.contains(k))
        {
            return Verdict::NearDuplicate;
        }
        self.exact.insert(exact);
        if self.near {
            for (k, set) in band_keys.iter().zip(&mut self.bands) {
                set.insert(*k);
            }
        }
        Verdict::Unique
    }

    /// Bytes held by the index (table capacity × entry size), for the bytes-per-document report.
    pub fn approx_bytes(&self) -> usize {
        // hashbrown stores the value plus one control byte per bucket.
        self.exact.capacity() * (16 + 1)
            + self
                .bands
                .iter()
                .map(|s| s.capacity() * (8 + 1))
                .sum::<usize>()
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
    fn params_for_half_threshold_are_sane() {
        let p = MinHashParams::for_threshold(0.5, 128, 5);
        assert!(p.bands * p.rows <= 128);
        // The S-curve's midpoint (1/b)^(1/r) should sit near the threshold.
        let mid = (1.0 / p.bands as f64).powf(1.0 / p.rows as f64);
        assert!((0.35..0.65).contains(&mid), "{p:?} mid {mid}");
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
        let mut idx = DedupIndex::new(h.params.bands, true);
        assert_eq!(idx.check_insert(1, &h.band_keys(&base)), Verdict::Unique);
        assert_eq!(
            idx.check_insert(2, &h.band_keys(&near)),
            Verdict::NearDuplicate
        );
        assert_eq!(idx.check_insert(3, &h.band_keys(&other)), Verdict::Unique);
        assert_eq!(
            idx.check_insert(1, &h.band_keys(&base)),
            Verdict::ExactDuplicate
        );
    }
}
