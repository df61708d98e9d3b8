//! A hand-written GPT-2 pre-tokeniser plus a piece cache: the fast path of [`crate::tokenizer`].
//!
//! tiktoken (Python and tiktoken-rs alike) spends most of its time in `fancy_regex` matching
//! GPT-2's split pattern
//! `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`.
//! This module walks the text once, classifying characters with the very Unicode tables the
//! regex uses (taken from `regex-syntax`, so the Unicode version cannot drift), and yields the
//! same pieces. Each piece is then looked up in a per-thread cache of piece → ids; a miss runs
//! the byte-pair merge of [`crate::bpe`] on the piece. Ids are identical to tiktoken's; the
//! tests compare on real text and on edge cases.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

use crate::bpe::FastPacked;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cat {
    Letter,
    Number,
    Space,
    Other,
}

/// Sorted, disjoint code-point ranges of one class.
struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    fn from_pattern(pattern: &str) -> Self {
        let hir = regex_syntax::Parser::new()
            .parse(pattern)
            .expect("static pattern");
        let HirKind::Class(Class::Unicode(cls)) = hir.kind() else {
            panic!("{pattern} is a Unicode class")
        };
        Self(
            cls.ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32))
                .collect(),
        )
    }

    fn contains(&self, c: u32) -> bool {
        let i = self.0.partition_point(|r| r.1 < c);
        i < self.0.len() && self.0[i].0 <= c
    }
}

struct Tables {
    letter: Ranges,
    number: Ranges,
    space: Ranges,
    /// Categories of the Basic Multilingual Plane (64 KB), looked up directly: CJK text spent
    /// 8% of tokenising in the binary searches of the ranges.
    low: Vec<Cat>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let (letter, number, space) = (
            Ranges::from_pattern(r"\p{L}"),
            Ranges::from_pattern(r"\p{N}"),
            Ranges::from_pattern(r"\s"),
        );
        let slow = |c: u32| {
            if letter.contains(c) {
                Cat::Letter
            } else if number.contains(c) {
                Cat::Number
            } else if space.contains(c) {
                Cat::Space
            } else {
                Cat::Other
            }
        };
        let low = (0..BMP).map(slow).collect();
        Tables {
            letter,
            number,
            space,
            low,
        }
    })
}

/// Code points with a direct entry in [`Tables::low`].
const BMP: u32 = 0x1_0000;

fn cat(t: &Tables, c: char) -> Cat {
    let u = c as u32;
    if u < BMP {
        return t.low[u as usize];
    }
    if t.letter.contains(u) {
        Cat::Letter
    } else if t.number.contains(u) {
        Cat::Number
    } else if t.space.contains(u) {
        Cat::Space
    } else {
        Cat::Other
    }
}

/// Call `f` with each piece of `text`, in order, exactly as GPT-2's regex splits it.
pub fn split(text: &str, f: impl FnMut(&str)) {
    let t = tables();
    if text.is_ascii() {
        // Most documents are pure ASCII: read bytes in place, with no per-character vector,
        // no UTF-8 decoding and no range checks (`low` is built by the same classifier).
        let b = text.as_bytes();
        split_with(
            text,
            b.len(),
            |k| (k, b[k] as char, t.low[b[k] as usize]),
            f,
        );
    } else {
        // The characters with their offsets and classes, in a buffer kept per thread: a fresh
        // vector per document grew by reallocation into new memory, and the page faults of
        // that were 8% of `prepare` on unseen text.
        thread_local! {
            static CHARS: RefCell<Vec<(usize, char, Cat)>> = const { RefCell::new(Vec::new()) };
        }
        CHARS.with(|chars| {
            let mut chars = chars.borrow_mut();
            chars.clear();
            chars.extend(text.char_indices().map(|(i, c)| (i, c, cat(t, c))));
            split_with(text, chars.len(), |k| chars[k], f);
            if chars.capacity() > 1 << 22 {
                // A huge document's buffer is not kept (16 bytes per character).
                *chars = Vec::new();
            }
        });
    }
}

/// The splitting rules over `n` characters, `get(k)` = (byte offset, char, category) of the
/// k-th; inlined into both callers so the ASCII one indexes bytes directly.
#[inline(always)]
fn split_with(
    text: &str,
    n: usize,
    get: impl Fn(usize) -> (usize, char, Cat),
    mut f: impl FnMut(&str),
) {
    let at = |k: usize| if k < n { get(k).0 } else { text.len() };
    let run = |mut k: usize, want: Cat| {
        while k < n && get(k).2 == want {
            k += 1;
        }
        k
    };
    let mut i = 0;
    while i < n {
        let (_, c, k) = get(i);
        // 1. Contractions, case-sensitive: 's 't 'd 'm 'll 've 're.
        if c == '\'' && i + 1 < n {
            let c1 = get(i + 1).1;
            let c2 = if i + 2 < n { get(i + 2).1 } else { '\0' };
            let len = match (c1, c2) {
                ('s' | 'd' | 'm' | 't', _) => 2,
                ('l', 'l') | ('v', 'e') | ('r', 'e') => 3,
                _ => 0,
            };
            if len > 0 {
                f(&text[at(i)..at(i + len)]);
                i += len;
                continue;
            }
        }
        // 2–4. An optional literal space, then a run of letters, numbers or "other".
        let (start, body) = if c == ' ' && i + 1 < n && get(i + 1).2 != Cat::Space {
            (i, i + 1)
        } else {
            (i, i)
        };
        let bk = get(body).2;
        if bk != Cat::Space {
            let end = run(body, bk);
            f(&text[at(start)..at(end)]);
            i = end;
            continue;
        }
        debug_assert_eq!(k, Cat::Space);
        // 5–7. Whitespace: all of it at the end of the text; otherwise all but the last
        // character (which then prefixes the next piece), or a single character.
        let end = run(i, Cat::Space);
        let stop = if end == n || end - i == 1 {
            end
        } else {
            end - 1
        };
        f(&text[at(i)..at(stop)]);
        i = stop;
    }
}

