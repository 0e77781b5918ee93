//! DescribeGroups: state, protocol and members of each group (metadata and assignments only
//! while Stable, as Kafka). An unknown group is described as Dead; v6+ says GROUP_ID_NOT_FOUND
//! (KIP-1043).

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

use super::{RequestContext, Versions, str_bytes};
use crate::group::{self, DescribeResult, GroupError, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 6 };

/// Kafka's value for "authorized operations not requested".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Every GROUP operation, as Kafka answers with no authorizer (one bit per AclOperation code:
/// READ 3, DELETE 6, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11).
pub const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8) | (1 << 10) | (1 << 11);
const _: () = assert!(GROUP_OPERATIONS_ALL == 0x0d48);

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    // v3+ (KIP-430) may ask for the operations the client may perform on each group.
    let operations = if ctx.version >= 3 && req.include_authorized_operations {
        GROUP_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let mut groups = Vec::with_capacity(req.groups.len());
    for group_id in req.groups {
        let id = group_id.0.to_string();
        let target = id.clone();
        let reply = group::frontend::call(shard, &target, move |c, now, r| {
            c.describe_group(now, r, &id)
        })
        .await;
        let result = match reply {
            Ok(Reply::Describe(result)) => result,
            Ok(other) => unreachable!("DescribeGroups answered with {other:?}"),
            Err(error) => DescribeResult {
                error: Some(error),
                exists: false,
                state: group::GroupState::Dead.as_str(),
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: vec![],
            },
        };
        groups.push(described(ctx.version, group_id, result, operations));
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

fn described(
    version: i16,
    group_id: GroupId,
    r: DescribeResult,
    operations: i32,
) -> DescribedGroup {
    let not_found = r.error.is_none() && !r.exists && version >= 6;
    let error = if not_found {
        Some(GroupError::GroupIdNotFound)
    } else {
        r.error
    };
    let message = not_found.then(|| str_bytes(&format!("Group {} not found.", group_id.0)));
    let members = r
        .members
        .into_iter()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(m.group_instance_id.map(|s| str_bytes(&s)))
                .with_client_id(str_bytes(&m.client_id))
                .with_client_host(str_bytes(&m.client_host))
                .with_member_metadata(m.metadata)
                .with_member_assignment(m.assignment)
        })
        .collect();
    DescribedGroup::default()
        .with_error_code(code_of(error))
        .with_error_message(message)
        .with_group_id(group_id)
        .with_group_state(str_bytes(r.state))
        .with_protocol_type(str_bytes(&r.protocol_type))
        .with_protocol_data(str_bytes(&r.protocol_data))
        .with_members(members)
        .with_authorized_operations(operations)
}
