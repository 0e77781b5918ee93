//! The replica driver: one per partition replica, on the partition's owning shard. It feeds
//! inputs to the sans-IO `replication::Replica` and applies the actions the core returns, in
//! order, to the engine log and the network.
//!
//! Owns: the core (`Replica`), the ordered action queue, the waiting produce requests
//! (request id -> answer channel), and the partition's role as the rest of the broker sees it
//! (the published leader epoch, the role hook through `ReplicaEnv`).
//! Does not own: the partition (`crate::partition`, which holds the driver, never the other
//! way round: the driver knows only the `ReplicaStore` handles it writes to), producer state
//! (the partition follows what the driver applied through the `Applied` events it takes), the
//! wire (handlers, `fetcher`).
//! Invariants:
//! - Actions are applied in the order the core emitted them, across inputs: a synchronous
//!   action (send, high watermark) runs at once only when nothing is queued before it;
//!   otherwise it waits behind the engine operations (append, truncate) ahead of it. So an
//!   acks=1 answer or a high watermark never overtakes the append it covers.
//! - Offsets are assigned once, by the core; the engine appends each leader batch at the
//!   core's offset (`Log::append_validated` refuses one that is not its log end).
//! - After an append fails (disk full, I/O error) the engine has kept nothing of it; the
//!   driver drops the appends queued behind it, answers their produces with
//!   KAFKA_STORAGE_ERROR, and rewinds the core to the log's end (`on_log_write_failed`), so
//!   core and log agree again. The partition then refuses writes (`write_refusal`) until the
//!   shard's free-space check lifts it (`on_disk_check`); a leader meanwhile proposes to leave
//!   the ISR (`Replica::resign`), so that another in-sync replica leads.
//! - After a failure the log cannot recover from in place (a failed fdatasync poisons it, a
//!   failed truncation) the driver stops writing (`failed`) until the process restarts;
//!   produces get KAFKA_STORAGE_ERROR.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use engine::batch::ValidatedBatch;
use replication::{
    Action, Address, BrokerEpoch, Ctx, FetchRequest, LeaderEpoch, Message, NodeId, Replica,
    ReplicaError, Role,
};

use crate::controller::handle::ToController;
use crate::storage::{DiskState, WriteRefusal};
use engine::sync::Notify;

/// What a driver needs from the world around it: the clock, the broker epoch, and the three
/// ways out (leader, controller, the role hook). The shard implements it (`ShardEnv`); tests
/// record instead.
pub trait ReplicaEnv {
    /// Milliseconds on a clock that never goes backwards.
    fn now_ms(&self) -> i64;
    fn broker_epoch(&self) -> Option<BrokerEpoch>;
    /// A follower request (`Message::Fetch` / `Message::OffsetForLeaderEpoch`) of
    /// `topic`-`index` for `leader`.
    fn send_to_leader(&self, topic: &str, index: i32, leader: NodeId, message: Message<Bytes>);
    fn send_to_controller(&self, message: ToController);
    /// `driver`, the replica of `topic`-`index`, became leader (`true`) or stopped leading
    /// (`false`).
    fn role_changed(&self, driver: &ReplicaDriver, topic: &str, index: i32, is_leader: bool);
}

/// What a driver writes to: one partition instance's log and what it publishes beside it (the
/// readers' wake-up, the leader epoch, whether the instance was retired). A re-open hands the
/// driver the new instance's (`resume`).
pub struct ReplicaStore {
    pub topic: String,
    pub index: i32,
    pub dir: PathBuf,
    pub log: Rc<engine::Log>,
    /// Fires after every change of the log or the high watermark.
    pub data_notify: Rc<Notify>,
    /// The leader epoch the replica knows, published for the handlers.
    pub leader_epoch: Rc<Cell<i32>>,
    /// The instance was replaced (re-opened) or closed: failures are expected, not errors.
    pub retired: Rc<Cell<bool>>,
}

/// What the driver applied to the log that the partition's own state (idempotent-producer
/// state) follows, in order (`ReplicaDriver::take_applied`). A follower write
/// (`Replicated`, `Truncated`) counts as pending (`follower_writes_pending`) until the
/// partition took its event and reported it with `follower_write_applied`.
#[derive(Debug)]
pub enum Applied {
    /// Follower: batches copied from the leader are in the log (each buffer whole batches).
    Replicated(Vec<Bytes>),
    /// Follower: the log was truncated; what was derived from it must be rebuilt.
    Truncated,
    /// An append failed: nothing at or above `log_end_offset` is in the log (or will be).
    WriteFailed { log_end_offset: i64 },
}

/// What a fetch handler reads for a request the core accepted (`Action::SendFetchResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRange {
    pub from_offset: i64,
    pub max_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

/// The answer channel of one produce batch.
pub type ProduceAnswer = async_channel::Receiver<Result<i64, ReplicaError>>;

/// An acks=all retry of a batch already in the log (a producer's duplicate), answered like
/// the original would be: once the high watermark passes it.
struct CommitWait {
    last_offset: i64,
    leader_epoch: LeaderEpoch,
    min_insync_replicas: usize,
    deadline_ms: i64,
    answer: async_channel::Sender<Result<i64, ReplicaError>>,
}

pub struct ReplicaDriver {
    core: RefCell<Replica>,
    env: Rc<dyn ReplicaEnv>,
    /// This driver, for the tasks it spawns.
    this: Weak<ReplicaDriver>,
    /// The log the actions go to (re-pointed by a re-open).
    store: RefCell<Rc<ReplicaStore>>,
    /// Applied follower writes and failed appends, for the partition (`take_applied`).
    applied: RefCell<Vec<Applied>>,
    /// Fires when an event is added to `applied`.
    applied_notify: Rc<Notify>,
    queue: RefCell<VecDeque<Action<Bytes>>>,
    /// The validated batches of the leader appends (`Action::Append`) queued, in the same
    /// order: the core carries their bytes, the engine appends these (stamp included).
    validated: RefCell<VecDeque<ValidatedBatch>>,
    /// A task is applying the queue (it owns the queue's head until it empties it).
    applying: Cell<bool>,
    /// Set while the log is re-opened: actions queue up and are applied afterwards.
    paused: Cell<bool>,
    /// Fires when a drain task stops (queue empty or paused).
    idle: Rc<engine::sync::Notify>,
    produces: RefCell<HashMap<u64, async_channel::Sender<Result<i64, ReplicaError>>>>,
    /// Ids of requests handled here (produce, fetch, OffsetForLeaderEpoch); the core's own
    /// outgoing requests use its own ids.
    next_request_id: Cell<u64>,
    failed: Cell<bool>,
    /// Set after an append failed and the core was rewound: writes are refused until the
    /// shard's free-space check lifts it.
    write_refusal: Cell<Option<WriteRefusal>>,
    is_leader: Cell<bool>,
    /// Follower writes (`AppendReplicated`, `Truncate`) queued or being applied. Producer
    /// state follows them only once the engine applied them, so a leader checks producer
    /// sequences only when there are none (`Partition::wait_producer_state`).
    follower_writes: Cell<usize>,
    /// Fires when `follower_writes` drops to zero.
    follower_writes_applied: Rc<engine::sync::Notify>,
    /// acks=all duplicates waiting for the high watermark (checked after every step).
    commit_waits: RefCell<Vec<CommitWait>>,
    /// The produce timeout the core uses (`ReplicaConfig::produce_timeout_ms`).
    produce_timeout_ms: i64,
    /// The node is shutting down: produces are refused, nothing waits for replication.
    stopping: Cell<bool>,
}

