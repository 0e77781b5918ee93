//! The per-log checkpoint file: recovery point, log start offset, high watermark, and the
//! leader epoch of the newest batch.
//!
//! Owns: its layout and atomic replacement (write temp, fdatasync, rename, fsync dir).
//! Invariants: the recovery point is only ever written after every byte below it (log and
//! index entries) was fdatasynced; a file that fails its CRC is treated as missing.
//!
//! Layout (38 bytes, big-endian): magic "SLCP" | version u16 = 2 | recovery_point i64 |
//! log_start_offset i64 | high_watermark i64 | last_leader_epoch i32 | crc32c u32 of the
//! preceding 34 bytes. `last_leader_epoch` is -1 when unknown. Version 1 (34 bytes, without
//! the epoch) is still read, as an unknown epoch.
//!
//! Why the epoch is here: the leader epoch cache is rebuilt from batch headers at start-up,
//! but a log emptied by DeleteRecords or retention (log start == log end > 0) has no header
//! left to rebuild it from. Kafka keeps `leader-epoch-checkpoint` for the same reason.

use std::path::Path;

use crate::error::LogError;
use crate::io;
use crate::limits::CHECKPOINT_BYTES;

pub(crate) const CHECKPOINT_FILE: &str = "sluice.checkpoint";
const CHECKPOINT_TMP: &str = "sluice.checkpoint.tmp";
const MAGIC: &[u8; 4] = b"SLCP";
const VERSION: u16 = 2;
const VERSION_1: u16 = 1;
/// Bytes of a version 1 checkpoint (no leader epoch).
const CHECKPOINT_V1_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// The partition leader epoch of the newest batch ever appended (and not truncated),
    /// even if retention or DeleteRecords removed it since; `None` if unknown.
    pub last_leader_epoch: Option<i32>,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CHECKPOINT_BYTES);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&self.recovery_point.to_be_bytes());
        b.extend_from_slice(&self.log_start_offset.to_be_bytes());
        b.extend_from_slice(&self.high_watermark.to_be_bytes());
        b.extend_from_slice(&self.last_leader_epoch.unwrap_or(-1).to_be_bytes());
        let crc = crate::batch::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(b.len(), CHECKPOINT_BYTES);
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
        let len = match b.get(4..6)? {
            v if v == VERSION.to_be_bytes() => CHECKPOINT_BYTES,
            v if v == VERSION_1.to_be_bytes() => CHECKPOINT_V1_BYTES,
            _ => return None,
        };
        if b.len() != len || &b[0..4] != MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(len - 4);
        if u32::from_be_bytes(crc.try_into().ok()?) != crate::batch::crc32c(body) {
            return None;
        }
        let field = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let last_leader_epoch = (len == CHECKPOINT_BYTES)
            .then(|| i32::from_be_bytes(b[30..34].try_into().expect("4 bytes")))
            .filter(|&e| e >= 0);
        Some(Checkpoint {
            recovery_point: field(6),
            log_start_offset: field(14),
            high_watermark: field(22),
            last_leader_epoch,
        })
    }
}

/// Reads the checkpoint; `None` if missing or damaged.
pub(crate) async fn read(dir: &Path) -> Result<Option<Checkpoint>, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    match compio::fs::read(&path).await {
        Ok(bytes) => Ok(Checkpoint::decode(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("read", path, e)),
    }
}

/// Atomically replaces the checkpoint.
pub(crate) async fn write(dir: &Path, checkpoint: Checkpoint) -> Result<(), LogError> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let path = dir.join(CHECKPOINT_FILE);
    io::replace_file(dir, &tmp, &path, checkpoint.encode()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        for last_leader_epoch in [Some(0), Some(9), None] {
            let c = Checkpoint {
                recovery_point: 7,
                log_start_offset: 3,
                high_watermark: 5,
                last_leader_epoch,
            };
            let mut b = c.encode();
            assert_eq!(Checkpoint::decode(&b), Some(c));
            b[10] ^= 1;
            assert_eq!(Checkpoint::decode(&b), None);
            assert_eq!(Checkpoint::decode(&b[..20]), None);
        }
    }

    #[test]
    fn version_1_reads_as_an_unknown_epoch() {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION_1.to_be_bytes());
        for v in [7i64, 3, 5] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crate::batch::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(b.len(), CHECKPOINT_V1_BYTES);
        assert_eq!(
            Checkpoint::decode(&b),
            Some(Checkpoint {
                recovery_point: 7,
                log_start_offset: 3,
                high_watermark: 5,
                last_leader_epoch: None,
            })
        );
    }

    #[test]
    fn write_then_read() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(read(dir.path()).await.unwrap(), None);
            let c = Checkpoint {
                recovery_point: 70,
                log_start_offset: 30,
                high_watermark: 50,
                last_leader_epoch: Some(4),
            };
            write(dir.path(), c).await.unwrap();
            assert_eq!(read(dir.path()).await.unwrap(), Some(c));
        });
    }
}
