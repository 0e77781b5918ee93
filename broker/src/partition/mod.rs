//! A partition replica on its owning shard: the engine log plus the state Kafka keeps beside
//! it (leader epoch, high watermark, last stable offset, idempotent-producer state) and the
//! wake-up that long-polling fetches wait on.
//!
//! Invariants: appends run one at a time per partition in request order (`FifoLock` ticket
//! taken when the request is dispatched); producer checks and the append happen under that
//! lock; `high_watermark <= log_end_offset`; the data notifier fires after every advance of
//! the high watermark.
//! The replication core (`crate::replica::driver`, present on every partition: a single node
//! is a quorum of one) owns the offsets, the high watermark and the leader epoch. Under the
//! lock a leader append runs the checks in one validation pass per batch, then hands each
//! `engine::batch::ValidatedBatch` to the core (`submit_replicated`), which assigns offsets
//! and appends in order; the answer (acks=1: appended, acks=all:
//! committed on the ISR) is awaited outside the lock. A re-open for a log-level config change
//! keeps the core (`reopen_replicated`).
//! Producer state is loaded at open from the newest producer-state snapshot plus the batches
//! after it (`load_producer_state`), and snapshotted after segment rolls and at shutdown
//! (`snapshot_if_rolled`, `snapshot_locked`) with the aborted transactions below it written
//! to the segments' `.txnindex` files; a snapshot covers exactly the batches below
//! `producers_end`, taken only once they are all in the log.

pub mod control_batch;
pub mod producer_state;
pub mod record_count;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use engine::batch::{BatchHeader, ValidateOptions, ValidatedBatch};
use engine::limits::BATCH_HEADER_BYTES;
use engine::sync::{FifoLock, Notify};

use crate::metadata::TopicConfig;
use crate::replica::driver::{Applied, ProduceAnswer, ReplicaDriver, ReplicaEnv, ReplicaStore};
use control_batch::EndTxnMarker;
use producer_state::{
    BatchMeta, Marker, MarkerCheck, ProducerStateTable, ProducerView, SequenceCheck, last_sequence,
};

/// Why an append was refused, before Kafka codes are chosen at the handler boundary.
#[derive(Debug)]
pub enum AppendFailure {
    Engine(engine::AppendError),
    InvalidProducerEpoch,
    OutOfOrderSequence,
    /// A non-transactional batch while the producer's transaction is ongoing
    /// (INVALID_TXN_STATE).
    InvalidTxnState,
    /// The partition holds `ONGOING_TRANSACTIONS_MAX` ongoing transactions
    /// (CONCURRENT_TRANSACTIONS, retriable).
    TooManyTransactions,
    /// A marker from a coordinator older than the last one seen
    /// (TRANSACTION_COORDINATOR_FENCED).
    CoordinatorFenced,
    InvalidTimestamp,
    InvalidRecord(&'static str),
    /// A batch over the topic's max.message.bytes.
    MessageTooLarge {
        bytes: u64,
        max: u32,
    },
    /// A produce's record set over the topic's segment.bytes (RECORD_LIST_TOO_LARGE).
    RecordListTooLarge {
        bytes: u64,
        max: u64,
    },
    /// The partition instance was replaced (re-opened) or closed.
    Retired,
    /// The replication core refused or failed the batch.
    Replica(replication::ReplicaError),
    /// The batch's compressed records cannot be read (CORRUPT_MESSAGE).
    Corrupt(&'static str),
    /// This replica's log cannot take writes now (a write failed for lack of space or an
    /// I/O error, or the log is broken until restart): KAFKA_STORAGE_ERROR.
    Storage(&'static str),
}

/// What a successful append reports back (Kafka's PartitionProduceResponse fields).
#[derive(Debug, Clone, Copy)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    pub duplicate: bool,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub dir: PathBuf,
    pub log: Rc<engine::Log>,
    /// Published by the replication core's driver (shared with its `ReplicaStore`).
    pub leader_epoch: Rc<Cell<i32>>,
    pub config: RefCell<TopicConfig>,
    /// Fires whenever the high watermark (or log start offset) moves.
    pub data_notify: Rc<Notify>,
    pub append_lock: Rc<FifoLock>,
    producers: RefCell<ProducerStateTable>,
    /// The producer state covers the log below this offset. A follower that just became
    /// leader may have batches in its log whose transactions it has not recorded yet: the
    /// last stable offset never passes this, so it cannot expose their data as committed.
    producers_end: Cell<i64>,
    /// How the producer state was last loaded (open) or rebuilt (truncation).
    producer_state_load: Cell<ProducerStateLoad>,
    /// Held by a snapshot being written and by a rebuild: the rebuild cuts the `.txnindex`
    /// files back to the snapshot it loads, which must not race a newer snapshot's entries.
    snapshot_lock: Rc<FifoLock>,
    /// Replaced by a re-opened instance (config change) or closed: refuse further work.
    /// Shared with the driver's `ReplicaStore`.
    retired: Rc<Cell<bool>>,
    /// The task following the driver's `Applied` events is inside an event.
    following: Cell<bool>,
    /// Fires when `following` drops.
    followed: Rc<Notify>,
    /// The replication core driving this replica. Shared with the instance a re-open
    /// replaces.
    pub replica: Rc<ReplicaDriver>,
}

/// What `Partition::open` needs to attach a replication core.
pub struct ReplicaSetup {
    pub node: i32,
    /// The replication core's id of the partition (`PartitionInfo::partition_id`).
    pub partition_id: u32,
    pub config: replication::ReplicaConfig,
    /// Differs per process start, so request ids of incarnations never collide.
    pub request_id_base: u64,
    pub env: Rc<dyn ReplicaEnv>,
}

/// An append handed to the replication core: the outcome arrives when the core answers
/// (acks=1: once in the log; acks=all: once committed on the ISR).
pub struct PendingAppend {
    outcome: AppendOutcome,
    answers: Vec<ProduceAnswer>,
}

impl PendingAppend {
    pub async fn wait(self) -> Result<AppendOutcome, AppendFailure> {
        for answer in self.answers {
            match answer.recv().await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(AppendFailure::Replica(e)),
                Err(_) => {
                    return Err(AppendFailure::Replica(
                        replication::ReplicaError::NotLeaderOrFollower,
                    ));
                }
            }
        }
        Ok(self.outcome)
    }
}

/// A compressed producer batch must hold the records its header claims, as Kafka's
/// LogValidator checks on the leader by decompressing it (`record_count`). Uncompressed
/// batches were counted in place by `engine::batch::ValidatedBatch::new`. Public for the
/// `request_decode` fuzz target (fuzz/), which runs the leader's batch checks.
pub fn check_compressed_count(
    header: &BatchHeader,
    batch: &[u8],
    index: usize,
    position: usize,
) -> Result<(), AppendFailure> {
    use engine::batch::BatchError;
    use record_count::CountError;
    let payload = &batch[BATCH_HEADER_BYTES..];
    let invalid = |error| {
        AppendFailure::Engine(engine::AppendError::InvalidBatch {
            index: index as u32,
            position: position as u32,
            error,
        })
    };
    match record_count::count_compressed_records(header.compression(), payload) {
        Ok(found) if i64::from(found) == i64::from(header.records_count()) => Ok(()),
        Ok(found) => Err(invalid(BatchError::RecordCountMismatch {
            records_count: header.records_count(),
            found,
        })),
        Err(CountError::BadRecordLength { record, position }) => {
            Err(invalid(BatchError::BadRecordLength {
                record,
                position: u32::try_from(position).unwrap_or(u32::MAX),
            }))
        }
        Err(CountError::TooLarge) => Err(AppendFailure::InvalidRecord(
            "the compressed records inflate beyond 256 MiB",
        )),
        Err(CountError::UnknownCodec(_)) => Err(AppendFailure::Corrupt(
            "unknown compression codec in the batch attributes",
        )),
        Err(CountError::Decompress(_)) => Err(AppendFailure::Corrupt(
            "the compressed records do not decompress",
        )),
    }
}

/// Producer fields of a batch header, if the batch is from an idempotent producer.
#[derive(Debug)]
pub struct ProducerBatch {
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    transactional: bool,
}

impl Partition {
    /// Opens the log, then rebuilds producer state and the leader epoch cache from its batch
    /// headers. The high watermark is the engine's checkpoint; the replication core moves it.
    pub async fn open(
        topic: String,
        index: i32,
        dir: PathBuf,
        leader_epoch: i32,
        config: TopicConfig,
        log_config: engine::LogConfig,
        setup: ReplicaSetup,
    ) -> Result<Rc<Partition>, engine::LogError> {
        let (log, report) = engine::Log::open(dir.clone(), log_config).await?;
        if !report.truncations.is_empty() {
            tracing::warn!(target: "broker::partition", topic, index, truncations = ?report.truncations, "log tail truncated during recovery");
        }
        let log = Rc::new(log);
        let mut epochs = replication::EpochCache::default();
        let log_end_offset = log.log_end_offset();
        let (producers, load) = load_producer_state(&log, &mut epochs).await?;
        if load.snapshot_offset.is_some() || load.batches_scanned > 0 {
            tracing::info!(target: "broker::partition", topic, index, snapshot_offset = ?load.snapshot_offset, batches_scanned = load.batches_scanned, snapshots_discarded = load.snapshots_discarded, log_end_offset, "producer state loaded");
        }
        // A log emptied by DeleteRecords or retention has no header left: the epoch it ended
        // in starts at the log start (Kafka's truncateFromStart keeps it the same way).
        if epochs.latest_epoch().is_none()
            && let Some(epoch) = log.last_leader_epoch()
        {
            epochs.assign(replication::LeaderEpoch(epoch), log.log_start_offset());
        }
        let recovered = replication::RecoveredLog {
            log_end_offset: log.log_end_offset(),
            high_watermark: log.high_watermark(),
            epochs,
        };
        let mut core_config = setup.config;
        core_config.min_insync_replicas = config.min_insync_replicas.max(1) as usize;
        let produce_timeout_ms = core_config.produce_timeout_ms;
        let core = replication::Replica::new(
            replication::NodeId(setup.node),
            replication::PartitionId(setup.partition_id),
            core_config,
            recovered,
            setup.request_id_base,
        );
        let leader_epoch = Rc::new(Cell::new(leader_epoch));
        let data_notify = Rc::new(Notify::new());
        let retired = Rc::new(Cell::new(false));
        let store = Rc::new(ReplicaStore {
            topic: topic.clone(),
            index,
            dir: dir.clone(),
            log: Rc::clone(&log),
            data_notify: Rc::clone(&data_notify),
            leader_epoch: Rc::clone(&leader_epoch),
            retired: Rc::clone(&retired),
        });
        let replica = ReplicaDriver::new(core, setup.env, store, produce_timeout_ms);
        let partition = Rc::new(Partition {
            topic,
            index,
            dir,
            log,
            leader_epoch,
            config: RefCell::new(config),
            data_notify,
            append_lock: FifoLock::new(),
            producers: RefCell::new(producers),
            producers_end: Cell::new(log_end_offset),
            producer_state_load: Cell::new(load),
            snapshot_lock: FifoLock::new(),
            retired,
            following: Cell::new(false),
            followed: Rc::new(Notify::new()),
            replica,
        });
        partition.follow_replica();
        Ok(partition)
    }

