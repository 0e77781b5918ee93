//! Requests from this node's transaction coordinator or partition leaders to another
//! broker's Kafka listener (marker writes, produce verification): one connection per call,
//! every step under a deadline.

use std::rc::Rc;

use crate::runtime::Shard;

/// Sends `request` at `version` to broker `node`'s Kafka listener on a connection of its own
/// and returns the answer, all within `timeout` per step (marker writes and produce
/// verification towards another broker).
pub async fn call_broker<R: kafka_protocol::protocol::Request>(
    shard: &Rc<Shard>,
    node: i32,
    request: &R,
    version: i16,
    timeout: std::time::Duration,
) -> Result<R::Response, String> {
    let broker = shard
        .metadata()
        .brokers
        .get(&node)
        .cloned()
        .ok_or_else(|| format!("broker {node} is not registered"))?;
    let addr = format!("{}:{}", broker.host, broker.port);
    let mut connection =
        crate::replica::client::LeaderConnection::connect(&addr, timeout, shard.frame_pool.clone())
            .await
            .map_err(|e| e.to_string())?;
    connection
        .call(request, version, timeout)
        .await
        .map_err(|e| e.to_string())
}
