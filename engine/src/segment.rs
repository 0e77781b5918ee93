//! One segment: a `.log` of batches plus its sparse indexes, named by base offset.
//!
//! Owns: file naming (`{base_offset:020}.log|.index|.timeindex`), creating and opening the
//! three files, the in-memory facts about a segment (size, next offset, max timestamp) and
//! writing index entries out. The index files are open only while needed: a sealed segment
//! whose entries are written and synced closes them (`close_index_files`), so it holds one
//! descriptor (its `.log`, kept for zero-copy reads); a later write or sync reopens them by
//! path. Lookups never read the files (the index lives in memory).
//! Invariants: `size` is the logical end of the log (the file may be longer when
//! preallocated); every batch in [0, size) passed validation; offsets in it lie in
//! [base_offset, next_offset).

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use compio::fs::File;

use crate::error::LogError;
use crate::index::{IndexEntry, SegmentIndex};
use crate::io;
use crate::limits::{OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// An open segment `.log` file, shared with readers for zero-copy sending.
#[derive(Debug)]
pub struct SegmentFile {
    file: File,
    path: PathBuf,
}

impl SegmentFile {
    /// The compio file, for splice / read_at by the caller.
    pub fn file(&self) -> &File {
        &self.file
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRawFd for SegmentFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

pub(crate) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Where a batch sits and what it holds, as `Segment::note_batch` records it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchFacts {
    pub position: u64,
    pub total_bytes: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl BatchFacts {
    pub(crate) fn of(position: u64, header: &crate::batch::BatchHeader) -> BatchFacts {
        BatchFacts {
            position,
            total_bytes: header.total_bytes(),
            base_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp(),
        }
    }
}

/// A segment's `.index` and `.timeindex` handles.
#[derive(Clone)]
pub(crate) struct IndexFiles {
    pub index: File,
    pub time_index: File,
}

impl IndexFiles {
    /// Opens (creating if missing) the index files of the segment whose log is `log_path`.
    pub(crate) async fn open(log_path: &Path) -> Result<IndexFiles, LogError> {
        let index_path = log_path.with_extension(INDEX_SUFFIX);
        let time_path = log_path.with_extension(TIME_INDEX_SUFFIX);
        let index = io::open_rw(&index_path, true)
            .await
            .map_err(|e| LogError::io("open", &index_path, e))?;
        let time_index = io::open_rw(&time_path, true)
            .await
            .map_err(|e| LogError::io("open", &time_path, e))?;
        Ok(IndexFiles { index, time_index })
    }
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub log: Rc<SegmentFile>,
    /// None once closed (a sealed segment with nothing left to write or sync).
    pub index_files: Option<IndexFiles>,
    pub index: SegmentIndex,
    pub size: u64,
    /// Length of the file on disk (> size while a preallocated tail remains).
    pub file_len: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// Max timestamp of the first batch (segment.ms counts from it, as Kafka).
    pub first_batch_timestamp: Option<i64>,
    /// Index entries written to the files but not yet fdatasynced.
    pub index_unsynced: bool,
}

impl Segment {
    /// Creates the three files of a new, empty segment (truncating leftovers).
    pub(crate) async fn create(
        dir: &Path,
        base_offset: i64,
        preallocate_bytes: Option<u64>,
    ) -> Result<Segment, LogError> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let log = create_truncated(&path).await?;
        let mut file_len = 0;
        if let Some(bytes) = preallocate_bytes {
            io::fallocate(&log, bytes).map_err(|e| LogError::io("fallocate", &path, e))?;
            file_len = bytes;
        }
        let index_file = create_truncated(&segment_path(dir, base_offset, INDEX_SUFFIX)).await?;
        let time_index_file =
            create_truncated(&segment_path(dir, base_offset, TIME_INDEX_SUFFIX)).await?;
        Ok(Segment {
            base_offset,
            log: Rc::new(SegmentFile { file: log, path }),
            index_files: Some(IndexFiles {
                index: index_file,
                time_index: time_index_file,
            }),
            index: SegmentIndex::default(),
            size: 0,
            file_len,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_batch_timestamp: None,
            index_unsynced: false,
        })
    }

    /// Opens an existing segment's files (creating missing index files). Facts are filled
    /// in by recovery.
    pub(crate) async fn open(
        dir: &Path,
        base_offset: i64,
    ) -> Result<(Segment, Vec<u8>, Vec<u8>), LogError> {
        let path = segment_path(dir, base_offset, LOG_SUFFIX);
        let log = io::open_rw(&path, false)
            .await
            .map_err(|e| LogError::io("open", &path, e))?;
        let file_len = log
            .metadata()
            .await
            .map_err(|e| LogError::io("stat", &path, e))?
            .len();
        let index_path = segment_path(dir, base_offset, INDEX_SUFFIX);
        let time_path = segment_path(dir, base_offset, TIME_INDEX_SUFFIX);
        let index_file = io::open_rw(&index_path, true)
            .await
            .map_err(|e| LogError::io("open", &index_path, e))?;
        let time_index_file = io::open_rw(&time_path, true)
            .await
            .map_err(|e| LogError::io("open", &time_path, e))?;
        let offsets = read_all(&index_file, &index_path).await?;
        let times = read_all(&time_index_file, &time_path).await?;
        let segment = Segment {
            base_offset,
            log: Rc::new(SegmentFile { file: log, path }),
            index_files: Some(IndexFiles {
                index: index_file,
                time_index: time_index_file,
            }),
            index: SegmentIndex::default(),
            size: 0,
            file_len,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_batch_timestamp: None,
            index_unsynced: false,
        };
        Ok((segment, offsets, times))
    }

    /// Records a batch that now sits in the file (already written, or found by recovery).
    /// Callers guarantee `last_offset - base_offset <= SEGMENT_RELATIVE_OFFSET_MAX` and
    /// `position < SEGMENT_BYTES_MAX` (append rolls first; recovery stops at either bound).
    pub(crate) fn note_batch(&mut self, batch: BatchFacts, index_interval_bytes: u32) {
        let last_indexed = self.index.last().map_or(0, |e| u64::from(e.position));
        // Strictly past the last entry (or past position 0, which is implicit): a batch noted
        // again (recovery, truncation re-walks) must not repeat an entry, which with
        // index.interval.bytes = 0 the distance test alone would allow.
        if batch.position > last_indexed
            && batch.position - last_indexed >= u64::from(index_interval_bytes)
        {
            let relative = |offset: i64| {
                u32::try_from(offset - self.base_offset).expect("relative offset fits u32")
            };
            self.index.push(IndexEntry {
                // The batch's own base offset: with gaps (replicated, compacted) it is above
                // the previous batch's last offset + 1.
                relative_offset: relative(batch.base_offset),
                position: u32::try_from(batch.position).expect("segment position fits u32"),
                max_timestamp_before: self.max_timestamp,
                offset_of_max_before: relative(self.offset_of_max_timestamp.max(self.base_offset)),
            });
        }
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(batch.max_timestamp);
        }
        if batch.max_timestamp > self.max_timestamp || self.offset_of_max_timestamp < 0 {
            self.max_timestamp = batch.max_timestamp.max(self.max_timestamp);
            self.offset_of_max_timestamp = batch.last_offset;
        }
        self.size = batch.position + batch.total_bytes;
        self.file_len = self.file_len.max(self.size);
        self.next_offset = batch.last_offset + 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Index entries not yet written, as a job that owns cloned handles (so the log can
    /// run it without holding a borrow across the await). `rewrite` starts from entry 0.
    pub(crate) fn index_job(&self, rewrite: bool) -> Option<IndexJob> {
        let from = if rewrite { 0 } else { self.index.persisted };
        if !rewrite && from == self.index.entries().len() {
            return None;
        }
        let (offsets, times) = self.index.encode_from(from);
        Some(IndexJob {
            files: self.index_files.clone(),
            log_path: self.log.path.clone(),
            index_path: self.index_path(),
            time_index_path: self.time_index_path(),
            from,
            rewrite,
            offsets,
            times,
            entries: self.index.entries().len(),
        })
    }

    /// Cuts both index files to the in-memory entries (after a truncation or rebuild).
    pub(crate) async fn rewrite_index(&mut self) -> Result<(), LogError> {
        let job = self.index_job(true).expect("rewrite always yields a job");
        self.index.persisted = job.run().await?;
        self.index_unsynced = true;
        Ok(())
    }

    pub(crate) async fn sync_index(&mut self) -> Result<(), LogError> {
        if !self.index_unsynced {
            return Ok(());
        }
        let files = match &self.index_files {
            Some(files) => files.clone(),
            None => IndexFiles::open(&self.log.path).await?,
        };
        sync_index_files(&files, &self.log.path).await?;
        self.index_unsynced = false;
        Ok(())
    }

    /// Closes the index files if every entry is written and synced (call on sealed segments
    /// only: the active one writes entries as it grows). Returns whether they are closed.
    pub(crate) fn close_index_files(&mut self) -> bool {
        if !self.index_unsynced && self.index.persisted == self.index.entries().len() {
            self.index_files = None;
        }
        self.index_files.is_none()
    }

    /// Cuts the log file to `size` (dropping a preallocated tail or torn bytes), then
    /// re-preallocates if asked so the tail is zeros again.
    pub(crate) async fn set_file_len(
        &mut self,
        size: u64,
        preallocate_bytes: Option<u64>,
    ) -> Result<(), LogError> {
        let path = self.log.path.clone();
        self.log
            .file
            .set_len(size)
            .await
            .map_err(|e| LogError::io("truncate", &path, e))?;
        self.file_len = size;
        if let Some(bytes) = preallocate_bytes
            && bytes > size
        {
            io::fallocate(&self.log.file, bytes)
                .map_err(|e| LogError::io("fallocate", &path, e))?;
            self.file_len = bytes;
        }
        Ok(())
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.log.path.with_extension(INDEX_SUFFIX)
    }
    pub(crate) fn time_index_path(&self) -> PathBuf {
        self.log.path.with_extension(TIME_INDEX_SUFFIX)
    }
    pub(crate) fn paths(&self) -> [PathBuf; 3] {
        [
            self.log.path.clone(),
            self.index_path(),
            self.time_index_path(),
        ]
    }
}

/// fdatasyncs both index files (writes through any handle of an inode are covered).
pub(crate) async fn sync_index_files(files: &IndexFiles, log_path: &Path) -> Result<(), LogError> {
    io::sync_data(&files.index)
        .await
        .map_err(|e| LogError::io("fdatasync", log_path.with_extension(INDEX_SUFFIX), e))?;
    io::sync_data(&files.time_index)
        .await
        .map_err(|e| LogError::io("fdatasync", log_path.with_extension(TIME_INDEX_SUFFIX), e))
}

/// Index entries to write, with the handles to write them through (None: closed, reopened
/// by path for the write).
pub(crate) struct IndexJob {
    files: Option<IndexFiles>,
    log_path: PathBuf,
    index_path: PathBuf,
    time_index_path: PathBuf,
    from: usize,
    rewrite: bool,
    offsets: Vec<u8>,
    times: Vec<u8>,
    entries: usize,
}

impl IndexJob {
    /// Writes the entries; returns how many entries the files now hold.
    pub(crate) async fn run(self) -> Result<usize, LogError> {
        let files = match self.files {
            Some(files) => files,
            None => IndexFiles::open(&self.log_path).await?,
        };
        if self.rewrite {
            let bytes = self.offsets.len() as u64;
            files
                .index
                .set_len(bytes)
                .await
                .map_err(|e| LogError::io("truncate", &self.index_path, e))?;
            let bytes = self.times.len() as u64;
            files
                .time_index
                .set_len(bytes)
                .await
                .map_err(|e| LogError::io("truncate", &self.time_index_path, e))?;
        }
        let pos = (self.from * OFFSET_INDEX_ENTRY_BYTES) as u64;
        let (res, _) = io::write_all(&files.index, self.offsets, pos).await;
        res.map_err(|e| LogError::io("write", &self.index_path, e))?;
        let pos = (self.from * TIME_INDEX_ENTRY_BYTES) as u64;
        let (res, _) = io::write_all(&files.time_index, self.times, pos).await;
        res.map_err(|e| LogError::io("write", &self.time_index_path, e))?;
        Ok(self.entries)
    }
}

async fn create_truncated(path: &Path) -> Result<File, LogError> {
    compio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .await
        .map_err(|e| LogError::io("create", path, e))
}

async fn read_all(file: &File, path: &Path) -> Result<Vec<u8>, LogError> {
    let len = file
        .metadata()
        .await
        .map_err(|e| LogError::io("stat", path, e))?
        .len();
    io::read_up_to(file, 0, len as usize)
        .await
        .map_err(|e| LogError::io("read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            segment_path(Path::new("/d"), 42, LOG_SUFFIX),
            PathBuf::from("/d/00000000000000000042.log")
        );
        assert_eq!(
            parse_segment_name("00000000000000000042.log", LOG_SUFFIX),
            Some(42)
        );
        assert_eq!(parse_segment_name("42.log", LOG_SUFFIX), None);
        assert_eq!(
            parse_segment_name("00000000000000000042.index", LOG_SUFFIX),
            None
        );
    }
}
