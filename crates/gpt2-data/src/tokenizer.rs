//! GPT-2's byte-level BPE (tiktoken's `r50k_base`, identical to OpenAI's `gpt2` encoding).
//!
//! Web text is encoded with `encode_ordinary`: a literal `<|endoftext|>` inside a page is text
//! (it becomes `<`, `|`, `endo`, …), never the separator. The separator is inserted by us:
//! EOT 50256 before each document, as llm.c's `fineweb.py` does.

use tiktoken_rs::CoreBPE;

/// `<|endoftext|>`, the document separator and the only special token of GPT-2.
pub const EOT: u32 = 50256;
/// GPT-2's vocabulary size (50,000 merges + 256 bytes + EOT).
pub const VOCAB_SIZE: usize = 50257;

/// The process-wide GPT-2 tokenizer (built once; tiktoken-rs bundles the ranks, so no network).
pub fn gpt2() -> &'static CoreBPE {
    tiktoken_rs::r50k_base_singleton()
}

/// Token ids of `text`, with special-token strings treated as plain text. Uses the fast
/// pre-tokeniser in [`crate::pretokenize`]; ids equal tiktoken's (tested).
pub fn encode_ordinary(text: &str) -> Vec<u32> {
    crate::pretokenize::encode_ordinary_fast(text)
}

/// tiktoken-rs's own `encode_ordinary` (regex split), the reference for the fast path.
pub fn encode_ordinary_reference(text: &str) -> Vec<u32> {
    gpt2().encode_ordinary(text)
}

/// Decode ids to text (invalid UTF-8 at a cut point is replaced, for display).
pub fn decode_lossy(ids: &[u32]) -> String {
    match gpt2().decode_bytes(ids) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<undecodable token {}>", e.token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_world_matches_openai() {
        assert_eq!(encode_ordinary("Hello world"), vec![15496, 995]);
    }

    #[test]
    fn literal_endoftext_is_text() {
        let ids = encode_ordinary("a <|endoftext|> b");
        assert!(!ids.contains(&EOT), "{ids:?}");
        assert_eq!(decode_lossy(&ids), "a <|endoftext|> b");
    }
}
