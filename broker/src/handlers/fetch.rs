//! Fetch: plan per owning shard, read per shard in parallel, long-poll with wake-ups on new
//! data (no polling loop), honour max_wait_ms / min_bytes / max_bytes / partition max_bytes /
//! isolation level, and incremental fetch sessions (KIP-227).
//!
//! Long poll: when the first read returns fewer than `min_bytes`, every owning shard is asked
//! to resolve when any of its partitions' high watermark passes the fetch offset (the
//! partition's `data_notify`), racing a timer at the deadline; then the partitions are read
//! again. A waiter registers before it checks, so no wake-up is lost.
//! Response size: each shard fills its partitions in order within `max_bytes`; the gatherer
//! then keeps the response within `max_bytes` in request order, the first non-empty partition
//! always included (Kafka's KIP-74 rule).

use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select, select_all};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_wire::fetch_frame::frame_fetch_response;

use super::fetch_session::{FINAL_EPOCH, FetchPartition, INITIAL_EPOCH, SessionError};
use super::{Reply, RequestContext, Versions, topic_name};
use crate::metadata::ClusterMetadata;
use crate::net::sendfile::{FileRange, Records};
use crate::partition::Partition;
use crate::runtime::scatter::{Scatter, scatter_gather};
use crate::runtime::{LocalBoxFuture, Shard};

pub const VERSIONS: Versions = Versions { min: 4, max: 17 };

/// First version that names topics by id.
const TOPIC_ID_VERSION: i16 = 13;
/// Upper bound on a client's max_wait_ms (Kafka has none; this keeps shutdown prompt).
pub const MAX_WAIT_MS_LIMIT: i32 = 60_000;

/// One partition's read result.
#[derive(Debug)]
pub struct Got {
    pub error: ResponseError,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records: Records,
    /// read_committed: (producer id, first offset) of the aborted transactions in the range
    /// read (Kafka's `collectAbortedTransactions`); empty otherwise.
    pub aborted: Vec<(i64, i64)>,
}

impl Got {
    fn error(error: ResponseError) -> Got {
        Got {
            error,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            records: Records::Mem(Bytes::new()),
            aborted: Vec::new(),
        }
    }
    fn is_error(&self) -> bool {
        self.error.code() != 0
    }
}

const NONE: ResponseError = ResponseError::Unknown(0);

