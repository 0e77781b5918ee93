//! The partition log: the engine's public face.
//!
//! Owns: appends (validation, offset assignment, roll), group commit, reads on batch
//! boundaries, offset/timestamp lookups, retention, DeleteRecords, truncation, checkpoints.
//! Does not own: what acks mean to a client, replication, producer state.
//! Invariants:
//! - One writer at a time (`write_lock`), in call order as far as the runtime polls them:
//!   appends, rolls, truncation, retention, checkpoints and close all hold it.
//! - No `RefCell` borrow of `state` lives across an `.await`: every I/O step clones the
//!   handles it needs, awaits, then re-borrows to publish the result.
//! - `log_end_offset` advances only after the bytes are in the page cache; readers never
//!   see offsets past it, and reads never wait for an fdatasync.
//! - `durable_offset <= log_end_offset`; offsets below it were covered by an fdatasync.
//! - `log_start_offset <= high_watermark <= log_end_offset`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use compio::buf::IoBuf;
use compio::fs::File;

use crate::batch::{BatchHeader, ValidatedBatch, patch_header, validate_batch};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{AppendError, LogError, ReadError};
use crate::io;
use crate::limits::{
    BATCH_PATCH_BYTES, CHECKPOINT_INTERVAL_MS, MAX_BATCH_BYTES_LIMIT, SEGMENT_BYTES_MAX,
    SEGMENT_RELATIVE_OFFSET_MAX, SYNCS_IN_FLIGHT_MAX, WRITE_BUFFER_RETAIN_BYTES, WRITE_SLICES_MAX,
};
use crate::recovery::recover;
use crate::scan::{walk_batches, walk_headers};
use crate::segment::{
    BatchFacts, INDEX_SUFFIX, IndexFiles, LOG_SUFFIX, Segment, SegmentFile, TIME_INDEX_SUFFIX,
    segment_path, sync_index_files,
};
use crate::snapshot;
use crate::sync::{FifoLock, Notify};
use crate::txn_index::{self, AbortedTxn, TxnIndexFile};
use crate::types::{
    AppendInfo, FileSlice, LogMetrics, ReadResult, RecoveryReport, RetentionReport,
};

mod clean;

/// A partition log on one shard. `!Send`; share it as `Rc<Log>`.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    state: RefCell<State>,
    write_lock: Rc<FifoLock>,
    sync_done: Rc<Notify>,
}

struct State {
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    high_watermark: i64,
    /// Offsets below this were fdatasynced.
    durable_offset: i64,
    /// A group-commit leader is inside fdatasync.
    syncs_in_flight: usize,
    metrics: LogMetrics,
    /// Largest log end offset an in-flight fdatasync will make durable.
    sync_covering: i64,
    /// Rolled segments whose bytes may not be on disk yet.
    /// (sequence, file, path); removed by the first fdatasync that covered them.
    unsynced_logs: Vec<(u64, File, PathBuf)>,
    unsynced_seq: u64,
    /// A segment file was created since the last directory fsync.
    segments_created: u64,
    /// `segments_created` as of the last directory fsync.
    dir_synced: u64,
    /// Bumped by truncate_to so an fdatasync begun before it cannot publish stale offsets.
    truncate_epoch: u64,
    bytes_since_flush: u64,
    last_flush_ms: Option<i64>,
    last_checkpoint_ms: Option<i64>,
    checkpoint_due: bool,
    /// Partition leader epoch of the newest batch appended and not truncated, kept (and
    /// checkpointed) after retention or DeleteRecords removed that batch.
    last_leader_epoch: Option<i32>,
    closed: bool,
    poisoned: bool,
    /// A failed write may have left bytes past the active segment's size and cutting them
    /// off failed too: the next append or roll cuts them first (`clean_tail`).
    tail_dirty: bool,
    /// Reused buffer for multi-batch appends.
    write_buf: Vec<u8>,
    /// Offsets of the producer-state snapshot files, ascending, none above the log end.
    snapshots: Vec<i64>,
    /// Segment base offset -> its `.txnindex` file (segments without one have no entries).
    txn_indexes: BTreeMap<i64, TxnIndexFile>,
    /// Offsets below this were cleaned by the last cleaner round (compacted logs only;
    /// `cleaner.checkpoint`, -1 if never): the next round maps from here.
    first_dirty_offset: i64,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }
    fn usable(&self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if self.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }
    /// The segment holding `offset`, or the first one starting after it.
    fn segment_for(&self, offset: i64) -> Option<&Segment> {
        if let Some((_, s)) = self.segments.range(..=offset).next_back()
            && offset < s.next_offset
        {
            return Some(s);
        }
        self.segments
            .range((Bound::Excluded(offset), Bound::Unbounded))
            .next()
            .map(|(_, s)| s)
    }
}

/// One batch of an append request, after validation.
struct BatchMeta {
    start: usize,
    len: usize,
    base_offset: i64,
    last_offset_delta: i32,
    max_timestamp: i64,
}

