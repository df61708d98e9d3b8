//! The trainer on real shards (a slice of the sample corpus) with the `tiny` model: exact
//! resume, accumulation equivalence, global-norm clipping by hand, the NaN policies; and, with
//! the `wgpu` feature, the same trainer on a wgpu device against flex (module `wgpu` below).

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use gpt2_train::config::NanPolicy;
use gpt2_train::{metrics, train, Resume, TrainConfig, TrainOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Shards from the first 30 sample documents (~300k tokens), prepared once per test binary.
fn shards() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("gpt2-train-test-shards-{}", std::process::id()));
        gpt2_data::prepare_documents(
            "t",
            &root().join("data/sample/sotu.jsonl.gz"),
            30,
            4096,
            &dir.join("shards"),
        )
        .unwrap();
        dir.join("shards")
    })
    .clone()
}

fn config(run_dir: &Path, extra: &[&str]) -> TrainConfig {
    let yaml = format!(
        "run_dir: {}\nmodel: tiny\nseed: 7\ndata: {{shards: {}, shuffle: true}}\n\
         batch: {{micro_batch: 2, seq_len: 32, total_batch_tokens: 128}}\n\
         optimizer: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 2, max_steps: 6}}\n\
         eval: {{interval: 3, tokens: 256}}\ncheckpoint: {{interval: 3, keep_last: 5}}\nlog_interval: 1\n",
        run_dir.display(),
        shards().display()
    );
    let p = run_dir.with_extension("yaml");
    std::fs::create_dir_all(run_dir.parent().unwrap()).unwrap();
    std::fs::write(&p, yaml).unwrap();
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    TrainConfig::from_yaml_file(&p, &overrides).unwrap()
}

fn run(cfg: TrainConfig, resume: Resume) -> gpt2_train::Result<gpt2_train::Summary> {
    let plan = cfg.plan(Path::new("test")).unwrap();
    train(
        plan,
        &TrainOptions {
            resume,
            quiet: true,
        },
    )
}

fn train_losses(run_dir: &Path) -> Vec<(u64, f64)> {
    metrics::read(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "train")
        .map(|r| (r.step, r.loss))
        .collect()
}

/// Copies run `from`'s checkpoint of `step` into run directory `to` (as its only checkpoint).
fn copy_checkpoint(from: &Path, step: u64, to: &Path) {
    let ck = gpt2_train::checkpoint::step_dir(from, step);
    let dst = gpt2_train::checkpoint::step_dir(to, step);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&ck).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn resume_from_a_checkpoint_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let s = run(config(&a, &[]), Resume::No).unwrap();
    assert_eq!(s.step, 6);
    let la = train_losses(&a);
    assert_eq!(la.len(), 6);
    assert!(la[5].1 < la[0].1, "loss falls: {la:?}");
    assert!(
        s.last_val_loss.is_some() && a.join("loss.svg").exists() && a.join("plan.json").exists()
    );

    // A second run directory that holds only A's step-3 checkpoint, resumed to the end.
    let b = dir.path().join("b");
    copy_checkpoint(&a, 3, &b);
    let s = run(config(&b, &[]), Resume::Auto).unwrap();
    assert_eq!(s.step, 6);
    let lb = train_losses(&b);
    assert_eq!(
        lb,
        la[3..].to_vec(),
        "losses of steps 4..6 are bit-identical"
    );
    let weights = |r: &Path| {
        std::fs::read(gpt2_train::checkpoint::step_dir(r, 6).join("model.safetensors")).unwrap()
    };
    assert!(
        weights(&a) == weights(&b),
        "final weights are bit-identical"
    );
    let opt = |r: &Path| {
        std::fs::read(gpt2_train::checkpoint::step_dir(r, 6).join("optimizer.safetensors")).unwrap()
    };
    assert!(opt(&a) == opt(&b), "optimizer state is bit-identical");
}

