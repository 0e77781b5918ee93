//! Produce: decode (record batches stay slices of the request frame), group partitions by
//! owning shard, move each batch (`Bytes`, no copy) to its owner, which checks producer
//! sequences and appends; the connection's shard gathers the answers.
//!
//! Ordering: `submit` runs before the connection reads its next request and, for every
//! partition, takes the partition's append ticket (directly, or inside the mesh closure that
//! runs in arrival order on the owner), so pipelined produces append in the order sent.
//! acks: 0 = no answer (an error closes the connection, as Kafka does), 1 = answer once in
//! the log (page cache; the high watermark already covers it when the leader is alone in the
//! ISR, as in Kafka), -1 = once committed on the ISR (durably, when `log.acks_all_durable`:
//! it waits for the replication core's durable watermark, which counts only synced offsets).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{Reply, RequestContext, Versions, decode, str_bytes, topic_name};
use crate::partition::{AppendFailure, AppendOutcome, now_ms};
use crate::runtime::scatter::Scatter;
use crate::runtime::{LocalBoxFuture, Shard};
use crate::txn::verify::Check;

pub const VERSIONS: Versions = Versions { min: 3, max: 13 };

/// First version that names topics by id.
const TOPIC_ID_VERSION: i16 = 13;
/// The first version whose transactional batches add their partition to the transaction
/// (transaction version 2; Kafka's `produceRequestVersionToTransactionSupportedOperation`).
const FIRST_ADD_PARTITION_VERSION: i16 = 12;

/// One partition's answer: offsets, or a Kafka error code with a message.
type PartitionResult = Result<AppendOutcome, (ResponseError, Option<String>)>;

struct Item {
    topic: String,
    partition: i32,
    records: Bytes,
}

