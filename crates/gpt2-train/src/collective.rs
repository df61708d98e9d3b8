//! Collectives between the processes of a multi-process run (`world.rs` says who they are):
//! sums, a broadcast from rank 0, a barrier, and the abort that ends the whole job.
//!
//! The engine is Open MPI through the `mpi` crate (feature `mpi`). Gradients are read to the
//! host, `MPI_Allreduce`d and written back, as gloo does for CPU tensors in PyTorch; the sum
//! of two f32 values is commutative in IEEE arithmetic, so two processes reduce exactly what two
//! replicas in one process reduce (`parallel.rs`). Every call is made by every rank in the same
//! order from the training thread (MPI is initialised single-threaded).
//!
//! A rank that dies (kill -9, OOM) is noticed by mpirun, which ends the others; a rank that
//! fails with an error calls [`Collective::abort`], so its peers never wait in a collective for
//! it.

use crate::error::{Result, TrainError};
use crate::world::{Engine, Place};

/// Why the ZeRO-1 collectives never meet NCCL: the plan refuses the combination.
#[cfg(feature = "cuda")]
const ZERO_IS_MPI: &str = "ZeRO-1 runs on the MPI engine; the plan refuses it with NCCL";

/// Values per MPI call at most: MPI counts are 32-bit, and 1542M's state is 1.5G values.
#[cfg(feature = "mpi")]
const CHUNK: usize = 1 << 28;

/// The process-level collectives of one run; `Local` (one process) makes every call a no-op.
pub struct Collective {
    inner: Inner,
    world_size: usize,
}

enum Inner {
    Local,
    /// NCCL on this process's CUDA device; the MPI universe that carried its id, if any, is
    /// kept until the end (finalising MPI early would not wait for the others).
    #[cfg(feature = "cuda")]
    Nccl {
        comm: gpt2_model::nccl::Comm,
        rank: usize,
        #[cfg(feature = "mpi")]
        _universe: Option<mpi::environment::Universe>,
    },
    #[cfg(feature = "mpi")]
    Mpi {
        world: mpi::topology::SimpleCommunicator,
        // Dropped last: finalises MPI once the communicator is gone.
        _universe: mpi::environment::Universe,
    },
}

// Without the `mpi` feature every collective is the one-process no-op.
#[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
impl Collective {
    /// One process.
    pub fn local() -> Self {
        Self {
            inner: Inner::Local,
            world_size: 1,
        }
    }

    /// The collectives of `place` on `device` (this process's): initialises MPI for the MPI
    /// engine and checks that MPI's world is the launcher's; for NCCL, shares rank 0's id
    /// (by MPI under mpirun, else over TCP at the master address) and joins the communicator.
    pub fn start(place: &Place, device: &burn::tensor::Device, timeout_s: f64) -> Result<Self> {
        match place.engine {
            Engine::None => Ok(Self::local()),
            #[cfg(feature = "cuda")]
            Engine::Nccl => start_nccl(place, device, timeout_s),
            #[cfg(not(feature = "cuda"))]
            Engine::Nccl => {
                let _ = (device, timeout_s);
                Err(TrainError::Distributed {
                    message: "the NCCL engine needs a gpt2 built with the `cuda` feature".into(),
                    hint: "build with --features cuda, or set distributed.backend: mpi".into(),
                })
            }
            #[cfg(feature = "mpi")]
            Engine::Mpi => {
                use mpi::traits::Communicator;
                let universe = init_mpi()?;
                let world = universe.world();
                let (rank, size) = (world.rank() as usize, world.size() as usize);
                if (rank, size) != (place.rank, place.world_size) {
                    let e = TrainError::Distributed {
                        message: format!(
                            "MPI sees rank {rank} of {size} processes, but the run is rank {} of {} (from {:?})",
                            place.rank, place.world_size, place.launcher
                        ),
                        hint: "the MPI engine needs the processes started by mpirun or srun (not torchrun), \
                               and distributed.rank/world_size, where set, must match them"
                            .into(),
                    };
                    // Returning would finalise MPI, which waits for the other ranks.
                    eprintln!("rank {rank}: error: {e}");
                    world.abort(1);
                }
                abort_on_panic(place.rank);
                Ok(Self {
                    inner: Inner::Mpi {
                        world,
                        _universe: universe,
                    },
                    world_size: size,
                })
            }
            #[cfg(not(feature = "mpi"))]
            Engine::Mpi => Err(TrainError::Distributed {
                message: "this gpt2 was built without MPI".into(),
                hint: "build with --features mpi".into(),
            }),
        }
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// One process and no engine: every collective is a no-op. (A one-rank NCCL
    /// communicator is not local: it runs its collectives, to check them on one GPU.)
    pub fn is_local(&self) -> bool {
        matches!(self.inner, Inner::Local)
    }

    /// Replaces each bucket by its mean over the ranks on the device itself where the engine
    /// can (NCCL), returning `true`; `false` where the caller must go through the host.
    pub fn mean_on_device(&self, buckets: &[burn::tensor::Tensor<1>]) -> bool {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { comm, rank, .. } => {
                comm.all_reduce_mean(buckets)
                    .unwrap_or_else(|e| fatal(*rank, comm, e));
                true
            }
            _ => {
                let _ = buckets;
                false
            }
        }
    }

