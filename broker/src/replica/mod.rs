//! The replication core (`replication::Replica`) driven on each partition's owning shard
//! (every partition has one: a single node is a quorum of one). Leader side (produce through
//! the core, follower fetches recorded, the high watermark over the ISR, acks=all) and
//! follower side (truncation, appends of fetched batches); `fetcher` sends a follower's
//! requests to its leader.
//!
//! Owns: the entry points the control thread and the fetcher call (`deliver`,
//! `on_leader_response`), the shard's side of the driver (`ShardEnv`), the replica timers
//! (`run_ticker`), and the one mapping of `ReplicaError` to Kafka error codes.
//! Does not own: the state machine (`replication`), applying its actions (`driver`), the
//! follower's connections (`fetcher`, `client`).
//! Invariants: every input to a replica runs on the partition's owning shard; a partition
//! that is not open here ignores what arrives for it (the sender resends on its own timer).

pub mod client;
pub mod driver;
pub mod fetcher;

use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use replication::{BrokerEpoch, LeaderEpoch, Message, NodeId, PartitionState, ReplicaError};

use crate::controller::handle::{ClusterHandle, ToController};
use crate::partition::Partition;
use crate::runtime::Shard;

/// How often a shard ticks its replicas (produce timeouts, ISR shrink, resends, follower
/// polls). Well below every replication interval (fetch backoff, lag time, timeouts).
pub const TICK_INTERVAL_MS: u64 = 50;

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
    let Some(partition) = shard.partition(topic, index) else {
        return;
    };
    let driver = &partition.replica;
    match event {
        ReplicaEvent::State(state) => {
            if !state.replicas.contains(&NodeId(shard.shared.node_id())) {
                return;
            }
            driver.step(|core, ctx, out| {
                if state.partition != core.partition() {
                    tracing::warn!(target: "broker::replica", topic, index, got = %state.partition, want = %core.partition(), "partition state for another partition id; ignored");
                    return;
                }
                core.on_partition_state(ctx, state, out)
            })
        }
        ReplicaEvent::AlterPartitionResponse {
            leader_epoch,
            proposal,
            result,
        } => driver.step(|core, ctx, out| {
            core.on_alter_partition_response(ctx, leader_epoch, proposal, result, out)
        }),
    }
}

/// Runs on the owning shard: the leader's answer (`FetchResponse` or
/// `OffsetForLeaderEpochResponse`) to a request `fetcher::send_to_leader` carried.
pub fn on_leader_response(shard: &Rc<Shard>, topic: &str, index: i32, message: Message<Bytes>) {
    let Some(partition) = shard.partition(topic, index) else {
        return;
    };
    let driver = &partition.replica;
    match message {
        Message::FetchResponse {
            request_id, result, ..
        } => driver.step(|core, ctx, out| core.on_fetch_response(ctx, request_id, result, out)),
        Message::OffsetForLeaderEpochResponse {
            request_id, result, ..
        } => driver.step(|core, ctx, out| {
            core.on_offset_for_leader_epoch_response(ctx, request_id, result, out)
        }),
        other => {
            tracing::debug!(target: "broker::replica", topic, index, message = ?std::mem::discriminant(&other), "not a leader response; ignored")
        }
    }
}

/// The single place replication errors become Kafka error codes.
pub fn error_code(error: ReplicaError) -> ResponseError {
    match error {
        ReplicaError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        ReplicaError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        ReplicaError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
        ReplicaError::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        ReplicaError::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
        ReplicaError::RequestTimedOut => ResponseError::RequestTimedOut,
        ReplicaError::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        ReplicaError::OffsetNotAvailable => ResponseError::OffsetNotAvailable,
        ReplicaError::InvalidUpdateVersion => ResponseError::InvalidUpdateVersion,
        ReplicaError::IneligibleReplica => ResponseError::IneligibleReplica,
        ReplicaError::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch,
        ReplicaError::InvalidRequest => ResponseError::InvalidRequest,
        ReplicaError::KafkaStorageError => ResponseError::KafkaStorageError,
    }
}

/// Milliseconds since this process started, on the monotonic clock (the replication core's
/// time: deadlines and lag windows must not jump with the wall clock).
pub fn monotonic_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as i64
}

/// A base for the request ids of this process's replicas: the start time in ms shifted
/// left, so a restarted process never reuses a previous incarnation's ids.
pub fn request_id_base() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    *BASE.get_or_init(|| (crate::partition::now_ms().max(0) as u64) << 20)
}

/// The shard's side of a replica driver.
pub struct ShardEnv {
    shard: Weak<Shard>,
    cluster: Arc<ClusterHandle>,
}

impl ShardEnv {
    pub fn new(shard: &Rc<Shard>, cluster: Arc<ClusterHandle>) -> Rc<ShardEnv> {
        Rc::new(ShardEnv {
            shard: Rc::downgrade(shard),
            cluster,
        })
    }
}

impl driver::ReplicaEnv for ShardEnv {
    fn now_ms(&self) -> i64 {
        monotonic_ms()
    }

    fn broker_epoch(&self) -> Option<BrokerEpoch> {
        self.cluster.broker_epoch()
    }

    fn send_to_leader(&self, topic: &str, index: i32, leader: NodeId, message: Message<Bytes>) {
        if let Some(shard) = self.shard.upgrade() {
            fetcher::send_to_leader(&shard, leader.0, topic, index, message);
        }
    }

    fn send_to_controller(&self, message: ToController) {
        self.cluster.send(message);
    }

    fn role_changed(
        &self,
        driver: &driver::ReplicaDriver,
        topic: &str,
        index: i32,
        is_leader: bool,
    ) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        // The instance open here whose replica this is; a driver of a closed instance (its
        // topic deleted meanwhile) has nothing to report.
        let open = shard
            .partition(topic, index)
            .filter(|p| std::ptr::eq(Rc::as_ptr(&p.replica), driver));
        if let Some(partition) = open {
            crate::group::backend::on_partition_role(&shard, &partition, is_leader);
            crate::txn::backend::on_partition_role(&shard, &partition, is_leader);
        }
    }
}

/// The shard's replica timer: ticks every replica it owns every `TICK_INTERVAL_MS` until the
/// shard exits. Started once per shard by `runtime::partitions::open_topic`.
pub async fn run_ticker(shard: Rc<Shard>) {
    use futures_util::future::select;
    while !shard.exited.get() {
        let sleep = Box::pin(compio::time::sleep(Duration::from_millis(TICK_INTERVAL_MS)));
        let exit = shard.exit_notify.notified();
        let _ = select(sleep, exit).await;
        let replicas: Vec<Rc<Partition>> = shard
            .partitions
            .borrow()
            .values()
            .flat_map(|v| v.iter().flatten())
            .filter(|p| !p.is_retired())
            .cloned()
            .collect();
        for p in replicas {
            p.replica.tick();
        }
    }
}