/// `eval.tasks` (HellaSwag during training, as llm.c scores it): a row per evaluation in
/// metrics.jsonl, and a run resumed by `--resume auto` keeps the rows up to its checkpoint and
/// writes the later ones exactly as the uninterrupted run did (same weights, same scores).
#[test]
fn training_time_hellaswag_is_logged_and_survives_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = root().join("tests/reference/eval/inputs/hellaswag.jsonl");
    let tasks = format!(
        "eval.tasks=[{{task: hellaswag, data: '{}', limit: 4}}]",
        data.display()
    );
    let hellaswag = |r: &Path| -> Vec<(u64, Vec<(String, f64)>)> {
        metrics::read(&r.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|x| x.kind == "hellaswag")
            .map(|x| (x.step, x.scores.into_iter().collect()))
            .collect()
    };
    let a = dir.path().join("a");
    run(config(&a, &[&tasks]), Resume::No).unwrap();
    let ha = hellaswag(&a);
    assert_eq!(
        ha.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![3, 6],
        "scored at eval.interval 3: {ha:?}"
    );
    for (step, scores) in &ha {
        let get = |k: &str| scores.iter().find(|s| s.0 == k).map(|s| s.1);
        assert_eq!(get("n"), Some(4.0), "step {step}: {scores:?}");
        for k in ["acc", "acc_norm"] {
            let v = get(k).unwrap_or_else(|| panic!("step {step}: no {k} in {scores:?}"));
            assert!((0.0..=1.0).contains(&v), "step {step}: {k} {v}");
        }
    }

    // B: what a crash after step 4 leaves: A's step-3 checkpoint and A's metrics.jsonl (rows to
    // step 6 here, which the resumed run must drop back to step 3 and then write again).
    let b = dir.path().join("b");
    copy_checkpoint(&a, 3, &b);
    std::fs::copy(a.join("metrics.jsonl"), b.join("metrics.jsonl")).unwrap();
    let s = run(config(&b, &[&tasks]), Resume::Auto).unwrap();
    assert_eq!(s.step, 6);
    assert_eq!(hellaswag(&b), ha, "the resumed run's HellaSwag rows");
}

#[test]
fn accumulation_matches_one_big_micro_batch() {
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "optimizer.max_steps=1",
        "optimizer.warmup_steps=1",
        "data.shuffle=false",
        "eval.interval=0",
    ];
    let a = dir.path().join("accum");
    let b = dir.path().join("big");
    let mut ea: Vec<&str> = common.to_vec();
    ea.extend(["batch.micro_batch=2", "batch.total_batch_tokens=256"]); // 2 × 32 × 4 accumulation
    let mut eb: Vec<&str> = common.to_vec();
    eb.extend(["batch.micro_batch=8", "batch.total_batch_tokens=256"]); // 8 × 32 × 1
    run(config(&a, &ea), Resume::No).unwrap();
    run(config(&b, &eb), Resume::No).unwrap();
    let ra = &metrics::read(&a.join("metrics.jsonl")).unwrap()[0];
    let rb = &metrics::read(&b.join("metrics.jsonl")).unwrap()[0];
    assert!(
        (ra.loss - rb.loss).abs() < 1e-5,
        "{} vs {}",
        ra.loss,
        rb.loss
    );
    let (na, nb) = (ra.grad_norm.unwrap(), rb.grad_norm.unwrap());
    assert!((na - nb).abs() / nb < 1e-4, "grad norms {na} vs {nb}");
}

#[test]
fn global_norm_equals_a_hand_computation() {
    let device = Device::flex().autodiff();
    let model = gpt2_model::Gpt2::new(&gpt2_model::Gpt2Config::preset("tiny").unwrap(), &device, 3)
        .unwrap();
    let x = Tensor::<2, Int>::from_data(
        TensorData::new(
            (0..64i64).map(|i| i * 37 % 50257).collect::<Vec<_>>(),
            [2, 32],
        ),
        &device,
    );
    let y = Tensor::<2, Int>::from_data(
        TensorData::new(
            (0..64i64).map(|i| i * 91 % 50257).collect::<Vec<_>>(),
            [2, 32],
        ),
        &device,
    );
    let loss = model.forward_loss(x, y);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    struct Hand<'a>(&'a GradientsParams, f64, usize);
    impl ModuleVisitor for Hand<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let g: Vec<f32> = self
                .0
                .get::<D>(p.id)
                .unwrap()
                .into_data()
                .try_to_vec()
                .unwrap();
            self.1 += g.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
            self.2 += 1;
        }
    }
    let mut hand = Hand(&grads, 0.0, 0);
    model.visit(&mut hand);
    assert_eq!(hand.2, 2 + 2 * 12 + 2, "every parameter has a gradient");
    let norm = gpt2_train::optim::global_grad_norm(&model, &grads, &model.device());
    assert!(
        (norm - hand.1.sqrt()).abs() / norm < 1e-5,
        "{norm} vs {}",
        hand.1.sqrt()
    );
    // Clipping scales the whole gradient so its global norm is the threshold.
    let s = gpt2_train::train::clip_scale(norm, norm / 4.0);
    assert!((s * norm - norm / 4.0).abs() < 1e-6 * norm);
    assert_eq!(gpt2_train::train::clip_scale(norm, norm * 2.0), 1.0);
    assert_eq!(gpt2_train::train::clip_scale(norm, 0.0), 1.0);
}

