//! The I/O layer of one shard's group coordinator (the `*_backend` role): it owns the shard's
//! [`GroupCoordinator`], feeds it requests with the wall clock, delivers its replies to the
//! waiting handlers, performs its appends on the shard's `__consumer_offsets` partitions,
//! replays a partition before serving it, and drives its timers.
//!
//! Shape: one backend per shard, created on first use and held by the shard as one of its
//! services (`runtime::services`), so the runtime knows no group type. Only the shard owning
//! an offsets partition calls the backend for it (the frontend routes there).
//!
//! Loading: the backend replays a partition when the partition's replica here becomes
//! leader ([`on_partition_role`]) and drops its groups when the replica stops leading, as
//! Kafka's coordinator follows the leadership of `__consumer_offsets` (a single node is a
//! quorum of one and leads all of them). Until a partition is replayed its groups answer
//! COORDINATOR_LOAD_IN_PROGRESS (clients retry), as in Kafka.
//!
//! Appends: an offsets append is answered once it is replicated (acks=-1: the high watermark
//! passed it), through the replication core as a Produce with acks=-1 is.
//!
//! Invariants: appends of one partition are issued in the order the coordinator emitted them
//! (the partition's FIFO append ticket is taken before the task is spawned); a partition is
//! replayed completely before the coordinator serves it, by one replay at a time (a replay
//! superseded by a role change feeds the coordinator nothing more); only partitions whose
//! replica leads here are loaded; every waiting handler gets exactly one reply.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::batch::BatchHeader;
use engine::sync::Notify;

use super::api::{AppendOutcome, AppendToken, Output, Reply, RequestId};
use super::coordinator::{GroupConfig, GroupCoordinator};
use super::records::OFFSETS_TOPIC;
use crate::partition::{AppendFailure, Partition, now_ms};
use crate::runtime::Shard;

/// Bytes read from the log per step while replaying a partition.
const LOAD_READ_BYTES: u32 = 1024 * 1024;
/// The timer loop's longest sleep when no deadline is set (it also wakes on any change).
const IDLE_TICK: Duration = Duration::from_secs(60);

pub struct GroupBackend {
    coordinator: RefCell<GroupCoordinator>,
    waiters: RefCell<HashMap<RequestId, async_channel::Sender<Reply>>>,
    next_request: Cell<u64>,
    /// Which partitions may be served and which replay of each is current.
    loads: RefCell<Loads>,
    /// Fires after every coordinator step so the timer loop re-reads the next deadline.
    changed: Rc<Notify>,
}

/// The coordinator settings for an offsets topic of `partitions` partitions.
pub fn group_config(shard: &Shard, partitions: i32) -> GroupConfig {
    GroupConfig {
        offsets_topic_partitions: partitions,
        ..shard.config().group.to_config()
    }
}

/// This shard's backend, created (with its timer loop) on first use. `config` is used only
/// then; every shard is given the same one.
pub fn backend(shard: &Rc<Shard>, config: &GroupConfig) -> Rc<GroupBackend> {
    if let Some(b) = shard.services.get::<GroupBackend>() {
        return b;
    }
    let seed = (now_ms() as u64) ^ ((shard.id.0 as u64) << 48) ^ u64::from(std::process::id());
    let backend = shard.services.get_or_init(|| GroupBackend {
        coordinator: RefCell::new(GroupCoordinator::new(config.clone(), seed)),
        waiters: RefCell::new(HashMap::new()),
        next_request: Cell::new(0),
        loads: RefCell::new(Loads::default()),
        changed: Rc::new(Notify::new()),
    });
    compio::runtime::spawn(timer_loop(Rc::clone(&backend), Rc::clone(shard))).detach();
    // This loads only the partitions whose replica already leads here; the others load when
    // `on_partition_role` reports them leading.
    backend.start_owned_loads(shard);
    backend
}

impl GroupBackend {
    /// Runs one coordinator operation for a group on `partition` (owned by this shard) and
    /// waits for its reply.
    pub async fn call<F>(self: &Rc<Self>, shard: &Rc<Shard>, partition: i32, op: F) -> Reply
    where
        F: FnOnce(&mut GroupCoordinator, i64, RequestId),
    {
        self.start_load(shard, partition);
        let request = RequestId(self.next_request.get());
        self.next_request.set(request.0 + 1);
        let (tx, rx) = async_channel::bounded(1);
        self.waiters.borrow_mut().insert(request, tx);
        op(&mut self.coordinator.borrow_mut(), now_ms(), request);
        self.drain(shard);
        match rx.recv().await {
            Ok(reply) => reply,
            // The sender is dropped only if the coordinator broke its exactly-once promise.
            Err(_) => panic!("group coordinator dropped request {request:?}"),
        }
    }