    /// Elementwise sum over the ranks, in place.
    pub fn sum_f32(&self, buf: &mut [f32]) {
        match &self.inner {
            // Small buffers only (ZeRO-1, which would send large ones, is MPI's): through
            // f64, exact for the f32 values and their two-term sums.
            #[cfg(feature = "cuda")]
            Inner::Nccl { comm, rank, .. } => {
                let mut wide: Vec<f64> = buf.iter().map(|&x| x as f64).collect();
                comm.sum_f64(&mut wide)
                    .unwrap_or_else(|e| fatal(*rank, comm, e));
                buf.iter_mut().zip(wide).for_each(|(x, w)| *x = w as f32);
            }
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => mpi_sum(world, buf),
        }
    }

    /// Elementwise sum over the ranks, in place.
    pub fn sum_f64(&self, buf: &mut [f64]) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { comm, rank, .. } => {
                comm.sum_f64(buf).unwrap_or_else(|e| fatal(*rank, comm, e))
            }
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => mpi_sum(world, buf),
        }
    }

    /// Rank 0's `buf` on every rank.
    pub fn broadcast_f64(&self, buf: &mut [f64]) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { comm, rank, .. } => comm
                .broadcast_f64(0, buf)
                .unwrap_or_else(|e| fatal(*rank, comm, e)),
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::traits::{Communicator, Root};
                world.process_at_rank(0).broadcast_into(buf);
            }
        }
    }

    /// `send` summed over the ranks into `recv` on `root` (`Some` there, `None` elsewhere).
    pub fn reduce_sum_f32(&self, root: usize, send: &[f32], recv: Option<&mut [f32]>) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { .. } => unreachable!("{ZERO_IS_MPI}"),
            Inner::Local => {
                if let Some(recv) = recv {
                    recv.copy_from_slice(send);
                }
            }
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::collective::SystemOperation;
                use mpi::traits::{Communicator, Root};
                let root = world.process_at_rank(root as i32);
                match recv {
                    Some(recv) => {
                        for (s, r) in send.chunks(CHUNK).zip(recv.chunks_mut(CHUNK)) {
                            root.reduce_into_root(s, r, SystemOperation::sum());
                        }
                    }
                    None => {
                        for s in send.chunks(CHUNK) {
                            root.reduce_into(s, SystemOperation::sum());
                        }
                    }
                }
            }
        }
    }

    /// `root`'s `buf` on every rank.
    pub fn broadcast_f32(&self, root: usize, buf: &mut [f32]) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { .. } => unreachable!("{ZERO_IS_MPI}"),
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::traits::{Communicator, Root};
                for c in buf.chunks_mut(CHUNK) {
                    world.process_at_rank(root as i32).broadcast_into(c);
                }
            }
        }
    }

    /// `buf` to rank `to` (which calls [`Collective::recv_f32`] with a buffer of its length).
    pub fn send_f32(&self, to: usize, buf: &[f32]) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { .. } => unreachable!("{ZERO_IS_MPI}"),
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::point_to_point::Destination;
                use mpi::traits::Communicator;
                let dest = world.process_at_rank(to as i32);
                dest.send(&(buf.len() as u64));
                for c in buf.chunks(CHUNK) {
                    dest.send(c);
                }
            }
        }
    }

    /// What rank `from` sent with [`Collective::send_f32`], into `buf` (its length must match).
    pub fn recv_f32(&self, from: usize, buf: &mut [f32]) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { .. } => unreachable!("{ZERO_IS_MPI}"),
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::point_to_point::Source;
                use mpi::traits::Communicator;
                let src = world.process_at_rank(from as i32);
                let (len, _) = src.receive::<u64>();
                assert_eq!(
                    len as usize,
                    buf.len(),
                    "rank {from} sent {len} values where {} were expected",
                    buf.len()
                );
                for c in buf.chunks_mut(CHUNK) {
                    src.receive_into(c);
                }
            }
        }
    }

    /// Every rank waits for all.
    pub fn barrier(&self) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { comm, rank, .. } => {
                comm.barrier().unwrap_or_else(|e| fatal(*rank, comm, e))
            }
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::collective::CommunicatorCollectives;
                world.barrier();
            }
        }
    }

    /// Ends every process of the job with `code` (MPI_Abort), so no rank waits for this one.
    /// Returns only for one process, where there is nobody to end.
    pub fn abort(&self, code: i32) {
        match &self.inner {
            #[cfg(feature = "cuda")]
            Inner::Nccl { comm, .. } => {
                comm.abort();
                std::process::exit(code)
            }
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::traits::Communicator;
                world.abort(code)
            }
        }
    }
}

