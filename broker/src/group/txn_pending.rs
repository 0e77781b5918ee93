//! The offsets of ongoing transactions on one shard's group coordinator, pure bookkeeping
//! (Kafka's `pendingTransactionalOffsets` and `openTransactionsByGroup`), keyed by (offsets
//! partition, producer id) because one shard's coordinator serves many offsets partitions
//! and a marker ends a transaction on one of them. A load replays into its own instance,
//! which becomes the live one when the load finishes. Used by `coordinator`, `offsets` and
//! `txn_offsets` (split from the latter so the coordinator's state does not depend on the
//! operations on it).
//!
//! Invariants: `open_by_group` names exactly the (partition, producer) keys of `by_producer`
//! holding an entry for the group (possibly emptied by a tombstone, as Kafka keeps the
//! transaction open).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::api::RequestId;
use super::classic::CommittedOffset;

type TopicPartition = (String, i32);

/// Which TxnOffsetCommit append completed (see `PendingAppend::TxnCommit`).
pub(super) struct TxnCommitAppended<'a> {
    pub request: RequestId,
    pub group_id: &'a str,
    pub producer_id: i64,
    /// The transaction's marker arrived while the batch was in flight.
    pub ended: Option<bool>,
}
/// One producer's pending offsets on one offsets partition, by group.
pub(super) type ProducerOffsets = BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>>;

/// Offsets of ongoing transactions, by (offsets partition, producer id).
#[derive(Debug, Default)]
pub(super) struct PendingTxnOffsets {
    by_producer: HashMap<(i32, i64), ProducerOffsets>,
    open_by_group: HashMap<String, BTreeSet<(i32, i64)>>,
    len: usize,
}

impl PendingTxnOffsets {
    /// Pending offsets held (for the limit).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn add(
        &mut self,
        partition: i32,
        producer_id: i64,
        group_id: &str,
        tp: TopicPartition,
        offset: CommittedOffset,
    ) {
        let groups = self
            .by_producer
            .entry((partition, producer_id))
            .or_default();
        let offsets = groups.entry(group_id.to_owned()).or_default();
        if offsets.insert(tp, offset).is_none() {
            self.len += 1;
        }
        self.open_by_group
            .entry(group_id.to_owned())
            .or_default()
            .insert((partition, producer_id));
    }

    /// True when an open transaction holds an offset of `tp` for `group_id` (Kafka's
    /// `hasPendingTransactionalOffsets`).
    pub(super) fn has_pending(&self, group_id: &str, tp: &TopicPartition) -> bool {
        self.open_by_group.get(group_id).is_some_and(|open| {
            open.iter().any(|key| {
                self.by_producer
                    .get(key)
                    .and_then(|groups| groups.get(group_id))
                    .is_some_and(|offsets| offsets.contains_key(tp))
            })
        })
    }

    /// True while a transaction that committed offsets for `group_id` is open (the group is
    /// not removed meanwhile, as Kafka's `cleanupExpiredOffsets`).
    pub(super) fn has_open(&self, group_id: &str) -> bool {
        self.open_by_group.contains_key(group_id)
    }

    /// Ends `producer_id`'s transaction on `partition`: its pending offsets, if any.
    pub(super) fn take(&mut self, partition: i32, producer_id: i64) -> Option<ProducerOffsets> {
        let groups = self.by_producer.remove(&(partition, producer_id))?;
        for (group_id, offsets) in &groups {
            self.len -= offsets.len();
            if let Some(open) = self.open_by_group.get_mut(group_id) {
                open.remove(&(partition, producer_id));
                if open.is_empty() {
                    self.open_by_group.remove(group_id);
                }
            }
        }
        Some(groups)
    }

    /// A tombstone for `tp` of `group_id` drops it from every open transaction of the group
    /// (Kafka's replay of an offset tombstone); the transactions stay open. True when any was
    /// there.
    pub(super) fn remove_offset(&mut self, group_id: &str, tp: &TopicPartition) -> bool {
        let Some(open) = self.open_by_group.get(group_id) else {
            return false;
        };
        let mut removed = false;
        for key in open {
            let offsets = self
                .by_producer
                .get_mut(key)
                .and_then(|groups| groups.get_mut(group_id));
            if let Some(offsets) = offsets
                && offsets.remove(tp).is_some()
            {
                self.len -= 1;
                removed = true;
            }
        }
        removed
    }

    /// Every partition with a pending offset of `group_id`.
    pub(super) fn pending_partitions(&self, group_id: &str) -> BTreeSet<TopicPartition> {
        let mut out = BTreeSet::new();
        for key in self.open_by_group.get(group_id).into_iter().flatten() {
            let offsets = self
                .by_producer
                .get(key)
                .and_then(|groups| groups.get(group_id));
            out.extend(offsets.into_iter().flat_map(|o| o.keys().cloned()));
        }
        out
    }

    /// Forgets every transaction on `partition` (its leadership moved; the next leader
    /// rebuilds them from the log).
    pub(super) fn drop_partition(&mut self, partition: i32) {
        let keys: Vec<(i32, i64)> = self
            .by_producer
            .keys()
            .filter(|(p, _)| *p == partition)
            .copied()
            .collect();
        for (p, producer_id) in keys {
            self.take(p, producer_id);
        }
    }

    /// Moves a finished load's transactions in (the partition held none here: a load starts
    /// by dropping the partition).
    pub(super) fn absorb(&mut self, loaded: PendingTxnOffsets) {
        for ((partition, producer_id), groups) in loaded.by_producer {
            for (group_id, offsets) in groups {
                for (tp, offset) in offsets {
                    self.add(partition, producer_id, &group_id, tp, offset);
                }
                // A transaction whose offsets were all tombstoned stays open, as in Kafka.
                self.by_producer
                    .entry((partition, producer_id))
                    .or_default()
                    .entry(group_id.clone())
                    .or_default();
                self.open_by_group
                    .entry(group_id)
                    .or_default()
                    .insert((partition, producer_id));
            }
        }
    }
}
