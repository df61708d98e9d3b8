//! GPT-2's tokenizer files in the Hugging Face layout (`vocab.json`, `merges.txt`,
//! `tokenizer_config.json`, `special_tokens_map.json`), made offline from the `r50k_base` ranks
//! tiktoken-rs bundles, so that `gpt2 export` produces a directory `transformers` loads with
//! `AutoTokenizer.from_pretrained(dir)`.
//!
//! - Token strings use GPT-2's byte-to-unicode map (OpenAI `encoder.py` `bytes_to_unicode`):
//!   printable Latin-1 bytes stand for themselves, the other 68 bytes map to U+0100.. in order
//!   (so a space is `Ġ`, a newline `Ċ`).
//! - Ids equal tiktoken ranks: 0..=255 are the single bytes (in `bytes_to_unicode` order),
//!   256..=50255 the merges in rank order, 50256 `<|endoftext|>` (tiktoken's own `load.py` checks
//!   that `encoder.json` equals the ranks).
//! - Merges are recovered from the ranks: token `r`'s bytes are byte-pair merged using only
//!   ranks below `r` (lowest rank first, as BPE does); this ends in exactly two parts, and those
//!   two parts are merge `r - 256`. The first is `Ġ t`, as in OpenAI's `vocab.bpe`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::tokenizer::{gpt2, EOT, VOCAB_SIZE};

/// The special token's text.
pub const EOT_TEXT: &str = "<|endoftext|>";
/// Number of merges in GPT-2's `merges.txt`.
pub const NUM_MERGES: usize = 50_000;

/// GPT-2's `bytes_to_unicode`: the character each byte is written as in `vocab.json`/`merges.txt`.
pub fn byte_to_unicode() -> [char; 256] {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut map = ['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        map[b as usize] = if printable(b) {
            char::from_u32(b).expect("Latin-1 is valid Unicode")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("U+0100.. are valid")
        };
    }
    map
}

/// Bytes → GPT-2's token string.
pub fn token_string(bytes: &[u8], map: &[char; 256]) -> String {
    bytes.iter().map(|&b| map[b as usize]).collect()
}

/// The bytes of every token id below EOT (`decode_bytes` of the single id).
fn token_bytes() -> Result<Vec<Vec<u8>>> {
    let bpe = gpt2();
    (0..EOT)
        .map(|id| {
            bpe.decode_bytes(&[id]).map_err(|e| {
                DataError::Loader(format!(
                    "tiktoken r50k_base cannot decode token {}: {e:?}",
                    id
                ))
            })
        })
        .collect()
}

/// `vocab.json`'s entries in id order: the token string of each id 0..=50256 (the last is
/// `<|endoftext|>`).
pub fn vocab() -> Result<Vec<String>> {
    let map = byte_to_unicode();
    let mut out: Vec<String> = token_bytes()?
        .iter()
        .map(|b| token_string(b, &map))
        .collect();
    out.push(EOT_TEXT.to_string());
    Ok(out)
}

/// The 50,000 merges in rank order, as pairs of token strings (merge `i` produces id `256 + i`).
pub fn merges() -> Result<Vec<(String, String)>> {
    let bytes = token_bytes()?;
    let rank: HashMap<&[u8], u32> = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_slice(), i as u32))
        .collect();
    let map = byte_to_unicode();
    let mut out = Vec::with_capacity(NUM_MERGES);
    for (r, b) in bytes.iter().enumerate().skip(256) {
        let parts = bpe_below(b, &rank, r as u32);
        if parts.len() != 2 {
            return Err(DataError::Loader(format!(
                "token {r} ({:?}) does not split into two lower-ranked tokens ({} parts)",
                token_string(b, &map),
                parts.len()
            )));
        }
        out.push((token_string(parts[0], &map), token_string(parts[1], &map)));
    }
    Ok(out)
}

/// Byte-pair merging of `bytes` using only ranks below `limit`: repeatedly merge the adjacent
/// pair whose concatenation has the lowest rank.
fn bpe_below<'a>(bytes: &'a [u8], rank: &HashMap<&[u8], u32>, limit: u32) -> Vec<&'a [u8]> {
    let mut bounds: Vec<usize> = (0..=bytes.len()).collect(); // part i = bytes[bounds[i]..bounds[i+1]]
    loop {
        let best = (0..bounds.len().saturating_sub(2))
            .filter_map(|i| {
                rank.get(&bytes[bounds[i]..bounds[i + 2]])
                    .filter(|&&r| r < limit)
                    .map(|&r| (r, i))
            })
            .min();
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    bounds.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// `vocab.json`: one object, token string → id, in id order (as OpenAI's `encoder.json`).
pub fn vocab_json(vocab: &[String]) -> String {
    let mut s = String::with_capacity(vocab.len() * 16);
    s.push('{');
    for (id, tok) in vocab.iter().enumerate() {
        if id > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}: {id}", json_string(tok));
    }
    s.push_str("}\n");
    s
}

