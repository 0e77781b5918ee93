//! DescribeCluster: this node is the whole cluster (broker and controller).

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
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&shard.metadata().cluster_id))
        .with_controller_id(BrokerId(node))
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            super::metadata::CLUSTER_OPERATIONS_ALL
        } else {
            i32::MIN
        })
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(node))
                .with_host(str_bytes(&shard.shared.advertised_host))
                .with_port(i32::from(shard.shared.advertised_port)),
        ]);
    if ctx.version >= 1 {
        resp = resp.with_endpoint_type(req.endpoint_type);
    }
    resp
}
