//! Held-out evaluation (`gpt2 eval`) and the inference helpers `gpt2 sample`/`gpt2 export` share:
//! checkpoint resolution, model loading without autodiff, and token-streaming generation.
//!
//! **What is measured.** Every token of each shard (or the first `max_tokens` predictions over
//! all shards) is predicted from the tokens before it, in windows of at most `context` tokens
//! (default: the model's `block_size`) that advance by `stride` (default: `context`). The first
//! window's predictions all count; each later window counts only its last `stride` predictions,
//! so with `stride < context` every counted token sees at least `context - stride` tokens of
//! history (the sliding window of Hugging Face's "perplexity of fixed-length models"). Token
//! `i` predicts token `i + 1` of the same shard; the shard is one stream, so the EOT between two
//! documents is predicted like any token and the context is *not* reset at document boundaries.
//!
//! **Compared with the GPT-2 paper.** Radford et al. (2019, §3) evaluated each zero-shot
//! dataset with its own invertible de-tokenisers, on that dataset's own documents, with the
//! full 1024-token context and overlapping windows for long texts; their numbers are therefore
//! not directly comparable with a WebText-style held-out loss. Ours is the llm.c/nanoGPT
//! validation loss over concatenated documents: a window may start mid-document and may see the
//! end of the previous document, which makes the first tokens of each document slightly easier
//! than in a per-document evaluation. Bits per byte (total nats ÷ (ln 2 × UTF-8 bytes of the
//! evaluated text)) divides by the shard index's byte counts and so does not depend on the
//! tokenizer; it is the number to compare across vocabularies (the paper reports it for enwik8).
//!
//! Bytes: a document counts when its tokens were evaluated; when the budget stops inside a
//! document, that document's bytes are pro-rated by the fraction of its text tokens evaluated.
//! Shards without an `.idx` (plain llm.c) are measured by decoding the evaluated tokens.

use std::path::PathBuf;

use burn::data::dataloader::Progress;
use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use burn_train::metric::{LossInput, LossMetric, Metric, MetricMetadata, Numeric};
use gpt2_data::ShardReader;
use gpt2_model::Gpt2;
use serde::Serialize;

use crate::error::{Result, TrainError};

/// Settings of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Window length in tokens (`None`: the model's `block_size`).
    pub context: Option<usize>,
    /// Window step (`None`: the context, i.e. disjoint windows). Must be in `1..=context`.
    pub stride: Option<usize>,
    /// Windows per forward pass. The LM head runs in row chunks (the model's
    /// `lm_head_chunk_rows`), so the logits never take more than one chunk's memory.
    pub batch: usize,
    /// Stop after this many predicted tokens over all shards (`None`: every token).
    pub max_tokens: Option<u64>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            context: None,
            stride: None,
            batch: 4,
            max_tokens: None,
        }
    }
}

/// The result for one shard.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardEval {
    /// The `.bin` file.
    pub path: PathBuf,
    /// Tokens whose prediction was scored.
    pub tokens: u64,
    /// Sum of the scored tokens' negative log-likelihoods (nats).
    pub nll_sum: f64,
    /// Mean NLL (nats/token).
    pub nll: f64,
    /// UTF-8 bytes of the evaluated text (pro-rated for a partially covered last document).
    pub bytes: f64,
    /// Bits per byte of this shard.
    pub bpb: f64,
    /// Where the byte count came from: `"index"` (the shard's `.idx`) or `"decoded"` (no index:
    /// the evaluated tokens were decoded).
    pub bytes_source: String,
    /// True when the token budget stopped inside this shard.
    pub partial: bool,
}

/// The result over all shards (token-weighted).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    /// One row per shard, in the order given.
    pub per_shard: Vec<ShardEval>,
    /// Tokens scored over all shards.
    pub tokens: u64,
    /// Mean NLL in nats per token.
    pub nll: f64,
    /// Perplexity, `exp(nll)`.
    pub ppl: f64,
    /// Bits per byte: total nats ÷ (ln 2 × bytes).
    pub bpb: f64,
    /// UTF-8 bytes of the evaluated text.
    pub bytes: f64,
    /// The window length used.
    pub context: usize,
    /// The window step used.
    pub stride: usize,
    /// True when `max_tokens` stopped the evaluation before the end of the shards.
    pub partial: bool,
    /// Wall time of the forward passes (reading, forward, loss), and scored tokens per second:
    /// the forward-only throughput that `make bench` sets against training's.
    pub seconds: f64,
    pub tokens_per_sec: f64,
}