impl ReplicaDriver {
    /// `produce_timeout_ms`: the core's (`ReplicaConfig::produce_timeout_ms`), for acks=all
    /// duplicates (`wait_committed`).
    pub fn new(
        core: Replica,
        env: Rc<dyn ReplicaEnv>,
        store: Rc<ReplicaStore>,
        produce_timeout_ms: i64,
    ) -> Rc<Self> {
        Rc::new_cyclic(|this| ReplicaDriver {
            core: RefCell::new(core),
            env,
            this: this.clone(),
            store: RefCell::new(store),
            applied: RefCell::new(Vec::new()),
            applied_notify: Rc::new(Notify::new()),
            queue: RefCell::new(VecDeque::new()),
            validated: RefCell::new(VecDeque::new()),
            applying: Cell::new(false),
            paused: Cell::new(false),
            idle: Rc::new(engine::sync::Notify::new()),
            produces: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            failed: Cell::new(false),
            write_refusal: Cell::new(None),
            is_leader: Cell::new(false),
            follower_writes: Cell::new(0),
            follower_writes_applied: Rc::new(engine::sync::Notify::new()),
            commit_waits: RefCell::new(Vec::new()),
            produce_timeout_ms,
            stopping: Cell::new(false),
        })
    }

    /// The log the driver writes to now.
    pub fn store(&self) -> Rc<ReplicaStore> {
        Rc::clone(&self.store.borrow())
    }

    /// Takes the events of what was applied since the last call, in order (see `Applied`).
    pub fn take_applied(&self) -> Vec<Applied> {
        std::mem::take(&mut *self.applied.borrow_mut())
    }

    /// Fires when there are events to take (`take_applied`).
    pub fn applied_notify(&self) -> Rc<Notify> {
        Rc::clone(&self.applied_notify)
    }

    fn push_applied(&self, event: Applied) {
        self.applied.borrow_mut().push(event);
        self.applied_notify.notify_all();
    }

