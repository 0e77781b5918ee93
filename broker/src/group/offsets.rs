//! OffsetCommit, OffsetFetch, OffsetDelete and offset retention on [`GroupCoordinator`]
//! (Kafka's `handleCommitOffsets`, `handleFetchOffsets`, `handleDeleteOffsets`,
//! `cleanupGroupMetadata`).
//!
//! A commit is applied in memory only after its records are appended (Kafka's pending offset
//! commits); until then `require_stable` fetches of those partitions get
//! UNSTABLE_OFFSET_COMMIT.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::api::*;
use super::classic::{
    CONSUMER_PROTOCOL_TYPE, ClassicGroup, CommittedOffset, GroupState, materialize_offset,
};
use super::coordinator::{GroupCoordinator, PendingAppend, tombstones_for};
use super::error::GroupError;
use super::records::{self, OffsetCommitValue};
use super::txn_pending::PendingTxnOffsets;

impl GroupCoordinator {
    pub fn offset_commit(&mut self, now_ms: i64, request: RequestId, req: OffsetCommit) {
        self.offset_commit_inner(now_ms, request, req);
        self.tick(now_ms);
    }

    pub fn offset_fetch(&mut self, now_ms: i64, request: RequestId, req: &OffsetFetch) {
        let result = match self.check_group_status(&req.group_id, true) {
            Err(error) => FetchResult {
                error: Some(error),
                topics: vec![],
            },
            Ok(_) => fetch_offsets(self.groups.get(&req.group_id), &self.txn_offsets, req),
        };
        self.reply(request, Reply::OffsetFetch(result));
        self.tick(now_ms);
    }

    pub fn offset_delete(&mut self, now_ms: i64, request: RequestId, req: OffsetDelete) {
        self.offset_delete_inner(now_ms, request, req);
        self.tick(now_ms);
    }

    fn offset_commit_inner(&mut self, now_ms: i64, request: RequestId, req: OffsetCommit) {
        let partition = match self.check_group_status(&req.group_id, true) {
            Ok(p) => p,
            Err(error) => return self.reply(request, Reply::OffsetCommit(all_errors(&req, error))),
        };
        // A KIP-848 group: its members commit with their member epoch; the offsets go to
        // the Empty classic group of the same id.
        if let Some(check) = self.validate_consumer_commit(&req) {
            if let Some(error) = check {
                return self.reply(request, Reply::OffsetCommit(all_errors(&req, error)));
            }
            let group = match self.take_group(&req.group_id) {
                Some(group) => Ok(group),
                None => self.create_group(&req.group_id, partition, now_ms),
            };
            return match group {
                Ok(mut group) => {
                    self.store_offsets(now_ms, &mut group, request, req);
                    self.put_group(group);
                }
                Err(e) => self.reply(request, Reply::OffsetCommit(all_errors(&req, e))),
            };
        }
        let mut group = match self.take_group(&req.group_id) {
            Some(group) => group,
            // A standalone consumer (no group management) stores offsets only.
            None if req.generation_id < 0 => {
                match self.create_group(&req.group_id, partition, now_ms) {
                    Ok(group) => group,
                    Err(e) => return self.reply(request, Reply::OffsetCommit(all_errors(&req, e))),
                }
            }
            // Or a commit from an old generation of a group that is gone.
            None => {
                let errors = all_errors(&req, GroupError::IllegalGeneration);
                return self.reply(request, Reply::OffsetCommit(errors));
            }
        };
        let error = validate_offset_commit(&group, &req).or_else(|| {
            group
                .is(GroupState::CompletingRebalance)
                .then_some(GroupError::RebalanceInProgress)
        });
        match error {
            Some(error) => self.reply(request, Reply::OffsetCommit(all_errors(&req, error))),
            None => {
                if let Some(member) = group.members.get_mut(&req.member_id) {
                    member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                }
                self.store_offsets(now_ms, &mut group, request, req);
            }
        }
        self.put_group(group);
    }

