//! Where this process stands in a multi-process run: its global rank, the world size, its rank
//! and the number of ranks on its node, read from the launcher that started it (torchrun,
//! Slurm's srun, Open MPI's mpirun) or set in the config (`distributed:`), and which engine
//! averages the gradients between processes (`distributed.backend`).
//!
//! One process drives one device, as in llm.c and PyTorch DDP. Several `device.ids` in one
//! process (`parallel.rs`) is the single-process mode; the two are not combined.
//!
//! Precedence, most specific first: the config (`distributed.rank`, `--set distributed.rank=1`),
//! Open MPI (`OMPI_COMM_WORLD_*`, also set when mpirun runs inside a Slurm allocation), torchrun
//! (`RANK`, `WORLD_SIZE`, ...), then Slurm (`SLURM_PROCID`, ...) inside an srun step only: an
//! sbatch script itself carries `SLURM_PROCID=0` and `SLURM_NTASKS`, and a `gpt2 train` started
//! there without srun is one process, not rank 0 of many.

use serde::{Deserialize, Serialize};

/// `distributed:` in the run config. Everything is optional: a launcher's variables fill in
/// what is not set, and without either the run is one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// The engine that averages gradients between processes: `auto` (NCCL on CUDA, MPI on
    /// every other device kind), `nccl` or `mpi`.
    #[serde(default)]
    pub backend: Backend,
    /// This process's global rank (0-based). Overrides the launcher's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// The number of processes. Overrides the launcher's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<usize>,
    /// This process's rank on its node (picks its device). Overrides the launcher's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rank: Option<usize>,
    /// The number of processes on this node. Overrides the launcher's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_world_size: Option<usize>,
    /// Where rank 0 serves the NCCL id over TCP when not under mpirun (torchrun's
    /// `MASTER_ADDR`/`MASTER_PORT` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_port: Option<u16>,
    /// Seconds the TCP rendezvous waits for every rank (rank 0) or for rank 0 (the others).
    #[serde(default = "rendezvous_timeout_s")]
    pub timeout_s: f64,
    /// ZeRO stage: 0 (every process keeps the whole AdamW state) or 1 (each keeps its 1/world:
    /// `zero.rs`). A no-op for one process.
    #[serde(default)]
    pub zero: u8,
}

fn rendezvous_timeout_s() -> f64 {
    300.0
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Auto,
            rank: None,
            world_size: None,
            local_rank: None,
            local_world_size: None,
            master_addr: None,
            master_port: None,
            timeout_s: rendezvous_timeout_s(),
            zero: 0,
        }
    }
}

/// `distributed.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Auto,
    Nccl,
    Mpi,
}

/// The engine a multi-process run uses, resolved from `distributed.backend` and the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// One process: nothing to exchange.
    #[default]
    None,
    /// Open MPI: gradients read to the host, `MPI_Allreduce`d, written back (gloo's way).
    Mpi,
    /// NCCL on CUDA devices.
    Nccl,
}

/// Which launcher's variables gave the place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// No launcher: one process (or the config alone).
    #[default]
    None,
    Config,
    OpenMpi,
    Torchrun,
    Slurm,
}

impl Launcher {
    fn describe(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Config => "the config (distributed.*)",
            Self::OpenMpi => "Open MPI (OMPI_COMM_WORLD_*)",
            Self::Torchrun => "torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)",
            Self::Slurm => "Slurm srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID)",
        }
    }
}

/// This process's place in the world. The default is a single process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    pub launcher: Launcher,
    pub engine: Engine,
    /// `host:port` of the TCP rendezvous, where one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
}

impl Default for Place {
    fn default() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            launcher: Launcher::None,
            engine: Engine::None,
            master: None,
        }
    }
}

/// The variable names of one launcher: rank, world size, local rank, local world size.
struct Names {
    launcher: Launcher,
    rank: &'static str,
    size: &'static str,
    local_rank: &'static str,
    local_size: &'static str,
}

