//! The aborted-transaction index: one `<base>.txnindex` file per segment holding the aborted
//! transactions whose ABORT marker lies in that segment (Kafka's `TransactionIndex`).
//!
//! Owns: the entry layout, validation after every read, and the per-segment summary the
//! fetch path consults before touching a file.
//! Invariants:
//! - A file's entries are in marker order (last offset ascending), each inside its segment
//!   (`base <= last_offset < next offset`), each with its own CRC32C; a file that breaks
//!   any of this is damaged as a whole and never read for a fetch (the broker rebuilds it:
//!   it truncates the index from an offset below it and re-derives the rest from the log).
//! - Entries reach a file only below a producer-state snapshot being written, and are
//!   fdatasynced before that snapshot is renamed into place: a snapshot at `X` implies
//!   every aborted transaction with a marker below `X` is in the files (retention aside).
//! - The file goes with its segment (retention, DeleteRecords, truncation) and is cut at a
//!   truncation point.
//!
//! Entry layout (36 bytes, big-endian): producer_id i64 | first_offset i64 | last_offset i64
//! | last_stable_offset i64 | crc32c u32 of the 32 bytes before it. Kafka's entry is 34
//! bytes (a version i16, then the same four fields) without a checksum; Sluice adds one so
//! a damaged entry is found instead of served, and is therefore not byte-compatible.

use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::io;

/// File suffix, as Kafka's.
pub(crate) const TXN_INDEX_SUFFIX: &str = "txnindex";
/// Bytes per entry.
pub const TXN_INDEX_ENTRY_BYTES: usize = 8 * 4 + 4;

/// One aborted transaction (Kafka's `AbortedTxn`): its producer, its first offset, its
/// ABORT marker's offset, and the partition's last stable offset right after the marker
/// (which bounds a search: every later entry starts at or above it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// What the log keeps in memory per `.txnindex` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxnIndexFile {
    /// Validated: `entries` entries, the smallest first offset and the largest marker offset.
    Valid {
        entries: u32,
        first_offset_min: i64,
        last_offset_max: i64,
    },
    /// Failed validation at open: not read until the broker truncates it away.
    Damaged,
}

impl TxnIndexFile {
    pub(crate) fn of(entries: &[AbortedTxn]) -> TxnIndexFile {
        TxnIndexFile::Valid {
            entries: entries.len() as u32,
            first_offset_min: entries
                .iter()
                .map(|e| e.first_offset)
                .min()
                .unwrap_or(i64::MAX),
            last_offset_max: entries.last().map_or(i64::MIN, |e| e.last_offset),
        }
    }

    /// This (valid) file's summary after `added` (later markers) were appended.
    pub(crate) fn extended(self, added: &[AbortedTxn]) -> TxnIndexFile {
        match (self, TxnIndexFile::of(added)) {
            (
                TxnIndexFile::Valid {
                    entries: n,
                    first_offset_min: f,
                    ..
                },
                TxnIndexFile::Valid {
                    entries: m,
                    first_offset_min: g,
                    last_offset_max,
                },
            ) => TxnIndexFile::Valid {
                entries: n + m,
                first_offset_min: f.min(g),
                last_offset_max,
            },
            _ => TxnIndexFile::Damaged,
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        match self {
            TxnIndexFile::Valid { entries, .. } => {
                u64::from(*entries) * TXN_INDEX_ENTRY_BYTES as u64
            }
            TxnIndexFile::Damaged => 0,
        }
    }
}

pub(crate) fn txn_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    crate::segment::segment_path(dir, base_offset, TXN_INDEX_SUFFIX)
}

