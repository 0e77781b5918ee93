//! DeleteRecords: moves a partition's log start offset (offset -1 = the high watermark);
//! whole segments below it are removed by the engine, reads below it fail with
//! OFFSET_OUT_OF_RANGE, and the new low watermark is answered.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{RequestContext, Versions};
use crate::partition::Partition;
use crate::runtime::scatter::{Scatter, scatter_gather};
use crate::runtime::{LocalBoxFuture, Shard};

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

/// Offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let metadata = shard.metadata();
    let mut answers: Vec<Option<Result<i64, ResponseError>>> = Vec::new();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for t in &req.topics {
        let topic = t.name.0.as_str();
        for p in &t.partitions {
            let known = metadata
                .topic(topic)
                .is_some_and(|m| p.partition_index >= 0 && p.partition_index < m.partitions);
            let slot = answers.len();
            if known {
                let item = (topic.to_string(), p.partition_index, p.offset);
                by_shard.push(shard.owner_of(topic, p.partition_index), slot, item);
                answers.push(None);
            } else {
                answers.push(Some(Err(ResponseError::UnknownTopicOrPartition)));
            }
        }
    }
    scatter_gather(shard, by_shard, &mut answers, delete_on_owner, || {
        Err(ResponseError::NotLeaderOrFollower)
    })
    .await;
    let mut answers = answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(ResponseError::UnknownServerError)));
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match answers
                        .next()
                        .unwrap_or(Err(ResponseError::UnknownServerError))
                    {
                        Ok(low) => out.with_low_watermark(low),
                        Err(e) => out.with_error_code(e.code()).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

/// On the owner: moves the log start of its partitions (topic, partition, offset), all at
/// once.
fn delete_on_owner(
    shard: &Rc<Shard>,
    items: Vec<(String, i32, i64)>,
) -> LocalBoxFuture<Vec<Result<i64, ResponseError>>> {
    let parts: Vec<_> = items
        .into_iter()
        .map(|(topic, partition, offset)| (shard.partition(&topic, partition), offset))
        .collect();
    Box::pin(join_all(parts.into_iter().map(
        |(part, offset)| async move {
            match part {
                Some(part) => delete_before(&part, offset).await,
                None => Err(ResponseError::NotLeaderOrFollower),
            }
        },
    )))
}

/// Moves `part`'s log start to `offset` (-1: the high watermark); the new low watermark.
async fn delete_before(part: &Partition, offset: i64) -> Result<i64, ResponseError> {
    // The leader only; followers follow its log start offset (in their fetch answers).
    if let Err(e) = part.replica.check_leader(-1) {
        return Err(crate::replica::error_code(e));
    }
    let hw = part.high_watermark();
    let target = if offset == HIGH_WATERMARK { hw } else { offset };
    if target < 0 || target > hw {
        return Err(ResponseError::OffsetOutOfRange);
    }
    if target <= part.log_start_offset() {
        return Ok(part.log_start_offset());
    }
    match part.log.delete_records_before(target).await {
        Ok(low) => {
            part.after_log_start_moved();
            Ok(low)
        }
        Err(e) => {
            tracing::error!(target: "broker::delete_records", topic = %part.topic, partition = part.index, error = %e, "delete_records failed");
            Err(ResponseError::KafkaStorageError)
        }
    }
}