    /// The core's role now.
    pub fn role(&self) -> Role {
        self.core.borrow().role()
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role(), Role::Leader { .. })
    }

    /// The leader epoch the replica knows (its role's, or the latest state's when offline).
    pub fn leader_epoch(&self) -> Option<i32> {
        let core = self.core.borrow();
        match core.role() {
            Role::Leader { leader_epoch } | Role::Follower { leader_epoch, .. } => {
                Some(leader_epoch.0)
            }
            Role::Offline => core.state().map(|s| s.leader_epoch.0),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.core.borrow().high_watermark()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.core.borrow().log_end_offset()
    }

    /// True once the log failed in a way only a restart recovers from (a failed fdatasync or
    /// truncation): the replica refuses work until then.
    pub fn failed(&self) -> bool {
        self.failed.get()
    }

    /// Why writes are refused after a failed append, until space returns.
    pub fn write_refusal(&self) -> Option<WriteRefusal> {
        self.write_refusal.get()
    }

    /// The shard's free-space check: lifts the write refusal once `disk` allows it.
    pub fn on_disk_check(&self, disk: DiskState) {
        let Some(refusal) = self.write_refusal.get() else {
            return;
        };
        if refusal.lifted_by(disk) {
            self.write_refusal.set(None);
            let store = self.store();
            tracing::info!(target: "broker::storage", topic = %store.topic, partition = store.index, available_bytes = disk.available_bytes, "log writes resumed");
        } else {
            // Still leading (the last proposal was refused, or it is the only ISR member):
            // propose leaving the ISR again.
            self.step(|core, ctx, out| core.resign(ctx, out));
        }
    }

    /// Runs `f` on the core, then applies the actions it emitted (after any queued before).
    /// `f` may take actions out of the list (a handler's synchronous answer).
    pub fn step<R>(&self, f: impl FnOnce(&mut Replica, Ctx, &mut Vec<Action<Bytes>>) -> R) -> R {
        let ctx = Ctx {
            now_ms: self.env.now_ms(),
            broker_epoch: self.env.broker_epoch(),
        };
        let mut out = Vec::new();
        let r = f(&mut self.core.borrow_mut(), ctx, &mut out);
        self.dispatch(out);
        self.after_step();
        self.answer_commit_waits(ctx.now_ms);
        r
    }

    /// The core's leader epoch cache as (epoch, start offset) entries, for the partition's
    /// producer-state snapshots (which carry it, as Kafka's `leader-epoch-checkpoint`).
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        let core = self.core.borrow();
        core.epochs()
            .entries()
            .iter()
            .map(|&(e, s)| (e.0, s))
            .collect()
    }

    /// An acks=all retry of a batch this leader already has at `..=last_offset` (a
    /// producer's duplicate): answered as Kafka answers it (a delayed produce for the
    /// original's offsets): success once the durable watermark passes it (every ISR member,
    /// this leader included, synced it: the high watermark consumers see may already cover
    /// it while only in this leader's page cache),
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR is then below `min_insync_replicas`,
    /// NOT_LEADER_OR_FOLLOWER if this replica stops leading the epoch, REQUEST_TIMED_OUT at
    /// the produce timeout. Without it a retry was acknowledged before its batch was
    /// committed, and lost if this leader died before a follower fetched it.
    pub fn wait_committed(&self, last_offset: i64, min_insync_replicas: usize) -> ProduceAnswer {
        let (answer, rx) = async_channel::bounded(1);
        let Role::Leader { leader_epoch } = self.role() else {
            let _ = answer.try_send(Err(ReplicaError::NotLeaderOrFollower));
            return rx;
        };
        if self.stopping.get() {
            let _ = answer.try_send(Err(ReplicaError::NotLeaderOrFollower));
            return rx;
        }
        let now_ms = self.env.now_ms();
        self.commit_waits.borrow_mut().push(CommitWait {
            last_offset,
            leader_epoch,
            min_insync_replicas,
            deadline_ms: now_ms + self.produce_timeout_ms,
            answer,
        });
        self.answer_commit_waits(now_ms);
        rx
    }

    fn answer_commit_waits(&self, now_ms: i64) {
        if self.commit_waits.borrow().is_empty() {
            return;
        }
        let core = self.core.borrow();
        let role = core.role();
        let durable_watermark = core.durable_watermark().unwrap_or(i64::MIN);
        let isr_len = core.state().map_or(0, |s| s.isr.len());
        let failed = self.failed.get();
        self.commit_waits.borrow_mut().retain(|w| {
            let result = match role {
                Role::Leader { leader_epoch } if leader_epoch == w.leader_epoch && !failed => {
                    if durable_watermark > w.last_offset {
                        if isr_len < w.min_insync_replicas {
                            Some(Err(ReplicaError::NotEnoughReplicasAfterAppend))
                        } else {
                            Some(Ok(w.last_offset))
                        }
                    } else if now_ms >= w.deadline_ms {
                        Some(Err(ReplicaError::RequestTimedOut))
                    } else {
                        None
                    }
                }
                _ => Some(Err(ReplicaError::NotLeaderOrFollower)),
            };
            match result {
                Some(r) => {
                    let _ = w.answer.try_send(r);
                    false
                }
                None => true,
            }
        });
    }

    /// Shutdown: every produce and duplicate waiting for replication is answered
    /// NOT_LEADER_OR_FOLLOWER now, and later produces at once, so the connections holding them
    /// can close. A stopping node cannot count on followers that may be stopping too: waiting
    /// held the shutdown until `cluster.request_timeout_ms`, past the shutdown timeout. As when
    /// a leader steps down in Kafka, the error is retriable; an idempotent producer's retry at
    /// the next leader gets the batch's original offsets if the batch survived.
    pub fn stop_waiting(&self) {
        self.stopping.set(true);
        for (_, tx) in self.produces.borrow_mut().drain() {
            let _ = tx.try_send(Err(ReplicaError::NotLeaderOrFollower));
        }
        for w in self.commit_waits.borrow_mut().drain(..) {
            let _ = w.answer.try_send(Err(ReplicaError::NotLeaderOrFollower));
        }
    }

    /// Timers (produce timeouts, ISR shrink, resends, follower polls).
    pub fn tick(&self) {
        self.step(|core, ctx, out| core.tick(ctx, out));
    }

    /// True while replicated appends or truncations are queued or being applied: the
    /// partition's producer state does not cover them yet.
    pub fn follower_writes_pending(&self) -> bool {
        self.follower_writes.get() > 0
    }

    /// Resolves the next time no follower write is left (see `follower_writes_pending`).
    pub fn follower_writes_applied(&self) -> engine::sync::Notified {
        self.follower_writes_applied.notified()
    }

    /// acks=all: NOT_ENOUGH_REPLICAS while the committed ISR is smaller than
    /// `min_insync_replicas` (the topic's, which the core also holds). The core checks the
    /// same on `on_produce`; the partition asks first, before its producer checks, as Kafka
    /// does.
    pub fn check_in_sync(&self, min_insync_replicas: usize) -> Result<(), ReplicaError> {
        let core = self.core.borrow();
        let isr_len = core.state().map_or(0, |s| s.isr.len());
        if isr_len < min_insync_replicas {
            return Err(ReplicaError::NotEnoughReplicas);
        }
        Ok(())
    }

    /// A leader append: one validated record batch for the core, which assigns its offsets.
    /// Returns the base offset the core assigned (if it appended) and the answer to await.
    /// The engine appends `batch` itself at that offset (the core's `Append` action carries
    /// the same bytes), without validating it again.
    pub fn produce(&self, acks_all: bool, batch: ValidatedBatch) -> (Option<i64>, ProduceAnswer) {
        let request_id = self.next_id();
        let (tx, rx) = async_channel::bounded(1);
        if self.stopping.get() {
            let _ = tx.try_send(Err(ReplicaError::NotLeaderOrFollower));
            return (None, rx);
        }
        self.produces.borrow_mut().insert(request_id, tx);
        let acks = if acks_all {
            replication::Acks::All
        } else {
            replication::Acks::Leader
        };
        let record_count = batch.records_count() as u32;
        let payload = batch.bytes().clone();
        // Queued before the core runs (its Append may be applied by a drain task that starts
        // later, never before this returns), taken back if the core refuses.
        self.validated.borrow_mut().push_back(batch);
        let base = self.step(|core, ctx, out| {
            let before = core.log_end_offset();
            let request = replication::ProduceRequest {
                client: Address::Client(0),
                request_id,
                acks,
                record_count,
                payload,
            };
            core.on_produce(ctx, request, out);
            (core.log_end_offset() > before).then_some(before)
        });
        if base.is_none() {
            self.validated.borrow_mut().pop_back();
        }
        (base, rx)
    }

    /// A fetch (follower when `replica` is set). `current_leader_epoch` -1 skips the epoch
    /// check. A consumer's is a query of the core; a follower's is an input (it records the
    /// follower's progress), whose answer is taken from the core's actions.
    pub fn fetch(
        &self,
        replica: Option<i32>,
        current_leader_epoch: i32,
        fetch_offset: i64,
    ) -> Result<FetchRange, ReplicaError> {
        let Some(id) = replica else {
            let core = self.core.borrow();
            let current_leader_epoch = self.requested_epoch(&core, current_leader_epoch);
            let range = core.consumer_read(current_leader_epoch, fetch_offset)?;
            return Ok(FetchRange {
                from_offset: range.from_offset,
                max_offset: range.max_offset,
                high_watermark: range.high_watermark,
                log_end_offset: range.log_end_offset,
            });
        };
        let request_id = self.next_id();
        self.step(|core, ctx, out| {
            let current_leader_epoch = self.requested_epoch(core, current_leader_epoch);
            let request = FetchRequest {
                from: Address::Broker(NodeId(id)),
                request_id,
                replica: Some(NodeId(id)),
                current_leader_epoch,
                fetch_offset,
            };
            core.on_fetch(ctx, request, out);
            take_fetch_answer(out, request_id)
        })
    }

    /// OffsetForLeaderEpoch (from a follower or a consumer): the end offset of `leader_epoch`
    /// in this leader's log, `(epoch, end_offset)`, (-1, -1) when undefined. A query of the
    /// core.
    pub fn offset_for_leader_epoch(
        &self,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<(i32, i64), ReplicaError> {
        let core = self.core.borrow();
        let current = self.requested_epoch(&core, current_leader_epoch);
        let end = core.epoch_end_offset(current, LeaderEpoch(leader_epoch))?;
        Ok(match end.leader_epoch {
            Some(epoch) => (epoch.0, end.end_offset),
            None => (-1, -1),
        })
    }

    /// ListOffsets and DeleteRecords: leader only, with Kafka's epoch checks, and
    /// OFFSET_NOT_AVAILABLE while a new leader's high watermark is below its epoch's start.
    /// Returns the leader epoch.
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<i32, ReplicaError> {
        let core = self.core.borrow();
        let Some(state) = core.state() else {
            return Err(ReplicaError::NotLeaderOrFollower);
        };
        let epoch = state.leader_epoch.0;
        if current_leader_epoch >= 0 && current_leader_epoch < epoch {
            return Err(ReplicaError::FencedLeaderEpoch);
        }
        if current_leader_epoch > epoch {
            return Err(ReplicaError::UnknownLeaderEpoch);
        }
        let Role::Leader { leader_epoch } = core.role() else {
            return Err(ReplicaError::NotLeaderOrFollower);
        };
        let epoch_start = core
            .epochs()
            .entries()
            .last()
            .filter(|(e, _)| *e == leader_epoch)
            .map_or(0, |&(_, start)| start);
        if core.high_watermark() < epoch_start {
            return Err(ReplicaError::OffsetNotAvailable);
        }
        Ok(leader_epoch.0)
    }

    fn next_id(&self) -> u64 {
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        id
    }

    /// -1 (no check) becomes the epoch the core holds, so only the role is checked.
    fn requested_epoch(&self, core: &Replica, requested: i32) -> LeaderEpoch {
        if requested >= 0 {
            return LeaderEpoch(requested);
        }
        core.state().map_or(LeaderEpoch(-1), |s| s.leader_epoch)
    }

    /// Publishes the role: the store's leader epoch, and the hook on leader <-> not leader.
    fn after_step(&self) {
        let store = self.store();
        if let Some(epoch) = self.leader_epoch() {
            store.leader_epoch.set(epoch);
        }
        let leader = self.is_leader();
        if leader != self.is_leader.get() {
            self.is_leader.set(leader);
            tracing::info!(target: "broker::replica", topic = %store.topic, partition = store.index, leader, epoch = store.leader_epoch.get(), "role changed");
            self.env
                .role_changed(self, &store.topic, store.index, leader);
        }
    }

    fn dispatch(&self, actions: Vec<Action<Bytes>>) {
        if actions.is_empty() {
            return;
        }
        let follower_writes = actions.iter().filter(|a| is_follower_write(a)).count();
        self.follower_writes
            .set(self.follower_writes.get() + follower_writes);
        self.queue.borrow_mut().extend(actions);
        self.kick();
    }

    /// Applies what is queued: synchronous actions now, up to the first engine operation,
    /// the rest in a drain task. Does nothing while a drain task runs or while paused.
    fn kick(&self) {
        if self.applying.get() || self.paused.get() {
            return;
        }
        let Some(driver) = self.this.upgrade() else {
            return;
        };
        let store = self.store();
        // Apply synchronous actions now, up to the first engine operation.
        loop {
            let next = {
                let mut q = self.queue.borrow_mut();
                match q.front() {
                    None => return,
                    Some(a) if is_engine_op(a) => None,
                    Some(_) => q.pop_front(),
                }
            };
            match next {
                Some(action) => self.apply_sync(&store, action),
                None => break,
            }
        }
        self.applying.set(true);
        compio::runtime::spawn(drain(driver)).detach();
    }

    /// Before a re-open of the log: stops applying actions (they queue up) and waits until
    /// no engine operation is in flight.
    pub async fn pause(&self) {
        self.paused.set(true);
        while self.applying.get() {
            let idle = self.idle.notified();
            if !self.applying.get() {
                break;
            }
            idle.await;
        }
    }

    /// After a re-open: actions go to `store` (the new instance's log), starting with those
    /// queued meanwhile. Everything the old log had is durable (it was closed).
    pub fn resume(&self, store: Rc<ReplicaStore>) {
        store.log.set_high_watermark(self.high_watermark());
        let durable = store.log.durable_offset();
        *self.store.borrow_mut() = store;
        self.paused.set(false);
        self.step(|core, ctx, out| core.on_durable(ctx, durable, out));
        self.kick();
    }

    fn apply_sync(&self, store: &Rc<ReplicaStore>, action: Action<Bytes>) {
        match action {
            Action::SetHighWatermark { high_watermark, .. } => {
                store.log.set_high_watermark(high_watermark);
                store.data_notify.notify_all();
            }
            Action::RequestDurable { offset, .. } => {
                let store = Rc::clone(store);
                let driver = self.this.clone();
                compio::runtime::spawn(async move {
                    if let Err(e) = store.log.wait_durable(offset - 1).await {
                        tracing::error!(target: "broker::replica", topic = %store.topic, partition = store.index, error = %e, "fdatasync failed");
                        return;
                    }
                    let durable = store.log.durable_offset();
                    if let Some(driver) = driver.upgrade() {
                        driver.step(|core, ctx, out| core.on_durable(ctx, durable, out));
                    }
                })
                .detach();
            }
            Action::Send { to, message } => self.send(store, to, message),
            Action::SendFetchResponse { .. } => {
                // Fetches are answered synchronously by their handler; one left here had no
                // waiting handler (cannot happen: `fetch` takes it).
                tracing::debug!(target: "broker::replica", "unclaimed fetch answer dropped");
            }
            Action::Append { .. } | Action::AppendReplicated { .. } | Action::Truncate { .. } => {
                unreachable!("engine operations are applied by `drain`")
            }
        }
    }

    fn send(&self, store: &ReplicaStore, to: Address, message: Message<Bytes>) {
        match message {
            Message::ProduceResponse {
                request_id, result, ..
            } => {
                let result = if self.failed.get() {
                    Err(failure_error(store))
                } else {
                    result
                };
                if let Some(tx) = self.produces.borrow_mut().remove(&request_id) {
                    let _ = tx.try_send(result);
                }
            }
            Message::AlterPartition {
                partition: id,
                leader_epoch,
                partition_epoch,
                proposal,
                new_isr,
                ..
            } => self.env.send_to_controller(ToController::AlterPartition {
                partition: id,
                leader_epoch,
                partition_epoch,
                proposal,
                new_isr,
            }),
            message @ (Message::Fetch { .. } | Message::OffsetForLeaderEpoch { .. }) => {
                if let Address::Broker(leader) = to {
                    self.env
                        .send_to_leader(&store.topic, store.index, leader, message);
                }
            }
            other => {
                tracing::debug!(target: "broker::replica", ?to, message = ?std::mem::discriminant(&other), "unclaimed message dropped");
            }
        }
    }
}

