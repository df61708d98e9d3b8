//! Checkpoints: `run_dir/checkpoints/step_NNNNNNNN/`, written atomically (llm.c's habit of a
//! DONE marker, plus a temporary directory):
//!
//! 1. write everything into `step_NNNNNNNN.tmp/`: `model.safetensors` + `config.json` (HF
//!    layout, full f32 precision — also what `gpt2 eval`/transformers load), `optimizer.safetensors`
//!    (AdamW moments and t), `state.json` (step, tokens, every rank's loader state, plan, git commit);
//! 2. fsync every file, rename the directory to its final name, fsync the parent;
//! 3. write `DONE` last. A directory without `DONE` is incomplete and is never resumed from.
//!
//! Pruning keeps the newest `keep_last` complete checkpoints plus every step divisible by
//! `keep_every`.

use std::fs;
use std::path::{Path, PathBuf};

use gpt2_data::LoaderState;
use serde::{Deserialize, Serialize};

use crate::config::TrainPlan;
use crate::error::{IoContext, Result, TrainError};

pub const DONE: &str = "DONE";
pub const STATE: &str = "state.json";
pub const OPTIMIZER: &str = "optimizer.safetensors";

/// Everything besides tensors needed to continue a run exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    pub tokens_seen: u64,
    /// The data position: windows of the epoch handed out to all ranks together (the loader's
    /// cursor is global, so it also places a resumed run with another number of devices).
    pub loader: LoaderState,
    /// Every rank's loader state, rank 0 first (a resume on as many devices restores each).
    #[serde(default)]
    pub rank_loaders: Vec<LoaderState>,
    /// Updates skipped under `nan_policy: skip`.
    pub skipped_updates: u64,
    /// f16 dynamic loss scale (1.0 when unused).
    pub loss_scale: f64,
    /// Consecutive steps without overflow since the scale last changed (f16).
    #[serde(default)]
    pub good_steps: u64,
    /// Updates skipped because the f16 gradients overflowed (the scale was halved).
    #[serde(default)]
    pub overflow_steps: u64,
    pub plan: TrainPlan,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

pub fn step_dir(run_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(run_dir).join(format!("step_{step:08}"))
}

/// Write a checkpoint. `write_tensors(dir)` writes the model and optimizer files into `dir`.
/// Test hook: `GPT2_FAULT_CHECKPOINT_DELAY_MS` sleeps between the tensors and the marker, so a
/// test can SIGKILL the process in the middle of a checkpoint write.
pub fn save(
    run_dir: &Path,
    state: &TrainState,
    write_tensors: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = step_dir(run_dir, state.step);
    let tmp = final_dir.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    fs::create_dir_all(&tmp).at(&tmp)?;
    write_tensors(&tmp)?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    fs::write(tmp.join(STATE), json).at(tmp.join(STATE))?;
    if let Some(ms) = std::env::var("GPT2_FAULT_CHECKPOINT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    for e in fs::read_dir(&tmp).at(&tmp)?.flatten() {
        fs::File::open(e.path())
            .and_then(|f| f.sync_all())
            .at(e.path())?;
    }
    if final_dir.exists() {
        // A previous attempt at this step (e.g. before a crash) — replace it.
        fs::remove_dir_all(&final_dir).at(&final_dir)?;
    }
    fs::rename(&tmp, &final_dir).at(&final_dir)?;
    sync_dir(&checkpoints_dir(run_dir))?;
    let done = final_dir.join(DONE);
    fs::write(&done, format!("{}\n", state.step)).at(&done)?;
    fs::File::open(&done).and_then(|f| f.sync_all()).at(&done)?;
    sync_dir(&final_dir)?;
    Ok(final_dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// (step, directory) of each complete checkpoint, oldest first; then the incomplete ones.
pub type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

/// Complete checkpoints (with `DONE`), oldest first, and the incomplete ones found.
pub fn list(run_dir: &Path) -> Result<Listing> {
    let dir = checkpoints_dir(run_dir);
    let mut done = Vec::new();
    let mut broken = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok((done, broken));
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(step) = name
            .strip_prefix("step_")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            if name.starts_with("step_") {
                broken.push(e.path());
            }
            continue;
        };
        if e.path().join(DONE).exists() && e.path().join(STATE).exists() {
            done.push((step, e.path()));
        } else {
            broken.push(e.path());
        }
    }
    done.sort();
    broken.sort();
    Ok((done, broken))
}

/// Read a checkpoint's state, checking the marker.
pub fn load_state(dir: &Path) -> Result<TrainState> {
    let bad = |message: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        message,
        hint: "resume from another checkpoint (--resume PATH) or start over".into(),
    };
    if !dir.join(DONE).exists() {
        return Err(bad(
            "incomplete checkpoint (no DONE marker): it was being written when the run stopped"
                .into(),
        ));
    }
    let text = fs::read_to_string(dir.join(STATE)).map_err(|e| bad(format!("{STATE}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("{STATE}: {e}")))
}

/// Delete complete checkpoints beyond the newest `keep_last`, except multiples of
/// `keep_every`; also delete leftover temporary directories.
pub fn prune(run_dir: &Path, keep_last: usize, keep_every: u64) -> Result<()> {
    let (done, _) = list(run_dir)?;
    let n = done.len();
    for (i, (step, path)) in done.iter().enumerate() {
        let recent = i + keep_last >= n;
        let milestone = keep_every > 0 && step % keep_every == 0;
        if !recent && !milestone {
            fs::remove_dir_all(path).at(path)?;
        }
    }
    if let Ok(entries) = fs::read_dir(checkpoints_dir(run_dir)) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                fs::remove_dir_all(e.path()).at(e.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_pruning_and_incomplete_checkpoints() {
        let run = tempfile::tempdir().unwrap();
        let r = run.path();
        for step in [10u64, 20, 30, 40, 50] {
            let d = step_dir(r, step);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(STATE), "{}").unwrap();
            fs::write(d.join(DONE), "").unwrap();
        }
        fs::create_dir_all(step_dir(r, 60)).unwrap(); // no DONE: a crash mid-write
        fs::create_dir_all(step_dir(r, 70).with_extension("tmp")).unwrap();
        let (done, broken) = list(r).unwrap();
        assert_eq!(
            done.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![10, 20, 30, 40, 50]
        );
        assert_eq!(broken.len(), 2);
        prune(r, 2, 20).unwrap();
        let (done, _) = list(r).unwrap();
        assert_eq!(
            done.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![20, 40, 50]
        );
        assert!(!step_dir(r, 70).with_extension("tmp").exists());
        assert!(load_state(&step_dir(r, 60))
            .unwrap_err()
            .to_string()
            .contains("incomplete"));
    }
}
