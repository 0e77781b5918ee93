//! Newtypes and plain data shared by the replica, controller and node state machines.
//!
//! Owns: identifiers (`NodeId`, `PartitionId`, `LeaderEpoch`, `PartitionEpoch`, `BrokerEpoch`),
//! addresses, record batches as the core sees them, the controller's partition record and the
//! error enum that the broker's handlers map to Kafka error codes.
//! Does not own: the wire encoding (kafka-protocol in the broker) or record bytes (opaque `P`).

use std::fmt;

/// A broker's node id (`node.id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i32);

/// A topic-partition, as an index into the controller's partition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

/// Bumped by the controller on every leader change (including "no leader").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

/// Bumped by the controller on every change of a partition's record (leader or ISR); KRaft's
/// `partition_epoch`, ZooKeeper-era Kafka's `zkVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionEpoch(pub i32);

/// Assigned by the controller to each broker registration (one per process incarnation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerEpoch(pub i64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// Where a message goes: a broker, the controller (quorum), or a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Broker(NodeId),
    Controller,
    Client(u32),
}

/// A record batch as the replication core sees it: offsets and epoch, bytes opaque.
/// In the broker `P` is the batch's `Bytes`; in the simulator it is a payload id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<P> {
    pub base_offset: i64,
    pub record_count: u32,
    pub leader_epoch: LeaderEpoch,
    pub payload: P,
}

impl<P> Batch<P> {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.record_count) - 1
    }

    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.record_count)
    }
}

/// The controller's record of one partition (KRaft's PartitionRecord / PartitionChangeRecord).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: PartitionId,
    /// Assignment order; the first eligible replica wins an election (preferred leader first).
    pub replicas: Vec<NodeId>,
    /// In-sync replicas, sorted. Never empty.
    pub isr: Vec<NodeId>,
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

/// produce `acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=1: answered after the leader's local append.
    Leader,
    /// acks=all (-1): answered once the ISR has the batch and min.insync.replicas holds.
    All,
}

/// Errors the core answers with. Named after the Kafka error each maps to; the mapping to
/// numeric codes happens at the broker's handler boundary, not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaError {
    /// NOT_LEADER_OR_FOLLOWER (6): this broker does not lead the partition (now).
    NotLeaderOrFollower,
    /// FENCED_LEADER_EPOCH (74): the request's leader epoch is older than ours.
    FencedLeaderEpoch,
    /// UNKNOWN_LEADER_EPOCH (75): the request's leader epoch is newer than ours.
    UnknownLeaderEpoch,
    /// NOT_ENOUGH_REPLICAS (19): ISR < min.insync.replicas at append; nothing was appended.
    NotEnoughReplicas,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND (20): appended, but the ISR shrank below
    /// min.insync.replicas before the batch was committed.
    NotEnoughReplicasAfterAppend,
    /// REQUEST_TIMED_OUT (7): acks=all not satisfied within the produce timeout.
    RequestTimedOut,
    /// OFFSET_OUT_OF_RANGE (1).
    OffsetOutOfRange,
    /// OFFSET_NOT_AVAILABLE (78): a new leader's high watermark has not yet reached the start
    /// of its epoch, so it cannot tell consumers a high watermark that never goes backwards.
    OffsetNotAvailable,
    /// INVALID_UPDATE_VERSION (108): AlterPartition against a stale partition epoch.
    InvalidUpdateVersion,
    /// INELIGIBLE_REPLICA (107): AlterPartition tried to add a fenced or unknown broker.
    IneligibleReplica,
    /// STALE_BROKER_EPOCH (77): the broker's registration is not the current one.
    StaleBrokerEpoch,
    /// INVALID_REQUEST (42): malformed replication input (e.g. a non-contiguous fetch answer).
    InvalidRequest,
    /// KAFKA_STORAGE_ERROR (56): this replica's log write failed (disk full, I/O error);
    /// nothing from the failed offset on was kept (`Replica::on_log_write_failed`).
    KafkaStorageError,
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for ReplicaError {}