enum Mode {
    /// No session: answer every requested partition.
    Sessionless,
    /// A full fetch that (maybe) created a session: answer every partition.
    Full(i32),
    /// An incremental fetch: answer only partitions with news.
    Incremental(i32),
}

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, req: FetchRequest) -> Reply {
    let metadata = shard.metadata();
    let by_id = ctx.version >= TOPIC_ID_VERSION;
    let requested = requested_partitions(&metadata, &req, by_id);
    let (mode, wants) = match open_session(shard, &req, requested, by_id, &metadata) {
        Ok(x) => x,
        Err(e) => {
            let code = match e {
                SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
            };
            return ctx.reply(
                &FetchResponse::default()
                    .with_error_code(code.code())
                    .with_session_id(0),
            );
        }
    };
    let read_committed = req.isolation_level == 1;
    let max_bytes = u32::try_from(req.max_bytes).unwrap_or(0);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_MS_LIMIT) as u64);
    let deadline = Instant::now() + max_wait;
    let zero_copy = shard.config().kafka.zero_copy_fetch;
    let replica_id = follower_id(ctx.version, &req);
    let mut gots = loop {
        let gots = read_all(
            shard,
            &wants,
            replica_id,
            read_committed,
            max_bytes,
            zero_copy,
        )
        .await;
        let total: usize = gots.iter().map(|g| g.records.len()).sum();
        let any_error = gots.iter().any(Got::is_error);
        if total >= min_bytes
            || any_error
            || wants.is_empty()
            || Instant::now() >= deadline
            || shard.is_stopping()
            || !wait_for_data(shard, &wants, replica_id, read_committed, deadline).await
        {
            break gots;
        }
    };
    trim_to_max_bytes(&mut gots, max_bytes);
    let session_id = match mode {
        Mode::Sessionless => 0,
        Mode::Full(id) | Mode::Incremental(id) => id,
    };
    let incremental = matches!(mode, Mode::Incremental(_));
    // Remember what the client now knows; in incremental mode skip partitions without news.
    let mut include = vec![true; wants.len()];
    if session_id != 0 {
        let sessions = super::fetch_session::sessions(shard);
        let mut cache = sessions.borrow_mut();
        if let Some(session) = cache.session_mut(session_id) {
            for (i, (w, g)) in wants.iter().zip(&gots).enumerate() {
                let now = (g.high_watermark, g.last_stable_offset, g.log_start_offset);
                let news = g.is_error() || !g.records.is_empty();
                include[i] = session.record_sent(&w.key(), now, news, incremental);
            }
        }
    }
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut records = Vec::with_capacity(wants.len());
    let mut any_files = false;
    for ((w, g), inc) in wants.iter().zip(gots).zip(include) {
        if !inc {
            continue;
        }
        let data = PartitionData::default()
            .with_partition_index(w.partition)
            .with_error_code(g.error.code())
            .with_high_watermark(g.high_watermark)
            .with_last_stable_offset(g.last_stable_offset)
            // log_start_offset exists from v5 on.
            .with_log_start_offset(if ctx.version >= 5 {
                g.log_start_offset
            } else {
                -1
            })
            // null for read_uncommitted, as Kafka.
            .with_aborted_transactions(read_committed.then(|| aborted_list(&g.aborted)))
            .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1));
        any_files |= matches!(g.records, Records::Files(_));
        records.push(g.records);
        match responses.last_mut() {
            Some(t) if t.topic_id == w.topic_id && t.topic.0.as_str() == &*w.topic => {
                t.partitions.push(data)
            }
            _ => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(topic_name(&w.topic))
                    .with_topic_id(w.topic_id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    let mut resp = FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(responses);
    if any_files {
        return match frame_fetch_response(ctx.version, ctx.correlation_id, &resp, records) {
            Ok(chunks) => Reply::Chunks(chunks),
            Err(e) => Reply::Close(e.to_string()),
        };
    }
    let mut records = records.into_iter();
    for t in resp.responses.iter_mut() {
        for p in t.partitions.iter_mut() {
            p.records = Some(match records.next() {
                Some(Records::Mem(b)) => b,
                _ => Bytes::new(),
            });
        }
    }
    ctx.reply(&resp)
}

/// The wire form of a partition's aborted transactions.
fn aborted_list(
    aborted: &[(i64, i64)],
) -> Vec<kafka_protocol::messages::fetch_response::AbortedTransaction> {
    aborted
        .iter()
        .map(|&(producer_id, first_offset)| {
            kafka_protocol::messages::fetch_response::AbortedTransaction::default()
                .with_producer_id(kafka_protocol::messages::ProducerId(producer_id))
                .with_first_offset(first_offset)
        })
        .collect()
}

/// The follower's node id of a replica fetch (`replica_id` before v15, `replica_state` from
/// v15), -1 for a consumer.
fn follower_id(version: i16, req: &FetchRequest) -> i32 {
    if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    }
}