/// `merges.txt`: the `#version: 0.2` header, then one `left right` line per merge.
pub fn merges_txt(merges: &[(String, String)]) -> String {
    let mut s = String::from("#version: 0.2\n");
    for (a, b) in merges {
        let _ = writeln!(s, "{a} {b}");
    }
    s
}

/// Writes `vocab.json`, `merges.txt`, `tokenizer_config.json` and `special_tokens_map.json`
/// into `dir` (each atomically). `model_max_length` is the model's context (1024 for GPT-2).
pub fn write_tokenizer_files(dir: &Path, model_max_length: usize) -> Result<()> {
    crate::io::create_dir_all(dir)?;
    let vocab = vocab()?;
    debug_assert_eq!(vocab.len(), VOCAB_SIZE);
    crate::io::write_atomic(&dir.join("vocab.json"), vocab_json(&vocab).as_bytes())?;
    crate::io::write_atomic(&dir.join("merges.txt"), merges_txt(&merges()?).as_bytes())?;
    let eot = serde_json::json!({
        "content": EOT_TEXT, "lstrip": false, "normalized": true, "rstrip": false,
        "single_word": false, "special": true
    });
    let config = serde_json::json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": { EOT.to_string(): eot },
        "bos_token": EOT_TEXT,
        "clean_up_tokenization_spaces": false,
        "eos_token": EOT_TEXT,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": null,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": EOT_TEXT
    });
    let special =
        serde_json::json!({ "bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT });
    for (name, value) in [
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special),
    ] {
        let text = serde_json::to_string_pretty(&value).expect("json serialises") + "\n";
        crate::io::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny independent BPE from the exported files: byte→unicode, GPT-2's pre-tokeniser,
    /// lowest-rank merge first.
    fn encode_with(
        text: &str,
        vocab: &HashMap<String, u32>,
        ranks: &HashMap<(String, String), usize>,
    ) -> Vec<u32> {
        let map = byte_to_unicode();
        let mut ids = Vec::new();
        crate::pretokenize::split(text, |piece| {
            let mut parts: Vec<String> =
                piece.bytes().map(|b| map[b as usize].to_string()).collect();
            loop {
                let best = (0..parts.len().saturating_sub(1))
                    .filter_map(|i| {
                        ranks
                            .get(&(parts[i].clone(), parts[i + 1].clone()))
                            .map(|&r| (r, i))
                    })
                    .min();
                let Some((_, i)) = best else { break };
                let right = parts.remove(i + 1);
                parts[i].push_str(&right);
            }
            ids.extend(parts.iter().map(|p| vocab[p]));
        });
        ids
    }

    #[test]
    fn vocab_and_merges_match_gpt2_and_round_trip() {
        let v = vocab().unwrap();
        assert_eq!(v.len(), 50257);
        let index: HashMap<String, u32> = v
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        assert_eq!(index.len(), 50257, "token strings are unique");
        assert_eq!(index["Ġworld"], 995);
        assert_eq!(index["Hello"], 15496);
        assert_eq!(index["<|endoftext|>"], 50256);
        assert_eq!(index["!"], 0);
        let m = merges().unwrap();
        assert_eq!(m.len(), 50_000);
        assert_eq!(m[0], ("Ġ".to_string(), "t".to_string()));
        let txt = merges_txt(&m);
        assert_eq!(txt.lines().count(), 50_001);
        assert!(txt.starts_with("#version: 0.2\nĠ t\n"));
        let json: HashMap<String, u32> = serde_json::from_str(&vocab_json(&v)).unwrap();
        assert_eq!(json, index);

        let ranks: HashMap<(String, String), usize> =
            m.into_iter().enumerate().map(|(i, p)| (p, i)).collect();
        for text in [
            "Hello world",
            "The quick brown fox's tail, isn't it?\n\n  Indented 12345 ½ naïve 東京 🙂",
            "a <|endoftext|> b\r\n\ttabs   and  spaces ",
        ] {
            assert_eq!(
                encode_with(text, &index, &ranks),
                crate::tokenizer::encode_ordinary_reference(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn writes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer_files(dir.path(), 1024).unwrap();
        for f in [
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["model_max_length"], 1024);
        assert_eq!(cfg["eos_token"], "<|endoftext|>");
    }
}
