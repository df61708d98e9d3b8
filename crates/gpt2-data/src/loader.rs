//! Deterministic batches of (B, T+1) token windows from shards, for one rank of a data-parallel
//! job, with a state that can be saved and restored so a resumed run sees exactly the batches
//! it would have seen.
//!
//! The shards of a split are cut into non-overlapping windows of T+1 tokens starting every T
//! tokens (the +1 is the last target, shared with the next window's first input, as llm.c's
//! `B*T+1` read). Step k of rank r takes windows `(k·world + r)·B .. +B` of the epoch's order. An
//! epoch ends when the next step would run past the last window (the remainder is skipped, as in
//! llm.c); the next epoch starts over. With `shuffle`, each epoch visits the shards and the
//! windows inside each shard in an order drawn from (seed, epoch, shard) — a pure function, so
//! there is no RNG state to lose.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::prepare::{Manifest, MANIFEST};
use crate::shard::ShardReader;

/// Everything needed to continue exactly where a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// Windows of this epoch already handed out (to all ranks).
    pub cursor: u64,
}

/// See the module docs.
pub struct TokenLoader {
    shards: Vec<ShardReader>,
    windows: Vec<u64>,
    total_windows: u64,
    batch: usize,
    seq_len: usize,
    rank: usize,
    world: usize,
    shuffle: Option<u64>,
    state: LoaderState,
    /// (epoch, order of shards, prefix sums of their windows) for the current epoch.
    epoch_order: Option<(u64, Vec<usize>, Vec<u64>)>,
    /// (epoch, shard, permutation of its windows), cached for the shard being read.
    window_perm: Option<(u64, usize, Vec<u32>)>,
}

impl TokenLoader {
    /// A loader over `paths` (in the given order). `shuffle`: `Some(seed)` to permute per epoch.
    pub fn new(
        paths: &[PathBuf],
        batch: usize,
        seq_len: usize,
        rank: usize,
        world: usize,
        shuffle: Option<u64>,
    ) -> Result<Self> {
        if batch == 0 || seq_len == 0 || world == 0 || rank >= world {
            return Err(DataError::Loader(format!(
                "invalid batch {batch}, seq_len {seq_len}, rank {rank}, world {world}"
            )));
        }
        if paths.is_empty() {
            return Err(DataError::Loader("no shards given\nHINT: run `gpt2 prepare` first, and check the shard directory or glob".into()));
        }
        let shards = paths
            .iter()
            .map(|p| ShardReader::open(p))
            .collect::<Result<Vec<_>>>()?;
        let windows: Vec<u64> = shards
            .iter()
            .map(|s| s.len().saturating_sub(1) / seq_len as u64)
            .collect();
        let total_windows = windows.iter().sum();
        let need = (batch * world) as u64;
        if total_windows < need {
            let tokens: u64 = shards.iter().map(|s| s.len()).sum();
            return Err(DataError::Loader(format!(
                "the shards hold {tokens} tokens = {total_windows} windows of {seq_len}+1, but one step needs {need} (batch {batch} × world {world})\nHINT: use a smaller batch or seq_len, or prepare more data"
            )));
        }
        Ok(Self {
            shards,
            windows,
            total_windows,
            batch,
            seq_len,
            rank,
            world,
            shuffle,
            state: LoaderState {
                epoch: 0,
                cursor: 0,
            },
            epoch_order: None,
            window_perm: None,
        })
    }

    /// A loader over one split of a prepared directory, via its manifest. With `verify`, every
    /// shard's sha256 is checked against the manifest first.
    #[allow(clippy::too_many_arguments)] // the loader's own settings plus where to find them
    pub fn from_manifest(
        dir: &Path,
        split: &str,
        batch: usize,
        seq_len: usize,
        rank: usize,
        world: usize,
        shuffle: Option<u64>,
        verify: bool,
    ) -> Result<Self> {
        let m = Manifest::load(&dir.join(MANIFEST))?;
        if verify {
            for s in m.shards.iter().filter(|s| s.split == split) {
                ShardReader::open_verified(&dir.join(&s.file), &s.sha256)?;
            }
        }
        let paths = m.shard_paths(dir, split);
        if paths.is_empty() {
            return Err(DataError::Loader(format!(
                "{}: no `{split}` shards in the manifest",
                dir.display()
            )));
        }
        Self::new(&paths, batch, seq_len, rank, world, shuffle)
    }

    pub fn state(&self) -> LoaderState {
        self.state
    }

    pub fn set_state(&mut self, state: LoaderState) {
        self.state = state;
    }