#[test]
fn nan_policy_stop_names_the_step_and_skip_counts() {
    let dir = tempfile::tempdir().unwrap();
    // An absurd learning rate overflows the weights after the first update.
    let boom = [
        "optimizer.lr=1.0e30",
        "optimizer.min_lr=1.0e29",
        "eval.interval=0",
    ];
    let e = run(config(&dir.path().join("stop"), &boom), Resume::No)
        .unwrap_err()
        .to_string();
    assert!(e.contains("step 2") && e.contains("nan_policy"), "{e}");
    let mut skip = boom.to_vec();
    skip.push("nan_policy=skip");
    let mut cfg = config(&dir.path().join("skip"), &skip);
    cfg.nan_policy = NanPolicy::Skip;
    let s = run(cfg, Resume::No).unwrap();
    assert_eq!(s.step, 6);
    assert!(s.skipped_updates >= 1, "{}", s.skipped_updates);
}

#[test]
fn f16_loss_scaling_trains_and_backs_off_on_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = ["precision=f16", "eval.interval=0"];
    let s = run(config(&dir.path().join("f16"), &f16), Resume::No).unwrap();
    let l = train_losses(&dir.path().join("f16"));
    assert!(
        l.iter().all(|x| x.1.is_finite()) && l[5].1 < l[0].1,
        "{l:?}"
    );
    assert_eq!(s.step, 6);
    // A scale so large that the f16 gradients overflow: every update is skipped and the scale
    // halves each time; the losses stay finite (they are computed before scaling).
    let mut huge = f16.to_vec();
    huge.extend([
        "loss_scale.init=1.0e30",
        "optimizer.max_steps=3",
        "optimizer.warmup_steps=1",
    ]);
    run(config(&dir.path().join("huge"), &huge), Resume::No).unwrap();
    let state = gpt2_train::checkpoint::load_state(&gpt2_train::checkpoint::step_dir(
        &dir.path().join("huge"),
        3,
    ))
    .unwrap();
    assert_eq!(state.overflow_steps, 3);
    assert_eq!(state.loss_scale, 1.0e30 / 8.0);
}

#[test]
fn checkpoint_at_end_false_leaves_only_the_interval_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let steps = |run_dir: &Path| -> Vec<u64> {
        let (done, _) = gpt2_train::checkpoint::list(run_dir).unwrap();
        done.into_iter().map(|(s, _)| s).collect()
    };
    let a = dir.path().join("a");
    let s = run(
        config(&a, &["checkpoint.interval=4", "checkpoint.at_end=false"]),
        Resume::No,
    )
    .unwrap();
    assert_eq!((s.step, steps(&a)), (6, vec![4]));
    let b = dir.path().join("b");
    run(config(&b, &["checkpoint.interval=4"]), Resume::No).unwrap();
    assert_eq!(steps(&b), vec![4, 6], "the default writes one at the end");
}

