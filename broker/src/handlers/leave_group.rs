//! LeaveGroup: one member before v3, a batch from v3 (KIP-345: static members can be
//! removed by group.instance.id alone). Before v3 the member's error is the response's.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::group::{self, LeaveGroup, LeaveMember, LeaveResult, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let members = if ctx.version >= 3 {
        req.members
            .into_iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let leave = LeaveGroup {
        group_id: req.group_id.0.to_string(),
        members,
    };
    let group_id = leave.group_id.clone();
    let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
        c.leave_group(now, id, leave)
    })
    .await;
    let result = match reply {
        Ok(Reply::Leave(result)) => result,
        Ok(other) => unreachable!("LeaveGroup answered with {other:?}"),
        Err(error) => LeaveResult {
            error: Some(error),
            members: vec![],
        },
    };
    if ctx.version < 3 {
        let error = result
            .error
            .or_else(|| result.members.first().and_then(|m| m.error));
        return LeaveGroupResponse::default().with_error_code(code_of(error));
    }
    let members = result
        .members
        .into_iter()
        .map(|m| {
            MemberResponse::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(m.group_instance_id.map(|s| str_bytes(&s)))
                .with_error_code(code_of(m.error))
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(code_of(result.error))
        .with_members(members)
}
