//! GPT-2's byte-pair merge for one pre-tokenised piece, without tiktoken's per-piece regex.
//!
//! On text the piece cache has not seen (issue 14: unseen books and e-mails ran at 16.9 MB/s
//! against 37.7 MB/s on a repeated corpus), the time went to cache misses, and a miss cost a
//! `CoreBPE::encode_ordinary` call on the piece: tiktoken's fancy-regex split again (of a piece
//! that is already one piece), then its merge over a `HashMap<Vec<u8>, Rank>` with SipHash.
//! Here the miss goes straight to the merge, over a rank table keyed by byte strings with a
//! multiply-rotate hash (the keys are not attacker-chosen in a way that matters: a slow lookup
//! only slows `prepare`).
//!
//! The merge is the standard BPE rule tiktoken implements: repeatedly join the adjacent pair
//! whose joined bytes have the lowest rank (the leftmost one on ties) until no joined pair is a
//! token. Ranks are read back from tiktoken-rs's bundled `r50k_base` table (token i's bytes via
//! `decode_bytes`), so the vocabulary cannot drift. Pieces of 100 bytes or more (long runs of one
//! class, rare in prose) go to tiktoken itself, whose merge for them is O(n log n); this one is
//! O(n²) in the piece length. Ids equal tiktoken's: `tests/tokenizer.rs` compares them on the
//! whole sample corpus and `experiments/bench_data.sh` on an unseen one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// Multiply-rotate hashing of short byte strings, 8 bytes at a time.
#[derive(Default, Clone, Copy)]
pub struct BytesHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for BytesHasher {
    fn finish(&self) -> u64 {
        // Mix the high bits down: hashbrown takes its 7-bit tag from the top.
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(K) ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(K);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(K);
    }
}

/// The hasher state for maps keyed by byte strings (ranks here, the piece cache).
pub type FastBytes = BuildHasherDefault<BytesHasher>;

/// Hashing of [`pack`]ed keys: two multiplies, no loop.
#[derive(Default, Clone, Copy)]
pub struct PackedHasher(u64);

impl Hasher for PackedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = BytesHasher(self.0);
        h.write(bytes);
        self.0 = h.finish();
    }
    fn write_u128(&mut self, n: u128) {
        let (lo, hi) = (n as u64, (n >> 64) as u64);
        let h = (lo ^ hi.rotate_left(32).wrapping_mul(K)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 31);
    }
}

/// The hasher state for maps keyed by [`pack`]ed byte strings.
pub type FastPacked = BuildHasherDefault<PackedHasher>;

/// A byte string of at most 15 bytes as one integer (bytes, then the length in the top byte):
/// keys compare as integers and live in the table itself, where boxed keys cost a pointer chase
/// and a `memcmp` per lookup (the largest costs in the profile of unseen text).
/// Built from two overlapping word loads instead of a variable-length copy (a `memmove` call
/// per piece was 9% of the profile); `pack_slow` in the tests is the plain definition.
#[inline]
pub fn pack(bytes: &[u8]) -> Option<u128> {
    let n = bytes.len();
    if n > 15 {
        return None;
    }
    let le8 = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let le4 = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let (lo, hi) = if n >= 8 {
        // The last 8 bytes, shifted so that bytes 8..n land in the low bytes of `hi`.
        let tail = if n == 8 {
            0
        } else {
            le8(&bytes[n - 8..]) >> (8 * (16 - n))
        };
        (le8(&bytes[..8]), tail)
    } else if n >= 4 {
        let tail = if n == 4 {
            0
        } else {
            le4(&bytes[n - 4..]) >> (8 * (8 - n))
        };
        (le4(&bytes[..4]) | tail << 32, 0)
    } else {
        let v = bytes
            .iter()
            .enumerate()
            .fold(0u64, |v, (i, &c)| v | u64::from(c) << (8 * i));
        (v, 0)
    };
    Some(u128::from(lo) | u128::from(hi | (n as u64) << 56) << 64)
}

/// Pieces at least this long go to tiktoken's own O(n log n) merge.
const LONG_PIECE: usize = 100;

/// The rank (= token id) of every GPT-2 token's bytes.
pub struct Ranks {
    /// Tokens of one or two bytes, at [`tiny_index`]; `u32::MAX` where the bytes are not a
    /// token. 256 KB, where the hash table is 1.6 MB and a lookup hashes and probes: the
    /// merge's first pass looks up every adjacent byte pair of a piece, and on CJK text those
    /// hash lookups were 29% of tokenising.
    tiny: Box<[u32]>,
    /// Tokens of at most 15 bytes (all but a few hundred), by packed bytes.
    short: HashMap<u128, u32, FastPacked>,
    /// The longer ones.
    long: HashMap<Box<[u8]>, u32, FastBytes>,
}