/// `buf` summed over the ranks, in place.
#[cfg(feature = "mpi")]
fn mpi_sum<T: mpi::datatype::Equivalence + Clone>(
    world: &mpi::topology::SimpleCommunicator,
    buf: &mut [T],
) {
    use mpi::collective::{CommunicatorCollectives, SystemOperation};
    let send = buf.to_vec();
    world.all_reduce_into(&send[..], buf, SystemOperation::sum());
}

/// MPI, initialised once for the process.
#[cfg(feature = "mpi")]
fn init_mpi() -> Result<mpi::environment::Universe> {
    mpi::initialize().ok_or_else(|| TrainError::Distributed {
        message: "MPI was already initialised in this process".into(),
        hint: "start one training run per process".into(),
    })
}

/// A failed NCCL call: this rank says so and tears its communicator down, and the launcher ends
/// the others (a collective has no way back to a consistent step).
#[cfg(feature = "cuda")]
fn fatal(rank: usize, comm: &gpt2_model::nccl::Comm, message: String) -> ! {
    eprintln!("rank {rank}: error: NCCL: {message}");
    comm.abort();
    std::process::exit(1)
}

/// NCCL: rank 0's unique id shared (MPI broadcast under mpirun, else the TCP rendezvous at the
/// master address), then every rank joins on its device.
#[cfg(feature = "cuda")]
fn start_nccl(place: &Place, device: &burn::tensor::Device, timeout_s: f64) -> Result<Collective> {
    use gpt2_model::nccl;
    let failed = |message: String| TrainError::Distributed {
        message,
        hint: "check the NCCL installation and the rendezvous (docs/gpus.md, \"Several machines\")"
            .into(),
    };
    let mut id = [0u8; nccl::ID_BYTES];
    if place.rank == 0 {
        id = nccl::unique_id().map_err(failed)?;
    }
    #[cfg(feature = "mpi")]
    let mut universe = None;
    if place.world_size > 1 {
        #[cfg(feature = "mpi")]
        let by_mpi = place.launcher == crate::world::Launcher::OpenMpi;
        #[cfg(not(feature = "mpi"))]
        let by_mpi = false;
        if by_mpi {
            #[cfg(feature = "mpi")]
            {
                use mpi::traits::{Communicator, Root};
                let u = init_mpi()?;
                u.world().process_at_rank(0).broadcast_into(&mut id[..]);
                universe = Some(u);
            }
        } else {
            let master = place.master.as_deref().ok_or_else(|| {
                failed("no MASTER_ADDR/MASTER_PORT for the NCCL id (the plan checks this)".into())
            })?;
            let got = crate::rendezvous::share(
                place.rank,
                place.world_size,
                master,
                &id,
                std::time::Duration::from_secs_f64(timeout_s),
            )?;
            id = got.as_slice().try_into().map_err(|_| {
                failed(format!(
                    "the rendezvous gave {} bytes, not an NCCL id",
                    got.len()
                ))
            })?;
        }
    }
    let comm = match nccl::Comm::join(device, place.rank, place.world_size, &id) {
        Ok(comm) => comm,
        Err(e) => {
            // With MPI initialised, returning would finalise it, which waits for the others.
            #[cfg(feature = "mpi")]
            if let Some(u) = &universe {
                use mpi::traits::Communicator;
                eprintln!("rank {}: error: NCCL: {e}", place.rank);
                u.world().abort(1);
            }
            return Err(failed(e));
        }
    };
    abort_on_panic(place.rank);
    Ok(Collective {
        inner: Inner::Nccl {
            comm,
            rank: place.rank,
            #[cfg(feature = "mpi")]
            _universe: universe,
        },
        world_size: place.world_size,
    })
}

/// In a multi-process run a panic must end the job: unwinding would finalise MPI (which waits for
/// every rank) or leave the peers in a collective. The panic is printed as usual, then the
/// process aborts, and the launcher ends the others.
#[cfg(any(feature = "mpi", feature = "cuda"))]
fn abort_on_panic(rank: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("rank {rank}: a panic ends the job");
        std::process::abort();
    }));
}
