//! OffsetFetch: committed offsets of one group (v1..v7; v2+ can ask for all of them) or of
//! several groups (v8+, KIP-709), each answered by its own coordinator shard. require_stable
//! (v7+) reports UNSTABLE_OFFSET_COMMIT while a commit of the partition is in flight.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::{RequestContext, Versions, str_bytes, topic_name};
use crate::group::{self, FetchResult, OffsetFetch, Reply, TopicPartitions, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 1, max: 9 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| TopicPartitions {
                        name: t.name.0.to_string(),
                        partitions: t.partition_indexes,
                    })
                    .collect()
            });
            let result = fetch(shard, g.group_id.0.to_string(), topics, req.require_stable).await;
            groups.push(group_response(g.group_id, result));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| TopicPartitions {
                name: t.name.0.to_string(),
                partitions: t.partition_indexes,
            })
            .collect::<Vec<_>>()
    });
    let requested = topics.clone();
    let mut result = fetch(
        shard,
        req.group_id.0.to_string(),
        topics,
        req.require_stable,
    )
    .await;
    // v1 has no top-level error: a coordinator error goes to every requested partition.
    if ctx.version < 2
        && let Some(error) = result.error.take()
    {
        result.topics = requested
            .unwrap_or_default()
            .into_iter()
            .map(|t| group::FetchTopicResult {
                name: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| group::FetchPartitionResult {
                        partition: p,
                        offset: -1,
                        leader_epoch: -1,
                        metadata: String::new(),
                        error: Some(error),
                    })
                    .collect(),
            })
            .collect();
    }
    let topics = result
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p.partition)
                        .with_committed_offset(p.offset)
                        .with_committed_leader_epoch(p.leader_epoch)
                        .with_metadata(Some(str_bytes(&p.metadata)))
                        .with_error_code(code_of(p.error))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t.name))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default()
        .with_error_code(code_of(result.error))
        .with_topics(topics)
}

async fn fetch(
    shard: &Rc<Shard>,
    group_id: String,
    topics: Option<Vec<TopicPartitions>>,
    require_stable: bool,
) -> FetchResult {
    let request = OffsetFetch {
        group_id: group_id.clone(),
        topics,
        require_stable,
    };
    let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
        c.offset_fetch(now, id, &request)
    })
    .await;
    match reply {
        Ok(Reply::OffsetFetch(result)) => result,
        Ok(other) => unreachable!("OffsetFetch answered with {other:?}"),
        Err(error) => FetchResult {
            error: Some(error),
            topics: vec![],
        },
    }
}

fn group_response(
    group_id: kafka_protocol::messages::GroupId,
    result: FetchResult,
) -> OffsetFetchResponseGroup {
    let topics = result
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p.partition)
                        .with_committed_offset(p.offset)
                        .with_committed_leader_epoch(p.leader_epoch)
                        .with_metadata(Some(str_bytes(&p.metadata)))
                        .with_error_code(code_of(p.error))
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(topic_name(&t.name))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponseGroup::default()
        .with_group_id(group_id)
        .with_topics(topics)
        .with_error_code(code_of(result.error))
}