    /// Runs an operation on every loaded partition of this shard (ListGroups).
    pub async fn call_shard_wide<F>(self: &Rc<Self>, shard: &Rc<Shard>, op: F) -> Reply
    where
        F: FnOnce(&mut GroupCoordinator, i64, RequestId),
    {
        self.start_owned_loads(shard);
        let request = RequestId(self.next_request.get());
        self.next_request.set(request.0 + 1);
        let (tx, rx) = async_channel::bounded(1);
        self.waiters.borrow_mut().insert(request, tx);
        op(&mut self.coordinator.borrow_mut(), now_ms(), request);
        self.drain(shard);
        rx.recv().await.expect("every request is answered")
    }

    /// True when this shard serves `partition`'s groups now: while its replica leads here.
    pub fn leads(&self, partition: i32) -> bool {
        self.loads.borrow().may_serve(partition)
    }

    /// Starts replaying every offsets partition this shard owns and may serve.
    fn start_owned_loads(self: &Rc<Self>, shard: &Rc<Shard>) {
        let partitions = self.coordinator.borrow().config().offsets_topic_partitions;
        for partition in 0..partitions {
            if shard.owner_of(OFFSETS_TOPIC, partition) == shard.id {
                self.start_load(shard, partition);
            }
        }
    }

    /// Starts replaying `partition` of the offsets topic once per leadership; the coordinator
    /// answers its groups' requests with COORDINATOR_LOAD_IN_PROGRESS until the replay is
    /// done. Nothing happens for a partition this shard may not serve: its groups get
    /// NOT_COORDINATOR.
    fn start_load(self: &Rc<Self>, shard: &Rc<Shard>, partition: i32) {
        let partitions = self.coordinator.borrow().config().offsets_topic_partitions;
        if !(0..partitions).contains(&partition) {
            // The topic has more partitions than this backend was started with (it was
            // re-created larger while running): routing never sends a group there.
            tracing::warn!(target: "group", partition, partitions, "offsets partition beyond the coordinator's partition count");
            return;
        }
        let Some(generation) = self.loads.borrow_mut().begin(partition) else {
            return;
        };
        self.coordinator.borrow_mut().begin_load(partition);
        let this = Rc::clone(self);
        let shard = Rc::clone(shard);
        compio::runtime::spawn(async move { this.load(&shard, partition, generation).await })
            .detach();
    }

    /// This shard's replica of `partition` leads now.
    fn become_leader(self: &Rc<Self>, shard: &Rc<Shard>, partition: i32) {
        self.loads.borrow_mut().lead(partition);
        self.start_load(shard, partition);
        // Wakes requests waiting in `wait_to_lead`.
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for this shard's replica of `partition` to report leading (the
    /// metadata naming this node arrives just before the replica's new state); returns
    /// whether it leads.
    pub async fn wait_to_lead(&self, partition: i32, timeout: Duration) -> bool {
        use futures_util::future::{Either, select};
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Taken before the check, so a change between the two is not missed.
            let changed = self.changed.notified();
            if self.leads(partition) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let sleep = Box::pin(compio::time::sleep(left));
            if let Either::Right(_) = select(changed, sleep).await {
                return self.leads(partition);
            }
        }
    }

    /// This shard's replica of `partition` stopped leading: its groups are dropped (waiting
    /// requests get NOT_COORDINATOR, their timers go with them) and a replay in progress is
    /// abandoned.
    fn resign_partition(self: &Rc<Self>, shard: &Rc<Shard>, partition: i32) {
        self.loads.borrow_mut().resign(partition);
        if (0..self.coordinator.borrow().config().offsets_topic_partitions).contains(&partition) {
            self.coordinator.borrow_mut().unload_partition(partition);
        }
        self.drain(shard);
    }

