//! The control plane, in one folder: the metadata quorum (raft-rs, `replication::quorum`), the
//! controller state machine every node replicates, the control thread that runs them, the rpc
//! between voters, and the shard-side frontend that turns admin requests into proposals.
//! Every broker runs it; a single node is a quorum of one.
//!
//! Files, by role (house style: `*_frontend` forwards from shards, `*_stm` is replicated):
//! - `thread.rs`: the control thread's loop (one per process, not a shard).
//! - `stm.rs`: `ControllerStm`, committed entries applied to `replication::Controller` plus the
//!   topic catalog, on every node.
//! - `entry.rs`: `ControlEntry`, the quorum log's entries, and their boundary checks.
//! - `error.rs`: `AdminError`, why an admin operation failed (typed; Kafka codes are chosen
//!   by the frontend, in `frontend::admin_error`).
//! - `rpc.rs`, `auth.rs`: the rpc listener, links to the other voters, their handshake and MACs.
//! - `frontend.rs`: the topic-change frontend on shard 0 (CreateTopics, DeleteTopics,
//!   CreatePartitions, AlterConfigs: checked, then proposed).
//! - `handle.rs`: `ClusterHandle`, the shards' bounded way to the control thread.
//! - `catalog.rs`: `catalog.json`, the cluster id and producer-id blocks (and the topics of a
//!   data dir written before the quorum existed).
//! - `producer_ids.rs`: producer-id allocation from this node's persisted blocks.
//!
//! Owns: the order in which this node learns committed control entries and tells its shards.
//! Does not own: the metadata snapshots the shards serve from (`crate::metadata`), replication
//! (`crate::replica`, on the shards), Kafka requests and their error codes (handlers).
//! Invariants:
//! - Every node applies the same committed entries in the same order (`stm`), so any node
//!   can answer Metadata from committed state, and a new quorum leader continues from it.
//! - A metadata snapshot reaches every shard (partitions opened) before the partition states
//!   that refer to it are delivered, and before an admin call is answered.
//! - Partition states reach replicas only when addressed to this process's broker epoch
//!   (`replication::BrokerLifecycle`): what the controller told an earlier process of this
//!   node (replayed from the log at start-up) is never acted on.
//! - The thread never blocks a shard: shard -> control messages go through a bounded queue
//!   that drops when full (senders resend), and control -> shard work goes through the mesh.
//!
//! Back-of-envelope: ~5 entries/s on an idle 3-node cluster (a heartbeat per broker per
//! second, a Tick per second), each ~150 bytes of JSON plus raft framing: ~1 KB/s of rpc
//! traffic per voter and one fdatasync per committed batch on each voter.

pub mod auth;
pub mod catalog;
pub mod entry;
pub mod error;
pub mod frontend;
pub mod handle;
pub mod producer_ids;
pub mod rpc;
pub mod stm;
mod thread;

pub use catalog::{Catalog, CatalogError};
pub use entry::ConfigChange;
pub use error::AdminError;
pub use frontend::ControllerFrontend;
pub use handle::ClusterHandle;
pub use thread::{initial_metadata, start};

/// The control thread, started.
pub struct ControlThread {
    pub thread: std::thread::JoinHandle<()>,
    /// Fires once this process is registered and its partitions' states are delivered (the
    /// broker is then ready to serve); dropped without a message if the thread ends first.
    pub registered: std::sync::mpsc::Receiver<()>,
}

/// What the control thread takes from `catalog.json`, read once at start-up by the server.
pub struct CatalogSeed {
    /// Names the cluster until the first registration applied does.
    pub cluster_id: String,
    /// Topics of a data dir written before the quorum existed (taken over once, see `open`).
    pub topics: Vec<crate::metadata::TopicMeta>,
}