/// Applies the queue in order until it is empty, awaiting engine operations.
async fn drain(driver: Rc<ReplicaDriver>) {
    loop {
        let next = if driver.paused.get() {
            None
        } else {
            driver.queue.borrow_mut().pop_front()
        };
        let Some(action) = next else {
            driver.applying.set(false);
            driver.idle.notify_all();
            return;
        };
        let store = driver.store();
        match action {
            Action::Append { batch, .. } => {
                let validated = driver.validated.borrow_mut().pop_front();
                let validated = validated.expect("every queued leader append has its batch");
                assert!(
                    validated.bytes().as_ptr() == batch.payload.as_ptr()
                        && validated.len() == batch.payload.len(),
                    "leader appends and their validated batches out of step"
                );
                if driver.failed.get() {
                    continue;
                }
                // The core assigned the offset; the engine writes there (and refuses if its
                // log end is elsewhere, which would be a bug).
                let (base, epoch) = (batch.base_offset, batch.leader_epoch.0);
                match store.log.append_validated(validated, base, epoch).await {
                    Ok(_) => store.data_notify.notify_all(),
                    Err(e) => driver.on_append_failed(&store, "append", &e),
                }
            }
            Action::AppendReplicated { batches, .. } => {
                if driver.failed.get() || batches.is_empty() {
                    driver.follower_write_applied();
                    continue;
                }
                let base = batches[0].base_offset;
                // Each batch is a slice of the leader's response: written with vectored
                // writes, never joined into one buffer.
                let parts: Vec<Bytes> = batches.into_iter().map(|b| b.payload).collect();
                match store.log.append_replicated_batches(parts.clone()).await {
                    Ok(info) => {
                        assert_eq!(
                            info.first_offset, base,
                            "replicated append landed elsewhere"
                        );
                        // Pending until the partition recorded their producer state.
                        driver.push_applied(Applied::Replicated(parts));
                        store.data_notify.notify_all();
                    }
                    Err(e) => {
                        driver.on_append_failed(&store, "replicated append", &e);
                        driver.follower_write_applied();
                    }
                }
            }
            Action::Truncate { offset, .. } => {
                if driver.failed.get() {
                    driver.follower_write_applied();
                    continue;
                }
                match store.log.truncate_to(offset).await {
                    Ok(()) => {
                        // Pending until the partition rebuilt its producer state.
                        driver.push_applied(Applied::Truncated);
                        store.data_notify.notify_all();
                    }
                    Err(e) => {
                        driver.fail(&store, "truncate", &e);
                        driver.follower_write_applied();
                    }
                }
            }
            other => driver.apply_sync(&store, other),
        }
    }
}

impl ReplicaDriver {
    /// One follower write applied (or skipped after a failure) and its producer state is in:
    /// the partition calls this for each `Applied::Replicated` / `Applied::Truncated` it
    /// took, once it recorded or rebuilt its producer state.
    pub fn follower_write_applied(&self) {
        let left = self.follower_writes.get();
        assert!(
            left > 0,
            "a follower write applied that was never dispatched"
        );
        self.follower_writes.set(left - 1);
        if left == 1 {
            self.follower_writes_applied.notify_all();
        }
    }

