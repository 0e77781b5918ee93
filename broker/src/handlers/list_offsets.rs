//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4), earliest
//! tiered (-5, = earliest: no tiering) and by timestamp, answered by each partition's owner.
//! read_committed reads "latest" as the last stable offset, and a timestamp lookup finds
//! only offsets below it (Kafka's `lastFetchableOffset`).

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{RequestContext, Versions};
use crate::runtime::scatter::{Scatter, scatter_gather};
use crate::runtime::{LocalBoxFuture, Shard};

pub const VERSIONS: Versions = Versions { min: 1, max: 10 };

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const EARLIEST_TIERED: i64 = -5;

/// (error, timestamp, offset, leader_epoch)
type Answer = (ResponseError, i64, i64, i32);

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let metadata = shard.metadata();
    let read_committed = req.isolation_level == 1;
    let mut answers: Vec<Option<Answer>> = Vec::new();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for t in &req.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let known = metadata
                .topic(&name)
                .is_some_and(|m| p.partition_index >= 0 && p.partition_index < m.partitions);
            let slot = answers.len();
            if known {
                let item = (
                    name.clone(),
                    p.partition_index,
                    p.timestamp,
                    p.current_leader_epoch,
                );
                by_shard.push(shard.owner_of(&name, p.partition_index), slot, item);
                answers.push(None);
            } else {
                answers.push(Some((ResponseError::UnknownTopicOrPartition, -1, -1, -1)));
            }
        }
    }
    scatter_gather(
        shard,
        by_shard,
        &mut answers,
        move |s: &Rc<Shard>, items| answer_on_owner(s, items, read_committed),
        || (ResponseError::NotLeaderOrFollower, -1, -1, -1),
    )
    .await;
    let mut answers = answers
        .into_iter()
        .map(|a| a.unwrap_or((ResponseError::UnknownServerError, -1, -1, -1)));
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (err, ts, off, epoch) =
                        answers
                            .next()
                            .unwrap_or((ResponseError::UnknownServerError, -1, -1, -1));
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(err.code())
                        .with_timestamp(ts)
                        .with_offset(off);
                    // leader_epoch exists from v4 on.
                    if ctx.version >= 4 {
                        r.with_leader_epoch(epoch)
                    } else {
                        r
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

const OK: ResponseError = ResponseError::Unknown(0);

/// On the owner: answers its partitions (topic, partition, timestamp, current leader epoch),
/// all at once.
fn answer_on_owner(
    shard: &Rc<Shard>,
    items: Vec<(String, i32, i64, i32)>,
    read_committed: bool,
) -> LocalBoxFuture<Vec<Answer>> {
    let parts: Vec<_> = items
        .into_iter()
        .map(|(topic, partition, ts, epoch)| (shard.partition(&topic, partition), ts, epoch))
        .collect();
    Box::pin(join_all(parts.into_iter().map(
        |(part, ts, epoch)| async move {
            match part {
                Some(p) => answer(&p, ts, epoch, read_committed).await,
                None => (ResponseError::NotLeaderOrFollower, -1, -1, -1),
            }
        },
    )))
}

async fn answer(
    p: &crate::partition::Partition,
    ts: i64,
    current_leader_epoch: i32,
    read_committed: bool,
) -> Answer {
    // Leader only, Kafka's epoch checks, OFFSET_NOT_AVAILABLE until a new leader's high
    // watermark reaches its epoch's start.
    let epoch = match p.replica.check_leader(current_leader_epoch) {
        Ok(epoch) => epoch,
        Err(e) => return (crate::replica::error_code(e), -1, -1, -1),
    };
    // Kafka's lastFetchableOffset: what a consumer at this isolation level may read.
    let last_fetchable = if read_committed {
        p.last_stable_offset()
    } else {
        p.high_watermark()
    };
    match ts {
        LATEST => (OK, -1, last_fetchable, epoch),
        EARLIEST | EARLIEST_LOCAL | EARLIEST_TIERED => (OK, -1, p.log_start_offset(), epoch),
        MAX_TIMESTAMP => match p.log.max_timestamp() {
            Some((t, o)) => (OK, t, o, epoch),
            None => (OK, -1, -1, epoch),
        },
        ts if ts >= 0 => match p.log.offset_for_timestamp(ts).await {
            Ok(Some((t, o))) if o < last_fetchable => {
                match first_record_at_or_after(p, o, ts).await {
                    Some((rt, ro)) => (OK, rt, ro, epoch),
                    None => (OK, t, o, epoch),
                }
            }
            Ok(_) => (OK, -1, -1, epoch),
            Err(e) => {
                tracing::error!(target: "broker::list_offsets", topic = %p.topic, partition = p.index, error = %e, "offset_for_timestamp failed");
                (ResponseError::KafkaStorageError, -1, -1, -1)
            }
        },
        // Kafka: a special timestamp it does not know is UNSUPPORTED_VERSION.
        _ => (ResponseError::UnsupportedVersion, -1, -1, -1),
    }
}

/// The engine answers at batch granularity (the batch whose max timestamp >= `ts`); Kafka
/// answers with the first *record* at or after `ts`. Reads that one batch (decompressing if
/// needed) and finds the record. None if the batch cannot be read or decoded.
async fn first_record_at_or_after(
    p: &crate::partition::Partition,
    batch_offset: i64,
    ts: i64,
) -> Option<(i64, i64)> {
    let read = p
        .log
        .read(batch_offset, p.high_watermark(), 1, true)
        .await
        .ok()?;
    let first = read.slices.first()?.clone();
    let mut bytes = p.log.read_bytes(std::slice::from_ref(&first)).await.ok()?;
    let log_start = p.log_start_offset();
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
    }));
    let set = match decoded {
        Ok(Ok(set)) => set,
        _ => return None,
    };
    set.records
        .iter()
        .filter(|r| !r.control && r.offset >= log_start)
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.timestamp, r.offset))
}
