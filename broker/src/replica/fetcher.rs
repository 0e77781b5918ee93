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
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
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
use crate::net::frame_pool::FramePool;
use crate::notify::Notify;
use crate::shard::Shard;

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
/// call). Ignored on a single node (no `shard.shared.cluster`).
pub fn send_to_leader(
    shard: &Rc<Shard>,
    leader: i32,
    topic: &str,
    index: i32,
    message: Message<Bytes>,
) {
    let Some(cluster) = shard.shared.cluster.as_ref() else {
        tracing::debug!(target: "broker::replica", topic, index, "send_to_leader on a single node; dropped");
        return;
    };
    let key = RegistryKey {
        shared: std::sync::Arc::as_ptr(&shard.shared) as usize,
        shard: shard.id.0,
        leader,
    };
    let existing = REGISTRY.with(|r| r.borrow().get(&key).cloned());
    let fetcher = match existing {
        Some(f) => f,
        None => {
            let settings = FetcherSettings {
                node_id: shard.shared.node_id(),
                leader,
                max_wait_ms: cluster.replica_fetch_wait_max_ms.max(0),
                request_timeout: Duration::from_millis(
                    shard.config().cluster.request_timeout_ms.max(1) as u64,
                ),
                idle_timeout: Duration::from_millis(FETCHER_IDLE_MS),
            };
            let env = Rc::new(ShardEnv {
                shard: Rc::clone(shard),
            });
            let fetcher = Fetcher::new(env, settings);
            REGISTRY.with(|r| r.borrow_mut().insert(key, Rc::clone(&fetcher)));
            let task = Rc::clone(&fetcher);
            compio::runtime::spawn(async move {
                Rc::clone(&task).run().await;
                // No await between `run` deciding to end (queue empty) and this removal, so
                // no request can be queued on a fetcher that is gone.
                REGISTRY.with(|r| {
                    let mut r = r.borrow_mut();
                    if r.get(&key).is_some_and(|f| Rc::ptr_eq(f, &task)) {
                        r.remove(&key);
                    }
                });
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
    fn is_stopping(&self) -> bool;
    /// Notified when `is_stopping` becomes true.
    fn stop_notify(&self) -> Rc<Notify>;
    fn frame_pool(&self) -> FramePool;
}

/// A fetcher's fixed settings.
#[derive(Debug, Clone)]
pub struct FetcherSettings {
    /// This broker's node id (`replica_id` in every request).
    pub node_id: i32,
    pub leader: i32,
    /// replica.fetch.wait.max.ms.
    pub max_wait_ms: i32,
    /// request.timeout.ms: the deadline of a connect and of an OffsetForLeaderEpoch answer.
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
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
}

impl Fetcher {
    pub fn new(env: Rc<dyn FetcherEnv>, settings: FetcherSettings) -> Rc<Fetcher> {
        Rc::new(Fetcher {
            env,
            settings,
            pending: RefCell::new(BTreeMap::new()),
            wake: Rc::new(Notify::new()),
            overflowed: Cell::new(false),
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
                tracing::warn!(target: "broker::replica", leader = self.settings.leader, limit = PENDING_PER_FETCHER_MAX, "fetcher queue full; dropping follower requests");
            }
            return;
        }
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
        let stop = self.env.stop_notify();
        let leader = self.settings.leader;
        let mut connection: Option<LeaderConnection> = None;
        let mut backoff = Backoff::default();
        let mut link = Link::Unknown;
        loop {
            if self.env.is_stopping() {
                return;
            }
            if self.pending.borrow().is_empty() {
                if !self.wait_for_work(&stop).await {
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
                    let sleep = compio::time::sleep(retry_at - Instant::now());
                    if idle {
                        or_stop(&stop, &*self.env, select(woke, Box::pin(sleep))).await;
                    } else {
                        or_stop(&stop, &*self.env, Box::pin(sleep)).await;
                    }
                    continue;
                }
                match self.connect(&stop).await {
                    Some(Ok(c)) => {
                        if link == Link::Down {
                            tracing::info!(target: "broker::replica", leader, addr = c.addr(), "connected to the leader again");
                        }
                        link = Link::Up;
                        backoff = Backoff::default();
                        connection = Some(c);
                    }
                    Some(Err(e)) => {
                        link.failed(leader, &e);
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
            let (epochs, fetches) = self.take_round();
            let result = self.serve_round(conn, &stop, &epochs, &fetches).await;
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    link.failed(leader, &e);
                    connection = None;
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
    async fn wait_for_work(&self, stop: &Rc<Notify>) -> bool {
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

    /// `None` when the shard stopped.
    async fn connect(&self, stop: &Rc<Notify>) -> Option<Result<LeaderConnection, ClientError>> {
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
        stop: &Rc<Notify>,
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
            let request = fetch_request(&self.settings, fetches);
            let deadline = self.settings.request_timeout.max(Duration::from_millis(
                self.settings.max_wait_ms as u64 + FETCH_DEADLINE_MARGIN_MS,
            ));
            let call = conn.call(&request, FETCH_VERSION, deadline);
            match or_stop(stop, &*self.env, Box::pin(call)).await? {
                Ok(response) => {
                    for (queued, result) in fetches.iter().zip(fetch_answers(fetches, response)) {
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

thread_local! {
    /// Fetchers of this thread's shard(s) (one shard per thread in the broker; the key keeps
    /// brokers apart should tests run several in one thread).
    static REGISTRY: RefCell<HashMap<RegistryKey, Rc<Fetcher>>> = RefCell::new(HashMap::new());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RegistryKey {
    /// `Arc::as_ptr` of the broker's `Shared`.
    shared: usize,
    shard: usize,
    leader: i32,
}

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
    fn failed(&mut self, leader: i32, error: &ClientError) {
        if *self == Link::Down {
            tracing::debug!(target: "broker::replica", leader, %error, "leader still unreachable");
        } else {
            tracing::warn!(target: "broker::replica", leader, %error, "lost the connection to the leader; retrying with backoff");
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
    stop: &Rc<Notify>,
    env: &dyn FetcherEnv,
    fut: F,
) -> Option<F::Output> {
    let stopped = stop.notified();
    if env.is_stopping() {
        return None;
    }
    match select(fut, stopped).await {
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
fn fetch_request(settings: &FetcherSettings, fetches: &[Queued<FetchItem>]) -> FetchRequest {
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
        .with_max_wait_ms(settings.max_wait_ms)
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
