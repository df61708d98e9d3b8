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

    /// The collectives of `place`: initialises MPI for the MPI engine and checks that MPI's
    /// world is the launcher's.
    pub fn start(place: &Place) -> Result<Self> {
        match place.engine {
            Engine::None => Ok(Self::local()),
            Engine::Nccl => Err(TrainError::Distributed {
                message: "the NCCL engine is not available in this build".into(),
                hint: "set distributed.backend: mpi".into(),
            }),
            #[cfg(feature = "mpi")]
            Engine::Mpi => {
                use mpi::traits::Communicator;
                let universe = mpi::initialize().ok_or_else(|| TrainError::Distributed {
                    message: "MPI was already initialised in this process".into(),
                    hint: "start one training run per process".into(),
                })?;
                let world = universe.world();
                let (rank, size) = (world.rank() as usize, world.size() as usize);
                if (rank, size) != (place.rank, place.world_size) {
                    return Err(TrainError::Distributed {
                        message: format!(
                            "MPI sees rank {rank} of {size} processes, but the run is rank {} of {} (from {:?})",
                            place.rank, place.world_size, place.launcher
                        ),
                        hint: "the MPI engine needs the processes started by mpirun or srun (not torchrun), \
                               and distributed.rank/world_size, where set, must match them"
                            .into(),
                    });
                }
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

    /// Elementwise sum over the ranks, in place.
    pub fn sum_f32(&self, buf: &mut [f32]) {
        match &self.inner {
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::collective::{CommunicatorCollectives, SystemOperation};
                let send = buf.to_vec();
                world.all_reduce_into(&send[..], buf, SystemOperation::sum());
            }
        }
    }

    /// Elementwise sum over the ranks, in place.
    pub fn sum_f64(&self, buf: &mut [f64]) {
        match &self.inner {
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::collective::{CommunicatorCollectives, SystemOperation};
                let send = buf.to_vec();
                world.all_reduce_into(&send[..], buf, SystemOperation::sum());
            }
        }
    }

    /// Rank 0's `buf` on every rank.
    pub fn broadcast_f64(&self, buf: &mut [f64]) {
        match &self.inner {
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
            Inner::Local => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi { world, .. } => {
                use mpi::traits::Communicator;
                world.abort(code)
            }
        }
    }
}
