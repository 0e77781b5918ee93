//! Transactional offset commits on [`GroupCoordinator`] (Kafka's TxnOffsetCommit, KIP-98, with
//! KIP-447's group-metadata fencing): validation, the transactional append, the offsets pending
//! per producer until its transaction ends, and their completion by a COMMIT or ABORT marker
//! (Kafka's `OffsetMetadataManager.commitTransactionalOffset` / `replayEndTransactionMarker`).
//!
//! Shape: the pending offsets themselves are kept in `txn_pending` (pure bookkeeping).
//!
//! Invariants: a pending offset is never visible to OffsetFetch; `require_stable` fetches of a
//! partition with one get UNSTABLE_OFFSET_COMMIT; a transaction's offsets are materialised
//! only by its COMMIT and then only where no later-written commit exists
//! ([`materialize_offset`]); `open_by_group` names exactly the (partition, producer) keys of
//! `by_producer` holding an entry for the group (possibly emptied by a tombstone, as Kafka
//! keeps the transaction open); the pending count is bounded by
//! `limits::PENDING_TXN_OFFSETS_PER_SHARD_MAX` for new commits (replay takes what the log has).

use std::collections::BTreeMap;

use super::api::*;
use super::classic::{ClassicGroup, CommittedOffset, GroupState, materialize_offset};
use super::coordinator::{GroupCoordinator, PendingAppend};
use super::error::GroupError;
use super::limits::PENDING_TXN_OFFSETS_PER_SHARD_MAX;
use super::offsets::{offset_records, offsets_to_store};
use super::records::TxnProducer;
use super::txn_pending::{ProducerOffsets, TxnCommitAppended};

type TopicPartition = (String, i32);

impl GroupCoordinator {
    /// TxnOffsetCommit: validates the producer's view of the group (KIP-447), appends the
    /// offsets as one transactional batch of the producer, and answers once it is replicated;
    /// the offsets then wait for the transaction's marker ([`Self::complete_transaction`]).
    pub fn txn_offset_commit(&mut self, now_ms: i64, request: RequestId, req: TxnOffsetCommit) {
        self.txn_offset_commit_inner(now_ms, request, req);
        self.tick(now_ms);
    }

    fn txn_offset_commit_inner(&mut self, now_ms: i64, request: RequestId, req: TxnOffsetCommit) {
        let fail = |this: &mut Self, error| {
            this.reply(
                request,
                Reply::TxnOffsetCommit(all_errors(&req.topics, error)),
            )
        };
        let partition = match self.check_group_status(&req.group_id, false) {
            Ok(p) => p,
            Err(error) => return fail(self, error),
        };
        if req.producer_id < 0 || req.producer_epoch < 0 {
            tracing::info!(target: "group", group = %req.group_id, producer_id = req.producer_id, producer_epoch = req.producer_epoch, "TxnOffsetCommit without a producer id and epoch");
            return fail(self, GroupError::InvalidRequest);
        }
        let pending_max = PENDING_TXN_OFFSETS_PER_SHARD_MAX;
        let count: usize = req.topics.iter().map(|t| t.partitions.len()).sum();
        if self.txn_offsets.len() + self.txn_offsets_in_flight + count > pending_max {
            tracing::warn!(target: "group", group = %req.group_id, pending_max, "pending transactional offsets at their limit");
            return fail(self, GroupError::CoordinatorNotAvailable);
        }
        // A KIP-848 group: the member epoch is checked; offsets go to the classic group of
        // the same id (as for OffsetCommit).
        if let Some(check) = self.validate_consumer_txn_commit(&req) {
            if let Some(error) = check {
                return fail(self, error);
            }
        } else if let Some(group) = self.groups.get(&req.group_id) {
            if let Some(error) = validate_txn_offset_commit(group, &req) {
                return fail(self, error);
            }
        } else if req.generation_id >= 0 {
            // A commit from a generation of a group that is gone.
            return fail(self, GroupError::IllegalGeneration);
        }
        let group = match self.take_group(&req.group_id) {
            Some(group) => group,
            // A producer without group membership: a simple group holds the offsets.
            None => match self.create_group(&req.group_id, partition, now_ms) {
                Ok(group) => group,
                Err(error) => return fail(self, error),
            },
        };
        self.store_txn_offsets(now_ms, group, request, req);
    }

