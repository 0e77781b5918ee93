//! Cluster metadata as the shards read it: topics, their partitions and configs, brokers, and
//! which shard owns each partition.
//!
//! Owns: `ClusterMetadata` (an immutable snapshot every shard holds a copy of, swapped whole on
//! change), `PartitionTable` (partition -> shard), topic configs under Kafka's names
//! (`topic_config`), topic name rules.
//! Does not own: where the snapshots come from (the control plane, `crate::controller`, builds
//! them from the metadata quorum's committed state; this module imports nothing from it),
//! `catalog.json` (`controller::catalog`), partition data (engine logs on their owning shard).
//! Invariants: a snapshot never changes after it is published; `revision` is the quorum index
//! it was built at, so it never goes backwards.

pub mod topic_config;

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

pub use topic_config::{TopicConfig, TopicConfigError};

/// Index of a shard (0..shard count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// One topic as the metadata quorum committed it (or as a pre-quorum `catalog.json` held it).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level overrides with Kafka's names (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
    /// The leader epoch a pre-quorum `catalog.json` kept for the topic (0 from the quorum;
    /// the partitions' epochs are in `partition_states`).
    pub leader_epoch: i32,
    /// One entry per partition (index = partition number) with its replicas, leader, epochs
    /// and ISR as the metadata quorum committed them. Empty only for a topic read from a
    /// pre-quorum `catalog.json` or one not created yet (CreateTopics' validation).
    pub partition_states: Vec<PartitionInfo>,
}

/// A partition's committed record (KRaft's PartitionRecord).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionInfo {
    /// The replication core's id of this partition (cluster-wide, assigned at creation).
    pub partition_id: u32,
    /// Assignment order; the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `None`: no leader now (Kafka's -1).
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    /// Advertised Kafka listener.
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Fenced brokers (no heartbeat within the session timeout) are left out of Metadata.
    pub fenced: bool,
}

impl TopicMeta {
    /// The committed state of partition `p` (`None` for an unknown partition or a topic
    /// without states, see `partition_states`).
    pub fn partition_state(&self, p: i32) -> Option<&PartitionInfo> {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.partition_states.get(i))
    }
}

/// An immutable view of the cluster's topics, shared by all shards (`Arc`).
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    pub revision: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    pub topic_ids: BTreeMap<Uuid, String>,
    /// Every registered broker by node id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// The quorum leader (the active controller), if known.
    pub controller_id: Option<i32>,
}

impl ClusterMetadata {
    pub fn new(
        cluster_id: String,
        revision: u64,
        topics: impl IntoIterator<Item = TopicMeta>,
    ) -> Self {
        let mut m = ClusterMetadata {
            revision,
            cluster_id,
            ..Default::default()
        };
        for t in topics {
            m.topic_ids.insert(t.id, t.name.clone());
            m.topics.insert(t.name.clone(), Arc::new(t));
        }
        m
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.topic_ids.get(id).and_then(|n| self.topics.get(n))
    }
}

/// Partition -> owning shard. A pure function of (topic, partition, shard count), so every
/// shard computes the same answer without shared state; it moves partitions only when the
/// shard count changes between runs (logs are then reopened by their new owner).
#[derive(Debug, Clone, Copy)]
pub struct PartitionTable {
    pub shards: usize,
}

impl PartitionTable {
    pub fn shard_of(&self, topic: &str, partition: i32) -> ShardId {
        // FNV-1a over the topic name, then mixed with the partition so that the partitions of
        // one topic spread round-robin from a topic-dependent start.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in topic.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let start = (h % self.shards as u64) as usize;
        ShardId((start + partition.max(0) as usize) % self.shards)
    }
}

/// Topics the broker writes itself; clients may read them but not produce to them.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// Kafka's legal topic names: 1..=249 of [a-zA-Z0-9._-], not "." or "..".
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A fresh topic id (random v4-style; never the nil id Kafka reserves).
pub fn new_topic_id() -> Uuid {
    use std::hash::{BuildHasher, Hasher};
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let b = h.finish();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_spread_over_shards() {
        let t = PartitionTable { shards: 4 };
        let owners: std::collections::BTreeSet<_> =
            (0..4).map(|p| t.shard_of("orders", p)).collect();
        assert_eq!(owners.len(), 4);
        assert_eq!(t.shard_of("x", 1), t.shard_of("x", 1));
    }

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a.b_c-1"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
    }

    #[test]
    fn topic_ids_are_unique_and_not_nil() {
        let a = new_topic_id();
        let b = new_topic_id();
        assert_ne!(a, b);
        assert!(!a.is_nil());
    }
}