/// The process-wide rank table, built on first use from tiktoken-rs's bundled ranks.
pub fn ranks() -> &'static Ranks {
    static R: OnceLock<Ranks> = OnceLock::new();
    R.get_or_init(|| {
        let core = crate::tokenizer::gpt2();
        let mut tiny = vec![u32::MAX; TINY].into_boxed_slice();
        let mut short = HashMap::with_capacity_and_hasher(50_256, FastPacked::default());
        let mut long = HashMap::default();
        for id in 0..crate::tokenizer::EOT {
            let bytes = core
                .decode_bytes(&[id])
                .expect("every id below EOT is a token of r50k_base");
            if let Some(i) = tiny_index(&bytes) {
                tiny[i] = id;
            }
            match pack(&bytes) {
                Some(k) => short.insert(k, id),
                None => long.insert(bytes.into_boxed_slice(), id),
            };
        }
        Ranks { tiny, short, long }
    })
}

/// Slots of [`Ranks::tiny`]: 256 one-byte strings, then 65,536 two-byte ones.
const TINY: usize = 256 + (1 << 16);

/// The slot of a one- or two-byte string in [`Ranks::tiny`].
#[inline]
fn tiny_index(bytes: &[u8]) -> Option<usize> {
    match *bytes {
        [b0] => Some(usize::from(b0)),
        [b0, b1] => Some(256 + (usize::from(b0) | usize::from(b1) << 8)),
        _ => None,
    }
}

impl Ranks {
    #[inline]
    fn get(&self, bytes: &[u8]) -> Option<u32> {
        if let Some(i) = tiny_index(bytes) {
            let r = self.tiny[i];
            return (r != u32::MAX).then_some(r);
        }
        match pack(bytes) {
            Some(k) => self.short.get(&k).copied(),
            None => self.long.get(bytes).copied(),
        }
    }

    #[inline]
    fn rank(&self, bytes: &[u8]) -> u32 {
        self.get(bytes).unwrap_or(u32::MAX)
    }

    /// The id of `piece` if it is one token.
    #[inline]
    pub fn token(&self, piece: &str) -> Option<u32> {
        self.get(piece.as_bytes())
    }

    /// Append the ids of one piece (as split by GPT-2's pattern) to `out`.
    pub fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        let p = piece.as_bytes();
        if let Some(id) = self.get(p) {
            out.push(id);
            return;
        }
        if p.len() >= LONG_PIECE {
            out.extend(crate::tokenizer::gpt2().encode_ordinary(piece));
            return;
        }
        // bounds[k]..bounds[k+1] is part k; pair[k] ranks parts k and k+1 joined.
        let mut bounds: Vec<u8> = (0..=p.len() as u8).collect();
        let mut pair: Vec<u32> = (0..p.len() - 1).map(|i| self.rank(&p[i..i + 2])).collect();
        loop {
            let mut best = (u32::MAX, 0);
            for (k, &r) in pair.iter().enumerate() {
                if r < best.0 {
                    best = (r, k);
                }
            }
            if best.0 == u32::MAX {
                break;
            }
            let k = best.1;
            bounds.remove(k + 1);
            pair.remove(k);
            let span = |a: usize, b: usize| &p[bounds[a] as usize..bounds[b] as usize];
            if k + 2 < bounds.len() {
                pair[k] = self.rank(span(k, k + 2));
            }
            if k > 0 {
                pair[k - 1] = self.rank(span(k - 1, k + 1));
            }
        }
        for w in bounds.windows(2) {
            let id = self.rank(&p[w[0] as usize..w[1] as usize]);
            debug_assert!(id != u32::MAX, "a merged part is always a token");
            out.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_slow(bytes: &[u8]) -> Option<u128> {
        (bytes.len() <= 15).then(|| {
            let mut b = [0u8; 16];
            b[..bytes.len()].copy_from_slice(bytes);
            b[15] = bytes.len() as u8;
            u128::from_le_bytes(b)
        })
    }

    #[test]
    fn pack_is_bytes_then_length() {
        let text = "The quick brown fox — naïve 中文 🎉 jumps";
        let b = text.as_bytes();
        for i in 0..b.len() {
            for j in i..b.len().min(i + 17) {
                assert_eq!(pack(&b[i..j]), pack_slow(&b[i..j]), "{:?}", &b[i..j]);
            }
        }
    }

    #[test]
    fn pieces_merge_like_tiktoken() {
        let core = crate::tokenizer::gpt2();
        let pieces = [
            " the",
            "Hello",
            " antidisestablishmentarianism",
            " Zyzzyva",
            "中文字",
            " 🎉👍🏽",
            "1234567",
            " ?!'",
            "\n\n\n",
            "ééééééééééééé",
            &"a".repeat(99),
            &"ab".repeat(80),
        ];
        for p in pieces {
            let mut ours = Vec::new();
            ranks().encode_piece(p, &mut ours);
            assert_eq!(ours, core.encode_ordinary(p), "{p:?}");
        }
    }
}
