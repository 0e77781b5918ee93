//! OffsetForLeaderEpoch: the end offset of a leader epoch, for consumers validating their
//! position after a leader change (KIP-320). The leader answers from its replication core's
//! epoch cache (followers truncate with it, KIP-101/279); an epoch newer than ours is
//! answered with UNDEFINED as Kafka does.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{RequestContext, Versions};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 2, max: 4 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut waits = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let (topic, index, current, wanted) = (
                t.topic.0.to_string(),
                p.partition,
                p.current_leader_epoch,
                p.leader_epoch,
            );
            let shard = Rc::clone(shard);
            waits.push(async move {
                shard
                    .with_partition(&topic, index, move |part| {
                        Box::pin(async move {
                            // The leader's epoch cache (Kafka's endOffsetFor), for
                            // followers and consumers alike.
                            part.replica
                                .offset_for_leader_epoch(current, wanted)
                                .map_err(crate::replica::error_code)
                        })
                    })
                    .await
                    .and_then(|x| x)
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
