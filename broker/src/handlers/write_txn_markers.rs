//! WriteTxnMarkers (API 27): the transaction coordinator asks a partition leader to end a
//! producer's transaction on its partitions by appending a COMMIT or ABORT control batch.
//!
//! `write_markers` is the seam the transaction coordinator (`crate::txn`) calls for
//! partitions led by this node; for other nodes it sends the same request over the wire to
//! their leader, whose handler runs the same function.
//!
//! As Kafka's `handleWriteTxnMarkersRequest` (KafkaApis.scala): each partition of each marker
//! is answered on its own; a partition unknown here is UNKNOWN_TOPIC_OR_PARTITION; the
//! append runs on the partition's owner shard under its append ticket (taken in request
//! order), with acks=all, and is answered once replicated (NOT_ENOUGH_REPLICAS, timeouts and
//! the epoch checks of `Partition::append_marker` come back as their codes). Once a marker is
//! replicated on a `__consumer_offsets` partition, the group side materialises or drops the
//! producer's pending offsets (`group::backend::complete_transaction`), as Kafka's
//! `onTransactionCompleted`. A marker of transaction version 2 (`crate::txn::MARKER_VERSION_TAG`)
//! is checked strictly: its epoch must be above the producer's (KIP-1228).

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{RequestContext, Versions};
use crate::group::records::OFFSETS_TOPIC;
use crate::partition::control_batch::EndTxnMarker;
use crate::partition::now_ms;
use crate::runtime::scatter::{Scatter, scatter_gather};
use crate::runtime::{LocalBoxFuture, Shard};

/// Kafka 4 serves v1 only (v0 was removed with the pre-2.0 protocols).
pub const VERSIONS: Versions = Versions { min: 1, max: 1 };

/// One partition's marker to write on its owner.
struct Item {
    topic: String,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    strict: bool,
    /// The transaction's `txn_sequence`, from a Sluice coordinator.
    sequence: Option<u64>,
}

/// The transaction version a marker entry carries (0 without the tag).
pub fn marker_version(m: &WritableTxnMarker) -> i8 {
    m.unknown_tagged_fields
        .get(&crate::txn::MARKER_VERSION_TAG)
        .and_then(|b| b.first())
        .map_or(0, |&v| v as i8)
}

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    write_markers(shard, req).await
}

/// Writes every marker of `req` to the partitions this node leads (each on its owner shard)
/// and answers per partition, as Kafka's `handleWriteTxnMarkersRequest` does.
pub async fn write_markers(
    shard: &Rc<Shard>,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let metadata = shard.metadata();
    let mut answers: Vec<Option<ResponseError>> = Vec::new();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for m in &req.markers {
        let marker = EndTxnMarker {
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        for t in &m.topics {
            let name = t.name.0.as_str();
            let known = metadata.topic(name);
            for &partition in &t.partition_indexes {
                let slot = answers.len();
                match known {
                    Some(meta) if partition >= 0 && partition < meta.partitions => {
                        let item = Item {
                            topic: meta.name.clone(),
                            partition,
                            producer_id: m.producer_id.0,
                            producer_epoch: m.producer_epoch,
                            marker,
                            strict: marker_version(m) >= 2,
                            sequence: crate::txn::tagged_sequence(&m.unknown_tagged_fields),
                        };
                        by_shard.push(shard.owner_of(&meta.name, partition), slot, item);
                        answers.push(None);
                    }
                    _ => {
                        tracing::info!(target: "broker::txn", topic = name, partition, producer_id = m.producer_id.0, "marker for an unknown partition");
                        answers.push(Some(ResponseError::UnknownTopicOrPartition));
                    }
                }
            }
        }
    }
    scatter_gather(shard, by_shard, &mut answers, write_on_owner, || {
        ResponseError::NotLeaderOrFollower
    })
    .await;
    let mut answers = answers
        .into_iter()
        .map(|a| a.unwrap_or(ResponseError::UnknownServerError));
    let markers = req
        .markers
        .into_iter()
        .map(|m| {
            let topics = m
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|&p| {
                            let code = answers.next().unwrap_or(ResponseError::UnknownServerError);
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(code.code())
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

const OK: ResponseError = ResponseError::Unknown(0);

/// On the owner, synchronously in mesh order: takes each partition's append ticket now, then
/// appends the markers and waits for them to be replicated.
fn write_on_owner(shard: &Rc<Shard>, items: Vec<Item>) -> LocalBoxFuture<Vec<ResponseError>> {
    let jobs: Vec<_> = items
        .into_iter()
        .map(|item| {
            let partition = shard.partition(&item.topic, item.partition);
            let ticket = partition.as_ref().map(|p| p.append_lock.lock());
            let offline =
                partition.is_none() && shard.offline_reason(&item.topic, item.partition).is_some();
            (partition, ticket, offline, item)
        })
        .collect();
    let shard = Rc::clone(shard);
    Box::pin(async move {
        let now = now_ms();
        join_all(jobs.into_iter().map(|(partition, ticket, offline, item)| {
            let shard = Rc::clone(&shard);
            async move {
                let (Some(p), Some(ticket)) = (partition, ticket) else {
                    // Kafka: a partition this broker does not host is unknown to it.
                    return if offline {
                        ResponseError::KafkaStorageError
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                };
                let pending = {
                    let _guard = ticket.await;
                    p.wait_producer_state().await;
                    p.append_marker(
                        item.producer_id,
                        item.producer_epoch,
                        item.marker,
                        item.strict,
                        item.sequence,
                        now,
                    )
                };
                let result = match pending {
                    Ok(pending) => pending.wait().await,
                    Err(f) => Err(f),
                };
                match result {
                    Ok(_) => {
                        if item.topic == OFFSETS_TOPIC {
                            crate::group::backend::complete_transaction(
                                &shard,
                                item.partition,
                                item.producer_id,
                                item.marker.commit,
                            );
                        }
                        OK
                    }
                    Err(f) => {
                        let (code, message) = super::produce::failure_code(&f);
                        tracing::debug!(target: "broker::txn", topic = %item.topic, partition = item.partition, producer_id = item.producer_id, ?code, message, "marker not written");
                        code
                    }
                }
            }
        }))
        .await
    })
}

/// [`write_markers`] as the transaction coordinator's `LocalMarkerWriter` (registered by the
/// server at start-up).
pub fn write_markers_boxed(
    shard: Rc<Shard>,
    req: WriteTxnMarkersRequest,
) -> LocalBoxFuture<WriteTxnMarkersResponse> {
    Box::pin(async move { write_markers(&shard, req).await })
}