/// Decodes the request and queues its appends in order; returns the rest of the work.
pub async fn submit(shard: &Rc<Shard>, ctx: RequestContext, body: Bytes) -> LocalBoxFuture<Reply> {
    let req: ProduceRequest = match decode(body, ctx.version) {
        Ok(r) => r,
        Err(e) => {
            return Box::pin(std::future::ready(Reply::Close(format!(
                "malformed Produce v{}: {e}",
                ctx.version
            ))));
        }
    };
    let acks = req.acks;
    let transactional_id: Option<Rc<str>> = req
        .transactional_id
        .as_ref()
        .map(|t| Rc::from(t.0.as_str()));
    let metadata = shard.metadata();
    // Answer layout, in request order; results filled by slot.
    let mut layout: Vec<(kafka_protocol::messages::TopicName, uuid::Uuid, Vec<i32>)> = Vec::new();
    let mut results: Vec<Option<PartitionResult>> = Vec::new();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for t in req.topic_data {
        let meta = if ctx.version >= TOPIC_ID_VERSION {
            metadata.topic_by_id(&t.topic_id)
        } else {
            metadata.topic(t.name.0.as_str())
        };
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let slot = results.len();
            parts.push(p.index);
            let r = match (meta, p.records) {
                _ if !matches!(acks, -1..=1) => {
                    Some(Err((ResponseError::InvalidRequiredAcks, None)))
                }
                (None, _) if ctx.version >= TOPIC_ID_VERSION => {
                    Some(Err((ResponseError::UnknownTopicId, None)))
                }
                (None, _) => Some(Err((ResponseError::UnknownTopicOrPartition, None))),
                (Some(m), _) if p.index < 0 || p.index >= m.partitions => {
                    Some(Err((ResponseError::UnknownTopicOrPartition, None)))
                }
                (Some(m), _) if crate::metadata::is_internal_topic(&m.name) => Some(Err((
                    ResponseError::InvalidTopicException,
                    Some(format!("cannot produce to internal topic {}", m.name)),
                ))),
                (Some(_), None) => Some(Err((
                    ResponseError::CorruptMessage,
                    Some("null records".into()),
                ))),
                (Some(m), Some(records)) => {
                    let item = Item {
                        topic: m.name.clone(),
                        partition: p.index,
                        records,
                    };
                    by_shard.push(shard.owner_of(&m.name, p.index), slot, item);
                    None
                }
            };
            results.push(r);
        }
        let (name, id) = match meta {
            Some(m) => (topic_name(&m.name), m.id),
            None => (t.name, t.topic_id),
        };
        layout.push((name, id, parts));
    }
    // Queue the appends, shard by shard; each owner takes the append tickets in order.
    let txn_id = transactional_id.as_deref().map(str::to_string);
    let check = Check::for_request(shard, ctx.version, FIRST_ADD_PARTITION_VERSION);
    let appends = by_shard
        .send(shard, move |s: &Rc<Shard>, items| {
            append_on_owner(s, items, acks, txn_id.clone(), check)
        })
        .await;
    Box::pin(async move {
        appends
            .into_slots(&mut results, || {
                Err((ResponseError::NotLeaderOrFollower, None))
            })
            .await;
        if acks == 0 {
            if let Some(Some(Err((code, msg)))) = results.iter().find(|r| matches!(r, Some(Err(_))))
            {
                return Reply::Close(format!(
                    "acks=0 produce failed: {code:?} {}",
                    msg.as_deref().unwrap_or("")
                ));
            }
            return Reply::None;
        }
        let mut results = results.into_iter();
        let responses = layout
            .into_iter()
            .map(|(name, id, parts)| {
                let partition_responses = parts
                    .into_iter()
                    .map(|index| {
                        let r = results
                            .next()
                            .flatten()
                            .unwrap_or(Err((ResponseError::UnknownServerError, None)));
                        let out = PartitionProduceResponse::default().with_index(index);
                        match r {
                            Ok(o) => out
                                .with_base_offset(o.base_offset)
                                .with_log_append_time_ms(o.log_append_time_ms)
                                .with_log_start_offset(o.log_start_offset),
                            Err((code, msg)) => out
                                .with_error_code(code.code())
                                .with_error_message(msg.map(|m| str_bytes(&m)))
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(-1),
                        }
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(id)
                    .with_partition_responses(partition_responses)
            })
            .collect();
        ctx.reply(&ProduceResponse::default().with_responses(responses))
    })
}

/// Runs on the owning shard, synchronously in mesh order: takes each partition's append
/// ticket now, then appends (and waits for the replication core's answer) in the returned
/// future.
fn append_on_owner(
    shard: &Rc<Shard>,
    items: Vec<Item>,
    acks: i16,
    transactional_id: Option<String>,
    check: Check,
) -> LocalBoxFuture<Vec<PartitionResult>> {
    let jobs: Vec<_> = items
        .into_iter()
        .map(|item| {
            let partition = shard.partition(&item.topic, item.partition);
            let ticket = partition.as_ref().map(|p| p.append_lock.lock());
            let offline = partition
                .is_none()
                .then(|| shard.offline_reason(&item.topic, item.partition))
                .flatten();
            (partition, ticket, offline, item.records)
        })
        .collect();
    // Below the free-space reserve (read by the shard's timer, not per request).
    let reserve_refusal = shard.disk.produce_refusal();
    let shared = Arc::clone(&shard.shared);
    let shard_index = shard.id.0;
    let shard = Rc::clone(shard);
    Box::pin(async move {
        let now = now_ms();
        let results = join_all(
            jobs.into_iter()
                .map(|(partition, ticket, offline, records)| {
                    let reserve_refusal = reserve_refusal.clone();
                    let (shard, transactional_id) = (&shard, transactional_id.as_deref());
                    async move {
                        if let Some(reason) = offline {
                            return Err((ResponseError::KafkaStorageError, Some(reason)));
                        }
                        let (Some(p), Some(ticket)) = (partition, ticket) else {
                            return Err((ResponseError::NotLeaderOrFollower, None));
                        };
                        if let Some(message) = reserve_refusal
                            && p.replica.is_leader()
                        {
                            let _guard = ticket.await;
                            return Err((ResponseError::KafkaStorageError, Some(message)));
                        }
                        // The replication core orders the appends and answers acks=1 after the append,
                        // acks=all once committed on the ISR (durably, when log.acks_all_durable); the
                        // ticket is only needed while the core is fed.
                        let pending = {
                            let _guard = ticket.await;
                            // A follower that just became leader records the producer state of the
                            // batches it fetched first, so that it dedupes their retries.
                            p.wait_producer_state().await;
                            let verified =
                                verify_transaction(shard, &p, transactional_id, check, &records)
                                    .await?;
                            let submitted = p.submit_replicated(records, now, acks);
                            if let (Ok(_), Some((producer_id, sequence))) = (&submitted, verified) {
                                p.note_txn_sequence(producer_id, sequence);
                            }
                            submitted
                        };
                        match pending {
                            Ok(pending) => pending.wait().await.map_err(|f| failure_code(&f)),
                            Err(f) => {
                                log_refused_batch(&p.topic, p.index, &f);
                                Err(failure_code(&f))
                            }
                        }
                    }
                }),
        )
        .await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err((ResponseError::KafkaStorageError, _))))
            .count();
        if refused > 0 {
            shared.metrics[shard_index]
                .produce_storage_errors
                .fetch_add(refused as u64, std::sync::atomic::Ordering::Relaxed);
        }
        results
    })
}