    /// Kafka's `storeOffsets`: appends the valid commits; the reply waits for the append.
    fn store_offsets(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        req: OffsetCommit,
    ) {
        let expire_timestamp_ms =
            (req.retention_time_ms >= 0).then(|| now_ms.saturating_add(req.retention_time_ms));
        let (offsets, reply) = offsets_to_store(
            req.topics,
            self.config.offset_metadata_max_bytes,
            now_ms,
            expire_timestamp_ms,
        );
        if offsets.is_empty() {
            return self.reply(request, Reply::OffsetCommit(reply));
        }
        let records = offset_records(&group.group_id, &offsets);
        for (tp, _) in &offsets {
            *group.pending_commits.entry(tp.clone()).or_default() += 1;
        }
        // Stamped now: appends of a partition reach the log in emission order.
        let offsets: Vec<((String, i32), CommittedOffset)> = offsets
            .into_iter()
            .map(|(tp, value)| {
                let log_order = self.next_log_order();
                (tp, CommittedOffset { value, log_order })
            })
            .collect();
        let pending = PendingAppend::Commit {
            request,
            group_id: group.group_id.clone(),
            offsets,
            reply,
        };
        self.append(group.partition, &records, now_ms, pending);
    }

    /// The commit's records are durable (or failed): apply and answer.
    pub(super) fn commit_appended(
        &mut self,
        request: RequestId,
        group_id: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
        mut reply: Vec<TopicErrors>,
        error: Option<GroupError>,
    ) {
        if let Some(mut group) = self.take_group(group_id) {
            for (tp, value) in offsets {
                if let Some(count) = group.pending_commits.get_mut(&tp) {
                    *count -= 1;
                    if *count == 0 {
                        group.pending_commits.remove(&tp);
                    }
                }
                // A transaction's offset written after this commit (and already
                // materialised) stays: the later record wins.
                if error.is_none() {
                    materialize_offset(&mut group.offsets, tp, value);
                }
            }
            self.put_group(group);
        }
        if let Some(error) = error {
            for topic in &mut reply {
                for (_, e) in &mut topic.partitions {
                    e.get_or_insert(error);
                }
            }
        }
        self.reply(request, Reply::OffsetCommit(reply));
    }

    fn offset_delete_inner(&mut self, now_ms: i64, request: RequestId, req: OffsetDelete) {
        let top = |error| {
            Reply::OffsetDelete(OffsetDeleteResult {
                error: Some(error),
                topics: vec![],
            })
        };
        if let Err(error) = self.check_group_status(&req.group_id, false) {
            return self.reply(request, top(error));
        }
        let Some(mut group) = self.take_group(&req.group_id) else {
            return self.reply(request, top(GroupError::GroupIdNotFound));
        };
        let consumer = group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE);
        let in_use = match group.state {
            GroupState::Empty => false,
            GroupState::Dead => {
                self.put_group(group);
                return self.reply(request, top(GroupError::GroupIdNotFound));
            }
            _ if consumer => true,
            _ => {
                self.put_group(group);
                return self.reply(request, top(GroupError::NonEmptyGroup));
            }
        };
        let mut removed = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for topic in req.topics {
            let subscribed = in_use && group.is_subscribed_to(&topic.name);
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for partition in topic.partitions {
                if subscribed {
                    partitions.push((partition, Some(GroupError::GroupSubscribedToTopic)));
                    continue;
                }
                let tp = (topic.name.clone(), partition);
                // A tombstone goes out for a committed offset or a pending transactional
                // one (Kafka's `deleteOffsets`); it removes both.
                let committed = group.offsets.remove(&tp).is_some();
                if self.txn_offsets.remove_offset(&req.group_id, &tp) || committed {
                    removed.push(tp);
                }
                partitions.push((partition, None));
            }
            topics.push(TopicErrors {
                name: topic.name,
                partitions,
            });
        }
        let result = OffsetDeleteResult {
            error: None,
            topics,
        };
        let group_partition = group.partition;
        let tombstones: Vec<(Bytes, Option<Bytes>)> = removed
            .iter()
            .map(|(topic, partition)| {
                (
                    records::encode_offset_key(&group.group_id, topic, *partition),
                    None,
                )
            })
            .collect();
        self.put_group(group);
        if tombstones.is_empty() {
            return self.reply(request, Reply::OffsetDelete(result));
        }
        let pending = PendingAppend::Reply {
            request,
            ok: Reply::OffsetDelete(result),
        };
        self.append(group_partition, &tombstones, now_ms, pending);
    }

    /// Offset retention (offsets.retention.minutes) and removal of groups left with nothing:
    /// expired offsets and dead groups are tombstoned, one append per partition.
    pub(super) fn cleanup_expired_offsets(&mut self, now_ms: i64) {
        let retention_ms = self.config.offsets_retention_ms;
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        let mut per_partition: HashMap<i32, Vec<(Bytes, Option<Bytes>)>> = HashMap::new();
        for group_id in ids {
            // Offsets of a KIP-848 group with members stay while it lives.
            if self.is_live_consumer_group(&group_id) {
                continue;
            }
            let Some(mut group) = self.take_group(&group_id) else {
                continue;
            };
            let expired =
                remove_expired_offsets(&mut group, &self.txn_offsets, now_ms, retention_ms);
            // Not while a transaction holds offsets of the group (Kafka's
            // `cleanupExpiredOffsets`).
            let dead = group.is(GroupState::Empty)
                && !group.has_offsets()
                && group.pending_members.is_empty()
                && !self.txn_offsets.has_open(&group_id);
            let mut records: Vec<(Bytes, Option<Bytes>)> = if dead {
                group.transition(GroupState::Dead, now_ms);
                tombstones_for(&group, expired)
            } else {
                expired
                    .iter()
                    .map(|(topic, partition)| {
                        (
                            records::encode_offset_key(&group_id, topic, *partition),
                            None,
                        )
                    })
                    .collect()
            };
            if !records.is_empty() {
                per_partition
                    .entry(group.partition)
                    .or_default()
                    .append(&mut records);
            }
            self.put_group(group);
        }
        // Empty KIP-848 groups go (their offsets follow the rules above).
        let empty: Vec<String> = self
            .consumer_groups
            .values()
            .filter(|g| g.members.is_empty())
            .map(|g| g.group_id.clone())
            .collect();
        for group_id in empty {
            self.delete_consumer_group(now_ms, &group_id);
        }
        for (partition, records) in per_partition {
            self.append(partition, &records, now_ms, PendingAppend::Background);
        }
    }
}

