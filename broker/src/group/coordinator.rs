//! The group coordinator of one shard: the groups whose `__consumer_offsets` partitions this
//! shard owns, as a sans-IO state machine (Kafka's `GroupCoordinator` +
//! `GroupMetadataManager`).
//!
//! Shape: the I/O layer calls one method per request with the current time and a
//! [`RequestId`], and [`GroupCoordinator::tick`] when [`GroupCoordinator::next_deadline`]
//! passes; it drains [`Output`]s with [`GroupCoordinator::take_outputs`]: replies to deliver
//! and appends to perform, whose outcome it reports with
//! [`GroupCoordinator::append_complete`]. No clock, no randomness, no I/O inside.
//!
//! Invariants: every accepted request is answered exactly once; groups live only on owned,
//! loaded partitions; the number of groups and members is bounded (see `limits`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::api::*;
use super::classic::{ClassicGroup, CommittedOffset, GroupState, LogOrder, materialize_offset};
use super::consumer::ConsumerGroup;
use super::error::GroupError;
use super::limits::GROUPS_PER_SHARD_MAX;
use super::records::{self, LogEntry, OffsetsRecord, RecordDecodeError, TxnProducer};
use super::txn_offsets::{PendingTxnOffsets, TxnCommitAppended};

/// Broker settings for groups (Kafka's names in comments); validated by [`GroupConfig::validate`].
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// offsets.topic.num.partitions
    pub offsets_topic_partitions: i32,
    /// group.min.session.timeout.ms
    pub min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    pub max_session_timeout_ms: i32,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay_ms: i64,
    /// group.max.size (bounded by `limits::MEMBERS_PER_GROUP_MAX`)
    pub max_size: usize,
    /// offsets.retention.minutes, in ms
    pub offsets_retention_ms: i64,
    /// offsets.retention.check.interval.ms
    pub offsets_retention_check_interval_ms: i64,
    /// offset.metadata.max.bytes
    pub offset_metadata_max_bytes: usize,
    /// group.consumer.session.timeout.ms (KIP-848 groups)
    pub consumer_session_timeout_ms: i32,
    /// group.consumer.heartbeat.interval.ms (KIP-848 groups)
    pub consumer_heartbeat_interval_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_topic_partitions: records::OFFSETS_TOPIC_PARTITIONS_DEFAULT,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: super::limits::MEMBERS_PER_GROUP_MAX,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupConfigError {
    #[error("offsets.topic.num.partitions must be in 1..=10000, got {0}")]
    Partitions(i32),
    #[error(
        "group.min.session.timeout.ms ({min}) must be positive and <= group.max.session.timeout.ms ({max})"
    )]
    SessionTimeouts { min: i32, max: i32 },
    #[error("group.max.size must be in 1..={max}, got {got}")]
    MaxSize { got: usize, max: usize },
    #[error(
        "group.consumer.heartbeat.interval.ms ({heartbeat}) must be positive and below group.consumer.session.timeout.ms ({session})"
    )]
    ConsumerTimeouts { heartbeat: i32, session: i32 },
    #[error("{name} must be positive")]
    NotPositive { name: &'static str },
    #[error("{name} must not be negative")]
    Negative { name: &'static str },
}

impl GroupConfig {
    pub fn validate(&self) -> Result<(), GroupConfigError> {
        if !(1..=crate::config::PARTITIONS_PER_TOPIC_MAX).contains(&self.offsets_topic_partitions) {
            return Err(GroupConfigError::Partitions(self.offsets_topic_partitions));
        }
        if self.min_session_timeout_ms <= 0
            || self.min_session_timeout_ms > self.max_session_timeout_ms
        {
            return Err(GroupConfigError::SessionTimeouts {
                min: self.min_session_timeout_ms,
                max: self.max_session_timeout_ms,
            });
        }
        if self.consumer_heartbeat_interval_ms <= 0
            || self.consumer_heartbeat_interval_ms >= self.consumer_session_timeout_ms
        {
            return Err(GroupConfigError::ConsumerTimeouts {
                heartbeat: self.consumer_heartbeat_interval_ms,
                session: self.consumer_session_timeout_ms,
            });
        }
        let max = super::limits::MEMBERS_PER_GROUP_MAX;
        if self.max_size == 0 || self.max_size > max {
            return Err(GroupConfigError::MaxSize {
                got: self.max_size,
                max,
            });
        }
        for (name, value) in [
            (
                "group.initial.rebalance.delay.ms",
                self.initial_rebalance_delay_ms,
            ),
            ("offsets.retention.minutes", self.offsets_retention_ms),
        ] {
            if value < 0 {
                return Err(GroupConfigError::Negative { name });
            }
        }
        // Zero would make the timer loop run the retention pass back to back.
        if self.offsets_retention_check_interval_ms <= 0 {
            return Err(GroupConfigError::NotPositive {
                name: "offsets.retention.check.interval.ms",
            });
        }
        Ok(())
    }
}

/// What the coordinator waits for from an append before it can act.
#[derive(Debug)]
pub(super) enum PendingAppend {
    /// Offsets to apply on success; `reply` has `None` errors for the appended partitions.
    Commit {
        request: RequestId,
        group_id: String,
        offsets: Vec<((String, i32), CommittedOffset)>,
        reply: Vec<TopicErrors>,
    },
    /// A TxnOffsetCommit's batch: on success its offsets become pending for the producer.
    TxnCommit {
        request: RequestId,
        group_id: String,
        producer_id: i64,
        offsets: Vec<((String, i32), CommittedOffset)>,
        reply: Vec<TopicErrors>,
        /// The transaction's marker arrived while the batch was in flight (Some(commit)).
        ended: Option<bool>,
    },
    /// The leader's SyncGroup assignment (Kafka's `storeGroup` from `doSyncGroup`).
    Sync {
        group_id: String,
        generation_id: i32,
        assignment: BTreeMap<String, Bytes>,
    },
    /// A static member replaced in a Stable group, answered once the group is stored.
    StaticRejoin {
        group_id: String,
        member_id: String,
        request: RequestId,
        result: JoinResult,
    },
    /// A reply that waits for the append (DeleteGroups, OffsetDelete); on failure the
    /// append's error replaces it (see `failed_reply`).
    Reply { request: RequestId, ok: Reply },
    /// Nothing waits (empty-group store, retention tombstones).
    Background,
}

#[derive(Debug, Default)]
struct LoadBuffer {
    groups: HashMap<String, LoadedGroup>,
    consumer_groups: HashMap<String, LoadedConsumerGroup>,
    /// Transactions the replayed log leaves open (their offsets pending).
    txn: PendingTxnOffsets,
    /// Markers reported while loading (`complete_transaction`), applied after the replay.
    deferred_markers: Vec<(i64, bool)>,
}

/// A KIP-848 group as its replayed records left it.
#[derive(Debug, Default)]
pub(super) struct LoadedConsumerGroup {
    pub group_epoch: Option<i32>,
    pub target_epoch: Option<i32>,
    pub members: BTreeMap<String, LoadedConsumerMember>,
}

#[derive(Debug, Default)]
pub(super) struct LoadedConsumerMember {
    pub metadata: Option<super::consumer_records::MemberMetadataValue>,
    pub target: Option<super::consumer::Assignment>,
    pub current: Option<super::consumer_records::CurrentAssignmentValue>,
}

#[derive(Debug, Default)]
struct LoadedGroup {
    metadata: Option<records::GroupMetadataValue>,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// A transactional offset commit was replayed since the group's last tombstone: the
    /// group exists (an Empty "simple" group, as Kafka's replay creates it) even with no
    /// committed offset yet.
    simple: bool,
}

#[derive(Debug)]
enum PartitionStatus {
    Loading(Box<LoadBuffer>),
    Active,
}

#[derive(Debug)]
pub struct GroupCoordinator {
    pub(super) config: GroupConfig,
    partitions: HashMap<i32, PartitionStatus>,
    pub(super) groups: HashMap<String, ClassicGroup>,
    /// KIP-848 groups. Their committed offsets live in a classic group of the same id that
    /// stays Empty (offset storage and records are the same for both kinds).
    pub(super) consumer_groups: HashMap<String, ConsumerGroup>,
    pub(super) consumer_timers: BTreeSet<(i64, String)>,
    /// (deadline, group id) for every group with a timer.
    timers: BTreeSet<(i64, String)>,
    pending_appends: HashMap<AppendToken, PendingAppend>,
    next_append_token: u64,
    member_id_state: u64,
    next_retention_check_ms: Option<i64>,
    pub(super) outputs: Vec<Output>,
    /// Offsets of open transactions (TxnOffsetCommit), by offsets partition and producer.
    pub(super) txn_offsets: PendingTxnOffsets,
    /// Transactional offsets appended but not yet acknowledged (counted against the limit).
    pub(super) txn_offsets_in_flight: usize,
    /// The next [`LogOrder`] stamp (records are stamped in log order).
    log_order: u64,
}

impl GroupCoordinator {
    /// `seed` makes generated member ids unique across restarts; pass something random.
    pub fn new(config: GroupConfig, seed: u64) -> Self {
        config
            .validate()
            .expect("group config is validated at start-up");
        Self {
            config,
            partitions: HashMap::new(),
            groups: HashMap::new(),
            consumer_groups: HashMap::new(),
            consumer_timers: BTreeSet::new(),
            timers: BTreeSet::new(),
            pending_appends: HashMap::new(),
            next_append_token: 0,
            member_id_state: seed,
            next_retention_check_ms: None,
            outputs: Vec::new(),
            txn_offsets: PendingTxnOffsets::default(),
            txn_offsets_in_flight: 0,
            log_order: 0,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The offsets partition for `group_id` (route requests to its owner).
    pub fn partition_for(&self, group_id: &str) -> i32 {
        records::partition_for_group(group_id, self.config.offsets_topic_partitions)
    }

    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// When [`Self::tick`] next has work.
    pub fn next_deadline(&self) -> Option<i64> {
        let timer = self.timers.first().map(|(deadline, _)| *deadline);
        let consumer = self.consumer_timers.first().map(|(deadline, _)| *deadline);
        [timer, consumer, self.next_retention_check_ms]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs every timer due at `now_ms`: join and sync phase deadlines, session and KIP-394
    /// pending-member expiry, offset retention.
    pub fn tick(&mut self, now_ms: i64) {
        let due: Vec<String> = self
            .timers
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .map(|(_, id)| id.clone())
            .collect();
        // Each due group runs once per tick, so a timer that does not advance cannot spin.
        for group_id in due {
            if let Some(mut group) = self.take_group(&group_id) {
                self.expire_timers(now_ms, &mut group);
                self.put_group(group);
            }
        }
        self.expire_consumer_timers(now_ms);
        if self.next_retention_check_ms.is_some_and(|at| at <= now_ms) {
            self.next_retention_check_ms =
                Some(now_ms + self.config.offsets_retention_check_interval_ms);
            self.cleanup_expired_offsets(now_ms);
        }
    }

    // ---- partition ownership and loading -------------------------------------------------

    /// Starts loading `partition`: requests for its groups get COORDINATOR_LOAD_IN_PROGRESS
    /// until [`Self::finish_load`].
    pub fn begin_load(&mut self, partition: i32) {
        assert!((0..self.config.offsets_topic_partitions).contains(&partition));
        self.unload_partition(partition);
        self.partitions
            .insert(partition, PartitionStatus::Loading(Box::default()));
    }

    /// Replays batches read from `partition` in log order.
    /// Ignored when the partition was unloaded meanwhile (shutdown during a load).
    pub fn replay(&mut self, partition: i32, batches: Bytes) -> Result<(), RecordDecodeError> {
        let Some(PartitionStatus::Loading(buffer)) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        for entry in records::decode_log(batches)? {
            let log_order = LogOrder(self.log_order);
            self.log_order += 1;
            match entry {
                LogEntry::Record {
                    producer_id,
                    key,
                    value,
                } => match records::decode_record(&key, value.as_deref()) {
                    Ok(record) => buffer.apply(record, partition, producer_id, log_order),
                    // A record this version cannot read (a newer Kafka's) is skipped, not fatal.
                    Err(error) => {
                        tracing::warn!(target: "group", partition, %error, "skipping offsets record")
                    }
                },
                LogEntry::Marker {
                    producer_id,
                    commit,
                } => buffer.end_transaction(partition, producer_id, commit),
            }
        }
        Ok(())
    }

    /// Ends loading: the replayed groups become live (members come back Stable and must
    /// heartbeat within their session timeout, as in Kafka's `onGroupLoaded`).
    /// Ignored when the partition was unloaded meanwhile.
    pub fn finish_load(&mut self, now_ms: i64, partition: i32) {
        if !self.is_loading(partition) {
            return;
        }
        let Some(PartitionStatus::Loading(buffer)) = self.partitions.remove(&partition) else {
            unreachable!("checked above");
        };
        let buffer = *buffer;
        for (group_id, loaded) in buffer.groups {
            if let Some(group) = loaded.into_group(group_id, partition, now_ms) {
                self.put_group(group);
            }
        }
        for (group_id, loaded) in buffer.consumer_groups {
            self.restore_consumer_group(now_ms, group_id, partition, loaded);
        }
        self.txn_offsets.absorb(buffer.txn);
        self.partitions.insert(partition, PartitionStatus::Active);
        for (producer_id, commit) in buffer.deferred_markers {
            self.complete_transaction(now_ms, partition, producer_id, commit);
        }
        if self.next_retention_check_ms.is_none() {
            self.next_retention_check_ms =
                Some(now_ms + self.config.offsets_retention_check_interval_ms);
        }
        self.tick(now_ms);
    }

    /// Gives up `partition` (leadership moved): its groups are dropped, pending JoinGroup and
    /// SyncGroup requests are answered NOT_COORDINATOR.
    pub fn unload_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        self.txn_offsets.drop_partition(partition);
        // Transactional batches in flight are the next load's to read from the log.
        self.drop_in_flight_txn_commits(partition);
        let consumer: Vec<String> = self
            .consumer_groups
            .values()
            .filter(|g| g.partition == partition)
            .map(|g| g.group_id.clone())
            .collect();
        for id in consumer {
            self.remove_consumer_group(&id);
        }
        let ids: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.partition == partition)
            .map(|g| g.group_id.clone())
            .collect();
        for id in ids {
            let Some(mut group) = self.take_group(&id) else {
                continue;
            };
            let members: Vec<String> = group.members.keys().cloned().collect();
            for member_id in members {
                self.fail_member_requests(&mut group, &member_id, GroupError::NotCoordinator);
            }
            group.transition(GroupState::Dead, 0);
            self.put_group(group);
        }
    }

    /// True while `partition` is loaded and served.
    pub(super) fn is_active(&self, partition: i32) -> bool {
        matches!(
            self.partitions.get(&partition),
            Some(PartitionStatus::Active)
        )
    }

    /// Markers waiting for `partition`'s load to finish; None unless it is loading.
    pub(super) fn deferred_markers_mut(&mut self, partition: i32) -> Option<&mut Vec<(i64, bool)>> {
        match self.partitions.get_mut(&partition) {
            Some(PartitionStatus::Loading(buffer)) => Some(&mut buffer.deferred_markers),
            _ => None,
        }
    }

    /// Marks the in-flight transactional batches of `producer_id` on `partition` as ended by
    /// a marker (`commit`); true when there were any.
    pub(super) fn end_in_flight_txn_commits(
        &mut self,
        partition: i32,
        producer_id: i64,
        commit: bool,
    ) -> bool {
        let partitions = self.config.offsets_topic_partitions;
        let mut found = false;
        for pending in self.pending_appends.values_mut() {
            if let PendingAppend::TxnCommit {
                group_id,
                producer_id: id,
                ended,
                ..
            } = pending
                && *id == producer_id
                && records::partition_for_group(group_id, partitions) == partition
            {
                *ended = Some(commit);
                found = true;
            }
        }
        found
    }

    /// In-flight transactional batches of `partition` will not become pending here when
    /// acknowledged (as if aborted): the partition was given up, and a new load reads them
    /// from the log.
    fn drop_in_flight_txn_commits(&mut self, partition: i32) {
        let partitions = self.config.offsets_topic_partitions;
        for pending in self.pending_appends.values_mut() {
            if let PendingAppend::TxnCommit {
                group_id, ended, ..
            } = pending
                && records::partition_for_group(group_id, partitions) == partition
            {
                *ended = Some(false);
            }
        }
    }

    /// The next record's place in the log (see [`LogOrder`]).
    pub(super) fn next_log_order(&mut self) -> LogOrder {
        self.log_order += 1;
        LogOrder(self.log_order)
    }

    pub fn is_loading(&self, partition: i32) -> bool {
        matches!(
            self.partitions.get(&partition),
            Some(PartitionStatus::Loading(_))
        )
    }

    // ---- appends -------------------------------------------------------------------------

    /// Reports the outcome of an [`Output::Append`].
    pub fn append_complete(&mut self, now_ms: i64, token: AppendToken, outcome: AppendOutcome) {
        let Some(pending) = self.pending_appends.remove(&token) else {
            panic!("append_complete for unknown token {token:?}");
        };
        let error = match outcome {
            AppendOutcome::Ok => None,
            AppendOutcome::NotLeader => Some(GroupError::NotCoordinator),
            AppendOutcome::Failed => Some(GroupError::CoordinatorNotAvailable),
            AppendOutcome::InvalidProducerEpoch => Some(GroupError::InvalidProducerEpoch),
        };
        match pending {
            PendingAppend::Commit {
                request,
                group_id,
                offsets,
                reply,
            } => self.commit_appended(request, &group_id, offsets, reply, error),
            PendingAppend::TxnCommit {
                request,
                group_id,
                producer_id,
                offsets,
                reply,
                ended,
            } => {
                let commit = TxnCommitAppended {
                    request,
                    group_id: &group_id,
                    producer_id,
                    ended,
                };
                self.txn_commit_appended(now_ms, commit, offsets, reply, error)
            }
            PendingAppend::Sync {
                group_id,
                generation_id,
                assignment,
            } => self.sync_appended(now_ms, &group_id, generation_id, assignment, error),
            PendingAppend::StaticRejoin {
                group_id,
                member_id,
                request,
                result,
            } => self.static_rejoin_appended(&group_id, &member_id, request, result, error),
            PendingAppend::Reply { request, ok } => {
                let reply = match error {
                    None => ok,
                    Some(e) => failed_reply(ok, e),
                };
                self.reply(request, reply);
            }
            PendingAppend::Background => {
                if let Some(error) = error {
                    tracing::warn!(target: "group", %error, "offsets topic append failed");
                }
            }
        }
        self.tick(now_ms);
    }

    pub(super) fn append(
        &mut self,
        partition: i32,
        records: &[(Bytes, Option<Bytes>)],
        now_ms: i64,
        pending: PendingAppend,
    ) {
        self.append_as(partition, records, now_ms, pending, None);
    }

    /// Appends `records`, as `producer`'s transactional batch when given (TxnOffsetCommit).
    pub(super) fn append_as(
        &mut self,
        partition: i32,
        records: &[(Bytes, Option<Bytes>)],
        now_ms: i64,
        pending: PendingAppend,
        producer: Option<TxnProducer>,
    ) {
        let token = AppendToken(self.next_append_token);
        self.next_append_token += 1;
        let batches = match producer {
            Some(producer) => records::encode_txn_batches(records, now_ms, producer),
            None => records::encode_batches(records, now_ms),
        };
        self.pending_appends.insert(token, pending);
        self.outputs.push(Output::Append {
            partition,
            token,
            batches,
        });
    }

    /// The group metadata record for `group` with `assignment` (Kafka's `storeGroup`).
    pub(super) fn group_record(
        group: &ClassicGroup,
        assignment: &BTreeMap<String, Bytes>,
    ) -> (Bytes, Option<Bytes>) {
        let protocol = group.protocol_name.as_deref();
        let members = group
            .members
            .values()
            .map(|m| records::MemberMetadataValue {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: protocol
                    .and_then(|p| m.metadata(p))
                    .cloned()
                    .unwrap_or_default(),
                assignment: assignment.get(&m.member_id).cloned().unwrap_or_default(),
            })
            .collect();
        let value = records::GroupMetadataValue {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation: group.generation_id,
            protocol: group.protocol_name.clone(),
            leader: group.leader_id.clone(),
            current_state_timestamp_ms: group.state_timestamp_ms.unwrap_or(-1),
            members,
        };
        (
            records::encode_group_key(&group.group_id),
            Some(records::encode_group_value(&value)),
        )
    }

    // ---- shared helpers ------------------------------------------------------------------

    pub(super) fn reply(&mut self, request: RequestId, reply: Reply) {
        self.outputs.push(Output::Reply { request, reply });
    }

    /// Checks that this coordinator serves `group_id` now (Kafka's `validateGroupStatus`).
    pub(super) fn check_group_status(
        &self,
        group_id: &str,
        allow_empty_id: bool,
    ) -> Result<i32, GroupError> {
        if (group_id.is_empty() && !allow_empty_id) || group_id.len() > records::STRING_BYTES_MAX {
            return Err(GroupError::InvalidGroupId);
        }
        let partition = self.partition_for(group_id);
        match self.partitions.get(&partition) {
            None => Err(GroupError::NotCoordinator),
            Some(PartitionStatus::Loading(_)) => Err(GroupError::CoordinatorLoadInProgress),
            Some(PartitionStatus::Active) => Ok(partition),
        }
    }

    /// Creates an empty group when there is room.
    pub(super) fn create_group(
        &mut self,
        group_id: &str,
        partition: i32,
        now_ms: i64,
    ) -> Result<ClassicGroup, GroupError> {
        if self.groups.len() + self.consumer_groups.len() >= GROUPS_PER_SHARD_MAX {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        Ok(ClassicGroup::new(group_id.to_owned(), partition, now_ms))
    }

    /// Removes a group from the table for the duration of an operation; pair with
    /// [`Self::put_group`].
    pub(super) fn take_group(&mut self, group_id: &str) -> Option<ClassicGroup> {
        self.groups.remove(group_id)
    }

    /// Returns a group to the table (or drops it when Dead) and refiles its timer.
    pub(super) fn put_group(&mut self, mut group: ClassicGroup) {
        let deadline = if group.is(GroupState::Dead) {
            None
        } else {
            group.next_deadline()
        };
        if group.timer_key != deadline {
            if let Some(old) = group.timer_key {
                self.timers.remove(&(old, group.group_id.clone()));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, group.group_id.clone()));
            }
            group.timer_key = deadline;
        }
        if !group.is(GroupState::Dead) {
            self.groups.insert(group.group_id.clone(), group);
        }
    }

    /// Returns a group whose deadlines can only have moved later (a heartbeat): its timer entry
    /// stays and may fire early, when the expiry pass rescans the members and refiles it. This
    /// keeps heartbeats O(log groups) rather than O(members). Invariant: a group's timer key
    /// is never later than its earliest deadline.
    pub(super) fn put_group_deadlines_later(&mut self, group: ClassicGroup) {
        if group.timer_key.is_none() {
            return self.put_group(group);
        }
        self.groups.insert(group.group_id.clone(), group);
    }

    /// `client_id` + "-" + a UUID-shaped id, as Kafka's member ids look. The client id part is
    /// cut to `MEMBER_ID_CLIENT_ID_BYTES_MAX` so a member id always fits the record format's
    /// i16-length strings (a client id may be 32767 bytes).
    pub(super) fn new_member_id(&mut self, client_id: &str) -> String {
        let mut cut = client_id.len().min(MEMBER_ID_CLIENT_ID_BYTES_MAX);
        while !client_id.is_char_boundary(cut) {
            cut -= 1;
        }
        let client_id = &client_id[..cut];
        let hi = self.next_random();
        let lo = self.next_random();
        let dash = if client_id.is_empty() { "" } else { "-" };
        format!(
            "{client_id}{dash}{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    /// splitmix64: uniqueness for member ids, not secrecy.
    fn next_random(&mut self) -> u64 {
        self.member_id_state = self.member_id_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.member_id_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    // ---- admin views ---------------------------------------------------------------------

    pub fn describe_group(&mut self, now_ms: i64, request: RequestId, group_id: &str) {
        let result = match self.check_group_status(group_id, true) {
            Err(error) => DescribeResult {
                error: Some(error),
                exists: false,
                state: GroupState::Dead.as_str(),
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: vec![],
            },
            Ok(_) => match self.groups.get(group_id) {
                _ if self.consumer_groups.contains_key(group_id) => {
                    describe_consumer_group(&self.consumer_groups[group_id])
                }
                None => DescribeResult {
                    error: None,
                    exists: false,
                    state: GroupState::Dead.as_str(),
                    protocol_type: String::new(),
                    protocol_data: String::new(),
                    members: vec![],
                },
                Some(group) => describe(group),
            },
        };
        self.reply(request, Reply::Describe(result));
        self.tick(now_ms);
    }

    pub fn list_groups(&mut self, now_ms: i64, request: RequestId, filter: &ListGroups) {
        let wanted = |state: &str| {
            filter.states_filter.is_empty()
                || filter
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(state))
        };
        let typed = |kind: &str| {
            filter.types_filter.is_empty()
                || filter
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(kind))
        };
        let loading = self
            .partitions
            .values()
            .any(|p| matches!(p, PartitionStatus::Loading(_)));
        let mut groups: Vec<ListedGroup> = self
            .groups
            .values()
            .filter(|g| !self.consumer_groups.contains_key(&g.group_id))
            .filter(|g| typed("classic") && wanted(g.state.as_str()))
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.as_str(),
                group_type: "classic",
            })
            .collect();
        groups.extend(
            self.consumer_groups
                .values()
                .filter(|g| typed("consumer") && wanted(g.state().as_str()))
                .map(|g| ListedGroup {
                    group_id: g.group_id.clone(),
                    protocol_type: super::classic::CONSUMER_PROTOCOL_TYPE.to_string(),
                    state: g.state().as_str(),
                    group_type: "consumer",
                }),
        );
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        let error = loading.then_some(GroupError::CoordinatorLoadInProgress);
        self.reply(request, Reply::List(ListResult { error, groups }));
        self.tick(now_ms);
    }

    /// DeleteGroups for one group: only an Empty group can go (NON_EMPTY_GROUP otherwise);
    /// its metadata and offsets are tombstoned and the reply waits for that append.
    pub fn delete_group(&mut self, now_ms: i64, request: RequestId, group_id: &str) {
        let partition = match self.check_group_status(group_id, true) {
            Ok(p) => p,
            Err(error) => return self.reply(request, Reply::DeleteGroup(Some(error))),
        };
        if self.is_live_consumer_group(group_id) {
            return self.reply(request, Reply::DeleteGroup(Some(GroupError::NonEmptyGroup)));
        }
        let was_consumer_group = self.consumer_groups.contains_key(group_id);
        if was_consumer_group {
            self.delete_consumer_group(now_ms, group_id);
        }
        let Some(mut group) = self.take_group(group_id) else {
            let error = (!was_consumer_group).then_some(GroupError::GroupIdNotFound);
            return self.reply(request, Reply::DeleteGroup(error));
        };
        if !group.is(GroupState::Empty) {
            self.put_group(group);
            return self.reply(request, Reply::DeleteGroup(Some(GroupError::NonEmptyGroup)));
        }
        group.transition(GroupState::Dead, now_ms);
        // Pending transactional offsets go too: a tombstone for each partition not
        // committed already (Kafka's `deleteAllOffsets`); their transactions stay open.
        let mut doomed: BTreeSet<(String, i32)> = group.offsets.keys().cloned().collect();
        for tp in self.txn_offsets.pending_partitions(group_id) {
            self.txn_offsets.remove_offset(group_id, &tp);
            doomed.insert(tp);
        }
        let tombstones = tombstones_for(&group, doomed.into_iter().collect());
        self.put_group(group);
        let pending = PendingAppend::Reply {
            request,
            ok: Reply::DeleteGroup(None),
        };
        self.append(partition, &tombstones, now_ms, pending);
        self.tick(now_ms);
    }

    /// Answers a member's waiting JoinGroup/SyncGroup with `error`.
    pub(super) fn fail_member_requests(
        &mut self,
        group: &mut ClassicGroup,
        member_id: &str,
        error: GroupError,
    ) {
        let Some(member) = group.members.get_mut(member_id) else {
            return;
        };
        let join = member.awaiting_join.take();
        let sync = member.awaiting_sync.take();
        if let Some(request) = join {
            self.reply(request, Reply::Join(join_error(member_id, error)));
        }
        if let Some(request) = sync {
            self.reply(request, Reply::Sync(sync_error(error)));
        }
    }
}

