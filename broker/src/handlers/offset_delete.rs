//! OffsetDelete (KIP-496): removes committed offsets of an Empty group, or of topics a
//! consumer group no longer subscribes to (GROUP_SUBSCRIBED_TO_TOPIC otherwise).

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{RequestContext, Versions, topic_name};
use crate::group::{self, OffsetDelete, OffsetDeleteResult, Reply, TopicPartitions, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 0 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let delete = OffsetDelete {
        group_id: req.group_id.0.to_string(),
        topics: req
            .topics
            .into_iter()
            .map(|t| TopicPartitions {
                name: t.name.0.to_string(),
                partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
            })
            .collect(),
    };
    let group_id = delete.group_id.clone();
    let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
        c.offset_delete(now, id, delete)
    })
    .await;
    let result = match reply {
        Ok(Reply::OffsetDelete(result)) => result,
        Ok(other) => unreachable!("OffsetDelete answered with {other:?}"),
        Err(error) => OffsetDeleteResult {
            error: Some(error),
            topics: vec![],
        },
    };
    let topics = result
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|(p, e)| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(code_of(e))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic_name(&t.name))
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default()
        .with_error_code(code_of(result.error))
        .with_topics(topics)
}
