//! The shards' handle on the control thread (every broker has one; a single node is a quorum
//! of one): how a replica sends AlterPartition, how the frontend runs an admin operation, and
//! what the shards may read about this node's registration (its broker epoch).
//!
//! Owns: the bounded channels from shards to the control thread (`thread.rs`).
//! Invariants: sends never block a shard: a full queue drops the message (every sender
//! resends on its own timer: AlterPartition after request.timeout.ms, heartbeats each
//! interval), so back-pressure never reaches the data path.

use std::sync::atomic::{AtomicI64, Ordering};

use replication::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, PartitionId, ReplicaConfig};

use super::entry::{AdminOp, AdminResults};
use super::error::AdminError;

/// Messages queued to the control thread before senders drop (they all resend).
pub const CONTROL_QUEUE_CAPACITY: usize = 4096;

/// What a shard sends to the controller.
#[derive(Debug, Clone)]
pub enum ToController {
    /// A leader replica's AlterPartition (replication::Message::AlterPartition's fields).
    AlterPartition {
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        proposal: u64,
        new_isr: Vec<NodeId>,
    },
}

/// An admin operation for the quorum, answered once it is committed and applied here.
pub struct AdminCall {
    pub op: AdminOp,
    pub reply: async_channel::Sender<Result<AdminResults, AdminError>>,
}

/// Admin operations queued to the control thread.
pub const ADMIN_QUEUE_CAPACITY: usize = 256;

pub struct ClusterHandle {
    pub node_id: i32,
    /// Replica settings for every partition (min.insync.replicas is set per topic).
    pub replica_config: ReplicaConfig,
    /// replica.fetch.wait.max.ms for follower fetches.
    pub replica_fetch_wait_max_ms: i32,
    to_controller: async_channel::Sender<ToController>,
    admin: async_channel::Sender<AdminCall>,
    /// This process's broker epoch; -1 until the controller registered it.
    broker_epoch: AtomicI64,
}

/// The control thread's ends of the handle's channels.
pub struct ControlReceivers {
    pub from_shards: async_channel::Receiver<ToController>,
    pub admin: async_channel::Receiver<AdminCall>,
}

impl ClusterHandle {
    pub fn new(
        node_id: i32,
        replica_config: ReplicaConfig,
        replica_fetch_wait_max_ms: i32,
    ) -> (ClusterHandle, ControlReceivers) {
        let (tx, rx) = async_channel::bounded(CONTROL_QUEUE_CAPACITY);
        let (admin_tx, admin_rx) = async_channel::bounded(ADMIN_QUEUE_CAPACITY);
        (
            ClusterHandle {
                node_id,
                replica_config,
                replica_fetch_wait_max_ms,
                to_controller: tx,
                admin: admin_tx,
                broker_epoch: AtomicI64::new(-1),
            },
            ControlReceivers {
                from_shards: rx,
                admin: admin_rx,
            },
        )
    }

    /// Runs an admin operation through the quorum: one result per item once it is applied on
    /// this node, or an error for the whole call (no quorum, timed out, shutting down).
    pub async fn admin(&self, op: AdminOp) -> Result<AdminResults, AdminError> {
        let (tx, rx) = async_channel::bounded(1);
        if self.admin.try_send(AdminCall { op, reply: tx }).is_err() {
            return Err(AdminError::Busy);
        }
        rx.recv().await.unwrap_or(Err(AdminError::Stopped))
    }

    /// Queues `message` for the controller; dropped (logged at debug) when the queue is full
    /// or the control thread is gone.
    pub fn send(&self, message: ToController) {
        if let Err(e) = self.to_controller.try_send(message) {
            tracing::debug!(target: "broker::controller", error = %e, "controller queue full or closed; message dropped");
        }
    }

    pub fn broker_epoch(&self) -> Option<BrokerEpoch> {
        match self.broker_epoch.load(Ordering::Acquire) {
            -1 => None,
            e => Some(BrokerEpoch(e)),
        }
    }

    pub fn set_broker_epoch(&self, epoch: BrokerEpoch) {
        self.broker_epoch.store(epoch.0, Ordering::Release);
    }
}
