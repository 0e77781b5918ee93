//! Follower fetchers: one task per (shard, leader broker) sending the follower replicas'
//! Fetch and OffsetForLeaderEpoch requests to the leader over the Kafka protocol (Kafka's
//! ReplicaFetcherThread, one per shard instead of one per broker pair).
//!
//! Back of the envelope: a shard following P partitions of one leader sends one Fetch per
//! round for all of them (one TCP connection, one request in flight), so the leader sees
//! shards x leaders connections, not partitions. An idle round long-polls for
//! `replica.fetch.wait.max.ms` (500 ms). A busy round carries up to `FETCH_MAX_BYTES` (16 MiB)
//! whose batches are zero-copy slices of one response buffer from the shard's frame pool.
//!
//! Owns: the per-shard fetcher registry, each fetcher's queue (one entry per partition: a
//! newer request replaces an older one the replica gave up on), the connection's lifecycle
//! (connect on demand, reconnect with a backoff, end after `FETCHER_IDLE_MS` without work),
//! turning queued `replication::Message`s into Kafka requests and the answers back into
//! `FetchResponse` / `OffsetForLeaderEpochResponse`, and splitting fetched records into
//! `Batch`es (a trailing partial batch is dropped; the next fetch starts at its offset).
//! Requests are not pipelined behind a long poll: a partition that just got batches asks
//! again one append + sync later, so a round waits up to `RETURN_WAIT_MS` for such partitions
//! and long-polls only when they are all in it (`Fetcher::settle`); otherwise acks=all would
//! wait up to replica.fetch.wait.max.ms behind another partition's empty long poll.
//! Does not own: what to send or when (the replica core, `crate::replica`), the wire codec
//! and framing (`client.rs`).
//! Invariants:
//! - Every request a fetcher takes is answered exactly once through `FetcherEnv::deliver`
//!   (leader's answer, or an error on connect failure, broken connection or timeout), so a
//!   replica never waits `request.timeout.ms` on its own timer. A request replaced in the queue
//!   by a newer one of the same partition is dropped unanswered: its replica no longer waits.
//! - `deliver` (which may queue the replica's next request) is never called while the queue
//!   or the registry is borrowed, and never from inside `send_to_leader`.
//! - Bounded: `PENDING_PER_FETCHER_MAX` queued partitions, one request in flight, response
//!   frames up to `client::RESPONSE_BYTES_MAX`, every wait with a deadline.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::sync::{Notified, Notify};
use futures_util::future::{Either, select};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use replication::{
    Batch, EpochEndOffset, FetchData, LeaderEpoch, Message, PartitionId, ReplicaError,
};

use super::client::{ClientError, LeaderConnection};
use crate::runtime::Shard;
use crate::runtime::frame_pool::FramePool;

/// Fetch version sent: the last with topic names (v13 moves to topic ids) and `replica_id`
/// in the body (v15 moves it to `replica_state`).
pub const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version sent: the newest, with `replica_id` (v3+).
pub const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Fetch max_bytes: the most one answer carries (the first batch always comes whole, KIP-74).
pub const FETCH_MAX_BYTES: i32 = 16 * 1024 * 1024;
/// Fetch partition_max_bytes.
pub const PARTITION_MAX_BYTES: i32 = 8 * 1024 * 1024;
/// Partitions queued per fetcher; a shard has one entry per follower partition at most, so
/// this is only reached with more than this many partitions of one leader on one shard.
pub const PENDING_PER_FETCHER_MAX: usize = 100_000;
/// A fetcher with no requests for this long closes its connection and ends.
pub const FETCHER_IDLE_MS: u64 = 60_000;
/// Reconnect backoff: doubles from the first to the last after each failed attempt.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 100;
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 5_000;
/// Connect attempts give up after this (or request.timeout.ms, if shorter).
pub const CONNECT_TIMEOUT_MAX_MS: u64 = 10_000;
/// A Fetch may wait `max_wait_ms` at the leader; its deadline is at least this much longer.
pub const FETCH_DEADLINE_MARGIN_MS: u64 = 1_000;
/// How long a round waits for the partitions whose last answer moved them (batches, or an
/// OffsetForLeaderEpoch end) to ask again before it long-polls without them (see
/// `Fetcher::settle`). Covers a follower's append and fdatasync.
pub const RETURN_WAIT_MS: u64 = 100;

const _: () = assert!(PARTITION_MAX_BYTES <= FETCH_MAX_BYTES);
const _: () = assert!(
    FETCH_MAX_BYTES as usize + engine::limits::MAX_BATCH_BYTES_LIMIT as usize
        <= super::client::RESPONSE_BYTES_MAX
);
const _: () =
    assert!(RECONNECT_BACKOFF_MIN_MS > 0 && RECONNECT_BACKOFF_MIN_MS <= RECONNECT_BACKOFF_MAX_MS);

/// Queues a follower request (`Message::Fetch` or `Message::OffsetForLeaderEpoch`) of
/// `topic`-`index` for the broker `leader`. The answer comes back through
/// `crate::replica::on_leader_response` on this shard, always later (never from inside this
/// call).
pub fn send_to_leader(
    shard: &Rc<Shard>,
    leader: i32,
    topic: &str,
    index: i32,
    message: Message<Bytes>,
) {
    let cluster = &shard.shared.cluster;
    let fetchers = shard.services.get_or_init(Fetchers::default);
    let existing = fetchers.0.borrow().get(&leader).cloned();
    let fetcher = match existing {
        Some(f) => f,
        None => {
            let settings = FetcherSettings {
                shard: shard.id.0,
                node_id: shard.shared.node_id(),
                leader,
                max_wait_ms: cluster.replica_fetch_wait_max_ms.max(0),
                request_timeout: Duration::from_millis(
                    shard.config().cluster.request_timeout_ms.max(1) as u64,
                ),
                idle_timeout: Duration::from_millis(FETCHER_IDLE_MS),
                return_wait: Duration::from_millis(RETURN_WAIT_MS),
            };
            let env = Rc::new(ShardEnv {
                shard: Rc::clone(shard),
            });
            let fetcher = Fetcher::new(env, settings);
            fetchers.0.borrow_mut().insert(leader, Rc::clone(&fetcher));
            let task = Rc::clone(&fetcher);
            compio::runtime::spawn(async move {
                Rc::clone(&task).run().await;
                // No await between `run` deciding to end (queue empty) and this removal, so
                // no request can be queued on a fetcher that is gone.
                let mut fetchers = fetchers.0.borrow_mut();
                if fetchers.get(&leader).is_some_and(|f| Rc::ptr_eq(f, &task)) {
                    fetchers.remove(&leader);
                }
            })
            .detach();
            fetcher
        }
    };
    fetcher.enqueue(topic, index, message);
}

/// What a fetcher needs from its shard (a trait so tests can run one against a fake leader).
pub trait FetcherEnv {
    /// The leader's advertised Kafka listener as "host:port", if the metadata knows it.
    fn leader_addr(&self, leader: i32) -> Option<String>;
    /// Hands an answer to the partition's replica.
    fn deliver(&self, topic: &str, index: i32, message: Message<Bytes>);
    /// The leader's log start offset for a partition it answered (Kafka's followers follow
    /// it, so DeleteRecords and the leader's retention reach them).
    fn leader_log_start(&self, _topic: &str, _index: i32, _log_start_offset: i64) {}
    fn is_stopping(&self) -> bool;
    /// Notified when `is_stopping` becomes true.
    fn stop_notify(&self) -> Rc<Notify>;
    fn frame_pool(&self) -> FramePool;
}

/// A fetcher's fixed settings.
#[derive(Debug, Clone)]
pub struct FetcherSettings {
    /// The shard this fetcher runs on (for logs).
    pub shard: usize,
    /// This broker's node id (`replica_id` in every request).
    pub node_id: i32,
    pub leader: i32,
    /// replica.fetch.wait.max.ms.
    pub max_wait_ms: i32,
    /// request.timeout.ms: the deadline of a connect and of an OffsetForLeaderEpoch answer.
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    /// `RETURN_WAIT_MS` (see `Fetcher::settle`).
    pub return_wait: Duration,
}

/// One leader's fetcher on one shard.
pub struct Fetcher {
    env: Rc<dyn FetcherEnv>,
    settings: FetcherSettings,
    /// Requests not yet sent, one per partition.
    pending: RefCell<BTreeMap<(String, i32), Request>>,
    /// Notified when a request is queued.
    wake: Rc<Notify>,
    /// Whether the queue overflowed (logged once per overflow episode).
    overflowed: Cell<bool>,
    /// Partitions whose last answer moved them and that have not asked again yet: they will
    /// within one append and sync, and should not then wait behind a long poll.
    returning: RefCell<BTreeSet<(String, i32)>>,
}

