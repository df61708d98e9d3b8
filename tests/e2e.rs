//! The whole project on real text, through the libraries: the first 30 sample documents →
//! shards → `tiny` trained for 24 steps → a "killed" run resumed from its step-16 checkpoint
//! (same final weights) → held-out eval (below an untrained model) → streamed sampling →
//! HF export with tokenizer files → re-import with equal logits.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use gpt2_train::eval::{evaluate_shards, EvalOptions};
use gpt2_train::infer::{load_checkpoint, logits_of};
use gpt2_train::{checkpoint, train, Resume, TrainConfig, TrainOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prepare(dir: &Path) -> PathBuf {
    gpt2_data::prepare_documents(
        "e2e",
        &root().join("data/sample/sotu.jsonl.gz"),
        30,
        4096,
        &dir.join("shards"),
    )
    .unwrap();
    dir.join("shards")
}

fn config(run_dir: &Path, shards: &Path) -> TrainConfig {
    let yaml = format!(
        "run_dir: {}\nmodel: tiny\nseed: 3\ndata: {{shards: {}, shuffle: true}}\n\
         batch: {{micro_batch: 4, seq_len: 64, total_batch_tokens: 256}}\n\
         optimizer: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 4, max_steps: 24}}\n\
         eval: {{interval: 0, tokens: 512}}\ncheckpoint: {{interval: 8, keep_last: 5}}\nlog_interval: 8\n",
        run_dir.display(),
        shards.display()
    );
    let p = run_dir.with_extension("yaml");
    std::fs::write(&p, yaml).unwrap();
    TrainConfig::from_yaml_file(&p, &[]).unwrap()
}

fn run(cfg: TrainConfig, resume: Resume) -> gpt2_train::Summary {
    train(
        cfg.plan(Path::new("e2e")).unwrap(),
        &TrainOptions {
            resume,
            quiet: true,
        },
    )
    .unwrap()
}

#[test]
fn prepare_train_resume_eval_sample_export() {
    let dir = tempfile::tempdir().unwrap();
    let shards = prepare(dir.path());

    // Train 24 steps; then a second run that was "killed" after step 16 resumes from there.
    let a = dir.path().join("a");
    assert_eq!(run(config(&a, &shards), Resume::No).step, 24);
    let b = dir.path().join("b");
    let (src, dst) = (checkpoint::step_dir(&a, 16), checkpoint::step_dir(&b, 16));
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    assert_eq!(run(config(&b, &shards), Resume::Auto).step, 24);
    let weights =
        |r: &Path| std::fs::read(checkpoint::step_dir(r, 24).join("model.safetensors")).unwrap();
    assert!(
        weights(&a) == weights(&b),
        "resumed weights are bit-identical"
    );

    // Eval the newest checkpoint of the run directory on the held-out split.
    let device = Device::flex();
    let (model, from) = load_checkpoint(&b, &device).unwrap();
    assert_eq!(from, checkpoint::step_dir(&b, 24));
    let manifest = gpt2_data::Manifest::load(&shards.join("manifest.json")).unwrap();
    let val = manifest.shard_paths(&shards, "val");
    let opts = EvalOptions {
        max_tokens: Some(2048),
        batch: 4,
        ..Default::default()
    };
    let trained = evaluate_shards(&model, &val, &opts, false).unwrap();
    let fresh = gpt2_model::Gpt2::new(model.config(), &device, 3).unwrap();
    let untrained = evaluate_shards(&fresh, &val, &opts, false).unwrap();
    assert_eq!(trained.tokens, 2048);
    assert!(
        trained.nll < untrained.nll - 1.0,
        "training lowers held-out loss: {} vs {}",
        trained.nll,
        untrained.nll
    );
    assert!(
        trained.bpb.is_finite()
            && trained.bpb > 0.0
            && (trained.ppl - trained.nll.exp()).abs() < 1e-9
    );

    // Sample: streamed tokens, seeded, decodable.
    let prompt = gpt2_data::tokenizer::encode_ordinary("Fellow citizens");
    let cfg = gpt2_model::GenerateConfig {
        max_new_tokens: 24,
        seed: 1,
        stop_at_eot: false,
        ..Default::default()
    };
    let mut streamed = Vec::new();
    let ids = model
        .generate_streaming(&prompt, &cfg, |t| {
            streamed.push(t);
            true
        })
        .unwrap();
    assert_eq!((ids.len(), &streamed), (24, &ids));
    assert_eq!(
        ids,
        model.generate_streaming(&prompt, &cfg, |_| true).unwrap()
    );
    assert!(!gpt2_data::tokenizer::decode_lossy(&ids).is_empty());

    // Export to the HF layout and re-import.
    let hf = dir.path().join("hf");
    gpt2_model::save_hf(&model, &hf).unwrap();
    gpt2_data::hf_tokenizer::write_tokenizer_files(&hf, model.config().block_size).unwrap();
    let back = gpt2_model::load_hf(&hf, &device).unwrap();
    let probe: Vec<u32> = val
        .iter()
        .take(1)
        .flat_map(|p| {
            let r = gpt2_data::ShardReader::open(p).unwrap();
            let mut t = vec![0u32; 64];
            r.read_into(0, &mut t);
            t
        })
        .collect();
    assert_eq!(logits_of(&model, &probe), logits_of(&back, &probe));
    assert!(hf.join("vocab.json").is_file() && hf.join("merges.txt").is_file());
}
