//! DescribeCluster: the registered brokers (fenced ones flagged from v2, left out before) and
//! the metadata quorum's leader as the controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let node = shard.shared.node_id();
    let metadata = shard.metadata();
    let brokers = metadata
        .brokers
        .values()
        .filter(|b| ctx.version >= 2 || !b.fenced || b.node_id == node)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes))
                .with_is_fenced(b.fenced && ctx.version >= 2)
        })
        .collect();
    let controller = metadata.controller_id.unwrap_or(-1);
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&metadata.cluster_id))
        .with_controller_id(BrokerId(controller))
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            super::metadata::CLUSTER_OPERATIONS_ALL
        } else {
            i32::MIN
        })
        .with_brokers(brokers);
    if ctx.version >= 1 {
        resp = resp.with_endpoint_type(req.endpoint_type);
    }
    resp
}
