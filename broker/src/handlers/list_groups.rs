//! ListGroups: every shard's coordinator lists its groups; v4+ filters by state, v5+ by
//! type (all Sluice groups are "classic" for now).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::group::{self, ListGroups, Reply, code_of};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let filter = ListGroups {
        states_filter: req.states_filter.iter().map(|s| s.to_string()).collect(),
        types_filter: req.types_filter.iter().map(|s| s.to_string()).collect(),
    };
    let replies =
        group::frontend::call_all_shards(shard, move |c, now, id| c.list_groups(now, id, &filter))
            .await;
    let replies = match replies {
        Ok(replies) => replies,
        Err(error) => return ListGroupsResponse::default().with_error_code(error.code()),
    };
    let mut error = None;
    let mut groups = Vec::new();
    for reply in replies {
        let Reply::List(result) = reply else {
            unreachable!("ListGroups answered with {reply:?}")
        };
        error = error.or(result.error);
        groups.extend(result.groups.into_iter().map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type))
                .with_group_state(str_bytes(g.state))
                .with_group_type(str_bytes(g.group_type))
        }));
    }
    ListGroupsResponse::default()
        .with_error_code(code_of(error))
        .with_groups(groups)
}