/// One window: input positions `[begin, end)` (each predicting the next token), of which the
/// last `count` are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    begin: u64,
    end: u64,
    count: u64,
}

/// The windows covering the first `n_pred` predictions of a shard (HF's sliding-window loop).
fn windows(n_pred: u64, context: u64, stride: u64) -> Vec<Window> {
    let mut out = Vec::new();
    let (mut begin, mut prev_end) = (0u64, 0u64);
    while prev_end < n_pred {
        let end = (begin + context).min(n_pred);
        out.push(Window {
            begin,
            end,
            count: end - prev_end,
        });
        prev_end = end;
        begin += stride;
    }
    out
}

fn bad_option(message: String) -> TrainError {
    TrainError::Checkpoint {
        path: PathBuf::from("<eval options>"),
        message,
        hint: "choose 1 <= stride <= context <= the model's block_size, batch >= 1".into(),
    }
}

/// Evaluates `model` on `shards` (see the module docs for exactly what is counted). Runs on the
/// model's device without autodiff (`model.valid()`); `progress` shows an indicatif bar on a
/// terminal.
pub fn evaluate_shards(
    model: &Gpt2,
    shards: &[PathBuf],
    opts: &EvalOptions,
    progress: bool,
) -> Result<EvalReport> {
    let block = model.config().block_size;
    let context = opts.context.unwrap_or(block);
    let stride = opts.stride.unwrap_or(context);
    if context == 0 || context > block {
        return Err(bad_option(format!(
            "context {context} must be in 1..={block} (the model's block_size)"
        )));
    }
    if stride == 0 || stride > context {
        return Err(bad_option(format!(
            "stride {stride} must be in 1..={context} (the context)"
        )));
    }
    if opts.batch == 0 {
        return Err(bad_option("batch must be >= 1".into()));
    }
    let model = model.valid();
    let readers = shards
        .iter()
        .map(|p| ShardReader::open(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut budget = opts.max_tokens.unwrap_or(u64::MAX);
    let plan: Vec<u64> = readers
        .iter()
        .map(|r| {
            let n = r.len().saturating_sub(1).min(budget);
            budget -= n;
            n
        })
        .collect();
    if plan.iter().sum::<u64>() == 0 {
        return Err(TrainError::Checkpoint {
            path: shards.first().cloned().unwrap_or_default(),
            message: format!(
                "nothing to evaluate: {} shard(s), max_tokens {:?}",
                shards.len(),
                opts.max_tokens
            ),
            hint: "pass shards holding at least two tokens, and --max-tokens >= 1".into(),
        });
    }
    let bar = progress_bar(plan.iter().sum(), progress);
    let started = std::time::Instant::now();
    let mut per_shard = Vec::with_capacity(readers.len());
    for (r, &n_pred) in readers.iter().zip(&plan) {
        let nll_sum = shard_nll(
            &model,
            r,
            n_pred,
            context as u64,
            stride as u64,
            opts.batch,
            bar.as_ref(),
        )?;
        let (bytes, source) = evaluated_bytes(r, n_pred);
        let partial = n_pred < r.len().saturating_sub(1);
        per_shard.push(ShardEval {
            path: r.path().to_path_buf(),
            tokens: n_pred,
            nll_sum,
            nll: nll_sum / n_pred.max(1) as f64,
            bytes,
            bpb: bpb(nll_sum, bytes),
            bytes_source: source.into(),
            partial,
        });
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let tokens: u64 = per_shard.iter().map(|s| s.tokens).sum();
    let nll_sum: f64 = per_shard.iter().map(|s| s.nll_sum).sum();
    let bytes: f64 = per_shard.iter().map(|s| s.bytes).sum();
    let nll = nll_sum / tokens.max(1) as f64;
    let partial = per_shard.iter().any(|s| s.partial);
    let seconds = started.elapsed().as_secs_f64();
    Ok(EvalReport {
        per_shard,
        tokens,
        nll,
        ppl: nll.exp(),
        bpb: bpb(nll_sum, bytes),
        bytes,
        context,
        stride,
        partial,
        seconds,
        tokens_per_sec: tokens as f64 / seconds.max(1e-9),
    })
}

fn bpb(nll_sum: f64, bytes: f64) -> f64 {
    if bytes > 0.0 {
        nll_sum / (std::f64::consts::LN_2 * bytes)
    } else {
        f64::NAN
    }
}

fn progress_bar(total: u64, progress: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "eval [{bar:30}] {pos}/{len} tokens {per_sec} ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    Some(bar)
}

/// Sum of NLL (nats) over the first `n_pred` predictions of one shard. The per-token NLLs come
/// from `Gpt2::forward_nll` (the LM head in row chunks, fused softmax); burn-train's `LossMetric` keeps their running
/// token-weighted mean, so the sum is that mean times `n_pred`.
fn shard_nll(
    model: &Gpt2,
    r: &ShardReader,
    n_pred: u64,
    context: u64,
    stride: u64,
    batch: usize,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<f64> {
    if n_pred == 0 {
        return Ok(0.0); // the budget ran out before this shard
    }
    let all = windows(n_pred, context, stride);
    let mut mean = LossMetric::new();
    let mut done = 0;
    let mut i = 0;
    while i < all.len() {
        // A batch holds windows of the same length and scored count (all but the first and
        // the last window of a shard are alike).
        let key = (all[i].end - all[i].begin, all[i].count);
        let mut j = i;
        while j < all.len() && j - i < batch && (all[j].end - all[j].begin, all[j].count) == key {
            j += 1;
        }
        let nll = batch_nll(model, r, &all[i..j])?;
        let scored: u64 = all[i..j].iter().map(|w| w.count).sum();
        done += scored;
        mean.update(&LossInput::new(nll), &metric_metadata(done, n_pred))
            .map_err(|e| read_error(r, e))?;
        if let Some(bar) = bar {
            bar.inc(scored);
        }
        i = j;
    }
    Ok(mean.final_value().current() * n_pred as f64)
}

/// What burn-train's metrics are told about progress (they only display it).
pub(crate) fn metric_metadata(done: u64, total: u64) -> MetricMetadata {
    MetricMetadata {
        progress: Progress {
            items_processed: done as usize,
            items_total: total as usize,
            unit: Some("tokens".into()),
        },
        iteration: None,
        lr: None,
    }
}

fn read_error(r: &ShardReader, e: burn::tensor::TensorReadError) -> TrainError {
    TrainError::Checkpoint {
        path: r.path().to_path_buf(),
        message: format!("reading the evaluation result back from the device failed: {e:?}"),
        hint: "check the device (driver, memory) and rerun".into(),
    }
}

/// The NLL of each scored position of equal-shaped windows, from one forward pass: `[B·count]`.
fn batch_nll(model: &Gpt2, r: &ShardReader, ws: &[Window]) -> Result<Tensor<1>> {
    let vocab = model.config().vocab_size;
    let (b, len, count) = (
        ws.len(),
        (ws[0].end - ws[0].begin) as usize,
        ws[0].count as usize,
    );
    let mut row = vec![0u32; len + 1];
    let mut x = Vec::with_capacity(b * len);
    let mut y = Vec::with_capacity(b * count);
    let mut rows = Vec::with_capacity(b * count);
    for (wi, w) in ws.iter().enumerate() {
        r.read_into(w.begin, &mut row);
        if let Some(&bad) = row.iter().find(|&&t| t as usize >= vocab) {
            return Err(TrainError::Checkpoint {
                path: r.path().to_path_buf(),
                message: format!(
                    "token {bad} (window at {}) is outside the model's vocabulary of {vocab}",
                    w.begin
                ),
                hint: "evaluate shards made with the model's tokenizer".into(),
            });
        }
        rows.extend((len - count..len).map(|i| (wi * len + i) as i64));
        x.extend(row[..len].iter().map(|&t| t as i64));
        y.extend(row[len + 1 - count..].iter().map(|&t| t as i64));
    }
    let device = model.device();
    let x = Tensor::<2, Int>::from_data(TensorData::new(x, [b, len]), &device);
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [b * count]), &device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(y, [b * count]), &device);
    // (B·count, 2): the NLL and the greedy gap of each scored position; the head runs in row
    // chunks on the scored positions only, so no [B, len, V] logits exist.
    Ok(model
        .forward_nll(x, rows, y)
        .narrow(1, 0, 1)
        .reshape([b * count]))
}

/// UTF-8 bytes of the text whose tokens were the targets `1..=n_pred` of a shard.
fn evaluated_bytes(r: &ShardReader, n_pred: u64) -> (f64, &'static str) {
    let end = n_pred + 1; // exclusive end of the target tokens
    let docs = r.documents();
    if docs.is_empty() {
        let mut ids = vec![0u32; n_pred as usize];
        r.read_into(1, &mut ids);
        ids.retain(|&t| t != gpt2_data::tokenizer::EOT);
        let bytes = gpt2_data::tokenizer::gpt2()
            .decode_bytes(&ids)
            .map(|b| b.len())
            .unwrap_or(0);
        return (bytes as f64, "decoded");
    }
    let mut bytes = 0.0;
    for (k, &(off, b)) in docs.iter().enumerate() {
        if off >= end {
            break;
        }
        let doc_end = docs.get(k + 1).map_or(r.len(), |d| d.0);
        if doc_end <= end {
            bytes += b as f64;
        } else {
            // Pro-rate by text tokens (the document's leading EOT is not text).
            let text_tokens = doc_end - off - 1;
            let covered = (end - off).saturating_sub(1);
            if text_tokens > 0 {
                bytes += b as f64 * covered as f64 / text_tokens as f64;
            }
        }
    }
    (bytes, "index")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::logits_of;
    use burn::tensor::Device;
    use gpt2_data::shard::ShardWriter;
    use gpt2_model::GenerateConfig;
    use std::path::Path;

    fn write_shard(path: &Path, docs: &[(Vec<u16>, u64)]) {
        let mut w = ShardWriter::create(path, "val").unwrap();
        for (toks, bytes) in docs {
            let b: Vec<u8> = toks.iter().flat_map(|t| t.to_le_bytes()).collect();
            w.push(&b, *bytes, None).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn windows_cover_every_prediction_once() {
        for (n, c, s) in [
            (10, 4, 4),
            (10, 4, 2),
            (9, 4, 3),
            (3, 8, 8),
            (1, 4, 1),
            (100, 16, 5),
        ] {
            let ws = windows(n, c, s);
            assert_eq!(ws.iter().map(|w| w.count).sum::<u64>(), n, "{n} {c} {s}");
            assert_eq!(ws[0].count, ws[0].end - ws[0].begin);
            for w in &ws {
                assert!(w.end - w.begin <= c && w.count <= w.end - w.begin);
            }
            for p in ws.windows(2) {
                assert_eq!(p[1].end - p[1].count, p[0].end, "contiguous");
                assert!(p[1].count <= s);
            }
        }
        assert_eq!(
            windows(10, 4, 2)[1],
            Window {
                begin: 2,
                end: 6,
                count: 2
            }
        );
    }

    /// The fixture from HF transformers (see gpt2-model/tests/hf_reference.rs): its recorded
    /// loss uses random targets, so the next-token loss of its input ids is recomputed in f64
    /// from the logits transformers recorded, and compared with eval on a shard of those ids.
    #[test]
    fn nll_matches_transformers_on_the_reference_fixture() {
        use safetensors::SafeTensors;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gpt2-model/tests/reference");
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let ids: Vec<i64> = st
            .tensor("input_ids")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let shape = st.tensor("input_ids").unwrap().shape().to_vec();
        let (bsz, t) = (shape[0], shape[1]);
        let logits: Vec<f32> = st
            .tensor("logits")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let v = logits.len() / (bsz * t);
        let mut want = 0.0f64;
        for b in 0..bsz {
            for p in 0..t - 1 {
                let row = &logits[(b * t + p) * v..(b * t + p + 1) * v];
                let m = row.iter().fold(f64::MIN, |a, &x| a.max(x as f64));
                let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
                want += lse - row[ids[b * t + p + 1] as usize] as f64;
            }
        }
        want /= (bsz * (t - 1)) as f64;

        let tmp = tempfile::tempdir().unwrap();
        let shards: Vec<PathBuf> = (0..bsz)
            .map(|b| {
                let p = tmp.path().join(format!("ref_val_{b:06}.bin"));
                write_shard(
                    &p,
                    &[(
                        ids[b * t..(b + 1) * t].iter().map(|&x| x as u16).collect(),
                        100,
                    )],
                );
                p
            })
            .collect();
        let model = gpt2_model::load_hf(dir.join("model"), &Device::flex()).unwrap();
        let opts = EvalOptions {
            context: Some(t),
            batch: 2,
            ..Default::default()
        };
        let r = evaluate_shards(&model, &shards, &opts, false).unwrap();
        assert_eq!(r.tokens, (bsz * (t - 1)) as u64);
        assert!(
            (r.nll - want).abs() < 1e-5,
            "eval {} vs transformers {}",
            r.nll,
            want
        );
        assert!((r.ppl - want.exp()).abs() < 1e-3);
        let want_bpb =
            want * (bsz * (t - 1)) as f64 / (std::f64::consts::LN_2 * 100.0 * bsz as f64);
        assert!((r.bpb - want_bpb).abs() < 1e-5, "{} {}", r.bpb, want_bpb);
    }

    fn tiny() -> Gpt2 {
        let cfg = gpt2_model::Gpt2Config::preset("tiny").unwrap();
        Gpt2::new(&cfg, &Device::flex(), 5).unwrap()
    }

    fn tokens(n: usize, salt: u64) -> Vec<u16> {
        (0..n as u64)
            .map(|i| ((i * 7919 + salt * 104_729) % 50_000) as u16)
            .collect()
    }

    #[test]
    fn nll_equals_forward_loss_on_the_same_windows() {
        let model = tiny();
        let (t, k) = (16usize, 5usize);
        let toks = tokens(t * k + 1, 1);
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.bin");
        write_shard(&p, &[(toks.clone(), 1000)]);
        let r = evaluate_shards(
            &model,
            &[p],
            &EvalOptions {
                context: Some(t),
                batch: 2,
                ..Default::default()
            },
            false,
        )
        .unwrap();
        let device = model.device();
        let mut sum = 0.0;
        for w in 0..k {
            let x: Vec<i64> = toks[w * t..(w + 1) * t].iter().map(|&v| v as i64).collect();
            let y: Vec<i64> = toks[w * t + 1..(w + 1) * t + 1]
                .iter()
                .map(|&v| v as i64)
                .collect();
            let x = Tensor::<2, Int>::from_data(TensorData::new(x, [1, t]), &device);
            let y = Tensor::<2, Int>::from_data(TensorData::new(y, [1, t]), &device);
            sum += model.forward_loss(x, y).into_scalar::<f32>() as f64;
        }
        let want = sum / k as f64;
        assert_eq!(r.tokens, (t * k) as u64);
        assert!((r.nll - want).abs() < 1e-5, "{} vs {}", r.nll, want);
    }

    #[test]
    fn sliding_window_scores_each_token_with_longer_context() {
        let model = tiny();
        let toks = tokens(41, 2);
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.bin");
        write_shard(&p, &[(toks.clone(), 10)]);
        let (c, s) = (16usize, 4usize);
        let r = evaluate_shards(
            &model,
            &[p],
            &EvalOptions {
                context: Some(c),
                stride: Some(s),
                batch: 3,
                ..Default::default()
            },
            false,
        )
        .unwrap();
        // By hand: token i+1 predicted from toks[max(0, start)..=i] where the window is the one
        // that scores position i.
        let mut sum = 0.0;
        for w in windows(40, c as u64, s as u64) {
            let x = &toks[w.begin as usize..w.end as usize];
            let logits = logits_of(&model, &x.iter().map(|&v| v as u32).collect::<Vec<_>>());
            let v = model.config().vocab_size;
            for pos in (w.end - w.count)..w.end {
                let row = &logits[(pos - w.begin) as usize * v..(pos - w.begin + 1) as usize * v];
                let m = row.iter().fold(f64::MIN, |a, &x| a.max(x as f64));
                let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
                sum += lse - row[toks[pos as usize + 1] as usize] as f64;
            }
        }
        assert_eq!(r.tokens, 40);
        assert!(
            (r.nll - sum / 40.0).abs() < 1e-5,
            "{} vs {}",
            r.nll,
            sum / 40.0
        );
    }

    #[test]
    fn budget_pro_rates_the_last_document_and_spans_shards() {
        let model = tiny();
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.bin");
        let b = tmp.path().join("b.bin");
        // Shard a: docs of 11 and 21 tokens (10 and 20 text tokens), 100 and 200 bytes.
        let mut d1 = tokens(11, 3);
        d1[0] = 50256;
        let mut d2 = tokens(21, 4);
        d2[0] = 50256;
        write_shard(&a, &[(d1, 100), (d2, 200)]);
        write_shard(&b, &[(tokens(9, 5), 50)]);
        let full = evaluate_shards(
            &model,
            &[a.clone(), b.clone()],
            &EvalOptions {
                context: Some(8),
                ..Default::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(full.tokens, 31 + 8);
        assert_eq!(full.per_shard[0].bytes, 300.0);
        assert!(!full.partial);
        // Budget 20: targets 1..=20 = doc 1 (tokens 1..=10) + doc 2's EOT and 9 of its 20 text tokens.
        let part = evaluate_shards(
            &model,
            &[a.clone(), b.clone()],
            &EvalOptions {
                context: Some(8),
                max_tokens: Some(20),
                ..Default::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(part.tokens, 20);
        assert_eq!(part.per_shard[1].tokens, 0);
        assert!(
            (part.per_shard[0].bytes - (100.0 + 200.0 * 9.0 / 20.0)).abs() < 1e-9,
            "{}",
            part.per_shard[0].bytes
        );
        assert!(part.partial && part.per_shard[0].partial);
        // Errors name the problem.
        let e = evaluate_shards(
            &model,
            &[a],
            &EvalOptions {
                context: Some(8),
                stride: Some(9),
                ..Default::default()
            },
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("stride 9"), "{e}");
        let e = evaluate_shards(
            &model,
            &[b],
            &EvalOptions {
                max_tokens: Some(0),
                ..Default::default()
            },
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("nothing to evaluate") && e.to_string().contains("b.bin"),
            "{e}"
        );
    }

    #[test]
    fn streaming_generation_equals_generate_and_is_seeded() {
        let model = tiny();
        let cfg = GenerateConfig {
            max_new_tokens: 70,
            stop_at_eot: false,
            temperature: 0.0,
            ..Default::default()
        };
        let want = model.generate(&[464, 3290], &cfg).unwrap();
        let mut seen = Vec::new();
        let got = model
            .generate_streaming(&[464, 3290], &cfg, |t| {
                seen.push(t);
                true
            })
            .unwrap();
        assert_eq!(got, want);
        assert_eq!(seen, want);
        assert_eq!(got.len(), 70, "crosses the 64-token context");
        let cfg = GenerateConfig {
            max_new_tokens: 20,
            stop_at_eot: false,
            seed: 9,
            top_k: Some(50),
            top_p: Some(0.9),
            ..Default::default()
        };
        let a = model.generate_streaming(&[464], &cfg, |_| true).unwrap();
        let b = model.generate_streaming(&[464], &cfg, |_| true).unwrap();
        let c = model
            .generate_streaming(
                &[464],
                &GenerateConfig {
                    seed: 10,
                    ..cfg.clone()
                },
                |_| true,
            )
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            model.generate(&[464], &cfg).unwrap(),
            "streaming = generate, seeded sampling too"
        );
        assert_ne!(a, c);
        let stopped = model.generate_streaming(&[464], &cfg, |_| false).unwrap();
        assert_eq!(stopped.len(), 1);
    }
}