/// Longest client-id prefix of a generated member id.
pub const MEMBER_ID_CLIENT_ID_BYTES_MAX: usize = 255;

/// Tombstones for the group's metadata and for the given offsets.
pub(super) fn tombstones_for(
    group: &ClassicGroup,
    offsets: Vec<(String, i32)>,
) -> Vec<(Bytes, Option<Bytes>)> {
    let mut out: Vec<(Bytes, Option<Bytes>)> = offsets
        .iter()
        .map(|(topic, partition)| {
            (
                records::encode_offset_key(&group.group_id, topic, *partition),
                None,
            )
        })
        .collect();
    out.push((records::encode_group_key(&group.group_id), None));
    out
}

/// The reply for a request whose append failed with `error`.
fn failed_reply(ok: Reply, error: GroupError) -> Reply {
    match ok {
        Reply::DeleteGroup(_) => Reply::DeleteGroup(Some(error)),
        Reply::OffsetDelete(mut result) => {
            for topic in &mut result.topics {
                for (_, e) in &mut topic.partitions {
                    e.get_or_insert(error);
                }
            }
            Reply::OffsetDelete(result)
        }
        other => panic!("no failure form for {other:?}"),
    }
}

pub fn join_error(member_id: &str, error: GroupError) -> JoinResult {
    JoinResult {
        error: Some(error),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id: member_id.to_owned(),
        members: vec![],
    }
}