    /// The handles the driver writes to for this instance.
    fn store(&self) -> Rc<ReplicaStore> {
        Rc::new(ReplicaStore {
            topic: self.topic.clone(),
            index: self.index,
            dir: self.dir.clone(),
            log: Rc::clone(&self.log),
            data_notify: Rc::clone(&self.data_notify),
            leader_epoch: Rc::clone(&self.leader_epoch),
            retired: Rc::clone(&self.retired),
        })
    }

    /// Starts the task that follows what the driver applied (`Applied` events, in order):
    /// producer state recorded from replicated batches, rebuilt after a truncation, trimmed
    /// after a failed append. It runs until this instance is retired or dropped.
    fn follow_replica(self: &Rc<Self>) {
        let partition: Weak<Partition> = Rc::downgrade(self);
        let applied = self.replica.applied_notify();
        compio::runtime::spawn(async move {
            loop {
                let wake = applied.notified();
                let Some(p) = partition.upgrade() else {
                    return;
                };
                if p.retired.get() {
                    return;
                }
                p.following.set(true);
                p.apply_replica_events().await;
                p.following.set(false);
                p.followed.notify_all();
                drop(p);
                wake.await;
            }
        })
        .detach();
    }

    /// Applies the driver's `Applied` events until none is left.
    async fn apply_replica_events(&self) {
        loop {
            let events = self.replica.take_applied();
            if events.is_empty() {
                return;
            }
            for event in events {
                match event {
                    Applied::Replicated(parts) => {
                        self.record_replicated_producers(&parts);
                        self.replica.follower_write_applied();
                        // The last stable offset may have been held at `producers_end`.
                        self.data_notify.notify_all();
                    }
                    Applied::Truncated => {
                        if let Err(e) = self.rebuild_producers().await {
                            tracing::error!(target: "broker::partition", topic = %self.topic, partition = self.index, error = %e, "producer state rebuild after truncation failed");
                        }
                        self.replica.follower_write_applied();
                    }
                    Applied::WriteFailed { log_end_offset } => {
                        let rebuild = self
                            .producers
                            .borrow()
                            .has_transactions_from(log_end_offset);
                        if !rebuild {
                            self.forget_producer_batches_from(log_end_offset);
                        } else if let Err(e) = self.rebuild_producers().await {
                            tracing::error!(target: "broker::partition", topic = %self.topic, partition = self.index, error = %e, "producer state rebuild after a failed append failed");
                        }
                    }
                }
            }
        }
    }

    /// Follower: records idempotent-producer state from replicated batches (each part one
    /// or more whole batches), so this replica dedupes retries if it becomes leader.
    pub fn record_replicated_producers(&self, parts: &[Bytes]) {
        let mut producers = self.producers.borrow_mut();
        let high_watermark = self.log.high_watermark();
        for batches in parts {
            let mut pos = 0usize;
            while let Some(h) = batches.get(pos..).and_then(BatchHeader::parse) {
                let total = h.total_bytes() as usize;
                let whole = batches.get(pos..pos + total).unwrap_or_default();
                record_header(&mut producers, h, whole, high_watermark);
                self.producers_cover(h.last_offset() + 1);
                if total == 0 {
                    break;
                }
                pos += total;
            }
        }
    }

    /// `self` re-opened with a new log config, keeping its replication core
    /// (and the producer state, which may cover batches still queued for the engine). Call
    /// with `append_lock` held and `self` retired; the caller installs the result.
    pub async fn reopen_replicated(
        &self,
        config: TopicConfig,
        log_config: engine::LogConfig,
    ) -> Result<Rc<Partition>, engine::LogError> {
        let driver = Rc::clone(&self.replica);
        driver.pause().await;
        // The producer state moves to the new instance: not while an event is being applied
        // to it (the new instance's task takes the events from here on).
        while self.following.get() {
            let followed = self.followed.notified();
            if !self.following.get() {
                break;
            }
            followed.await;
        }
        if let Err(e) = self.log.close().await {
            tracing::warn!(target: "broker::partition", topic = %self.topic, partition = self.index, error = %e, "close before re-open failed");
        }
        let opened = engine::Log::open(self.dir.clone(), log_config).await;
        let log = match opened {
            Ok((log, _)) => Rc::new(log),
            Err(e) => {
                // The replica stays paused: its log is gone until the next start.
                tracing::error!(target: "broker::partition", topic = %self.topic, partition = self.index, error = %e, "re-open failed");
                return Err(e);
            }
        };
        let partition = Rc::new(Partition {
            topic: self.topic.clone(),
            index: self.index,
            dir: self.dir.clone(),
            log,
            leader_epoch: Rc::clone(&self.leader_epoch),
            config: RefCell::new(config),
            data_notify: Rc::new(Notify::new()),
            append_lock: FifoLock::new(),
            producers: RefCell::new(std::mem::take(&mut *self.producers.borrow_mut())),
            producers_end: Cell::new(self.producers_end.get()),
            producer_state_load: Cell::new(self.producer_state_load.get()),
            snapshot_lock: FifoLock::new(),
            retired: Rc::new(Cell::new(false)),
            following: Cell::new(false),
            followed: Rc::new(Notify::new()),
            replica: Rc::clone(&driver),
        });
        driver.resume(partition.store());
        partition.follow_replica();
        Ok(partition)
    }

