//! Messages between brokers, the controller and clients, and the actions the state machines
//! ask their driver to perform.
//!
//! Owns: the shape of every replication exchange. Each message mirrors a Kafka request or
//! response (named in the doc comments) reduced to the fields replication needs.
//! Does not own: the wire encoding; the broker's handlers translate both ways.

use crate::types::{
    Acks, Address, Batch, BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, PartitionId,
    PartitionState, ReplicaError,
};

/// The answer to an OffsetForLeaderEpoch request: the largest epoch <= the requested one that
/// the leader knows, and the offset where it ends (the start of the next epoch, or the log end
/// offset for the current epoch). `leader_epoch == None` is Kafka's UNDEFINED_EPOCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub leader_epoch: Option<LeaderEpoch>,
    pub end_offset: i64,
}

/// What a leader returns to a fetch: batches (filled in by the driver from the log), the high
/// watermark and the log end offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchData<P> {
    pub high_watermark: i64,
    pub log_end_offset: i64,
    pub batches: Vec<Batch<P>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<P> {
    /// Produce (one partition, one batch).
    Produce {
        request_id: u64,
        partition: PartitionId,
        acks: Acks,
        record_count: u32,
        payload: P,
    },
    /// Produce response: the base offset assigned, or why not.
    ProduceResponse {
        request_id: u64,
        partition: PartitionId,
        result: Result<i64, ReplicaError>,
    },
    /// Fetch (one partition). `replica` is the follower's id, `None` for a consumer.
    Fetch {
        request_id: u64,
        partition: PartitionId,
        replica: Option<NodeId>,
        current_leader_epoch: LeaderEpoch,
        fetch_offset: i64,
    },
    FetchResponse {
        request_id: u64,
        partition: PartitionId,
        result: Result<FetchData<P>, ReplicaError>,
    },
    /// OffsetForLeaderEpoch (one partition), sent by a follower before it fetches.
    OffsetForLeaderEpoch {
        request_id: u64,
        partition: PartitionId,
        current_leader_epoch: LeaderEpoch,
        leader_epoch: LeaderEpoch,
    },
    OffsetForLeaderEpochResponse {
        request_id: u64,
        partition: PartitionId,
        result: Result<EpochEndOffset, ReplicaError>,
    },
    /// BrokerRegistration. `incarnation` grows with every process start of the node.
    BrokerRegistration { node: NodeId, incarnation: u64 },
    BrokerRegistrationResponse {
        incarnation: u64,
        broker_epoch: BrokerEpoch,
    },
    /// BrokerHeartbeat.
    BrokerHeartbeat {
        node: NodeId,
        broker_epoch: BrokerEpoch,
    },
    /// The heartbeat answer carries the partitions the broker replicates, so a broker that
    /// missed pushed updates catches up (KRaft brokers fetch the metadata log instead).
    BrokerHeartbeatResponse {
        broker_epoch: BrokerEpoch,
        result: Result<Vec<PartitionState>, ReplicaError>,
    },
    /// AlterPartition: a leader proposes a new ISR. `proposal` grows with every send by this
    /// leader; the controller ignores proposals not newer than the last it saw in the same
    /// leader epoch, so a delayed earlier send can never be applied after a later answer.
    AlterPartition {
        node: NodeId,
        broker_epoch: BrokerEpoch,
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        proposal: u64,
        new_isr: Vec<NodeId>,
    },
    /// Echoes the request's leader epoch and proposal: together they name one proposal.
    AlterPartitionResponse {
        partition: PartitionId,
        leader_epoch: LeaderEpoch,
        proposal: u64,
        result: Result<PartitionState, ReplicaError>,
    },
    /// Pushed by the controller to a partition's replicas after every change (KRaft brokers
    /// learn this from the metadata log). Dropped unless `broker_epoch` is the receiver's.
    PartitionUpdate {
        broker_epoch: BrokerEpoch,
        states: Vec<PartitionState>,
    },
}

/// What a state machine asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    Send {
        to: Address,
        message: Message<P>,
    },
    /// Answer a fetch with batches read from the log: those whose offsets lie in
    /// `[from_offset, max_offset)`, on batch boundaries, as many as fit the driver's limits.
    SendFetchResponse {
        to: Address,
        request_id: u64,
        partition: PartitionId,
        from_offset: i64,
        max_offset: i64,
        high_watermark: i64,
        log_end_offset: i64,
    },
    /// Leader: append a batch that the core assigned offsets to (`engine::Log::append`).
    Append {
        partition: PartitionId,
        batch: Batch<P>,
    },
    /// Follower: append batches copied from the leader (`engine::Log::append_replicated`).
    AppendReplicated {
        partition: PartitionId,
        batches: Vec<Batch<P>>,
    },
    /// Remove every batch at or above `offset` (`engine::Log::truncate_to`). `offset` is a
    /// batch boundary and below the log end offset.
    Truncate {
        partition: PartitionId,
        offset: i64,
    },
    /// `engine::Log::set_high_watermark`.
    SetHighWatermark {
        partition: PartitionId,
        high_watermark: i64,
    },
    /// Make everything below `offset` durable (`engine::Log::wait_durable`), then report the
    /// log's durable offset back with `NodeInput::Durable`.
    RequestDurable {
        partition: PartitionId,
        offset: i64,
    },
}