    fn fail(&self, store: &ReplicaStore, what: &str, error: &dyn std::fmt::Display) {
        if store.retired.get() {
            // Closed under us (topic deleted, shutdown): nothing is lost that matters.
            tracing::debug!(target: "broker::replica", topic = %store.topic, partition = store.index, error = %error, "{what} after close dropped");
        } else {
            tracing::error!(target: "broker::replica", topic = %store.topic, partition = store.index, error = %error, "{what} failed; the replica stops until restart");
        }
        self.failed.set(true);
        let error = failure_error(store);
        for (_, tx) in self.produces.borrow_mut().drain() {
            let _ = tx.try_send(Err(error));
        }
        for w in self.commit_waits.borrow_mut().drain(..) {
            let _ = w.answer.try_send(Err(error));
        }
    }

    /// An append (leader) or replicated append (follower) failed. The engine published
    /// nothing of it (and cut its partial bytes off), so the log ends where it did: drop the
    /// appends queued behind it (truncations stay, in order), answer the produces they
    /// carried with KAFKA_STORAGE_ERROR, forget their producer state, and rewind the core to
    /// where the log will end. Writes are then refused until the shard's free-space check
    /// lifts the refusal. Runs in the drain task, synchronously: no produce is submitted in
    /// between.
    fn on_append_failed(&self, store: &ReplicaStore, what: &str, error: &engine::AppendError) {
        use engine::{AppendError, LogError};
        let in_place = !store.retired.get()
            && !matches!(
                error,
                AppendError::Log(LogError::Poisoned | LogError::Closed)
            );
        if !in_place {
            return self.fail(store, what, error);
        }
        // The log's end once the truncations still queued are applied (a follower may have
        // been told to truncate below what the failed append followed); appends queued
        // behind the failure are dropped, so nothing else moves it.
        let log_end_offset = self
            .queue
            .borrow()
            .iter()
            .filter_map(|a| match a {
                Action::Truncate { offset, .. } => Some(*offset),
                _ => None,
            })
            .fold(store.log.log_end_offset(), i64::min);
        let refusal = match error {
            AppendError::Log(e) if e.is_no_space() => WriteRefusal::NoSpace {
                available_bytes_at_failure: crate::sys::fs_space(&store.dir)
                    .map_or(0, |s| s.available_bytes),
            },
            _ => WriteRefusal::Io,
        };
        if self.write_refusal.replace(Some(refusal)).is_none() {
            tracing::error!(target: "broker::storage", topic = %store.topic, partition = store.index, log_end_offset, error = %error, ?refusal, "{what} failed; writes refused (KAFKA_STORAGE_ERROR) until space returns");
        } else {
            tracing::debug!(target: "broker::storage", topic = %store.topic, partition = store.index, error = %error, "{what} failed again");
        }
        // The partition forgets the producer state of batches that are not in the log. A
        // retry cannot be taken for a duplicate meanwhile: writes are refused from here until
        // the free-space check lifts the refusal, and the event is taken before that.
        self.push_applied(Applied::WriteFailed { log_end_offset });
        self.commit_waits.borrow_mut().retain(|w| {
            let lost = w.last_offset >= log_end_offset;
            if lost {
                let _ = w.answer.try_send(Err(ReplicaError::KafkaStorageError));
            }
            !lost
        });
        // What was queued behind the failure keeps its order, less the appends; the answers
        // of produces whose batches were dropped become errors.
        let stale: Vec<Action<Bytes>> = self.queue.borrow_mut().drain(..).collect();
        // Every queued leader append is dropped, and with it its validated batch.
        self.validated.borrow_mut().clear();
        let mut kept = VecDeque::with_capacity(stale.len());
        for action in stale {
            match action {
                Action::Append { .. } => {}
                Action::AppendReplicated { .. } => self.follower_write_applied(),
                Action::Send {
                    to,
                    message:
                        Message::ProduceResponse {
                            request_id,
                            partition: id,
                            result: Ok(base_offset),
                        },
                } if base_offset >= log_end_offset => kept.push_back(Action::Send {
                    to,
                    message: Message::ProduceResponse {
                        request_id,
                        partition: id,
                        result: Err(ReplicaError::KafkaStorageError),
                    },
                }),
                other => kept.push_back(other),
            }
        }
        *self.queue.borrow_mut() = kept;
        self.step(|core, ctx, out| core.on_log_write_failed(ctx, log_end_offset, out));
        // A leader hands leadership to another in-sync replica, if there is one.
        self.step(|core, ctx, out| core.resign(ctx, out));
    }
}

/// What a replica that stopped for good answers: closed under us (deleted, shutting down) is
/// NOT_LEADER_OR_FOLLOWER (the client looks again); a broken log is KAFKA_STORAGE_ERROR.
fn failure_error(store: &ReplicaStore) -> ReplicaError {
    if store.retired.get() {
        ReplicaError::NotLeaderOrFollower
    } else {
        ReplicaError::KafkaStorageError
    }
}

/// The engine operations only a follower's core emits; producer state follows them late.
fn is_follower_write(action: &Action<Bytes>) -> bool {
    matches!(
        action,
        Action::AppendReplicated { .. } | Action::Truncate { .. }
    )
}

fn is_engine_op(action: &Action<Bytes>) -> bool {
    matches!(
        action,
        Action::Append { .. } | Action::AppendReplicated { .. } | Action::Truncate { .. }
    )
}

/// Takes the core's answer to fetch `request_id` out of `out`.
fn take_fetch_answer(
    out: &mut Vec<Action<Bytes>>,
    request_id: u64,
) -> Result<FetchRange, ReplicaError> {
    let at = out.iter().position(|a| match a {
        Action::SendFetchResponse { request_id: id, .. } => *id == request_id,
        Action::Send {
            message: Message::FetchResponse { request_id: id, .. },
            ..
        } => *id == request_id,
        _ => false,
    });
    match at.map(|i| out.remove(i)) {
        Some(Action::SendFetchResponse {
            from_offset,
            max_offset,
            high_watermark,
            log_end_offset,
            ..
        }) => Ok(FetchRange {
            from_offset,
            max_offset,
            high_watermark,
            log_end_offset,
        }),
        Some(Action::Send {
            message: Message::FetchResponse { result: Err(e), .. },
            ..
        }) => Err(e),
        _ => Err(ReplicaError::NotLeaderOrFollower),
    }
}

