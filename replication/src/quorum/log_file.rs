//! The quorum's log file, `quorum.log`: an append-only sequence of checksummed records that
//! holds raft's log entries after the snapshot and the hard state, replayed in full on open.
//!
//! Owns: the record format, appending records (buffered, then one `write_all` per Ready and
//! `sync_data` when raft says so), replay with a torn or corrupt tail cut off, and `rewrite`:
//! replacing the file atomically by one that starts after a snapshot (compaction).
//! Does not own: when to sync (the caller follows raft-rs's Ready rules), when to compact and
//! the snapshot itself (`snapshot_file`, always durable before the log is rewritten past it).
//!
//! Record: `length: u32 LE | crc32c: u32 LE | kind: u8 | payload`, where `length` counts
//! `kind` and `payload` and the CRC covers the same bytes. Kinds:
//! - `FORMAT` (first record of every file): `version: u32 LE` (2; version 1 files, written
//!   before compaction existed, are read the same and have no `START`).
//! - `START` (only as the second record, only in a rewritten file): `index: u64 LE | term: u64
//!   LE`, the snapshot the log continues: its entries begin at `index + 1`.
//! - `ENTRY`: one raft `Entry`, protobuf-encoded. On replay an entry whose index is not past
//!   the last one truncates the log to just before it (raft overwrote a conflicting suffix,
//!   as `MemStorage::append` does).
//! - `HARD_STATE`: `term: u64 LE | vote: u64 LE | commit: u64 LE`; the last one wins.
//! - `COMMIT`: `commit: u64 LE`, written when only the commit index advanced.
//!
//! Invariants:
//! - Damage can only come from a crash during an unsynced write, so it is at the tail: replay
//!   stops at the first record that is short, has an impossible length or a bad CRC, and the
//!   file is cut there before anything is appended.
//! - A record whose CRC holds but whose content is impossible (an unknown kind, an entry gap,
//!   a commit past the log's end) is not a torn write but a bug or foreign file: open fails
//!   with `QuorumError::Corrupt` instead of dropping synced data.
//! - `rewrite` writes `quorum.log.tmp` in full, syncs it, renames it over `quorum.log` and
//!   syncs the directory: a crash leaves the old file or the new one. A leftover tmp file (a
//!   crash before the rename) is removed by `open`; the old file is still the log.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

use super::error::QuorumError;
use super::snapshot_file::{remove_leftover, sync_dir};

/// The file's name inside the quorum's directory.
pub const LOG_FILE_NAME: &str = "quorum.log";
/// Where `rewrite` builds the next log before renaming it over `LOG_FILE_NAME`.
pub const LOG_TMP_FILE_NAME: &str = "quorum.log.tmp";
/// Written in the `FORMAT` record; bumped when a record changes meaning or a kind is added
/// (2: the `START` record; an older reader refuses the file instead of misreading it).
pub const FORMAT_VERSION: u32 = 2;
/// The version before `START` existed; still read.
const FORMAT_VERSION_NO_START: u32 = 1;
/// No record (kind + payload) may claim more bytes than this; a longer length is damage.
pub const RECORD_BYTES_MAX: u32 = 16 << 20;

const RECORD_HEADER_BYTES: usize = 8;
const KIND_FORMAT: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_HARD_STATE: u8 = 3;
const KIND_COMMIT: u8 = 4;
const KIND_START: u8 = 5;

/// What replay found, kept for `QuorumNode::recovery`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Good records replayed (the `FORMAT` record included).
    pub records: u64,
    /// File length after the cut (the offset new records are appended at).
    pub bytes_kept: u64,
    /// Bytes cut off the tail: a torn or corrupt record and everything after it.
    pub bytes_cut: u64,
    /// Why the first cut record was refused (`None` if nothing was cut).
    pub cut_reason: Option<&'static str>,
}

/// The file's content after replay.
pub struct Replayed {
    /// The log continues the snapshot at this index (0: none, the log starts at index 1).
    pub start_index: u64,
    /// The term of the entry at `start_index` (0 when it is 0).
    pub start_term: u64,
    /// Contiguous from `start_index + 1`.
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    pub recovery: Recovery,
}