/// The partitions named in the request, topics resolved by name or id.
fn requested_partitions(
    metadata: &ClusterMetadata,
    req: &FetchRequest,
    by_id: bool,
) -> Vec<FetchPartition> {
    let mut out = Vec::new();
    for t in &req.topics {
        let meta = if by_id {
            metadata.topic_by_id(&t.topic_id)
        } else {
            metadata.topic(t.topic.0.as_str())
        };
        let (topic, topic_id): (Arc<str>, _) = match meta {
            Some(m) => (m.name.as_str().into(), m.id),
            None if by_id => ("".into(), t.topic_id),
            None => (t.topic.0.as_str().into(), uuid::Uuid::nil()),
        };
        for p in &t.partitions {
            out.push(FetchPartition {
                topic: Arc::clone(&topic),
                topic_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
    out
}

/// KIP-227 session handling: which partitions to read and how to answer.
fn open_session(
    shard: &Rc<Shard>,
    req: &FetchRequest,
    requested: Vec<FetchPartition>,
    by_id: bool,
    metadata: &ClusterMetadata,
) -> Result<(Mode, Vec<FetchPartition>), SessionError> {
    let sessions = super::fetch_session::sessions(shard);
    let mut cache = sessions.borrow_mut();
    let (id, epoch) = (req.session_id, req.session_epoch);
    if epoch == FINAL_EPOCH {
        if id != 0 {
            cache.remove(id);
        }
        return Ok((Mode::Sessionless, requested));
    }
    if epoch == INITIAL_EPOCH {
        if id != 0 {
            cache.remove(id);
        }
        return Ok(match cache.create(requested.iter().cloned()) {
            Some(new_id) => (Mode::Full(new_id), requested),
            None => (Mode::Sessionless, requested),
        });
    }
    if id == 0 {
        return Err(SessionError::InvalidEpoch);
    }
    let session = cache.get_incremental(id, epoch)?;
    for r in requested {
        session.upsert(r);
    }
    if !req.forgotten_topics_data.is_empty() {
        // (topic id or name, partitions) per forgotten topic; one pass over the session.
        let forgotten: Vec<(uuid::Uuid, String, &[i32])> = req
            .forgotten_topics_data
            .iter()
            .map(|f| {
                let name = if by_id {
                    metadata
                        .topic_by_id(&f.topic_id)
                        .map(|m| m.name.clone())
                        .unwrap_or_default()
                } else {
                    f.topic.0.to_string()
                };
                (f.topic_id, name, f.partitions.as_slice())
            })
            .collect();
        session.forget(|p| {
            forgotten.iter().any(|(topic_id, name, partitions)| {
                ((by_id && p.topic_id == *topic_id) || (!by_id && *p.topic == **name))
                    && partitions.contains(&p.partition)
            })
        });
    }
    Ok((Mode::Incremental(id), session.partitions()))
}

/// Reads every wanted partition on its owner, in parallel across shards.
async fn read_all(
    shard: &Rc<Shard>,
    wants: &[FetchPartition],
    replica_id: i32,
    read_committed: bool,
    max_bytes: u32,
    zero_copy: bool,
) -> Vec<Got> {
    let metadata = shard.metadata();
    let mut gots: Vec<Option<Got>> = (0..wants.len()).map(|_| None).collect();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for (i, w) in wants.iter().enumerate() {
        match metadata.topic(&w.topic) {
            Some(m) if w.topic_id.is_nil() || m.id == w.topic_id => {
                if w.partition < 0 || w.partition >= m.partitions {
                    gots[i] = Some(Got::error(ResponseError::UnknownTopicOrPartition));
                } else {
                    by_shard.push(shard.owner_of(&w.topic, w.partition), i, w.clone());
                }
            }
            _ if !w.topic_id.is_nil() => gots[i] = Some(Got::error(ResponseError::UnknownTopicId)),
            _ => gots[i] = Some(Got::error(ResponseError::UnknownTopicOrPartition)),
        }
    }
    scatter_gather(
        shard,
        by_shard,
        &mut gots,
        move |s: &Rc<Shard>, parts| {
            read_on_owner(s, parts, replica_id, read_committed, max_bytes, zero_copy)
        },
        || Got::error(ResponseError::NotLeaderOrFollower),
    )
    .await;
    gots.into_iter()
        .map(|g| g.unwrap_or_else(|| Got::error(ResponseError::UnknownServerError)))
        .collect()
}

/// On the owner: reads its partitions in order within a shared byte budget.
fn read_on_owner(
    shard: &Rc<Shard>,
    parts: Vec<FetchPartition>,
    replica_id: i32,
    read_committed: bool,
    max_bytes: u32,
    zero_copy: bool,
) -> LocalBoxFuture<Vec<Got>> {
    let resolved: Vec<(Option<Rc<Partition>>, FetchPartition, bool)> = parts
        .into_iter()
        .map(|w| {
            let p = shard.partition(&w.topic, w.partition);
            let offline = p.is_none() && shard.offline_reason(&w.topic, w.partition).is_some();
            (p, w, offline)
        })
        .collect();
    Box::pin(async move {
        let mut budget = max_bytes;
        let mut out = Vec::with_capacity(resolved.len());
        for (p, w, offline) in resolved {
            let g = match p {
                Some(p) => {
                    read_partition(&p, &w, replica_id, read_committed, budget, zero_copy).await
                }
                // Kafka's answer for a partition whose log directory failed.
                None if offline => Got::error(ResponseError::KafkaStorageError),
                None => Got::error(ResponseError::NotLeaderOrFollower),
            };
            budget = budget.saturating_sub(g.records.len() as u32);
            out.push(g);
        }
        out
    })
}

async fn read_partition(
    p: &Partition,
    w: &FetchPartition,
    replica_id: i32,
    read_committed: bool,
    budget: u32,
    zero_copy: bool,
) -> Got {
    if p.is_retired() {
        return Got::error(ResponseError::NotLeaderOrFollower);
    }
    // The replication core checks role and epochs, records a follower's fetch offset, and
    // says how far to read (the log end for a follower, the high watermark for a consumer).
    // The engine may be a few appends behind the core: never read past its end.
    let follower = (replica_id >= 0).then_some(replica_id);
    let range = match p
        .replica
        .fetch(follower, w.current_leader_epoch, w.fetch_offset)
    {
        Ok(range) => range,
        Err(e) => return Got::error(crate::replica::error_code(e)),
    };
    let log_end = p.log.log_end_offset();
    let hw = range.high_watermark.min(log_end);
    // Answered for both isolation levels, as Kafka does; read_committed reads up to it.
    let lso = p.last_stable_offset_at(hw);
    let log_start = p.log_start_offset();
    let mut got = Got {
        error: NONE,
        high_watermark: hw,
        last_stable_offset: lso,
        log_start_offset: log_start,
        records: Records::Mem(Bytes::new()),
        aborted: Vec::new(),
    };
    // Kafka answers OFFSET_OUT_OF_RANGE with -1 offsets; Sluice keeps them below the log start
    // because loadgen's consumer skips to the log start it names (docs/status.md,
    // "Differences from Apache Kafka").
    if w.fetch_offset < log_start || w.fetch_offset > p.log.log_end_offset() {
        got.error = ResponseError::OffsetOutOfRange;
        return got;
    }
    let upper = if replica_id >= 0 {
        range.max_offset.min(log_end)
    } else if read_committed {
        lso
    } else {
        hw
    };
    let limit = u32::try_from(w.partition_max_bytes)
        .unwrap_or(0)
        .min(budget);
    if w.fetch_offset >= upper || limit == 0 {
        return got;
    }
    let read = match p.log.read(w.fetch_offset, upper, limit, true).await {
        Ok(r) => r,
        Err(engine::ReadError::OffsetOutOfRange { .. }) => {
            got.error = ResponseError::OffsetOutOfRange;
            return got;
        }
        Err(e) => {
            tracing::error!(target: "broker::fetch", topic = %p.topic, partition = p.index, error = %e, "read failed");
            return Got::error(ResponseError::KafkaStorageError);
        }
    };
    if read.slices.is_empty() {
        return got;
    }
    if read_committed && replica_id < 0 {
        // Upper bound: the last stable offset, not the end of what was read (Kafka's): a
        // transaction aborted beyond the records returned is listed too, which clients skip.
        got.aborted = match p.aborted_transactions(w.fetch_offset, upper).await {
            Ok(aborted) => aborted,
            Err(e) => {
                tracing::error!(target: "broker::fetch", topic = %p.topic, partition = p.index, error = %e, "aborted-transaction index read failed");
                return Got::error(ResponseError::KafkaStorageError);
            }
        };
    }
    if zero_copy {
        // Hand the ranges over with their own descriptors (dup): the connection's shard
        // splices them, and a segment deleted meanwhile stays readable.
        let mut ranges = Vec::with_capacity(read.slices.len());
        for s in &read.slices {
            match s.file.file().as_fd().try_clone_to_owned() {
                Ok(fd) => ranges.push(FileRange {
                    fd,
                    position: s.position,
                    len: s.len,
                }),
                Err(e) => {
                    tracing::error!(target: "broker::fetch", topic = %p.topic, partition = p.index, error = %e, "dup failed");
                    return Got::error(ResponseError::KafkaStorageError);
                }
            }
        }
        got.records = Records::Files(ranges);
        return got;
    }
    match p.log.read_bytes(&read.slices).await {
        Ok(bytes) => got.records = Records::Mem(bytes),
        Err(e) => {
            tracing::error!(target: "broker::fetch", topic = %p.topic, partition = p.index, error = %e, "read_bytes failed");
            return Got::error(ResponseError::KafkaStorageError);
        }
    }
    got
}

/// Waits until any wanted partition has data past its fetch offset, or the deadline.
/// Returns false if the deadline passed.
async fn wait_for_data(
    shard: &Rc<Shard>,
    wants: &[FetchPartition],
    replica_id: i32,
    read_committed: bool,
    deadline: Instant,
) -> bool {
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for (i, w) in wants.iter().enumerate() {
        if !w.topic.is_empty() && w.partition >= 0 {
            let item = (w.topic.clone(), w.partition, w.fetch_offset);
            by_shard.push(shard.owner_of(&w.topic, w.partition), i, item);
        }
    }
    if by_shard.is_empty() {
        return false;
    }
    // Not gathered: the first owner to see data ends the wait.
    let waits: Vec<LocalBoxFuture<Option<()>>> = by_shard
        .send(shard, move |s: &Rc<Shard>, items| {
            wait_on_owner(s, items, replica_id, read_committed, deadline)
        })
        .await
        .into_answers()
        .map(|queued| Box::pin(queued.result()) as LocalBoxFuture<Option<()>>)
        .collect();
    let timeout = deadline.saturating_duration_since(Instant::now());
    let stop = shard.stop_notify.notified();
    let timer = Box::pin(compio::time::sleep(timeout));
    match select(select(select_all(waits), stop), timer).await {
        Either::Left(_) => Instant::now() < deadline,
        Either::Right(_) => false,
    }
}

/// On the owner: resolves when a partition's visible end passes its offset, or at `deadline`.
fn wait_on_owner(
    shard: &Rc<Shard>,
    items: Vec<(Arc<str>, i32, i64)>,
    replica_id: i32,
    read_committed: bool,
    deadline: Instant,
) -> LocalBoxFuture<()> {
    let mut notified = Vec::new();
    let mut ready = false;
    for (topic, partition, offset) in items {
        match shard.partition(&topic, partition) {
            Some(p) => {
                // Register first, then check: a wake-up in between is not lost.
                notified.push(p.data_notify.notified());
                // A follower waits for new appends (the leader's log end), a consumer for
                // the high watermark.
                let end = if replica_id >= 0 {
                    p.log.log_end_offset()
                } else if read_committed {
                    p.last_stable_offset()
                } else {
                    p.high_watermark()
                };
                if end > offset || offset < p.log_start_offset() {
                    ready = true;
                }
            }
            None => ready = true,
        }
    }
    if ready || notified.is_empty() {
        return Box::pin(async {});
    }
    let stop = shard.stop_notify.notified();
    Box::pin(async move {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let timer = Box::pin(compio::time::sleep(timeout));
        let _ = select(select(select_all(notified), stop), timer).await;
    })
}

/// Keeps the answer within `max_bytes` in request order; the first non-empty partition stays
/// whole even if larger (KIP-74).
fn trim_to_max_bytes(gots: &mut [Got], max_bytes: u32) {
    let mut total: u64 = 0;
    for g in gots.iter_mut() {
        let len = g.records.len() as u64;
        if len == 0 {
            continue;
        }
        if total > 0 && total + len > u64::from(max_bytes) {
            g.records = Records::Mem(Bytes::new());
            g.aborted.clear();
            continue;
        }
        total += len;
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::replica::driver::test_support::{TestEnv, apply, open, state};

    fn want(fetch_offset: i64, current_leader_epoch: i32) -> FetchPartition {
        FetchPartition {
            topic: "t".into(),
            topic_id: uuid::Uuid::nil(),
            partition: 0,
            fetch_offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch,
        }
    }

    fn run(f: impl std::future::Future<Output = ()>) {
        compio::runtime::Runtime::new().unwrap().block_on(f);
    }

    #[test]
    fn consumer_fetch_on_a_follower_is_not_leader_or_follower() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let p = open(dir.path(), 1, Rc::new(TestEnv::default())).await;
            // Before any state, and as a follower: consumers are sent to the leader.
            let g = read_partition(&p, &want(0, -1), -1, false, 1 << 20, false).await;
            assert_eq!(g.error, ResponseError::NotLeaderOrFollower);
            apply(&p, state(0, &[0, 1], &[0, 1], 1));
            let g = read_partition(&p, &want(0, -1), -1, false, 1 << 20, false).await;
            assert_eq!(g.error, ResponseError::NotLeaderOrFollower);
            let g = read_partition(&p, &want(0, 1), -1, false, 1 << 20, false).await;
            assert_eq!(g.error, ResponseError::NotLeaderOrFollower);
        });
    }

    #[test]
    fn leader_serves_followers_to_its_log_end_and_consumers_to_the_hw() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let p = open(dir.path(), 0, Rc::new(TestEnv::default())).await;
            apply(&p, state(0, &[0, 1], &[0, 1], 1));
            let batch = bytes::Bytes::from(engine::batch::build_test_batch(3, 64, 1, 1, 7));
            let acked = p
                .submit_replicated(batch, 0, 1)
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert_eq!(acked.base_offset, 0);
            // The high watermark waits for follower 1; a consumer sees nothing yet.
            let g = read_partition(&p, &want(0, 1), -1, false, 1 << 20, false).await;
            assert_eq!((g.error, g.high_watermark), (NONE, 0));
            assert!(g.records.is_empty());
            // Epoch checks as Kafka: older is fenced, newer unknown.
            let g = read_partition(&p, &want(0, 0), -1, false, 1 << 20, false).await;
            assert_eq!(g.error, ResponseError::FencedLeaderEpoch);
            let g = read_partition(&p, &want(0, 2), -1, false, 1 << 20, false).await;
            assert_eq!(g.error, ResponseError::UnknownLeaderEpoch);
            // The follower gets the batch (beyond the high watermark)...
            let g = read_partition(&p, &want(0, 1), 1, false, 1 << 20, false).await;
            assert_eq!(g.error, NONE);
            assert!(!g.records.is_empty());
            // ...and its next fetch at 3 commits it, once the leader's own sync is in.
            p.log.wait_durable(2).await.unwrap();
            let durable = p.log.durable_offset();
            p.replica
                .step(|core, ctx, out| core.on_durable(ctx, durable, out));
            let g = read_partition(&p, &want(3, 1), 1, false, 1 << 20, false).await;
            assert_eq!((g.error, g.high_watermark), (NONE, 3));
            let g = read_partition(&p, &want(0, -1), -1, false, 1 << 20, false).await;
            assert_eq!((g.error, g.high_watermark), (NONE, 3));
            assert!(!g.records.is_empty());
        });
    }
}
