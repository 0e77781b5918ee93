//! Producer-state snapshot files: `<offset:020>.snapshot` beside the segments (Kafka's
//! `ProducerStateManager` snapshot files, by name and role).
//!
//! Owns: the files' naming, framing, checksum and atomic replacement, and which of them a
//! log keeps. The payload (the producers' entries) is the broker's (`partition::
//! producer_state`): the engine owns the directory, the broker owns what a producer is.
//! Invariants:
//! - A snapshot named `offset` holds the state of exactly the batches below `offset`.
//! - No snapshot lies above the log end offset: open deletes those above the recovered end
//!   (a crash cut the tail they described), `truncate_to` those above the cut, and a write
//!   above the log end is refused. Writes and deletions hold the log's write lock, so a
//!   truncation never races a snapshot being written.
//! - A file is written whole or not at all (temp, fdatasync, rename, directory fsync, as
//!   `checkpoint.rs`); one that fails its CRC32C or framing is reported and deleted, never
//!   trusted.
//!
//! Layout (big-endian): magic "SLPS" | version u16 = 1 | offset i64 | payload_len u32 |
//! payload | crc32c u32 of everything before it. Not byte-compatible with Kafka's
//! `.snapshot` (whose schema is Kafka's Struct encoding of the same fields): Sluice never
//! reads Kafka's data directories.

use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::io;
use crate::segment::parse_segment_name;

/// File suffix, as Kafka's.
pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";
/// A snapshot being written; a leftover (a crash mid-write) is removed at open.
const SNAPSHOT_TMP_SUFFIX: &str = "snapshot.tmp";
const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u16 = 1;
/// Bytes before the payload: magic, version, offset, payload length.
const HEADER_BYTES: usize = 4 + 2 + 8 + 4;
/// Bytes after it: the CRC32C.
const TRAILER_BYTES: usize = 4;
/// Largest payload written or read. The broker's producer table is bounded (at most 20,000
/// producers of ~200 bytes with their five batches: ~4 MB, plus the unreplicated
/// transactions).
pub const PRODUCER_SNAPSHOT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Snapshots a log keeps (the newest ones). Kafka keeps one per segment; a load needs only
/// the newest valid one, and two older ones cover a damaged newest file.
pub const PRODUCER_SNAPSHOTS_KEPT: usize = 3;

const _: () = assert!(PRODUCER_SNAPSHOTS_KEPT >= 2, "one fallback at least");
const _: () = assert!(PRODUCER_SNAPSHOT_BYTES_MAX <= u32::MAX as usize);

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_SUFFIX}"))
}

fn tmp_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_TMP_SUFFIX}"))
}

/// The framed file for `payload`.
pub(crate) fn encode(offset: i64, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_BYTES + payload.len() + TRAILER_BYTES);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    let crc = crate::batch::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// The payload of a file named `offset`, or why it cannot be trusted.
pub(crate) fn decode(offset: i64, b: &[u8]) -> Result<&[u8], String> {
    if b.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(format!("{} bytes, shorter than a header", b.len()));
    }
    if &b[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u16::from_be_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let named = i64::from_be_bytes(b[6..14].try_into().expect("8 bytes"));
    if named != offset {
        return Err(format!("holds offset {named}, named {offset}"));
    }
    let len = u32::from_be_bytes(b[14..18].try_into().expect("4 bytes")) as usize;
    if len > PRODUCER_SNAPSHOT_BYTES_MAX || b.len() != HEADER_BYTES + len + TRAILER_BYTES {
        return Err(format!(
            "payload length {len} does not match {} bytes",
            b.len()
        ));
    }
    let (body, crc) = b.split_at(HEADER_BYTES + len);
    let crc = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
    if crc != crate::batch::crc32c(body) {
        return Err("CRC32C mismatch".into());
    }
    Ok(&body[HEADER_BYTES..])
}