/// Test helpers shared by the driver's and the handlers' tests: an environment that records
/// what the driver sends, and a replicated partition on a real engine log. (Test code only:
/// the driver itself does not know `Partition`.)
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use replication::{PartitionEpoch, PartitionId, PartitionState};

    use super::*;
    use crate::config::LogSection;
    use crate::metadata::TopicConfig;
    use crate::partition::{Partition, ReplicaSetup};

    #[derive(Default)]
    pub struct TestEnv {
        pub to_leader: RefCell<Vec<(NodeId, Message<Bytes>)>>,
        pub to_controller: RefCell<Vec<ToController>>,
        pub roles: RefCell<Vec<bool>>,
    }

    impl ReplicaEnv for TestEnv {
        fn now_ms(&self) -> i64 {
            0
        }
        fn broker_epoch(&self) -> Option<BrokerEpoch> {
            Some(BrokerEpoch(1))
        }
        fn send_to_leader(&self, _: &str, _: i32, leader: NodeId, message: Message<Bytes>) {
            self.to_leader.borrow_mut().push((leader, message));
        }
        fn send_to_controller(&self, message: ToController) {
            self.to_controller.borrow_mut().push(message);
        }
        fn role_changed(&self, _: &ReplicaDriver, _: &str, _: i32, is_leader: bool) {
            self.roles.borrow_mut().push(is_leader);
        }
    }

    /// Partition `t`-0 under `dir` on `node`; replicated (core partition id 7) with `env`.
    pub async fn open(dir: &std::path::Path, node: i32, env: Rc<TestEnv>) -> Rc<Partition> {
        open_configured(dir, node, env, &[]).await
    }

    /// `open` with topic config `overrides` (Kafka names: `segment.bytes`, ...).
    pub async fn open_configured(
        dir: &std::path::Path,
        node: i32,
        env: Rc<TestEnv>,
        overrides: &[(&str, &str)],
    ) -> Rc<Partition> {
        let log = LogSection::default();
        let overrides: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = TopicConfig::resolve(&log, &overrides).unwrap();
        let setup = ReplicaSetup {
            node,
            partition_id: 7,
            config: replication::ReplicaConfig::default(),
            request_id_base: 1 << 20,
            env,
        };
        let log_config = config.log_config(&log);
        Partition::open("t".into(), 0, dir.join("t-0"), 0, config, log_config, setup)
            .await
            .unwrap()
    }

    pub fn state(leader: i32, replicas: &[i32], isr: &[i32], epoch: i32) -> PartitionState {
        PartitionState {
            partition: PartitionId(7),
            replicas: replicas.iter().map(|&n| NodeId(n)).collect(),
            isr: isr.iter().map(|&n| NodeId(n)).collect(),
            leader: Some(NodeId(leader)),
            leader_epoch: LeaderEpoch(epoch),
            partition_epoch: PartitionEpoch(epoch),
        }
    }

    /// Feeds a partition state to the partition's replica.
    pub fn apply(p: &Partition, s: PartitionState) {
        p.replica
            .step(|core, ctx, out| core.on_partition_state(ctx, s, out));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use replication::{Batch, EpochEndOffset, FetchData};

    use super::test_support::{TestEnv, apply, open, state};
    use super::*;
    use crate::partition::{AppendFailure, Partition, PendingAppend};

    fn run(f: impl std::future::Future<Output = ()>) {
        compio::runtime::Runtime::new().unwrap().block_on(f);
    }

    fn batch(records: i32) -> Bytes {
        Bytes::from(engine::batch::build_test_batch(records, 64, 1, 1, 0xab))
    }

    /// A replicated batch as a leader would send it: offsets and epoch in its header.
    fn leader_batch(base_offset: i64, records: u32, epoch: i32) -> Batch<Bytes> {
        let mut b = engine::batch::build_test_batch(records as i32, 64, 1, 1, 0xcd);
        engine::batch::patch_header(&mut b[..16], base_offset, epoch);
        Batch {
            base_offset,
            record_count: records,
            leader_epoch: LeaderEpoch(epoch),
            payload: Bytes::from(b),
        }
    }

    /// One batch from idempotent producer `producer_id` at `epoch`, sequences from
    /// `base_sequence`.
    fn idempotent_batch(records: i32, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
        let mut b = engine::batch::build_test_batch(records, 64, 1, 1, 0xef);
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = engine::batch::batch_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    /// The topic's min.insync.replicas, on the partition and its core (as AlterConfigs does).
    fn set_min_insync_replicas(p: &Partition, min: i32) {
        p.config.borrow_mut().min_insync_replicas = min;
        p.replica
            .step(|core, _, _| core.set_min_insync_replicas(min as usize));
    }

    /// (base offset, producer epoch, base sequence) of every batch in the log.
    async fn producer_batches_in_log(p: &Partition) -> Vec<(i64, i16, i32)> {
        let mut seen = Vec::new();
        p.log
            .scan_headers(0, |h| {
                seen.push((h.base_offset(), h.producer_epoch(), h.base_sequence()))
            })
            .await
            .unwrap();
        seen
    }

    /// Waits (up to 5 s) until `done` holds; the driver notifies after each log change.
    async fn wait_until(p: &Partition, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let changed = p.data_notify.notified();
            if done() {
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "condition not reached in 5 s");
            let timer = Box::pin(compio::time::sleep(left));
            let _ = futures_util::future::select(changed, timer).await;
        }
    }

    async fn epochs_in_log(p: &Partition) -> Vec<(i64, i32)> {
        let mut seen = Vec::new();
        p.log
            .scan_headers(0, |h| seen.push((h.base_offset(), h.leader_epoch())))
            .await
            .unwrap();
        seen
    }

    #[test]
    fn leader_with_isr_of_itself_answers_acks_all_once_durable() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let env = Rc::new(TestEnv::default());
            let p = open(dir.path(), 0, Rc::clone(&env)).await;
            assert!(matches!(
                p.submit_replicated(batch(3), 0, -1),
                Err(AppendFailure::Replica(ReplicaError::NotLeaderOrFollower))
            ));
            apply(&p, state(0, &[0], &[0], 1));
            assert_eq!(*env.roles.borrow(), vec![true]);
            assert_eq!(p.leader_epoch.get(), 1);

            let first = p.submit_replicated(batch(3), 0, -1).unwrap();
            let second = p.submit_replicated(batch(2), 0, -1).unwrap();
            let first = first.wait().await.unwrap();
            assert_eq!((first.base_offset, first.last_offset), (0, 2));
            // acks=all under Durability::Fsync: answered only once the leader synced it.
            assert!(p.log.durable_offset() >= 3);
            let second = second.wait().await.unwrap();
            assert_eq!((second.base_offset, second.last_offset), (3, 4));
            assert!(p.log.durable_offset() >= 5);
            assert_eq!(p.log.log_end_offset(), 5);
            assert_eq!(p.high_watermark(), 5);
            // The engine stamped the core's leader epoch into both batches.
            assert_eq!(epochs_in_log(&p).await, vec![(0, 1), (3, 1)]);
            // A consumer reads up to the high watermark; a stale epoch is fenced.
            let driver = &p.replica;
            assert_eq!(driver.fetch(None, -1, 0).unwrap().max_offset, 5);
            assert_eq!(
                driver.fetch(None, 0, 0),
                Err(ReplicaError::FencedLeaderEpoch)
            );
            assert_eq!(
                driver.fetch(None, 2, 0),
                Err(ReplicaError::UnknownLeaderEpoch)
            );
            assert_eq!(driver.offset_for_leader_epoch(-1, 1), Ok((1, 5)));
            assert!(env.to_controller.borrow().is_empty());
        });
    }

    /// Issue 14: with the leader alone in the ISR, an acks=1 batch is below the high
    /// watermark (what ListOffsets and Fetch read) when its answer arrives, sync or not; the
    /// high watermark used to be the durable offset, a few ms behind.
    #[test]
    fn leader_alone_exposes_acks_1_when_it_answers() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let env = Rc::new(TestEnv::default());
            let p = open(dir.path(), 0, Rc::clone(&env)).await;
            apply(&p, state(0, &[0], &[0], 1));
            for round in 0..5 {
                let answer = p.submit_replicated(batch(2), 0, 1).unwrap();
                let answer = answer.wait().await.unwrap();
                let end = answer.last_offset + 1;
                assert_eq!((answer.base_offset, end), (round * 2, round * 2 + 2));
                assert_eq!(p.high_watermark(), end, "round {round}");
                let range = p.replica.fetch(None, -1, answer.base_offset).unwrap();
                assert_eq!((range.max_offset, range.high_watermark), (end, end));
            }
        });
    }

    #[test]
    fn follower_truncates_then_appends_fetched_batches() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            // A log written in epochs 1 (offsets 0..3) and 2 (3..5), as a former leader.
            {
                // Written straight to the engine log, before any partition state.
                let plain = open(dir.path(), 1, Rc::new(TestEnv::default())).await;
                plain.log.append(batch(3), 1).await.unwrap();
                plain.log.append(batch(2), 2).await.unwrap();
                plain.log.wait_durable(4).await.unwrap();
                plain.log.close().await.unwrap();
            }
            let env = Rc::new(TestEnv::default());
            let p = open(dir.path(), 1, Rc::clone(&env)).await;
            apply(&p, state(0, &[0, 1], &[0, 1], 3));
            assert!(
                env.roles.borrow().is_empty(),
                "never led, so no role change"
            );
            assert_eq!(p.leader_epoch.get(), 3);
            let driver = &p.replica;

            // First it asks the leader where its latest epoch (2) ends.
            let (leader, message) = env.to_leader.borrow_mut().remove(0);
            assert_eq!(leader, NodeId(0));
            let Message::OffsetForLeaderEpoch {
                request_id,
                leader_epoch,
                current_leader_epoch,
                ..
            } = message
            else {
                panic!("expected OffsetForLeaderEpoch, got {message:?}");
            };
            assert_eq!(
                (leader_epoch, current_leader_epoch),
                (LeaderEpoch(2), LeaderEpoch(3))
            );
            // The leader never had epoch 2: epoch 1 ends at 3 there.
            let answer = Ok(EpochEndOffset {
                leader_epoch: Some(LeaderEpoch(1)),
                end_offset: 3,
            });
            driver.step(|core, ctx, out| {
                core.on_offset_for_leader_epoch_response(ctx, request_id, answer, out)
            });
            wait_until(&p, || p.log.log_end_offset() == 3).await;
            assert_eq!(epochs_in_log(&p).await, vec![(0, 1)]);

            // Then it fetches from its new end.
            let (_, message) = env.to_leader.borrow_mut().remove(0);
            let Message::Fetch {
                request_id,
                fetch_offset,
                replica,
                ..
            } = message
            else {
                panic!("expected Fetch, got {message:?}");
            };
            assert_eq!((fetch_offset, replica), (3, Some(NodeId(1))));
            let data = FetchData {
                high_watermark: 4,
                log_end_offset: 6,
                batches: vec![leader_batch(3, 2, 3), leader_batch(5, 1, 3)],
            };
            driver.step(|core, ctx, out| core.on_fetch_response(ctx, request_id, Ok(data), out));
            wait_until(&p, || {
                p.log.log_end_offset() == 6 && p.high_watermark() == 4
            })
            .await;
            assert_eq!(epochs_in_log(&p).await, vec![(0, 1), (3, 3), (5, 3)]);
            // Consumers are refused on a follower, and so are produces.
            assert_eq!(
                driver.fetch(None, -1, 0),
                Err(ReplicaError::NotLeaderOrFollower)
            );
            assert!(matches!(
                p.submit_replicated(batch(1), 0, 1),
                Err(AppendFailure::Replica(ReplicaError::NotLeaderOrFollower))
            ));
        });
    }

    #[test]
    fn reopen_keeps_the_core_and_its_queued_work() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let env = Rc::new(TestEnv::default());
            let old = open(dir.path(), 0, Rc::clone(&env)).await;
            apply(&old, state(0, &[0], &[0], 1));
            let first = old.submit_replicated(batch(2), 0, -1).unwrap();
            // Queued but maybe not yet written when the re-open starts.
            let second = old.submit_replicated(batch(3), 0, -1).unwrap();
            let mut config = old.config.borrow().clone();
            config.retention_ms = 60_000;
            let mut log_config = old.log.config().clone();
            log_config.retention_ms = 60_000;
            old.retire();
            let new = old.reopen_replicated(config, log_config).await.unwrap();
            assert!(Rc::ptr_eq(&old.replica, &new.replica));
            assert_eq!(first.wait().await.unwrap().base_offset, 0);
            assert_eq!(second.wait().await.unwrap().base_offset, 2);
            let third = new.submit_replicated(batch(1), 0, -1).unwrap();
            assert_eq!(third.wait().await.unwrap().base_offset, 5);
            assert_eq!((new.log.log_end_offset(), new.high_watermark()), (6, 6));
            assert_eq!(new.leader_epoch.get(), 1);
            assert_eq!(epochs_in_log(&new).await, vec![(0, 1), (2, 1), (5, 1)]);
            assert!(matches!(
                old.submit_replicated(batch(1), 0, 1),
                Err(AppendFailure::Retired)
            ));
            assert_eq!(*env.roles.borrow(), vec![true]);
        });
    }

    /// The cluster test's duplicate (one record at two offsets, the second copy under a
    /// bumped producer epoch): with the ISR below min.insync.replicas, a batch pipelined
    /// behind one refused with NOT_ENOUGH_REPLICAS was answered OUT_OF_ORDER_SEQUENCE_NUMBER,
    /// librdkafka bumped its epoch and re-sent a batch the leader had already appended.
    /// Kafka refuses every acks=all batch with NOT_ENOUGH_REPLICAS first, then dedupes the
    /// retry once the ISR is back.
    #[test]
    fn short_isr_refuses_acks_all_before_producer_sequence_checks() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let env = Rc::new(TestEnv::default());
            let p = open(dir.path(), 0, Rc::clone(&env)).await;
            set_min_insync_replicas(&p, 2);
            apply(&p, state(0, &[0, 1], &[0, 1], 1));
            let driver = &p.replica;
            let (producer, epoch) = (9, 0);

            // R1 (sequence 0) is appended at offset 0 and waits for follower 1.
            let r1 = p
                .submit_replicated(idempotent_batch(1, producer, epoch, 0), 0, -1)
                .unwrap();
            // Follower 1 is fenced: the ISR shrinks to {0}, below min.insync.replicas.
            let mut shrunk = state(0, &[0, 1], &[0], 1);
            shrunk.partition_epoch = replication::PartitionEpoch(2);
            apply(&p, shrunk);
            assert!(matches!(
                r1.wait().await,
                Err(AppendFailure::Replica(
                    ReplicaError::NotEnoughReplicasAfterAppend
                ))
            ));
            let not_enough = |r: Result<PendingAppend, AppendFailure>| {
                matches!(
                    r,
                    Err(AppendFailure::Replica(ReplicaError::NotEnoughReplicas))
                )
            };
            // R2 (sequence 1) was in flight behind R1: NOT_ENOUGH_REPLICAS, not a gap.
            let r2 = idempotent_batch(1, producer, epoch, 1);
            assert!(not_enough(p.submit_replicated(r2.clone(), 0, -1)));
            // R1's retry is not acknowledged while the ISR is short.
            let r1_retry = idempotent_batch(1, producer, epoch, 0);
            assert!(not_enough(p.submit_replicated(r1_retry.clone(), 0, -1)));
            // Nor is a later epoch's second batch a gap (its first was refused).
            assert!(not_enough(p.submit_replicated(
                idempotent_batch(1, producer, epoch + 1, 1),
                0,
                -1
            )));
            assert_eq!(p.log.log_end_offset(), 1);

            // Follower 1 catches up and rejoins: R1's retry is answered with its offset, R2
            // appended after it, and the record is in the log once.
            let mut back = state(0, &[0, 1], &[0, 1], 1);
            back.partition_epoch = replication::PartitionEpoch(3);
            apply(&p, back);
            driver.fetch(Some(1), 1, 1).unwrap();
            wait_until(&p, || p.high_watermark() == 1).await;
            let again = p
                .submit_replicated(r1_retry, 0, -1)
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert!(again.duplicate);
            assert_eq!((again.base_offset, again.last_offset), (0, 0));
            let r2 = p.submit_replicated(r2, 0, -1).unwrap();
            driver.fetch(Some(1), 1, 2).unwrap();
            let r2 = r2.wait().await.unwrap();
            assert_eq!((r2.base_offset, r2.duplicate), (1, false));
            assert_eq!(
                producer_batches_in_log(&p).await,
                vec![(0, epoch, 0), (1, epoch, 1)]
            );
        });
    }

    /// A follower that becomes leader while a fetched batch is still on its way to the
    /// engine (its producer state is recorded once appended) must still dedupe a retry of
    /// that batch, at the offset the previous leader gave it.
    #[test]
    fn new_leader_dedupes_a_retry_of_a_batch_still_being_replicated() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let env = Rc::new(TestEnv::default());
            let p = open(dir.path(), 1, Rc::clone(&env)).await;
            apply(&p, state(0, &[0, 1], &[0, 1], 1));
            let driver = &p.replica;
            // The empty follower fetches from offset 0 (after asking where epochs end, if it
            // does: nothing to truncate).
            let request_id = loop {
                wait_until(&p, || !env.to_leader.borrow().is_empty()).await;
                let (_, message) = env.to_leader.borrow_mut().remove(0);
                match message {
                    Message::Fetch {
                        request_id,
                        fetch_offset,
                        ..
                    } => {
                        assert_eq!(fetch_offset, 0);
                        break request_id;
                    }
                    Message::OffsetForLeaderEpoch { request_id, .. } => {
                        let answer = Ok(EpochEndOffset {
                            leader_epoch: Some(LeaderEpoch(1)),
                            end_offset: 0,
                        });
                        driver.step(|core, ctx, out| {
                            core.on_offset_for_leader_epoch_response(ctx, request_id, answer, out)
                        });
                    }
                    other => panic!("unexpected {other:?}"),
                }
            };
            let (producer, epoch) = (9, 0);
            let mut fetched = idempotent_batch(1, producer, epoch, 0).to_vec();
            engine::batch::patch_header(&mut fetched[..16], 0, 1);
            let data = FetchData {
                high_watermark: 0,
                log_end_offset: 1,
                batches: vec![Batch {
                    base_offset: 0,
                    record_count: 1,
                    leader_epoch: LeaderEpoch(1),
                    payload: Bytes::from(fetched),
                }],
            };
            driver.step(|core, ctx, out| core.on_fetch_response(ctx, request_id, Ok(data), out));
            // Leader 0 dies before this replica's append reached the engine.
            apply(&p, state(1, &[0, 1], &[1], 2));
            assert!(driver.is_leader());
            assert!(driver.follower_writes_pending());
            let retry = idempotent_batch(1, producer, epoch, 0);
            // Without waiting for the fetched batch, the producer state cannot tell.
            assert!(matches!(
                p.submit_replicated(retry.clone(), 0, 1),
                Err(AppendFailure::Replica(ReplicaError::NotLeaderOrFollower))
            ));
            p.wait_producer_state().await;
            assert!(!driver.follower_writes_pending());
            let again = p
                .submit_replicated(retry, 0, 1)
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert!(again.duplicate);
            assert_eq!((again.base_offset, again.last_offset), (0, 0));
            let next = p
                .submit_replicated(idempotent_batch(1, producer, epoch, 1), 0, 1)
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert_eq!((next.base_offset, next.duplicate), (1, false));
            assert_eq!(
                producer_batches_in_log(&p).await,
                vec![(0, epoch, 0), (1, epoch, 1)]
            );
        });
    }

    /// Kafka answers an acks=all duplicate as a delayed produce for the original's offsets:
    /// not before the high watermark passes them, and not at all if leadership moves.
    #[test]
    fn acks_all_duplicate_is_answered_once_the_original_is_committed() {
        use futures_util::FutureExt;
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let env = Rc::new(TestEnv::default());
            let p = open(dir.path(), 0, Rc::clone(&env)).await;
            apply(&p, state(0, &[0, 1], &[0, 1], 1));
            let driver = &p.replica;
            let (producer, epoch) = (9, 0);

            let original = p
                .submit_replicated(idempotent_batch(1, producer, epoch, 0), 0, -1)
                .unwrap();
            let retry = p
                .submit_replicated(idempotent_batch(1, producer, epoch, 0), 0, -1)
                .unwrap();
            let mut retry = Box::pin(retry.wait());
            p.log.wait_durable(0).await.unwrap();
            assert_eq!(p.high_watermark(), 0, "follower 1 has not fetched it");
            assert!((&mut retry).now_or_never().is_none());
            driver.fetch(Some(1), 1, 1).unwrap();
            assert_eq!(original.wait().await.unwrap().base_offset, 0);
            let retry = retry.await.unwrap();
            assert!(retry.duplicate);
            assert_eq!((retry.base_offset, retry.last_offset), (0, 0));

            // Leadership moves before the next batch commits: neither answer is a success.
            let second = p
                .submit_replicated(idempotent_batch(1, producer, epoch, 1), 0, -1)
                .unwrap();
            let second_retry = p
                .submit_replicated(idempotent_batch(1, producer, epoch, 1), 0, -1)
                .unwrap();
            apply(&p, state(1, &[0, 1], &[0, 1], 2));
            for pending in [second, second_retry] {
                assert!(matches!(
                    pending.wait().await,
                    Err(AppendFailure::Replica(ReplicaError::NotLeaderOrFollower))
                ));
            }
            assert_eq!(
                producer_batches_in_log(&p).await,
                vec![(0, epoch, 0), (1, epoch, 1)]
            );
        });
    }

    #[test]
    fn role_changes_call_the_hook() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let env = Rc::new(TestEnv::default());
            let p = open(dir.path(), 0, Rc::clone(&env)).await;
            apply(&p, state(0, &[0, 1], &[0, 1], 1));
            let acked = p.submit_replicated(batch(1), 0, 1).unwrap().wait().await;
            assert_eq!(acked.unwrap().base_offset, 0);
            apply(&p, state(1, &[0, 1], &[0, 1], 2));
            assert_eq!(p.leader_epoch.get(), 2);
            apply(&p, state(0, &[0, 1], &[0, 1], 3));
            assert_eq!(*env.roles.borrow(), vec![true, false, true]);
            assert_eq!(p.leader_epoch.get(), 3);
            // A follower fetch as leader again: served up to the log end, not the hw.
            let driver = &p.replica;
            let range = driver.fetch(Some(1), 3, 0).unwrap();
            assert_eq!((range.max_offset, range.log_end_offset), (1, 1));
        });
    }
}