/// The trainer on a wgpu device (Burn's CubeCL path, shared with CUDA) against flex: 30 steps
/// of the tiny model in f32 (12 in f16), checkpoints carried between the two devices, issue 18's
/// batch shapes, and the plan's refusal of a batch past the device's limits. Skipped,
/// saying so, where no wgpu adapter exists (CI requires one).
#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;

    const STEPS: &str = "optimizer.max_steps=30";
    /// Per-step losses of the same run on wgpu and flex (nats): the backends round differently
    /// in the last bits, and 30 AdamW steps must not amplify that past this.
    const LOSS_TOL: f64 = 1e-4;

    fn assert_losses_close(what: &str, a: &[(u64, f64)], b: &[(u64, f64)]) {
        assert_eq!(a.len(), b.len(), "{what}: step counts");
        let diffs: Vec<String> = a
            .iter()
            .zip(b)
            .map(|(x, y)| format!("{:.1e}", (x.1 - y.1).abs()))
            .collect();
        for ((sa, la), (sb, lb)) in a.iter().zip(b) {
            assert_eq!(sa, sb, "{what}");
            assert!(
                (la - lb).abs() <= LOSS_TOL,
                "{what}: step {sa}: loss {la} vs {lb}; |diff| by step: {diffs:?}"
            );
        }
        eprintln!("{what}: |loss diff| by step: {diffs:?}");
    }

    #[test]
    fn thirty_steps_on_wgpu_match_flex_and_checkpoints_move_between_them() {
        if gpt2_model::testing::wgpu_or_skip("trainer on wgpu").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // GPT-2 117M's learning rate: the tests' usual 3e-3 drives the tiny model so hard
        // (loss 10.9 → 7.8 in 28 steps) that last-bit differences grow past 1e-4 by step 28.
        let common = [
            STEPS,
            "checkpoint.interval=12",
            "eval.interval=12",
            "optimizer.lr=6e-4",
            "optimizer.min_lr=6e-5",
        ];
        let on = |kind: &'static str| {
            let mut e = common.to_vec();
            e.push(if kind == "wgpu" {
                "device.kind=wgpu"
            } else {
                "device.kind=flex"
            });
            e
        };
        let (w, f) = (dir.path().join("wgpu"), dir.path().join("flex"));
        let sw = run(config(&w, &on("wgpu")), Resume::No).unwrap();
        let sf = run(config(&f, &on("flex")), Resume::No).unwrap();
        let (lw, lf) = (train_losses(&w), train_losses(&f));
        assert_eq!(lw.len(), 30);
        assert!(lw[29].1 < lw[0].1 - 0.5, "the loss falls on wgpu: {lw:?}");
        assert_losses_close("wgpu vs flex", &lw, &lf);
        let (vw, vf) = (sw.last_val_loss.unwrap(), sf.last_val_loss.unwrap());
        assert!((vw - vf).abs() <= LOSS_TOL, "val loss {vw} vs {vf}");

        // wgpu's step-24 checkpoint resumed on flex, and flex's on wgpu: steps 25..30 follow the
        // uninterrupted runs (weights, AdamW moments and step count all carried over).
        for (from, kind, reference) in [(&w, "flex", &lf), (&f, "wgpu", &lw)] {
            let to = dir.path().join(format!("to-{kind}"));
            copy_checkpoint(from, 24, &to);
            let s = run(config(&to, &on(kind)), Resume::Auto).unwrap();
            assert_eq!(s.step, 30);
            assert_losses_close(
                &format!("resumed on {kind}"),
                &train_losses(&to),
                &reference[24..],
            );
        }
    }

    #[test]
    fn f16_on_wgpu_trains_finite_steps_close_to_f32() {
        if gpt2_model::testing::wgpu_or_skip("f16 on wgpu").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut losses = Vec::new();
        for precision in ["precision=f32", "precision=f16"] {
            let r = dir.path().join(&precision[10..]);
            let e = [
                "optimizer.max_steps=12",
                "eval.interval=0",
                "device.kind=wgpu",
                precision,
            ];
            let s = run(config(&r, &e), Resume::No).unwrap();
            assert_eq!((s.step, s.skipped_updates), (12, 0), "{precision}");
            let l = train_losses(&r);
            assert!(l.iter().all(|x| x.1.is_finite()), "{precision}: {l:?}");
            losses.push(l[11].1);
        }
        let (f32_loss, f16_loss) = (losses[0], losses[1]);
        assert!(
            (f16_loss - f32_loss).abs() <= 2e-2,
            "final loss f16 {f16_loss} vs f32 {f32_loss}"
        );
    }

    #[test]
    fn two_wgpu_devices_equal_one_with_twice_the_accumulation() {
        let Some(adapters) = gpt2_model::testing::wgpu_devices_or_skip("2 wgpu devices") else {
            return;
        };
        // Two adapters where there are; else two devices on the one adapter (lavapipe in CI).
        let mut device = vec!["device.kind=wgpu"];
        if adapters.len() < 2 {
            device.push("device.wgpu_devices=[default, cpu]");
        }
        super::data_parallel::two_devices_equal_one_with_twice_the_accumulation(&device);
    }

    /// `gpt2-10m` at `micro_batch` × 1024 on the wgpu device: two steps, finite losses, the first
    /// equal to flex's first-step loss (same weights, same batch) within 1e-4, and the step's
    /// peak device memory reported.
    fn gpt2_10m_at_1024_like_flex(micro_batch: usize) {
        let dir = tempfile::tempdir().unwrap();
        let b = format!("batch.micro_batch={micro_batch}");
        let total = format!("batch.total_batch_tokens={}", micro_batch * 1024);
        let shape = [
            "model=gpt2-10m",
            &b,
            "batch.seq_len=1024",
            &total,
            "eval.interval=0",
            "eval.tokens=0",
            "checkpoint.at_end=false",
            // flex runs one step (its first loss is all that is compared): warmup fits both.
            "optimizer.warmup_steps=1",
        ];
        let on = |kind: &'static str, steps: &'static str| {
            let mut e = shape.to_vec();
            e.extend([kind, steps]);
            e
        };
        let w = dir.path().join("wgpu");
        run(
            config(&w, &on("device.kind=wgpu", "optimizer.max_steps=2")),
            Resume::No,
        )
        .unwrap();
        let f = dir.path().join("flex");
        run(
            config(&f, &on("device.kind=flex", "optimizer.max_steps=1")),
            Resume::No,
        )
        .unwrap();
        let (lw, lf) = (train_losses(&w), train_losses(&f));
        assert_eq!(lw.len(), 2);
        assert!(lw.iter().all(|l| l.1.is_finite()), "{lw:?}");
        assert!(
            (lw[0].1 - lf[0].1).abs() <= LOSS_TOL,
            "first-step loss on wgpu {} vs flex {}",
            lw[0].1,
            lf[0].1
        );
        let rows = metrics::read(&w.join("metrics.jsonl")).unwrap();
        let peak = rows[0].mem_peak_mb.expect("mem_peak_mb on every train row");
        assert_eq!(rows[0].mem_peak_kind.as_deref(), Some("device"));
        eprintln!(
            "gpt2-10m {micro_batch} x 1024 on wgpu: peak {peak:.0} MB, losses {lw:?} (flex {lf:?})"
        );
    }

    /// Past the buffer limit on lavapipe: at micro-batch 2 × 1024 the logits would be
    /// `[2048, 50257]` f32, 412 MB, 3.1× the 128 MiB a buffer may hold there (before the chunked
    /// head this shape failed to allocate); the LM head's 600-row chunks (120 MB) fit.
    #[test]
    fn gpt2_10m_trains_past_the_buffer_limit_on_lavapipe_like_flex() {
        if gpt2_model::testing::wgpu_or_skip("gpt2-10m at 2 x 1024").is_none() {
            return;
        }
        gpt2_10m_at_1024_like_flex(2);
    }

    /// Issue 18's own shape, micro-batch 16 × 1024 (16,384 tokens, logits that would be 3.3 GB).
    /// Ignored in `make test`: on lavapipe, about 5 GFLOP/s, one step of it takes ~7 minutes
    /// (measured: experiments/RESULTS.md, "Peak device memory"); the 2 × 1024 test above checks
    /// the same property at a quarter of the cost. Run it with
    /// `cargo test -p gpt2-train --features wgpu --test train -- --ignored gpt2_10m_trains_at_16`.
    #[test]
    #[ignore = "~15 minutes on lavapipe; run with --ignored"]
    fn gpt2_10m_trains_at_16_by_1024_on_lavapipe_like_flex() {
        if gpt2_model::testing::wgpu_or_skip("gpt2-10m at 16 x 1024").is_none() {
            return;
        }
        gpt2_10m_at_1024_like_flex(16);
    }

    /// A micro-batch whose tensors cannot fit lavapipe's 128 MiB buffers is refused before
    /// anything runs, naming the tensor, the limit and the largest micro-batch that fits.
    #[test]
    fn a_micro_batch_past_the_buffer_limit_is_refused_at_plan_time() {
        let Some(device) = gpt2_model::testing::wgpu_or_skip("buffer limit refusal") else {
            return;
        };
        let limit = gpt2_model::device_memory(&device).max_buffer_bytes;
        let Some(limit) = limit else {
            eprintln!("SKIPPED buffer limit refusal: this adapter sets no buffer limit");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // gpt2-10m's MLP activations [B·1024, 640] f32 are 2.6 MB per sequence.
        let per_sequence = 1024 * 640 * 4u64;
        let too_many = limit / per_sequence + 1;
        let fits = limit / per_sequence;
        let b = format!("batch.micro_batch={too_many}");
        let total = format!("batch.total_batch_tokens={}", too_many * 1024);
        let cfg = config(
            &dir.path().join("big"),
            &[
                "model=gpt2-10m",
                "device.kind=wgpu",
                "batch.seq_len=1024",
                &b,
                &total,
            ],
        );
        let e = run(cfg, Resume::No).unwrap_err().to_string();
        assert!(
            e.contains("MLP activations")
                && e.contains("largest buffer")
                && e.contains(&format!("the largest micro-batch that fits is {fits}")),
            "{e}"
        );
        assert!(
            !dir.path().join("big/metrics.jsonl").exists(),
            "nothing ran"
        );
    }

    /// The global gradient norm's reduction gives the same bits every time on wgpu (issue 23: a
    /// resumed run's norm differed in its last bit because Burn's full `sum` adds workgroup
    /// partials with float atomics in completion order), and it is the f64 sum to f32 rounding.
    #[test]
    fn the_gradient_norm_reduction_is_bit_reproducible_on_wgpu() {
        let Some(device) = gpt2_model::testing::wgpu_or_skip("norm reduction") else {
            return;
        };
        let n: usize = 1_000_003; // not a multiple of any workgroup or vector width
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 1e-2)
            .collect();
        let want: f64 = data.iter().map(|&x| x as f64 * x as f64).sum();
        let g = Tensor::<1>::from_data(TensorData::new(data, [n]), &device);
        let runs: std::collections::BTreeSet<u32> = (0..20)
            .map(|_| {
                gpt2_train::optim::sum_of_squares(g.clone())
                    .into_scalar::<f32>()
                    .to_bits()
            })
            .collect();
        assert_eq!(runs.len(), 1, "20 runs gave {} different sums", runs.len());
        let got = f32::from_bits(*runs.first().unwrap()) as f64;
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
        // For the record (not asserted: it depends on scheduling): Burn's own full sum.
        let burn: std::collections::BTreeSet<u32> = (0..20)
            .map(|_| {
                g.clone()
                    .mul(g.clone())
                    .sum()
                    .into_scalar::<f32>()
                    .to_bits()
            })
            .collect();
        eprintln!("Tensor::sum over 20 runs: {} distinct results", burn.len());
    }

    #[test]
    fn bf16_on_wgpu_is_rejected_when_the_plan_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            &dir.path().join("bf16"),
            &["device.kind=wgpu", "precision=bf16"],
        );
        let e = cfg.plan(Path::new("bf16.yaml")).unwrap_err().to_string();
        assert!(
            e.contains("bf16 is not available on device.kind wgpu"),
            "{e}"
        );
    }
}

