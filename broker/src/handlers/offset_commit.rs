//! OffsetCommit: committed offsets of a group member (generation checked) or of a standalone
//! consumer (generation -1, Empty group). Partitions of unknown topics get
//! UNKNOWN_TOPIC_OR_PARTITION here (as Kafka), which also bounds what a group can store.
//! v2..v4 carry retention_time_ms; v5+ use the broker's offset retention.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{RequestContext, Versions};
use crate::group::{self, CommitPartition, CommitTopic, GroupError, OffsetCommit, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 2, max: 9 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let metadata = shard.metadata();
    let known = |topic: &str, partition: i32| {
        metadata
            .topic(topic)
            .is_some_and(|t| partition >= 0 && partition < t.partitions)
    };
    let topics: Vec<CommitTopic> = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .filter(|p| known(&name, p.partition_index))
                .map(|p| CommitPartition {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
                .collect();
            CommitTopic { name, partitions }
        })
        .filter(|t: &CommitTopic| !t.partitions.is_empty())
        .collect();
    let mut errors: HashMap<(String, i32), Option<GroupError>> = HashMap::new();
    if !topics.is_empty() {
        let commit = OffsetCommit {
            group_id: req.group_id.0.to_string(),
            generation_id: req.generation_id_or_member_epoch,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            retention_time_ms: if (2..=4).contains(&ctx.version) {
                req.retention_time_ms
            } else {
                -1
            },
            topics: topics.clone(),
        };
        let group_id = commit.group_id.clone();
        let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
            c.offset_commit(now, id, commit)
        })
        .await;
        match reply {
            Ok(Reply::OffsetCommit(result)) => {
                for t in result {
                    for (p, e) in t.partitions {
                        errors.insert((t.name.clone(), p), e);
                    }
                }
            }
            Ok(other) => unreachable!("OffsetCommit answered with {other:?}"),
            Err(error) => {
                for t in &topics {
                    for p in &t.partitions {
                        errors.insert((t.name.clone(), p.partition), Some(error));
                    }
                }
            }
        }
    }
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = match errors.get(&(name.clone(), p.partition_index)) {
                        Some(e) => *e,
                        None => Some(GroupError::UnknownTopicOrPartition),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code_of(error))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
