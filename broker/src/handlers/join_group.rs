//! JoinGroup: decoded into the coordinator's terms and routed to the shard owning the
//! group's offsets partition; the reply comes when the join phase completes (`group/`).
//! v0 has no rebalance timeout (the session timeout stands in, as in Kafka); v4+ members
//! first get MEMBER_ID_REQUIRED (KIP-394); v5+ carry group.instance.id (KIP-345).

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::group::{self, GroupError, JoinGroup, JoinResult, Protocol, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 9 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let join = JoinGroup {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        require_known_member_id: ctx.version >= 4,
        supports_skip_assignment: ctx.version >= 9,
    };
    let group_id = join.group_id.clone();
    let member_id = join.member_id.clone();
    let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
        c.join_group(now, id, join)
    })
    .await;
    let result = match reply {
        Ok(Reply::Join(result)) => result,
        Ok(other) => unreachable!("JoinGroup answered with {other:?}"),
        Err(error) => group::coordinator::join_error(&member_id, error),
    };
    response(ctx.version, result)
}

fn response(version: i16, r: JoinResult) -> JoinGroupResponse {
    // protocol_name is nullable only from v7.
    let protocol_name = match r.protocol_name {
        None if version < 7 => Some(str_bytes("")),
        other => other.map(|s| str_bytes(&s)),
    };
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(m.group_instance_id.map(|s| str_bytes(&s)))
                .with_metadata(m.metadata)
        })
        .collect();
    let error = r.error;
    if let Some(GroupError::UnknownServerError) = error {
        tracing::warn!(target: "group", "JoinGroup failed with an unexpected error");
    }
    JoinGroupResponse::default()
        .with_error_code(code_of(error))
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(|s| str_bytes(&s)))
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&r.leader))
        .with_skip_assignment(r.skip_assignment)
        .with_member_id(str_bytes(&r.member_id))
        .with_members(members)
}
