//! FindCoordinator: on a single node every coordinator is this node. For consumer groups
//! the `__consumer_offsets` topic is created first (as Kafka does on first use), so the group
//! requests that follow find their partition. Batched keys from v4 (KIP-699).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, Versions, str_bytes};
use crate::group::frontend::ensure_offsets_topic;
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 6 };

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let code = match req.key_type {
        KEY_TYPE_GROUP => ensure_offsets_topic(shard)
            .await
            .err()
            .map_or(0, |e| e.code()),
        KEY_TYPE_TRANSACTION => 0,
        // Share groups (v6, KIP-932) and anything else.
        _ => ResponseError::InvalidRequest.code(),
    };
    let shared = &shard.shared;
    let (node_id, host, port) = if code == 0 {
        (
            shared.node_id(),
            str_bytes(&shared.advertised_host),
            i32::from(shared.advertised_port),
        )
    } else {
        (-1, StrBytes::default(), -1)
    };
    let message = (code != 0).then(|| str_bytes("coordinator not available"));
    if ctx.version >= 4 {
        let coordinators = keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node_id))
                    .with_host(host.clone())
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message.clone())
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_node_id(BrokerId(node_id))
        .with_host(host)
        .with_port(port)
}