impl Fetcher {
    pub fn new(env: Rc<dyn FetcherEnv>, settings: FetcherSettings) -> Rc<Fetcher> {
        Rc::new(Fetcher {
            env,
            settings,
            pending: RefCell::new(BTreeMap::new()),
            wake: Rc::new(Notify::new()),
            overflowed: Cell::new(false),
            returning: RefCell::new(BTreeSet::new()),
        })
    }

    /// Queues `message` for `topic`-`index`, replacing that partition's queued request.
    pub fn enqueue(&self, topic: &str, index: i32, message: Message<Bytes>) {
        let Some(request) = Request::from_message(message) else {
            tracing::warn!(target: "broker::replica", topic, index, "send_to_leader: not a Fetch or OffsetForLeaderEpoch; dropped");
            return;
        };
        let mut pending = self.pending.borrow_mut();
        let key = (topic.to_string(), index);
        if pending.len() >= PENDING_PER_FETCHER_MAX && !pending.contains_key(&key) {
            // The replica resends after request.timeout.ms.
            if !self.overflowed.replace(true) {
                tracing::warn!(target: "broker::replica", shard = self.settings.shard, leader = self.settings.leader, limit = PENDING_PER_FETCHER_MAX, "fetcher queue full; dropping follower requests");
            }
            return;
        }
        self.returning.borrow_mut().remove(&key);
        pending.insert(key, request);
        drop(pending);
        self.wake.notify_all();
    }

    /// Queued requests (tests, metrics).
    pub fn pending_len(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Serves the queue until the shard stops or no request came for `idle_timeout`.
    pub async fn run(self: Rc<Self>) {
        // Registered once for the fetcher's life (not per wait): the shard's stop signal has
        // a waker per connection, and each registration scans that list. Once fired it stays
        // ready.
        let stop_notify = self.env.stop_notify();
        let mut stop = stop_notify.notified();
        let (shard, leader) = (self.settings.shard, self.settings.leader);
        let mut connection: Option<LeaderConnection> = None;
        let mut backoff = Backoff::default();
        let mut link = Link::Unknown;
        loop {
            if self.env.is_stopping() {
                return;
            }
            if self.pending.borrow().is_empty() {
                if !self.wait_for_work(&mut stop).await {
                    return;
                }
                continue;
            }
            if connection.is_none() {
                if let Some(retry_at) = backoff.retry_at.filter(|t| *t > Instant::now()) {
                    // Still backing off: answer at once so replicas back off too. What the
                    // answers queue themselves waits for the retry (no busy loop).
                    self.fail_pending(ReplicaError::NotLeaderOrFollower);
                    let woke = self.wake.notified();
                    let idle = self.pending.borrow().is_empty();
                    let sleep =
                        compio::time::sleep(retry_at.saturating_duration_since(Instant::now()));
                    if idle {
                        or_stop(&mut stop, &*self.env, select(woke, Box::pin(sleep))).await;
                    } else {
                        or_stop(&mut stop, &*self.env, Box::pin(sleep)).await;
                    }
                    continue;
                }
                match self.connect(&mut stop).await {
                    // The link counts as up (and the backoff resets) only after an answer: a
                    // leader that accepts and then drops us must not reset the backoff.
                    Some(Ok(c)) => connection = Some(c),
                    Some(Err(e)) => {
                        link.failed(shard, leader, &e);
                        backoff.failed();
                        self.fail_pending(ReplicaError::NotLeaderOrFollower);
                        continue;
                    }
                    None => return,
                }
            }
            let Some(conn) = connection.as_mut() else {
                continue;
            };
            let Some(max_wait_ms) = self.settle(&mut stop).await else {
                return;
            };
            let (epochs, fetches) = self.take_round();
            let result = self
                .serve_round(conn, &mut stop, max_wait_ms, &epochs, &fetches)
                .await;
            match result {
                Some(Ok(())) => {
                    if link == Link::Down {
                        tracing::info!(target: "broker::replica", shard, leader, addr = conn.addr(), "connected to the leader again");
                    }
                    link = Link::Up;
                    backoff = Backoff::default();
                }
                Some(Err(e)) => {
                    link.failed(shard, leader, &e);
                    connection = None;
                    self.returning.borrow_mut().clear();
                    backoff.failed();
                    // `serve_round` answered what it had taken; the rest fails at once.
                    self.fail_pending(ReplicaError::NotLeaderOrFollower);
                }
                None => return,
            }
        }
    }

    /// Waits until a request is queued (true), or the shard stops or the fetcher was idle for
    /// `idle_timeout` (false).
    async fn wait_for_work(&self, stop: &mut Notified) -> bool {
        let woke = self.wake.notified();
        if !self.pending.borrow().is_empty() {
            return true;
        }
        let idle = compio::time::sleep(self.settings.idle_timeout);
        match or_stop(stop, &*self.env, select(woke, Box::pin(idle))).await {
            Some(Either::Left(_)) => true,
            Some(Either::Right(_)) => !self.pending.borrow().is_empty(),
            None => false,
        }
    }

    /// The max_wait_ms of the next Fetch. A long poll sent without a partition that is about
    /// to ask again (its last answer carried batches: it appends, syncs, then fetches) would
    /// hold that partition's next fetch, and so acks=all, for up to max_wait_ms. So wait up to
    /// `RETURN_WAIT_MS` for such partitions, and long-poll only if all came back; otherwise
    /// fetch without waiting at the leader so the stragglers are served by the next round.
    /// `None` when the shard stopped.
    async fn settle(&self, stop: &mut Notified) -> Option<i32> {
        let max_wait_ms = self.settings.max_wait_ms;
        if max_wait_ms == 0 {
            return Some(0);
        }
        let deadline = Instant::now() + self.settings.return_wait;
        loop {
            let woke = self.wake.notified();
            if self.returning.borrow().is_empty() {
                return Some(max_wait_ms);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.returning.borrow_mut().clear();
                return Some(0);
            }
            let sleep = compio::time::sleep(left);
            or_stop(stop, &*self.env, select(woke, Box::pin(sleep))).await?;
        }
    }

    /// `None` when the shard stopped.
    async fn connect(&self, stop: &mut Notified) -> Option<Result<LeaderConnection, ClientError>> {
        let Some(addr) = self.env.leader_addr(self.settings.leader) else {
            return Some(Err(ClientError::Connect {
                addr: format!("broker {}", self.settings.leader),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not in the cluster metadata",
                ),
            }));
        };
        let timeout = self
            .settings
            .request_timeout
            .min(Duration::from_millis(CONNECT_TIMEOUT_MAX_MS));
        let pool = self.env.frame_pool();
        or_stop(
            stop,
            &*self.env,
            Box::pin(LeaderConnection::connect(&addr, timeout, pool)),
        )
        .await
    }

    /// Takes the whole queue: OffsetForLeaderEpoch requests, then fetches (each sorted by
    /// partition).
    fn take_round(&self) -> (Vec<Queued<EpochRequest>>, Vec<Queued<FetchItem>>) {
        let taken = std::mem::take(&mut *self.pending.borrow_mut());
        self.overflowed.set(false);
        let mut epochs = Vec::new();
        let mut fetches = Vec::new();
        for ((topic, index), request) in taken {
            match request {
                Request::Epoch(r) => epochs.push(Queued {
                    topic,
                    index,
                    request: r,
                }),
                Request::Fetch(r) => fetches.push(Queued {
                    topic,
                    index,
                    request: r,
                }),
            }
        }
        (epochs, fetches)
    }

