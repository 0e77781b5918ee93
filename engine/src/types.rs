//! Newtypes and small value types shared across the engine's API.

use std::path::PathBuf;
use std::rc::Rc;

use crate::segment::SegmentFile;

/// A Kafka offset. The `Log` API takes plain `i64` (Kafka's wire type) for ergonomics at the
/// broker boundary; this newtype is for code that juggles offsets next to other integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

/// Result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    pub bytes: u32,
    pub batch_count: u32,
}

/// A byte range of a segment file, on batch boundaries, for zero-copy sending.
/// The `Rc` keeps the file open (and readable) even if the segment is deleted meanwhile;
/// a later `truncate_to` may shorten the file under it (replication only).
#[derive(Clone, Debug)]
pub struct FileSlice {
    pub file: Rc<SegmentFile>,
    pub position: u64,
    pub len: u32,
}

/// What a read found.
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    pub slices: Vec<FileSlice>,
    pub bytes: u32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// One cut made by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub file: PathBuf,
    /// First byte removed.
    pub position: u64,
    /// Non-zero bytes discarded from `position` on (a preallocated zero tail is not counted).
    pub bytes: u64,
    /// Why the scan stopped there.
    pub reason: String,
}

/// What `Log::open` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Offset the scan started from (the checkpointed recovery point, clamped to the log).
    pub recovery_point: i64,
    /// Bytes of batches validated by the scan.
    pub scanned_bytes: u64,
    pub truncations: Vec<Truncation>,
    /// Segments whose index files were missing or damaged and were rebuilt from the log.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Segments removed because they lay wholly after a truncation point.
    pub removed_segments: Vec<PathBuf>,
    /// True if the checkpoint file was missing or unreadable (whole log scanned).
    pub checkpoint_missing: bool,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// Counters since open, for the broker's `/metrics` (the engine itself logs nothing per
/// append).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogMetrics {
    pub appended_batches: u64,
    pub appended_bytes: u64,
    /// Group-commit rounds started (each fdatasyncs the unsynced files once).
    pub sync_rounds: u64,
    pub segments_rolled: u64,
    pub segments_deleted: u64,
}

/// What `enforce_retention` deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}