/// Kafka's `validateOffsetCommit` for non-transactional commits.
/// An offset to store: its partition and its record value.
pub(super) type StoredOffset = ((String, i32), OffsetCommitValue);

/// A commit's partitions split into the offsets to store and the answer per partition:
/// metadata longer than `metadata_max_bytes` answers OFFSET_METADATA_TOO_LARGE and is not
/// stored (the rule of plain and transactional commits alike).
pub(super) fn offsets_to_store(
    topics: Vec<CommitTopic>,
    metadata_max_bytes: usize,
    now_ms: i64,
    expire_timestamp_ms: Option<i64>,
) -> (Vec<StoredOffset>, Vec<TopicErrors>) {
    let mut offsets = Vec::new();
    let mut reply = Vec::with_capacity(topics.len());
    for topic in topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let metadata = p.metadata.unwrap_or_default();
            if metadata.len() > metadata_max_bytes {
                partitions.push((p.partition, Some(GroupError::OffsetMetadataTooLarge)));
                continue;
            }
            partitions.push((p.partition, None));
            let value = OffsetCommitValue {
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                metadata,
                commit_timestamp_ms: now_ms,
                expire_timestamp_ms,
            };
            offsets.push(((topic.name.clone(), p.partition), value));
        }
        reply.push(TopicErrors {
            name: topic.name,
            partitions,
        });
    }
    (offsets, reply)
}

/// The `__consumer_offsets` records of `offsets` committed by `group_id`.
pub(super) fn offset_records(
    group_id: &str,
    offsets: &[StoredOffset],
) -> Vec<(Bytes, Option<Bytes>)> {
    offsets
        .iter()
        .map(|((topic, partition), value)| {
            let key = records::encode_offset_key(group_id, topic, *partition);
            (key, Some(records::encode_offset_value(value)))
        })
        .collect()
}

fn validate_offset_commit(group: &ClassicGroup, req: &OffsetCommit) -> Option<GroupError> {
    if group.is(GroupState::Dead) {
        return Some(GroupError::CoordinatorNotAvailable);
    }
    let instance = req.group_instance_id.as_deref();
    if req.generation_id >= 0 || !req.member_id.is_empty() || instance.is_some() {
        if let Some(instance) = instance {
            match group.static_member_id(instance) {
                Some(current) if current != req.member_id => {
                    return Some(GroupError::FencedInstanceId);
                }
                Some(_) => {}
                None => return Some(GroupError::UnknownMemberId),
            }
        }
        if !group.members.contains_key(&req.member_id) {
            return Some(GroupError::UnknownMemberId);
        }
        (req.generation_id != group.generation_id).then_some(GroupError::IllegalGeneration)
    } else if !group.is(GroupState::Empty) {
        // Only members may commit while the group has members.
        Some(GroupError::UnknownMemberId)
    } else {
        None
    }
}