pub fn sync_error(error: GroupError) -> SyncResult {
    SyncResult {
        error: Some(error),
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

/// A KIP-848 group seen through the classic DescribeGroups API (no protocol metadata).
fn describe_consumer_group(group: &ConsumerGroup) -> DescribeResult {
    DescribeResult {
        error: None,
        exists: true,
        state: group.state().as_str(),
        protocol_type: super::classic::CONSUMER_PROTOCOL_TYPE.to_string(),
        protocol_data: String::new(),
        members: group
            .members
            .values()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: Bytes::new(),
                assignment: Bytes::new(),
            })
            .collect(),
    }
}

fn describe(group: &ClassicGroup) -> DescribeResult {
    let stable = group.is(GroupState::Stable);
    let protocol = if stable {
        group.protocol_name.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let members = group
        .members
        .values()
        .map(|m| DescribedMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            metadata: if stable {
                m.metadata(&protocol).cloned().unwrap_or_default()
            } else {
                Bytes::new()
            },
            assignment: if stable {
                m.assignment.clone()
            } else {
                Bytes::new()
            },
        })
        .collect();
    DescribeResult {
        error: None,
        exists: true,
        state: group.state.as_str(),
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol_data: protocol,
        members,
    }
}

impl LoadBuffer {
    /// Replays one record of offsets partition `offsets_partition`, written by `producer_id`'s
    /// transaction unless that is `NO_PRODUCER_ID` (Kafka's `OffsetMetadataManager.replay`).
    fn apply(
        &mut self,
        record: OffsetsRecord,
        offsets_partition: i32,
        producer_id: i64,
        log_order: LogOrder,
    ) {
        match record {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                let tp = (topic, partition);
                match value {
                    Some(value) if producer_id != records::NO_PRODUCER_ID => {
                        let offset = CommittedOffset { value, log_order };
                        self.txn
                            .add(offsets_partition, producer_id, &group, tp, offset);
                        self.groups.entry(group).or_default().simple = true;
                    }
                    Some(value) => {
                        let entry = self.groups.entry(group).or_default();
                        entry
                            .offsets
                            .insert(tp, CommittedOffset { value, log_order });
                    }
                    None => {
                        self.txn.remove_offset(&group, &tp);
                        self.groups.entry(group).or_default().offsets.remove(&tp);
                    }
                }
            }
            OffsetsRecord::Group { group, value } => {
                let entry = self.groups.entry(group).or_default();
                entry.simple &= value.is_some();
                entry.metadata = value;
            }
            OffsetsRecord::Consumer(record) => self.apply_consumer(record),
        }
    }

    /// A replayed COMMIT or ABORT marker of `producer_id`.
    fn end_transaction(&mut self, offsets_partition: i32, producer_id: i64, commit: bool) {
        let Some(groups) = self.txn.take(offsets_partition, producer_id) else {
            return;
        };
        if !commit {
            return;
        }
        for (group_id, offsets) in groups {
            if offsets.is_empty() {
                continue;
            }
            let group = self.groups.entry(group_id).or_default();
            for (tp, offset) in offsets {
                materialize_offset(&mut group.offsets, tp, offset);
            }
        }
    }

    fn apply_consumer(&mut self, record: super::consumer_records::ConsumerRecord) {
        use super::consumer_records::ConsumerRecord as R;
        match record {
            R::GroupEpoch { group, epoch } => {
                self.consumer_groups.entry(group).or_default().group_epoch = epoch
            }
            R::TargetEpoch { group, epoch } => {
                self.consumer_groups.entry(group).or_default().target_epoch = epoch
            }
            R::PartitionMetadata { .. } => {}
            R::MemberMetadata {
                group,
                member: m,
                value,
            } => member_entry(self.consumer_groups.entry(group).or_default(), m).metadata = value,
            R::TargetMember {
                group,
                member: m,
                value,
            } => member_entry(self.consumer_groups.entry(group).or_default(), m).target = value,
            R::CurrentAssignment {
                group,
                member: m,
                value,
            } => member_entry(self.consumer_groups.entry(group).or_default(), m).current = value,
        }
    }
}

