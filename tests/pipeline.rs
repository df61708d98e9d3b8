//! Cross-crate scenario (grows with the project): the demo's data config → shards → the
//! trainer's loader. Later issues extend it with train → kill/resume → eval → sample → export.

use std::path::Path;

use gpt2_data::{run_prepare, PrepareConfig, RunOptions, TokenLoader};

#[test]
fn sample_config_prepares_shards_the_loader_can_serve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg_path = root.join("configs/data/sample.yaml");
    let mut cfg = PrepareConfig::from_yaml_file(&cfg_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    cfg.inputs = cfg.inputs.iter().map(|p| root.join(p)).collect();
    cfg.out_dir = dir.path().to_path_buf();
    let plan = cfg.validate(&cfg_path).unwrap();
    let m = run_prepare(
        &plan,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.counts.kept, 237);
    assert!(
        m.val_tokens >= 100_000 && m.train_tokens > 2_000_000,
        "{} / {}",
        m.val_tokens,
        m.train_tokens
    );

    // Two ranks of a data-parallel job see disjoint windows; the held-out split is verified.
    let mut r0 =
        TokenLoader::from_manifest(dir.path(), "train", 4, 64, 0, 2, Some(1), true).unwrap();
    let mut r1 =
        TokenLoader::from_manifest(dir.path(), "train", 4, 64, 1, 2, Some(1), false).unwrap();
    let (a, b) = (r0.next_batch(), r1.next_batch());
    assert_eq!(a.len(), 4 * 65);
    assert_ne!(a, b);
    assert!(a.iter().all(|&t| t <= gpt2_data::tokenizer::EOT));
    let mut val = TokenLoader::from_manifest(dir.path(), "val", 8, 64, 0, 1, None, true).unwrap();
    let text = gpt2_data::tokenizer::decode_lossy(&val.next_batch()[..65]);
    assert!(
        text.chars().filter(|c| c.is_alphabetic()).count() > 100,
        "{text}"
    );
}