pub struct LogFile {
    path: PathBuf,
    file: File,
    /// Records encoded since the last `flush`.
    pending: Vec<u8>,
}

impl LogFile {
    /// Opens or creates `dir/quorum.log`, replays it and cuts a damaged tail.
    pub fn open(dir: &Path) -> Result<(LogFile, Replayed), QuorumError> {
        let io = QuorumError::io;
        std::fs::create_dir_all(dir).map_err(io("create the quorum directory", dir))?;
        remove_leftover(
            &dir.join(LOG_TMP_FILE_NAME),
            "an unfinished log rewrite (a crash while compacting); the previous log stays",
        )?;
        let path = dir.join(LOG_FILE_NAME);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        if created {
            // The new file's directory entry must be durable before anything in it counts.
            sync_dir(dir)?;
        }
        let file_len = file.metadata().map_err(io("stat", &path))?.len();
        let mut replayed = replay(&path, &mut file)?;
        let recovery = &mut replayed.recovery;
        recovery.bytes_cut = file_len - recovery.bytes_kept;
        if recovery.bytes_cut > 0 {
            #[rustfmt::skip]
            tracing::warn!(target: "sluice::quorum", path = %path.display(), offset = recovery.bytes_kept,
                bytes_cut = recovery.bytes_cut, reason = recovery.cut_reason,
                "quorum log has a torn or corrupt tail (a crash during an unsynced write); cut it");
            file.set_len(recovery.bytes_kept)
                .and_then(|()| file.sync_data())
                .map_err(io("cut the damaged tail of", &path))?;
        }
        file.seek(SeekFrom::Start(recovery.bytes_kept))
            .map_err(io("seek", &path))?;
        let mut log = LogFile {
            path,
            file,
            pending: Vec::new(),
        };
        if replayed.recovery.records == 0 {
            log.push(KIND_FORMAT, |b| {
                b.extend_from_slice(&FORMAT_VERSION.to_le_bytes())
            });
            log.flush(true)?;
            replayed.recovery.records = 1;
        }
        Ok((log, replayed))
    }

