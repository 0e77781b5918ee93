//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{RequestContext, Versions};
use crate::group::{self, Heartbeat, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 4 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let heartbeat = Heartbeat {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        generation_id: req.generation_id,
    };
    let group_id = heartbeat.group_id.clone();
    let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
        c.heartbeat(now, id, heartbeat)
    })
    .await;
    let error = match reply {
        Ok(Reply::Heartbeat(error)) => error,
        Ok(other) => unreachable!("Heartbeat answered with {other:?}"),
        Err(error) => Some(error),
    };
    HeartbeatResponse::default().with_error_code(code_of(error))
}