    /// Sends the round's OffsetForLeaderEpoch, then its Fetch, delivering each answer. On a
    /// transport error every request of the round not yet answered gets an error, and the
    /// error is returned (the connection is then dropped). `None` when the shard stopped.
    async fn serve_round(
        &self,
        conn: &mut LeaderConnection,
        stop: &mut Notified,
        max_wait_ms: i32,
        epochs: &[Queued<EpochRequest>],
        fetches: &[Queued<FetchItem>],
    ) -> Option<Result<(), ClientError>> {
        if !epochs.is_empty() {
            let request = offset_for_leader_epoch_request(self.settings.node_id, epochs);
            let call = conn.call(
                &request,
                OFFSET_FOR_LEADER_EPOCH_VERSION,
                self.settings.request_timeout,
            );
            match or_stop(stop, &*self.env, Box::pin(call)).await? {
                Ok(response) => {
                    for (queued, result) in epochs.iter().zip(epoch_answers(epochs, &response)) {
                        if result.is_ok() {
                            self.expect_return(queued);
                        }
                        self.deliver_epoch(queued, result);
                    }
                }
                Err(e) => {
                    let error = transport_error(&e);
                    for queued in epochs {
                        self.deliver_epoch(queued, Err(error));
                    }
                    for queued in fetches {
                        self.deliver_fetch(queued, Err(error));
                    }
                    return Some(Err(e));
                }
            }
        }
        if !fetches.is_empty() {
            let request = fetch_request(&self.settings, max_wait_ms, fetches);
            let deadline = self.settings.request_timeout.max(Duration::from_millis(
                self.settings.max_wait_ms as u64 + FETCH_DEADLINE_MARGIN_MS,
            ));
            let call = conn.call(&request, FETCH_VERSION, deadline);
            match or_stop(stop, &*self.env, Box::pin(call)).await? {
                Ok(response) => {
                    for (topic, index, log_start) in log_starts(&response) {
                        self.env.leader_log_start(topic, index, log_start);
                    }
                    for (queued, result) in fetches.iter().zip(fetch_answers(fetches, response)) {
                        if result.as_ref().is_ok_and(|d| !d.batches.is_empty()) {
                            self.expect_return(queued);
                        }
                        self.deliver_fetch(queued, result);
                    }
                }
                Err(e) => {
                    let error = transport_error(&e);
                    for queued in fetches {
                        self.deliver_fetch(queued, Err(error));
                    }
                    return Some(Err(e));
                }
            }
        }
        Some(Ok(()))
    }

    /// Marks a partition as about to ask again (before its answer is delivered, which may
    /// queue that request at once).
    fn expect_return<R>(&self, queued: &Queued<R>) {
        self.returning
            .borrow_mut()
            .insert((queued.topic.clone(), queued.index));
    }

    /// Answers every queued request with `error`.
    fn fail_pending(&self, error: ReplicaError) {
        let (epochs, fetches) = self.take_round();
        for queued in &epochs {
            self.deliver_epoch(queued, Err(error));
        }
        for queued in &fetches {
            self.deliver_fetch(queued, Err(error));
        }
    }

    fn deliver_epoch(
        &self,
        queued: &Queued<EpochRequest>,
        result: Result<EpochEndOffset, ReplicaError>,
    ) {
        let message = Message::OffsetForLeaderEpochResponse {
            request_id: queued.request.request_id,
            partition: queued.request.partition,
            result,
        };
        self.env.deliver(&queued.topic, queued.index, message);
    }

    fn deliver_fetch(
        &self,
        queued: &Queued<FetchItem>,
        result: Result<FetchData<Bytes>, ReplicaError>,
    ) {
        let message = Message::FetchResponse {
            request_id: queued.request.request_id,
            partition: queued.request.partition,
            result,
        };
        self.env.deliver(&queued.topic, queued.index, message);
    }
}

/// How a fetched `records` field ended after its complete batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitEnd {
    /// Every byte belonged to a complete batch.
    Complete,
    /// `bytes` trailing bytes of a batch cut off by the leader's size limit (dropped).
    Partial { bytes: usize },
    /// A batch at byte `at` is not a v2 batch with sane lengths (it and the rest dropped).
    Invalid { at: usize },
}

/// Appends each complete v2 batch of `records` to `out` as a `Batch` whose payload is a
/// zero-copy slice of `records`: record_count = last_offset_delta + 1 (the offsets the batch
/// spans), leader_epoch = the header's partition leader epoch.
pub fn split_batches(records: &Bytes, out: &mut Vec<Batch<Bytes>>) -> SplitEnd {
    use engine::limits::{BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES};
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < BATCH_LENGTH_PREFIX_BYTES {
            return SplitEnd::Partial { bytes: rest.len() };
        }
        let batch_length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let Ok(batch_length) = usize::try_from(batch_length) else {
            return SplitEnd::Invalid { at };
        };
        let total = batch_length + BATCH_LENGTH_PREFIX_BYTES;
        if total < BATCH_HEADER_BYTES {
            return SplitEnd::Invalid { at };
        }
        if total > rest.len() {
            return SplitEnd::Partial { bytes: rest.len() };
        }
        let Some(header) = engine::batch::BatchHeader::parse(&rest[..total]) else {
            return SplitEnd::Invalid { at };
        };
        if header.magic != engine::batch::MAGIC_V2 || header.last_offset_delta() < 0 {
            return SplitEnd::Invalid { at };
        }
        out.push(Batch {
            base_offset: header.base_offset(),
            record_count: header.last_offset_delta() as u32 + 1,
            leader_epoch: LeaderEpoch(header.leader_epoch()),
            payload: records.slice(at..at + total),
        });
        at += total;
    }
    SplitEnd::Complete
}

/// The replica's error for a Kafka error code in a leader's answer. Codes the core has no
/// name for become NotLeaderOrFollower: the replica backs off and asks again.
pub fn replica_error(code: i16) -> ReplicaError {
    match code {
        1 => ReplicaError::OffsetOutOfRange,
        74 => ReplicaError::FencedLeaderEpoch,
        75 => ReplicaError::UnknownLeaderEpoch,
        _ => ReplicaError::NotLeaderOrFollower,
    }
}

// ---------------------------------------------------------------------------------------------

/// A shard's follower fetchers by leader node id (a per-shard service: `runtime::services`).
#[derive(Default)]
pub struct Fetchers(RefCell<HashMap<i32, Rc<Fetcher>>>);

struct ShardEnv {
    shard: Rc<Shard>,
}

impl FetcherEnv for ShardEnv {
    fn leader_addr(&self, leader: i32) -> Option<String> {
        let metadata = self.shard.metadata();
        let broker = metadata.brokers.get(&leader)?;
        Some(if broker.host.contains(':') {
            format!("[{}]:{}", broker.host, broker.port)
        } else {
            format!("{}:{}", broker.host, broker.port)
        })
    }

    fn deliver(&self, topic: &str, index: i32, message: Message<Bytes>) {
        crate::replica::on_leader_response(&self.shard, topic, index, message);
    }

    /// Moves this follower's log start up to the leader's, no further than its own high
    /// watermark (the engine deletes only below it); the next fetches move it the rest.
    fn leader_log_start(&self, topic: &str, index: i32, log_start_offset: i64) {
        let Some(p) = self.shard.partition(topic, index) else {
            return;
        };
        let target = log_start_offset.min(p.high_watermark());
        if target <= p.log_start_offset() || p.is_retired() {
            return;
        }
        compio::runtime::spawn(async move {
            match p.log.delete_records_before(target).await {
                Ok(_) => p.after_log_start_moved(),
                Err(error) => {
                    tracing::warn!(target: "broker::replica", topic = %p.topic, partition = p.index, %error, "following the leader's log start failed")
                }
            }
        })
        .detach();
    }

    fn is_stopping(&self) -> bool {
        self.shard.is_stopping()
    }

    fn stop_notify(&self) -> Rc<Notify> {
        Rc::clone(&self.shard.stop_notify)
    }

    fn frame_pool(&self) -> FramePool {
        self.shard.frame_pool.clone()
    }
}

#[derive(Debug, Clone)]
enum Request {
    Fetch(FetchItem),
    Epoch(EpochRequest),
}