    /// Total tokens in the shards.
    pub fn total_tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Steps (of `batch × world` windows) in one epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.total_windows / (self.batch * self.world) as u64
    }

    /// The next batch for this rank: `batch` rows of `seq_len + 1` tokens, row-major.
    pub fn next_batch(&mut self) -> Vec<u32> {
        let step = (self.batch * self.world) as u64;
        if self.state.cursor + step > self.total_windows {
            self.state.epoch += 1;
            self.state.cursor = 0;
        }
        let first = self.state.cursor + (self.rank * self.batch) as u64;
        let row = self.seq_len + 1;
        let mut out = vec![0u32; self.batch * row];
        for b in 0..self.batch {
            let (shard, window) = self.locate(first + b as u64);
            let start = window * self.seq_len as u64;
            self.shards[shard].read_into(start, &mut out[b * row..(b + 1) * row]);
        }
        self.state.cursor += step;
        out
    }

    /// Shard and window (within it) of the epoch's `i`-th window.
    fn locate(&mut self, i: u64) -> (usize, u64) {
        let epoch = self.state.epoch;
        if self
            .epoch_order
            .as_ref()
            .is_none_or(|(e, _, _)| *e != epoch)
        {
            let mut order: Vec<usize> = (0..self.shards.len()).collect();
            if let Some(seed) = self.shuffle {
                permute(&mut order, mix(seed, epoch, u64::MAX));
            }
            let mut prefix = Vec::with_capacity(order.len() + 1);
            prefix.push(0);
            for &s in &order {
                prefix.push(prefix.last().copied().unwrap_or(0) + self.windows[s]);
            }
            self.epoch_order = Some((epoch, order, prefix));
        }
        let (_, order, prefix) = self.epoch_order.as_ref().expect("set above");
        let k = prefix.partition_point(|&p| p <= i) - 1;
        let shard = order[k];
        let local = i - prefix[k];
        let Some(seed) = self.shuffle else {
            return (shard, local);
        };
        if self
            .window_perm
            .as_ref()
            .is_none_or(|(e, s, _)| *e != epoch || *s != shard)
        {
            let mut perm: Vec<u32> = (0..self.windows[shard] as u32).collect();
            permute(&mut perm, mix(seed, epoch, shard as u64));
            self.window_perm = Some((epoch, shard, perm));
        }
        let perm = &self.window_perm.as_ref().expect("set above").2;
        (shard, perm[local as usize] as u64)
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&[a.to_le_bytes(), b.to_le_bytes()].concat(), seed)
}

/// Fisher–Yates with splitmix64 from `state`.
fn permute<T>(v: &mut [T], mut state: u64) {
    for i in (1..v.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardWriter;

    fn shard(dir: &Path, name: &str, tokens: &[u16]) -> PathBuf {
        let p = dir.join(name);
        let mut w = ShardWriter::create(&p, "train").unwrap();
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        w.push(&bytes, 1, None).unwrap();
        w.finish().unwrap();
        p
    }

    #[test]
    fn windows_are_consecutive_and_ranks_disjoint() {
        let dir = tempfile::tempdir().unwrap();
        let a = shard(dir.path(), "a.bin", &(0..41).collect::<Vec<_>>()); // 10 windows of 4+1
        let b = shard(dir.path(), "b.bin", &(100..121).collect::<Vec<_>>()); // 5 windows
        let paths = vec![a, b];
        let mut r0 = TokenLoader::new(&paths, 2, 4, 0, 2, None).unwrap();
        let mut r1 = TokenLoader::new(&paths, 2, 4, 1, 2, None).unwrap();
        assert_eq!(r0.next_batch(), vec![0, 1, 2, 3, 4, 4, 5, 6, 7, 8]);
        assert_eq!(r1.next_batch(), vec![8, 9, 10, 11, 12, 12, 13, 14, 15, 16]);
        // 15 windows / 4 per step = 3 steps, then a new epoch.
        assert_eq!(r0.steps_per_epoch(), 3);
        r0.next_batch();
        let third = r0.next_batch();
        assert_eq!(third, vec![32, 33, 34, 35, 36, 36, 37, 38, 39, 40]);
        r1.next_batch();
        assert_eq!(r1.next_batch()[..5], [100, 101, 102, 103, 104]); // windows 10, 11: shard b
        assert_eq!(r0.next_batch()[..5], [0, 1, 2, 3, 4]);
        assert_eq!(r0.state().epoch, 1);
    }

    #[test]
    fn restored_state_replays_the_same_batches() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec![
            shard(dir.path(), "a.bin", &(0..385).collect::<Vec<_>>()), // 48 windows of 8+1
            shard(dir.path(), "b.bin", &(1000..1289).collect::<Vec<_>>()), // 36 windows: 84 = 28 steps of 3
        ];
        let mut full = TokenLoader::new(&paths, 3, 8, 0, 1, Some(7)).unwrap();
        let all: Vec<Vec<u32>> = (0..60).map(|_| full.next_batch()).collect();
        let mut first = TokenLoader::new(&paths, 3, 8, 0, 1, Some(7)).unwrap();
        for b in &all[..25] {
            assert_eq!(&first.next_batch(), b);
        }
        let saved = serde_json::to_string(&first.state()).unwrap();
        let mut resumed = TokenLoader::new(&paths, 3, 8, 0, 1, Some(7)).unwrap();
        resumed.set_state(serde_json::from_str(&saved).unwrap());
        for b in &all[25..] {
            assert_eq!(&resumed.next_batch(), b);
        }
        // Shuffling changes the order between epochs but visits every window once per epoch.
        let per_epoch = full.steps_per_epoch() as usize;
        let mut e0: Vec<u32> = all[..per_epoch]
            .iter()
            .flat_map(|b| b.chunks(9).map(|w| w[0]))
            .collect();
        let mut e1: Vec<u32> = all[per_epoch..2 * per_epoch]
            .iter()
            .flat_map(|b| b.chunks(9).map(|w| w[0]))
            .collect();
        assert_ne!(e0, e1);
        e0.sort();
        e1.sort();
        assert_eq!(e0, e1);
    }

    #[test]
    fn too_little_data_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = shard(dir.path(), "a.bin", &[1, 2, 3]);
        let e = TokenLoader::new(&[p], 4, 8, 0, 1, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("HINT") && e.contains("batch 4"), "{e}");
    }
}