/// Data parallel (`device.ids`): N replicas × accumulation a train like 1 device × N·a over the
/// same windows; a checkpoint resumes on another number of devices; bad ids are clear errors.
/// On flex replicas here (the arithmetic, everywhere) and on two wgpu devices with the feature.
mod data_parallel {
    use super::*;

    /// The largest per-tensor relative error `‖a − b‖₂ / ‖b‖₂` between two `model.safetensors`
    /// files, leaving out the attention's key bias (the middle third of each `c_attn.bias`).
    ///
    /// Why that one: a bias added to every key shifts each row of scores by a constant, which
    /// softmax ignores, so its gradient is exactly zero in exact arithmetic and rounding noise
    /// (~1e-10) in floating point; AdamW divides by √v, which turns that noise into steps of
    /// ~lr whose sign depends on the last bits, i.e. on the order the ranks' gradients are
    /// summed. Measured: every other tensor within ~2e-7 of the 1-device run, the key bias 1e-4.
    fn weights_rel_diff(a: &Path, b: &Path) -> f64 {
        let (ba, bb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        let (sa, sb) = (
            safetensors::SafeTensors::deserialize(&ba).unwrap(),
            safetensors::SafeTensors::deserialize(&bb).unwrap(),
        );
        let f32s = |v: &[u8]| -> Vec<f32> {
            v.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let mut worst = 0f64;
        for (name, ta) in sa.tensors() {
            let (mut x, mut y) = (f32s(ta.data()), f32s(sb.tensor(&name).unwrap().data()));
            if name.ends_with("attn.c_attn.bias") {
                let c = x.len() / 3; // [q | k | v]
                x.drain(c..2 * c);
                y.drain(c..2 * c);
            }
            let diff: f64 = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
                .sum();
            let norm: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
            worst = worst.max((diff / norm.max(1e-30)).sqrt());
        }
        worst
    }

    fn assert_rel_close(what: &str, a: &[(u64, f64)], b: &[(u64, f64)]) {
        assert_eq!(a.len(), b.len(), "{what}");
        for ((sa, la), (sb, lb)) in a.iter().zip(b) {
            assert_eq!(sa, sb);
            let rel = (la - lb).abs() / lb.abs();
            assert!(
                rel <= 1e-5,
                "{what}: step {sa}: {la} vs {lb} (relative {rel:e})"
            );
        }
    }

    /// 2 devices × accumulation 2 against 1 device × accumulation 4 (micro-batch 2 × 32 tokens,
    /// 256 tokens per step), then the 2-device run's step-3 checkpoint resumed on 1 device.
    pub(super) fn two_devices_equal_one_with_twice_the_accumulation(device: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let kind = device[0];
        let with = |ids: &'static str| -> Vec<String> {
            let mut e: Vec<String> = device.iter().map(|s| s.to_string()).collect();
            e.extend([ids.to_string(), "batch.total_batch_tokens=256".into()]);
            e
        };
        let cfg = |run: &Path, e: &[String]| {
            let e: Vec<&str> = e.iter().map(String::as_str).collect();
            config(run, &e)
        };
        let (two, one) = (dir.path().join("two"), dir.path().join("one"));
        let s2 = run(cfg(&two, &with("device.ids=[0, 1]")), Resume::No).unwrap();
        let s1 = run(cfg(&one, &with("device.ids=[0]")), Resume::No).unwrap();
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(two.join("plan.json")).unwrap()).unwrap();
        assert_eq!(
            (
                plan["world_size"].as_u64(),
                plan["grad_accum_steps"].as_u64()
            ),
            (Some(2), Some(2))
        );
        assert_rel_close(kind, &train_losses(&two), &train_losses(&one));
        let (v2, v1) = (s2.last_val_loss.unwrap(), s1.last_val_loss.unwrap());
        assert!((v2 - v1).abs() / v1 <= 1e-5, "val loss {v2} vs {v1}");
        let weights = |r: &Path| gpt2_train::checkpoint::step_dir(r, 6).join("model.safetensors");
        let d = weights_rel_diff(&weights(&two), &weights(&one));
        assert!(
            d <= 1e-5,
            "{kind}: final weights differ by {d:e} (relative)"
        );

        // Re-sharding: the 2-device checkpoint of step 3 continues on 1 device (accumulation 4).
        let resharded = dir.path().join("resharded");
        copy_checkpoint(&two, 3, &resharded);
        run(cfg(&resharded, &with("device.ids=[0]")), Resume::Auto).unwrap();
        assert_rel_close(
            "re-sharded",
            &train_losses(&resharded),
            &train_losses(&two)[3..],
        );
    }

    #[test]
    fn two_flex_replicas_equal_one_device_with_twice_the_accumulation() {
        two_devices_equal_one_with_twice_the_accumulation(&["device.kind=flex"]);
    }

    #[test]
    fn duplicate_and_out_of_range_device_ids_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = config(&dir.path().join("dup"), &["device.ids=[1, 0, 1]"])
            .plan(Path::new("dup.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lists device 1 twice"), "{e}");
        let e = run(
            config(&dir.path().join("flex"), &["device.ids=[0, 3]"]),
            Resume::No,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("numbered 0..N-1") && e.contains("[0, 1]"), "{e}");
        #[cfg(feature = "wgpu")]
        {
            let cfg = config(
                &dir.path().join("wgpu"),
                &["device.kind=wgpu", "device.ids=[0, 99]"],
            );
            let e = run(cfg, Resume::No).unwrap_err().to_string();
            assert!(
                e.contains("wgpu:99") && e.contains("adapter(s) found"),
                "{e}"
            );
        }
    }
}