impl Request {
    fn from_message(message: Message<Bytes>) -> Option<Request> {
        match message {
            Message::Fetch {
                request_id,
                partition,
                current_leader_epoch,
                fetch_offset,
                ..
            } => Some(Request::Fetch(FetchItem {
                request_id,
                partition,
                current_leader_epoch,
                fetch_offset,
            })),
            Message::OffsetForLeaderEpoch {
                request_id,
                partition,
                current_leader_epoch,
                leader_epoch,
            } => Some(Request::Epoch(EpochRequest {
                request_id,
                partition,
                current_leader_epoch,
                leader_epoch,
            })),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FetchItem {
    request_id: u64,
    partition: PartitionId,
    current_leader_epoch: LeaderEpoch,
    fetch_offset: i64,
}

#[derive(Debug, Clone, Copy)]
struct EpochRequest {
    request_id: u64,
    partition: PartitionId,
    current_leader_epoch: LeaderEpoch,
    leader_epoch: LeaderEpoch,
}

#[derive(Debug, Clone)]
struct Queued<R> {
    topic: String,
    index: i32,
    request: R,
}

/// Connection state for logging once per change, not per retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Unknown,
    Up,
    Down,
}

impl Link {
    fn failed(&mut self, shard: usize, leader: i32, error: &ClientError) {
        if *self == Link::Down {
            tracing::debug!(target: "broker::replica", shard, leader, %error, "leader still unreachable");
        } else {
            tracing::warn!(target: "broker::replica", shard, leader, %error, "lost the connection to the leader; retrying with backoff");
        }
        *self = Link::Down;
    }
}

#[derive(Debug, Default)]
struct Backoff {
    delay_ms: u64,
    retry_at: Option<Instant>,
}

impl Backoff {
    fn failed(&mut self) {
        self.delay_ms = if self.delay_ms == 0 {
            RECONNECT_BACKOFF_MIN_MS
        } else {
            (self.delay_ms * 2).min(RECONNECT_BACKOFF_MAX_MS)
        };
        self.retry_at = Some(Instant::now() + Duration::from_millis(self.delay_ms));
    }
}

/// Runs `fut` unless the shard stops first (`None`).
async fn or_stop<F: Future + Unpin>(
    stop: &mut Notified,
    env: &dyn FetcherEnv,
    fut: F,
) -> Option<F::Output> {
    if env.is_stopping() {
        return None;
    }
    match select(fut, stop).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// The error a replica gets for requests lost with the connection.
fn transport_error(error: &ClientError) -> ReplicaError {
    match error {
        ClientError::Timeout { .. } | ClientError::ConnectTimeout { .. } => {
            ReplicaError::RequestTimedOut
        }
        _ => ReplicaError::NotLeaderOrFollower,
    }
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// One Fetch (v12) for `fetches` (sorted by partition, so each topic's partitions are adjacent).
fn fetch_request(
    settings: &FetcherSettings,
    max_wait_ms: i32,
    fetches: &[Queued<FetchItem>],
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for queued in fetches {
        let partition = FetchPartition::default()
            .with_partition(queued.index)
            .with_current_leader_epoch(queued.request.current_leader_epoch.0)
            .with_fetch_offset(queued.request.fetch_offset)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.last_mut() {
            Some(t) if *t.topic.0 == *queued.topic => t.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(&queued.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(settings.node_id))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// One OffsetForLeaderEpoch (v4) for `epochs` (sorted by partition).
fn offset_for_leader_epoch_request(
    node_id: i32,
    epochs: &[Queued<EpochRequest>],
) -> OffsetForLeaderEpochRequest {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for queued in epochs {
        let partition = OffsetForLeaderPartition::default()
            .with_partition(queued.index)
            .with_current_leader_epoch(queued.request.current_leader_epoch.0)
            .with_leader_epoch(queued.request.leader_epoch.0);
        match topics.last_mut() {
            Some(t) if *t.topic.0 == *queued.topic => t.partitions.push(partition),
            _ => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(topic_name(&queued.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_topics(topics)
}

/// Where (topic, index) is in `queued` (sorted by partition).
fn position<R>(queued: &[Queued<R>], topic: &str, index: i32) -> Option<usize> {
    queued
        .binary_search_by(|q| (q.topic.as_str(), q.index).cmp(&(topic, index)))
        .ok()
}

/// One answer per request of `fetches`, in order. A partition the leader left out gets
/// NotLeaderOrFollower (retry after the backoff).
fn fetch_answers(
    fetches: &[Queued<FetchItem>],
    response: FetchResponse,
) -> Vec<Result<FetchData<Bytes>, ReplicaError>> {
    let mut answers: Vec<Result<FetchData<Bytes>, ReplicaError>> =
        vec![Err(ReplicaError::NotLeaderOrFollower); fetches.len()];
    if response.error_code != 0 {
        let error = replica_error(response.error_code);
        answers.iter_mut().for_each(|a| *a = Err(error));
        return answers;
    }
    for topic in response.responses {
        for partition in topic.partitions {
            let Some(i) = position(fetches, &topic.topic.0, partition.partition_index) else {
                continue;
            };
            answers[i] = if partition.error_code != 0 {
                Err(replica_error(partition.error_code))
            } else {
                fetch_data(partition.high_watermark, partition.records.as_ref())
            };
        }
    }
    answers
}

/// Every answered partition's log start offset (error-free partitions only).
fn log_starts(response: &FetchResponse) -> Vec<(&str, i32, i64)> {
    response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.error_code == 0 && p.log_start_offset >= 0)
                .map(move |p| (t.topic.0.as_str(), p.partition_index, p.log_start_offset))
        })
        .collect()
}

/// A partition's fetched data. The core's `log_end_offset` is not on the wire in Fetch v12 (the
/// follower does not use it); it is filled with the least the leader's log end can be: past
/// the last batch returned, and at least the high watermark.
fn fetch_data(
    high_watermark: i64,
    records: Option<&Bytes>,
) -> Result<FetchData<Bytes>, ReplicaError> {
    let mut batches = Vec::new();
    if let Some(records) = records {
        match split_batches(records, &mut batches) {
            SplitEnd::Complete | SplitEnd::Partial { .. } => {}
            SplitEnd::Invalid { at } => {
                tracing::warn!(target: "broker::replica", at, complete = batches.len(), "leader sent a malformed record batch; keeping the batches before it");
                if batches.is_empty() {
                    return Err(ReplicaError::InvalidRequest);
                }
            }
        }
    }
    let log_end_offset = batches
        .last()
        .map_or(high_watermark, |b| b.next_offset().max(high_watermark));
    Ok(FetchData {
        high_watermark,
        log_end_offset,
        batches,
    })
}

/// One answer per request of `epochs`, in order.
fn epoch_answers(
    epochs: &[Queued<EpochRequest>],
    response: &OffsetForLeaderEpochResponse,
) -> Vec<Result<EpochEndOffset, ReplicaError>> {
    let mut answers: Vec<Result<EpochEndOffset, ReplicaError>> =
        vec![Err(ReplicaError::NotLeaderOrFollower); epochs.len()];
    for topic in &response.topics {
        for partition in &topic.partitions {
            let Some(i) = position(epochs, &topic.topic.0, partition.partition) else {
                continue;
            };
            answers[i] = if partition.error_code != 0 {
                Err(replica_error(partition.error_code))
            } else {
                Ok(EpochEndOffset {
                    leader_epoch: (partition.leader_epoch >= 0)
                        .then_some(LeaderEpoch(partition.leader_epoch)),
                    end_offset: partition.end_offset,
                })
            };
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset as WireEpochEndOffset, OffsetForLeaderTopicResult,
    };
    use kafka_protocol::messages::{ApiKey, RequestHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use proptest::prelude::*;

    use super::*;

    /// A valid v2 batch at `base_offset` with `records` records, stamped with `epoch`.
    fn batch(base_offset: i64, records: i32, epoch: i32, payload_bytes: usize) -> Vec<u8> {
        let mut b = engine::batch::build_test_batch(records, payload_bytes, 1, 1, 0x5A);
        engine::batch::patch_header(&mut b, base_offset, epoch);
        b
    }

    /// Batches of (records, epoch, payload bytes) laid end to end from offset `base`.
    /// Where a batch landed: (base offset, records, epoch, bytes).
    type Placed = (i64, i32, i32, usize);

    fn log(base: i64, shapes: &[(i32, i32, usize)]) -> (Vec<u8>, Vec<Placed>) {
        let mut bytes = Vec::new();
        let mut layout = Vec::new();
        let mut offset = base;
        for &(records, epoch, payload) in shapes {
            let b = batch(offset, records, epoch, payload);
            layout.push((offset, records, epoch, b.len()));
            bytes.extend_from_slice(&b);
            offset += i64::from(records);
        }
        (bytes, layout)
    }

    fn assert_zero_copy(records: &Bytes, batches: &[Batch<Bytes>]) {
        let range = records.as_ptr_range();
        for b in batches {
            assert!(
                range.contains(&b.payload.as_ptr()),
                "payload is not a slice of the response"
            );
        }
    }

    #[test]
    fn splits_complete_batches_and_drops_a_partial_tail() {
        let (bytes, layout) = log(100, &[(3, 7, 40), (1, 7, 0), (5, 9, 300)]);
        let records = Bytes::from(bytes.clone());
        // Cut points: (bytes kept, complete batches expected, partial bytes expected).
        let b0 = layout[0].3;
        let b1 = b0 + layout[1].3;
        let b2 = b1 + layout[2].3;
        let cases = [
            (0, 0, None),
            (5, 0, Some(5)),
            (12, 0, Some(12)),
            (60, 0, Some(60)),
            (b0 - 1, 0, Some(b0 - 1)),
            (b0, 1, None),
            (b0 + 11, 1, Some(11)),
            (b1, 2, None),
            (b1 + 70, 2, Some(70)),
            (b2 - 1, 2, Some(b2 - b1 - 1)),
            (b2, 3, None),
        ];
        for (cut, complete, partial) in cases {
            let cut_records = records.slice(..cut);
            let mut out = Vec::new();
            let end = split_batches(&cut_records, &mut out);
            let want_end = match partial {
                Some(bytes) => SplitEnd::Partial { bytes },
                None => SplitEnd::Complete,
            };
            assert_eq!(end, want_end, "cut at {cut}");
            assert_eq!(out.len(), complete, "cut at {cut}");
            assert_zero_copy(&cut_records, &out);
            let mut at = 0;
            for (b, &(base, count, epoch, len)) in out.iter().zip(&layout) {
                assert_eq!(b.base_offset, base);
                assert_eq!(b.record_count, count as u32);
                assert_eq!(b.leader_epoch, LeaderEpoch(epoch));
                assert_eq!(&b.payload[..], &bytes[at..at + len]);
                at += len;
            }
        }
        let mut out = Vec::new();
        split_batches(&records, &mut out);
        assert_eq!(out[2].next_offset(), 109);
    }

    #[test]
    fn record_count_spans_the_offset_delta_not_the_records_field() {
        // A compacted batch: 2 records left, offsets 10..=14 spanned.
        let mut b = batch(10, 5, 3, 20);
        b[57..61].copy_from_slice(&2i32.to_be_bytes());
        let mut out = Vec::new();
        assert_eq!(split_batches(&Bytes::from(b), &mut out), SplitEnd::Complete);
        assert_eq!(out[0].record_count, 5);
        assert_eq!(out[0].next_offset(), 15);
    }

    #[test]
    fn malformed_batches_stop_the_split() {
        let good = batch(0, 1, 1, 10);
        type Corrupt = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Corrupt)> = vec![
            (
                "negative length",
                Box::new(|b| b[8..12].copy_from_slice(&(-5i32).to_be_bytes())),
            ),
            (
                "length below a header",
                Box::new(|b| b[8..12].copy_from_slice(&10i32.to_be_bytes())),
            ),
            ("magic 1", Box::new(|b| b[16] = 1)),
            (
                "negative offset delta",
                Box::new(|b| b[23..27].copy_from_slice(&(-1i32).to_be_bytes())),
            ),
        ];
        for (what, corrupt) in cases {
            let mut bad = batch(1, 1, 1, 10);
            corrupt(&mut bad);
            let mut bytes = good.clone();
            bytes.extend_from_slice(&bad);
            let mut out = Vec::new();
            let end = split_batches(&Bytes::from(bytes), &mut out);
            assert_eq!(end, SplitEnd::Invalid { at: good.len() }, "{what}");
            assert_eq!(out.len(), 1, "{what}");
            // Alone, the malformed batch is an error for the replica (it retries).
            assert_eq!(
                fetch_data(0, Some(&Bytes::from(bad))),
                Err(ReplicaError::InvalidRequest),
                "{what}"
            );
        }
    }

    proptest! {
        /// Any prefix of a valid log splits into exactly the batches wholly inside it.
        #[test]
        fn split_matches_the_layout(
            shapes in proptest::collection::vec((1i32..6, 0i32..4, 0usize..120), 0..8),
            cut_frac in 0.0f64..=1.0,
            base in 0i64..1_000_000,
        ) {
            let (bytes, layout) = log(base, &shapes);
            let cut = ((bytes.len() as f64) * cut_frac) as usize;
            let records = Bytes::from(bytes).slice(..cut);
            let mut out = Vec::new();
            let end = split_batches(&records, &mut out);
            let mut boundary = 0;
            let mut whole = 0;
            for &(_, _, _, len) in &layout {
                if boundary + len > cut { break; }
                boundary += len;
                whole += 1;
            }
            prop_assert_eq!(out.len(), whole);
            if boundary == cut {
                prop_assert_eq!(end, SplitEnd::Complete);
            } else {
                prop_assert_eq!(end, SplitEnd::Partial { bytes: cut - boundary });
            }
            let mut next = base;
            for (b, &(offset, count, epoch, len)) in out.iter().zip(&layout) {
                prop_assert_eq!(b.base_offset, offset);
                prop_assert_eq!(b.base_offset, next);
                prop_assert_eq!(b.record_count, count as u32);
                prop_assert_eq!(b.leader_epoch, LeaderEpoch(epoch));
                prop_assert_eq!(b.payload.len(), len);
                next = b.next_offset();
            }
        }

        /// Random bytes never panic the splitter, and what it returns lies inside the input.
        #[test]
        fn split_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let records = Bytes::from(bytes);
            let mut out = Vec::new();
            let _ = split_batches(&records, &mut out);
            let total: usize = out.iter().map(|b| b.payload.len()).sum();
            prop_assert!(total <= records.len());
        }
    }

    fn queued_fetch(topic: &str, index: i32, request_id: u64, offset: i64) -> Queued<FetchItem> {
        Queued {
            topic: topic.to_string(),
            index,
            request: FetchItem {
                request_id,
                partition: PartitionId(index as u32),
                current_leader_epoch: LeaderEpoch(4),
                fetch_offset: offset,
            },
        }
    }

    fn partition_data(index: i32, error: i16, hw: i64, records: Option<Bytes>) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_error_code(error)
            .with_high_watermark(hw)
            .with_records(records)
    }

    #[test]
    fn fetch_answers_map_errors_batches_and_missing_partitions() {
        let (bytes, _) = log(20, &[(2, 4, 10), (3, 4, 10)]);
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(&batch(25, 1, 4, 10)[..30]);
        let fetches = vec![
            queued_fetch("a", 0, 1, 20),
            queued_fetch("a", 1, 2, 0),
            queued_fetch("a", 2, 3, 0),
            queued_fetch("b", 0, 4, 0),
            queued_fetch("b", 1, 5, 0),
            queued_fetch("b", 2, 6, 0),
            queued_fetch("c", 0, 7, 0),
        ];
        let topic = |name: &str, partitions: Vec<PartitionData>| {
            FetchableTopicResponse::default()
                .with_topic(topic_name(name))
                .with_partitions(partitions)
        };
        let response = FetchResponse::default().with_responses(vec![
            topic(
                "b",
                vec![
                    partition_data(0, 74, -1, None),
                    partition_data(1, 75, -1, None),
                    partition_data(2, 1, -1, None),
                ],
            ),
            topic(
                "a",
                vec![
                    partition_data(1, 6, -1, None),
                    partition_data(0, 0, 30, Some(Bytes::from(with_tail))),
                    partition_data(2, 0, 7, None),
                    partition_data(9, 0, 7, None), // not asked for: ignored
                ],
            ),
        ]);
        let answers = fetch_answers(&fetches, response);
        let a0 = answers[0].as_ref().unwrap();
        assert_eq!(a0.high_watermark, 30);
        assert_eq!(a0.log_end_offset, 30);
        assert_eq!(
            a0.batches
                .iter()
                .map(|b| (b.base_offset, b.record_count))
                .collect::<Vec<_>>(),
            vec![(20, 2), (22, 3)]
        );
        assert_eq!(answers[1], Err(ReplicaError::NotLeaderOrFollower));
        let a2 = answers[2].as_ref().unwrap();
        assert!(a2.batches.is_empty());
        assert_eq!((a2.high_watermark, a2.log_end_offset), (7, 7));
        assert_eq!(answers[3], Err(ReplicaError::FencedLeaderEpoch));
        assert_eq!(answers[4], Err(ReplicaError::UnknownLeaderEpoch));
        assert_eq!(answers[5], Err(ReplicaError::OffsetOutOfRange));
        assert_eq!(
            answers[6],
            Err(ReplicaError::NotLeaderOrFollower),
            "left out by the leader"
        );

        // The log end offset is past the last batch when the high watermark is behind it.
        let data = fetch_data(21, Some(&Bytes::from(bytes))).unwrap();
        assert_eq!((data.high_watermark, data.log_end_offset), (21, 25));

        // A whole-response error (e.g. a fetch session error) fails every partition.
        let answers = fetch_answers(&fetches[..2], FetchResponse::default().with_error_code(70));
        assert_eq!(answers, vec![Err(ReplicaError::NotLeaderOrFollower); 2]);
    }

    #[test]
    fn requests_group_partitions_by_topic() {
        let settings = FetcherSettings {
            shard: 0,
            node_id: 3,
            leader: 1,
            max_wait_ms: 250,
            request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            return_wait: Duration::from_millis(RETURN_WAIT_MS),
        };
        let fetches = vec![
            queued_fetch("a", 0, 1, 11),
            queued_fetch("a", 3, 2, 12),
            queued_fetch("b", 1, 3, 13),
        ];
        let r = fetch_request(&settings, 250, &fetches);
        assert_eq!(r.replica_id, BrokerId(3));
        assert_eq!(
            (r.max_wait_ms, r.min_bytes, r.max_bytes),
            (250, 1, FETCH_MAX_BYTES)
        );
        assert_eq!(
            (r.session_id, r.session_epoch, r.isolation_level),
            (0, -1, 0)
        );
        type Shape = (String, Vec<(i32, i32, i64)>);
        let shape: Vec<Shape> = r
            .topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.current_leader_epoch, p.fetch_offset))
                    .collect();
                (t.topic.0.to_string(), parts)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a".to_string(), vec![(0, 4, 11), (3, 4, 12)]),
                ("b".to_string(), vec![(1, 4, 13)]),
            ]
        );
        assert!(
            r.topics[0]
                .partitions
                .iter()
                .all(|p| p.partition_max_bytes == PARTITION_MAX_BYTES)
        );
        // It encodes at the version sent.
        let mut buf = bytes::BytesMut::new();
        r.encode(&mut buf, FETCH_VERSION).unwrap();
        let back = FetchRequest::decode(&mut buf.freeze(), FETCH_VERSION).unwrap();
        assert_eq!(back, r);
    }

    // --- A fetcher against a fake leader over TCP. ---------------------------------------

    enum Reply {
        Fetch(FetchResponse),
        Epochs(OffsetForLeaderEpochResponse),
        /// Close the connection without answering.
        Close,
        /// Never answer (read until the client gives up).
        Hang,
    }

    type Script = dyn FnMut(usize, &RequestHeader, Bytes) -> Reply + Send;

    /// A leader on a loopback port answering by `script(connection number, header, body)`.
    fn fake_leader(mut script: Box<Script>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                loop {
                    let mut size = [0u8; 4];
                    if stream.read_exact(&mut size).is_err() {
                        break;
                    }
                    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
                    if stream.read_exact(&mut frame).is_err() {
                        break;
                    }
                    let mut body = Bytes::from(frame);
                    let header =
                        kafka_protocol::protocol::decode_request_header_from_buffer(&mut body)
                            .unwrap();
                    let (key, version, id) = (
                        ApiKey::try_from(header.request_api_key).unwrap(),
                        header.request_api_version,
                        header.correlation_id,
                    );
                    let out = match script(n, &header, body) {
                        Reply::Fetch(r) => crate::net::frame::encode_response(key, version, id, &r),
                        Reply::Epochs(r) => {
                            crate::net::frame::encode_response(key, version, id, &r)
                        }
                        Reply::Close => break,
                        Reply::Hang => {
                            let mut sink = Vec::new();
                            let _ = stream.read_to_end(&mut sink);
                            break;
                        }
                    };
                    if stream.write_all(&out.unwrap()).is_err() {
                        break;
                    }
                }
            }
        });
        addr
    }

