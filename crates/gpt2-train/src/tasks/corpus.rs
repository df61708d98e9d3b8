//! Perplexity of whole texts: WikiText as lm-eval-harness's `wikitext` task scores it, and Penn
//! Treebank as one stream with the same windows.
//!
//! - Documents: the `page`s of `EleutherAI/wikitext_document_level` (lm-eval's dataset), cut from
//!   `wiki.test.raw` at each top-level heading line (` = Title = `).
//! - Each page is detokenised by lm-eval's `wikitext_detokenizer`, rule for rule and in its order
//!   (`lm_eval/tasks/wikitext/preprocess_wikitext.py`), then scored with lm-eval's rolling
//!   windows (`score::rolling_windows`), or overlapping ones with `--stride`.
//! - `word_perplexity = exp(Σ nll / Σ words)` with words counted on the page *before*
//!   detokenisation (`re.split(r"\s+", page)`), `byte_perplexity` and `bits_per_byte` over its
//!   UTF-8 bytes, `token_perplexity` over the tokens scored.
//! - PTB (Mikolov's `ptb.test.txt`): the file as one stream; `word_perplexity` over its words plus
//!   one end of sentence per line (78,669 + 3,761 for the test set).

use gpt2_data::tokenizer::encode_ordinary;
use gpt2_model::Gpt2;

use super::score::{rolling_windows, strided_windows, Query};
use super::{score_all, Examples, Metrics, TaskOptions};
use crate::error::Result;

/// One scored text: a wikitext page, or the PTB stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The page's heading line, trimmed (empty for PTB).
    pub title: String,
    /// Words of the original text (wikitext: `re.split(r"\s+")` pieces; PTB: whitespace-separated
    /// words plus one per line).
    pub words: usize,
    /// UTF-8 bytes of the original text.
    pub bytes: usize,
    pub n_tokens: usize,
    /// Summed NLL of every token (nats).
    pub nll: f64,
    /// The text that was tokenised (detokenised, for wikitext).
    pub scored_text: String,
}

/// The pages of a `wiki.*.raw` text, as `EleutherAI/wikitext_document_level` yields them: a page
/// starts at a top-level heading line and runs to the line before the next one (without that
/// line's `\n`); lines before the first heading form a page only if they hold more than
/// whitespace; the last page runs to the end of the text.
pub fn wikitext_pages(text: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut buf: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        let r = line.replace("= = =", "===").replace("= =", "==");
        let r = r.trim();
        if r.starts_with("= ") && r.ends_with(" =") {
            let page = buf.join("\n");
            if !page.trim().is_empty() {
                pages.push(page);
            }
            buf.clear();
        }
        buf.push(line);
    }
    pages.push(buf.join("\n"));
    pages
}

/// Python's `\s` on `str`: `str.isspace()`, which also counts the separators U+001C–U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `len(re.split(r"\s+", text))`: the pieces between runs of whitespace, empty ones at either end
/// included.
pub fn wikitext_words(text: &str) -> usize {
    let mut pieces = 1;
    let mut in_space = false;
    for c in text.chars() {
        if py_space(c) {
            if !in_space {
                pieces += 1;
            }
            in_space = true;
        } else {
            in_space = false;
        }
    }
    pieces
}

/// lm-eval's `wikitext_detokenizer`, rule for rule, in its order.
pub fn wikitext_detokenize(s: &str) -> String {
    // contractions
    let mut s = s.replace("s '", "s'");
    s = replace_slash_quote_digit(&s);
    // number separators
    s = s
        .replace(" @-@ ", "-")
        .replace(" @,@ ", ",")
        .replace(" @.@ ", ".");
    // punctuation
    for p in [":", ";", ".", "!", "?", ","] {
        s = s.replace(&format!(" {p} "), &format!("{p} "));
    }
    // brackets and quotes; a pair may span lines
    for (open, close) in [('(', ')'), ('[', ']'), ('{', '}'), ('"', '"'), ('\'', '\'')] {
        s = trim_inside_pairs(&s, open, close);
    }
    // miscellaneous
    s = s
        .replace("= = = =", "====")
        .replace("= = =", "===")
        .replace("= =", "==")
        .replace(" \u{b0} ", "\u{b0}")
        .replace(" \n", "\n")
        .replace("\n ", "\n")
        .replace(" N ", " 1 ")
        .replace(" 's", "'s");
    s
}

