//! ConsumerGroupDescribe (KIP-848): epochs, assignor, and each member's current and target
//! assignment. Classic groups are GROUP_ID_NOT_FOUND here, as in Kafka.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, TopicName,
};

use super::{RequestContext, Versions, str_bytes};
use crate::group::{self, ConsumerDescribeResult, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 1 };

/// Kafka's value for "authorized operations not requested".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// ConsumerGroupDescribe v1 member_type: a KIP-848 consumer.
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let operations = if req.include_authorized_operations {
        super::describe_groups::GROUP_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let metadata = shard.metadata();
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for group_id in req.group_ids {
        let id = group_id.0.to_string();
        let target = id.clone();
        let reply = group::frontend::call(shard, &target, move |c, now, r| {
            c.consumer_group_describe(now, r, &id)
        })
        .await;
        let result = match reply {
            Ok(Reply::ConsumerDescribe(result)) => result,
            Ok(other) => unreachable!("ConsumerGroupDescribe answered with {other:?}"),
            Err(error) => ConsumerDescribeResult {
                error: Some(error),
                error_message: None,
                state: "Dead",
                group_epoch: -1,
                assignment_epoch: -1,
                assignor_name: String::new(),
                members: vec![],
            },
        };
        let assignment = |a: group::Assignment| {
            Assignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(topic_id, parts)| {
                        let name = metadata.topic_by_id(&topic_id).map(|t| t.name.clone());
                        TopicPartitions::default()
                            .with_topic_id(topic_id)
                            .with_topic_name(TopicName(str_bytes(&name.unwrap_or_default())))
                            .with_partitions(parts.into_iter().collect())
                    })
                    .collect(),
            )
        };
        let members = result
            .members
            .into_iter()
            .map(|m| {
                Member::default()
                    .with_member_id(str_bytes(&m.member_id))
                    .with_instance_id(m.instance_id.map(|s| str_bytes(&s)))
                    .with_rack_id(m.rack_id.map(|s| str_bytes(&s)))
                    .with_member_epoch(m.member_epoch)
                    .with_client_id(str_bytes(&m.client_id))
                    .with_client_host(str_bytes(&m.client_host))
                    .with_subscribed_topic_names(
                        m.subscribed_topic_names
                            .iter()
                            .map(|t| TopicName(str_bytes(t)))
                            .collect(),
                    )
                    .with_subscribed_topic_regex(m.subscribed_topic_regex.map(|r| str_bytes(&r)))
                    .with_assignment(assignment(m.assignment))
                    .with_target_assignment(assignment(m.target_assignment))
                    .with_member_type(MEMBER_TYPE_CONSUMER)
            })
            .collect();
        groups.push(
            DescribedGroup::default()
                .with_error_code(code_of(result.error))
                .with_error_message(result.error_message.map(|m| str_bytes(&m)))
                .with_group_id(GroupId(group_id.0))
                .with_group_state(str_bytes(result.state))
                .with_group_epoch(result.group_epoch)
                .with_assignment_epoch(result.assignment_epoch)
                .with_assignor_name(str_bytes(&result.assignor_name))
                .with_members(members)
                .with_authorized_operations(operations),
        );
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