/// KIP-890 part 1: the first transactional batch of a producer's transaction on this
/// partition is appended only once its coordinator confirms the partition is in the open
/// transaction (`crate::txn::verify`); later batches of that transaction need no check
/// (the partition's producer state has it ongoing). Under transaction version 2 (part 2,
/// `Check::Add`) the coordinator adds the partition instead, whatever
/// `partition_verification_enable` says, as Kafka does: the client sent no
/// AddPartitionsToTxn. Transactional records without a transactional id are refused as
/// Kafka refuses them (TRANSACTIONAL_ID_AUTHORIZATION_FAILED). Runs with the partition's
/// append ticket held. Answers the producer id and the coordinator's `txn_sequence` of the
/// transaction when the coordinator was asked and gave it (the partition notes it once the
/// batch is appended: markers naming another sequence are refused).
async fn verify_transaction(
    shard: &Rc<Shard>,
    p: &crate::partition::Partition,
    transactional_id: Option<&str>,
    check: Check,
    records: &Bytes,
) -> Result<Option<(i64, u64)>, (ResponseError, Option<String>)> {
    let Some(h) = engine::batch::BatchHeader::parse(records) else {
        return Ok(None);
    };
    if !h.is_transactional() || h.producer_id() < 0 || h.is_control() {
        return Ok(None);
    }
    let Some(transactional_id) = transactional_id else {
        return Err((
            ResponseError::TransactionalIdAuthorizationFailed,
            Some("transactional records need the request's transactional id".into()),
        ));
    };
    if (check == Check::Verify && !shard.config().transaction.partition_verification_enable)
        || !p.replica.is_leader()
        || p.in_transaction(h.producer_id(), h.producer_epoch())
    {
        return Ok(None);
    }
    let sequence = crate::txn::verify::verify(
        shard,
        check,
        transactional_id,
        h.producer_id(),
        h.producer_epoch(),
        &p.topic,
        p.index,
    )
    .await?;
    Ok(sequence.map(|s| (h.producer_id(), s)))
}

/// Milliseconds since the epoch of the last refused-batch log line (any shard).
static REFUSED_BATCH_LOGGED_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
/// At most one refused-batch line per this many milliseconds: a client sending bad batches
/// in a loop must not flood the log (its answers still carry the error).
const REFUSED_BATCH_LOG_INTERVAL_MS: i64 = 1_000;

/// Logs a batch the engine's validation refused (bad client input), rate-limited.
fn log_refused_batch(topic: &str, partition: i32, f: &AppendFailure) {
    use std::sync::atomic::Ordering;
    let AppendFailure::Engine(e @ engine::AppendError::InvalidBatch { .. }) = f else {
        return;
    };
    let now = now_ms();
    let last = REFUSED_BATCH_LOGGED_MS.load(Ordering::Relaxed);
    if now - last < REFUSED_BATCH_LOG_INTERVAL_MS
        || REFUSED_BATCH_LOGGED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    tracing::warn!(target: "broker::produce", topic, partition, error = %e, "produce batch refused");
}