    async fn load(self: &Rc<Self>, shard: &Rc<Shard>, partition: i32, generation: u64) {
        let started = std::time::Instant::now();
        match shard.partition(OFFSETS_TOPIC, partition) {
            Some(log) => {
                let replayed = self.replay(&log, partition, generation).await;
                if !self.loads.borrow().is_current(partition, generation) {
                    // Leadership moved while replaying: a newer load (or none) owns it.
                    tracing::debug!(target: "group", partition, "offsets partition replay superseded");
                    return;
                }
                if let Err(error) = replayed {
                    // Serve what was read: a tail we cannot read is lost either way, and a
                    // coordinator that never loads would wedge its groups.
                    tracing::error!(target: "group", partition, %error, "offsets partition replay stopped early");
                }
                self.coordinator
                    .borrow_mut()
                    .finish_load(now_ms(), partition);
            }
            None => {
                // Not open (yet): the partition stays loading and the next request for one
                // of its groups tries again, rather than wedging them for good.
                tracing::warn!(target: "group", partition, shard = shard.id.0, "offsets partition not open on its owner shard");
                self.loads.borrow_mut().abandon(partition, generation);
            }
        }
        tracing::debug!(target: "group", partition, elapsed_ms = started.elapsed().as_millis() as u64, "offsets partition loaded");
        self.drain(shard);
    }

