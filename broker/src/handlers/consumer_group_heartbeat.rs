//! ConsumerGroupHeartbeat (KIP-848, `group.protocol=consumer`): membership, subscriptions and
//! the member's share of the server-side assignment, in one request. v1 adds regex
//! subscriptions (refused for now) and client-chosen member ids.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::group::frontend::MetadataTopics;
use crate::group::{self, ConsumerHeartbeat, ConsumerHeartbeatResult, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 1 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let heartbeat = ConsumerHeartbeat {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack_id: req.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
        // librdkafka sends "" for "no regex"; Kafka reads it as clearing the regex.
        subscribed_topic_regex: req
            .subscribed_topic_regex
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
        server_assignor: req.server_assignor.map(|s| s.to_string()),
        owned: req.topic_partitions.map(|ts| {
            ts.into_iter()
                .map(|t| (t.topic_id, t.partitions.into_iter().collect()))
                .collect()
        }),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    tracing::debug!(target: "group", request = ?heartbeat, "ConsumerGroupHeartbeat");
    let topics = MetadataTopics(shard.metadata());
    let group_id = heartbeat.group_id.clone();
    let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
        c.consumer_group_heartbeat(now, id, heartbeat, &topics)
    })
    .await;
    let result = match reply {
        Ok(Reply::ConsumerHeartbeat(result)) => result,
        Ok(other) => unreachable!("ConsumerGroupHeartbeat answered with {other:?}"),
        Err(error) => ConsumerHeartbeatResult {
            error: Some(error),
            error_message: None,
            member_id: None,
            member_epoch: -1,
            heartbeat_interval_ms: 0,
            assignment: None,
        },
    };
    if let Some(message) = &result.error_message {
        tracing::debug!(target: "group", error = ?result.error, %message, "ConsumerGroupHeartbeat refused");
    }
    let assignment = result.assignment.map(|a| {
        Assignment::default().with_topic_partitions(
            a.into_iter()
                .map(|(topic_id, parts)| {
                    TopicPartitions::default()
                        .with_topic_id(topic_id)
                        .with_partitions(parts.into_iter().collect())
                })
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code_of(result.error))
        .with_error_message(result.error_message.map(|m| str_bytes(&m)))
        .with_member_id(result.member_id.map(|m| str_bytes(&m)))
        .with_member_epoch(result.member_epoch)
        .with_heartbeat_interval_ms(result.heartbeat_interval_ms)
        .with_assignment(assignment)
}
