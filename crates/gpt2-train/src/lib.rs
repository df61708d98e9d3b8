//! GPT-2 pretraining on Burn: YAML → validated [`TrainPlan`] → [`train`], in the llm.c/nanoGPT
//! recipe (AdamW β 0.9/0.95, decoupled weight decay on 2-D parameters, warmup + cosine,
//! global-norm clipping, gradient accumulation) with checkpoints that resume bit-exactly on CPU.
//!
//! Files in reading order: [`config`] (YAML → plan) → [`schedule`] → [`optim`] (AdamW, clipping)
//! → [`checkpoint`] → [`metrics`] → [`device`] (flex, cuda, wgpu) → [`parallel`] (replicas in
//! one process) → [`world`], [`collective`], [`rendezvous`], [`zero`] (several processes) →
//! [`train`] (the loop) → [`eval`] (held-out NLL, perplexity, bits per byte) → [`infer`] (device
//! and checkpoint resolution for eval, sample, export).

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod device;
pub mod error;
pub mod eval;
pub mod infer;
pub mod init;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod rendezvous;
pub mod schedule;
pub mod tasks;
pub mod tensorboard;
pub mod train;
pub mod world;
pub mod zero;

pub use config::{TrainConfig, TrainPlan};
pub use error::{Result, TrainError};
pub use eval::{evaluate_shards, EvalOptions, EvalReport, ShardEval};
pub use train::{train, Resume, Summary, TrainOptions};
