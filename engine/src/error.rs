//! Errors at the engine boundary.
//!
//! Bad data on disk is `LogError::Corrupt` with file and position, never a panic.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("invalid log config: {0}")]
    Config(#[from] ConfigError),
    #[error("log is closed")]
    Closed,
    /// An fdatasync failed: what is on disk is unknown, so the log refuses further work
    /// until it is reopened (and recovered).
    #[error("log is poisoned after a failed fdatasync; reopen it")]
    Poisoned,
    #[error("offset {offset} is outside [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("{0}")]
    Limit(String),
}

impl LogError {
    /// The filesystem ran out of space (ENOSPC) or of the user's quota (EDQUOT): the write
    /// may succeed once space is freed.
    pub fn is_no_space(&self) -> bool {
        match self {
            LogError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Batch number `index` in the request is invalid (Kafka: CORRUPT_MESSAGE or
    /// MESSAGE_TOO_LARGE for `BatchError::TooLarge`). Nothing was appended.
    #[error("batch {index} at byte {position} of the request: {error}")]
    InvalidBatch {
        index: u32,
        position: u32,
        error: BatchError,
    },
    #[error("empty append")]
    Empty,
    /// append_replicated got a batch whose base offset is below the log end offset or its
    /// predecessor's last offset.
    #[error("replicated batch at offset {base_offset} does not follow offset {expected}")]
    OffsetNotMonotonic { base_offset: i64, expected: i64 },
    /// append_validated got a base offset other than the log end offset: the caller's
    /// offsets and the log disagree (a bug in the caller).
    #[error("batch assigned offset {base_offset} but the log ends at {log_end_offset}")]
    OffsetNotLogEnd {
        base_offset: i64,
        log_end_offset: i64,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}
