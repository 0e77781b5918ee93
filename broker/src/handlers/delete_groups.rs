//! DeleteGroups: an Empty group's metadata and offsets are tombstoned; groups with members
//! get NON_EMPTY_GROUP, unknown ones GROUP_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{RequestContext, Versions};
use crate::group::{self, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        let id = group_id.0.to_string();
        let target = id.clone();
        let reply =
            group::frontend::call(shard, &target, move |c, now, r| c.delete_group(now, r, &id))
                .await;
        let error = match reply {
            Ok(Reply::DeleteGroup(error)) => error,
            Ok(other) => unreachable!("DeleteGroups answered with {other:?}"),
            Err(error) => Some(error),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code_of(error)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