/// What an append writes.
enum Payload {
    /// Producer batches in one buffer: offsets assigned from the log end and patched into a
    /// copy of the header (one batch) or of the whole buffer (several).
    Producer { batches: Bytes, leader_epoch: i32 },
    /// One batch validated by the caller, at the offset the caller assigned.
    Validated {
        batch: ValidatedBatch,
        leader_epoch: i32,
    },
    /// Batches copied from a leader, offsets and epochs in their headers, written as they are.
    Replicated(Vec<Bytes>),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Producer { batches, .. } => batches.len(),
            Payload::Validated { batch, .. } => batch.len(),
            Payload::Replicated(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    /// The partition leader epoch the newest batch (`last`) will carry on disk.
    fn newest_epoch(&self, last: &BatchMeta) -> i32 {
        match self {
            Payload::Producer { leader_epoch, .. } | Payload::Validated { leader_epoch, .. } => {
                *leader_epoch
            }
            Payload::Replicated(parts) => {
                let mut at = last.start;
                let part = parts
                    .iter()
                    .find(|p| {
                        let inside = at < p.len();
                        if !inside {
                            at -= p.len();
                        }
                        inside
                    })
                    .expect("validated batch");
                BatchHeader::parse(&part[at..])
                    .expect("validated batch")
                    .leader_epoch()
            }
        }
    }
}

/// Writes `parts` back to back at `position`: one plain write for one part, vectored writes
/// of up to [`WRITE_SLICES_MAX`] slices otherwise (no copy into one buffer).
async fn write_parts(file: &File, parts: Vec<Bytes>, position: u64) -> std::io::Result<()> {
    if let [_] = parts.as_slice() {
        let only = parts.into_iter().next().expect("one part");
        return io::write_all(file, FrameBytes(only), position).await.0;
    }
    let mut at = position;
    let mut parts = parts.into_iter().filter(|p| !p.is_empty()).peekable();
    while parts.peek().is_some() {
        let chunk: Vec<FrameBytes> = parts
            .by_ref()
            .take(WRITE_SLICES_MAX)
            .map(FrameBytes)
            .collect();
        let bytes: usize = chunk.iter().map(|b| b.0.len()).sum();
        io::write_vectored_all(file, chunk, at).await.0?;
        at += bytes as u64;
    }
    Ok(())
}

/// `Bytes` as a compio buffer: the frame is written without a copy.
struct FrameBytes(Bytes);

impl IoBuf for FrameBytes {
    fn as_init(&self) -> &[u8] {
        &self.0
    }
}

impl Log {
    /// Opens (creating if missing) the log in `dir`; recovers the tail.
    pub async fn open(dir: PathBuf, config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        let mut recovered = recover(&dir, &config).await?;
        close_sealed_index_files(&mut recovered.segments);
        let log_end_offset = recovered
            .segments
            .values()
            .next_back()
            .map_or(0, |s| s.next_offset);
        let state = State {
            segments: recovered.segments,
            log_start_offset: recovered.log_start_offset,
            high_watermark: recovered.high_watermark,
            durable_offset: log_end_offset,
            syncs_in_flight: 0,
            metrics: LogMetrics::default(),
            sync_covering: log_end_offset,
            unsynced_logs: Vec::new(),
            unsynced_seq: 0,
            segments_created: 0,
            dir_synced: 0,
            truncate_epoch: 0,
            bytes_since_flush: 0,
            last_flush_ms: None,
            last_checkpoint_ms: None,
            checkpoint_due: false,
            last_leader_epoch: recovered.last_leader_epoch,
            closed: false,
            poisoned: false,
            tail_dirty: false,
            write_buf: Vec::new(),
            snapshots: Vec::new(),
            txn_indexes: BTreeMap::new(),
            first_dirty_offset: -1,
        };
        let log = Log {
            dir,
            config,
            state: RefCell::new(state),
            write_lock: FifoLock::new(),
            sync_done: Rc::new(Notify::new()),
        };
        // A batch still on disk is the truth; the checkpoint only covers a log without one.
        if let Some(epoch) = log.newest_batch_epoch().await? {
            log.state.borrow_mut().last_leader_epoch = Some(epoch);
        }
        let mut snapshots = snapshot::list(&log.dir)?;
        for &offset in snapshots.iter().filter(|&&o| o > log_end_offset) {
            // It describes batches the recovered log no longer holds (a torn tail was cut).
            tracing::warn!(target: "engine", dir = %log.dir.display(), offset, log_end_offset, "producer snapshot above the recovered log end deleted");
            snapshot::remove(&log.dir, offset)?;
        }
        snapshots.retain(|&o| o <= log_end_offset);
        log.state.borrow_mut().snapshots = snapshots;
        log.open_txn_indexes().await?;
        if let Some(first_dirty) = crate::compaction::read_checkpoint(&log.dir).await? {
            log.state.borrow_mut().first_dirty_offset = first_dirty.min(log_end_offset);
        }
        Ok((log, recovered.report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Validates and appends one or more producer batches; assigns offsets from the log end
    /// and stamps `leader_epoch`. All or nothing.
    pub async fn append(
        &self,
        batches: Bytes,
        leader_epoch: i32,
    ) -> Result<AppendInfo, AppendError> {
        if batches.is_empty() {
            return Err(AppendError::Empty);
        }
        let metas = split_batches(&batches, self.config.max_batch_bytes, true, 0, 0)?;
        let payload = Payload::Producer {
            batches,
            leader_epoch,
        };
        self.append_inner(payload, metas).await
    }

    /// Appends one batch that already passed validation (so its CRC32C is not checked
    /// again) at `base_offset`, which the caller assigned (the replication core: offsets are
    /// assigned once, there) and which must be the log end offset; stamps `leader_epoch`.
    /// The header (patched, with any LogAppendTime stamp) and the records are written with
    /// one vectored write, the records straight from the request.
    pub async fn append_validated(
        &self,
        batch: ValidatedBatch,
        base_offset: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo, AppendError> {
        let meta = BatchMeta {
            start: 0,
            len: batch.len(),
            base_offset,
            last_offset_delta: batch.last_offset_delta(),
            max_timestamp: batch.max_timestamp(),
        };
        let payload = Payload::Validated {
            batch,
            leader_epoch,
        };
        self.append_inner(payload, vec![meta]).await
    }

    /// Appends batches that already carry offsets (a follower copying its leader).
    /// Base offsets must not go below the log end offset; gaps are allowed (compaction).
    pub async fn append_replicated(&self, batches: Bytes) -> Result<AppendInfo, AppendError> {
        self.append_replicated_batches(vec![batches]).await
    }

    /// [`Log::append_replicated`] of record sets held in separate buffers (a follower's
    /// fetched batches, each a slice of the leader's response): validated each, then written
    /// with vectored writes, without joining them into one buffer first.
    pub async fn append_replicated_batches(
        &self,
        parts: Vec<Bytes>,
    ) -> Result<AppendInfo, AppendError> {
        if parts.iter().all(|p| p.is_empty()) {
            return Err(AppendError::Empty);
        }
        // max.message.bytes binds producers only: a follower copies what its leader already
        // accepted, perhaps under a larger limit since lowered (Kafka's appendAsFollower
        // skips the size check too); the engine's own limit still holds.
        let mut metas = Vec::new();
        let mut start = 0;
        for part in &parts {
            let index = metas.len() as u32;
            metas.extend(split_batches(
                part,
                MAX_BATCH_BYTES_LIMIT,
                false,
                start,
                index,
            )?);
            start += part.len();
        }
        check_monotonic(&metas)?;
        self.append_inner(Payload::Replicated(parts), metas).await
    }

    async fn append_inner(
        &self,
        payload: Payload,
        metas: Vec<BatchMeta>,
    ) -> Result<AppendInfo, AppendError> {
        let total = payload.len() as u64;
        if total > SEGMENT_BYTES_MAX {
            return Err(
                LogError::Limit(format!("append of {total} bytes exceeds a segment")).into(),
            );
        }
        let _writer = self.write_lock.lock().await;
        let leo = {
            let s = self.state.borrow();
            s.usable()?;
            s.log_end_offset()
        };
        self.clean_tail().await?;
        // Offsets of each batch: assigned here for producer batches, given by the caller
        // for a validated one, carried in the headers for replicated ones.
        let mut bases = Vec::with_capacity(metas.len());
        let mut next = leo;
        for m in &metas {
            let base = match &payload {
                Payload::Producer { .. } => next,
                Payload::Validated { .. } if m.base_offset != leo => {
                    return Err(AppendError::OffsetNotLogEnd {
                        base_offset: m.base_offset,
                        log_end_offset: leo,
                    });
                }
                Payload::Validated { .. } | Payload::Replicated(_) => {
                    if m.base_offset < next {
                        return Err(AppendError::OffsetNotMonotonic {
                            base_offset: m.base_offset,
                            expected: next,
                        });
                    }
                    m.base_offset
                }
            };
            bases.push(base);
            next = base + i64::from(m.last_offset_delta) + 1;
        }
        let first_offset = bases[0];
        let last_offset = next - 1;
        if last_offset - first_offset > SEGMENT_RELATIVE_OFFSET_MAX {
            let msg = format!(
                "append spans offsets {first_offset}..={last_offset}, more than one segment holds"
            );
            return Err(LogError::Limit(msg).into());
        }
        let max_timestamp = metas
            .iter()
            .map(|m| m.max_timestamp)
            .max()
            .expect("non-empty");
        self.roll_for_append(first_offset, last_offset, total, max_timestamp)
            .await?;

        let newest_epoch = payload.newest_epoch(metas.last().expect("non-empty"));
        let (file, path, position) = {
            let s = self.state.borrow();
            let a = s.active();
            (a.log.file().clone(), a.log.path().to_path_buf(), a.size)
        };
        let res = match payload {
            Payload::Producer {
                batches,
                leader_epoch,
            } if metas.len() == 1 => {
                let mut head = [0u8; BATCH_PATCH_BYTES];
                head.copy_from_slice(&batches[..BATCH_PATCH_BYTES]);
                patch_header(&mut head, first_offset, leader_epoch);
                let body = FrameBytes(Bytes::slice(&batches, BATCH_PATCH_BYTES..));
                io::write_vectored_all(&file, (head, (body,)), position)
                    .await
                    .0
            }
            Payload::Producer {
                batches,
                leader_epoch,
            } => {
                let mut buf = std::mem::take(&mut self.state.borrow_mut().write_buf);
                buf.clear();
                buf.extend_from_slice(&batches);
                for (m, &base) in metas.iter().zip(&bases) {
                    let head = &mut buf[m.start..m.start + BATCH_PATCH_BYTES];
                    patch_header(head, base, leader_epoch);
                }
                let (res, mut buf) = io::write_all(&file, buf, position).await;
                if buf.capacity() > WRITE_BUFFER_RETAIN_BYTES {
                    buf = Vec::new(); // one huge request must not pin its buffer forever
                }
                self.state.borrow_mut().write_buf = buf;
                res
            }
            Payload::Validated {
                batch,
                leader_epoch,
            } => {
                let head = batch.head(first_offset, leader_epoch);
                let body = FrameBytes(batch.body());
                io::write_vectored_all(&file, (head, (body,)), position)
                    .await
                    .0
            }
            Payload::Replicated(parts) => write_parts(&file, parts, position).await,
        };
        if let Err(e) = res {
            // Nothing is published: the log end offset stays, and the bytes that did reach
            // the file are cut off so that neither the next append nor recovery sees them.
            self.state.borrow_mut().tail_dirty = true;
            if let Err(cut) = self.clean_tail().await {
                tracing::warn!(target: "engine", path = %path.display(), position, error = %cut, "cutting back a failed write failed; the next append retries");
            }
            return Err(LogError::io("write", &path, e).into());
        }

        let mut s = self.state.borrow_mut();
        s.last_leader_epoch = Some(newest_epoch);
        let interval = self.config.index_interval_bytes;
        let active = s.active_mut();
        let mut offset_of_max_timestamp = last_offset;
        let mut max_seen = i64::MIN;
        for (m, &base) in metas.iter().zip(&bases) {
            let last = base + i64::from(m.last_offset_delta);
            let facts = BatchFacts {
                position: position + m.start as u64,
                total_bytes: m.len as u64,
                base_offset: base,
                last_offset: last,
                max_timestamp: m.max_timestamp,
            };
            active.note_batch(facts, interval);
            if m.max_timestamp > max_seen {
                max_seen = m.max_timestamp;
                offset_of_max_timestamp = last;
            }
        }
        s.bytes_since_flush += total;
        s.metrics.appended_batches += metas.len() as u64;
        s.metrics.appended_bytes += total;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            bytes: total as u32,
            batch_count: metas.len() as u32,
        })
    }

    /// Rolls to a new segment if this append would overflow the active one (size, relative
    /// offsets) or the active one is older than segment.ms by batch timestamps.
    async fn roll_for_append(
        &self,
        first_offset: i64,
        last_offset: i64,
        bytes: u64,
        max_timestamp: i64,
    ) -> Result<(), LogError> {
        let due = {
            let s = self.state.borrow();
            let a = s.active();
            let too_big = a.size + bytes > self.config.segment_bytes;
            let offsets_overflow = last_offset - a.base_offset > SEGMENT_RELATIVE_OFFSET_MAX;
            let too_old = a
                .first_batch_timestamp
                .is_some_and(|t| max_timestamp.saturating_sub(t) >= self.config.segment_ms);
            (offsets_overflow && a.is_empty())
                || (!a.is_empty() && (too_big || offsets_overflow || too_old))
        };
        if due {
            self.roll(first_offset).await?;
        }
        Ok(())
    }

    /// Cuts the active segment's file back to its size after a failed write (see
    /// `tail_dirty`). Caller holds the write lock. A preallocated tail goes with it: the
    /// segment grows by writes from here on.
    async fn clean_tail(&self) -> Result<(), LogError> {
        let (file, path, size) = {
            let s = self.state.borrow();
            if !s.tail_dirty {
                return Ok(());
            }
            let a = s.active();
            (a.log.file().clone(), a.log.path().to_path_buf(), a.size)
        };
        file.set_len(size)
            .await
            .map_err(|e| LogError::io("truncate", &path, e))?;
        let mut s = self.state.borrow_mut();
        s.tail_dirty = false;
        s.active_mut().file_len = size;
        Ok(())
    }

    /// Closes the active segment (index written, preallocated tail cut) and opens a new one
    /// at `base_offset`. Caller holds the write lock.
    async fn roll(&self, base_offset: i64) -> Result<(), LogError> {
        let (job, file, path, size, was_empty, old_base) = {
            let s = self.state.borrow();
            let a = s.active();
            (
                a.index_job(false),
                a.log.file().clone(),
                a.log.path().to_path_buf(),
                a.size,
                a.is_empty(),
                a.base_offset,
            )
        };
        if let Some(job) = job {
            let n = job.run().await?;
            let mut s = self.state.borrow_mut();
            if let Some(seg) = s.segments.get_mut(&old_base) {
                seg.index.persisted = n;
                seg.index_unsynced = true;
            }
        }
        if self.config.preallocate {
            file.set_len(size)
                .await
                .map_err(|e| LogError::io("truncate", &path, e))?;
        }
        if self.config.preallocate
            && let Some(seg) = self.state.borrow_mut().segments.get_mut(&old_base)
        {
            seg.file_len = size;
        }
        let prealloc = self.config.preallocate.then_some(self.config.segment_bytes);
        let segment = match Segment::create(&self.dir, base_offset, prealloc).await {
            Ok(segment) => segment,
            Err(e) => {
                // Disk full, most likely. A leftover file at `base_offset` would overlap the
                // active segment once it takes more appends, so remove what was created; the
                // active segment stays active and the next append tries the roll again.
                if base_offset != old_base {
                    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                        let _ = std::fs::remove_file(segment_path(&self.dir, base_offset, suffix));
                    }
                }
                return Err(e);
            }
        };
        let mut s = self.state.borrow_mut();
        if was_empty {
            // An empty active segment is replaced (replica jumping past a gap).
            let old = s.segments.remove(&old_base).expect("active segment");
            for path in old.paths() {
                // Best effort: an empty leftover is harmless (recovery skips past it).
                let _ = std::fs::remove_file(path);
            }
        } else {
            if let Some(seg) = s.segments.get_mut(&old_base) {
                seg.file_len = size;
            }
            s.unsynced_seq += 1;
            let seq = s.unsynced_seq;
            s.unsynced_logs.push((seq, file, path));
        }
        s.segments.insert(base_offset, segment);
        s.segments_created += 1;
        s.checkpoint_due = true;
        s.metrics.segments_rolled += 1;
        Ok(())
    }

    /// Resolves once every offset <= `offset` (clamped to the log end) is covered by an
    /// fdatasync. Concurrent callers share one fdatasync (group commit).
    pub async fn wait_durable(&self, offset: i64) -> Result<(), LogError> {
        self.sync_until(offset.saturating_add(1)).await
    }

    /// Makes offsets below `target` (clamped to the log end) durable.
    ///
    /// Group commit, pipelined: a caller waits if an in-flight fdatasync will cover it, or
    /// if SYNCS_IN_FLIGHT_MAX are already running; otherwise it leads a new fdatasync of
    /// everything written so far, even while an older one is still in flight. A late arrival
    /// then waits for about one fdatasync instead of the rest of the current one plus the
    /// next. fdatasync makes durable every byte written before it was issued, so syncs may
    /// complete in any order and each publishes only what was written before it began.
    async fn sync_until(&self, target: i64) -> Result<(), LogError> {
        loop {
            let follow = {
                let s = self.state.borrow();
                if s.poisoned {
                    return Err(LogError::Poisoned);
                }
                let want = target.min(s.log_end_offset());
                if s.durable_offset >= want {
                    return Ok(());
                }
                let covered = s.syncs_in_flight > 0 && s.sync_covering >= want;
                let full = s.syncs_in_flight >= SYNCS_IN_FLIGHT_MAX;
                (covered || full).then(|| self.sync_done.version())
            };
            if let Some(seen) = follow {
                self.sync_done.changed_since(seen).await;
                continue;
            }
            let (files, synced_seq, dir_seen, dir_needed, upto, epoch) = {
                let mut s = self.state.borrow_mut();
                let upto = s.log_end_offset();
                s.syncs_in_flight += 1;
                s.metrics.sync_rounds += 1;
                s.sync_covering = s.sync_covering.max(upto);
                let mut files: Vec<(File, PathBuf)> = s
                    .unsynced_logs
                    .iter()
                    .map(|(_, f, p)| (f.clone(), p.clone()))
                    .collect();
                let synced_seq = s.unsynced_seq;
                let a = s.active();
                files.push((a.log.file().clone(), a.log.path().to_path_buf()));
                let dir_needed = s.segments_created > s.dir_synced;
                (
                    files,
                    synced_seq,
                    s.segments_created,
                    dir_needed,
                    upto,
                    s.truncate_epoch,
                )
            };
            let leader = SyncLeader { log: self };
            for (file, path) in &files {
                if let Err(e) = io::sync_data(file).await {
                    self.state.borrow_mut().poisoned = true;
                    return Err(LogError::io("fdatasync", path, e));
                }
            }
            if dir_needed {
                io::sync_dir(&self.dir)
                    .await
                    .map_err(|e| LogError::io("fsync", &self.dir, e))?;
            }
            {
                let mut s = self.state.borrow_mut();
                s.unsynced_logs.retain(|(seq, _, _)| *seq > synced_seq);
                s.dir_synced = s.dir_synced.max(dir_seen);
                if s.truncate_epoch == epoch {
                    s.durable_offset = s.durable_offset.max(upto);
                }
                s.bytes_since_flush = 0;
            }
            drop(leader);
        }
    }

    /// For FlushPolicy::Interval: fdatasyncs if the interval or byte threshold has passed.
    /// Under any policy, rewrites the recovery-point checkpoint every CHECKPOINT_INTERVAL_MS
    /// or after a roll. Call it from a periodic timer.
    pub async fn flush_tick(&self, now_ms: i64) -> Result<(), LogError> {
        let (flush, checkpoint) = {
            let mut s = self.state.borrow_mut();
            s.usable()?;
            let last_flush = *s.last_flush_ms.get_or_insert(now_ms);
            let flush = match self.config.flush {
                FlushPolicy::EveryAppend => false,
                FlushPolicy::Interval { ms, bytes } => {
                    s.durable_offset < s.log_end_offset()
                        && (now_ms - last_flush >= ms || s.bytes_since_flush >= bytes)
                }
            };
            let last_checkpoint = *s.last_checkpoint_ms.get_or_insert(now_ms);
            let checkpoint = s.checkpoint_due || now_ms - last_checkpoint >= CHECKPOINT_INTERVAL_MS;
            (flush, checkpoint)
        };
        if flush {
            self.sync_until(i64::MAX).await?;
            self.state.borrow_mut().last_flush_ms = Some(now_ms);
        }
        if checkpoint {
            let _writer = self.write_lock.lock().await;
            let written = self.write_checkpoint().await;
            // Failed (a full disk): the previous checkpoint stays valid (it is replaced
            // atomically) and only makes recovery start earlier, so try again after the
            // interval rather than on every tick (and log once a minute, not every second).
            let mut s = self.state.borrow_mut();
            s.last_checkpoint_ms = Some(now_ms);
            if written.is_err() {
                s.checkpoint_due = false;
            }
            drop(s);
            written?;
        }
        Ok(())
    }

    /// Writes index entries out, fdatasyncs them, and records the durable offset as the
    /// recovery point. Caller holds the write lock.
    async fn write_checkpoint(&self) -> Result<(), LogError> {
        let bases: Vec<i64> = self.state.borrow().segments.keys().copied().collect();
        for base in bases {
            let (job, sync) = {
                let s = self.state.borrow();
                let Some(seg) = s.segments.get(&base) else {
                    continue;
                };
                let job = seg.index_job(false);
                let sync = job.is_some() || seg.index_unsynced;
                (
                    job,
                    sync.then(|| (seg.index_files.clone(), seg.log.path().to_path_buf())),
                )
            };
            if let Some(job) = job {
                let n = job.run().await?;
                if let Some(seg) = self.state.borrow_mut().segments.get_mut(&base) {
                    seg.index.persisted = n;
                }
            }
            if let Some((files, log_path)) = sync {
                let files = match files {
                    Some(files) => files,
                    None => IndexFiles::open(&log_path).await?,
                };
                sync_index_files(&files, &log_path).await?;
                if let Some(seg) = self.state.borrow_mut().segments.get_mut(&base) {
                    seg.index_unsynced = false;
                }
            }
        }
        close_sealed_index_files(&mut self.state.borrow_mut().segments);
        let checkpoint = {
            let mut s = self.state.borrow_mut();
            s.checkpoint_due = false;
            Checkpoint {
                recovery_point: s.durable_offset,
                log_start_offset: s.log_start_offset,
                high_watermark: s.high_watermark,
                last_leader_epoch: s.last_leader_epoch,
            }
        };
        checkpoint::write(&self.dir, checkpoint).await
    }

    /// Batches from the one containing `start_offset`, ending before the first batch whose
    /// last offset reaches `max_offset` (exclusive, e.g. the high watermark), at most
    /// `max_bytes` unless `min_one_batch` and the first batch alone is larger.
    pub async fn read(
        &self,
        start_offset: i64,
        max_offset: i64,
        max_bytes: u32,
        min_one_batch: bool,
    ) -> Result<ReadResult, ReadError> {
        let (log_start_offset, log_end_offset) = {
            let s = self.state.borrow();
            s.usable()?;
            (s.log_start_offset, s.log_end_offset())
        };
        if start_offset < log_start_offset || start_offset > log_end_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset: start_offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let mut result = ReadResult {
            slices: Vec::new(),
            bytes: 0,
            log_start_offset,
            log_end_offset,
        };
        let limit = max_offset.min(log_end_offset);
        let mut cursor = start_offset;
        while cursor < limit {
            let budget = u64::from(max_bytes.saturating_sub(result.bytes));
            let first_wanted = min_one_batch && result.slices.is_empty();
            if budget == 0 && !first_wanted {
                break;
            }
            let snap = {
                let s = self.state.borrow();
                let Some(seg) = s.segment_for(cursor) else {
                    break;
                };
                let cursor_rel = (cursor - seg.base_offset).max(0) as u64;
                SegmentSnap {
                    file: seg.log.clone(),
                    base_offset: seg.base_offset,
                    size: seg.size,
                    next_offset: seg.next_offset,
                    start: Start::entry(seg.base_offset, seg.index.floor_offset(cursor_rel)),
                }
            };
            let cursor_here = cursor.max(snap.base_offset);
            // First batch with last_offset >= cursor.
            let mut first: Option<(u64, u64)> = None;
            walk(&snap, snap.start, |pos, h| {
                if h.last_offset() >= cursor_here {
                    first = Some((pos, h.total_bytes()));
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await?;
            let Some((first_position, first_len)) = first else {
                cursor = snap.next_offset;
                continue;
            };
            let mut end = snap.size;
            let mut done = false;
            if limit < snap.next_offset {
                let from = self
                    .index_floor_offset(snap.base_offset, limit)
                    .not_before(first_position);
                let mut stop = snap.size;
                walk(&snap, from, |pos, h| {
                    if h.last_offset() >= limit {
                        stop = pos;
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .await?;
                end = stop;
                done = true;
            }
            if end - first_position > budget {
                let target = first_position + budget;
                let from = self
                    .index_floor_position(snap.base_offset, target)
                    .not_before(first_position);
                let mut boundary = from.position;
                walk(&snap, from, |pos, h| {
                    if pos < first_position {
                        ControlFlow::Continue(()) // only after a fallback walk from 0
                    } else if pos + h.total_bytes() <= target {
                        boundary = pos + h.total_bytes();
                        ControlFlow::Continue(())
                    } else {
                        ControlFlow::Break(())
                    }
                })
                .await?;
                end = boundary;
                if end == first_position && first_wanted {
                    end = first_position + first_len;
                }
                done = true;
            }
            if end > first_position {
                let len = (end - first_position) as u32;
                result.slices.push(FileSlice {
                    file: snap.file.clone(),
                    position: first_position,
                    len,
                });
                result.bytes = result.bytes.saturating_add(len);
            }
            if done {
                break;
            }
            cursor = snap.next_offset;
        }
        Ok(result)
    }

    fn index_floor_offset(&self, base_offset: i64, offset: i64) -> Start {
        let s = self.state.borrow();
        s.segments
            .get(&base_offset)
            .map_or(Start::TRUSTED_ZERO, |seg| {
                Start::entry(
                    base_offset,
                    seg.index.floor_offset((offset - base_offset).max(0) as u64),
                )
            })
    }

    fn index_floor_position(&self, base_offset: i64, position: u64) -> Start {
        let s = self.state.borrow();
        s.segments
            .get(&base_offset)
            .map_or(Start::TRUSTED_ZERO, |seg| {
                Start::entry(base_offset, seg.index.floor_position(position))
            })
    }

    /// Copies the given slices into memory (TLS / non-zero-copy path, tests).
    pub async fn read_bytes(&self, slices: &[FileSlice]) -> Result<Bytes, LogError> {
        let total: usize = slices.iter().map(|s| s.len as usize).sum();
        let mut out = Vec::with_capacity(total);
        for slice in slices {
            let (res, buf) =
                io::read_append(slice.file.file(), out, slice.position, slice.len as usize).await;
            out = buf;
            let read = res.map_err(|e| LogError::io("read", slice.file.path(), e))?;
            if read != slice.len as usize {
                return Err(LogError::Corrupt {
                    path: slice.file.path().to_path_buf(),
                    position: slice.position + read as u64,
                    reason: format!("file ends {read} bytes into a {}-byte slice", slice.len),
                });
            }
        }
        Ok(Bytes::from(out))
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.state.borrow().log_end_offset()
    }
    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark
    }
    /// Raises the high watermark (clamped to the log end offset; never moves it backwards).
    pub fn set_high_watermark(&self, hw: i64) {
        let mut s = self.state.borrow_mut();
        let hw = hw.min(s.log_end_offset());
        if hw > s.high_watermark {
            s.high_watermark = hw;
        }
    }
    /// Offsets below this are covered by an fdatasync.
    pub fn durable_offset(&self) -> i64 {
        self.state.borrow().durable_offset
    }
    /// Logical bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.values().map(|s| s.size).sum()
    }
    /// Group-commit rounds (fdatasync passes) started since open; a metric.
    pub fn sync_rounds(&self) -> u64 {
        self.state.borrow().metrics.sync_rounds
    }
    /// Counters since open, for `/metrics`.
    pub fn metrics(&self) -> LogMetrics {
        self.state.borrow().metrics
    }
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// ListOffsets by timestamp: (max timestamp, base offset) of the first batch whose max
    /// timestamp >= `ts`, the offset raised to the log start offset. Batch granularity.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        let bases: Vec<i64> = {
            let s = self.state.borrow();
            s.usable()?;
            s.segments.keys().copied().collect()
        };
        for base in bases {
            let (snap, from, lso) = {
                let s = self.state.borrow();
                let Some(seg) = s.segments.get(&base) else {
                    continue;
                };
                if seg.max_timestamp < ts || seg.next_offset <= s.log_start_offset {
                    continue;
                }
                let snap = SegmentSnap {
                    file: seg.log.clone(),
                    base_offset: base,
                    size: seg.size,
                    next_offset: seg.next_offset,
                    start: Start::TRUSTED_ZERO,
                };
                (
                    snap,
                    Start::entry(base, seg.index.floor_timestamp(ts)),
                    s.log_start_offset,
                )
            };
            let mut found = None;
            walk(&snap, from, |_, h| {
                if h.max_timestamp() >= ts && h.last_offset() >= lso {
                    found = Some((h.max_timestamp(), h.base_offset().max(lso)));
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// (timestamp, offset) of the largest batch max timestamp (ListOffsets -3); the offset is
    /// that batch's last offset.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let s = self.state.borrow();
        let mut best: Option<(i64, i64)> = None;
        for seg in s.segments.values() {
            if seg.offset_of_max_timestamp >= 0 && best.is_none_or(|(t, _)| seg.max_timestamp > t) {
                best = Some((seg.max_timestamp, seg.offset_of_max_timestamp));
            }
        }
        best
    }

    /// Removes every batch with last offset >= `offset` (a batch containing `offset` goes
    /// whole, so the log end becomes its base offset). Used by replication.
    /// Truncating below the log start offset empties the log and restarts it at `offset`.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let _writer = self.write_lock.lock().await;
        let (leo, lso) = {
            let s = self.state.borrow();
            s.usable()?;
            (s.log_end_offset(), s.log_start_offset)
        };
        if offset >= leo {
            return Ok(());
        }
        let prealloc = self.config.preallocate.then_some(self.config.segment_bytes);
        // Segments wholly at or after the cut go (all of them below the log start); if none
        // is left, the log restarts empty at `offset`.
        let doomed: Vec<i64> = {
            let s = self.state.borrow();
            s.segments
                .keys()
                .copied()
                .filter(|&b| offset < lso || b >= offset)
                .collect()
        };
        self.remove_segments(&doomed).await?;
        if self.state.borrow().segments.is_empty() {
            let segment = Segment::create(&self.dir, offset, prealloc).await?;
            let mut s = self.state.borrow_mut();
            s.segments.insert(offset, segment);
            s.log_start_offset = offset;
            s.segments_created += 1;
        } else {
            // Cut inside the last remaining segment.
            let snap = {
                let s = self.state.borrow();
                let seg = s.active();
                let rel = (offset - seg.base_offset).max(0) as u64;
                SegmentSnap {
                    file: seg.log.clone(),
                    base_offset: seg.base_offset,
                    size: seg.size,
                    next_offset: seg.next_offset,
                    start: Start::entry(seg.base_offset, seg.index.floor_offset(rel)),
                }
            };
            let mut cut = snap.size;
            walk(&snap, snap.start, |pos, h| {
                if h.last_offset() >= offset {
                    cut = pos;
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await?;
            self.cut_active(cut, prealloc).await?;
            // The batch holding `offset` began below the log start: nothing valid is left,
            // restart empty at `offset` (Kafka's truncateFullyAndStartAt).
            let below_start = {
                let s = self.state.borrow();
                s.log_end_offset() < s.log_start_offset
            };
            if below_start {
                let all: Vec<i64> = self.state.borrow().segments.keys().copied().collect();
                self.remove_segments(&all).await?;
                let segment = Segment::create(&self.dir, offset, prealloc).await?;
                let mut s = self.state.borrow_mut();
                s.segments.insert(offset, segment);
                s.log_start_offset = offset;
                s.segments_created += 1;
            }
        }
        let (file, path) = {
            let mut s = self.state.borrow_mut();
            s.truncate_epoch += 1;
            // Data above the cut is gone: what replaces it was never cleaned.
            s.first_dirty_offset = s.first_dirty_offset.min(offset);
            let leo = s.log_end_offset();
            s.durable_offset = s.durable_offset.min(leo);
            s.sync_covering = s.sync_covering.min(leo);
            s.log_start_offset = s.log_start_offset.min(leo);
            // Clamped from below too: a restart at `offset` raised the log start, possibly
            // past the old high watermark (found by the log_ops fuzz target: hw < log start
            // broke `lso <= hw`). Kafka's truncateFullyAndStartAt moves it to the new end.
            s.high_watermark = s.high_watermark.clamp(s.log_start_offset, leo);
            let a = s.active();
            (a.log.file().clone(), a.log.path().to_path_buf())
        };
        io::sync_data(&file)
            .await
            .map_err(|e| LogError::io("fdatasync", &path, e))?;
        io::sync_dir(&self.dir)
            .await
            .map_err(|e| LogError::io("fsync", &self.dir, e))?;
        // Epochs of removed batches are gone (Kafka's truncateFromEnd); a log restarted empty
        // has none.
        let newest = self.newest_batch_epoch().await?;
        self.state.borrow_mut().last_leader_epoch = newest;
        self.drop_snapshots_above(self.log_end_offset())?;
        self.cut_txn_indexes(self.log_end_offset()).await?;
        self.write_checkpoint().await
    }

    /// Cuts the active segment at byte `cut` and recomputes its facts from what is left.
    async fn cut_active(&self, cut: u64, prealloc: Option<u64>) -> Result<(), LogError> {
        let (file, path, base, from) = {
            let mut s = self.state.borrow_mut();
            let a = s.active_mut();
            a.index.truncate_at_position(cut);
            let last = a.index.last();
            a.size = last.map_or(0, |e| u64::from(e.position));
            a.next_offset = a.base_offset + last.map_or(0, |e| i64::from(e.relative_offset));
            a.max_timestamp = last.map_or(-1, |e| e.max_timestamp_before);
            a.offset_of_max_timestamp =
                last.map_or(-1, |e| a.base_offset + i64::from(e.offset_of_max_before));
            if cut == 0 {
                a.first_batch_timestamp = None;
            }
            (
                a.log.file().clone(),
                a.log.path().to_path_buf(),
                a.base_offset,
                a.size,
            )
        };
        // Re-walk the kept tail to restore next offset and max timestamp.
        let (snap, expected) = {
            let s = self.state.borrow();
            let a = s.active();
            let snap = SegmentSnap {
                file: a.log.clone(),
                base_offset: base,
                size: cut,
                next_offset: 0,
                start: Start::TRUSTED_ZERO,
            };
            (snap, a.next_offset)
        };
        let mut from = from;
        if from > 0 && !starts_batch(&snap, from, expected).await {
            // The index entry does not land on its batch: rebuild this segment's facts.
            let mut s = self.state.borrow_mut();
            let a = s.active_mut();
            a.index = crate::index::SegmentIndex::default();
            a.size = 0;
            a.next_offset = a.base_offset;
            a.max_timestamp = -1;
            a.offset_of_max_timestamp = -1;
            a.first_batch_timestamp = None;
            from = 0;
        }
        let mut facts = Vec::new();
        walk(&snap, Start::trusted(from), |pos, h| {
            facts.push(BatchFacts::of(pos, h));
            ControlFlow::Continue(())
        })
        .await?;
        {
            let mut s = self.state.borrow_mut();
            let interval = self.config.index_interval_bytes;
            let a = s.active_mut();
            for batch in facts {
                a.note_batch(batch, interval);
            }
            assert_eq!(a.size, cut, "cut must fall on a batch boundary");
        }
        file.set_len(cut)
            .await
            .map_err(|e| LogError::io("truncate", &path, e))?;
        if let Some(bytes) = prealloc {
            io::fallocate(&file, bytes).map_err(|e| LogError::io("fallocate", &path, e))?;
        }
        let job = self
            .state
            .borrow()
            .active()
            .index_job(true)
            .expect("rewrite always yields a job");
        let n = job.run().await?;
        let mut s = self.state.borrow_mut();
        let a = s.active_mut();
        a.index.persisted = n;
        a.index_unsynced = true;
        a.file_len = prealloc.unwrap_or(cut).max(cut);
        Ok(())
    }

    /// Unlinks whole segments (readers holding a FileSlice keep theirs open).
    async fn remove_segments(&self, bases: &[i64]) -> Result<(), LogError> {
        for base in bases {
            let removed = {
                let mut s = self.state.borrow_mut();
                let removed = s.segments.remove(base);
                s.metrics.segments_deleted += u64::from(removed.is_some());
                removed
            };
            let Some(seg) = removed else { continue };
            self.state.borrow_mut().txn_indexes.remove(base);
            txn_index::remove(&self.dir, *base)?;
            for path in seg.paths() {
                match compio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io("remove", path, e)),
                }
            }
        }
        Ok(())
    }

    /// DeleteRecords: raises the log start offset to `offset` (<= high watermark) and drops
    /// segments wholly below it. Returns the new log start offset.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let _writer = self.write_lock.lock().await;
        let doomed = {
            let mut s = self.state.borrow_mut();
            s.usable()?;
            if offset > s.high_watermark || offset < 0 {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: s.log_start_offset,
                    log_end_offset: s.log_end_offset(),
                });
            }
            if offset <= s.log_start_offset {
                return Ok(s.log_start_offset);
            }
            s.log_start_offset = offset;
            let active = s.active().base_offset;
            s.segments
                .values()
                .filter(|seg| seg.base_offset != active && seg.next_offset <= offset)
                .map(|seg| seg.base_offset)
                .collect::<Vec<_>>()
        };
        // The new log start (and the newest epoch) are durable before any segment goes, so a
        // crash in between never brings back deleted records or loses the epoch.
        self.write_checkpoint().await?;
        self.remove_segments(&doomed).await?;
        self.prune_snapshots()?;
        Ok(self.state.borrow().log_start_offset)
    }

    /// Deletes whole non-active segments, oldest first, that are below the high watermark
    /// and older than retention.ms (by their max timestamp) or beyond retention.bytes, or
    /// wholly below the log start offset.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let _writer = self.write_lock.lock().await;
        let mut report = RetentionReport::default();
        let doomed = {
            let s = self.state.borrow();
            s.usable()?;
            let mut total: u64 = s.segments.values().map(|seg| seg.size).sum();
            let active = s.active().base_offset;
            let mut doomed = Vec::new();
            let mut next_bases = s.segments.keys().skip(1);
            for seg in s.segments.values() {
                let next_base = next_bases.next().copied().unwrap_or(i64::MAX);
                if seg.base_offset == active || seg.next_offset > s.high_watermark {
                    break;
                }
                // Below the log start by its whole range, up to the next segment's base (as
                // Kafka's deleteLogStartOffsetBreachedSegments): a cleaned segment's last
                // offset can be far below that base, and deleting it by its last offset would
                // move the log start over offsets a consumer may still hold.
                let below_start = next_base <= s.log_start_offset;
                let expired = self.config.retention_ms >= 0
                    && seg.max_timestamp >= 0
                    && now_ms - seg.max_timestamp > self.config.retention_ms;
                let oversize = self.config.retention_bytes >= 0
                    && total - seg.size >= self.config.retention_bytes as u64;
                if !(below_start || expired || oversize) {
                    break;
                }
                total -= seg.size;
                report.deleted_bytes += seg.size;
                doomed.push(seg.base_offset);
            }
            doomed
        };
        report.deleted_segments = doomed.len();
        if !doomed.is_empty() {
            {
                let mut s = self.state.borrow_mut();
                let last_doomed = *doomed.last().expect("non-empty");
                let first_kept = *s
                    .segments
                    .range((Bound::Excluded(last_doomed), Bound::Unbounded))
                    .next()
                    .expect("the active segment is never doomed")
                    .0;
                s.log_start_offset = s.log_start_offset.max(first_kept);
                s.high_watermark = s.high_watermark.max(s.log_start_offset);
            }
            // As in DeleteRecords: the new log start and the newest epoch are durable before
            // the segments go.
            self.write_checkpoint().await?;
            self.remove_segments(&doomed).await?;
            self.prune_snapshots()?;
        }
        report.log_start_offset = self.state.borrow().log_start_offset;
        Ok(report)
    }

    /// Rolls the active segment if it is older than segment.ms (by batch timestamps).
    pub async fn roll_if_due(&self, now_ms: i64) -> Result<(), LogError> {
        let _writer = self.write_lock.lock().await;
        self.state.borrow().usable()?;
        self.clean_tail().await?;
        let due = {
            let s = self.state.borrow();
            s.usable()?;
            let a = s.active();
            !a.is_empty()
                && a.first_batch_timestamp
                    .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.segment_ms)
        };
        if due {
            let leo = self.log_end_offset();
            self.roll(leo).await?;
        }
        Ok(())
    }

    /// Flushes everything, writes indexes and the checkpoint, and refuses further work.
    pub async fn close(&self) -> Result<(), LogError> {
        self.sync_until(i64::MAX).await?;
        let _writer = self.write_lock.lock().await;
        if self.state.borrow().closed {
            return Ok(());
        }
        self.clean_tail().await?;
        self.sync_until(i64::MAX).await?;
        if self.config.preallocate {
            // Leave files as long as their data, as Kafka does; open preallocates again.
            let (file, path, size) = {
                let s = self.state.borrow();
                let a = s.active();
                (a.log.file().clone(), a.log.path().to_path_buf(), a.size)
            };
            file.set_len(size)
                .await
                .map_err(|e| LogError::io("truncate", &path, e))?;
            io::sync_data(&file)
                .await
                .map_err(|e| LogError::io("fdatasync", &path, e))?;
            self.state.borrow_mut().active_mut().file_len = size;
        }
        self.write_checkpoint().await?;
        self.state.borrow_mut().closed = true;
        Ok(())
    }

    /// Partition leader epoch of the newest batch appended to this log and not truncated,
    /// even if retention or DeleteRecords removed that batch since (the checkpoint keeps it);
    /// `None` if the log never held a batch or was truncated to empty. Kafka's
    /// `leader-epoch-checkpoint` serves the same purpose: a log whose start offset reached
    /// its end still knows the epoch it ended in.
    pub fn last_leader_epoch(&self) -> Option<i32> {
        self.state.borrow().last_leader_epoch
    }

    /// The leader epoch of the last batch physically in the segments, if any: one index
    /// lookup and a short walk in the newest segment that holds a batch.
    async fn newest_batch_epoch(&self) -> Result<Option<i32>, LogError> {
        let snap = {
            let s = self.state.borrow();
            let Some(seg) = s.segments.values().rev().find(|seg| seg.size > 0) else {
                return Ok(None);
            };
            let rel = (seg.next_offset - 1 - seg.base_offset).max(0) as u64;
            SegmentSnap {
                file: seg.log.clone(),
                base_offset: seg.base_offset,
                size: seg.size,
                next_offset: seg.next_offset,
                start: Start::entry(seg.base_offset, seg.index.floor_offset(rel)),
            }
        };
        let mut newest = None;
        walk(&snap, snap.start, |_, h| {
            newest = Some(h.leader_epoch());
            ControlFlow::Continue(())
        })
        .await?;
        Ok(newest)
    }

    /// Offsets of the producer-state snapshots kept, ascending; none is above the log end.
    pub fn producer_snapshots(&self) -> Vec<i64> {
        self.state.borrow().snapshots.clone()
    }

    /// The newest producer-state snapshot's offset, if any.
    pub fn newest_producer_snapshot(&self) -> Option<i64> {
        self.state.borrow().snapshots.last().copied()
    }

    /// Base offset of the active segment. A segment rolled since offset `o` (e.g. the newest
    /// snapshot) iff this is above `o`: the seam the broker takes snapshots at, as Kafka
    /// takes one at every roll.
    pub fn active_segment_base(&self) -> i64 {
        self.state.borrow().active().base_offset
    }

    /// The payload of producer snapshot `offset`; `None` (with a warning, and the file
    /// deleted) if it is missing, damaged or not one this log keeps.
    pub async fn read_producer_snapshot(&self, offset: i64) -> Result<Option<Vec<u8>>, LogError> {
        if !self.state.borrow().snapshots.contains(&offset) {
            return Ok(None);
        }
        match snapshot::read(&self.dir, offset).await? {
            Ok(payload) => Ok(Some(payload)),
            Err(reason) => {
                self.discard_producer_snapshot(offset, &reason)?;
                Ok(None)
            }
        }
    }

    /// Deletes producer snapshot `offset` because its payload cannot be used (`reason`):
    /// open falls back to an older one or to the full scan.
    pub fn discard_producer_snapshot(&self, offset: i64, reason: &str) -> Result<(), LogError> {
        tracing::warn!(target: "engine", dir = %self.dir.display(), offset, reason, "producer snapshot unusable; deleted");
        self.state.borrow_mut().snapshots.retain(|&o| o != offset);
        snapshot::remove(&self.dir, offset)
    }

    /// Writes producer snapshot `offset` (the state of exactly the batches below it) and
    /// deletes those no longer kept (`snapshot::PRODUCER_SNAPSHOTS_KEPT`, below the log
    /// start). Refused (`Ok(false)`) when `offset` is above the log end offset: those
    /// batches are not in the log, and a crash or truncation would leave the snapshot
    /// describing batches the log never held. Holds the write lock.
    ///
    /// `aborted` (marker order, markers below `offset`) are first appended to the
    /// `.txnindex` files of the segments holding their markers and fdatasynced, so a loaded
    /// snapshot finds every aborted transaction below it in the files. Entries already there
    /// (at or below a file's last marker) and those of segments gone are skipped.
    pub async fn write_producer_snapshot(
        &self,
        offset: i64,
        payload: &[u8],
        aborted: &[AbortedTxn],
    ) -> Result<bool, LogError> {
        let _writer = self.write_lock.lock().await;
        {
            let s = self.state.borrow();
            s.usable()?;
            if offset > s.log_end_offset() || offset < 0 {
                return Ok(false);
            }
        }
        if let Some(e) = aborted.iter().find(|e| e.last_offset >= offset) {
            return Err(LogError::Limit(format!(
                "aborted transaction with marker {} in a snapshot at {offset}",
                e.last_offset
            )));
        }
        self.append_txn_indexes(aborted).await?;
        snapshot::write(&self.dir, offset, payload).await?;
        {
            let mut s = self.state.borrow_mut();
            if let Err(at) = s.snapshots.binary_search(&offset) {
                s.snapshots.insert(at, offset);
            }
        }
        self.prune_snapshots()?;
        Ok(true)
    }

    /// Kafka's `collectAbortedTransactions` over the `.txnindex` files: appends to `out` the
    /// aborted transactions whose marker is in `[from_offset, below_offset)` and whose first
    /// offset is below `upper_bound_offset`, in marker order, reading only files whose
    /// summary can contribute. Returns true if it stopped at an entry whose last stable
    /// offset reaches `upper_bound_offset` (no later transaction can qualify).
    pub async fn aborted_txns(
        &self,
        from_offset: i64,
        below_offset: i64,
        upper_bound_offset: i64,
        out: &mut Vec<AbortedTxn>,
    ) -> Result<bool, LogError> {
        let files: Vec<(i64, i64, TxnIndexFile)> = {
            let s = self.state.borrow();
            s.usable()?;
            s.txn_indexes
                .range(..below_offset)
                .filter_map(|(&base, &f)| {
                    let next = s.segments.get(&base)?.next_offset;
                    (next > from_offset).then_some((base, next, f))
                })
                .collect()
        };
        for (base, next, file) in files {
            match file {
                TxnIndexFile::Valid {
                    entries,
                    first_offset_min,
                    last_offset_max,
                } => {
                    if entries == 0
                        || last_offset_max < from_offset
                        || first_offset_min >= upper_bound_offset
                    {
                        continue;
                    }
                }
                TxnIndexFile::Damaged => {
                    return Err(LogError::Corrupt {
                        path: txn_index::txn_index_path(&self.dir, base),
                        position: 0,
                        reason: "damaged transaction index (found at open)".into(),
                    });
                }
            }
            let bytes = txn_index::read(&self.dir, base).await?.unwrap_or_default();
            let entries =
                txn_index::decode(&bytes, base, next).map_err(|reason| LogError::Corrupt {
                    path: txn_index::txn_index_path(&self.dir, base),
                    position: 0,
                    reason,
                })?;
            for e in entries {
                if e.last_offset < from_offset {
                    continue;
                }
                if e.last_offset >= below_offset {
                    return Ok(false);
                }
                if e.first_offset < upper_bound_offset {
                    out.push(e);
                }
                if e.last_stable_offset >= upper_bound_offset {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The lowest base offset of a segment whose `.txnindex` was found damaged at open: a
    /// producer snapshot above it cannot be trusted to have its aborted transactions in the
    /// files, so the broker loads from one at or below it (or scans the whole log) and then
    /// calls [`Log::truncate_aborted_txns_from`], which removes the damaged file.
    pub fn txn_index_damaged(&self) -> Option<i64> {
        let s = self.state.borrow();
        s.txn_indexes
            .iter()
            .find(|(_, f)| **f == TxnIndexFile::Damaged)
            .map(|(&base, _)| base)
    }

    /// Removes the aborted transactions whose marker is at or above `offset` from the
    /// `.txnindex` files (a damaged file of a segment reaching `offset` goes whole): the
    /// broker re-derives them from the batches it scans from `offset` (Kafka rebuilds a
    /// segment's index while recovering it).
    pub async fn truncate_aborted_txns_from(&self, offset: i64) -> Result<(), LogError> {
        let _writer = self.write_lock.lock().await;
        self.state.borrow().usable()?;
        self.cut_txn_indexes(offset).await
    }

    /// [`Log::truncate_aborted_txns_from`] with the write lock held.
    async fn cut_txn_indexes(&self, offset: i64) -> Result<(), LogError> {
        let files: Vec<(i64, Option<i64>, TxnIndexFile)> = {
            let s = self.state.borrow();
            s.txn_indexes
                .iter()
                .map(|(&base, &f)| (base, s.segments.get(&base).map(|g| g.next_offset), f))
                .collect()
        };
        for (base, next, file) in files {
            let keep = match (next, file) {
                (None, _) => None,
                (Some(next), TxnIndexFile::Damaged) if next > offset => None,
                (Some(_), TxnIndexFile::Damaged) => continue,
                (
                    Some(_),
                    TxnIndexFile::Valid {
                        last_offset_max, ..
                    },
                ) if last_offset_max < offset => {
                    continue;
                }
                (Some(_), TxnIndexFile::Valid { .. }) => {
                    let bytes = txn_index::read(&self.dir, base).await?.unwrap_or_default();
                    // Entries past the segment's end are expected here (a truncation just
                    // cut the segment): they are what goes.
                    match txn_index::decode(&bytes, base, i64::MAX) {
                        Ok(entries) => {
                            let kept: Vec<AbortedTxn> = entries
                                .into_iter()
                                .filter(|e| e.last_offset < offset)
                                .collect();
                            (!kept.is_empty()).then_some(kept)
                        }
                        Err(reason) => {
                            // Damaged since open: reported (a fetch through it fails, the
                            // next load rebuilds it), never silently emptied.
                            tracing::warn!(target: "engine", dir = %self.dir.display(), base, reason, "transaction index damaged");
                            self.state
                                .borrow_mut()
                                .txn_indexes
                                .insert(base, TxnIndexFile::Damaged);
                            continue;
                        }
                    }
                }
            };
            match keep {
                None => {
                    self.state.borrow_mut().txn_indexes.remove(&base);
                    txn_index::remove(&self.dir, base)?;
                }
                Some(kept) => {
                    let len = (kept.len() * txn_index::TXN_INDEX_ENTRY_BYTES) as u64;
                    txn_index::write_at(&self.dir, base, len, Vec::new()).await?;
                    self.state
                        .borrow_mut()
                        .txn_indexes
                        .insert(base, TxnIndexFile::of(&kept));
                }
            }
        }
        Ok(())
    }

    /// Appends `aborted` to the files of the segments holding their markers. Caller holds
    /// the write lock.
    async fn append_txn_indexes(&self, aborted: &[AbortedTxn]) -> Result<(), LogError> {
        // (segment base, entries) in marker order.
        let mut groups: Vec<(i64, Vec<AbortedTxn>)> = Vec::new();
        {
            let s = self.state.borrow();
            for e in aborted {
                let Some((&base, seg)) = s.segments.range(..=e.last_offset).next_back() else {
                    continue;
                };
                if e.last_offset >= seg.next_offset {
                    continue;
                }
                let after = match s.txn_indexes.get(&base) {
                    Some(TxnIndexFile::Valid {
                        last_offset_max, ..
                    }) => *last_offset_max,
                    Some(TxnIndexFile::Damaged) => {
                        return Err(LogError::Corrupt {
                            path: txn_index::txn_index_path(&self.dir, base),
                            position: 0,
                            reason: "appending to a damaged transaction index".into(),
                        });
                    }
                    None => i64::MIN,
                };
                if e.last_offset <= after {
                    continue; // already in the file
                }
                match groups.last_mut() {
                    Some((b, v)) if *b == base => v.push(*e),
                    _ => groups.push((base, vec![*e])),
                }
            }
        }
        for (base, entries) in groups {
            let (position, prior) = {
                let s = self.state.borrow();
                match s.txn_indexes.get(&base) {
                    Some(f @ TxnIndexFile::Valid { .. }) => (f.bytes(), Some(*f)),
                    _ => (0, None),
                }
            };
            let mut bytes = Vec::with_capacity(entries.len() * txn_index::TXN_INDEX_ENTRY_BYTES);
            for e in &entries {
                txn_index::encode(e, &mut bytes);
            }
            txn_index::write_at(&self.dir, base, position, bytes).await?;
            let summary = match prior {
                Some(prior) => prior.extended(&entries),
                None => TxnIndexFile::of(&entries),
            };
            self.state.borrow_mut().txn_indexes.insert(base, summary);
        }
        Ok(())
    }

    /// Open: reads and validates every segment's `.txnindex`, cuts torn or stale tails,
    /// marks damaged files, removes files of segments that are gone.
    async fn open_txn_indexes(&self) -> Result<(), LogError> {
        let on_disk = txn_index::list(&self.dir)?;
        for base in on_disk {
            let next = self
                .state
                .borrow()
                .segments
                .get(&base)
                .map(|g| g.next_offset);
            let Some(next) = next else {
                txn_index::remove(&self.dir, base)?;
                continue;
            };
            let bytes = txn_index::read(&self.dir, base).await?.unwrap_or_default();
            let file = match txn_index::recover(&bytes, base, next) {
                Ok((kept, cut)) => {
                    if cut {
                        tracing::warn!(target: "engine", dir = %self.dir.display(), base, kept = kept.len(), "transaction index tail cut at open");
                        let len = (kept.len() * txn_index::TXN_INDEX_ENTRY_BYTES) as u64;
                        txn_index::write_at(&self.dir, base, len, Vec::new()).await?;
                    }
                    if kept.is_empty() {
                        txn_index::remove(&self.dir, base)?;
                        continue;
                    }
                    TxnIndexFile::of(&kept)
                }
                Err(reason) => {
                    tracing::warn!(target: "engine", dir = %self.dir.display(), base, reason, "transaction index damaged; the broker rebuilds it from the log");
                    TxnIndexFile::Damaged
                }
            };
            self.state.borrow_mut().txn_indexes.insert(base, file);
        }
        Ok(())
    }

    /// Deletes the snapshots `snapshot::doomed` names.
    fn prune_snapshots(&self) -> Result<(), LogError> {
        let doomed = {
            let s = self.state.borrow();
            snapshot::doomed(&s.snapshots, s.log_start_offset)
        };
        for offset in doomed {
            self.state.borrow_mut().snapshots.retain(|&o| o != offset);
            snapshot::remove(&self.dir, offset)?;
        }
        Ok(())
    }

    /// After a truncation: snapshots above the new end describe batches that are gone.
    fn drop_snapshots_above(&self, log_end_offset: i64) -> Result<(), LogError> {
        let doomed: Vec<i64> = {
            let s = self.state.borrow();
            s.snapshots
                .iter()
                .copied()
                .filter(|&o| o > log_end_offset)
                .collect()
        };
        for offset in doomed {
            self.state.borrow_mut().snapshots.retain(|&o| o != offset);
            snapshot::remove(&self.dir, offset)?;
        }
        Ok(())
    }

    /// Calls `f` for each batch header from the batch containing `from_offset` to the log end
    /// (producer-state rebuild, leader-epoch cache).
    pub async fn scan_headers(
        &self,
        from_offset: i64,
        mut f: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        self.scan_batches(from_offset, |_| false, |h, _| f(h)).await
    }

    /// [`Log::scan_headers`], also handing `f` the whole batch (length prefix included) for
    /// each batch `whole(header)` asks for, up to 4 KiB (`scan::WHOLE_BATCH_BYTES_MAX`) (an
    /// empty slice otherwise): the transaction markers of control batches.
    pub async fn scan_batches(
        &self,
        from_offset: i64,
        whole: impl Fn(&BatchHeader) -> bool,
        mut f: impl FnMut(&BatchHeader, &[u8]),
    ) -> Result<(), LogError> {
        let bases: Vec<i64> = {
            let s = self.state.borrow();
            s.usable()?;
            s.segments
                .values()
                .filter(|seg| seg.next_offset > from_offset)
                .map(|seg| seg.base_offset)
                .collect()
        };
        for base in bases {
            let snap = {
                let s = self.state.borrow();
                let Some(seg) = s.segments.get(&base) else {
                    continue;
                };
                let rel = (from_offset - base).max(0) as u64;
                SegmentSnap {
                    file: seg.log.clone(),
                    base_offset: base,
                    size: seg.size,
                    next_offset: seg.next_offset,
                    start: Start::entry(seg.base_offset, seg.index.floor_offset(rel)),
                }
            };
            walk_with(&snap, snap.start, &whole, |_, h, b| {
                if h.last_offset() >= from_offset {
                    f(h, b);
                }
                ControlFlow::Continue(())
            })
            .await?;
        }
        Ok(())
    }
}

/// Ends a leader's turn and wakes waiters, even if the leader's future is dropped.
struct SyncLeader<'a> {
    log: &'a Log,
}

impl Drop for SyncLeader<'_> {
    fn drop(&mut self) {
        let mut s = self.log.state.borrow_mut();
        s.syncs_in_flight -= 1;
        if s.syncs_in_flight == 0 {
            s.sync_covering = s.durable_offset; // forget what a failed or dropped leader promised
        }
        drop(s);
        self.log.sync_done.notify_all();
    }
}

/// What a read needs of a segment, copied out so no borrow crosses an await.
struct SegmentSnap {
    file: Rc<SegmentFile>,
    base_offset: i64,
    size: u64,
    next_offset: i64,
    start: Start,
}

/// Where a header walk starts: a byte position and, for positions taken from an index (which
/// open trusts below the recovery point without re-reading), the base offset of the batch
/// that must be there.
#[derive(Clone, Copy, Debug)]
struct Start {
    position: u64,
    expect_base_offset: Option<i64>,
}

impl Start {
    const TRUSTED_ZERO: Start = Start {
        position: 0,
        expect_base_offset: None,
    };

    fn entry(segment_base_offset: i64, (relative_offset, position): (u32, u64)) -> Start {
        let expect = (position > 0).then(|| segment_base_offset + i64::from(relative_offset));
        Start {
            position,
            expect_base_offset: expect,
        }
    }
    fn trusted(position: u64) -> Start {
        Start {
            position,
            expect_base_offset: None,
        }
    }
    /// `boundary` is a batch start already walked to; an index entry below it adds nothing.
    fn not_before(self, boundary: u64) -> Start {
        if self.position < boundary {
            Start::trusted(boundary)
        } else {
            self
        }
    }
}

/// Walks headers from `from`. If an index entry does not land on the batch it names (a
/// damaged index file), walks from the segment start instead: slower, never wrong.
async fn walk(
    snap: &SegmentSnap,
    from: Start,
    mut f: impl FnMut(u64, &BatchHeader) -> ControlFlow<()>,
) -> Result<(), LogError> {
    walk_with(snap, from, |_| false, |pos, h, _| f(pos, h)).await
}

/// [`walk`], handing `f` the whole batch for those `whole` asks for (see
/// [`walk_batches`]).
async fn walk_with(
    snap: &SegmentSnap,
    from: Start,
    whole: impl Fn(&BatchHeader) -> bool,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> ControlFlow<()>,
) -> Result<(), LogError> {
    let (file, path) = (snap.file.file(), snap.file.path());
    let Some(expected) = from.expect_base_offset else {
        return walk_batches(file, path, from.position, snap.size, whole, f).await;
    };
    let mut first = true;
    let mut misplaced = false;
    let res = walk_batches(file, path, from.position, snap.size, &whole, |pos, h, b| {
        if std::mem::take(&mut first) && h.base_offset() != expected {
            misplaced = true;
            return ControlFlow::Break(());
        }
        f(pos, h, b)
    })
    .await;
    match res {
        Ok(()) if !misplaced => Ok(()),
        Err(e) if !first => Err(e),
        _ => {
            tracing::warn!(target: "engine", path = %path.display(), position = from.position, "index entry misses its batch; walking from the segment start");
            walk_batches(file, path, 0, snap.size, whole, f).await
        }
    }
}

/// Whether a batch with base offset `expected` starts at `position`.
async fn starts_batch(snap: &SegmentSnap, position: u64, expected: i64) -> bool {
    let mut found = false;
    let res = walk_headers(
        snap.file.file(),
        snap.file.path(),
        position,
        snap.size,
        |_, h| {
            found = h.base_offset() == expected;
            ControlFlow::Break(())
        },
    )
    .await;
    res.is_ok() && found
}

/// Closes the index files of every sealed segment whose entries are written and synced (all
/// but the last, active, segment): a sealed segment then holds one descriptor, its `.log`.
fn close_sealed_index_files(segments: &mut BTreeMap<i64, Segment>) {
    let Some(&active) = segments.keys().next_back() else {
        return;
    };
    for (_, segment) in segments.range_mut(..active) {
        segment.close_index_files();
    }
}

/// Splits a request buffer into validated batches; all or nothing.
fn split_batches(
    bytes: &[u8],
    max_batch_bytes: u32,
    from_producer: bool,
    start: usize,
    first_index: u32,
) -> Result<Vec<BatchMeta>, AppendError> {
    let mut metas = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (header, len) =
            validate_batch(&bytes[at..], max_batch_bytes, from_producer).map_err(|error| {
                AppendError::InvalidBatch {
                    index: first_index + metas.len() as u32,
                    position: (start + at) as u32,
                    error,
                }
            })?;
        metas.push(BatchMeta {
            start: start + at,
            len,
            base_offset: header.base_offset(),
            last_offset_delta: header.last_offset_delta(),
            max_timestamp: header.max_timestamp(),
        });
        at += len;
    }
    Ok(metas)
}

/// Replicated batches must follow each other: each base offset above its predecessor's last.
fn check_monotonic(metas: &[BatchMeta]) -> Result<(), AppendError> {
    if let Some(pair) = metas
        .windows(2)
        .find(|w| w[1].base_offset <= w[0].base_offset + i64::from(w[0].last_offset_delta))
    {
        return Err(AppendError::OffsetNotMonotonic {
            base_offset: pair[1].base_offset,
            expected: pair[0].base_offset + i64::from(pair[0].last_offset_delta) + 1,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build_test_batch;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(f)
    }

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..LogConfig::default()
        }
    }

    fn batch(records: i32, payload: usize, ts: i64) -> Bytes {
        Bytes::from(build_test_batch(records, payload, ts, ts, 7))
    }

    async fn read_all(log: &Log, from: i64) -> Vec<u8> {
        let r = log.read(from, i64::MAX, u32::MAX, true).await.unwrap();
        log.read_bytes(&r.slices).await.unwrap().to_vec()
    }

    fn headers(bytes: &[u8]) -> Vec<(i64, i64, i32)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (h, len) = validate_batch(&bytes[at..], u32::MAX >> 4, false).expect("valid batch");
            out.push((h.base_offset(), h.last_offset(), h.leader_epoch()));
            at += len;
        }
        out
    }

    /// A checkpoint that cannot be written (here: its temp file's name is taken by a
    /// directory; in life, a full disk) is tried again after the interval, not on every tick.
    #[test]
    fn failed_checkpoint_is_retried_after_the_interval() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            log.append(batch(1, 100, 1_000), 0).await.unwrap();
            log.flush_tick(0).await.unwrap();
            std::fs::create_dir(dir.path().join("sluice.checkpoint.tmp")).unwrap();
            let due = CHECKPOINT_INTERVAL_MS;
            assert!(log.flush_tick(due).await.is_err(), "the checkpoint is due");
            log.flush_tick(due + 1_000).await.unwrap();
            log.flush_tick(2 * due - 1).await.unwrap();
            assert!(log.flush_tick(2 * due).await.is_err(), "due again");
            std::fs::remove_dir(dir.path().join("sluice.checkpoint.tmp")).unwrap();
            log.flush_tick(3 * due).await.unwrap();
        });
    }

    #[test]
    fn append_assigns_offsets_and_reads_back() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, report) = Log::open(dir.path().into(), small_config()).await.unwrap();
            assert_eq!(report.log_end_offset, 0);
            let a = log.append(batch(3, 100, 10), 5).await.unwrap();
            assert_eq!((a.first_offset, a.last_offset, a.batch_count), (0, 2, 1));
            let mut two = build_test_batch(2, 10, 20, 21, 1);
            two.extend_from_slice(&build_test_batch(4, 10, 30, 33, 2));
            let b = log.append(Bytes::from(two), 6).await.unwrap();
            assert_eq!((b.first_offset, b.last_offset, b.batch_count), (3, 8, 2));
            assert_eq!((b.max_timestamp, b.offset_of_max_timestamp), (33, 8));
            assert_eq!(log.log_end_offset(), 9);
            let bytes = read_all(&log, 0).await;
            assert_eq!(headers(&bytes), vec![(0, 2, 5), (3, 4, 6), (5, 8, 6)]);
            // Reading from the middle of a batch starts at that batch.
            assert_eq!(headers(&read_all(&log, 6).await), vec![(5, 8, 6)]);
            assert!(read_all(&log, 9).await.is_empty());
            assert!(matches!(
                log.read(10, i64::MAX, 100, true).await,
                Err(ReadError::OffsetOutOfRange { .. })
            ));
        });
    }

    #[test]
    fn rejects_bad_batches_without_appending() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            let mut good_then_bad = build_test_batch(1, 10, 0, 0, 1);
            let mut bad = build_test_batch(1, 10, 0, 0, 1);
            bad[40] ^= 1;
            good_then_bad.extend_from_slice(&bad);
            let err = log.append(Bytes::from(good_then_bad), 0).await.unwrap_err();
            assert!(
                matches!(err, AppendError::InvalidBatch { index: 1, .. }),
                "{err}"
            );
            assert_eq!(log.log_end_offset(), 0);
            assert!(matches!(
                log.append(Bytes::new(), 0).await,
                Err(AppendError::Empty)
            ));
        });
    }

    #[test]
    fn batches_whose_count_lies_are_refused_and_leave_the_log_end() {
        use crate::batch::BatchError;
        use crate::batch::tests::with_claimed_count;
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            log.append(batch(2, 40, 0), 0).await.unwrap();
            // Claims 2^31-1 records, holds one; claims one, holds three (valid CRCs).
            let too_many = with_claimed_count(build_test_batch(1, 30, 0, 0, 1), i32::MAX);
            let too_few = with_claimed_count(build_test_batch(3, 30, 0, 0, 1), 1);
            for (lying, found) in [(too_many, 1), (too_few, 3)] {
                let err = log.append(Bytes::from(lying), 0).await.unwrap_err();
                assert!(
                    matches!(
                        err,
                        AppendError::InvalidBatch {
                            index: 0,
                            error: BatchError::RecordCountMismatch { found: f, .. },
                            ..
                        } if f == found
                    ),
                    "{err}"
                );
                assert_eq!(log.log_end_offset(), 2);
            }
            let honest = log.append(batch(3, 40, 0), 0).await.unwrap();
            assert_eq!((honest.first_offset, honest.last_offset), (2, 4));
        });
    }

    #[test]
    fn replicated_batches_are_copied_as_the_leader_stored_them() {
        use crate::batch::tests::with_claimed_count;
        run(async {
            // A leader's log may hold a batch whose count lies (written before the producer
            // check existed): a follower copies it without panicking and spans its offsets.
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            let mut few = with_claimed_count(build_test_batch(3, 30, 0, 0, 1), 1);
            patch_header(&mut few, 0, 1);
            let mut many = with_claimed_count(build_test_batch(1, 30, 0, 0, 1), i32::MAX);
            patch_header(&mut many, 1, 1);
            few.extend_from_slice(&many);
            let info = log.append_replicated(Bytes::from(few)).await.unwrap();
            assert_eq!(
                (info.first_offset, info.last_offset),
                (0, 1 + i64::from(i32::MAX) - 1)
            );
            assert_eq!(log.log_end_offset(), 1 + i64::from(i32::MAX));
        });
    }

    #[test]
    fn read_bounds_by_max_offset_and_bytes() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            for i in 0..10 {
                log.append(batch(1, 39, i), 0).await.unwrap(); // 100 bytes each
            }
            let r = log.read(0, 4, u32::MAX, false).await.unwrap();
            assert_eq!(r.bytes, 400);
            let r = log.read(0, i64::MAX, 250, false).await.unwrap();
            assert_eq!(r.bytes, 200, "ends on a batch boundary");
            let r = log.read(0, i64::MAX, 50, false).await.unwrap();
            assert_eq!(r.bytes, 0);
            let r = log.read(0, i64::MAX, 50, true).await.unwrap();
            assert_eq!(r.bytes, 100, "min_one_batch returns the first batch whole");
        });
    }

    /// Open descriptors of this process whose path lies in `dir` and ends in `.suffix`.
    fn open_fds(dir: &Path, suffix: &str) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.starts_with(dir) && p.extension().is_some_and(|e| e == suffix))
            .count()
    }

    #[test]
    fn sealed_segments_hold_only_their_log_open() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let dir_path = dir.path().canonicalize().unwrap();
            let config = small_config();
            let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
            for i in 0..50 {
                log.append(batch(2, 200, 1000 + i), 1).await.unwrap();
            }
            let segments = log.segment_count();
            assert!(segments > 3, "segment.bytes = 4096 must roll");
            // The rolls made a checkpoint due; it writes and syncs the sealed indexes and
            // closes them.
            log.flush_tick(0).await.unwrap();
            assert_eq!(open_fds(&dir_path, "log"), segments);
            assert_eq!(open_fds(&dir_path, "index"), 1);
            assert_eq!(open_fds(&dir_path, "timeindex"), 1);
            log.close().await.unwrap();
            drop(log);
            // Re-opened: the same, straight after recovery.
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            assert_eq!(open_fds(&dir_path, "index"), 1);
            assert_eq!(
                log.offset_for_timestamp(1020).await.unwrap(),
                Some((1020, 40))
            );
            // Truncating into a sealed segment rewrites its index through reopened files.
            log.truncate_to(30).await.unwrap();
            assert_eq!(log.log_end_offset(), 30);
            log.append(batch(2, 200, 2000), 1).await.unwrap();
            log.close().await.unwrap();
            drop(log);
            let (log, report) = Log::open(dir.path().into(), small_config()).await.unwrap();
            assert!(report.truncations.is_empty(), "{report:?}");
            assert_eq!(log.log_end_offset(), 32);
            assert_eq!(headers(&read_all(&log, 28).await).len(), 2);
        });
    }

    #[test]
    fn rolls_segments_and_reopens() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = small_config();
            {
                let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
                for i in 0..50 {
                    log.append(batch(2, 200, 1000 + i), 1).await.unwrap();
                }
                assert!(log.segment_count() > 1, "segment.bytes = 4096 must roll");
                let m = log.metrics();
                assert_eq!(
                    (m.appended_batches, m.segments_rolled),
                    (50, log.segment_count() as u64 - 1)
                );
                assert_eq!(m.appended_bytes, 50 * 261);
                log.close().await.unwrap();
                assert!(matches!(
                    log.append(batch(1, 1, 0), 1).await,
                    Err(AppendError::Log(LogError::Closed))
                ));
            }
            let (log, report) = Log::open(dir.path().into(), config).await.unwrap();
            assert!(report.truncations.is_empty());
            assert_eq!(log.log_end_offset(), 100);
            let all = headers(&read_all(&log, 0).await);
            assert_eq!(all.len(), 50);
            assert!(all.windows(2).all(|w| w[1].0 == w[0].1 + 1));
            assert_eq!(log.max_timestamp(), Some((1049, 99)));
            assert_eq!(
                log.offset_for_timestamp(1020).await.unwrap(),
                Some((1020, 40))
            );
            assert_eq!(log.offset_for_timestamp(5000).await.unwrap(), None);
            let mut seen = 0;
            log.scan_headers(51, |h| {
                assert!(h.last_offset() >= 51);
                seen += 1;
            })
            .await
            .unwrap();
            assert_eq!(seen, 25);
        });
    }

    #[test]
    fn group_commit_makes_concurrent_appends_durable() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            let log = Rc::new(log);
            let mut tasks = Vec::new();
            for i in 0..20 {
                let log = log.clone();
                tasks.push(compio::runtime::spawn(async move {
                    let info = log.append(batch(1, 50, i), 0).await.unwrap();
                    log.wait_durable(info.last_offset).await.unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(log.durable_offset(), 20);
        });
    }

    #[test]
    fn truncate_delete_records_and_retention() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                retention_bytes: 3000,
                ..small_config()
            };
            let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
            for i in 0..40 {
                log.append(batch(1, 239, i), 0).await.unwrap(); // 300 bytes
            }
            log.truncate_to(35).await.unwrap();
            assert_eq!(log.log_end_offset(), 35);
            log.set_high_watermark(35);
            assert_eq!(log.high_watermark(), 35);
            assert_eq!(log.delete_records_before(5).await.unwrap(), 5);
            assert!(matches!(
                log.read(4, i64::MAX, 1000, true).await,
                Err(ReadError::OffsetOutOfRange { .. })
            ));
            assert!(log.delete_records_before(36).await.is_err());
            let report = log.enforce_retention(0).await.unwrap();
            assert!(report.deleted_segments > 0);
            assert!(log.size_bytes() < 3000 + 4096);
            assert_eq!(log.log_start_offset(), report.log_start_offset);
            let start = log.log_start_offset();
            assert_eq!(
                headers(&read_all(&log, start).await).first().map(|h| h.0),
                Some(start)
            );
            // Truncating below the start empties the log at that offset.
            log.truncate_to(2).await.unwrap();
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
            log.append(batch(1, 10, 0), 0).await.unwrap();
            log.close().await.unwrap();
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 3));
        });
    }

    /// The newest batch's leader epoch outlives the batch: DeleteRecords and retention keep
    /// it (through the checkpoint, across a reopen and a crash), truncation drops it.
    #[test]
    fn last_leader_epoch_survives_an_emptied_log() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                retention_ms: 0,
                ..small_config()
            };
            let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
            assert_eq!(log.last_leader_epoch(), None);
            for i in 0..20 {
                log.append(batch(1, 239, i), 2 + i32::from(i >= 10))
                    .await
                    .unwrap();
            }
            assert_eq!(log.last_leader_epoch(), Some(3));
            log.wait_durable(20).await.unwrap();
            log.set_high_watermark(20);
            assert_eq!(log.delete_records_before(20).await.unwrap(), 20);
            // Retention removes the sealed segments; only the active one is left.
            log.roll(20).await.unwrap();
            log.enforce_retention(i64::MAX).await.unwrap();
            assert_eq!(log.segment_count(), 1);
            // Dropped without close: the checkpoint written before the deletions is all.
            drop(log);
            let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
            assert_eq!(log.last_leader_epoch(), Some(3));
            // A batch on disk wins over the checkpoint.
            log.append(batch(1, 10, 0), 5).await.unwrap();
            log.close().await.unwrap();
            let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
            assert_eq!(log.last_leader_epoch(), Some(5));
            // Truncated to empty: no epoch is left (Kafka's truncateFromEnd).
            log.truncate_to(20).await.unwrap();
            assert_eq!(log.last_leader_epoch(), None);
            log.close().await.unwrap();
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            assert_eq!(log.last_leader_epoch(), None);
        });
    }

    #[test]
    fn preallocated_segments_recover_without_truncation() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                preallocate: true,
                segment_bytes: 64 * 1024,
                ..small_config()
            };
            {
                let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
                for i in 0..100 {
                    log.append(batch(1, 1000, i), 0).await.unwrap();
                }
                let leo = log.log_end_offset();
                log.wait_durable(leo - 1).await.unwrap();
                // No close: the active segment keeps its preallocated zero tail.
            }
            let (log, report) = Log::open(dir.path().into(), config.clone()).await.unwrap();
            assert!(report.truncations.is_empty(), "{report:?}");
            assert_eq!(log.log_end_offset(), 100);
            assert_eq!(headers(&read_all(&log, 0).await).len(), 100);
            log.append(batch(1, 10, 0), 0).await.unwrap();
            assert_eq!(log.log_end_offset(), 101);
            // Close cuts the preallocated tail; open allocates it again.
            log.close().await.unwrap();
            let active = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .max()
                .unwrap();
            let closed_len = std::fs::metadata(&active).unwrap().len();
            assert!(closed_len < 64 * 1024, "tail cut on close: {closed_len}");
            let (log, report) = Log::open(dir.path().into(), config).await.unwrap();
            assert!(report.truncations.is_empty(), "{report:?}");
            assert_eq!(std::fs::metadata(&active).unwrap().len(), 64 * 1024);
            assert_eq!(log.log_end_offset(), 101);
        });
    }

    #[test]
    fn interval_flush_policy_and_segment_ms_roll() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                flush: FlushPolicy::Interval {
                    ms: 100,
                    bytes: 1000,
                },
                segment_ms: 500,
                ..small_config()
            };
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            log.append(batch(1, 100, 1_000), 0).await.unwrap();
            log.flush_tick(0).await.unwrap();
            assert_eq!(
                log.durable_offset(),
                0,
                "neither interval nor bytes reached"
            );
            log.flush_tick(150).await.unwrap();
            assert_eq!(log.durable_offset(), 1, "interval reached");
            for i in 0..10 {
                log.append(batch(1, 100, 1_000 + i), 0).await.unwrap();
            }
            log.flush_tick(160).await.unwrap();
            assert_eq!(log.durable_offset(), 11, "byte threshold reached");
            // segment.ms counts from the first batch's timestamp.
            log.roll_if_due(1_400).await.unwrap();
            assert_eq!(log.segment_count(), 1);
            log.roll_if_due(1_500).await.unwrap();
            assert_eq!(log.segment_count(), 2);
            // An append whose timestamp is segment.ms past the first batch rolls by itself.
            log.append(batch(1, 10, 1_600), 0).await.unwrap();
            log.append(batch(1, 10, 2_200), 0).await.unwrap();
            assert_eq!(log.segment_count(), 3);
        });
    }

    #[test]
    fn validated_append_writes_at_the_given_offset_without_a_second_crc() {
        use crate::batch::{ValidateOptions, batch_crc_passes};
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            let options = ValidateOptions {
                max_batch_bytes: 1 << 20,
                strict_count: true,
                log_append_time_ms: Some(77),
            };
            let received = batch(3, 100, 5);
            let before = batch_crc_passes();
            let v = ValidatedBatch::new(&received, 0, options).unwrap();
            let info = log.append_validated(v.clone(), 0, 2).await.unwrap();
            assert_eq!(batch_crc_passes() - before, 1, "validation's pass only");
            assert_eq!(
                (info.first_offset, info.last_offset, info.max_timestamp),
                (0, 2, 77)
            );
            let stored = read_all(&log, 0).await;
            assert_eq!(stored, v.to_stored(0, 2));
            let (h, _) = validate_batch(&stored, 1 << 20, true).unwrap();
            assert!(h.is_log_append_time());
            // The caller's offset must be the log end.
            let err = log.append_validated(v, 7, 2).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    AppendError::OffsetNotLogEnd {
                        base_offset: 7,
                        log_end_offset: 3
                    }
                ),
                "{err}"
            );
        });
    }

    #[test]
    fn replicated_batches_in_many_buffers_are_written_back_to_back() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                segment_bytes: 1 << 20,
                ..small_config()
            };
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            // More buffers than one vectored write takes.
            let count = WRITE_SLICES_MAX as i64 + 40;
            let parts: Vec<Bytes> = (0..count)
                .map(|i| {
                    let mut b = build_test_batch(2, 30, i, i, i as u8);
                    patch_header(&mut b, 2 * i, 5);
                    Bytes::from(b)
                })
                .collect();
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let info = log.append_replicated_batches(parts).await.unwrap();
            assert_eq!((info.first_offset, info.last_offset), (0, 2 * count - 1));
            assert_eq!(info.batch_count as i64, count);
            assert_eq!(read_all(&log, 0).await, joined);
            // A bad batch in any buffer refuses the whole append, naming it.
            let mut bad = build_test_batch(1, 30, 0, 0, 1);
            patch_header(&mut bad, 5000, 5);
            bad[70] ^= 1;
            let mut good = build_test_batch(1, 30, 0, 0, 1);
            patch_header(&mut good, 4000, 5);
            let err = log
                .append_replicated_batches(vec![Bytes::from(good), Bytes::from(bad)])
                .await
                .unwrap_err();
            assert!(
                matches!(err, AppendError::InvalidBatch { index: 1, .. }),
                "{err}"
            );
            assert_eq!(log.log_end_offset(), 2 * count);
        });
    }

    #[test]
    fn replicated_appends_keep_offsets_and_reject_regressions() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            let mut b = build_test_batch(3, 20, 0, 0, 1);
            patch_header(&mut b, 10, 4);
            let mut c = build_test_batch(2, 20, 0, 0, 2);
            patch_header(&mut c, 20, 4);
            b.extend_from_slice(&c);
            let info = log.append_replicated(Bytes::from(b)).await.unwrap();
            assert_eq!((info.first_offset, info.last_offset), (10, 21));
            assert_eq!(log.log_end_offset(), 22);
            assert_eq!(
                headers(&read_all(&log, 10).await),
                vec![(10, 12, 4), (20, 21, 4)]
            );
            // Offsets in the gap read from the next batch.
            assert_eq!(headers(&read_all(&log, 15).await), vec![(20, 21, 4)]);
            let mut old = build_test_batch(1, 20, 0, 0, 3);
            patch_header(&mut old, 21, 4);
            let err = log.append_replicated(Bytes::from(old)).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    AppendError::OffsetNotMonotonic {
                        base_offset: 21,
                        expected: 22
                    }
                ),
                "{err}"
            );

            // Index entries name their batch's own base offset, gaps or not.
            for i in 3..60 {
                let mut b = build_test_batch(2, 100, 0, 0, 4);
                patch_header(&mut b, 100 * i, 4);
                log.append_replicated(Bytes::from(b)).await.unwrap();
            }
            let bases: Vec<i64> = [10, 20]
                .into_iter()
                .chain((3..60).map(|i| 100 * i))
                .collect();
            let entries: Vec<i64> = log
                .state
                .borrow()
                .segments
                .values()
                .flat_map(|seg| {
                    seg.index
                        .entries()
                        .iter()
                        .map(|e| seg.base_offset + i64::from(e.relative_offset))
                })
                .collect();
            assert!(entries.len() > 5, "{entries:?}");
            assert!(entries.iter().all(|o| bases.contains(o)), "{entries:?}");
            log.close().await.unwrap();
            let (log, report) = Log::open(dir.path().into(), small_config()).await.unwrap();
            assert!(
                report.truncations.is_empty() && report.rebuilt_indexes.is_empty(),
                "{report:?}"
            );
            let r = log.read(1050, i64::MAX, 100, true).await.unwrap();
            let bytes = log.read_bytes(&r.slices).await.unwrap();
            assert_eq!(headers(&bytes)[0].0, 1100);
        });
    }

    #[test]
    fn a_cancelled_group_commit_leader_does_not_wedge_others() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            let info = log.append(batch(1, 10, 0), 0).await.unwrap();
            {
                // Poll once so it becomes the leader and its fdatasync is in flight, then drop it.
                let mut leader = std::pin::pin!(log.wait_durable(info.last_offset));
                let polled =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(leader.as_mut().poll(cx)))
                        .await;
                assert!(
                    polled.is_pending(),
                    "an fdatasync cannot complete without a runtime turn"
                );
                assert_eq!(log.state.borrow().syncs_in_flight, 1);
            }
            assert_eq!(
                log.state.borrow().syncs_in_flight,
                0,
                "the drop guard ended its turn"
            );
            let info = log.append(batch(1, 10, 0), 0).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
            assert_eq!(log.durable_offset(), 2);
        });
    }

    /// index.interval.bytes = 0 (Kafka's floor): an entry per batch, none repeated when the
    /// batches are noted again (model test, minimal case: two appends, close, reopen).
    #[test]
    fn index_interval_zero_indexes_every_batch_once() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                index_interval_bytes: 0,
                ..small_config()
            };
            for round in 0..2 {
                let (log, _) = Log::open(dir.path().into(), config.clone()).await.unwrap();
                log.append(batch(1, 0, 0), 0).await.unwrap();
                log.append(batch(1, 0, 0), 0).await.unwrap();
                let want: Vec<i64> = (0..2 * (round + 1)).collect();
                let got: Vec<i64> = headers(&read_all(&log, 0).await)
                    .into_iter()
                    .map(|(base, _, _)| base)
                    .collect();
                assert_eq!(got, want);
                log.close().await.unwrap();
            }
        });
    }

    #[test]
    fn replicated_batches_are_not_held_to_max_message_bytes() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                max_batch_bytes: 0,
                ..small_config()
            };
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            assert!(log.append(batch(1, 20, 0), 0).await.is_err());
            let mut b = build_test_batch(2, 2000, 0, 0, 1);
            patch_header(&mut b, 0, 1);
            let info = log.append_replicated(Bytes::from(b)).await.unwrap();
            assert_eq!((info.first_offset, info.last_offset), (0, 1));
        });
    }

    #[test]
    fn oversized_batches_are_rejected_as_too_large() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                max_batch_bytes: 1000,
                ..small_config()
            };
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            let err = log.append(batch(1, 2000, 0), 0).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    AppendError::InvalidBatch {
                        index: 0,
                        error: crate::batch::BatchError::TooLarge { .. },
                        ..
                    }
                ),
                "{err}"
            );
            assert_eq!(log.log_end_offset(), 0);
        });
    }

    /// Truncating to an offset inside a batch that began below the log start restarts the
    /// log there; the high watermark follows the log start up (log_ops fuzz target: it was
    /// left below, breaking `log_start_offset <= high_watermark`).
    #[test]
    fn a_restarting_truncation_keeps_the_high_watermark_at_or_above_the_log_start() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            log.append(batch(10, 100, 0), 0).await.unwrap(); // offsets 0..=9
            log.set_high_watermark(6);
            assert_eq!(log.delete_records_before(5).await.unwrap(), 5);
            log.truncate_to(8).await.unwrap();
            let offsets = |log: &Log| {
                (
                    log.log_start_offset(),
                    log.high_watermark(),
                    log.log_end_offset(),
                )
            };
            assert_eq!(offsets(&log), (8, 8, 8));
            log.close().await.unwrap();
            let (log, _) = Log::open(dir.path().into(), small_config()).await.unwrap();
            assert_eq!(offsets(&log), (8, 8, 8));
        });
    }

    /// `scan_batches` hands over the whole batch for those asked for, also when one
    /// straddles the header walk's 16 KiB read chunks (then read again from its start), and
    /// an empty slice for the others.
    #[test]
    fn scan_batches_hands_over_whole_small_batches_across_chunks() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                segment_bytes: 1 << 20,
                ..LogConfig::default()
            };
            let (log, _) = Log::open(dir.path().into(), config).await.unwrap();
            let mut small = Vec::new();
            // The first small batch (69 bytes) starts at 16 320: its header lies in the
            // walk's first 16 KiB chunk, its end beyond it, so it is read again.
            let first = build_test_batch(2, 16_320 - crate::limits::BATCH_HEADER_BYTES, 1, 1, 1);
            assert_eq!(first.len(), 16_320);
            log.append(Bytes::from(first), 0).await.unwrap();
            let one = build_test_batch(1, 8, 1, 1, 0xaa);
            assert_eq!(one.len(), 69);
            small.push(one.clone());
            log.append(Bytes::from(one), 0).await.unwrap();
            for i in 0..60u32 {
                // Bodies of uneven sizes move the small batches across chunk boundaries.
                log.append(batch(2, 700 + (i as usize * 97) % 2_900, 1), 0)
                    .await
                    .unwrap();
                let one = build_test_batch(1, 8, 1, 1, i as u8);
                small.push(one.clone());
                log.append(Bytes::from(one), 0).await.unwrap();
            }
            let mut wholes = Vec::new();
            let mut others = 0;
            log.scan_batches(
                0,
                |h| h.records_count() == 1,
                |h, whole| {
                    if h.records_count() == 1 {
                        wholes.push(whole.to_vec());
                    } else {
                        assert!(whole.is_empty());
                        others += 1;
                    }
                },
            )
            .await
            .unwrap();
            assert_eq!(others, 61);
            assert_eq!(wholes.len(), small.len());
            for (stored, sent) in wholes.iter().zip(&small) {
                // As sent, but for the base offset and leader epoch stamped on append.
                assert_eq!(stored.len(), sent.len());
                assert_eq!(&stored[8..12], &sent[8..12]);
                assert_eq!(&stored[16..], &sent[16..]);
            }
        });
    }

    fn aborted(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: last_offset + 1,
        }
    }

    fn files(dir: &Path, suffix: &str) -> Vec<i64> {
        let mut out: Vec<i64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(suffix)?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Snapshots and `.txnindex` files follow the log: written only at or below its end,
    /// with the aborted transactions in the segments holding their markers; DeleteRecords
    /// and retention delete them with their segments (keeping the newest snapshot); a
    /// truncation drops the snapshots above the cut and cuts the index; open drops a
    /// snapshot above the recovered end and an index of a segment that is gone.
    #[test]
    fn snapshots_and_txn_indexes_follow_the_log() {
        run(async {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("p");
            let (log, _) = Log::open(dir.clone(), small_config()).await.unwrap();
            for i in 0..40 {
                log.append(batch(1, 400, i), 0).await.unwrap();
            }
            let bases = files(&dir, ".log");
            assert!(bases.len() >= 4, "{bases:?}");
            let end = log.log_end_offset();
            assert_eq!(log.active_segment_base(), *bases.last().unwrap());
            // Above the log end: refused.
            assert!(
                !log.write_producer_snapshot(end + 1, b"x", &[])
                    .await
                    .unwrap()
            );
            // Markers in the first, second and last segments.
            let (b1, b2) = (bases[1], bases[2]);
            let entries = [
                aborted(1, 0, b1 - 1),
                aborted(2, b1, b1 + 1),
                aborted(1, b2, b2),
            ];
            assert!(
                log.write_producer_snapshot(b2 + 1, b"s1", &entries)
                    .await
                    .unwrap()
            );
            assert_eq!(files(&dir, ".txnindex"), vec![0, b1, b2]);
            // Already there: not written twice; a newer one appended to its segment.
            let later = aborted(3, b2 + 1, b2 + 2);
            assert!(
                log.write_producer_snapshot(b2 + 3, b"s2", &[entries[2], later])
                    .await
                    .unwrap()
            );
            let mut out = Vec::new();
            assert!(
                !log.aborted_txns(0, i64::MAX, i64::MAX, &mut out)
                    .await
                    .unwrap()
            );
            assert_eq!(out, [&entries[..], &[later]].concat());
            // Kafka's rules: markers at or after the fetch offset, first offsets below the
            // upper bound, stop at an entry whose last stable offset reaches it.
            out.clear();
            assert!(
                log.aborted_txns(b1, i64::MAX, b1 + 2, &mut out)
                    .await
                    .unwrap()
            );
            assert_eq!(out, vec![entries[1]]);
            assert!(log.write_producer_snapshot(end, b"s3", &[]).await.unwrap());
            assert_eq!(log.producer_snapshots(), vec![b2 + 1, b2 + 3, end]);
            assert_eq!(
                log.read_producer_snapshot(end).await.unwrap(),
                Some(b"s3".to_vec())
            );

            // DeleteRecords past the first segment: its index goes with it.
            log.set_high_watermark(end);
            log.delete_records_before(b1).await.unwrap();
            assert_eq!(files(&dir, ".txnindex"), vec![b1, b2]);
            // Truncation inside the third segment: snapshots above the cut go, its index
            // keeps the entries below the cut.
            log.truncate_to(b2 + 2).await.unwrap();
            assert_eq!(log.producer_snapshots(), vec![b2 + 1]);
            out.clear();
            log.aborted_txns(0, i64::MAX, i64::MAX, &mut out)
                .await
                .unwrap();
            assert_eq!(out, vec![entries[1], entries[2]]);
            // The broker's reload cuts the index back to the snapshot it loads.
            log.truncate_aborted_txns_from(b2).await.unwrap();
            assert_eq!(files(&dir, ".txnindex"), vec![b1]);
            log.close().await.unwrap();

            // A snapshot above the end (as after a crash that cut the tail) and an index of a
            // segment that is gone: open deletes both.
            snapshot::write(&dir, b2 + 50, b"stale").await.unwrap();
            let mut stale = Vec::new();
            txn_index::encode(&aborted(4, 1_000_000, 1_000_001), &mut stale);
            std::fs::write(txn_index::txn_index_path(&dir, 1_000_000), stale).unwrap();
            // A damaged index is reported, never read.
            let index = txn_index::txn_index_path(&dir, b1);
            let mut bytes = std::fs::read(&index).unwrap();
            bytes[5] ^= 1;
            std::fs::write(&index, bytes).unwrap();
            let (log, _) = Log::open(dir.clone(), small_config()).await.unwrap();
            assert_eq!(log.producer_snapshots(), vec![b2 + 1]);
            assert_eq!(files(&dir, ".snapshot"), vec![b2 + 1]);
            assert_eq!(log.txn_index_damaged(), Some(b1));
            assert!(
                log.aborted_txns(0, i64::MAX, i64::MAX, &mut Vec::new())
                    .await
                    .is_err()
            );
            log.truncate_aborted_txns_from(b1).await.unwrap();
            assert_eq!(log.txn_index_damaged(), None);
            assert_eq!(files(&dir, ".txnindex"), Vec::<i64>::new());
            // DeleteRecords past a snapshot: it goes, the newer one stays.
            let end = log.log_end_offset();
            assert!(log.write_producer_snapshot(end, b"s4", &[]).await.unwrap());
            log.set_high_watermark(end);
            log.delete_records_before(end).await.unwrap();
            assert_eq!(log.producer_snapshots(), vec![end]);
            assert_eq!(files(&dir, ".snapshot"), vec![end]);
            log.discard_producer_snapshot(end, "test").unwrap();
            assert_eq!(files(&dir, ".snapshot"), Vec::<i64>::new());
        });
    }
}
