//! The trainer on real shards (a slice of the sample corpus) with the `tiny` model: exact
//! resume, accumulation equivalence, global-norm clipping by hand, the NaN policies.

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
    let ck = gpt2_train::checkpoint::step_dir(&a, 3);
    let dst = gpt2_train::checkpoint::step_dir(&b, 3);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&ck).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
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
    let norm = gpt2_train::optim::global_grad_norm(&model, &grads);
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