pub(crate) fn encode(e: &AbortedTxn, out: &mut Vec<u8>) {
    let start = out.len();
    for v in [
        e.producer_id,
        e.first_offset,
        e.last_offset,
        e.last_stable_offset,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let crc = crate::batch::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// The entries of the file of segment `[base_offset, next_offset)`, or why it is damaged.
pub(crate) fn decode(
    b: &[u8],
    base_offset: i64,
    next_offset: i64,
) -> Result<Vec<AbortedTxn>, String> {
    if !b.len().is_multiple_of(TXN_INDEX_ENTRY_BYTES) {
        return Err(format!(
            "{} bytes is not a whole number of entries",
            b.len()
        ));
    }
    let mut out: Vec<AbortedTxn> = Vec::with_capacity(b.len() / TXN_INDEX_ENTRY_BYTES);
    for (i, raw) in b.chunks_exact(TXN_INDEX_ENTRY_BYTES).enumerate() {
        let (body, crc) = raw.split_at(32);
        if u32::from_be_bytes(crc.try_into().expect("4 bytes")) != crate::batch::crc32c(body) {
            return Err(format!("entry {i}: CRC32C mismatch"));
        }
        let field = |at: usize| i64::from_be_bytes(body[at..at + 8].try_into().expect("8"));
        let e = AbortedTxn {
            producer_id: field(0),
            first_offset: field(8),
            last_offset: field(16),
            last_stable_offset: field(24),
        };
        if e.last_offset < base_offset || e.last_offset >= next_offset {
            return Err(format!(
                "entry {i}: marker offset {} outside the segment",
                e.last_offset
            ));
        }
        if e.first_offset > e.last_offset || e.first_offset < 0 {
            return Err(format!(
                "entry {i}: first offset {} after its marker",
                e.first_offset
            ));
        }
        if out.last().is_some_and(|p| p.last_offset >= e.last_offset) {
            return Err(format!("entry {i}: out of marker order"));
        }
        out.push(e);
    }
    Ok(out)
}

/// What open makes of a file: its valid entries, and whether bytes after them were a torn
/// or stale tail to cut (a partial entry left by a crash before its snapshot landed, or
/// entries past a segment end that recovery cut). A CRC32C mismatch is damage wherever it
/// is: a whole entry that fails could be one a snapshot relies on.
pub(crate) fn recover(
    b: &[u8],
    base_offset: i64,
    next_offset: i64,
) -> Result<(Vec<AbortedTxn>, bool), String> {
    let whole = b.len() / TXN_INDEX_ENTRY_BYTES * TXN_INDEX_ENTRY_BYTES;
    let mut kept = Vec::new();
    for (i, raw) in b[..whole].chunks_exact(TXN_INDEX_ENTRY_BYTES).enumerate() {
        match decode(raw, base_offset, i64::MAX) {
            Ok(mut one) => {
                let e = one.pop().expect("one entry");
                if kept
                    .last()
                    .is_some_and(|p: &AbortedTxn| p.last_offset >= e.last_offset)
                {
                    return Err(format!("entry {i}: out of marker order"));
                }
                if e.last_offset >= next_offset {
                    // Past the recovered segment end: the rest goes (still in order).
                    return Ok((kept, true));
                }
                kept.push(e);
            }
            Err(reason) => return Err(format!("entry {i}: {reason}")),
        }
    }
    Ok((kept, whole != b.len()))
}

/// Offsets of the segments with a file in `dir`.
pub(crate) fn list(dir: &Path) -> Result<Vec<i64>, LogError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("read_dir", dir, e))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        if let Some(base) = name
            .to_str()
            .and_then(|n| crate::segment::parse_segment_name(n, TXN_INDEX_SUFFIX))
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The raw file of segment `base_offset`; `None` if there is none (no aborted transaction).
pub(crate) async fn read(dir: &Path, base_offset: i64) -> Result<Option<Vec<u8>>, LogError> {
    let path = txn_index_path(dir, base_offset);
    match compio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("read", path, e)),
    }
}

/// Writes `bytes` (whole entries) at `position` of segment `base_offset`'s file, cutting
/// anything after them, and fdatasyncs it.
pub(crate) async fn write_at(
    dir: &Path,
    base_offset: i64,
    position: u64,
    bytes: Vec<u8>,
) -> Result<(), LogError> {
    let path = txn_index_path(dir, base_offset);
    let file = io::open_rw(&path, true)
        .await
        .map_err(|e| LogError::io("open", &path, e))?;
    let end = position + bytes.len() as u64;
    if !bytes.is_empty() {
        let (res, _) = io::write_all(&file, bytes, position).await;
        res.map_err(|e| LogError::io("write", &path, e))?;
    }
    file.set_len(end)
        .await
        .map_err(|e| LogError::io("truncate", &path, e))?;
    io::sync_data(&file)
        .await
        .map_err(|e| LogError::io("fdatasync", &path, e))?;
    file.close()
        .await
        .map_err(|e| LogError::io("close", &path, e))
}

