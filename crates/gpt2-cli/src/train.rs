//! `gpt2 train`: YAML + `--set` overrides → [`TrainConfig`] → plan (printed, saved) → [`train`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gpt2_train::{train, Resume, TrainConfig, TrainOptions};

#[derive(Args)]
pub struct TrainArgs {
    /// Run config (see configs/train/). Unknown keys are errors.
    #[arg(long, short)]
    config: PathBuf,
    /// Override a config value, e.g. `--set optimizer.lr=3e-4 --set batch.micro_batch=4`;
    /// repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// `auto`: continue from the newest complete checkpoint in the run directory (damaged ones
    /// are reported and skipped); or a checkpoint directory. Without it the run starts fresh.
    #[arg(long)]
    resume: Option<String>,
    /// Only validate the config and print the plan, with the memory estimate per device and
    /// whether it fits (`device.memory_gb`, or the device's size where it can be read).
    #[arg(long)]
    dry_run: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let cfg = TrainConfig::from_yaml_file(&a.config, &a.overrides)?;
    let mut plan = cfg.plan(&a.config)?;
    // The commit this binary was built from (build.rs), so a run installed with `cargo install`
    // or started from another directory still names the code that produced it.
    plan.git_commit = Some(env!("GPT2_GIT_COMMIT").to_string()).filter(|c| c != "unknown");
    let resume = match a.resume.as_deref() {
        None => Resume::No,
        Some("auto") => Resume::Auto,
        Some(p) => Resume::Path(PathBuf::from(p)),
    };
    // A run that continues its own checkpoint does not read init_from: the plan says so.
    if let Some(init) = plan.init.as_mut() {
        init.ignored_for = match &resume {
            Resume::No => None,
            Resume::Auto => gpt2_train::train::latest_checkpoint(&plan.config.run_dir)?,
            Resume::Path(p) => Some(p.clone()),
        };
    }
    // Under a launcher every rank plans; rank 0 alone prints (the others print only errors).
    let main = plan.world.is_main();
    if main {
        crate::print_table("gpt2 train: plan", &plan.rows());
    }
    if a.dry_run {
        let rows = gpt2_train::train::memory_rows(plan)?;
        if main {
            crate::print_table("memory", &rows);
        }
        return Ok(());
    }
    let s = train(
        plan,
        &TrainOptions {
            resume,
            quiet: a.quiet,
        },
    )?;
    if !main {
        return Ok(());
    }
    let loss = |v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map_or("-".into(), |v| format!("{v:.4}"))
    };
    eprintln!(
        "{}: step {} | train loss {} | val loss {} | checkpoint {}",
        if s.already_finished {
            "already finished (nothing to train)"
        } else {
            "done"
        },
        s.step,
        loss(Some(s.last_train_loss)),
        loss(s.last_val_loss),
        s.last_checkpoint
            .map_or("-".into(), |p| p.display().to_string())
    );
    Ok(())
}
