//! Cluster mode: the replication core (`replication::Replica`) driven on each partition's
//! owning shard. Leader side (produce through the core, follower fetches recorded, the high
//! watermark over the ISR, acks=all) and follower side (truncation, appends of fetched
//! batches); `fetcher` sends a follower's requests to its leader.

pub mod client;
pub mod fetcher;

use std::rc::Rc;

use bytes::Bytes;
use replication::{LeaderEpoch, Message, PartitionState, ReplicaError};

use crate::shard::Shard;

/// What the control thread delivers to a partition's replica (on its owning shard).
#[derive(Debug, Clone)]
pub enum ReplicaEvent {
    /// A committed partition state addressed to this broker's current epoch.
    State(PartitionState),
    /// The controller's answer to this replica's AlterPartition.
    AlterPartitionResponse {
        leader_epoch: LeaderEpoch,
        proposal: u64,
        result: Result<PartitionState, ReplicaError>,
    },
}

/// Runs on the owning shard of `topic`-`index`: hands `event` to its replica (ignored when the
/// partition is not open here).
pub fn deliver(shard: &Rc<Shard>, topic: &str, index: i32, event: ReplicaEvent) {
    let _ = (shard, topic, index, event);
}

/// Runs on the owning shard: the leader's answer (`FetchResponse` or
/// `OffsetForLeaderEpochResponse`) to a request `fetcher::send_to_leader` carried.
pub fn on_leader_response(shard: &Rc<Shard>, topic: &str, index: i32, message: Message<Bytes>) {
    let _ = (shard, topic, index, message);
}