fn all_errors(req: &OffsetCommit, error: GroupError) -> Vec<TopicErrors> {
    req.topics
        .iter()
        .map(|t| TopicErrors {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| (p.partition, Some(error)))
                .collect(),
        })
        .collect()
}

/// Kafka's `fetchOffsets`: committed offsets only; with `require_stable`, a partition with a
/// commit in flight or a pending transactional offset is UNSTABLE_OFFSET_COMMIT.
fn fetch_offsets(
    group: Option<&ClassicGroup>,
    txn: &PendingTxnOffsets,
    req: &OffsetFetch,
) -> FetchResult {
    let lookup = |topic: &str, partition: i32| -> FetchPartitionResult {
        let tp = (topic.to_owned(), partition);
        let unstable = req.require_stable
            && (group.is_some_and(|g| g.pending_commits.contains_key(&tp))
                || txn.has_pending(&req.group_id, &tp));
        let committed = group.and_then(|g| g.offsets.get(&tp));
        match committed {
            Some(c) if !unstable => FetchPartitionResult {
                partition,
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
                error: None,
            },
            _ => FetchPartitionResult {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error: unstable.then_some(GroupError::UnstableOffsetCommit),
            },
        }
    };
    let topics = match &req.topics {
        Some(topics) => topics
            .iter()
            .map(|t| FetchTopicResult {
                name: t.name.clone(),
                partitions: t.partitions.iter().map(|p| lookup(&t.name, *p)).collect(),
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            if let Some(group) = group {
                for (topic, partition) in group.offsets.keys() {
                    by_topic.entry(topic).or_default().push(*partition);
                }
            }
            by_topic
                .into_iter()
                .map(|(name, ps)| FetchTopicResult {
                    name: name.to_owned(),
                    partitions: ps.into_iter().map(|p| lookup(name, p)).collect(),
                })
                .collect()
        }
    };
    FetchResult {
        error: None,
        topics,
    }
}

/// Kafka's `GroupMetadata.removeExpiredOffsets`: which committed offsets retention removes.
fn remove_expired_offsets(
    group: &mut ClassicGroup,
    txn: &PendingTxnOffsets,
    now_ms: i64,
    retention_ms: i64,
) -> Vec<(String, i32)> {
    enum Base {
        StateTimestamp(Option<i64>),
        CommitTimestamp { skip_subscribed: bool },
    }
    let base = match (group.protocol_type.as_deref(), group.state) {
        // No consumer left: retention counts from when the group became empty.
        (Some(_), GroupState::Empty) => Base::StateTimestamp(group.state_timestamp_ms),
        // A stable consumer group: offsets of topics it no longer subscribes to expire.
        (Some(CONSUMER_PROTOCOL_TYPE), GroupState::Stable) if group.subscribed_topics.is_some() => {
            Base::CommitTimestamp {
                skip_subscribed: true,
            }
        }
        // A standalone consumer: from each commit.
        (None, _) => Base::CommitTimestamp {
            skip_subscribed: false,
        },
        _ => return vec![],
    };
    let expired: Vec<(String, i32)> = group
        .offsets
        .iter()
        .filter(|(tp, value)| {
            // Nor while a transaction holds an offset of the partition (Kafka's rule).
            if group.pending_commits.contains_key(*tp) || txn.has_pending(&group.group_id, tp) {
                return false;
            }
            let from = match base {
                Base::StateTimestamp(ts) => ts.unwrap_or(value.commit_timestamp_ms),
                Base::CommitTimestamp { skip_subscribed } => {
                    if skip_subscribed && group.is_subscribed_to(&tp.0) {
                        return false;
                    }
                    value.commit_timestamp_ms
                }
            };
            match value.expire_timestamp_ms {
                Some(expire) => now_ms >= expire,
                None => now_ms.saturating_sub(from) >= retention_ms,
            }
        })
        .map(|(tp, _)| tp.clone())
        .collect();
    for tp in &expired {
        group.offsets.remove(tp);
    }
    expired
}
