//! TensorBoard event files (`logging.tensorboard: true`): `run_dir/tb/events.out.tfevents.*`,
//! one scalar per number of each metrics.jsonl row, tagged `{kind}/{field}` (`train/loss`,
//! `val/loss`, `train/lr`, `hellaswag/acc_norm`, …) and keyed by step.
//!
//! Written here rather than with a crate: the one small scalar writer (syntaxdot-summary, last
//! released in 2021 on prost 0.9) cannot write the `SessionLog` event a resumed run needs, and the
//! format is small: TFRecord framing around three protobuf messages, encoded by hand below.
//!
//! **Resume.** A run that continues from the checkpoint of step S opens a new event file whose
//! first events are the file version and `SessionLog{status: START}` at step S + 1. TensorBoard's
//! reader then drops every event of step > S read before it (`EventAccumulator`'s purge of
//! orphaned data, which PyTorch's `SummaryWriter(purge_step=...)` relies on too), so the steps
//! the interrupted run logged past its checkpoint are superseded, not duplicated. metrics.jsonl
//! drops the same rows (`MetricsLog::open`).
//!
//! Formats: TFRecord (`tensorflow/core/lib/io/record_writer.cc`): u64 length, masked CRC-32C of
//! the length, the bytes, masked CRC-32C of the bytes, all little-endian. `Event`
//! (`tensorflow/core/util/event.proto`): 1 `wall_time` double, 2 `step` int64, 3 `file_version`
//! string, 5 `summary`, 7 `session_log`. `Summary.Value` (`summary.proto`): 1 `tag`, 2
//! `simple_value` float. `SessionLog`: 1 `status`, `START` = 1.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};

/// The directory under the run directory that holds the event files.
pub const DIR: &str = "tb";

/// One event file, appended to as the run goes.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Opens a new event file in `dir` whose readers drop every event from `first_step` on that
    /// earlier files of the directory hold (see the module doc).
    pub fn create(dir: &Path, first_step: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        // Readers load a directory's files in name order: seconds first, then a sequence number
        // for two runs started within one second.
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seq = std::fs::read_dir(dir).at(dir)?.count();
        let path = dir.join(format!("events.out.tfevents.{secs:010}.gpt2.{seq:06}"));
        let file = File::create(&path).at(&path)?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        let mut version = Vec::new();
        string_field(&mut version, 3, "brain.Event:2");
        w.event(first_step, &version)?;
        let mut session = Vec::new();
        varint_field(&mut session, 1, 1); // SessionLog.status = START
        let mut start = Vec::new();
        bytes_field(&mut start, 7, &session);
        w.event(first_step, &start)?;
        Ok(w)
    }

    /// One event holding `values` as scalars at `step`, flushed to the file.
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            string_field(&mut v, 1, tag);
            v.push(2 << 3 | 5); // simple_value: float, fixed 32-bit
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        let mut body = Vec::new();
        bytes_field(&mut body, 5, &summary);
        self.event(step, &body)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An `Event` with `wall_time`, `step` and the given further fields, as one record.
    fn event(&mut self, step: u64, fields: &[u8]) -> Result<()> {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut e = vec![1 << 3 | 1]; // wall_time: double, fixed 64-bit
        e.extend_from_slice(&wall.to_le_bytes());
        varint_field(&mut e, 2, step);
        e.extend_from_slice(fields);
        let len = (e.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(e.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(&e);
        record.extend_from_slice(&masked_crc32c(&e).to_le_bytes());
        self.out.write_all(&record).at(&self.path)?;
        self.out.flush().at(&self.path)
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn string_field(out: &mut Vec<u8>, field: u64, s: &str) {
    bytes_field(out, field, s.as_bytes());
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: records are a few hundred
/// bytes, written a few times a minute.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masked CRC: rotated right by 15 bits plus a constant.
fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_varints_match_their_specifications() {
        // The check value of CRC-32C (RFC 3720, B.4: "123456789" → E3069283).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 B.4: 32 bytes of zeros → 8A9136AA.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        let mut v = Vec::new();
        varint(&mut v, 300); // the protobuf guide's example: 300 → ac 02
        assert_eq!(v, [0xac, 0x02]);
    }
}