/// `re.sub(r"/' [0-9]/", r"/'[0-9]/", s)`: a literal `/' <digit>/` becomes the literal text
/// `/'[0-9]/` (upstream's rule, kept as it is).
fn replace_slash_quote_digit(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i + 5 <= b.len() {
        if &b[i..i + 3] == b"/' " && b[i + 3].is_ascii_digit() && b[i + 4] == b'/' {
            out.push_str(&s[last..i]);
            out.push_str("/'[0-9]/");
            i += 5;
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[last..]);
    out
}

/// `re.sub(r"O\s*([^C]*?)\s*C", r"O\1C", s)` for an opening `O` and closing `C`: scanning left to
/// right, each `O` with a `C` after it (and no `C` in between, which `[^C]` forbids) loses the
/// whitespace just inside the pair; the scan resumes after the `C`. An `O` without a `C` after it
/// is left as it is.
fn trim_inside_pairs(s: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len_utf8()..];
        match after.find(close) {
            Some(j) => {
                out.push_str(&rest[..i]);
                out.push(open);
                out.push_str(after[..j].trim_matches(py_space));
                out.push(close);
                rest = &after[j + close.len_utf8()..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// Scores each of `texts` (tokenised) as one stream: `(n_tokens, nll)` per text.
fn score_streams(
    model: &Gpt2,
    token_lists: &[Vec<u32>],
    opts: &TaskOptions,
    what: &str,
) -> Result<Vec<f64>> {
    let context = model.config().block_size;
    let mut queries: Vec<Query> = Vec::new();
    let mut owner = Vec::new();
    for (d, tok) in token_lists.iter().enumerate() {
        let windows = match opts.stride {
            Some(s) => strided_windows(tok, context, s),
            None => rolling_windows(tok, context),
        };
        owner.extend(std::iter::repeat_n(d, windows.len()));
        queries.extend(windows);
    }
    let scores = score_all(model, &queries, opts, what)?;
    let mut nll = vec![0.0; token_lists.len()];
    for (d, s) in owner.into_iter().zip(scores) {
        nll[d] += s.iter().map(|t| t.nll).sum::<f64>();
    }
    Ok(nll)
}

pub(super) fn run_wikitext(
    model: &Gpt2,
    text: &str,
    opts: &TaskOptions,
) -> Result<(usize, Metrics, Examples)> {
    let pages: Vec<String> = wikitext_pages(text)
        .into_iter()
        .take(opts.limit.unwrap_or(usize::MAX))
        .collect();
    let detok: Vec<String> = pages.iter().map(|p| wikitext_detokenize(p)).collect();
    let tokens: Vec<Vec<u32>> = detok.iter().map(|t| encode_ordinary(t)).collect();
    let nlls = score_streams(model, &tokens, opts, "wikitext")?;
    let docs: Vec<Document> = pages
        .iter()
        .zip(detok)
        .zip(tokens.iter().zip(nlls))
        .map(|((page, scored_text), (tok, nll))| Document {
            title: page.split('\n').next().unwrap_or("").trim().to_string(),
            words: wikitext_words(page),
            bytes: page.len(),
            n_tokens: tok.len(),
            nll,
            scored_text,
        })
        .collect();
    let nll: f64 = docs.iter().map(|d| d.nll).sum();
    let words: usize = docs.iter().map(|d| d.words).sum();
    let bytes: usize = docs.iter().map(|d| d.bytes).sum();
    let n_tokens: usize = docs.iter().map(|d| d.n_tokens).sum();
    Ok((
        docs.len(),
        Metrics::Wikitext {
            word_perplexity: (nll / words as f64).exp(),
            byte_perplexity: (nll / bytes as f64).exp(),
            bits_per_byte: nll / bytes as f64 / std::f64::consts::LN_2,
            token_perplexity: (nll / n_tokens as f64).exp(),
        },
        Examples::Corpus(docs),
    ))
}

/// The first `limit` lines of `text`, each with its `\n` (all of it with fewer lines).
fn first_lines(text: &str, limit: Option<usize>) -> &str {
    let Some(limit) = limit else { return text };
    let mut end = 0;
    for _ in 0..limit {
        match text[end..].find('\n') {
            Some(i) => end += i + 1,
            None => return text,
        }
    }
    &text[..end]
}

pub(super) fn run_ptb(
    model: &Gpt2,
    text: &str,
    opts: &TaskOptions,
) -> Result<(usize, Metrics, Examples)> {
    let text = first_lines(text, opts.limit);
    let tokens = encode_ordinary(text);
    let nll = score_streams(model, std::slice::from_ref(&tokens), opts, "ptb")?[0];
    let lines = text.matches('\n').count() + usize::from(!text.is_empty() && !text.ends_with('\n'));
    let words = text.split_whitespace().count();
    let doc = Document {
        title: String::new(),
        words: words + lines,
        bytes: text.len(),
        n_tokens: tokens.len(),
        nll,
        scored_text: text.to_string(),
    };
    Ok((
        lines,
        Metrics::Ptb {
            word_perplexity: (nll / (words + lines) as f64).exp(),
            token_perplexity: (nll / tokens.len() as f64).exp(),
        },
        Examples::Corpus(vec![doc]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_split_at_top_level_headings_only() {
        let text = " \n = A = \n \n x \n = = Sub = = \n y \n \n = B = \n z \n";
        let pages = wikitext_pages(text);
        assert_eq!(
            pages,
            vec![" = A = \n \n x \n = = Sub = = \n y \n ", " = B = \n z \n"]
        );
    }

    #[test]
    fn words_count_like_re_split() {
        assert_eq!(wikitext_words(" a  b\nc "), 5); // ['', 'a', 'b', 'c', '']
        assert_eq!(wikitext_words("a"), 1);
        assert_eq!(wikitext_words(""), 1);
    }

    #[test]
    fn detokeniser_rules() {
        assert_eq!(wikitext_detokenize("1 @,@ 000 @.@ 5"), "1,000.5");
        assert_eq!(wikitext_detokenize("the ( big ) cat 's"), "the (big) cat's");
        assert_eq!(wikitext_detokenize("a \" b \" c ; d"), "a \"b\" c; d");
        assert_eq!(wikitext_detokenize("x /' 5/ y"), "x /'[0-9]/ y");
        // Expected values from lm-eval's function (tests/reference/eval/scorer.py's copy).
        assert_eq!(wikitext_detokenize(" = = S = = \n N "), " == S ==\nN ");
        // A pair spans lines; an unmatched opener stays.
        assert_eq!(wikitext_detokenize("( a\n b ) ( c"), "(a\nb) ( c");
    }
}