    struct TestEnv {
        addr: String,
        delivered: RefCell<Vec<(String, i32, Message<Bytes>)>>,
        arrived: Rc<Notify>,
        stop: Rc<Notify>,
        stopping: Cell<bool>,
    }

    impl FetcherEnv for TestEnv {
        fn leader_addr(&self, leader: i32) -> Option<String> {
            assert_eq!(leader, 1);
            Some(self.addr.clone())
        }
        fn deliver(&self, topic: &str, index: i32, message: Message<Bytes>) {
            self.delivered
                .borrow_mut()
                .push((topic.to_string(), index, message));
            self.arrived.notify_all();
        }
        fn is_stopping(&self) -> bool {
            self.stopping.get()
        }
        fn stop_notify(&self) -> Rc<Notify> {
            Rc::clone(&self.stop)
        }
        fn frame_pool(&self) -> FramePool {
            FramePool::default()
        }
    }

    fn test_fetcher(addr: String, request_timeout_ms: u64) -> (Rc<TestEnv>, Rc<Fetcher>) {
        let env = Rc::new(TestEnv {
            addr,
            delivered: RefCell::new(Vec::new()),
            arrived: Rc::new(Notify::new()),
            stop: Rc::new(Notify::new()),
            stopping: Cell::new(false),
        });
        let settings = FetcherSettings {
            shard: 0,
            node_id: 2,
            leader: 1,
            max_wait_ms: 10,
            request_timeout: Duration::from_millis(request_timeout_ms),
            idle_timeout: Duration::from_secs(60),
            return_wait: Duration::from_millis(RETURN_WAIT_MS),
        };
        let fetcher = Fetcher::new(Rc::clone(&env) as Rc<dyn FetcherEnv>, settings);
        (env, fetcher)
    }

