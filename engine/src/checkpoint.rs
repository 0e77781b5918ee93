//! The per-log checkpoint file: recovery point, log start offset, high watermark.
//!
//! Owns: its layout and atomic replacement (write temp, fdatasync, rename, fsync dir).
//! Invariants: the recovery point is only ever written after every byte below it (log and
//! index entries) was fdatasynced; a file that fails its CRC is treated as missing.
//!
//! Layout (34 bytes, big-endian): magic "SLCP" | version u16 = 1 | recovery_point i64 |
//! log_start_offset i64 | high_watermark i64 | crc32c u32 of the preceding 30 bytes.

use std::path::Path;

use crate::error::LogError;
use crate::io;
use crate::limits::CHECKPOINT_BYTES;

pub(crate) const CHECKPOINT_FILE: &str = "sluice.checkpoint";
const CHECKPOINT_TMP: &str = "sluice.checkpoint.tmp";
const MAGIC: &[u8; 4] = b"SLCP";
const VERSION: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CHECKPOINT_BYTES);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&self.recovery_point.to_be_bytes());
        b.extend_from_slice(&self.log_start_offset.to_be_bytes());
        b.extend_from_slice(&self.high_watermark.to_be_bytes());
        let crc = crate::batch::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(b.len(), CHECKPOINT_BYTES);
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != CHECKPOINT_BYTES || &b[0..4] != MAGIC || b[4..6] != VERSION.to_be_bytes() {
            return None;
        }
        let crc = u32::from_be_bytes(b[30..34].try_into().ok()?);
        if crc != crate::batch::crc32c(&b[..30]) {
            return None;
        }
        let field = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Some(Checkpoint {
            recovery_point: field(6),
            log_start_offset: field(14),
            high_watermark: field(22),
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
    let file = compio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .await
        .map_err(|e| LogError::io("create", &tmp, e))?;
    let (res, _) = io::write_all(&file, checkpoint.encode(), 0).await;
    res.map_err(|e| LogError::io("write", &tmp, e))?;
    io::sync_data(&file)
        .await
        .map_err(|e| LogError::io("fdatasync", &tmp, e))?;
    file.close()
        .await
        .map_err(|e| LogError::io("close", &tmp, e))?;
    compio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| LogError::io("rename", &path, e))?;
    io::sync_dir(dir)
        .await
        .map_err(|e| LogError::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let c = Checkpoint {
            recovery_point: 7,
            log_start_offset: 3,
            high_watermark: 5,
        };
        let mut b = c.encode();
        assert_eq!(Checkpoint::decode(&b), Some(c));
        b[10] ^= 1;
        assert_eq!(Checkpoint::decode(&b), None);
        assert_eq!(Checkpoint::decode(&b[..20]), None);
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
            };
            write(dir.path(), c).await.unwrap();
            assert_eq!(read(dir.path()).await.unwrap(), Some(c));
        });
    }
}
