//! Sluice storage engine.
//!
//! Owns: segmented partition logs of Kafka v2 record batches, their sparse indexes, crash
//! recovery, retention, the files of producer-state snapshots (payload opaque) and of the
//! per-segment aborted-transaction index, log compaction (the cleaner), and the I/O layer (compio / io_uring) underneath.
//! Does not own: Kafka requests, sockets, replication or any notion of a cluster.
//! Invariants: see the module docs; every on-disk read is validated before use; a `Log` is
//! `!Send` and lives on one shard's runtime. The only `unsafe` is `fallocate` in `io`.
#![deny(unsafe_code)]

pub mod batch;
mod checkpoint;
pub mod compaction;
pub mod config;
pub mod error;
mod index;
mod io;
pub mod limits;
mod log;
mod recovery;
mod scan;
mod segment;
pub mod snapshot;
pub mod sync;
pub mod txn_index;
pub mod types;

pub use compaction::{CleanOptions, CleanReport, DirtyStats, OffsetMap, Throttle};
pub use config::{FlushPolicy, LogConfig};
pub use error::{AppendError, LogError, ReadError};
pub use log::Log;
pub use segment::SegmentFile;
pub use txn_index::AbortedTxn;
pub use types::{
    AppendInfo, FileSlice, LogMetrics, Offset, ReadResult, RecoveryReport, RetentionReport,
    Truncation,
};
