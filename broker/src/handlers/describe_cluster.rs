//! DescribeCluster: on a single node this node is the whole cluster (broker and controller);
//! in cluster mode the registered brokers (fenced ones flagged, v2) and the quorum leader.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let node = shard.shared.node_id();
    let metadata = shard.metadata();
    let (brokers, controller) = if metadata.is_cluster() {
        let brokers = metadata
            .brokers
            .values()
            .filter(|b| ctx.version >= 2 || !b.fenced)
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.node_id))
                    .with_host(str_bytes(&b.host))
                    .with_port(i32::from(b.port))
                    .with_rack(b.rack.as_deref().map(str_bytes))
                    .with_is_fenced(b.fenced)
            })
            .collect();
        (brokers, metadata.controller_id.unwrap_or(-1))
    } else {
        (
            vec![
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(node))
                    .with_host(str_bytes(&shard.shared.advertised_host))
                    .with_port(i32::from(shard.shared.advertised_port)),
            ],
            node,
        )
    };
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