    /// Replays the partition from its log start to its log end as of now (a new leader's log
    /// is the partition's history, committed or about to be, as Kafka's coordinator loads to
    /// the log end). Stops early, without error, when `generation` is superseded.
    async fn replay(
        &self,
        log: &Rc<Partition>,
        partition: i32,
        generation: u64,
    ) -> Result<(), String> {
        let mut offset = log.log_start_offset();
        let end = log.log.log_end_offset();
        while offset < end {
            let read = log
                .log
                .read(offset, end, LOAD_READ_BYTES, true)
                .await
                .map_err(|e| e.to_string())?;
            if read.slices.is_empty() {
                break;
            }
            let bytes = log
                .log
                .read_bytes(&read.slices)
                .await
                .map_err(|e| e.to_string())?;
            let next = next_offset_after(&bytes).ok_or("batch without a header")?;
            if next <= offset {
                return Err(format!("replay made no progress at offset {offset}"));
            }
            offset = next;
            // Checked after every await: a superseded replay must not feed a newer load.
            if !self.loads.borrow().is_current(partition, generation) {
                return Ok(());
            }
            self.coordinator
                .borrow_mut()
                .replay(partition, bytes)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Gives up every offsets partition at shutdown, as Kafka's coordinator resigns: waiting
    /// JoinGroup and SyncGroup requests get NOT_COORDINATOR at once (so the broker's drain of
    /// in-flight requests does not wait out a rebalance timeout), and so does anything later.
    fn resign(self: &Rc<Self>, shard: &Rc<Shard>) {
        let partitions = self.loads.borrow().loaded();
        for partition in partitions {
            self.coordinator.borrow_mut().unload_partition(partition);
        }
        self.drain(shard);
    }

    /// Delivers replies and starts appends the coordinator emitted.
    fn drain(self: &Rc<Self>, shard: &Rc<Shard>) {
        let outputs = self.coordinator.borrow_mut().take_outputs();
        for output in outputs {
            match output {
                Output::Reply { request, reply } => {
                    if let Some(tx) = self.waiters.borrow_mut().remove(&request) {
                        let _ = tx.try_send(reply);
                    }
                }
                Output::Append {
                    partition,
                    token,
                    batches,
                } => self.start_append(shard, partition, token, batches),
            }
        }
        self.changed.notify_all();
    }

    fn start_append(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        partition: i32,
        token: AppendToken,
        batches: Bytes,
    ) {
        let log = shard
            .partition(OFFSETS_TOPIC, partition)
            .filter(|_| self.leads(partition));
        let Some(log) = log else {
            self.coordinator.borrow_mut().append_complete(
                now_ms(),
                token,
                AppendOutcome::NotLeader,
            );
            // Re-entrancy is bounded: append_complete emits no new append for a failed one.
            return self.drain(shard);
        };
        // The ticket is taken now, so appends reach the log in emission order.
        let ticket = log.append_lock.lock();
        let this = Rc::clone(self);
        let shard = Rc::clone(shard);
        compio::runtime::spawn(async move {
            // The replication core orders the appends, so the ticket is held only while it
            // is fed; commits of one partition replicate together.
            let submitted = {
                let _guard = ticket.await;
                log.submit_replicated(batches, now_ms(), -1)
            };
            let outcome = match submitted {
                Ok(pending) => replicated_outcome(&log, pending.wait().await),
                Err(failure) => replicated_outcome(&log, Err(failure)),
            };
            // Leadership moved while the append was in flight: whatever the log said, the
            // client must find the new coordinator (Kafka's NOT_LEADER_OR_FOLLOWER ->
            // NOT_COORDINATOR).
            let outcome = match outcome {
                AppendOutcome::Failed if !this.leads(partition) => AppendOutcome::NotLeader,
                other => other,
            };
            this.coordinator
                .borrow_mut()
                .append_complete(now_ms(), token, outcome);
            this.drain(&shard);
        })
        .detach();
    }
}

/// An offsets append is answered once the in-sync replicas have it (acks=-1, durable too
/// when the cluster syncs acks=all writes), as Kafka's coordinator appends with acks=-1.
/// Errors map as Kafka's `GroupMetadataManager` maps them: a replica that no longer leads
/// (or a closed partition) is NOT_COORDINATOR; everything else (too few in-sync replicas, a
/// timeout, a disk error) is COORDINATOR_NOT_AVAILABLE, and clients retry.
fn replicated_outcome(
    log: &Partition,
    result: Result<crate::partition::AppendOutcome, AppendFailure>,
) -> AppendOutcome {
    use replication::ReplicaError;
    match result {
        Ok(_) => AppendOutcome::Ok,
        Err(
            AppendFailure::Retired
            | AppendFailure::Replica(
                ReplicaError::NotLeaderOrFollower | ReplicaError::FencedLeaderEpoch,
            ),
        ) => AppendOutcome::NotLeader,
        // A TxnOffsetCommit from a fenced producer (the partition's producer state knows a
        // newer epoch): passed through, as Kafka's `handleOperationException` does.
        Err(AppendFailure::InvalidProducerEpoch) => AppendOutcome::InvalidProducerEpoch,
        Err(error) => {
            tracing::warn!(target: "group", topic = OFFSETS_TOPIC, partition = log.index, ?error, "offsets append not replicated");
            AppendOutcome::Failed
        }
    }
}

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

/// Sleeps until the coordinator's next deadline (or a change), then ticks it.
async fn timer_loop(backend: Rc<GroupBackend>, shard: Rc<Shard>) {
    use futures_util::future::{Either, select};
    loop {
        if shard.is_stopping() {
            return backend.resign(&shard);
        }
        let changed = backend.changed.notified();
        let stop = shard.stop_notify.notified();
        let now = now_ms();
        let wait = match backend.coordinator.borrow().next_deadline() {
            Some(deadline) => Duration::from_millis(u64::try_from(deadline - now).unwrap_or(0)),
            None => IDLE_TICK,
        };
        let sleep = Box::pin(compio::time::sleep(wait));
        let woke = select(sleep, select(changed, stop)).await;
        if let Either::Right((Either::Right(_), _)) = woke {
            continue;
        }
        backend.coordinator.borrow_mut().tick(now_ms());
        backend.drain(&shard);
    }
}

/// Starts this shard's backend at broker start when `__consumer_offsets` exists, so its
/// partitions are replayed before clients come back (Kafka loads them when it becomes their
/// coordinator). Without the topic nothing happens until the first group request.
pub fn start_if_present(shard: &Rc<Shard>) {
    if let Some(topic) = shard.metadata().topic(OFFSETS_TOPIC) {
        let config = group_config(shard, topic.partitions);
        backend(shard, &config);
    }
}

/// The replica of `partition` on this shard became leader (`is_leader`) or stopped leading.
/// For `__consumer_offsets` partitions the coordinator loads the partition's groups when it
/// leads (answering COORDINATOR_LOAD_IN_PROGRESS until the replay of the log as it is now is
/// done) and drops them when it does not (waiting requests get NOT_COORDINATOR, timers go).
/// Other topics are ignored. Runs on the partition's owning shard.
pub fn on_partition_role(shard: &Rc<Shard>, partition: &Rc<Partition>, is_leader: bool) {
    if partition.topic != OFFSETS_TOPIC {
        return;
    }
    let partitions = shard
        .metadata()
        .topic(OFFSETS_TOPIC)
        .map_or(shard.config().group.offsets_topic_num_partitions, |t| {
            t.partitions
        });
    if !is_leader && replaced_by_leader(shard, partition) {
        // A retired instance (re-opened with a new config) reporting late: the open one's
        // role is what this shard serves.
        return;
    }
    let backend = backend(shard, &group_config(shard, partitions));
    tracing::info!(target: "group", partition = partition.index, is_leader, "offsets partition role");
    if is_leader {
        backend.become_leader(shard, partition.index);
    } else {
        backend.resign_partition(shard, partition.index);
    }
}

/// True when the shard's open instance of `partition` is another one, and it leads.
fn replaced_by_leader(shard: &Shard, partition: &Rc<Partition>) -> bool {
    shard
        .partition(OFFSETS_TOPIC, partition.index)
        .filter(|open| !Rc::ptr_eq(open, partition))
        .is_some_and(|open| open.replica.is_leader())
}

/// A COMMIT (`commit`) or ABORT marker for `producer_id` was appended to offsets partition
/// `partition` (this shard owns it): the producer's pending transactional offset commits
/// (TxnOffsetCommit) on that partition become committed offsets, or are dropped, as Kafka's
/// `GroupCoordinator.onTransactionCompleted`. Called by the WriteTxnMarkers path after the
/// marker is replicated.
///
/// Without a backend on this shard nothing is loaded, so nothing is pending: the partition's
/// replay will read the marker from the log. While the partition loads, the marker waits for
/// the end of the replay (see `GroupCoordinator::complete_transaction`).
pub fn complete_transaction(shard: &Rc<Shard>, partition: i32, producer_id: i64, commit: bool) {
    let Some(backend) = shard.services.get::<GroupBackend>() else {
        return;
    };
    let partitions = backend
        .coordinator
        .borrow()
        .config()
        .offsets_topic_partitions;
    if !(0..partitions).contains(&partition) {
        tracing::warn!(target: "group", partition, partitions, "transaction marker for an offsets partition beyond the coordinator's count");
        return;
    }
    backend
        .coordinator
        .borrow_mut()
        .complete_transaction(now_ms(), partition, producer_id, commit);
    backend.drain(shard);
}

/// Which offsets partitions a shard's backend may serve and which replay of each is current
/// (pure bookkeeping, so the role changes can be tested without a shard).
///
/// Invariant: a partition has a current load only while it may be served; each load gets a
/// new generation, so a replay that lost its leadership (even if the node leads again since)
/// is recognised as superseded.
#[derive(Debug, Default)]
struct Loads {
    /// Only these partitions may be served.
    leading: HashSet<i32>,
    /// Partitions whose replay has started (or finished), with that load's generation.
    current: HashMap<i32, u64>,
    next_generation: u64,
}

impl Loads {
    fn may_serve(&self, partition: i32) -> bool {
        self.leading.contains(&partition)
    }

    /// A new load's generation, or `None` when `partition` is loading or loaded already, or
    /// may not be served.
    fn begin(&mut self, partition: i32) -> Option<u64> {
        if !self.may_serve(partition) || self.current.contains_key(&partition) {
            return None;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.current.insert(partition, generation);
        Some(generation)
    }

    fn is_current(&self, partition: i32, generation: u64) -> bool {
        self.current.get(&partition) == Some(&generation)
    }

    /// The load could not start (partition not open): the next request tries again.
    fn abandon(&mut self, partition: i32, generation: u64) {
        if self.is_current(partition, generation) {
            self.current.remove(&partition);
        }
    }

    fn lead(&mut self, partition: i32) {
        self.leading.insert(partition);
    }

    fn resign(&mut self, partition: i32) {
        self.leading.remove(&partition);
        self.current.remove(&partition);
    }

    /// Partitions loading or loaded.
    fn loaded(&self) -> Vec<i32> {
        self.current.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn led_partition_loads_once_and_an_abandoned_load_is_retried() {
        let mut loads = Loads::default();
        loads.lead(7);
        assert!(loads.may_serve(7));
        let g = loads.begin(7).expect("first load starts");
        assert!(loads.is_current(7, g));
        assert_eq!(
            loads.begin(7),
            None,
            "a loaded partition is not replayed again"
        );
        loads.abandon(7, g);
        assert!(loads.begin(7).is_some(), "an abandoned load is retried");
    }

    #[test]
    fn loads_only_led_partitions() {
        let mut loads = Loads::default();
        assert!(!loads.may_serve(3));
        assert_eq!(loads.begin(3), None, "a follower partition is never loaded");
        loads.lead(3);
        assert!(loads.may_serve(3));
        assert!(loads.begin(3).is_some());
        assert_eq!(loads.loaded(), vec![3]);
    }

    #[test]
    fn role_change_supersedes_a_replay_in_progress() {
        let mut loads = Loads::default();
        loads.lead(1);
        let first = loads.begin(1).unwrap();
        loads.resign(1);
        assert!(!loads.may_serve(1));
        assert!(!loads.is_current(1, first), "the old replay stops feeding");
        assert!(loads.loaded().is_empty());
        loads.lead(1);
        let second = loads.begin(1).expect("leading again reloads");
        assert_ne!(first, second);
        assert!(!loads.is_current(1, first));
        assert!(loads.is_current(1, second));
        // A late failure report of the old load leaves the new one alone.
        loads.abandon(1, first);
        assert!(loads.is_current(1, second));
    }
}
