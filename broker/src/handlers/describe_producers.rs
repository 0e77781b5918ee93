//! DescribeProducers (API 61, KIP-664): the producers with state on each partition (id,
//! epoch, last sequence, last timestamp, coordinator epoch, start offset of the ongoing
//! transaction or -1), read on the partition's owner shard from its producer state.
//!
//! As Kafka (`ReplicaManager.activeProducerState` / `getPartitionOrError`): any local replica
//! answers, leader or not; a partition of a known topic not hosted here is
//! NOT_LEADER_OR_FOLLOWER, one whose log directory failed KAFKA_STORAGE_ERROR, one of an
//! unknown topic UNKNOWN_TOPIC_OR_PARTITION. The `kafka-transactions.sh describe-producers`
//! tool and the admin client's `describeProducers` send it.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{RequestContext, Versions};
use crate::partition::producer_state::ProducerView;
use crate::runtime::scatter::{Scatter, scatter_gather};
use crate::runtime::{LocalBoxFuture, Shard};

pub const VERSIONS: Versions = Versions { min: 0, max: 0 };

type Answer = Result<Vec<ProducerView>, ResponseError>;

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let metadata = shard.metadata();
    let mut answers: Vec<Option<Answer>> = Vec::new();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for t in &req.topics {
        let meta = metadata.topic(t.name.0.as_str());
        for &partition in &t.partition_indexes {
            let slot = answers.len();
            match meta {
                Some(m) if partition >= 0 && partition < m.partitions => {
                    let owner = shard.owner_of(&m.name, partition);
                    by_shard.push(owner, slot, (m.name.clone(), partition));
                    answers.push(None);
                }
                _ => answers.push(Some(Err(ResponseError::UnknownTopicOrPartition))),
            }
        }
    }
    scatter_gather(shard, by_shard, &mut answers, describe_on_owner, || {
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
                .partition_indexes
                .iter()
                .map(|&index| {
                    let answer = answers
                        .next()
                        .unwrap_or(Err(ResponseError::UnknownServerError));
                    partition_response(index, answer)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

fn partition_response(index: i32, answer: Answer) -> PartitionResponse {
    let out = PartitionResponse::default().with_partition_index(index);
    match answer {
        Ok(views) => out.with_active_producers(
            views
                .into_iter()
                .map(|v| {
                    ProducerState::default()
                        .with_producer_id(ProducerId(v.producer_id))
                        .with_producer_epoch(i32::from(v.producer_epoch))
                        .with_last_sequence(v.last_sequence)
                        .with_last_timestamp(v.last_timestamp)
                        .with_coordinator_epoch(v.coordinator_epoch)
                        .with_current_txn_start_offset(v.current_txn_start_offset)
                })
                .collect(),
        ),
        Err(code) => out.with_error_code(code.code()),
    }
}

/// On the owner: each partition's producers, ordered by producer id.
fn describe_on_owner(shard: &Rc<Shard>, items: Vec<(String, i32)>) -> LocalBoxFuture<Vec<Answer>> {
    let answers = items
        .into_iter()
        .map(
            |(topic, partition)| match shard.partition(&topic, partition) {
                Some(p) if !p.is_retired() => {
                    let mut views = p.producer_views();
                    views.sort_by_key(|v| v.producer_id);
                    Ok(views)
                }
                _ if shard.offline_reason(&topic, partition).is_some() => {
                    Err(ResponseError::KafkaStorageError)
                }
                _ => Err(ResponseError::NotLeaderOrFollower),
            },
        )
        .collect();
    Box::pin(std::future::ready(answers))
}
