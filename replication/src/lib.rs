//! Sluice replication core: Kafka-style ISR replication as sans-IO state machines, and a
//! seeded deterministic simulator that drives them.
//!
//! Owns: the leader and follower replica (`replica`), the leader epoch cache (`epoch_cache`),
//! a broker's registration, heartbeats and broker-epoch fencing (`lifecycle`), the controller
//! (`controller`), the messages between them (`message`), and, with the `raft-quorum`
//! feature, the persisted metadata quorum on raft-rs (`quorum`: its log and snapshot files,
//! compaction, catch-up from a snapshot). Every state machine is
//! `step(now, input) -> Vec<Action>`: time is an input, I/O is an output, nothing blocks,
//! nothing reads a clock, nothing is random (the quorum alone writes its own files).
//! With the `sim` feature (this crate's own tests only; never the broker): the simulator
//! (`sim`) and its broker node (`node`: a `BrokerLifecycle` plus replicas), which drive the
//! same `Replica`, `BrokerLifecycle` and `Controller` the broker runs.
//! Does not own: sockets, the Kafka wire codec and error codes, the partition logs (the broker
//! and `engine` do these), running the controller on the quorum (the broker's control thread
//! applies the quorum's committed entries to every node's copy of `Controller`).
//! Invariants (checked by the simulator over many seeds; see docs/internals/replication.md):
//! - An acknowledged acks=all batch is in the log of every replica elected leader after it was
//!   committed, at the same offset, and no ISR member ever truncates it.
//! - At most one replica leads a partition in any leader epoch.
//! - Consumers see only batches below the high watermark, and the high watermark they see
//!   never goes backwards. The one exception is Kafka's own RF=1 contract: the high watermark
//!   counts the leader's page-cache log end (acks=all waits for a separate durable
//!   watermark), so a batch seen by consumers but never acknowledged acks=all can be lost
//!   when the leader, alone in the ISR, loses power before its sync and is elected again.
//! - Once the network heals and every node runs, all replicas hold identical logs.
//!
//! Why a crate and not `broker/src/replication/`: the core needs nothing from the broker's
//! runtime, so keeping it apart lets it build and test in seconds, and keeps the simulator
//! free of compio and io_uring.

#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod epoch_cache;
pub mod lifecycle;
pub mod message;
#[cfg(feature = "sim")]
pub mod node;
#[cfg(feature = "raft-quorum")]
pub mod quorum;
pub mod replica;
#[cfg(feature = "sim")]
pub mod sim;
pub mod types;

pub use config::{ControllerConfig, Durability, ReplicaConfig};
pub use controller::{BrokerRecord, Controller, ControllerInput, ControllerSnapshot};
pub use epoch_cache::EpochCache;
pub use lifecycle::{BrokerLifecycle, LifecycleConfig, LifecycleEvent};
pub use message::{Action, EpochEndOffset, FetchData, Message};
#[cfg(feature = "sim")]
pub use node::{Node, NodeInput};
pub use replica::{Ctx, FetchRequest, ProduceRequest, ReadRange, RecoveredLog, Replica, Role};
pub use types::{
    Acks, Address, Batch, BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, PartitionId,
    PartitionState, ReplicaError,
};