const OPEN_MPI: Names = Names {
    launcher: Launcher::OpenMpi,
    rank: "OMPI_COMM_WORLD_RANK",
    size: "OMPI_COMM_WORLD_SIZE",
    local_rank: "OMPI_COMM_WORLD_LOCAL_RANK",
    local_size: "OMPI_COMM_WORLD_LOCAL_SIZE",
};
const TORCHRUN: Names = Names {
    launcher: Launcher::Torchrun,
    rank: "RANK",
    size: "WORLD_SIZE",
    local_rank: "LOCAL_RANK",
    local_size: "LOCAL_WORLD_SIZE",
};
const SLURM: Names = Names {
    launcher: Launcher::Slurm,
    rank: "SLURM_PROCID",
    size: "SLURM_NTASKS",
    local_rank: "SLURM_LOCALID",
    // Slurm has no "tasks on this node" count of one number in every setup
    // (SLURM_TASKS_PER_NODE reads like `8(x2)`); see `slurm_local_size`.
    local_size: "SLURM_NTASKS_PER_NODE",
};

/// A launcher's values as read: (variable, value) for each of the four, `None` where unset.
type Read = [(&'static str, Option<usize>); 4];

impl Place {
    /// The place from `cfg` and the launcher's variables (`env` reads one; `std::env::var` in
    /// the trainer), and the engine for `kind` (the device kind). Every inconsistency is one
    /// message that names the variable and its value.
    pub fn detect(
        cfg: &DistributedConfig,
        kind: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let num = |name: &'static str, problems: &mut Vec<String>| -> Option<usize> {
            let v = env(name)?;
            match v.trim().parse::<usize>() {
                Ok(n) => Some(n),
                Err(_) => {
                    problems.push(format!("{name}={v} is not a non-negative integer"));
                    None
                }
            }
        };
        // The launcher: the first whose rank variable is set (Slurm's only inside an srun step).
        let launcher = [OPEN_MPI, TORCHRUN, SLURM].into_iter().find(|n| {
            env(n.rank).is_some()
                && (n.launcher != Launcher::Slurm || env("SLURM_STEP_ID").is_some())
        });
        let mut read: Read = [("", None); 4];
        if let Some(n) = &launcher {
            read = [
                (n.rank, num(n.rank, &mut problems)),
                (n.size, num(n.size, &mut problems)),
                (n.local_rank, num(n.local_rank, &mut problems)),
                (n.local_size, num(n.local_size, &mut problems)),
            ];
            if n.launcher == Launcher::Slurm && read[3].1.is_none() {
                read[3] = slurm_local_size(env, &mut problems);
            }
            if read[1].1.is_none() {
                problems.push(format!(
                    "{}={} is set but {} is not: the launcher must give the world size",
                    n.rank,
                    env(n.rank).unwrap_or_default(),
                    n.size
                ));
            }
        }
        // The config wins over the launcher, value by value.
        let pick =
            |set: Option<usize>, key: &'static str, from_env: (&'static str, Option<usize>)| {
                match set {
                    Some(v) => (format!("distributed.{key}"), Some(v)),
                    None if from_env.0.is_empty() => (format!("distributed.{key}"), None),
                    None => (from_env.0.to_string(), from_env.1),
                }
            };
        let rank = pick(cfg.rank, "rank", read[0]);
        let size = pick(cfg.world_size, "world_size", read[1]);
        let local_rank = pick(cfg.local_rank, "local_rank", read[2]);
        let local_size = pick(cfg.local_world_size, "local_world_size", read[3]);
        let launcher = match launcher {
            _ if cfg.rank.is_some() || cfg.world_size.is_some() => Launcher::Config,
            Some(n) => n.launcher,
            None => Launcher::None,
        };
        let half = launcher == Launcher::Config && (rank.1.is_none() || size.1.is_none());
        if half {
            problems.push(format!(
                "{}={:?} and {}={:?}: set both distributed.rank and distributed.world_size (or neither, to take them from the launcher)",
                rank.0, rank.1, size.0, size.1
            ));
        }
        let world_size = size.1.unwrap_or(1);
        let r = rank.1.unwrap_or(0);
        if half {
            // Said above.
        } else if world_size == 0 {
            problems.push(format!(
                "{}=0: the world needs at least one process",
                size.0
            ));
        } else if r >= world_size {
            problems.push(format!(
                "{}={r} is not below {}={world_size}: ranks run from 0 to world size − 1",
                rank.0, size.0
            ));
        }
        // Without a local rank (config-only worlds, or a launcher that gives none) each
        // process is alone on its node.
        let (local_rank_v, local_size_v) = match (local_rank.1, local_size.1) {
            (Some(lr), Some(ls)) => (lr, ls),
            (Some(lr), None) => (lr, lr + 1),
            (None, Some(ls)) => (0, ls),
            (None, None) => (0, 1),
        };
        if local_size_v == 0 || local_rank_v >= local_size_v {
            problems.push(format!(
                "{}={local_rank_v} is not below {}={local_size_v}",
                local_rank.0, local_size.0
            ));
        } else if world_size > 0 && local_size_v > world_size {
            problems.push(format!(
                "{}={local_size_v} ranks on this node exceed {}={world_size} in all",
                local_size.0, size.0
            ));
        }
        // torchrun's agent keeps its own store listening on MASTER_PORT for the whole job, so
        // rank 0 serves the NCCL id one port above it; a port set in the config is used as is.
        let port = match (cfg.master_port, env("MASTER_PORT")) {
            (Some(p), _) => Some(p),
            (None, Some(p)) => match p.trim().parse::<u16>() {
                Ok(p) if p < u16::MAX => Some(p + 1),
                _ => {
                    problems.push(format!(
                        "MASTER_PORT={p} is not a port number below 65535 (the NCCL id is served on MASTER_PORT + 1)"
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        let master = match (cfg.master_addr.clone().or_else(|| env("MASTER_ADDR")), port) {
            // An IPv6 literal is bracketed so the port stays apart from it.
            (Some(a), Some(p)) if a.contains(':') && !a.starts_with('[') => {
                Some(format!("[{a}]:{p}"))
            }
            (Some(a), Some(p)) => Some(format!("{a}:{p}")),
            _ => None,
        };
        // One process has nothing to exchange, unless NCCL is asked for by name (a one-rank
        // communicator: how a single GPU checks the NCCL path).
        let engine = match (cfg.backend, kind) {
            (Backend::Nccl, _) => Engine::Nccl,
            _ if world_size <= 1 => Engine::None,
            (Backend::Auto, "cuda") => Engine::Nccl,
            (Backend::Auto, _) | (Backend::Mpi, _) => Engine::Mpi,
        };
        if engine == Engine::Mpi && launcher == Launcher::Torchrun {
            problems.push(format!(
                "torchrun (RANK={r}, WORLD_SIZE={world_size}) starts processes that MPI does not see, and \
                 device.kind {kind} averages gradients with MPI: launch with mpirun or srun instead"
            ));
        }
        if engine == Engine::Nccl {
            if kind != "cuda" {
                problems.push(format!(
                    "distributed.backend nccl runs on device.kind cuda, not {kind}: use backend mpi (or auto)"
                ));
            }
            if cfg.zero > 0 {
                problems.push(
                    "distributed.zero 1 runs on the MPI engine (distributed.backend: mpi); with NCCL use zero 0"
                        .into(),
                );
            }
            // The NCCL id travels by MPI under mpirun, else over TCP from rank 0.
            let by_mpi = launcher == Launcher::OpenMpi && cfg!(feature = "mpi");
            if world_size > 1 && !by_mpi && master.is_none() {
                problems.push(format!(
                    "the NCCL engine needs a rendezvous to share its id: MASTER_ADDR and MASTER_PORT \
                     (torchrun sets them) or distributed.master_addr/master_port, or mpirun with a \
                     gpt2 built with the `mpi` feature (launcher here: {})",
                    launcher.describe()
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            rank: r,
            world_size,
            local_rank: local_rank_v,
            local_world_size: local_size_v,
            launcher,
            engine,
            master,
        })
    }

    /// Why this binary cannot run this place, if it cannot: the MPI engine needs the `mpi`
    /// feature. Separate from [`Place::detect`] so that reading a launcher does not depend on
    /// how the binary was built.
    pub fn build_problem(&self) -> Option<String> {
        (self.engine == Engine::Mpi && !cfg!(feature = "mpi")).then(|| {
            format!(
                "{} processes ({}) need the MPI engine, and this gpt2 was built without it: \
                 install Open MPI (openmpi-bin, libopenmpi-dev) and build with `--features mpi` \
                 (`make test` adds it when mpicc is found)",
                self.world_size,
                self.launcher.describe()
            )
        })
    }

    /// From the process's environment.
    pub fn from_env(cfg: &DistributedConfig, kind: &str) -> Result<Self, Vec<String>> {
        Self::detect(cfg, kind, &|k| std::env::var(k).ok())
    }

    /// Global rank 0 writes checkpoints, metrics and the log.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The device ids this process trains on: all of `ids` for one process; under a launcher,
    /// the local rank's entry of a one-per-local-rank list, or, for the one-entry default
    /// (`ids: [0]` or none, as the shipped configs have), device `local_rank`. flex has one CPU
    /// that every rank shares, so its ids only count replicas.
    pub fn device_ids(&self, kind: &str, ids: &[usize]) -> Result<Vec<usize>, String> {
        if self.world_size == 1 {
            if self.engine == Engine::Nccl && ids.len() > 1 {
                return Err(format!(
                    "device.ids {ids:?} with distributed.backend nccl: the NCCL engine joins \
                     processes, one device each; for several devices in one process leave the \
                     backend as auto"
                ));
            }
            return Ok(ids.to_vec());
        }
        let (lr, ls) = (self.local_rank, self.local_world_size);
        match ids {
            [] | [0] => Ok(vec![if kind == "flex" { 0 } else { lr }]),
            _ if ids.len() == ls => Ok(vec![if kind == "flex" { 0 } else { ids[lr] }]),
            [one] if kind != "flex" => Err(format!(
                "device.ids [{one}] names one device for the {ls} ranks on this node \
                 (local world size {ls}): two ranks on one GPU. List one device per local rank \
                 (e.g. [{}]), or leave ids as [0] for device = local rank",
                (0..ls)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "device.ids {ids:?} has {} entries but {ls} ranks run on this node: under a \
                 launcher each process drives one device, so list one per local rank \
                 ({ls} entries) or leave ids as [0] (several devices in one process and several \
                 processes are not combined)",
                ids.len()
            )),
        }
    }

    /// The plan's "world" row.
    pub fn describe(&self) -> String {
        if self.world_size == 1 && self.launcher == Launcher::None {
            return "1 process".into();
        }
        let engine = match self.engine {
            Engine::None => "none",
            Engine::Mpi => "MPI (host-staged all-reduce)",
            Engine::Nccl => "NCCL (all-reduce on the devices)",
        };
        format!(
            "{} processes, {} per node; this is rank {} (local {}); launcher {}; engine {engine}",
            self.world_size,
            self.local_world_size,
            self.rank,
            self.local_rank,
            self.launcher.describe()
        )
    }
}

/// Slurm's tasks on this node: `SLURM_STEP_TASKS_PER_NODE` or `SLURM_TASKS_PER_NODE`, whose
/// first entry (`8(x2)`, `4,2`) is this node's only where all nodes run the same number; with
/// uneven nodes the local world size must be set (`distributed.local_world_size`).
fn slurm_local_size(
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> (&'static str, Option<usize>) {
    for name in ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"] {
        let Some(v) = env(name) else { continue };
        let entries: Vec<&str> = v.split(',').collect();
        let first = entries[0].split('(').next().unwrap_or("").trim();
        let Ok(n) = first.parse::<usize>() else {
            problems.push(format!("{name}={v}: cannot read the tasks per node"));
            return (name, None);
        };
        let uneven = entries
            .iter()
            .any(|e| e.split('(').next().unwrap_or("").trim() != first);
        if uneven {
            problems.push(format!(
                "{name}={v}: nodes run different numbers of tasks; set distributed.local_world_size"
            ));
        }
        return (name, Some(n));
    }
    ("SLURM_TASKS_PER_NODE", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
    }

    fn place(cfg: &DistributedConfig, pairs: &[(&str, &str)]) -> Result<Place, Vec<String>> {
        Place::detect(cfg, "flex", &env_of(pairs))
    }

    const OMPI_R1: [(&str, &str); 4] = [
        ("OMPI_COMM_WORLD_RANK", "1"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
    ];
    const TORCH_R3: [(&str, &str); 6] = [
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "3"),
        ("LOCAL_WORLD_SIZE", "4"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];
    const SRUN_R5: [(&str, &str); 6] = [
        ("SLURM_STEP_ID", "0"),
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "16"),
        ("SLURM_LOCALID", "5"),
        ("SLURM_NODEID", "0"),
        ("SLURM_STEP_TASKS_PER_NODE", "8(x2)"),
    ];

    #[test]
    fn no_launcher_is_one_process() {
        let p = place(&DistributedConfig::default(), &[]).unwrap();
        assert_eq!(p, Place::default());
        assert_eq!(p.device_ids("cuda", &[0, 1]).unwrap(), vec![0, 1]);
    }

    #[test]
    fn each_launcher_is_read() {
        let mpi = Place {
            rank: 1,
            world_size: 4,
            local_rank: 1,
            local_world_size: 2,
            launcher: Launcher::OpenMpi,
            engine: Engine::Mpi,
            master: None,
        };
        let d = DistributedConfig::default();
        let p = place(&d, &OMPI_R1).unwrap();
        assert_eq!(p, mpi);
        assert_eq!(p.build_problem().is_some(), !cfg!(feature = "mpi"));
        // torchrun on CUDA (NCCL); on flex it is refused (MPI cannot see its processes).
        let t = Place::detect(&d, "cuda", &env_of(&TORCH_R3)).unwrap();
        assert_eq!(
            (
                t.rank,
                t.world_size,
                t.local_rank,
                t.local_world_size,
                t.launcher
            ),
            (3, 8, 3, 4, Launcher::Torchrun)
        );
        // torchrun's own store holds MASTER_PORT: ours is the next one.
        assert_eq!(t.master.as_deref(), Some("10.0.0.1:29501"));
        let s = place(&d, &SRUN_R5).unwrap();
        assert_eq!(
            (
                s.rank,
                s.world_size,
                s.local_rank,
                s.local_world_size,
                s.launcher
            ),
            (5, 16, 5, 8, Launcher::Slurm)
        );
        assert_eq!(Place::default().build_problem(), None);
    }

    /// mpirun inside a Slurm allocation, under torchrun's variables too: Open MPI's win, and
    /// the config wins over all of them.
    #[test]
    fn precedence_is_config_then_open_mpi_then_torchrun_then_slurm() {
        let all: Vec<(&str, &str)> = OMPI_R1
            .iter()
            .chain(&TORCH_R3)
            .chain(&SRUN_R5)
            .copied()
            .collect();
        let d = DistributedConfig::default();
        let read = |cfg: &DistributedConfig, pairs: &[(&str, &str)]| place(cfg, pairs).unwrap();
        let p = read(&d, &all);
        assert_eq!((p.rank, p.launcher), (1, Launcher::OpenMpi));
        let p = Place::detect(&d, "cuda", &env_of(&all[4..])).unwrap();
        assert_eq!((p.rank, p.launcher), (3, Launcher::Torchrun));
        let p = read(&d, &SRUN_R5);
        assert_eq!((p.rank, p.launcher), (5, Launcher::Slurm));
        let explicit = DistributedConfig {
            rank: Some(0),
            world_size: Some(2),
            local_rank: Some(0),
            local_world_size: Some(1),
            ..d.clone()
        };
        let p = read(&explicit, &all);
        assert_eq!(
            (
                p.rank,
                p.world_size,
                p.local_rank,
                p.local_world_size,
                p.launcher
            ),
            (0, 2, 0, 1, Launcher::Config)
        );
        // One value from the config, the rest from the launcher.
        let only_local = DistributedConfig {
            local_world_size: Some(4),
            ..d.clone()
        };
        let p = read(&only_local, &OMPI_R1);
        assert_eq!((p.rank, p.world_size, p.local_world_size), (1, 4, 4));
    }

    /// An sbatch script has SLURM_PROCID and SLURM_NTASKS but is no srun step: one process.
    #[test]
    fn an_sbatch_script_without_srun_is_one_process() {
        let batch = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_JOB_ID", "7"),
        ];
        assert_eq!(
            place(&DistributedConfig::default(), &batch).unwrap(),
            Place::default()
        );
    }

    #[test]
    fn every_refusal_names_the_variable_and_its_value() {
        let d = DistributedConfig::default();
        let msg = |pairs: &[(&str, &str)]| place(&d, pairs).unwrap_err().join("\n");
        let m = msg(&[("RANK", "2"), ("WORLD_SIZE", "2")]);
        assert!(m.contains("RANK=2 is not below WORLD_SIZE=2"), "{m}");
        let m = msg(&[("RANK", "x1"), ("WORLD_SIZE", "2")]);
        assert!(m.contains("RANK=x1 is not a non-negative integer"), "{m}");
        let m = msg(&[("RANK", "0")]);
        assert!(m.contains("RANK=0 is set but WORLD_SIZE is not"), "{m}");
        let m = msg(&[("RANK", "0"), ("WORLD_SIZE", "0")]);
        assert!(m.contains("WORLD_SIZE=0"), "{m}");
        let m = msg(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "2"),
            ("LOCAL_WORLD_SIZE", "2"),
        ]);
        assert!(
            m.contains("LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"),
            "{m}"
        );
        let m = msg(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("LOCAL_WORLD_SIZE", "4"),
        ]);
        assert!(
            m.contains("LOCAL_WORLD_SIZE=4 ranks on this node exceed WORLD_SIZE=2"),
            "{m}"
        );
        let m = msg(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "99999"),
        ]);
        assert!(m.contains("MASTER_PORT=99999 is not a port number"), "{m}");
        let m = msg(&TORCH_R3);
        assert!(
            m.contains("torchrun (RANK=3, WORLD_SIZE=8) starts processes that MPI does not see"),
            "{m}"
        );
        let uneven = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "6"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_TASKS_PER_NODE", "4,2"),
        ];
        let m = msg(&uneven);
        assert!(m.contains("SLURM_TASKS_PER_NODE=4,2"), "{m}");
        // The config: half a world is refused.
        let half = DistributedConfig {
            rank: Some(1),
            ..Default::default()
        };
        let m = place(&half, &[]).unwrap_err().join("\n");
        assert!(
            m.contains("distributed.rank=Some(1) and distributed.world_size=None"),
            "{m}"
        );
        let big = DistributedConfig {
            rank: Some(3),
            world_size: Some(3),
            ..Default::default()
        };
        let m = place(&big, &[]).unwrap_err().join("\n");
        assert!(
            m.contains("distributed.rank=3 is not below distributed.world_size=3"),
            "{m}"
        );
        // NCCL: CUDA only, on zero 0, with a rendezvous.
        let two = [("RANK", "0"), ("WORLD_SIZE", "2")];
        let nccl = DistributedConfig {
            backend: Backend::Nccl,
            ..Default::default()
        };
        let m = Place::detect(&nccl, "wgpu", &env_of(&two))
            .unwrap_err()
            .join("\n");
        assert!(m.contains("nccl runs on device.kind cuda, not wgpu"), "{m}");
        let m = Place::detect(&d, "cuda", &env_of(&two))
            .unwrap_err()
            .join("\n");
        assert!(
            m.contains("needs a rendezvous to share its id: MASTER_ADDR"),
            "{m}"
        );
        let zero1 = DistributedConfig {
            zero: 1,
            ..nccl.clone()
        };
        let m = Place::detect(&zero1, "cuda", &env_of(&TORCH_R3))
            .unwrap_err()
            .join("\n");
        assert!(
            m.contains("distributed.zero 1 runs on the MPI engine"),
            "{m}"
        );
        // torchrun's rendezvous: auto is NCCL on CUDA; one process asks for it by name only.
        let p = Place::detect(&d, "cuda", &env_of(&TORCH_R3)).unwrap();
        assert_eq!(
            (p.engine, p.master.as_deref()),
            (Engine::Nccl, Some("10.0.0.1:29501"))
        );
        assert_eq!(
            Place::detect(&d, "cuda", &env_of(&[])).unwrap().engine,
            Engine::None
        );
        assert_eq!(
            Place::detect(&nccl, "cuda", &env_of(&[])).unwrap().engine,
            Engine::Nccl
        );
    }

    /// What `device.ids` means under a launcher, and two ranks on one GPU refused.
    #[test]
    fn device_ids_under_a_launcher() {
        let p = Place {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            local_world_size: 2,
            launcher: Launcher::Torchrun,
            engine: Engine::Mpi,
            master: None,
        };
        assert_eq!(p.device_ids("cuda", &[0]).unwrap(), vec![1]);
        assert_eq!(p.device_ids("cuda", &[]).unwrap(), vec![1]);
        assert_eq!(p.device_ids("cuda", &[4, 6]).unwrap(), vec![6]);
        assert_eq!(p.device_ids("flex", &[0]).unwrap(), vec![0]);
        assert_eq!(p.device_ids("flex", &[0, 1]).unwrap(), vec![0]);
        let e = p.device_ids("cuda", &[2]).unwrap_err();
        assert!(
            e.contains("device.ids [2]") && e.contains("two ranks on one GPU"),
            "{e}"
        );
        let one_nccl = Place {
            engine: Engine::Nccl,
            ..Place::default()
        };
        assert_eq!(one_nccl.device_ids("cuda", &[3]).unwrap(), vec![3]);
        let e = one_nccl.device_ids("cuda", &[0, 1]).unwrap_err();
        assert!(e.contains("with distributed.backend nccl"), "{e}");
        let e = p.device_ids("cuda", &[0, 1, 2]).unwrap_err();
        assert!(
            e.contains("device.ids [0, 1, 2] has 3 entries but 2 ranks"),
            "{e}"
        );
    }
}
