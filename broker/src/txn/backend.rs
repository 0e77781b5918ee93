//! The transaction coordinator of one shard (the `*_backend` role): the state of every
//! transactional id whose `__transaction_state` partition this shard owns and leads, the
//! appends that persist each transition, the replay that rebuilds the state when the
//! replica becomes leader, the marker writes that end a transaction on its partitions, and
//! the timer that aborts expired transactions and removes expired ids.
//!
//! Shape: one backend per shard, created on first use and held as a shard service; only the
//! shard owning a state partition touches its ids (the frontend routes there). Requests run
//! as async functions on that shard: a transition is computed from the current state
//! (`metadata`, pure), marked pending (other requests for the id get
//! CONCURRENT_TRANSACTIONS), appended with acks=-1, and applied once replicated.
//!
//! Coordinator epoch: the leader epoch of the state partition when its load began. Markers
//! carry it; a replica that stops leading drops its ids, and a load under a newer epoch
//! supersedes the old one, so a deposed coordinator never applies a late append and its
//! marker writes are refused by the partitions (TRANSACTION_COORDINATOR_FENCED).
//!
//! Invariants: every request gets exactly one answer; an id's state changes only on this
//! shard and only after its record is replicated; a Prepare* state in the log always gets
//! its markers written (by this coordinator, or by the next one when it loads the log).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::sync::Notify;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::TxnSection;
use super::metadata::{InitTransit, TxnError, TxnMetadata, TxnState, TxnVersion};
use super::records::{self, TXN_STATE_TOPIC, partition_for};
use crate::partition::{AppendFailure, Partition, now_ms};
use crate::runtime::Shard;

/// Bytes read from the log per step while replaying a partition.
const LOAD_READ_BYTES: u32 = 1024 * 1024;
/// First wait before a marker write is retried; doubles up to `MARKER_RETRY_MAX`.
const MARKER_RETRY_MIN: Duration = Duration::from_millis(50);
const MARKER_RETRY_MAX: Duration = Duration::from_millis(1_000);
/// Deadline of one WriteTxnMarkers call to another broker.
const MARKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client's EndTxn waits for its markers before it is answered anyway (the
/// Prepare* record is durable by then; the markers go on in the background, as in Kafka).
const END_TXN_MARKERS_WAIT: Duration = Duration::from_secs(5);
/// How long an add waits for another transition of the same id being written.
const PENDING_WAIT: Duration = Duration::from_secs(2);

/// Writes markers to the partitions this node leads: the WriteTxnMarkers handler's
/// `write_markers`, registered by the server at start-up ([`set_local_marker_writer`]).
/// The coordinator cannot name the handler itself without an import cycle (the handler's
/// error mapping reaches `replica`, whose role changes reach this module). Unregistered (unit
/// tests), local markers go over the wire to this node's own listener like remote ones.
pub type LocalMarkerWriter = fn(
    Rc<Shard>,
    WriteTxnMarkersRequest,
) -> crate::runtime::LocalBoxFuture<WriteTxnMarkersResponse>;

static LOCAL_MARKER_WRITER: std::sync::OnceLock<LocalMarkerWriter> = std::sync::OnceLock::new();

/// Registers the local marker writer (once per process; later calls are ignored).
pub fn set_local_marker_writer(writer: LocalMarkerWriter) {
    let _ = LOCAL_MARKER_WRITER.set(writer);
}

/// One state partition this shard leads.
#[derive(Debug, Clone, Copy)]
struct Load {
    generation: u64,
    coordinator_epoch: i32,
    loaded: bool,
}

pub struct TxnBackend {
    config: TxnSection,
    txns: RefCell<HashMap<String, TxnMetadata>>,
    /// State partitions this shard leads (loading or loaded).
    loads: RefCell<HashMap<i32, Load>>,
    next_generation: Cell<u64>,
    /// Fires when a load finishes or leadership changes.
    changed: Rc<Notify>,
    /// Notified whenever a transition's write ends (an id's `pending` clears).
    settled: Rc<Notify>,
}

/// A transaction as DescribeTransactions and ListTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnView {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: TxnState,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, Vec<i32>)>,
}

