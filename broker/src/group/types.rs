//! Types the group modules share, so that the model (`consumer.rs`) and its persistence
//! (`consumer_records.rs`) both depend on them instead of on each other.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id, as ConsumerGroupHeartbeat carries them.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;