fn member_entry(group: &mut LoadedConsumerGroup, member: String) -> &mut LoadedConsumerMember {
    group.members.entry(member).or_default()
}

impl LoadedGroup {
    /// Kafka's `loadGroup`: members come back Stable with fresh session deadlines.
    fn into_group(self, group_id: String, partition: i32, now_ms: i64) -> Option<ClassicGroup> {
        if self.metadata.is_none() && self.offsets.is_empty() && !self.simple {
            return None;
        }
        let mut group = ClassicGroup::new(group_id, partition, now_ms);
        group.offsets = self.offsets;
        let Some(meta) = self.metadata else {
            return Some(group);
        };
        group.generation_id = meta.generation;
        group.protocol_type = (!meta.protocol_type.is_empty()).then_some(meta.protocol_type);
        group.protocol_name = meta.protocol.clone();
        group.leader_id = meta.leader;
        group.state_timestamp_ms =
            (meta.current_state_timestamp_ms >= 0).then_some(meta.current_state_timestamp_ms);
        for m in meta
            .members
            .into_iter()
            .take(super::limits::MEMBERS_PER_GROUP_MAX)
        {
            let protocols = match &meta.protocol {
                Some(name) => vec![Protocol {
                    name: name.clone(),
                    metadata: m.subscription,
                }],
                None => vec![],
            };
            group.add_member(super::classic::Member {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                protocols,
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                heartbeat_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
            });
        }
        if group
            .leader_id
            .as_ref()
            .is_some_and(|l| !group.members.contains_key(l))
        {
            group.leader_id = group.members.keys().next().cloned();
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group.subscribed_topics = group.compute_subscribed_topics();
        Some(group)
    }
}