/// This shard's backend, created (with its timer loop) on first use.
pub fn backend(shard: &Rc<Shard>) -> Rc<TxnBackend> {
    if let Some(b) = shard.services.get::<TxnBackend>() {
        return b;
    }
    let backend = shard.services.get_or_init(|| TxnBackend {
        config: shard.config().transaction.clone(),
        txns: RefCell::new(HashMap::new()),
        loads: RefCell::new(HashMap::new()),
        next_generation: Cell::new(0),
        changed: Rc::new(Notify::new()),
        settled: Rc::new(Notify::new()),
    });
    compio::runtime::spawn(timer_loop(Rc::clone(&backend), Rc::clone(shard))).detach();
    backend
}

/// The replica of `partition` on this shard became leader or stopped leading. For
/// `__transaction_state` partitions the coordinator loads the partition's ids when it leads
/// (COORDINATOR_LOAD_IN_PROGRESS until the replay is done) and drops them when it does not.
pub fn on_partition_role(shard: &Rc<Shard>, partition: &Rc<Partition>, is_leader: bool) {
    if partition.topic != TXN_STATE_TOPIC {
        return;
    }
    if !is_leader
        && shard
            .partition(TXN_STATE_TOPIC, partition.index)
            .filter(|open| !Rc::ptr_eq(open, partition))
            .is_some_and(|open| open.replica.is_leader())
    {
        // A retired instance reporting late: the open one leads.
        return;
    }
    let backend = backend(shard);
    tracing::info!(target: "txn", partition = partition.index, is_leader, "transaction state partition role");
    if is_leader {
        backend.become_leader(shard, partition);
    } else {
        backend.resign(partition.index);
    }
}

/// Starts this shard's backend at broker start when `__transaction_state` exists, so the
/// partitions it leads are replayed (and unfinished transactions completed) before clients
/// come back.
pub fn start_if_present(shard: &Rc<Shard>) {
    if shard.metadata().topic(TXN_STATE_TOPIC).is_none() {
        return;
    }
    let backend = backend(shard);
    let partitions = shard
        .metadata()
        .topic(TXN_STATE_TOPIC)
        .map_or(0, |t| t.partitions);
    for index in 0..partitions {
        if shard.owner_of(TXN_STATE_TOPIC, index) != shard.id {
            continue;
        }
        if let Some(p) = shard.partition(TXN_STATE_TOPIC, index)
            && p.replica.is_leader()
            && !backend.loads.borrow().contains_key(&index)
        {
            backend.become_leader(shard, &p);
        }
    }
}

impl TxnBackend {
    /// The coordinator epoch of `partition`, or why its ids cannot be served now.
    fn serving(&self, partition: i32) -> Result<i32, TxnError> {
        match self.loads.borrow().get(&partition) {
            None => Err(TxnError::NotCoordinator),
            Some(load) if !load.loaded => Err(TxnError::CoordinatorLoadInProgress),
            Some(load) => Ok(load.coordinator_epoch),
        }
    }

    /// True while this shard's replica of `partition` leads (loaded or not).
    pub fn leads(&self, partition: i32) -> bool {
        self.loads.borrow().contains_key(&partition)
    }