    /// Replaces `dir/quorum.log` atomically by a log that continues the snapshot at
    /// (`start_index`, `start_term`) with `hard_state` and `entries` (from `start_index + 1`),
    /// and returns it open for appends. The snapshot must be durable already.
    pub fn rewrite(
        dir: &Path,
        start_index: u64,
        start_term: u64,
        hard_state: &HardState,
        entries: &[Entry],
    ) -> Result<LogFile, QuorumError> {
        assert!(start_index > 0 && start_term > 0);
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                start_index + 1,
                "entries continue the snapshot"
            );
        }
        let tmp = dir.join(LOG_TMP_FILE_NAME);
        let path = dir.join(LOG_FILE_NAME);
        let io = QuorumError::io;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        let mut log = LogFile {
            path: tmp.clone(),
            file,
            pending: Vec::new(),
        };
        log.push(KIND_FORMAT, |b| {
            b.extend_from_slice(&FORMAT_VERSION.to_le_bytes())
        });
        log.push(KIND_START, |b| {
            b.extend_from_slice(&start_index.to_le_bytes());
            b.extend_from_slice(&start_term.to_le_bytes());
        });
        log.push_hard_state(hard_state);
        for entry in entries {
            log.push_entry(entry);
        }
        log.flush(true)?;
        std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
        sync_dir(dir)?;
        // The open handle follows the renamed file; appends continue at its end.
        log.path = path;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn push_entry(&mut self, entry: &Entry) {
        self.push(KIND_ENTRY, |b| {
            entry
                .write_to_vec(b)
                .expect("proto3 entries have no required fields to miss")
        });
    }

    pub fn push_hard_state(&mut self, hard_state: &HardState) {
        self.push(KIND_HARD_STATE, |b| {
            b.extend_from_slice(&hard_state.term.to_le_bytes());
            b.extend_from_slice(&hard_state.vote.to_le_bytes());
            b.extend_from_slice(&hard_state.commit.to_le_bytes());
        });
    }

    pub fn push_commit(&mut self, commit: u64) {
        self.push(KIND_COMMIT, |b| b.extend_from_slice(&commit.to_le_bytes()));
    }

    /// Writes the pushed records, then `sync_data` if `sync`. After an error the file's tail
    /// is unknown: the caller must stop using it (reopening cuts a partial record).
    pub fn flush(&mut self, sync: bool) -> Result<(), QuorumError> {
        let io = |op| QuorumError::io(op, &self.path);
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending).map_err(io("write"))?;
            self.pending.clear();
        }
        if sync {
            self.file.sync_data().map_err(io("sync"))?;
        }
        Ok(())
    }

    fn push(&mut self, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
        let start = self.pending.len();
        self.pending.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
        self.pending.push(kind);
        payload(&mut self.pending);
        let body = &self.pending[start + RECORD_HEADER_BYTES..];
        let length = u32::try_from(body.len()).expect("records are bounded by entry limits");
        assert!(length <= RECORD_BYTES_MAX, "record of {length} bytes");
        let crc = super::crc32c(body);
        self.pending[start..start + 4].copy_from_slice(&length.to_le_bytes());
        self.pending[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Reads records from the start until the end or the first damaged one.
fn replay(path: &Path, file: &mut File) -> Result<Replayed, QuorumError> {
    let mut reader = BufReader::with_capacity(1 << 20, &mut *file);
    let mut out = Replayed {
        start_index: 0,
        start_term: 0,
        entries: Vec::new(),
        hard_state: HardState::default(),
        recovery: Recovery::default(),
    };
    let mut body = Vec::new();
    loop {
        let offset = out.recovery.bytes_kept;
        match read_record(&mut reader, &mut body) {
            Ok(true) => {}
            Ok(false) => return Ok(out),
            Err(Damage::Io(source)) => return Err(QuorumError::io("read", path)(source)),
            Err(Damage::Tail(reason)) => {
                out.recovery.cut_reason = Some(reason);
                return Ok(out);
            }
        }
        let corrupt = |reason: &'static str| QuorumError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        apply_record(&mut out, &body).map_err(corrupt)?;
        out.recovery.records += 1;
        out.recovery.bytes_kept += (RECORD_HEADER_BYTES + body.len()) as u64;
    }
}

enum Damage {
    Io(std::io::Error),
    Tail(&'static str),
}

/// Reads one record's body (kind + payload) into `body`; `Ok(false)` at a clean end.
fn read_record(reader: &mut impl Read, body: &mut Vec<u8>) -> Result<bool, Damage> {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    match read_full(reader, &mut header).map_err(Damage::Io)? {
        0 => return Ok(false),
        RECORD_HEADER_BYTES => {}
        _ => return Err(Damage::Tail("short record header")),
    }
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if length == 0 || length > RECORD_BYTES_MAX {
        return Err(Damage::Tail("impossible record length"));
    }
    body.clear();
    body.resize(length as usize, 0);
    if read_full(reader, body).map_err(Damage::Io)? != body.len() {
        return Err(Damage::Tail("short record body"));
    }
    if super::crc32c(body) != crc {
        return Err(Damage::Tail("record checksum mismatch"));
    }
    Ok(true)
}

/// `read_exact` that reports how much it read before the end of the file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Applies one checksummed record to the replayed state; an error is a record that cannot
/// have been written by this code.
fn apply_record(out: &mut Replayed, body: &[u8]) -> Result<(), &'static str> {
    let (&kind, payload) = body.split_first().expect("length >= 1");
    let first = out.recovery.records == 0;
    if first != (kind == KIND_FORMAT) {
        return Err("the FORMAT record is not (only) the first record");
    }
    match kind {
        KIND_FORMAT => {
            if payload != FORMAT_VERSION.to_le_bytes()
                && payload != FORMAT_VERSION_NO_START.to_le_bytes()
            {
                return Err("unknown format version");
            }
        }
        KIND_START => {
            if out.recovery.records != 1 {
                return Err("START is not the second record");
            }
            let [index, term] = u64s::<2>(payload)?;
            if index == 0 || term == 0 {
                return Err("START at index or term 0");
            }
            out.start_index = index;
            out.start_term = term;
        }
        KIND_ENTRY => {
            let entry = Entry::parse_from_bytes(payload).map_err(|_| "entry does not decode")?;
            if entry.index <= out.start_index {
                return Err("entry before the log's start");
            }
            if entry.index > last_index(out) + 1 {
                return Err("entry index leaves a gap");
            }
            if entry.index <= out.hard_state.commit {
                return Err("entry overwrites a committed entry");
            }
            out.entries
                .truncate((entry.index - out.start_index - 1) as usize);
            out.entries.push(entry);
        }
        KIND_HARD_STATE => {
            let [term, vote, commit] = u64s::<3>(payload)?;
            check_commit(out, commit)?;
            out.hard_state.term = term;
            out.hard_state.vote = vote;
            out.hard_state.commit = commit;
        }
        KIND_COMMIT => {
            let [commit] = u64s::<1>(payload)?;
            check_commit(out, commit)?;
            out.hard_state.commit = commit;
        }
        _ => return Err("unknown record kind"),
    }
    Ok(())
}

fn check_commit(out: &Replayed, commit: u64) -> Result<(), &'static str> {
    if commit < out.hard_state.commit {
        return Err("commit index goes backwards");
    }
    if commit > last_index(out) {
        return Err("commit index past the last entry");
    }
    Ok(())
}

fn last_index(out: &Replayed) -> u64 {
    out.entries.last().map_or(out.start_index, |e| e.index)
}

fn u64s<const N: usize>(payload: &[u8]) -> Result<[u64; N], &'static str> {
    if payload.len() != 8 * N {
        return Err("fixed-size record of the wrong length");
    }
    let mut out = [0; N];
    for (value, chunk) in out.iter_mut().zip(payload.chunks_exact(8)) {
        *value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Entry::default()
        }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    fn indexes_and_terms(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn replay_returns_what_was_written_and_truncates_overwritten_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, replayed) = LogFile::open(dir.path()).unwrap();
            assert!(replayed.entries.is_empty());
            assert_eq!(replayed.recovery.records, 1);
            for i in 1..=4 {
                log.push_entry(&entry(i, 1, b"a"));
            }
            log.push_hard_state(&hard_state(1, 2, 2));
            // A new leader in term 2 overwrites 3..=4 with a shorter suffix.
            log.push_entry(&entry(3, 2, b"b"));
            log.push_commit(3);
            log.flush(true).unwrap();
        }
        let (_, replayed) = LogFile::open(dir.path()).unwrap();
        assert_eq!(
            indexes_and_terms(&replayed.entries),
            [(1, 1), (2, 1), (3, 2)]
        );
        assert_eq!(&replayed.entries[2].data[..], b"b");
        assert_eq!(replayed.hard_state, hard_state(1, 2, 3));
        assert_eq!(replayed.recovery.records, 8);
        assert_eq!(replayed.recovery.bytes_cut, 0);
    }

    /// Every possible cut of the file, and a flipped byte in every record, keeps exactly the
    /// records before the damage, and the file accepts appends afterwards.
    #[test]
    fn any_torn_or_corrupt_tail_is_cut_at_the_first_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        let mut ends = Vec::new(); // file length after each record
        {
            let (mut log, _) = LogFile::open(dir.path()).unwrap();
            ends.push(std::fs::metadata(&path).unwrap().len());
            for i in 1..=5 {
                log.push_entry(&entry(i, 1, &[i as u8; 10]));
                log.flush(false).unwrap();
                ends.push(std::fs::metadata(&path).unwrap().len());
            }
        }
        let full = std::fs::read(&path).unwrap();
        let kept_entries = |len: u64| ends.iter().filter(|&&e| e <= len).count() as u64 - 1;
        let mut damaged: Vec<(Vec<u8>, u64)> = Vec::new();
        for cut in ends[0]..full.len() as u64 {
            damaged.push((full[..cut as usize].to_vec(), cut));
        }
        for (record, window) in ends.windows(2).enumerate() {
            for at in window[0]..window[1] {
                let mut bytes = full.clone();
                bytes[at as usize] ^= 0x40;
                // The flip damages record `record + 1`: all before it survives.
                damaged.push((bytes, ends[record]));
            }
        }
        for (bytes, good_len) in damaged {
            std::fs::write(&path, &bytes).unwrap();
            let (mut log, replayed) = LogFile::open(dir.path()).unwrap();
            let kept = kept_entries(good_len);
            assert_eq!(
                replayed.entries.len() as u64,
                kept,
                "good prefix {good_len}"
            );
            assert_eq!(replayed.recovery.bytes_kept, ends[kept as usize]);
            assert_eq!(
                replayed.recovery.bytes_cut,
                bytes.len() as u64 - ends[kept as usize]
            );
            assert_eq!(
                replayed.recovery.cut_reason.is_some(),
                replayed.recovery.bytes_cut > 0
            );
            // Appending after the cut continues the log.
            log.push_entry(&entry(kept + 1, 1, b"after"));
            log.flush(true).unwrap();
            drop(log);
            let (_, again) = LogFile::open(dir.path()).unwrap();
            assert_eq!(again.entries.len() as u64, kept + 1);
            assert_eq!(again.recovery.bytes_cut, 0);
        }
    }

    #[test]
    fn a_rewritten_log_continues_its_snapshot_and_takes_appends() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = LogFile::open(dir.path()).unwrap();
            for i in 1..=6 {
                log.push_entry(&entry(i, 1, b"old"));
            }
            log.flush(true).unwrap();
        }
        let kept = [entry(5, 1, b"old"), entry(6, 1, b"old")];
        let mut log = LogFile::rewrite(dir.path(), 4, 1, &hard_state(1, 2, 4), &kept).unwrap();
        log.push_entry(&entry(7, 2, b"new"));
        log.push_commit(6);
        log.flush(true).unwrap();
        drop(log);
        // A leftover tmp file from a later, unfinished rewrite is removed.
        std::fs::write(dir.path().join(LOG_TMP_FILE_NAME), b"partial").unwrap();
        let (_, replayed) = LogFile::open(dir.path()).unwrap();
        assert!(!dir.path().join(LOG_TMP_FILE_NAME).exists());
        assert_eq!((replayed.start_index, replayed.start_term), (4, 1));
        assert_eq!(
            indexes_and_terms(&replayed.entries),
            [(5, 1), (6, 1), (7, 2)]
        );
        assert_eq!(replayed.hard_state, hard_state(1, 2, 6));
        assert_eq!(replayed.recovery.records, 7);
    }

    #[test]
    fn a_zero_filled_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = LogFile::open(dir.path()).unwrap();
            log.push_entry(&entry(1, 1, b"x"));
            log.flush(true).unwrap();
        }
        let path = dir.path().join(LOG_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, replayed) = LogFile::open(dir.path()).unwrap();
        assert_eq!(replayed.entries.len(), 1);
        assert_eq!(replayed.recovery.bytes_kept, good);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    #[test]
    fn checksummed_but_impossible_records_refuse_to_open() {
        type Case = (&'static str, fn(&mut LogFile));
        let cases: [Case; 5] = [
            ("START after an entry", |log| {
                log.push_entry(&entry(1, 1, b""));
                log.push(KIND_START, |b| {
                    b.extend_from_slice(&1u64.to_le_bytes());
                    b.extend_from_slice(&1u64.to_le_bytes());
                });
            }),
            ("entry before the START", |log| {
                log.push(KIND_START, |b| {
                    b.extend_from_slice(&5u64.to_le_bytes());
                    b.extend_from_slice(&1u64.to_le_bytes());
                });
                log.push_entry(&entry(5, 1, b""));
            }),
            ("gap", |log| log.push_entry(&entry(2, 1, b""))),
            ("commit past the end", |log| log.push_commit(1)),
            ("overwrite committed", |log| {
                log.push_entry(&entry(1, 1, b""));
                log.push_commit(1);
                log.push_entry(&entry(1, 2, b""));
            }),
        ];
        for (name, write) in cases {
            let dir = tempfile::tempdir().unwrap();
            {
                let (mut log, _) = LogFile::open(dir.path()).unwrap();
                write(&mut log);
                log.flush(true).unwrap();
            }
            let opened = LogFile::open(dir.path());
            assert!(
                matches!(opened, Err(QuorumError::Corrupt { .. })),
                "{name}: {:?}",
                opened.err()
            );
        }
    }
}