    /// Kafka's `ConsumerGroup.validateOffsetCommit` with `isTransactional`: a stale member
    /// epoch is ILLEGAL_GENERATION here (`validateTransactionalOffsetCommit`). None when the
    /// group is not a KIP-848 group.
    fn validate_consumer_txn_commit(&self, req: &TxnOffsetCommit) -> Option<Option<GroupError>> {
        let group = self.consumer_groups.get(&req.group_id)?;
        if req.generation_id < 0 && group.members.is_empty() {
            return Some(None);
        }
        let Some(member) = group.members.get(&req.member_id) else {
            return Some(Some(GroupError::UnknownMemberId));
        };
        Some((req.generation_id != member.member_epoch).then_some(GroupError::IllegalGeneration))
    }

    /// Appends the valid offsets as the producer's transactional batch; the reply waits.
    fn store_txn_offsets(
        &mut self,
        now_ms: i64,
        mut group: ClassicGroup,
        request: RequestId,
        req: TxnOffsetCommit,
    ) {
        let (offsets, reply) = offsets_to_store(
            req.topics,
            self.config.offset_metadata_max_bytes,
            now_ms,
            None,
        );
        if offsets.is_empty() {
            self.put_group(group);
            return self.reply(request, Reply::TxnOffsetCommit(reply));
        }
        let records = offset_records(&group.group_id, &offsets);
        // Stamped now: appends of a partition reach the log in emission order.
        let offsets: Vec<(TopicPartition, CommittedOffset)> = offsets
            .into_iter()
            .map(|(tp, value)| {
                let log_order = self.next_log_order();
                (tp, CommittedOffset { value, log_order })
            })
            .collect();
        // In flight: require_stable fetches see them as unstable, as pending ones.
        for (tp, _) in &offsets {
            *group.pending_commits.entry(tp.clone()).or_default() += 1;
        }
        self.txn_offsets_in_flight += offsets.len();
        let producer = TxnProducer {
            producer_id: req.producer_id,
            producer_epoch: req.producer_epoch,
        };
        let partition = group.partition;
        let pending = PendingAppend::TxnCommit {
            request,
            group_id: group.group_id.clone(),
            producer_id: req.producer_id,
            offsets,
            reply,
            ended: None,
        };
        self.put_group(group);
        self.append_as(partition, &records, now_ms, pending, Some(producer));
    }

    /// The transactional batch is durable (or failed): its offsets become pending for the
    /// producer, and the request is answered. When the transaction's marker came while the
    /// batch was in flight (the transaction coordinator aborting a timed-out transaction), the
    /// batch precedes the marker in the log: the marker's outcome applies to it at once.
    pub(super) fn txn_commit_appended(
        &mut self,
        now_ms: i64,
        commit: TxnCommitAppended,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
        mut reply: Vec<TopicErrors>,
        error: Option<GroupError>,
    ) {
        let TxnCommitAppended {
            request,
            group_id,
            producer_id,
            ended,
        } = commit;
        self.txn_offsets_in_flight -= offsets.len();
        let partition = self.partition_for(group_id);
        if let Some(mut group) = self.take_group(group_id) {
            for (tp, _) in &offsets {
                if let Some(count) = group.pending_commits.get_mut(tp) {
                    *count -= 1;
                    if *count == 0 {
                        group.pending_commits.remove(tp);
                    }
                }
            }
            self.put_group(group);
        }
        if error.is_none() && self.is_active(partition) {
            match ended {
                None => {
                    for (tp, offset) in offsets {
                        self.txn_offsets
                            .add(partition, producer_id, group_id, tp, offset);
                    }
                }
                Some(true) => {
                    let groups =
                        BTreeMap::from([(group_id.to_owned(), offsets.into_iter().collect())]);
                    self.materialize_txn_offsets(now_ms, partition, producer_id, groups);
                }
                Some(false) => {}
            }
        }
        if let Some(error) = error {
            for topic in &mut reply {
                for (_, e) in &mut topic.partitions {
                    e.get_or_insert(error);
                }
            }
        }
        self.reply(request, Reply::TxnOffsetCommit(reply));
    }