    /// Waits up to `timeout` for this shard to lead `partition`.
    pub async fn wait_to_lead(&self, partition: i32, timeout: Duration) -> bool {
        use futures_util::future::{Either, select};
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if self.leads(partition) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Either::Right(_) = select(changed, Box::pin(compio::time::sleep(left))).await {
                return self.leads(partition);
            }
        }
    }

    fn partitions(&self, shard: &Shard) -> i32 {
        shard
            .metadata()
            .topic(TXN_STATE_TOPIC)
            .map_or(self.config.state_log_num_partitions, |t| t.partitions)
    }

    fn become_leader(self: &Rc<Self>, shard: &Rc<Shard>, partition: &Rc<Partition>) {
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        let load = Load {
            generation,
            coordinator_epoch: partition.leader_epoch.get(),
            loaded: false,
        };
        self.loads.borrow_mut().insert(partition.index, load);
        self.drop_ids_of(partition.index);
        self.changed.notify_all();
        let this = Rc::clone(self);
        let shard = Rc::clone(shard);
        let partition = Rc::clone(partition);
        compio::runtime::spawn(async move { this.load(&shard, &partition, generation).await })
            .detach();
    }

    fn resign(&self, partition: i32) {
        self.loads.borrow_mut().remove(&partition);
        self.changed.notify_all();
        self.drop_ids_of(partition);
    }

    fn drop_ids_of(&self, partition: i32) {
        self.txns
            .borrow_mut()
            .retain(|_, m| m.state_partition != partition);
    }

    fn is_current(&self, partition: i32, generation: u64) -> bool {
        self.loads
            .borrow()
            .get(&partition)
            .is_some_and(|l| l.generation == generation)
    }

    /// Replays the partition to its log end, then completes the transactions found between
    /// Prepare* and Complete* (their markers may be missing).
    async fn load(self: &Rc<Self>, shard: &Rc<Shard>, log: &Rc<Partition>, generation: u64) {
        let started = std::time::Instant::now();
        let partition = log.index;
        let mut found: HashMap<String, Option<TxnMetadata>> = HashMap::new();
        if let Err(error) = self.replay(log, partition, generation, &mut found).await {
            tracing::error!(target: "txn", partition, %error, "transaction state replay stopped early");
        }
        if !self.is_current(partition, generation) {
            return;
        }
        let mut unfinished = Vec::new();
        {
            let mut txns = self.txns.borrow_mut();
            for (id, m) in found {
                if let Some(mut m) = m {
                    m.state_partition = partition;
                    if m.state.is_prepare() {
                        unfinished.push(id.clone());
                    }
                    txns.insert(id, m);
                }
            }
        }
        if let Some(load) = self.loads.borrow_mut().get_mut(&partition) {
            load.loaded = true;
        }
        self.changed.notify_all();
        tracing::info!(target: "txn", partition, unfinished = unfinished.len(), elapsed_ms = started.elapsed().as_millis() as u64, "transaction state partition loaded");
        for id in unfinished {
            let _ = self.spawn_markers(shard, id);
        }
    }

    async fn replay(
        &self,
        log: &Rc<Partition>,
        partition: i32,
        generation: u64,
        found: &mut HashMap<String, Option<TxnMetadata>>,
    ) -> Result<(), String> {
        log.replay_batches(LOAD_READ_BYTES, |bytes| {
            if !self.is_current(partition, generation) {
                return Ok(false);
            }
            let pairs = crate::group::records::decode_batches(bytes).map_err(|e| e.to_string())?;
            for (key, value) in pairs {
                let id = match records::decode_key(&key) {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!(target: "txn", partition, error = %e, "skipping an unreadable transaction log key");
                        continue;
                    }
                };
                match value {
                    None => {
                        found.insert(id, None);
                    }
                    Some(v) => match records::decode_value(&id, &v) {
                        Ok(m) => {
                            found.insert(id, Some(m));
                        }
                        Err(e) => {
                            tracing::warn!(target: "txn", partition, transactional_id = %id, error = %e, "skipping an unreadable transaction log value");
                        }
                    },
                }
            }
            Ok(true)
        })
        .await
    }

    /// InitProducerId for a transactional id: its producer id and (bumped) epoch.
    pub async fn init_producer_id(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        transactional_id: String,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let partition = partition_for(&transactional_id, self.partitions(shard));
        let coordinator_epoch = self.serving(partition)?;
        if !self.txns.borrow().contains_key(&transactional_id) {
            if self.txns.borrow().len() >= super::IDS_PER_SHARD_MAX {
                tracing::warn!(target: "txn", limit = super::IDS_PER_SHARD_MAX, "transactional id limit reached");
                return Err(TxnError::CoordinatorNotAvailable);
            }
            let producer_id = allocate_producer_id(shard).await?;
            if self.serving(partition) != Ok(coordinator_epoch) {
                return Err(TxnError::NotCoordinator);
            }
            let mut m =
                TxnMetadata::new(transactional_id.clone(), producer_id, timeout_ms, now_ms());
            m.state_partition = partition;
            self.txns
                .borrow_mut()
                .entry(transactional_id.clone())
                .or_insert(m);
        }
        let transit = self.with_txn(&transactional_id, |m| {
            m.init_producer_id(timeout_ms, expected, now_ms())
        })?;
        let next = match transit {
            InitTransit::Write(next) => next,
            InitTransit::Rotate => {
                self.set_pending(&transactional_id, true);
                let allocated = allocate_producer_id(shard).await;
                self.set_pending(&transactional_id, false);
                let producer_id = allocated?;
                self.with_txn(&transactional_id, |m| {
                    Ok(m.rotate(producer_id, timeout_ms, now_ms()))
                })?
            }
            InitTransit::FenceAndAbort(fenced) => {
                // The open transaction is aborted under the bumped epoch first; the client
                // retries and then gets the next epoch (Kafka's PrepareEpochFence).
                self.end_txn(
                    shard,
                    &transactional_id,
                    fenced.producer_id,
                    fenced.producer_epoch,
                    false,
                    false,
                    self.server_version(),
                )
                .await?;
                return Err(TxnError::ConcurrentTransactions);
            }
        };
        let answer = (next.producer_id, next.producer_epoch);
        self.persist(shard, partition, coordinator_epoch, next)
            .await?;
        tracing::info!(target: "txn", transactional_id, producer_id = answer.0, epoch = answer.1, partition, "initialized transactional id");
        Ok(answer)
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn: adds `partitions` to the open transaction
    /// (opening one if none is open); returns its `txn_sequence`.
    pub async fn add_partitions(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        version: TxnVersion,
    ) -> Result<u64, TxnError> {
        let partition = partition_for(transactional_id, self.partitions(shard));
        let coordinator_epoch = self.serving(partition)?;
        // Partition leaders add the partitions of one produce one by one (transaction version
        // 2) or verify them so: an add that meets another add's transition being written
        // waits for it (up to PENDING_WAIT) instead of answering CONCURRENT_TRANSACTIONS,
        // which would cost the producer a retry round per partition.
        let deadline = std::time::Instant::now() + PENDING_WAIT;
        let next = loop {
            let seen = self.settled.version();
            let next = self.with_txn(transactional_id, |m| {
                m.add_partitions(producer_id, epoch, &partitions, version, now_ms())
                    .map(|next| next.ok_or(m.txn_sequence))
            });
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let pending = self
                .txns
                .borrow()
                .get(transactional_id)
                .is_some_and(|m| m.pending && !m.state.is_prepare());
            match next {
                Err(TxnError::ConcurrentTransactions) if pending && !left.is_zero() => {
                    let _ = compio::time::timeout(left, self.settled.changed_since(seen)).await;
                    if self.serving(partition) != Ok(coordinator_epoch) {
                        return Err(TxnError::NotCoordinator);
                    }
                }
                other => break other?,
            }
        };
        let next = match next {
            Ok(next) => next,
            Err(sequence) => return Ok(sequence),
        };
        if next.partitions.len() > super::PARTITIONS_PER_TXN_MAX {
            return Err(TxnError::InvalidRequest);
        }
        let sequence = next.txn_sequence;
        self.persist(shard, partition, coordinator_epoch, next)
            .await?;
        Ok(sequence)
    }

    /// Verifies that `partitions` are in the producer's open transaction (AddPartitionsToTxn
    /// v4+ `verify_only`, KIP-890 part 1): per partition, NONE or TRANSACTION_ABORTABLE, and
    /// the transaction's `txn_sequence`.
    pub fn verify_partitions(
        &self,
        shard: &Shard,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(Vec<bool>, u64), TxnError> {
        let partition = partition_for(transactional_id, self.partitions(shard));
        self.serving(partition)?;
        let txns = self.txns.borrow();
        let m = txns
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if m.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        if m.state.is_prepare() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let included = partitions
            .iter()
            .map(|p| m.state == TxnState::Ongoing && m.partitions.contains(p))
            .collect();
        Ok((included, m.txn_sequence))
    }

    /// EndTxn: writes Prepare{Commit,Abort}, writes the markers in the background (then
    /// Complete*), and answers with the producer id and epoch the client continues with
    /// (transaction version 2 bumps the epoch, or rotates the id at an exhausted epoch).
    /// `from_client == false` is the coordinator's own abort of a fenced or expired
    /// transaction, under the bumped epoch.
    #[allow(clippy::too_many_arguments)]
    pub async fn end_txn(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        from_client: bool,
        version: TxnVersion,
    ) -> Result<(i64, i16), TxnError> {
        let partition = partition_for(transactional_id, self.partitions(shard));
        let coordinator_epoch = self.serving(partition)?;
        let needs_id = self.with_txn(transactional_id, |m| {
            Ok(m.end_needs_producer_id(producer_id, epoch, version))
        })?;
        let mut next_producer_id = -1;
        if needs_id {
            self.set_pending(transactional_id, true);
            let allocated = allocate_producer_id(shard).await;
            self.set_pending(transactional_id, false);
            next_producer_id = allocated?;
            if self.serving(partition) != Ok(coordinator_epoch) {
                return Err(TxnError::NotCoordinator);
            }
        }
        let next = self.with_txn(transactional_id, |m| {
            m.end(
                producer_id,
                epoch,
                commit,
                from_client,
                version,
                next_producer_id,
                now_ms(),
            )
        })?;
        let Some(next) = next else {
            return self.with_txn(transactional_id, |m| Ok(m.client_identity()));
        };
        let state = next.state;
        let answer = next.client_identity();
        self.persist(shard, partition, coordinator_epoch, next)
            .await?;
        tracing::debug!(target: "txn", transactional_id, ?state, "transaction ending");
        let done = self.spawn_markers(shard, transactional_id.to_string());
        if from_client {
            // Kafka answers once Prepare* is durable and writes the markers afterwards, so a
            // client that reads right after commitTransaction() may find its records not yet
            // stable (and its group offsets UNSTABLE_OFFSET_COMMIT). Sluice answers once the
            // markers are written and the transaction is complete, up to a bound: what a
            // committed producer wrote is then readable at once, and its next transaction
            // does not meet CONCURRENT_TRANSACTIONS. The cost is one marker append (one
            // fdatasync) on the commit's latency.
            let _ = compio::time::timeout(END_TXN_MARKERS_WAIT, done.recv()).await;
        }
        Ok(answer)
    }

    /// The transaction version the coordinator uses for its own aborts (Kafka's finalized
    /// `transaction.version`).
    fn server_version(&self) -> TxnVersion {
        TxnVersion(self.config.version)
    }

    /// A snapshot of one id (DescribeTransactions).
    pub fn describe(&self, shard: &Shard, transactional_id: &str) -> Result<TxnView, TxnError> {
        let partition = partition_for(transactional_id, self.partitions(shard));
        self.serving(partition)?;
        let txns = self.txns.borrow();
        let m = txns
            .get(transactional_id)
            .filter(|m| m.state != TxnState::Dead)
            .ok_or(TxnError::TransactionalIdNotFound)?;
        Ok(view(m))
    }

    /// Every loaded id of this shard (ListTransactions filters them).
    pub fn list(&self) -> Vec<TxnView> {
        let loads = self.loads.borrow();
        self.txns
            .borrow()
            .values()
            .filter(|m| loads.get(&m.state_partition).is_some_and(|l| l.loaded))
            .map(view)
            .collect()
    }

    /// True when this shard leads and has loaded every state partition it leads.
    pub fn all_loaded(&self) -> bool {
        self.loads.borrow().values().all(|l| l.loaded)
    }

    fn with_txn<T>(
        &self,
        transactional_id: &str,
        f: impl FnOnce(&TxnMetadata) -> Result<T, TxnError>,
    ) -> Result<T, TxnError> {
        let txns = self.txns.borrow();
        let m = txns
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        f(m)
    }

    fn set_pending(&self, transactional_id: &str, pending: bool) {
        if let Some(m) = self.txns.borrow_mut().get_mut(transactional_id) {
            m.pending = pending;
        }
        if !pending {
            self.settled.notify_all();
        }
    }

    /// Appends `next` (or a tombstone when `next` is None, for `id`) to the state partition
    /// with acks=-1 and applies it once replicated, if this load is still the current one.
    async fn persist(
        &self,
        shard: &Rc<Shard>,
        partition: i32,
        coordinator_epoch: i32,
        mut next: TxnMetadata,
    ) -> Result<(), TxnError> {
        let id = next.transactional_id.clone();
        next.pending = false;
        next.state_partition = partition;
        let value = (next.state != TxnState::Dead).then(|| records::encode_value(&next));
        self.set_pending(&id, true);
        let result = self
            .append(shard, partition, records::encode_key(&id), value)
            .await;
        self.set_pending(&id, false);
        result?;
        if self.serving(partition) != Ok(coordinator_epoch) {
            // Deposed (or reloaded under a newer epoch) while the append was in flight: the
            // next coordinator has this record in its log.
            return Err(TxnError::NotCoordinator);
        }
        let mut txns = self.txns.borrow_mut();
        if next.state == TxnState::Dead {
            txns.remove(&id);
        } else {
            txns.insert(id, next);
        }
        Ok(())
    }

    async fn append(
        &self,
        shard: &Rc<Shard>,
        partition: i32,
        key: Bytes,
        value: Option<Bytes>,
    ) -> Result<(), TxnError> {
        let log = shard
            .partition(TXN_STATE_TOPIC, partition)
            .ok_or(TxnError::NotCoordinator)?;
        let batches = crate::group::records::encode_batches(&[(key, value)], now_ms());
        let submitted = {
            let _guard = log.append_lock.lock().await;
            log.submit_replicated(batches, now_ms(), -1)
        };
        let result = match submitted {
            Ok(pending) => pending.wait().await.map(|_| ()),
            Err(failure) => Err(failure),
        };
        result.map_err(|failure| append_error(partition, failure))
    }

    /// Writes the markers of `id`'s Prepare* transaction in the background, then Complete*;
    /// the receiver hears when that attempt ended (completed, or given up to a newer
    /// coordinator).
    fn spawn_markers(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        id: String,
    ) -> async_channel::Receiver<()> {
        let (done, ended) = async_channel::bounded(1);
        let this = Rc::clone(self);
        let shard = Rc::clone(shard);
        compio::runtime::spawn(async move {
            this.complete_transaction(&shard, id).await;
            let _ = done.try_send(());
        })
        .detach();
        ended
    }

    async fn complete_transaction(self: &Rc<Self>, shard: &Rc<Shard>, id: String) {
        let partition = partition_for(&id, self.partitions(shard));
        let Ok(coordinator_epoch) = self.serving(partition) else {
            return;
        };
        let Some(m) = self.txns.borrow().get(&id).cloned() else {
            return;
        };
        if !m.state.is_prepare() {
            return;
        }
        let commit = m.state == TxnState::PrepareCommit;
        let mut left: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (topic, p) in &m.partitions {
            left.entry(topic.clone()).or_default().push(*p);
        }
        let mut backoff = MARKER_RETRY_MIN;
        loop {
            if shard.is_stopping() || self.serving(partition) != Ok(coordinator_epoch) {
                return;
            }
            match write_markers_once(shard, &m, commit, coordinator_epoch, &mut left).await {
                MarkerProgress::Done => break,
                MarkerProgress::Fenced(code) => {
                    tracing::warn!(target: "txn", transactional_id = %id, error = %kafka_wire::error::error_name(code), "marker write fenced; leaving the transaction to the current coordinator");
                    return;
                }
                MarkerProgress::Retry => {
                    compio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MARKER_RETRY_MAX);
                }
            }
        }
        let Some(current) = self.txns.borrow().get(&id).cloned() else {
            return;
        };
        if current.state != m.state || current.producer_epoch != m.producer_epoch {
            return;
        }
        let next = current.complete(now_ms());
        if let Err(e) = self
            .persist(shard, partition, coordinator_epoch, next)
            .await
        {
            // The Prepare* record stays the last one: whoever loads the partition next
            // writes the markers again (they are idempotent) and completes.
            tracing::warn!(target: "txn", transactional_id = %id, error = ?e, "transaction completion not persisted");
            if e != TxnError::NotCoordinator {
                let _ = self.spawn_markers(shard, id);
            }
        }
    }

    /// Aborts timed-out transactions (fencing their producer) and removes expired ids.
    async fn tick(self: &Rc<Self>, shard: &Rc<Shard>, remove_expired: bool) {
        let now = now_ms();
        let (timed_out, expired): (Vec<_>, Vec<_>) = {
            let loads = self.loads.borrow();
            let txns = self.txns.borrow();
            let served = |m: &TxnMetadata| loads.get(&m.state_partition).is_some_and(|l| l.loaded);
            let timed_out = txns
                .values()
                .filter(|m| served(m) && m.timed_out(now))
                .map(|m| (m.transactional_id.clone(), m.producer_id, m.producer_epoch))
                .collect();
            let expired = if remove_expired {
                txns.values()
                    .filter(|m| served(m) && m.expired(now, self.config.id_expiration_ms))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            (timed_out, expired)
        };
        for (id, producer_id, epoch) in timed_out {
            // Earlier aborts of this loop awaited: the transaction may have ended, and its
            // producer begun the next one, since it was found timed out.
            let still = self.txns.borrow().get(&id).is_some_and(|m| {
                m.timed_out(now_ms()) && (m.producer_id, m.producer_epoch) == (producer_id, epoch)
            });
            if !still {
                continue;
            }
            tracing::info!(target: "txn", transactional_id = %id, producer_id, epoch, "aborting a timed-out transaction");
            let bumped = epoch.saturating_add(1);
            if let Err(e) = self
                .end_txn(
                    shard,
                    &id,
                    producer_id,
                    bumped,
                    false,
                    false,
                    self.server_version(),
                )
                .await
            {
                tracing::warn!(target: "txn", transactional_id = %id, error = ?e, "timed-out transaction not aborted yet");
            }
        }
        for mut m in expired {
            let partition = m.state_partition;
            let Ok(coordinator_epoch) = self.serving(partition) else {
                continue;
            };
            tracing::info!(target: "txn", transactional_id = %m.transactional_id, "removing an expired transactional id");
            m.state = TxnState::Dead;
            if let Err(e) = self.persist(shard, partition, coordinator_epoch, m).await {
                tracing::warn!(target: "txn", error = ?e, "expired transactional id not removed yet");
            }
        }
    }
}

fn view(m: &TxnMetadata) -> TxnView {
    TxnView {
        transactional_id: m.transactional_id.clone(),
        producer_id: m.producer_id,
        producer_epoch: m.producer_epoch,
        state: m.state,
        timeout_ms: m.timeout_ms,
        start_ms: if m.state == TxnState::Empty {
            -1
        } else {
            m.start_ms
        },
        partitions: m
            .partitions_by_topic()
            .into_iter()
            .map(|(t, p)| (t.to_string(), p))
            .collect(),
    }
}

/// Kafka's `TransactionStateManager.appendTransactionToLog` error mapping.
fn append_error(partition: i32, failure: AppendFailure) -> TxnError {
    use replication::ReplicaError;
    match failure {
        AppendFailure::Retired
        | AppendFailure::Storage(_)
        | AppendFailure::Replica(
            ReplicaError::NotLeaderOrFollower | ReplicaError::FencedLeaderEpoch,
        ) => TxnError::NotCoordinator,
        other => {
            tracing::warn!(target: "txn", partition, error = ?other, "transaction state append not replicated");
            TxnError::CoordinatorNotAvailable
        }
    }
}

async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, TxnError> {
    let id = crate::controller::frontend::on_control(shard, |s| {
        Box::pin(async move { s.control().allocate_producer_id().map_err(|e| e.message) })
    })
    .await;
    match id {
        Some(Ok(id)) => Ok(id),
        Some(Err(e)) => {
            tracing::error!(target: "txn", error = %e, "producer id allocation failed");
            Err(TxnError::CoordinatorNotAvailable)
        }
        None => Err(TxnError::CoordinatorNotAvailable),
    }
}

enum MarkerProgress {
    Done,
    Retry,
    /// A partition refused the marker for a newer producer epoch or coordinator.
    Fenced(i16),
}

/// One round of marker writes to the leaders of the partitions in `left`; the partitions
/// that took it (or whose topic is gone) leave `left`.
async fn write_markers_once(
    shard: &Rc<Shard>,
    m: &TxnMetadata,
    commit: bool,
    coordinator_epoch: i32,
    left: &mut BTreeMap<String, Vec<i32>>,
) -> MarkerProgress {
    let metadata = shard.metadata();
    // Partitions of deleted topics (or partitions) need no marker (Kafka drops them too).
    left.retain(|topic, partitions| {
        let Some(t) = metadata.topic(topic) else {
            tracing::info!(target: "txn", topic, "topic gone; its transaction markers are dropped");
            return false;
        };
        partitions.retain(|p| *p < t.partitions);
        !partitions.is_empty()
    });
    if left.is_empty() {
        return MarkerProgress::Done;
    }
    let mut by_leader: BTreeMap<i32, Vec<(String, Vec<i32>)>> = BTreeMap::new();
    for (topic, partitions) in left.iter() {
        let t = metadata.topic(topic).expect("kept above");
        for p in partitions {
            if let Some(leader) = t.partition_state(*p).and_then(|s| s.leader) {
                let list = by_leader.entry(leader).or_default();
                match list.iter_mut().find(|(name, _)| name == topic) {
                    Some((_, ps)) => ps.push(*p),
                    None => list.push((topic.clone(), vec![*p])),
                }
            }
        }
    }
    let mut fenced = None;
    for (leader, topics) in by_leader {
        let request = marker_request(m, commit, coordinator_epoch, &topics);
        let local = LOCAL_MARKER_WRITER
            .get()
            .filter(|_| leader == shard.shared.node_id());
        let response = match local {
            Some(write) => Some(write(Rc::clone(shard), request).await),
            None => send_markers(shard, leader, &request).await,
        };
        let Some(response) = response else {
            continue;
        };
        for result in response.markers {
            for topic in result.topics {
                let name = topic.name.0.to_string();
                for p in topic.partitions {
                    let code = p.error_code;
                    if code == 0 {
                        if let Some(ps) = left.get_mut(&name) {
                            ps.retain(|x| *x != p.partition_index);
                        }
                    } else if code == ResponseError::InvalidProducerEpoch.code()
                        && m.client_version.bumps_epoch()
                    {
                        // A transaction version 2 marker is refused once the partition's
                        // producer epoch is at or past it: it was written before (a retry
                        // after a lost answer, or markers re-sent after a failover). No
                        // later transaction of the producer can have reached the partition
                        // first: adding its partitions waits for this one to complete.
                        if let Some(ps) = left.get_mut(&name) {
                            ps.retain(|x| *x != p.partition_index);
                        }
                    } else if code == ResponseError::InvalidProducerEpoch.code()
                        || code == ResponseError::TransactionCoordinatorFenced.code()
                    {
                        fenced = Some(code);
                    } else {
                        tracing::debug!(target: "txn", topic = %name, partition = p.partition_index, error = %kafka_wire::error::error_name(code), "marker write to be retried");
                    }
                }
            }
        }
    }
    left.retain(|_, ps| !ps.is_empty());
    match fenced {
        Some(code) => MarkerProgress::Fenced(code),
        None if left.is_empty() => MarkerProgress::Done,
        None => MarkerProgress::Retry,
    }
}

fn marker_request(
    m: &TxnMetadata,
    commit: bool,
    coordinator_epoch: i32,
    topics: &[(String, Vec<i32>)],
) -> WriteTxnMarkersRequest {
    let topics = topics
        .iter()
        .map(|(name, partitions)| {
            WritableTxnMarkerTopic::default()
                .with_name(kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_string(name.clone()),
                ))
                .with_partition_indexes(partitions.clone())
        })
        .collect();
    let mut marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.producer_epoch)
        .with_transaction_result(commit)
        .with_topics(topics)
        .with_coordinator_epoch(coordinator_epoch);
    if m.client_version.bumps_epoch() {
        marker.unknown_tagged_fields.insert(
            super::MARKER_VERSION_TAG,
            Bytes::copy_from_slice(&[m.client_version.0 as u8]),
        );
    }
    if m.txn_sequence != 0 {
        marker.unknown_tagged_fields.insert(
            super::TXN_SEQUENCE_TAG,
            Bytes::copy_from_slice(&m.txn_sequence.to_be_bytes()),
        );
    }
    WriteTxnMarkersRequest::default().with_markers(vec![marker])
}

