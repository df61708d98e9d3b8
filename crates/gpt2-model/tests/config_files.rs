//! The YAML presets in `configs/model/` parse strictly and agree with `Gpt2Config::preset`.

use std::path::PathBuf;

use gpt2_model::{Gpt2Config, ModelError, PRESET_NAMES};

fn configs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/model")
}

#[test]
fn every_preset_has_a_yaml_file_equal_to_it() {
    for name in PRESET_NAMES {
        let path = configs_dir().join(format!("{name}.yaml"));
        let from_file = Gpt2Config::from_yaml_file(&path).unwrap();
        assert_eq!(
            from_file,
            Gpt2Config::preset(name).unwrap(),
            "{}",
            path.display()
        );
        assert_eq!(Gpt2Config::from_name_or_path(name).unwrap(), from_file);
    }
}

#[test]
fn bad_yaml_files_are_errors_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "n_layer: 2\nn_head: 2\nn_embd: 64\nblock_size: 64\nn_embed: 3\n",
    )
    .unwrap();
    let err = Gpt2Config::from_yaml_file(&typo).unwrap_err();
    assert!(matches!(err, ModelError::Yaml { .. }), "{err}");
    assert!(
        err.to_string().contains("typo.yaml") && err.to_string().contains("n_embed"),
        "{err}"
    );

    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        "n_layer: 2\nn_head: 3\nn_embd: 64\nblock_size: 0\n",
    )
    .unwrap();
    let ModelError::InvalidConfig { problems } = Gpt2Config::from_yaml_file(&invalid).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(problems.len(), 2, "{problems:?}");

    let missing = Gpt2Config::from_yaml_file(dir.path().join("none.yaml")).unwrap_err();
    assert!(matches!(missing, ModelError::Io { .. }), "{missing}");
}