/// The single place append failures become Kafka error codes.
pub(crate) fn failure_code(f: &AppendFailure) -> (ResponseError, Option<String>) {
    use engine::AppendError;
    use engine::batch::BatchError;
    match f {
        AppendFailure::Engine(AppendError::InvalidBatch { error, .. }) => {
            let code = match error {
                BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
                // Kafka's LogValidator / DefaultRecordBatch raise InvalidRecordException for a
                // count that disagrees with the offsets or with the records themselves, and
                // for an old format (magic 0/1) in a v3+ Produce; a magic it does not know
                // (above 2) is a CorruptRecordException (differential test, "magic 3").
                BatchError::BadMagic { magic } if *magic > 2 => ResponseError::CorruptMessage,
                BatchError::BadMagic { .. }
                | BatchError::BadRecordCount { .. }
                | BatchError::RecordCountMismatch { .. }
                | BatchError::BadRecordLength { .. } => ResponseError::InvalidRecord,
                _ => ResponseError::CorruptMessage,
            };
            (code, Some(f_to_string(f)))
        }
        AppendFailure::Engine(AppendError::Empty) => (
            ResponseError::CorruptMessage,
            Some("empty record set".into()),
        ),
        AppendFailure::Engine(AppendError::Log(e)) => {
            tracing::error!(target: "broker::produce", error = %e, "append failed");
            (ResponseError::KafkaStorageError, Some(e.to_string()))
        }
        AppendFailure::Engine(e) => (ResponseError::UnknownServerError, Some(e.to_string())),
        AppendFailure::InvalidProducerEpoch => (ResponseError::InvalidProducerEpoch, None),
        AppendFailure::OutOfOrderSequence => (ResponseError::OutOfOrderSequenceNumber, None),
        AppendFailure::InvalidTxnState => (
            ResponseError::InvalidTxnState,
            Some("a non-transactional batch while the producer's transaction is ongoing".into()),
        ),
        AppendFailure::TooManyTransactions => (
            ResponseError::ConcurrentTransactions,
            Some(format!(
                "the partition holds {} ongoing transactions",
                crate::partition::producer_state::ONGOING_TRANSACTIONS_MAX
            )),
        ),
        AppendFailure::CoordinatorFenced => (ResponseError::TransactionCoordinatorFenced, None),
        AppendFailure::InvalidTimestamp => (
            ResponseError::InvalidTimestamp,
            Some(
                "a record's timestamp is outside the topic's message.timestamp.before.max.ms / \
                 message.timestamp.after.max.ms of the broker's clock"
                    .into(),
            ),
        ),
        AppendFailure::InvalidRecord(m) => (ResponseError::InvalidRecord, Some((*m).to_string())),
        AppendFailure::Corrupt(m) => (ResponseError::CorruptMessage, Some((*m).to_string())),
        AppendFailure::MessageTooLarge { bytes, max } => (
            ResponseError::MessageTooLarge,
            Some(format!(
                "batch of {bytes} bytes exceeds max.message.bytes {max}"
            )),
        ),
        AppendFailure::RecordListTooLarge { bytes, max } => (
            ResponseError::RecordListTooLarge,
            Some(format!(
                "{bytes} bytes exceed segment.bytes {max} of the topic"
            )),
        ),
        AppendFailure::Retired => (ResponseError::NotLeaderOrFollower, None),
        AppendFailure::Storage(m) => (ResponseError::KafkaStorageError, Some((*m).to_string())),
        AppendFailure::Replica(replication::ReplicaError::KafkaStorageError) => (
            ResponseError::KafkaStorageError,
            Some("the log write failed on this broker (disk full or I/O error)".into()),
        ),
        AppendFailure::Replica(e) => (crate::replica::error_code(*e), None),
    }
}

fn f_to_string(f: &AppendFailure) -> String {
    match f {
        AppendFailure::Engine(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}