/// Offsets of the snapshot files in `dir`, ascending; removes leftover temp files.
pub(crate) fn list(dir: &Path) -> Result<Vec<i64>, LogError> {
    // Blocking, once per log at open (as `recovery::list_segments`).
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("read_dir", dir, e))?;
    let mut offsets = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(offset) = parse_segment_name(name, SNAPSHOT_SUFFIX) {
            offsets.push(offset);
        } else if parse_segment_name(name, SNAPSHOT_TMP_SUFFIX).is_some() {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// The payload of snapshot `offset`: `Ok(Err(reason))` if the file is missing or damaged.
pub(crate) async fn read(dir: &Path, offset: i64) -> Result<Result<Vec<u8>, String>, LogError> {
    let path = snapshot_path(dir, offset);
    let bytes = match compio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err("missing".into())),
        Err(e) => return Err(LogError::io("read", path, e)),
    };
    Ok(decode(offset, &bytes).map(<[u8]>::to_vec))
}

/// Writes snapshot `offset` atomically (temp file, fdatasync, rename, directory fsync).
pub(crate) async fn write(dir: &Path, offset: i64, payload: &[u8]) -> Result<(), LogError> {
    if payload.len() > PRODUCER_SNAPSHOT_BYTES_MAX {
        return Err(LogError::Limit(format!(
            "producer snapshot of {} bytes exceeds PRODUCER_SNAPSHOT_BYTES_MAX = {PRODUCER_SNAPSHOT_BYTES_MAX}",
            payload.len()
        )));
    }
    let tmp = tmp_path(dir, offset);
    let path = snapshot_path(dir, offset);
    io::replace_file(dir, &tmp, &path, encode(offset, payload)).await
}

/// Removes snapshot `offset` (missing is fine).
pub(crate) fn remove(dir: &Path, offset: i64) -> Result<(), LogError> {
    let path = snapshot_path(dir, offset);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path, e)),
    }
}

/// Which of `kept` (ascending) to delete: all but the newest `PRODUCER_SNAPSHOTS_KEPT`, and
/// those below `log_start_offset` unless it is the newest (then it is the only state to load
/// from; a snapshot below the log start is still exact, the load trims what retention
/// removed).
pub(crate) fn doomed(kept: &[i64], log_start_offset: i64) -> Vec<i64> {
    let keep_from = kept.len().saturating_sub(PRODUCER_SNAPSHOTS_KEPT);
    let newest = kept.last().copied();
    kept.iter()
        .enumerate()
        .filter(|&(i, &o)| i < keep_from || (o < log_start_offset && Some(o) != newest))
        .map(|(_, &o)| o)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage() {
        let payload = b"producers".to_vec();
        let b = encode(42, &payload);
        assert_eq!(decode(42, &b), Ok(&payload[..]));
        assert!(decode(43, &b).is_err(), "named for another offset");
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(decode(42, &bad).is_err(), "flip at byte {i} went unnoticed");
        }
        for len in 0..b.len() {
            assert!(decode(42, &b[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_one_below_the_start() {
        assert_eq!(doomed(&[], 0), Vec::<i64>::new());
        assert_eq!(doomed(&[10, 20, 30, 40], 0), vec![10]);
        assert_eq!(doomed(&[10, 20, 30], 25), vec![10, 20]);
        assert_eq!(doomed(&[10, 20], 50), vec![10], "the newest stays");
    }

    #[test]
    fn write_list_read_remove() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), 7, b"seven").await.unwrap();
            write(dir.path(), 3, b"three").await.unwrap();
            std::fs::write(tmp_path(dir.path(), 9), b"torn").unwrap();
            assert_eq!(list(dir.path()).unwrap(), vec![3, 7]);
            assert!(
                !tmp_path(dir.path(), 9).exists(),
                "leftover temp file removed"
            );
            assert_eq!(read(dir.path(), 7).await.unwrap(), Ok(b"seven".to_vec()));
            std::fs::write(snapshot_path(dir.path(), 7), b"garbage").unwrap();
            assert!(read(dir.path(), 7).await.unwrap().is_err());
            remove(dir.path(), 7).unwrap();
            remove(dir.path(), 7).unwrap();
            assert_eq!(read(dir.path(), 7).await.unwrap(), Err("missing".into()));
            assert_eq!(list(dir.path()).unwrap(), vec![3]);
        });
    }
}
