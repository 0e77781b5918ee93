//! The quorum's snapshot file, `quorum.snapshot`: the caller's state machine after applying
//! everything through one log index, with the raft metadata of that index (term, voters).
//!
//! Owns: the file format, writing it atomically (`quorum.snapshot.tmp`, `sync_data`, rename,
//! directory sync) and reading it back checked.
//! Does not own: when to write one (`QuorumNode::compact`, or a snapshot received from the
//! leader), the log it goes with (`log_file`, always rewritten after the snapshot).
//!
//! File: `magic: "SQSN" | version: u32 LE | body_length: u64 LE | crc32c(body): u32 LE | body`,
//! body: `index: u64 LE | term: u64 LE | voter_count: u32 LE | voter raft ids: u64 LE each |
//! data` (the rest).
//!
//! Invariants:
//! - The file is only ever replaced by a rename of a fully synced temporary file, so a crash
//!   leaves the old or the new snapshot, never a torn one: any damage (a bad magic, length or
//!   checksum) is not a crash but a bug or a broken disk, and `load` fails with
//!   `QuorumError::Corrupt` rather than starting empty.
//! - A leftover `quorum.snapshot.tmp` (a crash before the rename) is ignored and removed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use raft::eraftpb::{ConfState, Snapshot};

use super::error::QuorumError;

/// The file's name inside the quorum's directory.
pub const SNAPSHOT_FILE_NAME: &str = "quorum.snapshot";
/// Where the next snapshot is written before it is renamed over `SNAPSHOT_FILE_NAME`.
pub const SNAPSHOT_TMP_FILE_NAME: &str = "quorum.snapshot.tmp";
/// The largest snapshot (the caller's data). Sized so that a raft `MsgSnapshot` carrying it
/// fits the quorum's message limit (asserted in `quorum`).
pub const SNAPSHOT_DATA_BYTES_MAX: usize = 60 << 20;

const MAGIC: &[u8; 4] = b"SQSN";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4 + 4 + 8 + 4;
/// Voters a snapshot may list (far more than the quorum ever has; bounds the decode).
const VOTERS_MAX: u32 = 1024;
const BODY_BYTES_MAX: u64 = (SNAPSHOT_DATA_BYTES_MAX + 8 + 8 + 4) as u64 + VOTERS_MAX as u64 * 8;

/// Writes `snapshot` as `dir/quorum.snapshot`, atomically and durably: when this returns Ok
/// the new snapshot is what `load` returns, even after a crash.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<(), QuorumError> {
    let meta = snapshot.get_metadata();
    let voters = meta.get_conf_state().get_voters();
    assert!(
        snapshot.data.len() <= SNAPSHOT_DATA_BYTES_MAX,
        "checked by the caller"
    );
    assert!(voters.len() <= VOTERS_MAX as usize);
    let mut body = Vec::with_capacity(20 + voters.len() * 8 + snapshot.data.len());
    body.extend_from_slice(&meta.index.to_le_bytes());
    body.extend_from_slice(&meta.term.to_le_bytes());
    body.extend_from_slice(&(voters.len() as u32).to_le_bytes());
    for voter in voters {
        body.extend_from_slice(&voter.to_le_bytes());
    }
    body.extend_from_slice(&snapshot.data);
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&super::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);

    let tmp = dir.join(SNAPSHOT_TMP_FILE_NAME);
    let path = dir.join(SNAPSHOT_FILE_NAME);
    let io = QuorumError::io;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(&bytes).map_err(io("write", &tmp))?;
    file.sync_data().map_err(io("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
    sync_dir(dir)
}

/// Reads `dir/quorum.snapshot` (`None` if there is none), removing a leftover temporary file.
pub fn load(dir: &Path) -> Result<Option<Snapshot>, QuorumError> {
    remove_leftover(
        &dir.join(SNAPSHOT_TMP_FILE_NAME),
        "an unfinished snapshot (a crash while writing it); the previous one stays",
    )?;
    let path = dir.join(SNAPSHOT_FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(QuorumError::io("read", &path)(source)),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|(offset, reason)| QuorumError::Corrupt {
            path,
            offset,
            reason,
        })
}

/// fsyncs `dir`, so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), QuorumError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(QuorumError::io("sync the quorum directory", dir))
}