/// WriteTxnMarkers v1 to another broker's Kafka listener; `None` when it cannot be reached.
async fn send_markers(
    shard: &Rc<Shard>,
    leader: i32,
    request: &WriteTxnMarkersRequest,
) -> Option<WriteTxnMarkersResponse> {
    super::peer::call_broker(shard, leader, request, 1, MARKER_REQUEST_TIMEOUT)
        .await
        .map_err(|error| tracing::debug!(target: "txn", leader, %error, "marker request failed"))
        .ok()
}

/// Aborts timed-out transactions every
/// `abort_timed_out_transaction_cleanup_interval_ms` and removes expired ids every
/// `remove_expired_transaction_cleanup_interval_ms`, until the shard stops.
async fn timer_loop(backend: Rc<TxnBackend>, shard: Rc<Shard>) {
    use futures_util::future::{Either, select};
    let abort_every = Duration::from_millis(
        backend
            .config
            .abort_timed_out_transaction_cleanup_interval_ms as u64,
    );
    let expire_every = backend
        .config
        .remove_expired_transaction_cleanup_interval_ms
        .max(1) as u64;
    let mut last_expiry = now_ms();
    loop {
        let stop = shard.stop_notify.notified();
        if shard.is_stopping() {
            return;
        }
        if let Either::Right(_) = select(Box::pin(compio::time::sleep(abort_every)), stop).await {
            return;
        }
        let now = now_ms();
        let remove_expired = now.saturating_sub(last_expiry) as u64 >= expire_every;
        if remove_expired {
            last_expiry = now;
        }
        backend.tick(&shard, remove_expired).await;
    }
}
