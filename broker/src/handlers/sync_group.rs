//! SyncGroup: the leader hands in the assignment, everyone gets theirs once it is stored.
//! v5+ checks protocol type and name against the group's.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::group::{self, Reply, SyncGroup, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let sync = SyncGroup {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let group_id = sync.group_id.clone();
    let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
        c.sync_group(now, id, sync)
    })
    .await;
    let result = match reply {
        Ok(Reply::Sync(result)) => result,
        Ok(other) => unreachable!("SyncGroup answered with {other:?}"),
        Err(error) => group::coordinator::sync_error(error),
    };
    SyncGroupResponse::default()
        .with_error_code(code_of(result.error))
        .with_protocol_type(result.protocol_type.map(|s| str_bytes(&s)))
        .with_protocol_name(result.protocol_name.map(|s| str_bytes(&s)))
        .with_assignment(result.assignment)
}