    /// A COMMIT (`commit`) or ABORT marker for `producer_id` is in offsets partition
    /// `partition`'s log: the producer's pending offsets there become committed — each only
    /// where no later-written commit exists (Kafka's `replayEndTransactionMarker`) — or are
    /// dropped. While the partition loads, the marker is applied when the load finishes
    /// (after the records the load replays, which the marker follows); a replayed marker
    /// makes this a no-op.
    pub fn complete_transaction(
        &mut self,
        now_ms: i64,
        partition: i32,
        producer_id: i64,
        commit: bool,
    ) {
        if let Some(markers) = self.deferred_markers_mut(partition) {
            markers.push((producer_id, commit));
            return;
        }
        if self.end_in_flight_txn_commits(partition, producer_id, commit) {
            tracing::info!(target: "group", partition, producer_id, commit, "transaction ended while its offsets were being appended");
        }
        let Some(groups) = self.txn_offsets.take(partition, producer_id) else {
            tracing::debug!(target: "group", partition, producer_id, commit, "transaction marker without pending offsets");
            return;
        };
        if !commit {
            tracing::debug!(target: "group", partition, producer_id, "transactional offsets aborted");
            return;
        }
        self.materialize_txn_offsets(now_ms, partition, producer_id, groups);
    }

    /// A committed transaction's offsets become the groups' committed offsets, each where no
    /// later-written commit exists.
    fn materialize_txn_offsets(
        &mut self,
        now_ms: i64,
        partition: i32,
        producer_id: i64,
        groups: ProducerOffsets,
    ) {
        for (group_id, offsets) in groups {
            if offsets.is_empty() {
                continue;
            }
            let group = match self.take_group(&group_id) {
                Some(group) => group,
                None => match self.create_group(&group_id, partition, now_ms) {
                    Ok(group) => group,
                    Err(error) => {
                        tracing::warn!(target: "group", group = %group_id, %error, "committed transactional offsets dropped: no room for their group");
                        continue;
                    }
                },
            };
            let mut group = group;
            for (tp, offset) in offsets {
                if !materialize_offset(&mut group.offsets, tp.clone(), offset) {
                    tracing::info!(target: "group", group = %group_id, topic = %tp.0, partition = tp.1, producer_id, "transactional offset not materialised: a later commit exists");
                }
            }
            self.put_group(group);
        }
    }
}

/// Kafka's `ClassicGroup.validateOffsetCommit` with `isTransactional`: no check of the group's
/// state beyond Dead (a producer commits for a generation it read, KIP-447), and producers
/// that send no member fields (before v3) commit to any group.
fn validate_txn_offset_commit(group: &ClassicGroup, req: &TxnOffsetCommit) -> Option<GroupError> {
    if group.is(GroupState::Dead) {
        return Some(GroupError::CoordinatorNotAvailable);
    }
    if req.generation_id < 0 && group.is(GroupState::Empty) {
        return None;
    }
    let instance = req.group_instance_id.as_deref();
    if req.generation_id < 0 && req.member_id.is_empty() && instance.is_none() {
        return None;
    }
    if let Some(instance) = instance {
        match group.static_member_id(instance) {
            None => return Some(GroupError::UnknownMemberId),
            Some(current) if current != req.member_id => {
                return Some(GroupError::FencedInstanceId);
            }
            Some(_) => {}
        }
    }
    if !group.members.contains_key(&req.member_id) {
        return Some(GroupError::UnknownMemberId);
    }
    (req.generation_id != group.generation_id).then_some(GroupError::IllegalGeneration)
}

fn all_errors(topics: &[CommitTopic], error: GroupError) -> Vec<TopicErrors> {
    topics
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