    /// Waits until the producer state covers every batch the core has put in
    /// the log. A follower records the producer state of fetched batches (and rebuilds it
    /// after a truncation) once the engine applied them, which may be after it became
    /// leader; Kafka's follower updates it with the log, so its first produce as leader
    /// already dedupes retries of batches written by the previous leader. Call with
    /// `append_lock` held, right before `submit_replicated`. Returns early once retired or
    /// not leading.
    pub async fn wait_producer_state(&self) {
        let driver = &self.replica;
        loop {
            let applied = driver.follower_writes_applied();
            let retired = self.data_notify.notified();
            // Not leading: `submit_replicated` refuses at once, so nothing to wait for.
            if !driver.follower_writes_pending() || !driver.is_leader() || self.retired.get() {
                return;
            }
            futures_util::future::select(applied, retired).await;
        }
    }

    /// After a failed append: producer state of batches at or above `offset` (never in the
    /// log) is forgotten.
    pub fn forget_producer_batches_from(&self, offset: i64) {
        self.producers.borrow_mut().forget_from(offset);
        self.producers_end.set(self.producers_end.get().min(offset));
    }

    /// The producer state now covers the log below `end`.
    fn producers_cover(&self, end: i64) {
        if end > self.producers_end.get() {
            self.producers_end.set(end);
        }
    }

    /// After a truncation: producer state rebuilt from what is left (the newest snapshot at
    /// or below the new end, then the batches after it; the engine deleted the snapshots
    /// above the cut).
    pub async fn rebuild_producers(&self) -> Result<(), engine::LogError> {
        let _io = self.snapshot_lock.lock().await;
        let log_end_offset = self.log.log_end_offset();
        let mut epochs = replication::EpochCache::default();
        let (producers, load) = load_producer_state(&self.log, &mut epochs).await?;
        *self.producers.borrow_mut() = producers;
        self.producers_end.set(log_end_offset);
        self.producer_state_load.set(load);
        Ok(())
    }

    /// How the producer state was last loaded or rebuilt (snapshot used, batches scanned).
    pub fn producer_state_load(&self) -> ProducerStateLoad {
        self.producer_state_load.get()
    }

    /// Housekeeping: writes a producer-state snapshot if a segment rolled since the newest
    /// one (Kafka snapshots at every roll), or `ABORTED_UNWRITTEN_SNAPSHOT` aborted
    /// transactions wait for their `.txnindex` files. Returns the snapshot's offset if one
    /// was written.
    pub async fn snapshot_if_rolled(&self) -> Result<Option<i64>, engine::LogError> {
        let log = &self.log;
        let since = log
            .newest_producer_snapshot()
            .unwrap_or_else(|| log.log_start_offset());
        let rolled = since < log.active_segment_base();
        let unwritten = self.producers.borrow().unflushed_aborted_count();
        if self.retired.get() || !(rolled || unwritten >= ABORTED_UNWRITTEN_SNAPSHOT) {
            return Ok(None);
        }
        let _ticket = self.append_lock.lock().await;
        self.snapshot_locked().await
    }

