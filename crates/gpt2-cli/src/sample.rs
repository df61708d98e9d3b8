//! `gpt2 sample`: text from a checkpoint, streamed to stdout token by token as it is generated
//! (KV cache; `Gpt2::generate_streaming`). Tokens are decoded incrementally: a
//! character whose UTF-8 bytes are split across tokens is held back until it is complete.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gpt2_data::tokenizer::{encode_ordinary, gpt2, EOT};
use gpt2_model::GenerateConfig;
use gpt2_train::infer::load_checkpoint;

#[derive(Args)]
pub struct SampleArgs {
    /// A run directory (→ its newest complete checkpoint), a checkpoint directory, or an HF
    /// GPT-2 model directory / `.safetensors` file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue. Without it, stdin is read when it is not a terminal; an empty prompt
    /// starts from `<|endoftext|>` (50256), i.e. a new document.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Tokens to generate per sample, at most.
    #[arg(long, default_value_t = 200)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 = greedy (argmax).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 200)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this total probability, in (0, 1].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed of sample 1; sample i uses seed + i - 1. Same seed, same text.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// How many samples; each is preceded by a `--- sample N ---` line when more than one.
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Keep going after `<|endoftext|>` instead of stopping there.
    #[arg(long)]
    pub ignore_eot: bool,
    /// Also write prompt ids and each sample's seed, ids and text as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Device: `cpu` (default), `cuda` or `wgpu` (Vulkan/Metal/DX12), each only in a binary
    /// built with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `gpt2 sample`: read the prompt, load the checkpoint, stream each sample to stdout.
pub fn run(a: SampleArgs) -> Result<()> {
    let prompt = match a.prompt {
        Some(p) => p,
        None if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            s
        }
        None => String::new(),
    };
    let mut ids = encode_ordinary(&prompt);
    if ids.is_empty() {
        ids.push(EOT);
    }
    let device = gpt2_train::infer::inference_device(&a.device)?;
    let (model, _) = load_checkpoint(&a.checkpoint, &device)?;
    let mut out = std::io::stdout().lock();
    let mut samples = Vec::new();
    for i in 0..a.num_samples {
        let seed = a.seed.wrapping_add(i as u64);
        let config = GenerateConfig {
            max_new_tokens: a.max_new_tokens,
            temperature: a.temperature,
            top_k: (a.top_k > 0).then_some(a.top_k),
            top_p: a.top_p,
            seed,
            stop_at_eot: !a.ignore_eot,
        };
        if a.num_samples > 1 {
            writeln!(
                out,
                "{}--- sample {} ---",
                if i > 0 { "\n" } else { "" },
                i + 1
            )?;
        }
        let mut text = Utf8Stream::default();
        let mut io_error = None;
        let new = model.generate_streaming(&ids, &config, |t| {
            let piece = text.push(&token_bytes(t));
            match out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    io_error = Some(e); // e.g. a closed pipe: stop generating
                    false
                }
            }
        })?;
        if let Some(e) = io_error {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing to stdout");
        }
        write!(out, "{}", text.finish())?;
        writeln!(out)?;
        samples.push(serde_json::json!({ "seed": seed, "ids": new, "text": text.all }));
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({ "prompt": prompt, "prompt_ids": ids, "samples": samples });
        let text = serde_json::to_string_pretty(&doc)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The UTF-8 bytes of one token (`<|endoftext|>` for 50256; empty for an id the tokenizer does
/// not know, which only a model with a larger vocabulary can produce).
fn token_bytes(t: u32) -> Vec<u8> {
    gpt2().decode_bytes(&[t]).unwrap_or_default()
}

/// Incremental UTF-8 decoding: bytes in, the text that is complete so far out.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
    /// Everything emitted so far.
    all: String,
}

impl Utf8Stream {
    /// Appends `bytes` and returns the newly complete text; an incomplete character at the end
    /// is kept for the next call, invalid bytes become U+FFFD.
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    text.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    text.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked valid"),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            text.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        self.all.push_str(&text);
        text
    }

    /// The held-back bytes of an unfinished character, lossily (at the end of a sample).
    fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.all.push_str(&rest);
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let bytes = "a東🙂b".as_bytes();
        let mut s = Utf8Stream::default();
        let mut got = String::new();
        for b in bytes {
            got.push_str(&s.push(&[*b]));
        }
        got.push_str(&s.finish());
        assert_eq!(got, "a東🙂b");
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[0xE6, 0x9D]), "");
        assert_eq!(s.push(&[0xB1, b'x', 0xFF, b'y']), "東x\u{FFFD}y");
        assert_eq!(s.push(&[0xF0]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn tokens_that_split_a_character_decode_whole() {
        // "🙂" is several GPT-2 tokens of partial UTF-8.
        let ids = encode_ordinary("hi 🙂 東京");
        let mut s = Utf8Stream::default();
        let mut got: String = ids.iter().map(|&t| s.push(&token_bytes(t))).collect();
        got.push_str(&s.finish());
        assert_eq!(got, "hi 🙂 東京");
    }
}