    /// Waits (deadline 20 s) until `n` answers were delivered; returns them.
    async fn delivered(env: &TestEnv, n: usize) -> Vec<(String, i32, Message<Bytes>)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let arrived = env.arrived.notified();
            if env.delivered.borrow().len() >= n {
                return std::mem::take(&mut *env.delivered.borrow_mut());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if compio::time::timeout(left, arrived).await.is_err() {
                panic!(
                    "only {:?} answers within the deadline",
                    env.delivered.borrow()
                );
            }
        }
    }

    fn fetch(request_id: u64, index: i32, offset: i64) -> Message<Bytes> {
        Message::Fetch {
            request_id,
            partition: PartitionId(100 + index as u32),
            replica: Some(replication::NodeId(2)),
            current_leader_epoch: LeaderEpoch(4),
            fetch_offset: offset,
        }
    }

    fn epoch_request(request_id: u64, index: i32) -> Message<Bytes> {
        Message::OffsetForLeaderEpoch {
            request_id,
            partition: PartitionId(100 + index as u32),
            current_leader_epoch: LeaderEpoch(4),
            leader_epoch: LeaderEpoch(3),
        }
    }

    fn fetch_result(
        m: &Message<Bytes>,
    ) -> (u64, PartitionId, &Result<FetchData<Bytes>, ReplicaError>) {
        match m {
            Message::FetchResponse {
                request_id,
                partition,
                result,
            } => (*request_id, *partition, result),
            other => panic!("not a fetch response: {other:?}"),
        }
    }

    fn run_local<F: Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new().unwrap().block_on(f)
    }

    #[test]
    fn fetcher_batches_requests_and_delivers_answers() {
        let (log_bytes, _) = log(5, &[(2, 4, 10), (1, 4, 10)]);
        let mut records = log_bytes.clone();
        records.extend_from_slice(&batch(8, 1, 4, 10)[..20]);
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen_by_leader = Arc::clone(&seen);
        let addr = fake_leader(Box::new(move |_, header, mut body| {
            let version = header.request_api_version;
            match ApiKey::try_from(header.request_api_key).unwrap() {
                ApiKey::OffsetForLeaderEpoch => {
                    let r = OffsetForLeaderEpochRequest::decode(&mut body, version).unwrap();
                    let parts: Vec<_> = r.topics[0]
                        .partitions
                        .iter()
                        .map(|p| (p.partition, p.current_leader_epoch, p.leader_epoch))
                        .collect();
                    seen_by_leader.lock().unwrap().push(format!(
                        "OFLE v{version} replica {} {} {parts:?}",
                        r.replica_id.0, r.topics[0].topic.0
                    ));
                    let answers = r.topics[0]
                        .partitions
                        .iter()
                        .map(|p| {
                            WireEpochEndOffset::default()
                                .with_partition(p.partition)
                                .with_leader_epoch(if p.partition == 0 { 3 } else { -1 })
                                .with_end_offset(if p.partition == 0 { 42 } else { -1 })
                        })
                        .collect();
                    Reply::Epochs(OffsetForLeaderEpochResponse::default().with_topics(vec![
                        OffsetForLeaderTopicResult::default()
                            .with_topic(r.topics[0].topic.clone())
                            .with_partitions(answers),
                    ]))
                }
                ApiKey::Fetch => {
                    let r = FetchRequest::decode(&mut body, version).unwrap();
                    let parts: Vec<_> = r.topics[0]
                        .partitions
                        .iter()
                        .map(|p| (p.partition, p.current_leader_epoch, p.fetch_offset))
                        .collect();
                    seen_by_leader.lock().unwrap().push(format!(
                        "Fetch v{version} replica {} wait {} {} {parts:?}",
                        r.replica_id.0, r.max_wait_ms, r.topics[0].topic.0
                    ));
                    let answers = r.topics[0]
                        .partitions
                        .iter()
                        .map(|p| match p.partition {
                            2 => partition_data(2, 0, 9, Some(Bytes::from(records.clone()))),
                            n => partition_data(n, 6, -1, None),
                        })
                        .collect();
                    Reply::Fetch(FetchResponse::default().with_responses(vec![
                        FetchableTopicResponse::default()
                            .with_topic(r.topics[0].topic.clone())
                            .with_partitions(answers),
                    ]))
                }
                other => panic!("unexpected {other:?}"),
            }
        }));
        run_local(async move {
            let (env, fetcher) = test_fetcher(addr, 5_000);
            // Queued before the task runs: one round carries all of them. The first fetch of
            // partition 2 is replaced by the second (the replica gave up on it).
            fetcher.enqueue("t", 2, fetch(10, 2, 0));
            fetcher.enqueue("t", 2, fetch(11, 2, 5));
            fetcher.enqueue("t", 3, fetch(12, 3, 0));
            fetcher.enqueue("t", 0, epoch_request(13, 0));
            fetcher.enqueue("t", 1, epoch_request(14, 1));
            assert_eq!(fetcher.pending_len(), 4);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            let answers = delivered(&env, 4).await;
            assert_eq!(
                *seen.lock().unwrap(),
                vec![
                    "OFLE v4 replica 2 t [(0, 4, 3), (1, 4, 3)]".to_string(),
                    "Fetch v12 replica 2 wait 10 t [(2, 4, 5), (3, 4, 0)]".to_string(),
                ]
            );
            assert_eq!(
                answers[0].2,
                Message::OffsetForLeaderEpochResponse {
                    request_id: 13,
                    partition: PartitionId(100),
                    result: Ok(EpochEndOffset {
                        leader_epoch: Some(LeaderEpoch(3)),
                        end_offset: 42
                    }),
                }
            );
            assert_eq!(
                answers[1].2,
                Message::OffsetForLeaderEpochResponse {
                    request_id: 14,
                    partition: PartitionId(101),
                    result: Ok(EpochEndOffset {
                        leader_epoch: None,
                        end_offset: -1
                    }),
                }
            );
            let (id, partition, result) = fetch_result(&answers[2].2);
            assert_eq!(
                (answers[2].0.as_str(), answers[2].1, id, partition),
                ("t", 2, 11, PartitionId(102))
            );
            let data = result.as_ref().unwrap();
            assert_eq!(
                data.batches
                    .iter()
                    .map(|b| (b.base_offset, b.record_count, b.leader_epoch.0))
                    .collect::<Vec<_>>(),
                vec![(5, 2, 4), (7, 1, 4)],
                "the partial batch at offset 8 is dropped"
            );
            let joined: Vec<u8> = data
                .batches
                .iter()
                .flat_map(|b| b.payload.to_vec())
                .collect();
            assert_eq!(joined, log_bytes);
            assert_eq!((data.high_watermark, data.log_end_offset), (9, 9));
            let (id, _, result) = fetch_result(&answers[3].2);
            assert_eq!((id, result), (12, &Err(ReplicaError::NotLeaderOrFollower)));

            // Later requests reuse the connection (the script sees connection 0 only).
            fetcher.enqueue("t", 3, fetch(15, 3, 0));
            let answers = delivered(&env, 1).await;
            assert_eq!(fetch_result(&answers[0].2).0, 15);
            env.stopping.set(true);
            env.stop.notify_all();
            task.await.unwrap();
        });
    }

    #[test]
    fn unreachable_leader_answers_errors_at_once_then_reconnects() {
        // A port nothing listens on.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        run_local(async move {
            let (env, fetcher) = test_fetcher(dead, 30_000);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            let started = Instant::now();
            fetcher.enqueue("t", 0, fetch(1, 0, 0));
            fetcher.enqueue("t", 1, epoch_request(2, 1));
            let answers = delivered(&env, 2).await;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not prompt: {:?}",
                started.elapsed()
            );
            assert!(
                answers.iter().all(|(_, _, m)| matches!(
                    m,
                    Message::FetchResponse {
                        result: Err(ReplicaError::NotLeaderOrFollower),
                        ..
                    } | Message::OffsetForLeaderEpochResponse {
                        result: Err(ReplicaError::NotLeaderOrFollower),
                        ..
                    }
                )),
                "{answers:?}"
            );
            // During the backoff a new request is answered at once too.
            fetcher.enqueue("t", 0, fetch(3, 0, 0));
            let answers = delivered(&env, 1).await;
            assert_eq!(fetch_result(&answers[0].2).0, 3);
            env.stopping.set(true);
            env.stop.notify_all();
            task.await.unwrap();
        });
    }

    #[test]
    fn broken_connection_fails_in_flight_requests_and_the_next_connection_serves() {
        let addr = fake_leader(Box::new(|connection, header, mut body| {
            let r = FetchRequest::decode(&mut body, header.request_api_version).unwrap();
            if connection == 0 {
                return Reply::Close;
            }
            let parts = r.topics[0]
                .partitions
                .iter()
                .map(|p| partition_data(p.partition, 0, 0, None))
                .collect();
            Reply::Fetch(FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(r.topics[0].topic.clone())
                    .with_partitions(parts),
            ]))
        }));
        run_local(async move {
            let (env, fetcher) = test_fetcher(addr, 30_000);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            let started = Instant::now();
            fetcher.enqueue("t", 0, fetch(1, 0, 0));
            let answers = delivered(&env, 1).await;
            assert_eq!(
                fetch_result(&answers[0].2).2,
                &Err(ReplicaError::NotLeaderOrFollower)
            );
            assert!(started.elapsed() < Duration::from_secs(5));
            // Ask until a request lands after the backoff, on a new connection.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut id = 2;
            loop {
                fetcher.enqueue("t", 0, fetch(id, 0, 0));
                let answers = delivered(&env, 1).await;
                let (got, _, result) = fetch_result(&answers[0].2);
                assert_eq!(got, id);
                if result.is_ok() {
                    break;
                }
                assert!(Instant::now() < deadline, "never reconnected");
                // Back off as a replica would (replica.fetch.backoff.ms), on a timer.
                compio::time::sleep(Duration::from_millis(50)).await;
                id += 1;
            }
            env.stopping.set(true);
            env.stop.notify_all();
            task.await.unwrap();
        });
    }

    #[test]
    fn a_leader_that_drops_every_connection_gets_a_growing_backoff() {
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let addr = fake_leader(Box::new(move |n, _, _| {
            counted.fetch_max(n + 1, std::sync::atomic::Ordering::SeqCst);
            Reply::Close
        }));
        run_local(async move {
            let (env, fetcher) = test_fetcher(addr, 30_000);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            // A replica asking every 10 ms for 1 s; every request is answered (with an error).
            let started = Instant::now();
            let mut id = 0;
            while started.elapsed() < Duration::from_secs(1) {
                id += 1;
                fetcher.enqueue("t", 0, fetch(id, 0, 0));
                let answers = delivered(&env, 1).await;
                assert!(fetch_result(&answers[0].2).2.is_err());
                compio::time::sleep(Duration::from_millis(10)).await;
            }
            // Backoff 100, 200, 400 ms, ...: at most a handful of connections in 1 s (a
            // backoff reset by each accepted connection would make about ten).
            let made = connections.load(std::sync::atomic::Ordering::SeqCst);
            assert!((1..=5).contains(&made), "{made} connections in 1 s");
            env.stopping.set(true);
            env.stop.notify_all();
            task.await.unwrap();
        });
    }

    #[test]
    fn a_silent_leader_times_out() {
        let addr = fake_leader(Box::new(|_, _, _| Reply::Hang));
        run_local(async move {
            // Fetch deadline: max(request timeout, max_wait 10 ms + margin) = 1.2 s.
            let (env, fetcher) = test_fetcher(addr, 1_200);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            let started = Instant::now();
            fetcher.enqueue("t", 0, fetch(1, 0, 0));
            let answers = delivered(&env, 1).await;
            let waited = started.elapsed();
            assert_eq!(
                fetch_result(&answers[0].2).2,
                &Err(ReplicaError::RequestTimedOut)
            );
            assert!(
                waited >= Duration::from_millis(1_100),
                "answered before the deadline: {waited:?}"
            );
            env.stopping.set(true);
            env.stop.notify_all();
            task.await.unwrap();
        });
    }

    #[test]
    fn a_long_poll_waits_for_partitions_that_just_got_data() {
        // The leader answers partition 1 with a batch and partition 0 with nothing, and
        // records each Fetch's (partitions, max_wait_ms).
        type Asked = (Vec<i32>, i32);
        let seen: Arc<Mutex<Vec<Asked>>> = Arc::default();
        let seen_by_leader = Arc::clone(&seen);
        let addr = fake_leader(Box::new(move |_, header, mut body| {
            let r = FetchRequest::decode(&mut body, header.request_api_version).unwrap();
            let asked: Vec<i32> = r.topics[0].partitions.iter().map(|p| p.partition).collect();
            seen_by_leader.lock().unwrap().push((asked, r.max_wait_ms));
            let parts = r.topics[0]
                .partitions
                .iter()
                .map(|p| match p.partition {
                    1 => partition_data(1, 0, 1, Some(Bytes::from(batch(p.fetch_offset, 1, 4, 8)))),
                    n => partition_data(n, 0, 0, None),
                })
                .collect();
            Reply::Fetch(FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(r.topics[0].topic.clone())
                    .with_partitions(parts),
            ]))
        }));
        run_local(async move {
            let (env, fetcher) = test_fetcher(addr, 30_000);
            // A wide window, so a loaded machine cannot make the 20 ms "sync" miss it.
            let mut settings = fetcher.settings.clone();
            settings.return_wait = Duration::from_secs(2);
            let fetcher = Fetcher::new(Rc::clone(&fetcher.env), settings);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            fetcher.enqueue("t", 0, fetch(1, 0, 0));
            fetcher.enqueue("t", 1, fetch(2, 1, 0));
            delivered(&env, 2).await;
            // Partition 0 asks again at once; partition 1 only after its "sync" (a timer
            // well inside the return wait): the round waits for it and long-polls with both.
            fetcher.enqueue("t", 0, fetch(3, 0, 0));
            compio::time::sleep(Duration::from_millis(20)).await;
            fetcher.enqueue("t", 1, fetch(4, 1, 1));
            delivered(&env, 2).await;
            // Partition 1 got data again but never asks again: after the return wait the
            // round goes without it and does not wait at the leader.
            fetcher.enqueue("t", 0, fetch(5, 0, 0));
            delivered(&env, 1).await;
            assert_eq!(
                *seen.lock().unwrap(),
                vec![(vec![0, 1], 10), (vec![0, 1], 10), (vec![0], 0)]
            );
            env.stopping.set(true);
            env.stop.notify_all();
            task.await.unwrap();
        });
    }

    #[test]
    fn shard_stop_ends_a_fetcher_waiting_on_its_leader() {
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asked_by_leader = Arc::clone(&asked);
        let addr = fake_leader(Box::new(move |_, _, _| {
            asked_by_leader.store(true, std::sync::atomic::Ordering::SeqCst);
            Reply::Hang
        }));
        run_local(async move {
            let (env, fetcher) = test_fetcher(addr, 60_000);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            fetcher.enqueue("t", 0, fetch(1, 0, 0));
            let deadline = Instant::now() + Duration::from_secs(20);
            while !asked.load(std::sync::atomic::Ordering::SeqCst) {
                assert!(
                    Instant::now() < deadline,
                    "the request never reached the leader"
                );
                compio::time::sleep(Duration::from_millis(5)).await;
            }
            env.stopping.set(true);
            env.stop.notify_all();
            let ended = compio::time::timeout(Duration::from_secs(5), task).await;
            assert!(
                ended.is_ok(),
                "the fetcher kept waiting for its leader after the stop"
            );
        });
    }

    #[test]
    fn an_idle_fetcher_ends() {
        run_local(async move {
            let (_env, fetcher) = test_fetcher("127.0.0.1:1".to_string(), 1_000);
            let mut settings = fetcher.settings.clone();
            settings.idle_timeout = Duration::from_millis(50);
            let fetcher = Fetcher::new(Rc::clone(&fetcher.env), settings);
            let ended =
                compio::time::timeout(Duration::from_secs(10), Rc::clone(&fetcher).run()).await;
            assert!(ended.is_ok(), "the fetcher did not end when idle");
        });
    }

    // --- A fetcher against a real single-node broker (in this process). -------------------

    /// Starts `server::run` on a loopback port in a thread that is never stopped (it waits for
    /// a SIGTERM the test process never gets, and ends with the process); returns its address
    /// once it answers ApiVersions.
    fn start_single_node(data_dir: &std::path::Path) -> String {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = crate::config::Config::default();
        config.broker.data_dir = data_dir.to_path_buf();
        config.broker.shards = 1;
        config.broker.pin_threads = false;
        config.broker.tuning_report = false;
        config.kafka.addr = addr.clone();
        std::thread::spawn(move || crate::server::run(config));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match std::net::TcpStream::connect(&addr) {
                Ok(_) => return addr,
                Err(e) => {
                    assert!(Instant::now() < deadline, "broker never listened: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// One blocking request/response on `stream` (the broker's answer within 30 s).
    fn call<R: kafka_protocol::protocol::Request>(
        stream: &mut std::net::TcpStream,
        request: &R,
        version: i16,
    ) -> R::Response {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let frame = kafka_wire::encode_request(request, version, 1, "test").unwrap();
        stream.write_all(&frame).unwrap();
        let mut body = kafka_wire::blocking::read_frame(stream, usize::MAX).unwrap();
        kafka_wire::decode_response::<R>(&mut body, version).unwrap()
    }

    /// Creates `topic` (one partition), produces `batches` to it, returns its leader epoch.
    fn create_and_produce(addr: &str, topic: &str, batches: &[Vec<u8>]) -> i32 {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, ProduceRequest};
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(topic))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]);
        let created = call(&mut client, &create, 5);
        assert_eq!(created.topics[0].error_code, 0, "{created:?}");
        for b in batches {
            let produce = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(topic_name(topic))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from(b.clone()))),
                        ]),
                ]);
            let answer = call(&mut client, &produce, 9);
            let p = &answer.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0, "{answer:?}");
        }
        let metadata = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
        ]));
        let metadata = call(&mut client, &metadata, 12);
        metadata.topics[0].partitions[0].leader_epoch
    }

    #[test]
    fn a_real_broker_answers_an_unassigned_replica() {
        let dir = tempfile::tempdir().unwrap();
        let addr = start_single_node(dir.path());
        let now = crate::partition::now_ms();
        let produced: Vec<Vec<u8>> = [(3, 100), (1, 5_000), (4, 300_000)]
            .iter()
            .map(|&(records, bytes)| engine::batch::build_test_batch(records, bytes, now, now, 7))
            .collect();
        let epoch = create_and_produce(&addr, "replicated", &produced);
        assert!(epoch >= 0);
        run_local(async move {
            let (env, fetcher) = test_fetcher(addr, 30_000);
            let task = compio::runtime::spawn(Rc::clone(&fetcher).run());
            let at = |request_id, offset, current| Message::Fetch {
                request_id,
                partition: PartitionId(0),
                replica: Some(replication::NodeId(2)),
                current_leader_epoch: LeaderEpoch(current),
                fetch_offset: offset,
            };
            // Every broker runs the replication core now (a single node is a quorum of one),
            // so a replica id outside the partition's replica set is refused like Kafka's
            // leader does; fetching real batches as a follower is covered by the 3-process
            // tests (sluice/tests/cluster.rs).
            fetcher.enqueue("replicated", 0, at(1, 0, epoch));
            let answers = delivered(&env, 1).await;
            let (id, _, result) = fetch_result(&answers[0].2);
            assert_eq!(id, 1);
            assert_eq!(result, &Err(ReplicaError::NotLeaderOrFollower));

            // OffsetForLeaderEpoch for the current epoch ends at the log end; a newer epoch
            // than the leader's and an offset past the log end are refused.
            fetcher.enqueue(
                "replicated",
                0,
                Message::OffsetForLeaderEpoch {
                    request_id: 2,
                    partition: PartitionId(0),
                    current_leader_epoch: LeaderEpoch(epoch),
                    leader_epoch: LeaderEpoch(epoch),
                },
            );
            let answers = delivered(&env, 1).await;
            assert_eq!(
                answers[0].2,
                Message::OffsetForLeaderEpochResponse {
                    request_id: 2,
                    partition: PartitionId(0),
                    result: Ok(EpochEndOffset {
                        leader_epoch: Some(LeaderEpoch(epoch)),
                        end_offset: 8
                    }),
                }
            );
            fetcher.enqueue("replicated", 0, at(4, 0, epoch + 1));
            let answers = delivered(&env, 1).await;
            assert_eq!(
                fetch_result(&answers[0].2).2,
                &Err(ReplicaError::UnknownLeaderEpoch)
            );
            fetcher.enqueue("replicated", 0, at(5, 9, epoch));
            let answers = delivered(&env, 1).await;
            assert_eq!(
                fetch_result(&answers[0].2).2,
                &Err(ReplicaError::OffsetOutOfRange)
            );
            env.stopping.set(true);
            env.stop.notify_all();
            task.await.unwrap();
        });
    }
}