/// Removes `tmp`, a temporary file a crash left behind (`what` says which, for the log line);
/// a missing file is fine.
pub fn remove_leftover(tmp: &Path, what: &str) -> Result<(), QuorumError> {
    match std::fs::remove_file(tmp) {
        Ok(()) => {
            tracing::warn!(target: "sluice::quorum", path = %tmp.display(), "removed {what}");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(QuorumError::io("remove", tmp)(source)),
    }
}

/// The file's content, or where and why it cannot be a file `write` wrote.
fn decode(bytes: &[u8]) -> Result<Snapshot, (u64, &'static str)> {
    if bytes.len() < HEADER_BYTES {
        return Err((0, "shorter than the snapshot header"));
    }
    if &bytes[..4] != MAGIC {
        return Err((0, "not a quorum snapshot (bad magic)"));
    }
    if u32_at(bytes, 4) != VERSION {
        return Err((4, "unknown snapshot version"));
    }
    let body_length = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if body_length > BODY_BYTES_MAX || body_length != (bytes.len() - HEADER_BYTES) as u64 {
        return Err((8, "body length does not match the file"));
    }
    let body = &bytes[HEADER_BYTES..];
    if super::crc32c(body) != u32_at(bytes, 16) {
        return Err((16, "snapshot checksum mismatch"));
    }
    if body.len() < 20 {
        return Err((HEADER_BYTES as u64, "body shorter than its fixed fields"));
    }
    let index = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let term = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let voter_count = u32_at(body, 16);
    let voters_end = 20 + voter_count as usize * 8;
    if voter_count == 0 || voter_count > VOTERS_MAX || voters_end > body.len() {
        return Err((HEADER_BYTES as u64 + 16, "impossible voter count"));
    }
    if index == 0 || term == 0 {
        return Err((HEADER_BYTES as u64, "snapshot of index or term 0"));
    }
    let voters = body[20..voters_end]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
    let mut snapshot = Snapshot::default();
    let meta = snapshot.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(ConfState::from((voters, [])));
    snapshot.data = body[voters_end..].to_vec().into();
    Ok(snapshot)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata()
            .set_conf_state(ConfState::from(([1u64, 2, 3], [])));
        s.data = data.to_vec().into();
        s
    }

    #[test]
    fn write_then_load_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        write(dir.path(), &snapshot(7, 2, b"state")).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(snapshot(7, 2, b"state")));
        write(dir.path(), &snapshot(9, 3, b"")).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(snapshot(9, 3, b"")));
        assert!(!dir.path().join(SNAPSHOT_TMP_FILE_NAME).exists());
    }

    #[test]
    fn a_leftover_tmp_file_is_removed_and_the_old_snapshot_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snapshot(7, 2, b"old")).unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_TMP_FILE_NAME), b"SQSN half").unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(snapshot(7, 2, b"old")));
        assert!(!dir.path().join(SNAPSHOT_TMP_FILE_NAME).exists());
    }

    /// Every truncation and every flipped byte of a snapshot file fails to load as Corrupt.
    #[test]
    fn any_damage_is_corrupt_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &snapshot(7, 2, b"some state")).unwrap();
        let path = dir.path().join(SNAPSHOT_FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        let mut damaged: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for at in 0..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= 0x21;
            damaged.push(bytes);
        }
        let mut longer = good.clone();
        longer.push(0);
        damaged.push(longer);
        for bytes in damaged {
            std::fs::write(&path, &bytes).unwrap();
            let loaded = load(dir.path());
            assert!(
                matches!(loaded, Err(QuorumError::Corrupt { .. })),
                "{} bytes: {loaded:?}",
                bytes.len()
            );
        }
    }
}
