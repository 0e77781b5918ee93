//! The I/O layer of one shard's group coordinator (the `*_backend` role): it owns the shard's
//! [`GroupCoordinator`], feeds it requests with the wall clock, delivers its replies to the
//! waiting handlers, performs its appends on the shard's `__consumer_offsets` partitions,
//! replays a partition before serving it, and drives its timers.
//!
//! Shape: one backend per shard, created on first use and kept in a thread-local (a shard is
//! one OS thread), so the broker's `Shard` needs no group field. Only the shard owning an
//! offsets partition calls the backend for it (the frontend routes there).
//!
//! Loading: when the backend starts it begins replaying every offsets partition its shard
//! owns (Kafka loads them when it becomes their coordinator); until a partition is replayed
//! its groups answer COORDINATOR_LOAD_IN_PROGRESS (clients retry), as in Kafka.
//!
//! Invariants: appends of one partition are issued in the order the coordinator emitted them
//! (the partition's FIFO append ticket is taken before the task is spawned); a partition is
//! replayed completely before the coordinator serves it; every waiting handler gets exactly
//! one reply.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::batch::BatchHeader;

use super::api::{AppendOutcome, AppendToken, Output, Reply, RequestId};
use super::coordinator::{GroupConfig, GroupCoordinator};
use super::records::OFFSETS_TOPIC;
use crate::notify::Notify;
use crate::partition::{Partition, now_ms};
use crate::shard::Shard;

/// Bytes read from the log per step while replaying a partition.
const LOAD_READ_BYTES: u32 = 1024 * 1024;
/// The timer loop's longest sleep when no deadline is set (it also wakes on any change).
const IDLE_TICK: Duration = Duration::from_secs(60);

thread_local! {
    static BACKEND: RefCell<Option<Rc<GroupBackend>>> = const { RefCell::new(None) };
}

pub struct GroupBackend {
    coordinator: RefCell<GroupCoordinator>,
    waiters: RefCell<HashMap<RequestId, async_channel::Sender<Reply>>>,
    next_request: Cell<u64>,
    /// Offsets partitions whose replay has started (or finished).
    loads: RefCell<HashSet<i32>>,
    /// Fires after every coordinator step so the timer loop re-reads the next deadline.
    changed: Rc<Notify>,
}

/// This shard's backend, created (with its timer loop) on first use. `config` is used only
/// then; every shard is given the same one.
pub fn backend(shard: &Rc<Shard>, config: &GroupConfig) -> Rc<GroupBackend> {
    if let Some(b) = BACKEND.with(|b| b.borrow().clone()) {
        return b;
    }
    let seed = (now_ms() as u64) ^ ((shard.id.0 as u64) << 48) ^ u64::from(std::process::id());
    let backend = Rc::new(GroupBackend {
        coordinator: RefCell::new(GroupCoordinator::new(config.clone(), seed)),
        waiters: RefCell::new(HashMap::new()),
        next_request: Cell::new(0),
        loads: RefCell::new(HashSet::new()),
        changed: Rc::new(Notify::new()),
    });
    BACKEND.with(|b| *b.borrow_mut() = Some(Rc::clone(&backend)));
    compio::runtime::spawn(timer_loop(Rc::clone(&backend), Rc::clone(shard))).detach();
    for partition in 0..config.offsets_topic_partitions {
        if shard.owner_of(OFFSETS_TOPIC, partition) == shard.id {
            backend.start_load(shard, partition);
        }
    }
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
        let partitions = self.coordinator.borrow().config().offsets_topic_partitions;
        for partition in 0..partitions {
            if shard.owner_of(OFFSETS_TOPIC, partition) == shard.id {
                self.start_load(shard, partition);
            }
        }
        let request = RequestId(self.next_request.get());
        self.next_request.set(request.0 + 1);
        let (tx, rx) = async_channel::bounded(1);
        self.waiters.borrow_mut().insert(request, tx);
        op(&mut self.coordinator.borrow_mut(), now_ms(), request);
        self.drain(shard);
        rx.recv().await.expect("every request is answered")
    }

    /// Starts replaying `partition` of the offsets topic once; the coordinator answers its
    /// groups' requests with COORDINATOR_LOAD_IN_PROGRESS until the replay is done.
    fn start_load(self: &Rc<Self>, shard: &Rc<Shard>, partition: i32) {
        if !self.loads.borrow_mut().insert(partition) {
            return;
        }
        self.coordinator.borrow_mut().begin_load(partition);
        let this = Rc::clone(self);
        let shard = Rc::clone(shard);
        compio::runtime::spawn(async move { this.load(&shard, partition).await }).detach();
    }

    async fn load(self: &Rc<Self>, shard: &Rc<Shard>, partition: i32) {
        let started = std::time::Instant::now();
        match shard.partition(OFFSETS_TOPIC, partition) {
            Some(log) => {
                if let Err(error) = self.replay(&log, partition).await {
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
                self.loads.borrow_mut().remove(&partition);
            }
        }
        tracing::debug!(target: "group", partition, elapsed_ms = started.elapsed().as_millis() as u64, "offsets partition loaded");
        self.drain(shard);
    }

    async fn replay(&self, log: &Rc<Partition>, partition: i32) -> Result<(), String> {
        let mut offset = log.log_start_offset();
        let end = log.high_watermark();
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
        let partitions: Vec<i32> = self.loads.borrow().iter().copied().collect();
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
        let Some(log) = shard.partition(OFFSETS_TOPIC, partition) else {
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
            let outcome = {
                let _guard = ticket.await;
                append_durably(&log, batches).await
            };
            this.coordinator
                .borrow_mut()
                .append_complete(now_ms(), token, outcome);
            this.drain(&shard);
        })
        .detach();
    }
}

async fn append_durably(log: &Partition, batches: Bytes) -> AppendOutcome {
    match log.append_locked(batches, now_ms()).await {
        Ok(appended) => match log.log.wait_durable(appended.last_offset).await {
            Ok(()) => AppendOutcome::Ok,
            Err(error) => {
                tracing::error!(target: "group", topic = OFFSETS_TOPIC, partition = log.index, %error, "offsets fsync failed");
                AppendOutcome::Failed
            }
        },
        Err(error) => {
            tracing::error!(target: "group", topic = OFFSETS_TOPIC, partition = log.index, ?error, "offsets append failed");
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
        let config = super::frontend::group_config(shard, topic.partitions);
        backend(shard, &config);
    }
}

/// Cluster mode: the replica of `partition` on this shard became leader (`is_leader`) or
/// stopped leading. For `__consumer_offsets` partitions the coordinator loads the
/// partition's groups when it leads and drops them when it does not.
pub fn on_partition_role(shard: &Rc<Shard>, partition: &Rc<Partition>, is_leader: bool) {
    let _ = (shard, partition, is_leader);
}