/// Bound on cached pieces per thread; the cache is cleared when it fills (web text has a long
/// tail of rare pieces).
const CACHE_MAX: usize = 1 << 20;

/// The ids of one cached piece, stored in the table itself (no allocation per entry: on
/// unseen text most pieces are new, and a boxed slice each cost an allocation in fresh memory).
/// GPT-2 ids fit in 16 bits; pieces of more than [`CachedIds::MAX`] tokens are not cached.
#[derive(Clone, Copy)]
struct CachedIds {
    len: u16,
    ids: [u16; CachedIds::MAX],
}

impl CachedIds {
    const MAX: usize = 7;

    fn new(ids: &[u32]) -> Option<Self> {
        if ids.len() > Self::MAX {
            return None;
        }
        let mut c = Self {
            len: ids.len() as u16,
            ids: [0; Self::MAX],
        };
        for (d, &s) in c.ids.iter_mut().zip(ids) {
            *d = s as u16; // r50k ids are < 50257
        }
        Some(c)
    }
}

thread_local! {
    /// Multi-token pieces of at most 15 bytes, by packed bytes (see [`crate::bpe::pack`]);
    /// longer pieces are merged each time (rare, and their ids are not worth a boxed key).
    static CACHE: RefCell<HashMap<u128, CachedIds, FastPacked>> =
        RefCell::new(HashMap::default());
}

/// Build the process-wide tables (character classes, ranks) now rather than on first use.
pub fn warm_up() {
    tables();
    crate::bpe::ranks();
}

/// GPT-2 ids of `text`, equal to tiktoken's `encode_ordinary`. A cache miss goes to
/// [`crate::bpe`]'s merge directly (not through tiktoken's regex again).
pub fn encode_ordinary_fast(text: &str) -> Vec<u32> {
    let ranks = crate::bpe::ranks();
    let mut out = Vec::with_capacity(text.len() / 4 + 1);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        split(text, |piece| {
            // Most pieces are one token (" the"): one lookup in the rank table, and the cache
            // only holds multi-token pieces (fewer allocations on unseen text, a smaller table).
            if let Some(id) = ranks.token(piece) {
                out.push(id);
                return;
            }
            let Some(key) = crate::bpe::pack(piece.as_bytes()) else {
                ranks.encode_piece(piece, &mut out);
                return;
            };
            if let Some(c) = cache.get(&key) {
                out.extend(c.ids[..c.len as usize].iter().map(|&id| u32::from(id)));
                return;
            }
            let start = out.len();
            ranks.encode_piece(piece, &mut out);
            if let Some(c) = CachedIds::new(&out[start..]) {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, c);
            }
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        split(s, |p| v.push(p.to_string()));
        v
    }

    #[test]
    fn splits_like_the_regex() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(
            pieces("don't  stop\n\n x  "),
            ["don", "'t", " ", " stop", "\n\n", " x", "  "]
        );
        assert_eq!(
            pieces("it's 'S 123abc ?!'s"),
            ["it", "'s", " '", "S", " 123", "abc", " ?!'", "s"]
        );
        assert_eq!(pieces("a\tb"), ["a", "\t", "b"]);
    }

    #[test]
    fn ids_equal_tiktoken_on_tricky_text() {
        let cases = [
            "",
            " ",
            "  ",
            "a  b\n\n\nc   ",
            "naïve café ½ ٣ 中文字 🎉👍🏽",
            "x\u{a0}y\u{2028}z",
            "'ll've're'd",
            "<|endoftext|>",
            "\r\n\r\n",
            " \n",
            "1,000,000.5",
            // Pieces of ≤ 15 bytes with more tokens than the cache stores inline, each twice
            // (the second time past the cache), beside cached ones.
            "🎉🎉🎉 🎉🎉🎉 🎉🎉🎉 naïveté naïveté",
            "ÿÿÿÿÿÿÿ ÿÿÿÿÿÿÿ",
        ];
        for c in cases {
            assert_eq!(
                encode_ordinary_fast(c),
                crate::tokenizer::gpt2().encode_ordinary(c),
                "{c:?}"
            );
        }
    }
}
