//! Consumer groups: the group coordinator (classic JoinGroup/SyncGroup/Heartbeat/LeaveGroup
//! protocol with KIP-394 member ids and KIP-345 static membership), committed offsets, and
//! their persistence in Kafka's `__consumer_offsets` format.
//!
//! Owns: group state machines, offset storage semantics, the offsets-topic record format
//! (all sans-IO: time is an argument, outputs are values — see `coordinator`), and the thin
//! I/O layer around them: `backend` (per shard: runs the coordinator, appends, replays,
//! timers) and `frontend` (on every shard: routes a group to its owner shard).
//! Does not own: sockets, request decoding (the `handlers/` files), the log (engine).
//!
//! Invariants: every request accepted gets exactly one reply; state is bounded by `limits`;
//! bad client input yields a Kafka error, never a panic.

pub mod api;
pub mod backend;
pub mod classic;
mod codec;
pub mod config;
pub mod consumer;
mod consumer_ops;
pub mod consumer_records;
pub mod coordinator;
pub mod error;
pub mod frontend;
mod membership;
mod offsets;
pub mod records;
mod txn_offsets;
mod types;

pub use api::*;
pub use classic::GroupState;
pub use config::GroupSection;
pub use coordinator::{GroupConfig, GroupConfigError, GroupCoordinator};
pub use error::{GroupError, code_of};

/// Named limits of the group coordinator.
pub mod limits {
    /// Members (plus KIP-394 pending members) in one group; group.max.size may only lower it.
    pub const MEMBERS_PER_GROUP_MAX: usize = 4096;
    /// Groups one shard's coordinator holds; creating more gets COORDINATOR_NOT_AVAILABLE.
    pub const GROUPS_PER_SHARD_MAX: usize = 100_000;
    /// How long a new member may wait in a join phase before it is dropped (Kafka's
    /// `NewMemberJoinTimeoutMs`).
    pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 300_000;

    /// Offsets of open transactions (TxnOffsetCommit) one shard's coordinator holds pending,
    /// in flight included; a commit beyond it gets COORDINATOR_NOT_AVAILABLE (retriable).
    /// About 200 bytes each: 20 MiB per shard at the limit.
    pub const PENDING_TXN_OFFSETS_PER_SHARD_MAX: usize = 100_000;

    const _: () = assert!(MEMBERS_PER_GROUP_MAX > 0 && GROUPS_PER_SHARD_MAX > 0);
    const _: () = assert!(PENDING_TXN_OFFSETS_PER_SHARD_MAX > 0);
    const _: () = assert!(MEMBERS_PER_GROUP_MAX <= i32::MAX as usize);
}

#[cfg(test)]
mod tests;