/// Removes segment `base_offset`'s file (missing is fine).
pub(crate) fn remove(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    let path = txn_index_path(dir, base_offset);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: last_offset + 1,
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let entries = [entry(1, 3, 10), entry(2, 0, 12), entry(1, 13, 19)];
        let mut b = Vec::new();
        for e in &entries {
            encode(e, &mut b);
        }
        assert_eq!(b.len(), 3 * TXN_INDEX_ENTRY_BYTES);
        assert_eq!(decode(&b, 10, 20).unwrap(), entries);
        assert_eq!(
            TxnIndexFile::of(&entries),
            TxnIndexFile::Valid {
                entries: 3,
                first_offset_min: 0,
                last_offset_max: 19
            }
        );
        assert!(decode(&b, 11, 20).is_err(), "an entry below the segment");
        assert!(decode(&b, 10, 19).is_err(), "an entry past the segment");
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x04;
            assert!(decode(&bad, 10, 20).is_err(), "flip at {i}");
        }
        assert!(decode(&b[..b.len() - 1], 10, 20).is_err(), "torn entry");
        let mut swapped = Vec::new();
        encode(&entries[1], &mut swapped);
        encode(&entries[0], &mut swapped);
        assert!(decode(&swapped, 10, 20).is_err(), "out of order");
    }

    #[test]
    fn recovery_cuts_torn_and_stale_tails_only() {
        let mut b = Vec::new();
        for e in [entry(1, 0, 4), entry(1, 5, 9), entry(2, 10, 14)] {
            encode(&e, &mut b);
        }
        let two = vec![entry(1, 0, 4), entry(1, 5, 9)];
        assert_eq!(recover(&b, 0, 20), Ok((decode(&b, 0, 20).unwrap(), false)));
        assert_eq!(recover(&b, 0, 12), Ok((two.clone(), true)), "past the end");
        assert_eq!(
            recover(&b[..b.len() - 3], 0, 20),
            Ok((two.clone(), true)),
            "torn"
        );
        assert_eq!(recover(&b[..b.len() - 3], 0, 12), Ok((two, true)));
        let mut last_bad = b.clone();
        let n = last_bad.len();
        last_bad[n - 1] ^= 1;
        assert!(
            recover(&last_bad, 0, 20).is_err(),
            "a whole entry that fails"
        );
        let mut middle_bad = b.clone();
        middle_bad[TXN_INDEX_ENTRY_BYTES + 3] ^= 1;
        assert!(recover(&middle_bad, 0, 20).is_err(), "damage in the middle");
    }

    #[test]
    fn write_read_cut_remove() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(read(dir.path(), 0).await.unwrap(), None);
            let mut b = Vec::new();
            encode(&entry(1, 0, 4), &mut b);
            encode(&entry(1, 5, 9), &mut b);
            write_at(dir.path(), 0, 0, b.clone()).await.unwrap();
            let mut more = Vec::new();
            encode(&entry(2, 10, 11), &mut more);
            write_at(dir.path(), 0, b.len() as u64, more).await.unwrap();
            let all = decode(&read(dir.path(), 0).await.unwrap().unwrap(), 0, 20).unwrap();
            assert_eq!(all.len(), 3);
            write_at(dir.path(), 0, TXN_INDEX_ENTRY_BYTES as u64, Vec::new())
                .await
                .unwrap();
            let cut = decode(&read(dir.path(), 0).await.unwrap().unwrap(), 0, 20).unwrap();
            assert_eq!(cut, vec![entry(1, 0, 4)]);
            remove(dir.path(), 0).unwrap();
            assert_eq!(read(dir.path(), 0).await.unwrap(), None);
        });
    }
}
