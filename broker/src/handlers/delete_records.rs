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
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

/// Offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut waits = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let (topic, index, offset) = (t.name.0.to_string(), p.partition_index, p.offset);
            let shard = Rc::clone(shard);
            waits.push(async move {
                let r = shard
                    .with_partition(&topic, index, move |part| {
                        Box::pin(async move {
                            // The leader only; followers follow its log start offset (in
                            // their fetch answers).
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
                        })
                    })
                    .await;
                r.and_then(|x| x)
            });
        }
    }
    let mut answers = join_all(waits).await.into_iter();
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
