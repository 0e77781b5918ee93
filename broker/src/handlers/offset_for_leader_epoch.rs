//! OffsetForLeaderEpoch: the end offset of a leader epoch, for consumers validating their
//! position after a leader change (KIP-320). The leader answers from its replication core's
//! epoch cache (followers truncate with it, KIP-101/279); an epoch newer than ours is
//! answered with UNDEFINED as Kafka does.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{RequestContext, Versions};
use crate::runtime::scatter::{Scatter, scatter_gather};
use crate::runtime::{LocalBoxFuture, Shard};

pub const VERSIONS: Versions = Versions { min: 2, max: 4 };

/// (leader epoch, end offset) or the partition's error.
type Answer = Result<(i32, i64), ResponseError>;

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let metadata = shard.metadata();
    let mut answers: Vec<Option<Answer>> = Vec::new();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for t in &req.topics {
        let topic = t.topic.0.as_str();
        for p in &t.partitions {
            let known = metadata
                .topic(topic)
                .is_some_and(|m| p.partition >= 0 && p.partition < m.partitions);
            let slot = answers.len();
            if known {
                let item = (
                    topic.to_string(),
                    p.partition,
                    p.current_leader_epoch,
                    p.leader_epoch,
                );
                by_shard.push(shard.owner_of(topic, p.partition), slot, item);
                answers.push(None);
            } else {
                answers.push(Some(Err(ResponseError::UnknownTopicOrPartition)));
            }
        }
    }
    scatter_gather(shard, by_shard, &mut answers, end_offsets_on_owner, || {
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
                    let out = EpochEndOffset::default().with_partition(p.partition);
                    match answers
                        .next()
                        .unwrap_or(Err(ResponseError::UnknownServerError))
                    {
                        Ok((epoch, end)) => out.with_leader_epoch(epoch).with_end_offset(end),
                        Err(e) => out
                            .with_error_code(e.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// On the owner: each partition's (topic, partition, current epoch, wanted epoch) answer from
/// the leader's epoch cache (Kafka's endOffsetFor), for followers and consumers alike.
fn end_offsets_on_owner(
    shard: &Rc<Shard>,
    items: Vec<(String, i32, i32, i32)>,
) -> LocalBoxFuture<Vec<Answer>> {
    let answers = items
        .into_iter()
        .map(
            |(topic, partition, current, wanted)| match shard.partition(&topic, partition) {
                Some(part) => part
                    .replica
                    .offset_for_leader_epoch(current, wanted)
                    .map_err(crate::replica::error_code),
                None => Err(ResponseError::NotLeaderOrFollower),
            },
        )
        .collect();
    Box::pin(std::future::ready(answers))
}