    /// Writes a producer-state snapshot at the offset the state covers, once every batch below
    /// it is in the log (a leader's state runs ahead of the engine by the appends in flight;
    /// waits up to `SNAPSHOT_WAIT_MS` for them, else skips this time). Call with
    /// `append_lock` held: no batch is recorded while the state is copied. Clean shutdown
    /// calls it before closing the log, so the next open scans nothing.
    pub async fn snapshot_locked(&self) -> Result<Option<i64>, engine::LogError> {
        let deadline = std::time::Instant::now() + Duration::from_millis(SNAPSHOT_WAIT_MS);
        loop {
            let landed = self.data_notify.notified();
            if self.retired.get() {
                return Ok(None);
            }
            if self.producers_end.get() <= self.log.log_end_offset() && !self.following.get() {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let timer = Box::pin(compio::time::sleep(left));
            futures_util::future::select(landed, timer).await;
        }
        // A rebuild (truncation) and a snapshot never interleave.
        let _io = self.snapshot_lock.lock().await;
        if self.retired.get()
            || self.following.get()
            || self.producers_end.get() > self.log.log_end_offset()
        {
            return Ok(None);
        }
        let offset = self.producers_end.get();
        if self.log.newest_producer_snapshot() == Some(offset) {
            return Ok(None);
        }
        let epochs: Vec<(i32, i64)> = self
            .replica
            .epoch_entries()
            .into_iter()
            .filter(|&(_, start)| start < offset)
            .collect();
        let mut payload = Vec::new();
        let aborted = {
            let producers = self.producers.borrow();
            producers.encode_snapshot(&epochs, &mut payload);
            producers.unflushed_aborted(offset)
        };
        let written = self
            .log
            .write_producer_snapshot(offset, &payload, &aborted)
            .await?;
        if written {
            self.producers.borrow_mut().aborted_flushed_below(offset);
        }
        Ok(written.then_some(offset))
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
    }

    /// Reads the log from its start to its end as of now, about `step_bytes` at a time, and
    /// hands `feed` each step's whole batches in order; stops early when `feed` answers
    /// `Ok(false)`. What the coordinators replay their partitions with when they take them
    /// over (`group::backend`, `txn::backend`).
    pub async fn replay_batches(
        &self,
        step_bytes: u32,
        mut feed: impl FnMut(Bytes) -> Result<bool, String>,
    ) -> Result<(), String> {
        let mut offset = self.log_start_offset();
        let end = self.log.log_end_offset();
        while offset < end {
            let read = self
                .log
                .read(offset, end, step_bytes, true)
                .await
                .map_err(|e| e.to_string())?;
            if read.slices.is_empty() {
                break;
            }
            let bytes = self
                .log
                .read_bytes(&read.slices)
                .await
                .map_err(|e| e.to_string())?;
            let next = next_offset_after(&bytes).ok_or("batch without a header")?;
            if next <= offset {
                return Err(format!("replay made no progress at offset {offset}"));
            }
            offset = next;
            if !feed(bytes)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Kafka's last stable offset: the high watermark, held back to the first offset of the
    /// earliest transaction that is ongoing or whose marker is not yet replicated; never
    /// below the log start offset.
    /// The log cleaner keeps this batch: producer state needs it (`is_last_write`).
    pub fn retains_for_producer_state(&self, header: &BatchHeader) -> bool {
        self.producers.borrow().is_last_write(header)
    }

    pub fn last_stable_offset(&self) -> i64 {
        self.last_stable_offset_at(self.log.high_watermark())
    }

    /// The last stable offset for a high watermark `high_watermark` (a fetch's view of it).
    pub fn last_stable_offset_at(&self, high_watermark: i64) -> i64 {
        let first_unstable = self
            .producers
            .borrow_mut()
            .first_unstable_offset(high_watermark);
        first_unstable
            .map_or(high_watermark, |f| f.min(high_watermark))
            .min(self.producers_end.get())
            .max(self.log_start_offset())
    }

    /// (producer id, first offset) of the aborted transactions overlapping
    /// `[fetch_offset, upper_bound_offset)`, for a read_committed fetch (Kafka's
    /// `collectAbortedTransactions`): from memory when the fetch offset is at or above the
    /// cache's floor (no file read), else first from the segments' `.txnindex` files below
    /// the floor (only files whose summary overlaps), then from memory.
    pub async fn aborted_transactions(
        &self,
        fetch_offset: i64,
        upper_bound_offset: i64,
    ) -> Result<Vec<(i64, i64)>, engine::LogError> {
        let mut out = Vec::new();
        let mut from = fetch_offset;
        loop {
            let floor = self.producers.borrow().aborted_floor();
            if from >= floor {
                self.producers
                    .borrow()
                    .aborted_between(from, upper_bound_offset, &mut out);
                return Ok(out);
            }
            // The cache may drop entries while the files are read: then read up to its new
            // floor next time round.
            let mut files = Vec::new();
            let stopped = self
                .log
                .aborted_txns(from, floor, upper_bound_offset, &mut files)
                .await?;
            out.extend(files.iter().map(|a| (a.producer_id, a.first_offset)));
            if stopped {
                return Ok(out);
            }
            from = floor;
        }
    }

    /// The producers with state on this partition (DescribeProducers).
    pub fn producer_views(&self) -> Vec<ProducerView> {
        self.producers.borrow().producers().collect()
    }

    pub fn ongoing_transactions(&self) -> usize {
        self.producers.borrow().ongoing_transactions()
    }

    /// See `ProducerStateTable::in_transaction`.
    /// Notes the coordinator's `txn_sequence` of `producer_id`'s ongoing transaction here
    /// (see `ProducerStateTable::note_txn_sequence`).
    pub fn note_txn_sequence(&self, producer_id: i64, sequence: u64) {
        self.producers
            .borrow_mut()
            .note_txn_sequence(producer_id, sequence);
    }

    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers.borrow().in_transaction(producer_id, epoch)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn producer_count(&self) -> usize {
        self.producers.borrow().len()
    }

    /// Leader: the append checks (segment.bytes, then one validation pass per batch:
    /// max.message.bytes, framing, CRC32C, counts, timestamps or the LogAppendTime stamp;
    /// then producer sequences), then each `ValidatedBatch` goes to the replication core,
    /// which assigns its offsets (the only place they are assigned) and has the engine
    /// append it without a second CRC. Must run with `append_lock`
    /// held; the returned wait need not (the core orders appends).
    pub fn submit_replicated(
        &self,
        records: Bytes,
        now_ms: i64,
        acks: i16,
    ) -> Result<PendingAppend, AppendFailure> {
        use replication::ReplicaError;
        let driver = &self.replica;
        self.check_writable(acks)?;
        // The topic's own segment.bytes (Kafka's UnifiedLog.append: a record set larger than
        // a segment is refused with RecordBatchTooLargeException, RECORD_LIST_TOO_LARGE).
        let segment_bytes = self.config.borrow().segment_bytes;
        if records.len() as u64 > segment_bytes {
            return Err(AppendFailure::RecordListTooLarge {
                bytes: records.len() as u64,
                max: segment_bytes,
            });
        }
        let producer = producer_batch(&records)?;
        let log_append_time = self.config.borrow().log_append_time;
        // The one validation pass; the engine appends its result without checking again.
        let batches = self.validate_batches(&records, now_ms)?;
        if producer.is_some() && driver.follower_writes_pending() {
            // Just became leader: batches it fetched are not in the producer state yet, so a
            // retry of one would be appended again. The produce path waits for them first
            // (`wait_producer_state`); a caller that did not is refused, not guessed at.
            return Err(AppendFailure::Replica(ReplicaError::NotLeaderOrFollower));
        }
        if let Some(p) = &producer {
            let check = self.producers.borrow().check(
                p.producer_id,
                p.epoch,
                p.first_seq,
                p.last_seq,
                p.transactional,
            );
            match check {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(b) => {
                    // acks=all: answered once the original is committed, as its own answer.
                    let answers = if acks == -1 {
                        let min_insync_replicas =
                            self.config.borrow().min_insync_replicas.max(1) as usize;
                        vec![driver.wait_committed(b.last_offset, min_insync_replicas)]
                    } else {
                        Vec::new()
                    };
                    return Ok(PendingAppend {
                        outcome: AppendOutcome {
                            base_offset: b.first_offset,
                            last_offset: b.last_offset,
                            log_append_time_ms: if log_append_time { b.max_timestamp } else { -1 },
                            log_start_offset: self.log_start_offset(),
                            duplicate: true,
                        },
                        answers,
                    });
                }
                SequenceCheck::InvalidProducerEpoch { .. } => {
                    return Err(AppendFailure::InvalidProducerEpoch);
                }
                SequenceCheck::OutOfOrderSequence { .. } => {
                    return Err(AppendFailure::OutOfOrderSequence);
                }
                SequenceCheck::InvalidTxnState => return Err(AppendFailure::InvalidTxnState),
                SequenceCheck::TooManyTransactions => {
                    return Err(AppendFailure::TooManyTransactions);
                }
            }
        }
        // Stored max_timestamp of the first batch (the LogAppendTime stamp's, if any): an
        // idempotent produce carries exactly one batch.
        let max_timestamp = batches.first().map_or(-1, ValidatedBatch::max_timestamp);
        let mut answers = Vec::with_capacity(batches.len());
        let mut first_offset = None;
        let mut last_offset = -1;
        for batch in batches {
            let count = batch.records_count();
            let (base, answer) = driver.produce(acks == -1, batch);
            answers.push(answer);
            match base {
                Some(base) => {
                    first_offset.get_or_insert(base);
                    last_offset = base + i64::from(count) - 1;
                }
                // Refused (the answer says why); nothing after it may be appended.
                None => break,
            }
        }
        if first_offset.is_some() {
            self.producers_cover(last_offset + 1);
        }
        if let (Some(p), Some(first_offset)) = (producer, first_offset) {
            self.producers.borrow_mut().record(
                p.producer_id,
                p.epoch,
                BatchMeta {
                    first_seq: p.first_seq,
                    last_seq: p.last_seq,
                    first_offset,
                    last_offset,
                    max_timestamp,
                },
                p.transactional,
            );
        }
        Ok(PendingAppend {
            outcome: AppendOutcome {
                base_offset: first_offset.unwrap_or(-1),
                last_offset,
                log_append_time_ms: if log_append_time { now_ms } else { -1 },
                log_start_offset: self.log_start_offset(),
                duplicate: false,
            },
            answers,
        })
    }

    /// Leader: appends the COMMIT or ABORT marker of `producer_id`'s transaction (Kafka's
    /// WriteTxnMarkers append, origin COORDINATOR, acks=all) after the epoch checks of
    /// Kafka's `appendEndTxnMarker`: a producer epoch older than the producer's is
    /// INVALID_PRODUCER_EPOCH, a coordinator epoch older than the last seen
    /// TRANSACTION_COORDINATOR_FENCED; a transaction version 2 marker (`strict`) must carry
    /// an epoch above the producer's (KIP-1228); a marker naming a transaction `sequence`
    /// other than the ongoing one's (`txn::TXN_SEQUENCE_TAG`) is a late copy and gets
    /// INVALID_TXN_STATE. The marker ends the transaction in the producer state at once; the
    /// last stable offset passes it once the high watermark does. Must run with
    /// `append_lock` held; the returned wait need not.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        strict: bool,
        sequence: Option<u64>,
        now_ms: i64,
    ) -> Result<PendingAppend, AppendFailure> {
        use replication::ReplicaError;
        let driver = &self.replica;
        self.check_writable(-1)?;
        if driver.follower_writes_pending() {
            // Producer state does not cover the fetched batches yet (see `submit_replicated`).
            return Err(AppendFailure::Replica(ReplicaError::NotLeaderOrFollower));
        }
        let check = self.producers.borrow().check_marker_strict(
            producer_id,
            producer_epoch,
            marker.coordinator_epoch,
            strict,
            sequence,
        );
        match check {
            MarkerCheck::Append => {}
            MarkerCheck::StaleTransaction { ongoing, marker } => {
                tracing::info!(target: "broker::partition", topic = %self.topic, partition = self.index, producer_id, ongoing, marker, "marker of an earlier transaction refused (a late copy)");
                return Err(AppendFailure::InvalidTxnState);
            }
            MarkerCheck::InvalidProducerEpoch { current } => {
                tracing::info!(target: "broker::partition", topic = %self.topic, partition = self.index, producer_id, producer_epoch, current, "marker with an old producer epoch refused");
                return Err(AppendFailure::InvalidProducerEpoch);
            }
            MarkerCheck::CoordinatorFenced { current } => {
                tracing::info!(target: "broker::partition", topic = %self.topic, partition = self.index, producer_id, coordinator_epoch = marker.coordinator_epoch, current, "marker from a fenced coordinator refused");
                return Err(AppendFailure::CoordinatorFenced);
            }
        }
        let bytes = Bytes::from(control_batch::build_marker_batch(
            producer_id,
            producer_epoch,
            marker,
            now_ms,
        ));
        let options = ValidateOptions {
            max_batch_bytes: self.log.config().max_batch_bytes,
            strict_count: true,
            log_append_time_ms: None,
        };
        let batch = ValidatedBatch::new(&bytes, 0, options).map_err(|error| {
            AppendFailure::Engine(engine::AppendError::InvalidBatch {
                index: 0,
                position: 0,
                error,
            })
        })?;
        let (base, answer) = driver.produce(true, batch);
        if let Some(offset) = base {
            self.producers_cover(offset + 1);
            let mut producers = self.producers.borrow_mut();
            producers.note_high_watermark(self.log.high_watermark());
            producers.record_marker(Marker {
                producer_id,
                producer_epoch,
                coordinator_epoch: marker.coordinator_epoch,
                commit: marker.commit,
                offset,
                timestamp: now_ms,
            });
        }
        Ok(PendingAppend {
            outcome: AppendOutcome {
                base_offset: base.unwrap_or(-1),
                last_offset: base.unwrap_or(-1),
                log_append_time_ms: -1,
                log_start_offset: self.log_start_offset(),
                duplicate: false,
            },
            answers: vec![answer],
        })
    }

    /// The leader checks every append runs first, in Kafka's order
    /// (Partition.appendRecordsToLeader): leadership, a writable log, then acks=all against
    /// min.insync.replicas.
    fn check_writable(&self, acks: i16) -> Result<(), AppendFailure> {
        use replication::ReplicaError;
        let driver = &self.replica;
        if self.retired.get() {
            return Err(AppendFailure::Retired);
        }
        if !driver.is_leader() {
            return Err(AppendFailure::Replica(ReplicaError::NotLeaderOrFollower));
        }
        // Still the leader (Metadata names it), so NOT_LEADER_OR_FOLLOWER would send the
        // client back here until its delivery timeout; Kafka answers a log it cannot write
        // with KAFKA_STORAGE_ERROR.
        if driver.failed() {
            return Err(AppendFailure::Storage(
                "the log of this partition failed on this broker; it takes writes again after a restart",
            ));
        }
        match driver.write_refusal() {
            Some(crate::storage::WriteRefusal::NoSpace { .. }) => {
                return Err(AppendFailure::Storage(
                    "the disk of this partition is full; writes resume once space is freed",
                ));
            }
            Some(crate::storage::WriteRefusal::Io) => {
                return Err(AppendFailure::Storage(
                    "a write to this partition's log failed; writes are tried again shortly",
                ));
            }
            None => {}
        }
        // Kafka's order (Partition.appendRecordsToLeader): leadership, then acks=all against
        // min.insync.replicas, and only then the batch and producer checks. Checking sequences
        // first answered a batch pipelined behind one refused for NOT_ENOUGH_REPLICAS with
        // OUT_OF_ORDER_SEQUENCE_NUMBER; librdkafka takes that as a gap, bumps its producer
        // epoch and re-sends every unacknowledged batch under new sequences, so a batch
        // already appended (answered NOT_ENOUGH_REPLICAS_AFTER_APPEND) was written twice. It
        // also kept a retry of such a batch from being acknowledged while the ISR is short.
        if acks == -1 {
            let min_insync_replicas = self.config.borrow().min_insync_replicas.max(1) as usize;
            driver
                .check_in_sync(min_insync_replicas)
                .map_err(AppendFailure::Replica)?;
        }
        Ok(())
    }

    /// The one validation pass over a produce's batches, in Kafka's order per batch: the
    /// topic's max.message.bytes (live, even before the engine re-opens with it), then
    /// framing, magic, CRC32C and record count ([`ValidatedBatch::new`], which also stamps a
    /// LogAppendTime topic's batches), then message.timestamp.before/after.max.ms
    /// (CreateTime) and the records of a compressed batch.
    fn validate_batches(
        &self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<Vec<ValidatedBatch>, AppendFailure> {
        if records.is_empty() {
            return Err(AppendFailure::Engine(engine::AppendError::Empty));
        }
        let (before, after, max, log_append_time, compacted) = {
            let c = self.config.borrow();
            (
                c.timestamp_before_max_ms,
                c.timestamp_after_max_ms,
                c.max_message_bytes,
                c.log_append_time,
                c.cleanup_policy.compacts(),
            )
        };
        let options = ValidateOptions {
            max_batch_bytes: self.log.config().max_batch_bytes,
            strict_count: true,
            log_append_time_ms: log_append_time.then_some(now_ms),
        };
        let bounded = !log_append_time && (before != i64::MAX || after != i64::MAX);
        let mut batches = Vec::with_capacity(1);
        let mut pos = 0usize;
        while pos < records.len() {
            if let Some(h) = BatchHeader::parse(&records[pos..])
                && h.total_bytes() > u64::from(max)
            {
                return Err(AppendFailure::MessageTooLarge {
                    bytes: h.total_bytes(),
                    max,
                });
            }
            let batch = ValidatedBatch::new(records, pos, options).map_err(|error| {
                AppendFailure::Engine(engine::AppendError::InvalidBatch {
                    index: batches.len() as u32,
                    position: pos as u32,
                    error,
                })
            })?;
            let h = batch.header();
            if h.is_control() {
                return Err(AppendFailure::InvalidRecord(CONTROL_BATCH_REFUSAL));
            }
            for ts in [h.base_timestamp(), h.max_timestamp()] {
                if bounded
                    && ts >= 0
                    && (now_ms.saturating_sub(ts) > before || ts.saturating_sub(now_ms) > after)
                {
                    return Err(AppendFailure::InvalidTimestamp);
                }
            }
            if h.compression() != 0 {
                check_compressed_count(h, batch.bytes(), batches.len(), pos)?;
            }
            if compacted && engine::compaction::has_keyless_record(batch.bytes()) {
                return Err(AppendFailure::InvalidRecord(KEYLESS_RECORD_REFUSAL));
            }
            pos += batch.len();
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Marks this instance as replaced or closed.
    pub fn retire(&self) {
        self.retired.set(true);
        self.data_notify.notify_all();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.get()
    }

    /// Called after retention or DeleteRecords moved the log start offset.
    pub fn after_log_start_moved(&self) {
        self.producers
            .borrow_mut()
            .trim_before(self.log_start_offset());
        self.data_notify.notify_all();
    }
}

/// Kafka's LogValidator message for a record without a key on a compacted topic.
pub const KEYLESS_RECORD_REFUSAL: &str = "Compacted topic cannot accept message without key";

/// Aborted transactions waiting for their `.txnindex` files that make housekeeping take a
/// snapshot without a roll (which writes them), so memory holds few beyond the cache.
pub const ABORTED_UNWRITTEN_SNAPSHOT: usize = 10_000;

const _: () = assert!(
    ABORTED_UNWRITTEN_SNAPSHOT < producer_state::ABORTED_TRANSACTIONS_CACHED,
    "written well before the cache bound"
);

/// How long a snapshot waits for a leader's in-flight appends to reach the log before it is
/// left to the next housekeeping tick.
pub const SNAPSHOT_WAIT_MS: u64 = 1_000;

/// How the producer state was loaded from disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStateLoad {
    /// The snapshot it started from; `None`: no usable snapshot, the whole log was scanned.
    pub snapshot_offset: Option<i64>,
    /// Batches read after the snapshot (or from the log start).
    pub batches_scanned: u64,
    /// Snapshots found damaged or unreadable (deleted, with a warning each).
    pub snapshots_discarded: u32,
}

/// Kafka's `loadProducerState`: the newest usable snapshot at or below the log end (the
/// engine keeps none above it), then every batch from its offset; with none usable, every
/// batch from the log start. A damaged snapshot is deleted and the next older one tried;
/// open never fails for a snapshot. Also fills `epochs` (the leader epoch cache).
async fn load_producer_state(
    log: &engine::Log,
    epochs: &mut replication::EpochCache,
) -> Result<(ProducerStateTable, ProducerStateLoad), engine::LogError> {
    let mut load = ProducerStateLoad::default();
    let mut found = None;
    let log_start_offset = log.log_start_offset();
    // A snapshot above a damaged `.txnindex` would miss that segment's aborted transactions.
    let damaged = log.txn_index_damaged().unwrap_or(i64::MAX);
    for offset in log.producer_snapshots().into_iter().rev() {
        if offset > damaged {
            continue;
        }
        let Some(payload) = log.read_producer_snapshot(offset).await? else {
            load.snapshots_discarded += 1;
            continue;
        };
        match ProducerStateTable::decode_snapshot(offset, &payload) {
            Ok(state) => {
                found = Some((offset, state));
                break;
            }
            Err(reason) => {
                log.discard_producer_snapshot(offset, reason)?;
                load.snapshots_discarded += 1;
            }
        }
    }
    let (from, mut producers) = match found {
        Some((offset, state)) => {
            // Epochs that ended below the log start go, the first kept starts there
            // (Kafka's `truncateFromStart` on retention).
            let entries = &state.epochs;
            for (i, &(epoch, start)) in entries.iter().enumerate() {
                if entries
                    .get(i + 1)
                    .is_some_and(|&(_, next)| next <= log_start_offset)
                {
                    continue;
                }
                epochs.assign(replication::LeaderEpoch(epoch), start.max(log_start_offset));
            }
            load.snapshot_offset = Some(offset);
            (offset, state.table)
        }
        None => (log_start_offset, ProducerStateTable::default()),
    };
    // What the files hold from here on, the scan re-derives (Kafka recovers a segment's
    // index with the segment): a later snapshot's entries, a damaged file, a torn tail.
    log.truncate_aborted_txns_from(from).await?;
    producers.set_aborted_flushed(from);
    let high_watermark = log.high_watermark();
    let mut scanned = 0u64;
    log.scan_batches(
        from.max(log_start_offset),
        BatchHeader::is_control,
        |h, whole| {
            // A batch starting below the snapshot's offset is in it.
            if h.base_offset() < from {
                return;
            }
            scanned += 1;
            epochs.assign(replication::LeaderEpoch(h.leader_epoch()), h.base_offset());
            record_header(&mut producers, h, whole, high_watermark);
        },
    )
    .await?;
    load.batches_scanned = scanned;
    // A snapshot below the log start (retention since) still names what retention removed.
    producers.trim_before(log_start_offset);
    producers.note_high_watermark(high_watermark);
    Ok((producers, load))
}

/// Records the producer state of one stored or replicated batch (producer batches only):
/// a data batch by its header, a control batch by its marker (`whole` is the whole batch
/// for control batches). As Kafka's replication and recovery origins, no checks: what is in
/// the log happened. `high_watermark` lets completed transactions below it go.
fn record_header(
    producers: &mut ProducerStateTable,
    h: &BatchHeader,
    whole: &[u8],
    high_watermark: i64,
) {
    if h.producer_id() < 0 {
        return;
    }
    if h.is_control() {
        // Another control type, or a control batch emptied by compaction: nothing to end.
        if let Some(marker) = control_batch::read_marker(whole) {
            producers.note_high_watermark(high_watermark);
            producers.record_marker(Marker {
                producer_id: h.producer_id(),
                producer_epoch: h.producer_epoch(),
                coordinator_epoch: marker.coordinator_epoch,
                commit: marker.commit,
                offset: h.base_offset(),
                timestamp: h.max_timestamp(),
            });
        }
        return;
    }
    producers.record(
        h.producer_id(),
        h.producer_epoch(),
        BatchMeta {
            first_seq: h.base_sequence(),
            last_seq: last_sequence(h.base_sequence(), h.last_offset_delta()),
            first_offset: h.base_offset(),
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp(),
        },
        h.is_transactional(),
    );
}

/// Reads the producer fields of the request's batches. Idempotent batches must come one per
/// partition per request, as in Kafka.
/// Public for the `request_decode` fuzz target (fuzz/): it runs on unvalidated bytes.
pub fn producer_batch(records: &Bytes) -> Result<Option<ProducerBatch>, AppendFailure> {
    let Some(h) = BatchHeader::parse(records) else {
        // Too short for a header: the engine rejects it with the precise reason.
        return Ok(None);
    };
    if h.is_control() {
        return Err(AppendFailure::InvalidRecord(CONTROL_BATCH_REFUSAL));
    }
    if h.producer_id() < 0 {
        return Ok(None);
    }
    let total = h.total_bytes() as usize;
    if total >= BATCH_HEADER_BYTES && records.len() > total {
        return Err(AppendFailure::InvalidRecord(
            "an idempotent produce must carry exactly one batch",
        ));
    }
    Ok(Some(ProducerBatch {
        producer_id: h.producer_id(),
        epoch: h.producer_epoch(),
        first_seq: h.base_sequence(),
        last_seq: last_sequence(h.base_sequence(), h.last_offset_delta()),
        transactional: h.is_transactional(),
    }))
}

/// Kafka's LogValidator: "Invalid attempt to append a control batch from client".
const CONTROL_BATCH_REFUSAL: &str =
    "control batches are written by the transaction coordinator only";

/// The offset after the last batch in `bytes` (whole batches as the engine returns them).
fn next_offset_after(bytes: &[u8]) -> Option<i64> {
    let mut pos = 0usize;
    let mut next = None;
    while let Some(header) = bytes.get(pos..).and_then(BatchHeader::parse) {
        let total = usize::try_from(header.total_bytes())
            .ok()
            .filter(|t| *t > 0)?;
        next = Some(header.last_offset() + 1);
        pos += total;
    }
    next
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;
    use engine::batch::{
        BatchError, batch_crc, batch_crc_passes, build_test_batch, validate_batch,
    };

    use super::{AppendFailure, Partition};
    use crate::replica::driver::test_support::{TestEnv, apply, open_configured, state};

    fn run(f: impl std::future::Future<Output = ()>) {
        compio::runtime::Runtime::new().unwrap().block_on(f);
    }

    /// A single-replica leader of `t`-0 with topic config `overrides`.
    async fn leader(dir: &std::path::Path, overrides: &[(&str, &str)]) -> Rc<Partition> {
        let p = open_configured(dir, 0, Rc::new(TestEnv::default()), overrides).await;
        apply(&p, state(0, &[0], &[0], 1));
        p
    }

    fn batch(records: i32, payload: usize, ts: i64) -> Vec<u8> {
        build_test_batch(records, payload, ts, ts, 0x5a)
    }

    async fn stored(p: &Partition, from: i64) -> Vec<u8> {
        let read = p.log.read(from, i64::MAX, u32::MAX, true).await.unwrap();
        let mut out = Vec::new();
        for slice in read.slices {
            let file = std::fs::read(slice.file.path()).unwrap();
            let at = slice.position as usize;
            out.extend_from_slice(&file[at..at + slice.len as usize]);
        }
        out
    }

    #[test]
    fn a_leader_append_runs_one_crc_pass_per_batch() {
        for timestamp_type in ["CreateTime", "LogAppendTime"] {
            run(async {
                let dir = tempfile::tempdir().unwrap();
                let p = leader(dir.path(), &[("message.timestamp.type", timestamp_type)]).await;
                for batches in [1, 3] {
                    let records: Vec<u8> = (0..batches).flat_map(|_| batch(4, 1024, 1)).collect();
                    let before = batch_crc_passes();
                    let pending = p.submit_replicated(Bytes::from(records), 5, 1).unwrap();
                    pending.wait().await.unwrap();
                    p.log
                        .wait_durable(p.log.log_end_offset() - 1)
                        .await
                        .unwrap();
                    assert_eq!(
                        batch_crc_passes() - before,
                        batches,
                        "{timestamp_type}: one CRC32C pass per produced batch"
                    );
                }
                assert_eq!(p.log.log_end_offset(), 16);
            });
        }
    }

    #[test]
    fn a_bad_crc_is_refused_by_the_one_validation_pass() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let p = leader(dir.path(), &[]).await;
            let mut corrupt = batch(2, 100, 1);
            corrupt[90] ^= 0x40;
            let before = batch_crc_passes();
            let refused = p.submit_replicated(Bytes::from(corrupt), 5, 1);
            assert!(
                matches!(
                    refused,
                    Err(AppendFailure::Engine(engine::AppendError::InvalidBatch {
                        index: 0,
                        error: BatchError::BadCrc { .. },
                        ..
                    }))
                ),
                "{:?}",
                refused.err()
            );
            assert_eq!(batch_crc_passes() - before, 1);
            assert_eq!(p.log.log_end_offset(), 0);
        });
    }

    #[test]
    fn log_append_time_topics_store_the_stamp_with_a_valid_crc() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let p = leader(dir.path(), &[("message.timestamp.type", "LogAppendTime")]).await;
            let sent = Bytes::from(batch(3, 200, 1_000));
            let outcome = p
                .submit_replicated(sent.clone(), 123_456, 1)
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert_eq!(
                (outcome.base_offset, outcome.log_append_time_ms),
                (0, 123_456)
            );
            let stored = stored(&p, 0).await;
            let (h, total) = validate_batch(&stored, 1 << 20, true).unwrap();
            assert_eq!(total, sent.len());
            assert!(h.is_log_append_time());
            assert_eq!((h.base_timestamp(), h.max_timestamp()), (1_000, 123_456));
            assert_eq!(h.crc(), batch_crc(&stored));
            // The records themselves are stored as sent.
            assert_eq!(&stored[61..], &sent[61..]);
        });
    }

    /// Kafka refuses a record set larger than the topic's segment.bytes
    /// (RecordBatchTooLargeException: RECORD_LIST_TOO_LARGE) and rolls a segment that the
    /// next append would overflow.
    #[test]
    fn the_topics_segment_bytes_refuses_and_rolls() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            // The smallest segment.bytes a topic may have (1 MiB), below the broker's default.
            let p = leader(dir.path(), &[("segment.bytes", "1048576")]).await;
            let too_large = Bytes::from(batch(1, 1 << 20, 1));
            assert!(matches!(
                p.submit_replicated(too_large, 5, 1),
                Err(AppendFailure::RecordListTooLarge {
                    bytes: 1_048_637,
                    max: 1_048_576
                })
            ));
            assert_eq!(p.log.log_end_offset(), 0);
            for _ in 0..2 {
                let fits = Bytes::from(batch(1, 600_000, 1));
                p.submit_replicated(fits, 5, 1)
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
            }
            assert_eq!(p.log.log_end_offset(), 2);
            assert_eq!(
                p.log.segment_count(),
                2,
                "the second batch rolled a segment"
            );
        });
    }

    /// A transactional batch of `records` records from `producer_id` at `epoch`.
    fn txn_batch(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> Bytes {
        let mut b = batch(records, 64, 1);
        b[21..23].copy_from_slice(&engine::batch::ATTR_TRANSACTIONAL.to_be_bytes());
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = batch_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    async fn wait_high_watermark(p: &Partition, at_least: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let moved = p.data_notify.notified();
            if p.high_watermark() >= at_least {
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "high watermark stuck at {}",
                p.high_watermark()
            );
            let _ = compio::time::timeout(left, moved).await;
        }
    }

    async fn append(p: &Partition, records: Bytes) -> i64 {
        let outcome = p
            .submit_replicated(records, 5, -1)
            .unwrap()
            .wait()
            .await
            .unwrap();
        outcome.base_offset
    }

    async fn end_txn(
        p: &Partition,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> Result<i64, AppendFailure> {
        let marker = super::EndTxnMarker {
            commit,
            coordinator_epoch,
        };
        let pending = p.append_marker(producer_id, epoch, marker, false, None, 7)?;
        Ok(pending.wait().await?.base_offset)
    }

    /// Markers end transactions; the last stable offset stays at the first offset of the
    /// earliest open transaction, below the high watermark; epochs fence old markers; the
    /// state rebuilt from the log (as at open) is the same.
    #[test]
    fn markers_end_transactions_and_the_last_stable_offset_follows() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let p = leader(dir.path(), &[]).await;
            assert_eq!(append(&p, txn_batch(1, 2, 0, 3)).await, 0);
            assert_eq!(append(&p, Bytes::from(batch(2, 64, 1))).await, 3);
            assert_eq!(append(&p, txn_batch(2, 0, 0, 1)).await, 5);
            wait_high_watermark(&p, 6).await;
            assert_eq!((p.high_watermark(), p.last_stable_offset()), (6, 0));
            // A marker with an older producer epoch than the producer's.
            assert!(matches!(
                end_txn(&p, 1, 1, 5, true).await,
                Err(AppendFailure::InvalidProducerEpoch)
            ));
            assert_eq!(end_txn(&p, 1, 2, 5, true).await.unwrap(), 6);
            wait_high_watermark(&p, 7).await;
            assert_eq!(p.last_stable_offset(), 5);
            // Producer 1's next transaction; a zombie coordinator's marker is fenced.
            assert_eq!(append(&p, txn_batch(1, 2, 3, 1)).await, 7);
            assert!(matches!(
                end_txn(&p, 1, 2, 4, false).await,
                Err(AppendFailure::CoordinatorFenced)
            ));
            // Non-transactional data while its transaction is open.
            let mut plain = txn_batch(1, 2, 4, 1).to_vec();
            plain[21..23].copy_from_slice(&0i16.to_be_bytes());
            let crc = batch_crc(&plain);
            plain[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(matches!(
                p.submit_replicated(Bytes::from(plain), 5, -1),
                Err(AppendFailure::InvalidTxnState)
            ));
            // A client may not write control batches.
            let forged = super::control_batch::build_marker_batch(
                1,
                2,
                super::EndTxnMarker {
                    commit: true,
                    coordinator_epoch: 9,
                },
                5,
            );
            assert!(matches!(
                p.submit_replicated(Bytes::from(forged), 5, -1),
                Err(AppendFailure::InvalidRecord(_))
            ));
            assert_eq!(end_txn(&p, 2, 0, 5, false).await.unwrap(), 8);
            wait_high_watermark(&p, 9).await;
            assert_eq!(p.last_stable_offset(), 7);
            assert_eq!(end_txn(&p, 1, 2, 5, true).await.unwrap(), 9);
            wait_high_watermark(&p, 10).await;
            assert_eq!(p.last_stable_offset(), 10);
            assert_eq!(p.aborted_transactions(0, 10).await.unwrap(), vec![(2, 5)]);
            assert_eq!(
                p.aborted_transactions(9, 10).await.unwrap(),
                Vec::<(i64, i64)>::new()
            );
            // Producer 2 opens another transaction, then the state is rebuilt from the log.
            assert_eq!(append(&p, txn_batch(2, 0, 1, 2)).await, 10);
            wait_high_watermark(&p, 12).await;
            let views = p.producer_views();
            p.rebuild_producers().await.unwrap();
            assert_eq!(p.last_stable_offset(), 10);
            assert_eq!(p.aborted_transactions(0, 12).await.unwrap(), vec![(2, 5)]);
            assert_eq!(p.ongoing_transactions(), 1);
            let mut rebuilt = p.producer_views();
            let mut before = views;
            rebuilt.sort_by_key(|v| v.producer_id);
            before.sort_by_key(|v| v.producer_id);
            assert_eq!(rebuilt, before);
            assert_eq!(rebuilt[1].current_txn_start_offset, 10);
            assert_eq!(rebuilt[0].coordinator_epoch, 5);
            // The rebuilt state still fences: producer 2's coordinator epoch is 5.
            assert!(matches!(
                end_txn(&p, 2, 0, 4, true).await,
                Err(AppendFailure::CoordinatorFenced)
            ));
        });
    }

    /// What read_committed and DescribeProducers see of the transaction state.
    async fn txn_view(p: &Partition) -> (Vec<super::ProducerView>, Vec<(i64, i64)>, i64, usize) {
        let mut views = p.producer_views();
        views.sort_by_key(|v| v.producer_id);
        let lso = p.last_stable_offset();
        let aborted = p.aborted_transactions(0, lso).await.unwrap();
        (views, aborted, lso, p.ongoing_transactions())
    }

    /// Closes `p` (retired, log closed) and opens the directory again as leader.
    async fn reopen(dir: &std::path::Path, p: Rc<Partition>) -> Rc<Partition> {
        p.retire();
        p.log.close().await.unwrap();
        drop(p);
        let p = leader(dir, SMALL_SEGMENTS).await;
        let end = p.log.log_end_offset();
        wait_high_watermark(&p, end).await;
        p
    }

    /// The smallest segment.bytes a topic may have: a 300 KB batch fills a third of one.
    const SMALL_SEGMENTS: &[(&str, &str)] = &[("segment.bytes", "1048576")];

    fn files_with(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
        let mut out: Vec<_> = std::fs::read_dir(dir.join("t-0"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().ends_with(suffix))
            .collect();
        out.sort();
        out
    }

    /// Producer state goes to a snapshot after each roll and the aborted transactions to
    /// their segments' `.txnindex` files; a re-open loads the newest snapshot and scans only
    /// the batches after it, and sees what a full scan sees. A damaged snapshot or index
    /// falls back (an older snapshot, or the full scan) and open still succeeds; a
    /// truncation drops the snapshots and index entries above the cut.
    #[test]
    fn snapshots_and_txn_indexes_give_what_a_full_scan_gives() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let p = leader(dir.path(), SMALL_SEGMENTS).await;
            let mut sequences = [0i32; 3];
            let mut batches = 0u64;
            for i in 0..15i64 {
                let producer = 1 + i % 3;
                let sequence = &mut sequences[(i % 3) as usize];
                append(&p, txn_batch(producer, 0, *sequence, 2)).await;
                *sequence += 2;
                append(&p, Bytes::from(batch(1, 300_000, 1))).await;
                end_txn(&p, producer, 0, 1, i % 2 == 0).await.unwrap();
                batches += 3;
                // What housekeeping calls every tick.
                p.snapshot_if_rolled().await.unwrap();
            }
            append(&p, txn_batch(9, 0, 0, 1)).await; // left open
            batches += 1;
            let end = p.log.log_end_offset();
            wait_high_watermark(&p, end).await;
            assert!(p.log.segment_count() >= 5, "{}", p.log.segment_count());
            let snapshots = p.log.producer_snapshots();
            assert!(
                !snapshots.is_empty()
                    && snapshots.len() <= engine::snapshot::PRODUCER_SNAPSHOTS_KEPT,
                "{snapshots:?}"
            );
            assert!(!files_with(dir.path(), ".txnindex").is_empty());
            let before = txn_view(&p).await;
            assert_eq!(before.1.len(), 7, "seven aborted: {:?}", before.1);
            assert_eq!(before.3, 1);
            // Kafka's rule from a fetch offset in the middle, across files and memory.
            let middle = p.aborted_transactions(end / 2, before.2).await.unwrap();

            // Re-open: the newest snapshot, then only the batches after it.
            let newest = *snapshots.last().unwrap();
            let p = reopen(dir.path(), p).await;
            let load = p.producer_state_load();
            assert_eq!(load.snapshot_offset, Some(newest));
            assert!(
                load.batches_scanned > 0 && load.batches_scanned < batches / 2,
                "{load:?} of {batches}"
            );
            assert_eq!(txn_view(&p).await, before);
            assert_eq!(
                p.aborted_transactions(end / 2, before.2).await.unwrap(),
                middle
            );

            // A damaged newest snapshot: the next older one (never a failed open).
            let newest_file = files_with(dir.path(), ".snapshot").pop().unwrap();
            std::fs::write(&newest_file, b"not a snapshot").unwrap();
            let p = reopen(dir.path(), p).await;
            let load = p.producer_state_load();
            assert_eq!(load.snapshots_discarded, 1);
            assert!(load.snapshot_offset.is_none_or(|o| o < newest), "{load:?}");
            assert!(!newest_file.exists(), "the damaged snapshot is deleted");
            assert_eq!(txn_view(&p).await, before);

            // A damaged index (a flipped byte in its first entry): a snapshot at or below
            // that segment, or the full scan, rebuilds it.
            let index = files_with(dir.path(), ".txnindex").remove(0);
            let mut bytes = std::fs::read(&index).unwrap();
            bytes[3] ^= 0x20;
            std::fs::write(&index, bytes).unwrap();
            let p = reopen(dir.path(), p).await;
            assert_eq!(txn_view(&p).await, before);
            assert_eq!(
                p.aborted_transactions(end / 2, before.2).await.unwrap(),
                middle
            );

            // Clean close with a snapshot at the end: nothing to scan.
            {
                let _ticket = p.append_lock.lock().await;
                assert_eq!(p.snapshot_locked().await.unwrap(), Some(end));
            }
            let p = reopen(dir.path(), p).await;
            assert_eq!(p.producer_state_load().snapshot_offset, Some(end));
            assert_eq!(p.producer_state_load().batches_scanned, 0);
            assert_eq!(txn_view(&p).await, before);

            // No snapshot and no index at all: the full scan, the same state.
            for f in files_with(dir.path(), ".snapshot")
                .into_iter()
                .chain(files_with(dir.path(), ".txnindex"))
            {
                std::fs::remove_file(f).unwrap();
            }
            let p = reopen(dir.path(), p).await;
            let load = p.producer_state_load();
            assert_eq!(
                (load.snapshot_offset, load.batches_scanned),
                (None, batches)
            );
            assert_eq!(txn_view(&p).await, before);

            // A truncation (as a follower's): snapshots and index entries above the cut go,
            // and the rebuild equals a full scan of what is left.
            {
                let _ticket = p.append_lock.lock().await;
                p.snapshot_locked().await.unwrap();
            }
            let cut = end / 2;
            p.log.truncate_to(cut).await.unwrap();
            assert!(p.log.producer_snapshots().iter().all(|&o| o <= cut));
            p.rebuild_producers().await.unwrap();
            let left = p.log.log_end_offset();
            let rebuilt = (
                p.producer_views(),
                p.aborted_transactions(0, left).await.unwrap(),
            );
            for f in files_with(dir.path(), ".snapshot")
                .into_iter()
                .chain(files_with(dir.path(), ".txnindex"))
            {
                std::fs::remove_file(f).unwrap();
            }
            p.rebuild_producers().await.unwrap();
            assert_eq!(p.producer_state_load().snapshot_offset, None);
            let mut scanned = (
                p.producer_views(),
                p.aborted_transactions(0, left).await.unwrap(),
            );
            let mut rebuilt = rebuilt;
            rebuilt.0.sort_by_key(|v| v.producer_id);
            scanned.0.sort_by_key(|v| v.producer_id);
            assert_eq!(rebuilt, scanned);
            assert!(rebuilt.1.len() < before.1.len());
        });
    }

    /// Open time of a partition of 200,000 idempotent batches from 100 producers: the full
    /// header scan against a snapshot at the end. A measurement, not a check (no timed
    /// assertion): `cargo test -p broker --lib open_time -- --ignored --nocapture`; the
    /// numbers are in docs/benchmarks.md.
    #[test]
    #[ignore]
    fn open_time_full_scan_against_snapshot() {
        const BATCHES: i32 = 200_000;
        const PRODUCERS: i32 = 100;
        run(async {
            let dir = tempfile::tempdir().unwrap();
            {
                let log_dir = dir.path().join("t-0");
                let (log, _) = engine::Log::open(log_dir, engine::LogConfig::default())
                    .await
                    .unwrap();
                for i in 0..BATCHES {
                    let mut b = batch(1, 16, 1);
                    b[43..51].copy_from_slice(&i64::from(i % PRODUCERS).to_be_bytes());
                    b[51..53].copy_from_slice(&0i16.to_be_bytes());
                    b[53..57].copy_from_slice(&(i / PRODUCERS).to_be_bytes());
                    let crc = batch_crc(&b);
                    b[17..21].copy_from_slice(&crc.to_be_bytes());
                    log.append(Bytes::from(b), 0).await.unwrap();
                }
                log.close().await.unwrap();
            }
            let env = || Rc::new(crate::replica::driver::test_support::TestEnv::default());
            let started = std::time::Instant::now();
            let p = open_configured(dir.path(), 0, env(), &[]).await;
            let full = started.elapsed();
            assert_eq!(p.producer_state_load().batches_scanned, BATCHES as u64);
            assert_eq!(p.producer_count(), PRODUCERS as usize);
            {
                let _ticket = p.append_lock.lock().await;
                p.snapshot_locked().await.unwrap();
            }
            p.retire();
            p.log.close().await.unwrap();
            drop(p);
            let started = std::time::Instant::now();
            let p = open_configured(dir.path(), 0, env(), &[]).await;
            let loaded = started.elapsed();
            assert_eq!(p.producer_state_load().batches_scanned, 0);
            assert_eq!(p.producer_count(), PRODUCERS as usize);
            eprintln!(
                "open of {BATCHES} batches ({} segments): full scan {full:?}, from a snapshot {loaded:?}",
                p.log.segment_count()
            );
        });
    }
}
