//! One replica of one partition: leader or follower, as a sans-IO state machine.
//!
//! Owns: the high watermark, leader epochs, follower progress, ISR change proposals, acks=all
//! completion, and follower truncation (KIP-101/279) and fetching. The log itself is outside:
//! the replica keeps the facts it needs (log end offset, durable offset, epoch cache) and
//! asks the driver to append, truncate, sync and read through `Action`s, which the driver
//! applies in order before the next input.
//! Does not own: elections and ISR commits (the controller), registration (the node).
//! Invariants:
//! - Two watermarks on a leader (Kafka's observable contract, Sluice's durability):
//!   the **high watermark** (what consumers, ListOffsets and followers are told) is the
//!   minimum over the maximal ISR of the leader's *log end offset* and each other member's
//!   fetch offset; the **durable watermark** (`durable_watermark`, what acks=all waits for)
//!   is the same minimum with the leader's *durable offset* in place of its log end (under
//!   `Durability::Fsync`; under `PageCache` the two are equal). So acks=1 data is visible
//!   as soon as every other ISR member has it, as in Kafka (with the ISR the leader alone:
//!   at once), and acks=all is still answered only after every ISR member synced it.
//! - `high_watermark <= log end offset` of this replica, and never decreases except when an
//!   unclean election makes a follower truncate below it, or when a leader alone in the
//!   ISR loses its unsynced tail (power loss) and is elected again.
//! - A leader counts a member in the high watermark from the moment it proposes adding it
//!   until a newer partition state says otherwise ("maximal ISR", KIP-497); a removal counts
//!   only once the controller has committed it. So the committed ISR is always a subset of the
//!   set the high watermark waits for.
//! - Under `Durability::Fsync` a follower fetches offset N only after offsets below N are
//!   durable, so a fetch offset the leader sees is durable on that follower.
//! - A leader never truncates; a follower appends only batches that continue its log.

use std::collections::BTreeMap;

use crate::config::{Durability, ReplicaConfig};
use crate::epoch_cache::EpochCache;
use crate::message::{Action, EpochEndOffset, FetchData, Message};
use crate::types::{
    Acks, Address, Batch, BrokerEpoch, LeaderEpoch, NodeId, PartitionId, PartitionState,
    ReplicaError,
};

/// The log facts a replica starts from after the node (re)starts. Everything recovered is
/// durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredLog {
    pub log_end_offset: i64,
    /// The checkpointed high watermark (may lag; clamped to the log end offset).
    pub high_watermark: i64,
    pub epochs: EpochCache,
}

/// What every input needs besides the message: the time and the node's registration.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub now_ms: i64,
    pub broker_epoch: Option<BrokerEpoch>,
}

/// A produce addressed to this replica's partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceRequest<P> {
    pub client: Address,
    pub request_id: u64,
    pub acks: Acks,
    pub record_count: u32,
    pub payload: P,
}

/// A fetch addressed to this replica's partition: from a follower (`replica` set) or a
/// consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub from: Address,
    pub request_id: u64,
    pub replica: Option<NodeId>,
    pub current_leader_epoch: LeaderEpoch,
    pub fetch_offset: i64,
}

/// What a consumer may read (`Replica::consumer_read`): batches with offsets in
/// `[from_offset, max_offset)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRange {
    pub from_offset: i64,
    /// The high watermark: consumers never see uncommitted offsets.
    pub max_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

/// The replica's role as seen from outside (tests, metrics, Metadata answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Offline,
    Leader {
        leader_epoch: LeaderEpoch,
    },
    Follower {
        leader: NodeId,
        leader_epoch: LeaderEpoch,
    },
}

pub struct Replica {
    node: NodeId,
    partition: PartitionId,
    config: ReplicaConfig,
    log_end_offset: i64,
    durable_offset: i64,
    durable_requested: i64,
    high_watermark: i64,
    epochs: EpochCache,
    state: Option<PartitionState>,
    role: RoleState,
    next_request_id: u64,
}

enum RoleState {
    Offline,
    Leader(LeaderState),
    Follower(FollowerState),
}

struct LeaderState {
    leader_epoch: LeaderEpoch,
    /// The log end offset when this epoch began. Consumers get OFFSET_NOT_AVAILABLE until the
    /// high watermark reaches it, which keeps the high watermark they see monotonic across
    /// leader changes.
    epoch_start_offset: i64,
    followers: BTreeMap<NodeId, Progress>,
    alter: Option<PendingAlter>,
    next_proposal: u64,
    /// No new AlterPartition before this time: the controller refused the last one, and
    /// proposing again on every follower fetch would flood it (and the metadata log).
    alter_backoff_until_ms: i64,
    /// acks=all produces waiting for the high watermark, in offset order.
    produces: Vec<PendingProduce>,
}

struct Progress {
    /// The follower's last fetch offset in this epoch (its log end offset; durable under
    /// `Durability::Fsync`). `None` until it fetches.
    fetch_offset: Option<i64>,
    last_caught_up_ms: i64,
    last_fetch_leader_end_offset: i64,
    last_fetch_ms: i64,
}

struct PendingAlter {
    new_isr: Vec<NodeId>,
    proposal: u64,
    sent_at_ms: i64,
    /// The controller has a newer partition state than ours: stop resending and wait for it,
    /// still counting the proposed members in the high watermark.
    awaiting_state: bool,
}

struct PendingProduce {
    client: Address,
    request_id: u64,
    base_offset: i64,
    last_offset: i64,
    deadline_ms: i64,
}

struct FollowerState {
    leader: NodeId,
    leader_epoch: LeaderEpoch,
    phase: Phase,
    in_flight: Option<(u64, i64)>,
    next_send_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Asking the leader where our log diverges (OffsetForLeaderEpoch).
    Truncating,
    Fetching,
}

impl Replica {
    /// `request_id_base` keeps request ids of different process incarnations apart.
    pub fn new(
        node: NodeId,
        partition: PartitionId,
        config: ReplicaConfig,
        recovered: RecoveredLog,
        request_id_base: u64,
    ) -> Replica {
        // An empty epoch cache with a log end above 0 is legal: a log whose records were all
        // deleted (DeleteRecords to the end, retention) or truncated away, with no epoch
        // checkpointed. A leader assigns its epoch at the log end when it takes over; a
        // follower without epochs has no batch that could diverge and fetches from its end.
        assert!(recovered.log_end_offset >= 0);
        Replica {
            node,
            partition,
            config,
            log_end_offset: recovered.log_end_offset,
            durable_offset: recovered.log_end_offset,
            durable_requested: recovered.log_end_offset,
            high_watermark: recovered.high_watermark.clamp(0, recovered.log_end_offset),
            epochs: recovered.epochs,
            state: None,
            role: RoleState::Offline,
            next_request_id: request_id_base,
        }
    }

    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    pub fn role(&self) -> Role {
        match &self.role {
            RoleState::Offline => Role::Offline,
            RoleState::Leader(l) => Role::Leader {
                leader_epoch: l.leader_epoch,
            },
            RoleState::Follower(f) => Role::Follower {
                leader: f.leader,
                leader_epoch: f.leader_epoch,
            },
        }
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }

    /// The consumer-visible high watermark (Fetch, ListOffsets latest, DeleteRecords
    /// bounds, the watermark followers learn).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// A leader's durable watermark: every offset below it is durable on every member of the
    /// maximal ISR, this leader included (`None` when not leading, or while a member has not
    /// fetched in this epoch). acks=all is answered once it passes the batch. Computed afresh
    /// from this epoch's fetches, never carried over from an earlier leadership.
    pub fn durable_watermark(&self) -> Option<i64> {
        self.watermarks().map(|(_, durable)| durable)
    }

    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    /// A live change of the topic's min.insync.replicas (AlterConfigs); it applies from the
    /// next check on (new acks=all produces, and ISR changes for the waiting ones).
    pub fn set_min_insync_replicas(&mut self, min_insync_replicas: usize) {
        assert!(min_insync_replicas >= 1);
        self.config.min_insync_replicas = min_insync_replicas;
    }

    /// The latest partition state applied.
    pub fn state(&self) -> Option<&PartitionState> {
        self.state.as_ref()
    }

    /// The ISR the high watermark waits for: the committed ISR plus members being added.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut isr = self
            .state
            .as_ref()
            .map(|s| s.isr.clone())
            .unwrap_or_default();
        if let RoleState::Leader(LeaderState {
            alter: Some(alter), ..
        }) = &self.role
        {
            isr.extend(alter.new_isr.iter().copied());
            isr.sort();
            isr.dedup();
        }
        isr
    }

    /// A partition state from the controller (push, heartbeat or AlterPartition answer).
    /// Older or equal partition epochs are ignored.
    pub fn on_partition_state<P: Clone>(
        &mut self,
        ctx: Ctx,
        state: PartitionState,
        out: &mut Vec<Action<P>>,
    ) {
        assert_eq!(state.partition, self.partition);
        if self
            .state
            .as_ref()
            .is_some_and(|s| state.partition_epoch <= s.partition_epoch)
        {
            return;
        }
        let leader = state.leader;
        let leader_epoch = state.leader_epoch;
        self.state = Some(state);
        match leader {
            Some(leader) if leader == self.node => match &mut self.role {
                RoleState::Leader(l) if l.leader_epoch == leader_epoch => {
                    // An ISR change committed: proposals against older partition epochs can
                    // no longer be applied, so the maximal ISR is the committed one again.
                    l.alter = None;
                    if self.isr_len() < self.config.min_insync_replicas {
                        self.fail_produces(ReplicaError::NotEnoughReplicasAfterAppend, out);
                    }
                    self.maybe_advance_high_watermark(out);
                    self.maybe_expand_isr(ctx, out);
                }
                _ => self.become_leader(ctx, leader_epoch, out),
            },
            Some(leader) => match &self.role {
                RoleState::Follower(f) if f.leader_epoch == leader_epoch && f.leader == leader => {}
                _ => self.become_follower(ctx, leader, leader_epoch, out),
            },
            None => {
                self.fail_produces(ReplicaError::NotLeaderOrFollower, out);
                self.role = RoleState::Offline;
            }
        }
    }

    /// A client's produce.
    pub fn on_produce<P: Clone>(
        &mut self,
        ctx: Ctx,
        request: ProduceRequest<P>,
        out: &mut Vec<Action<P>>,
    ) {
        let ProduceRequest {
            client,
            request_id,
            acks,
            record_count,
            payload,
        } = request;
        let partition = self.partition;
        let respond = |result, out: &mut Vec<Action<P>>| {
            out.push(Action::Send {
                to: client,
                message: Message::ProduceResponse {
                    request_id,
                    partition,
                    result,
                },
            });
        };
        let RoleState::Leader(l) = &mut self.role else {
            return respond(Err(ReplicaError::NotLeaderOrFollower), out);
        };
        if record_count == 0 {
            return respond(Err(ReplicaError::InvalidRequest), out);
        }
        let isr_len = self.state.as_ref().map_or(0, |s| s.isr.len());
        if acks == Acks::All && isr_len < self.config.min_insync_replicas {
            return respond(Err(ReplicaError::NotEnoughReplicas), out);
        }
        let batch = Batch {
            base_offset: self.log_end_offset,
            record_count,
            leader_epoch: l.leader_epoch,
            payload,
        };
        let (base_offset, last_offset) = (batch.base_offset, batch.last_offset());
        self.log_end_offset = batch.next_offset();
        out.push(Action::Append { partition, batch });
        if acks == Acks::All {
            l.produces.push(PendingProduce {
                client,
                request_id,
                base_offset,
                last_offset,
                deadline_ms: ctx.now_ms + self.config.produce_timeout_ms,
            });
        }
        self.request_durable(out);
        self.maybe_advance_high_watermark(out);
        // acks=1 is answered after the high watermark moved (Kafka's appendRecordsToLeader
        // then maybeIncrementLeaderHW): the driver applies `SetHighWatermark` before this
        // `Send`, so a ListOffsets or Fetch issued after the answer sees the batch.
        if acks == Acks::Leader {
            respond(Ok(base_offset), out);
        }
    }

    /// A fetch from a follower (`replica` set) or a consumer.
    pub fn on_fetch<P: Clone>(
        &mut self,
        ctx: Ctx,
        request: FetchRequest,
        out: &mut Vec<Action<P>>,
    ) {
        let FetchRequest {
            from,
            request_id,
            replica,
            current_leader_epoch,
            fetch_offset,
        } = request;
        let partition = self.partition;
        let fail = |error, out: &mut Vec<Action<P>>| {
            out.push(Action::Send {
                to: from,
                message: Message::FetchResponse {
                    request_id,
                    partition,
                    result: Err(error),
                },
            });
        };
        let Some(follower) = replica else {
            return match self.consumer_read(current_leader_epoch, fetch_offset) {
                Ok(range) => out.push(Action::SendFetchResponse {
                    to: from,
                    request_id,
                    partition,
                    from_offset: range.from_offset,
                    max_offset: range.max_offset,
                    high_watermark: range.high_watermark,
                    log_end_offset: range.log_end_offset,
                }),
                Err(error) => fail(error, out),
            };
        };
        if let Err(error) = self.check_leader_epoch(current_leader_epoch) {
            return fail(error, out);
        }
        if fetch_offset < 0 || fetch_offset > self.log_end_offset {
            return fail(ReplicaError::OffsetOutOfRange, out);
        }
        let log_end_offset = self.log_end_offset;
        let RoleState::Leader(l) = &mut self.role else {
            unreachable!("checked above")
        };
        let Some(progress) = l.followers.get_mut(&follower) else {
            return fail(ReplicaError::NotLeaderOrFollower, out);
        };
        progress.record_fetch(ctx.now_ms, fetch_offset, log_end_offset);
        self.maybe_expand_isr(ctx, out);
        self.maybe_advance_high_watermark(out);
        let max_offset = self.log_end_offset;
        out.push(Action::SendFetchResponse {
            to: from,
            request_id,
            partition,
            from_offset: fetch_offset,
            max_offset,
            high_watermark: self.high_watermark,
            log_end_offset: self.log_end_offset,
        });
    }

    /// The leader's answer to this follower's fetch.
    pub fn on_fetch_response<P: Clone>(
        &mut self,
        ctx: Ctx,
        request_id: u64,
        result: Result<FetchData<P>, ReplicaError>,
        out: &mut Vec<Action<P>>,
    ) {
        let backoff_ms = self.config.fetch_backoff_ms;
        let Some(f) = self.expect_response(request_id, Phase::Fetching) else {
            return;
        };
        let data = match result {
            Ok(data) => data,
            Err(error) => {
                if error == ReplicaError::OffsetOutOfRange {
                    f.phase = Phase::Truncating;
                }
                f.next_send_ms = ctx.now_ms + backoff_ms;
                return;
            }
        };
        let leader_epoch = f.leader_epoch;
        // Epochs this replica led without writing anything end at the log end offset.
        self.epochs.truncate_from(self.log_end_offset);
        if let Err(phase) = self.check_continues_log(&data.batches, leader_epoch) {
            let RoleState::Follower(f) = &mut self.role else {
                unreachable!()
            };
            f.phase = phase;
            f.next_send_ms = ctx.now_ms + self.config.fetch_backoff_ms;
            return;
        }
        for batch in &data.batches {
            self.epochs.assign(batch.leader_epoch, batch.base_offset);
            self.log_end_offset = batch.next_offset();
        }
        let appended = !data.batches.is_empty();
        if appended {
            out.push(Action::AppendReplicated {
                partition: self.partition,
                batches: data.batches,
            });
            self.request_durable(out);
        }
        let high_watermark = data.high_watermark.min(self.log_end_offset);
        if high_watermark > self.high_watermark {
            self.high_watermark = high_watermark;
            out.push(Action::SetHighWatermark {
                partition: self.partition,
                high_watermark,
            });
        }
        let RoleState::Follower(f) = &mut self.role else {
            unreachable!()
        };
        f.next_send_ms = if appended {
            ctx.now_ms
        } else {
            ctx.now_ms + self.config.empty_fetch_backoff_ms
        };
        self.poll_follower(ctx, out);
    }

    /// A consumer's read: the offsets it may read from `fetch_offset` (up to the high
    /// watermark), with Kafka's checks (leader only, the requested epoch, the offset in the
    /// log, OFFSET_NOT_AVAILABLE while a new leader's high watermark is below its epoch's
    /// start). A query: a consumer's fetch changes no replication state, so it needs no
    /// `Ctx` and emits no actions.
    pub fn consumer_read(
        &self,
        current_leader_epoch: LeaderEpoch,
        fetch_offset: i64,
    ) -> Result<ReadRange, ReplicaError> {
        self.check_leader_epoch(current_leader_epoch)?;
        if fetch_offset < 0 || fetch_offset > self.log_end_offset {
            return Err(ReplicaError::OffsetOutOfRange);
        }
        let RoleState::Leader(l) = &self.role else {
            unreachable!("checked above")
        };
        if self.high_watermark < l.epoch_start_offset {
            return Err(ReplicaError::OffsetNotAvailable);
        }
        Ok(ReadRange {
            from_offset: fetch_offset,
            max_offset: self.high_watermark,
            high_watermark: self.high_watermark,
            log_end_offset: self.log_end_offset,
        })
    }

    /// OffsetForLeaderEpoch (a follower's or a consumer's): where `leader_epoch` ends in this
    /// leader's log, after the check of `current_leader_epoch`. A query.
    pub fn epoch_end_offset(
        &self,
        current_leader_epoch: LeaderEpoch,
        leader_epoch: LeaderEpoch,
    ) -> Result<EpochEndOffset, ReplicaError> {
        self.check_leader_epoch(current_leader_epoch)?;
        let (leader_epoch, end_offset) = self
            .epochs
            .end_offset_for(leader_epoch, self.log_end_offset);
        Ok(EpochEndOffset {
            leader_epoch,
            end_offset,
        })
    }

    /// OffsetForLeaderEpoch from a follower (as a message; see `epoch_end_offset`).
    pub fn on_offset_for_leader_epoch<P: Clone>(
        &mut self,
        from: Address,
        request_id: u64,
        current_leader_epoch: LeaderEpoch,
        leader_epoch: LeaderEpoch,
        out: &mut Vec<Action<P>>,
    ) {
        let result = self.epoch_end_offset(current_leader_epoch, leader_epoch);
        out.push(Action::Send {
            to: from,
            message: Message::OffsetForLeaderEpochResponse {
                request_id,
                partition: self.partition,
                result,
            },
        });
    }

    /// The leader's answer to this follower's OffsetForLeaderEpoch (KIP-279 truncation).
    pub fn on_offset_for_leader_epoch_response<P: Clone>(
        &mut self,
        ctx: Ctx,
        request_id: u64,
        result: Result<EpochEndOffset, ReplicaError>,
        out: &mut Vec<Action<P>>,
    ) {
        let backoff_ms = self.config.fetch_backoff_ms;
        let Some(f) = self.expect_response(request_id, Phase::Truncating) else {
            return;
        };
        let (leader_epoch, end_offset) = match result {
            Ok(EpochEndOffset {
                leader_epoch: Some(epoch),
                end_offset,
            }) if end_offset >= 0 => (epoch, end_offset),
            // Undefined (or a nonsensical negative offset): ask again later.
            Ok(_) | Err(_) => {
                f.next_send_ms = ctx.now_ms + backoff_ms;
                return;
            }
        };
        let (target, done) = match self
            .epochs
            .floor_end_offset(leader_epoch, self.log_end_offset)
        {
            // Same epoch on both sides: the logs agree up to where the shorter one ends it.
            Some((epoch, own_end)) if epoch == leader_epoch => (end_offset.min(own_end), true),
            // Our nearest epoch is older than the leader's answer: everything after our end of
            // it is from epochs the leader does not have. Cut there and ask again.
            Some((_, own_end)) => (own_end, false),
            // All our epochs are newer than anything the leader has up to `end_offset`: none
            // of our batches can match. (Kafka keeps up to `end_offset` here, a leftover of
            // logs written before epochs existed; we have no such logs.)
            None => (
                end_offset.min(self.epochs.first_start_offset().unwrap_or(0)),
                true,
            ),
        };
        self.truncate(target, out);
        let RoleState::Follower(f) = &mut self.role else {
            unreachable!()
        };
        if done {
            f.phase = Phase::Fetching;
        }
        f.next_send_ms = ctx.now_ms;
        self.poll_follower(ctx, out);
    }

    /// The controller's answer to this leader's AlterPartition.
    /// Matched on (leader epoch, proposal): proposal numbers restart with every epoch we lead,
    /// and a late answer to an earlier epoch's proposal must not touch the current one.
    pub fn on_alter_partition_response<P: Clone>(
        &mut self,
        ctx: Ctx,
        leader_epoch: LeaderEpoch,
        proposal: u64,
        result: Result<PartitionState, ReplicaError>,
        out: &mut Vec<Action<P>>,
    ) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let Some(alter) = &mut l.alter else { return };
        if l.leader_epoch != leader_epoch || alter.proposal != proposal {
            return;
        }
        match result {
            Ok(state) => self.on_partition_state(ctx, state, out),
            // The controller holds a newer state (or leader); it reaches us by push or
            // heartbeat. Until then the proposed members stay counted.
            Err(
                ReplicaError::InvalidUpdateVersion
                | ReplicaError::FencedLeaderEpoch
                | ReplicaError::NotLeaderOrFollower
                | ReplicaError::StaleBrokerEpoch,
            ) => alter.awaiting_state = true,
            // Rejected against the state we know; no earlier proposal can be applied after
            // this answer (the controller orders proposals). Re-evaluate after a backoff; a
            // member refused as ineligible (fenced, e.g. dead or restarting) must fetch again
            // before it is proposed again.
            Err(error) => {
                if error == ReplicaError::IneligibleReplica
                    && let Some(state) = &self.state
                {
                    for added in alter.new_isr.iter().filter(|m| !state.isr.contains(m)) {
                        if let Some(p) = l.followers.get_mut(added) {
                            p.fetch_offset = None;
                        }
                    }
                }
                l.alter = None;
                l.alter_backoff_until_ms = ctx.now_ms + self.config.fetch_backoff_ms;
            }
        }
    }

    /// The log's durable offset, reported after a `RequestDurable` (or any sync).
    pub fn on_durable<P: Clone>(
        &mut self,
        ctx: Ctx,
        durable_offset: i64,
        out: &mut Vec<Action<P>>,
    ) {
        self.durable_offset = self
            .durable_offset
            .max(durable_offset.min(self.log_end_offset));
        self.maybe_advance_high_watermark(out);
        self.poll_follower(ctx, out);
    }

    /// The log could not write what this replica asked it to (`Action::Append` or
    /// `AppendReplicated` failed: disk full, I/O error); the driver dropped every append
    /// queued after the failed one, and the log ends at `log_end_offset` once the truncations
    /// still queued are applied (never above this replica's end). The replica forgets
    /// the offsets it assigned or fetched from there on: a leader fails the acks=all produces
    /// waiting on them (KAFKA_STORAGE_ERROR) and assigns the same offsets again to the next
    /// produce; a follower asks its leader again where to continue (after a fetch backoff, so
    /// a full disk is not retried in a loop). Nothing at those offsets was ever in the log, so
    /// this is not a truncation: the high watermark never covered them on any replica.
    pub fn on_log_write_failed<P: Clone>(
        &mut self,
        ctx: Ctx,
        log_end_offset: i64,
        out: &mut Vec<Action<P>>,
    ) {
        assert!(
            (0..=self.log_end_offset).contains(&log_end_offset),
            "the log cannot hold more than the replica assigned"
        );
        self.log_end_offset = log_end_offset;
        self.durable_offset = self.durable_offset.min(log_end_offset);
        self.durable_requested = self.durable_requested.min(log_end_offset);
        // A leader counts its own log end offset in the high watermark at once (a lone ISR
        // member, or followers that already fetched), so it may cover what failed; no replica
        // ever had those offsets, and the driver's log never exposed them (its high
        // watermark is clamped to what it holds). The durable watermark never covered them.
        self.high_watermark = self.high_watermark.min(log_end_offset);
        let partition = self.partition;
        match &mut self.role {
            RoleState::Leader(l) => {
                let epoch = l.leader_epoch;
                l.epoch_start_offset = l.epoch_start_offset.min(log_end_offset);
                for p in l.followers.values_mut() {
                    p.fetch_offset = p.fetch_offset.map(|o| o.min(log_end_offset));
                    p.last_fetch_leader_end_offset =
                        p.last_fetch_leader_end_offset.min(log_end_offset);
                }
                l.produces.retain(|p| {
                    let lost = p.last_offset >= log_end_offset;
                    if lost {
                        out.push(Action::Send {
                            to: p.client,
                            message: Message::ProduceResponse {
                                request_id: p.request_id,
                                partition,
                                result: Err(ReplicaError::KafkaStorageError),
                            },
                        });
                    }
                    !lost
                });
                // Epochs that wrote nothing now start at the end; ours is (again) the latest.
                self.epochs.truncate_from(log_end_offset);
                self.epochs.assign(epoch, log_end_offset);
            }
            RoleState::Follower(f) => {
                self.epochs.truncate_from(log_end_offset);
                f.phase = Phase::Truncating;
                f.in_flight = None;
                f.next_send_ms = ctx.now_ms + self.config.fetch_backoff_ms;
            }
            RoleState::Offline => self.epochs.truncate_from(log_end_offset),
        }
    }

    /// This leader's log cannot take writes (disk full): ask the controller to take it out of
    /// the ISR, so that another in-sync member leads (Kafka takes the log dir offline for the
    /// same effect). Nothing when it is the only member or a proposal is pending; the driver
    /// asks again while its writes stay refused.
    pub fn resign<P: Clone>(&mut self, ctx: Ctx, out: &mut Vec<Action<P>>) {
        let (Some(state), RoleState::Leader(l)) = (&self.state, &self.role) else {
            return;
        };
        if l.alter.is_some() || ctx.now_ms < l.alter_backoff_until_ms {
            return;
        }
        let new_isr: Vec<NodeId> = state
            .isr
            .iter()
            .copied()
            .filter(|&m| m != self.node)
            .collect();
        if !new_isr.is_empty() {
            self.send_alter(ctx, new_isr, out);
        }
    }

    /// Timers: produce timeouts, ISR shrink, AlterPartition resends, follower requests.
    pub fn tick<P: Clone>(&mut self, ctx: Ctx, out: &mut Vec<Action<P>>) {
        if let RoleState::Leader(l) = &mut self.role {
            let partition = self.partition;
            l.produces.retain(|p| {
                let expired = ctx.now_ms >= p.deadline_ms;
                if expired {
                    out.push(Action::Send {
                        to: p.client,
                        message: Message::ProduceResponse {
                            request_id: p.request_id,
                            partition,
                            result: Err(ReplicaError::RequestTimedOut),
                        },
                    });
                }
                !expired
            });
            if let Some(alter) = &l.alter
                && !alter.awaiting_state
                && ctx.now_ms - alter.sent_at_ms >= self.config.request_timeout_ms
            {
                let new_isr = alter.new_isr.clone();
                self.send_alter(ctx, new_isr, out);
            }
            self.maybe_shrink_isr(ctx, out);
        }
        self.poll_follower(ctx, out);
    }
}

// Helpers: leader side.
impl Replica {
    fn isr_len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.isr.len())
    }

    fn check_leader_epoch(&self, requested: LeaderEpoch) -> Result<(), ReplicaError> {
        let Some(state) = &self.state else {
            return Err(ReplicaError::NotLeaderOrFollower);
        };
        if requested < state.leader_epoch {
            return Err(ReplicaError::FencedLeaderEpoch);
        }
        if requested > state.leader_epoch {
            return Err(ReplicaError::UnknownLeaderEpoch);
        }
        match &self.role {
            RoleState::Leader(_) => Ok(()),
            _ => Err(ReplicaError::NotLeaderOrFollower),
        }
    }

    fn become_leader<P: Clone>(
        &mut self,
        ctx: Ctx,
        leader_epoch: LeaderEpoch,
        out: &mut Vec<Action<P>>,
    ) {
        self.fail_produces(ReplicaError::NotLeaderOrFollower, out);
        let state = self.state.as_ref().expect("a leader has a partition state");
        self.epochs.assign(leader_epoch, self.log_end_offset);
        let followers = state
            .replicas
            .iter()
            .filter(|&&r| r != self.node)
            .map(|&r| {
                let progress = Progress {
                    fetch_offset: None,
                    // ISR members get a full lag window to fetch from the new leader.
                    last_caught_up_ms: ctx.now_ms,
                    last_fetch_leader_end_offset: self.log_end_offset,
                    last_fetch_ms: ctx.now_ms,
                };
                (r, progress)
            })
            .collect();
        self.role = RoleState::Leader(LeaderState {
            leader_epoch,
            epoch_start_offset: self.log_end_offset,
            followers,
            alter: None,
            next_proposal: 1,
            alter_backoff_until_ms: i64::MIN,
            produces: Vec::new(),
        });
        self.request_durable(out);
        self.maybe_advance_high_watermark(out);
    }

    /// The offset this replica contributes to the durable watermark.
    fn own_durable_offset(&self) -> i64 {
        match self.config.durability {
            Durability::Fsync => self.durable_offset,
            Durability::PageCache => self.log_end_offset,
        }
    }

    /// A leader's `(high watermark candidate, durable watermark)`: the minimum over the other
    /// maximal-ISR members' fetch offsets, with this leader's log end offset and durable
    /// offset respectively. `None` when not leading or while a member has not fetched in
    /// this epoch. Followers' fetch offsets are durable on them under `Durability::Fsync`,
    /// so everything below the high watermark is durable on every ISR member but perhaps
    /// this leader.
    fn watermarks(&self) -> Option<(i64, i64)> {
        let RoleState::Leader(l) = &self.role else {
            return None;
        };
        let mut followers_min = i64::MAX;
        for member in self.maximal_isr().iter().filter(|&&m| m != self.node) {
            followers_min = followers_min.min(l.followers.get(member)?.fetch_offset?);
        }
        Some((
            followers_min.min(self.log_end_offset),
            followers_min.min(self.own_durable_offset()),
        ))
    }

    fn maybe_advance_high_watermark<P: Clone>(&mut self, out: &mut Vec<Action<P>>) {
        let Some((candidate, durable)) = self.watermarks() else {
            return;
        };
        assert!(
            durable <= candidate,
            "durable watermark above the high watermark"
        );
        if candidate > self.high_watermark {
            assert!(
                candidate <= self.log_end_offset,
                "high watermark above the log end offset"
            );
            self.high_watermark = candidate;
            out.push(Action::SetHighWatermark {
                partition: self.partition,
                high_watermark: candidate,
            });
        }
        let enough = self.isr_len() >= self.config.min_insync_replicas;
        let RoleState::Leader(l) = &mut self.role else {
            unreachable!("watermarks are a leader's")
        };
        let committed = l
            .produces
            .iter()
            .take_while(|p| p.last_offset < durable)
            .count();
        for p in l.produces.drain(..committed) {
            let result = if enough {
                Ok(p.base_offset)
            } else {
                Err(ReplicaError::NotEnoughReplicasAfterAppend)
            };
            out.push(Action::Send {
                to: p.client,
                message: Message::ProduceResponse {
                    request_id: p.request_id,
                    partition: self.partition,
                    result,
                },
            });
        }
    }

    fn maybe_expand_isr<P: Clone>(&mut self, ctx: Ctx, out: &mut Vec<Action<P>>) {
        let Some(state) = &self.state else { return };
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        if l.alter.is_some() || ctx.now_ms < l.alter_backoff_until_ms {
            return;
        }
        let caught_up_from = self.high_watermark.max(l.epoch_start_offset);
        let lag_max = self.config.replica_lag_time_max_ms;
        // Caught up, and fetching now: a follower that stopped fetching (it died) is not
        // proposed on the strength of an old fetch.
        let joiner = state.replicas.iter().find(|r| {
            !state.isr.contains(r)
                && l.followers.get(r).is_some_and(|p| {
                    p.fetch_offset.is_some_and(|o| o >= caught_up_from)
                        && ctx.now_ms - p.last_fetch_ms <= lag_max
                })
        });
        if let Some(&joiner) = joiner {
            let mut new_isr = state.isr.clone();
            new_isr.push(joiner);
            new_isr.sort();
            self.send_alter(ctx, new_isr, out);
        }
    }

    fn maybe_shrink_isr<P: Clone>(&mut self, ctx: Ctx, out: &mut Vec<Action<P>>) {
        let Some(state) = &self.state else { return };
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        if l.alter.is_some() || ctx.now_ms < l.alter_backoff_until_ms {
            return;
        }
        let lag_max = self.config.replica_lag_time_max_ms;
        let new_isr: Vec<NodeId> = state
            .isr
            .iter()
            .copied()
            .filter(|m| {
                *m == self.node
                    || l.followers
                        .get(m)
                        .is_some_and(|p| ctx.now_ms - p.last_caught_up_ms <= lag_max)
            })
            .collect();
        if new_isr.len() < state.isr.len() {
            self.send_alter(ctx, new_isr, out);
        }
    }

    fn send_alter<P: Clone>(&mut self, ctx: Ctx, new_isr: Vec<NodeId>, out: &mut Vec<Action<P>>) {
        let Some(broker_epoch) = ctx.broker_epoch else {
            return;
        };
        let Some(state) = &self.state else { return };
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let proposal = l.next_proposal;
        l.next_proposal += 1;
        out.push(Action::Send {
            to: Address::Controller,
            message: Message::AlterPartition {
                node: self.node,
                broker_epoch,
                partition: self.partition,
                leader_epoch: l.leader_epoch,
                partition_epoch: state.partition_epoch,
                proposal,
                new_isr: new_isr.clone(),
            },
        });
        l.alter = Some(PendingAlter {
            new_isr,
            proposal,
            sent_at_ms: ctx.now_ms,
            awaiting_state: false,
        });
    }

    fn fail_produces<P: Clone>(&mut self, error: ReplicaError, out: &mut Vec<Action<P>>) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        for p in l.produces.drain(..) {
            out.push(Action::Send {
                to: p.client,
                message: Message::ProduceResponse {
                    request_id: p.request_id,
                    partition: self.partition,
                    result: Err(error),
                },
            });
        }
    }
}

impl Progress {
    /// Kafka's `Replica.updateFetchState`: caught up if it fetched the leader's end offset, or
    /// the end offset the leader had at its previous fetch (then since that fetch's time).
    fn record_fetch(&mut self, now_ms: i64, fetch_offset: i64, leader_end_offset: i64) {
        if fetch_offset >= leader_end_offset {
            self.last_caught_up_ms = now_ms;
        } else if fetch_offset >= self.last_fetch_leader_end_offset {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.fetch_offset = Some(fetch_offset);
        self.last_fetch_leader_end_offset = leader_end_offset;
        self.last_fetch_ms = now_ms;
    }
}

// Helpers: follower side and the log.
impl Replica {
    fn become_follower<P: Clone>(
        &mut self,
        ctx: Ctx,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        out: &mut Vec<Action<P>>,
    ) {
        self.fail_produces(ReplicaError::NotLeaderOrFollower, out);
        self.role = RoleState::Follower(FollowerState {
            leader,
            leader_epoch,
            phase: Phase::Truncating,
            in_flight: None,
            next_send_ms: ctx.now_ms,
        });
        self.poll_follower(ctx, out);
    }

    /// The follower's state if `request_id` is the request in flight in `phase`.
    fn expect_response(&mut self, request_id: u64, phase: Phase) -> Option<&mut FollowerState> {
        let RoleState::Follower(f) = &mut self.role else {
            return None;
        };
        if f.phase != phase || f.in_flight.map(|(id, _)| id) != Some(request_id) {
            return None;
        }
        f.in_flight = None;
        Some(f)
    }

    /// Fetched batches must continue our log exactly and come from epochs the leader's epoch
    /// covers and ours do not contradict; otherwise we re-run truncation.
    fn check_continues_log<P>(
        &self,
        batches: &[Batch<P>],
        leader_epoch: LeaderEpoch,
    ) -> Result<(), Phase> {
        let mut next = self.log_end_offset;
        let mut epoch = self.epochs.latest_epoch().unwrap_or(LeaderEpoch(i32::MIN));
        for batch in batches {
            if batch.base_offset != next || batch.record_count == 0 {
                return Err(Phase::Fetching);
            }
            if batch.leader_epoch > leader_epoch || batch.leader_epoch < epoch {
                return Err(Phase::Truncating);
            }
            next = batch.next_offset();
            epoch = batch.leader_epoch;
        }
        Ok(())
    }

    fn poll_follower<P: Clone>(&mut self, ctx: Ctx, out: &mut Vec<Action<P>>) {
        let RoleState::Follower(f) = &mut self.role else {
            return;
        };
        if let Some((_, sent_at_ms)) = f.in_flight {
            if ctx.now_ms - sent_at_ms < self.config.request_timeout_ms {
                return;
            }
            f.in_flight = None;
        }
        if ctx.now_ms < f.next_send_ms {
            return;
        }
        let request_id = self.next_request_id;
        let message = match (f.phase, self.epochs.latest_epoch()) {
            (Phase::Truncating, Some(latest)) => Message::OffsetForLeaderEpoch {
                request_id,
                partition: self.partition,
                current_leader_epoch: f.leader_epoch,
                leader_epoch: latest,
            },
            (Phase::Truncating, None) | (Phase::Fetching, _) => {
                f.phase = Phase::Fetching;
                if self.config.durability == Durability::Fsync
                    && self.durable_offset < self.log_end_offset
                {
                    // Fetch again once the last append is durable (its offset is our claim).
                    self.request_durable(out);
                    return;
                }
                Message::Fetch {
                    request_id,
                    partition: self.partition,
                    replica: Some(self.node),
                    current_leader_epoch: f.leader_epoch,
                    fetch_offset: self.log_end_offset,
                }
            }
        };
        self.next_request_id += 1;
        f.in_flight = Some((request_id, ctx.now_ms));
        out.push(Action::Send {
            to: Address::Broker(f.leader),
            message,
        });
    }

    fn request_durable<P: Clone>(&mut self, out: &mut Vec<Action<P>>) {
        if self.durable_requested < self.log_end_offset && self.durable_offset < self.log_end_offset
        {
            self.durable_requested = self.log_end_offset;
            out.push(Action::RequestDurable {
                partition: self.partition,
                offset: self.log_end_offset,
            });
        }
    }

    fn truncate<P: Clone>(&mut self, offset: i64, out: &mut Vec<Action<P>>) {
        if offset >= self.log_end_offset {
            return;
        }
        assert!(offset >= 0);
        assert!(
            !matches!(self.role, RoleState::Leader(_)),
            "a leader never truncates"
        );
        self.log_end_offset = offset;
        self.durable_offset = self.durable_offset.min(offset);
        self.durable_requested = self.durable_requested.min(offset);
        // Only an unclean election can cut below the high watermark.
        self.high_watermark = self.high_watermark.min(offset);
        self.epochs.truncate_from(offset);
        out.push(Action::Truncate {
            partition: self.partition,
            offset,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PartitionEpoch;

    const P: PartitionId = PartitionId(0);

    fn config() -> ReplicaConfig {
        ReplicaConfig {
            replica_lag_time_max_ms: 100,
            min_insync_replicas: 2,
            fetch_backoff_ms: 10,
            empty_fetch_backoff_ms: 10,
            request_timeout_ms: 50,
            produce_timeout_ms: 1_000,
            heartbeat_interval_ms: 20,
            durability: Durability::Fsync,
        }
    }

    fn ctx(now_ms: i64) -> Ctx {
        Ctx {
            now_ms,
            broker_epoch: Some(BrokerEpoch(1)),
        }
    }

    fn state(leader: i32, isr: &[i32], leader_epoch: i32, partition_epoch: i32) -> PartitionState {
        PartitionState {
            partition: P,
            replicas: vec![NodeId(0), NodeId(1), NodeId(2)],
            isr: isr.iter().map(|&n| NodeId(n)).collect(),
            leader: Some(NodeId(leader)),
            leader_epoch: LeaderEpoch(leader_epoch),
            partition_epoch: PartitionEpoch(partition_epoch),
        }
    }

    fn leader(isr: &[i32]) -> Replica {
        let mut r = Replica::new(NodeId(0), P, config(), RecoveredLog::default(), 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, isr, 1, 1), &mut out);
        assert_eq!(
            r.role(),
            Role::Leader {
                leader_epoch: LeaderEpoch(1)
            }
        );
        r
    }

    fn produce(r: &mut Replica, now_ms: i64, request_id: u64) -> Vec<Action<u64>> {
        let mut out: Vec<Action<u64>> = Vec::new();
        let request = ProduceRequest {
            client: Address::Client(9),
            request_id,
            acks: Acks::All,
            record_count: 2,
            payload: request_id,
        };
        r.on_produce(ctx(now_ms), request, &mut out);
        out
    }

    fn fetch(
        r: &mut Replica,
        now_ms: i64,
        replica: i32,
        epoch: i32,
        fetch_offset: i64,
    ) -> Vec<Action<u64>> {
        let mut out: Vec<Action<u64>> = Vec::new();
        let request = FetchRequest {
            from: Address::Broker(NodeId(replica)),
            request_id: 1,
            replica: Some(NodeId(replica)),
            current_leader_epoch: LeaderEpoch(epoch),
            fetch_offset,
        };
        r.on_fetch(ctx(now_ms), request, &mut out);
        out
    }

    fn produce_results(out: &[Action<u64>]) -> Vec<Result<i64, ReplicaError>> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send {
                    message: Message::ProduceResponse { result, .. },
                    ..
                } => Some(*result),
                _ => None,
            })
            .collect()
    }

    fn fetch_errors(out: &[Action<u64>]) -> Vec<ReplicaError> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send {
                    message: Message::FetchResponse { result: Err(e), .. },
                    ..
                } => Some(*e),
                _ => None,
            })
            .collect()
    }

    fn alter_proposals(out: &[Action<u64>]) -> Vec<Vec<NodeId>> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send {
                    message: Message::AlterPartition { new_isr, .. },
                    ..
                } => Some(new_isr.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn acks_all_waits_for_the_isr_and_for_durability() {
        let mut r = leader(&[0, 1]);
        let out = produce(&mut r, 1, 7);
        assert!(out.contains(&Action::RequestDurable {
            partition: P,
            offset: 2
        }));
        assert!(produce_results(&out).is_empty());
        assert_eq!(r.high_watermark(), 0, "the follower has not fetched it");
        // The follower has it (durably), the leader's copy is not durable yet: consumers may
        // read it (Kafka's high watermark), acks=all still waits.
        assert!(produce_results(&fetch(&mut r, 2, 1, 1, 2)).is_empty());
        assert_eq!(r.high_watermark(), 2);
        assert_eq!(r.durable_watermark(), Some(0));
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_durable(ctx(3), 2, &mut out);
        assert_eq!(produce_results(&out), vec![Ok(0)]);
        assert_eq!(r.durable_watermark(), Some(2));
    }

    /// Issue 14, Kafka's observable contract: the high watermark counts the leader's log end
    /// offset (Partition.appendRecordsToLeader then maybeIncrementLeaderHW), so with the
    /// leader alone in the ISR an acks=1 batch is below it before its answer leaves, before
    /// any sync; the durable watermark (acks=all) still counts the leader's durable offset.
    #[test]
    fn a_lone_leader_exposes_acks_1_before_answering_and_before_its_sync() {
        let mut r = leader(&[0]);
        let mut out: Vec<Action<u64>> = Vec::new();
        let request = ProduceRequest {
            client: Address::Client(9),
            request_id: 1,
            acks: Acks::Leader,
            record_count: 3,
            payload: 1,
        };
        r.on_produce(ctx(1), request, &mut out);
        let raised = out.iter().position(|a| {
            *a == Action::SetHighWatermark {
                partition: P,
                high_watermark: 3,
            }
        });
        let answered = out.iter().position(|a| {
            matches!(
                a,
                Action::Send {
                    message: Message::ProduceResponse { result: Ok(0), .. },
                    ..
                }
            )
        });
        let (Some(raised), Some(answered)) = (raised, answered) else {
            panic!("no high watermark raise or no answer: {out:?}");
        };
        assert!(
            raised < answered,
            "answered before the high watermark moved"
        );
        let append = out
            .iter()
            .position(|a| matches!(a, Action::Append { .. }))
            .expect("appended");
        assert!(append < raised, "the driver applies actions in order");
        assert_eq!((r.high_watermark(), r.durable_offset()), (3, 0));
        assert_eq!(r.durable_watermark(), Some(0));
        let range = r.consumer_read(LeaderEpoch(1), 0).unwrap();
        assert_eq!((range.max_offset, range.high_watermark), (3, 3));
        // The sync moves only the durable watermark.
        let out = durable(&mut r, 2, 3);
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::SetHighWatermark { .. }))
        );
        assert_eq!(r.durable_watermark(), Some(3));

        // Under PageCache both watermarks count the log end: one number, Kafka's.
        let page_cache = ReplicaConfig {
            durability: Durability::PageCache,
            min_insync_replicas: 1,
            ..config()
        };
        let mut r = Replica::new(NodeId(0), P, page_cache, RecoveredLog::default(), 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, &[0], 1, 1), &mut out);
        assert_eq!(produce_results(&produce(&mut r, 1, 2)), vec![Ok(0)]);
        assert_eq!((r.high_watermark(), r.durable_watermark()), (2, Some(2)));
    }

    /// A log emptied by DeleteRecords or retention restarts with its end above 0 and no
    /// batch to rebuild epochs from (issue 12: this used to fail an assertion and take every
    /// topic of the shard away). It leads from its end and follows from its end.
    #[test]
    fn a_log_without_epochs_above_offset_zero_leads_and_follows() {
        let emptied = || RecoveredLog {
            log_end_offset: 40,
            high_watermark: 40,
            epochs: EpochCache::default(),
        };
        let mut r = Replica::new(NodeId(0), P, config(), emptied(), 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, &[0, 1], 3, 1), &mut out);
        assert_eq!(r.epochs().entries(), &[(LeaderEpoch(3), 40)]);
        let mut out = produce(&mut r, 1, 7);
        r.on_durable(ctx(2), 42, &mut out);
        fetch(&mut r, 3, 1, 3, 42);
        assert_eq!(r.high_watermark(), 42);

        let mut f = Replica::new(NodeId(1), P, config(), emptied(), 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        f.on_partition_state(ctx(0), state(0, &[0, 1], 3, 1), &mut out);
        let fetches: Vec<i64> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    message: Message::Fetch { fetch_offset, .. },
                    ..
                } => Some(*fetch_offset),
                _ => None,
            })
            .collect();
        assert_eq!(fetches, vec![40], "{out:?}");
    }

    #[test]
    fn not_enough_replicas_refuses_before_appending() {
        let mut r = leader(&[0]);
        let out = produce(&mut r, 1, 7);
        assert_eq!(
            produce_results(&out),
            vec![Err(ReplicaError::NotEnoughReplicas)]
        );
        assert!(!out.iter().any(|a| matches!(a, Action::Append { .. })));
        assert_eq!(r.log_end_offset(), 0);
    }

    #[test]
    fn isr_shrinking_below_min_insync_fails_waiting_produces() {
        let mut r = leader(&[0, 1]);
        produce(&mut r, 1, 7);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(2), state(0, &[0], 1, 2), &mut out);
        assert_eq!(
            produce_results(&out),
            vec![Err(ReplicaError::NotEnoughReplicasAfterAppend)]
        );
    }

    #[test]
    fn fetch_checks_the_leader_epoch() {
        let mut r = leader(&[0, 1]);
        assert_eq!(
            fetch_errors(&fetch(&mut r, 1, 1, 0, 0)),
            vec![ReplicaError::FencedLeaderEpoch]
        );
        assert_eq!(
            fetch_errors(&fetch(&mut r, 1, 1, 2, 0)),
            vec![ReplicaError::UnknownLeaderEpoch]
        );
        assert_eq!(
            fetch_errors(&fetch(&mut r, 1, 1, 1, 5)),
            vec![ReplicaError::OffsetOutOfRange]
        );
        assert!(fetch_errors(&fetch(&mut r, 1, 1, 1, 0)).is_empty());
    }

    /// The log could not write offsets 2..4: the waiting produce fails with a storage
    /// error, and the next produce gets the same offsets again.
    #[test]
    fn a_failed_leader_append_gives_its_offsets_to_the_next_produce() {
        let mut r = leader(&[0, 1]);
        produce(&mut r, 1, 7);
        produce(&mut r, 1, 8);
        assert_eq!(r.log_end_offset(), 4);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_log_write_failed(ctx(2), 2, &mut out);
        assert_eq!(
            produce_results(&out),
            vec![Err(ReplicaError::KafkaStorageError)]
        );
        assert_eq!(r.log_end_offset(), 2);
        assert_eq!(r.epochs().latest_epoch(), Some(LeaderEpoch(1)));
        // A follower past the new end is out of range; at it, it is answered.
        assert_eq!(
            fetch_errors(&fetch(&mut r, 3, 1, 1, 4)),
            vec![ReplicaError::OffsetOutOfRange]
        );
        assert!(fetch_errors(&fetch(&mut r, 3, 1, 1, 2)).is_empty());
        let out = produce(&mut r, 4, 9);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Append { batch, .. } if batch.base_offset == 2
        )));
        // The first produce (offsets 0..2) still completes once committed, then the new one.
        assert_eq!(produce_results(&durable(&mut r, 5, 4)), vec![Ok(0)]);
        assert_eq!(produce_results(&fetch(&mut r, 6, 1, 1, 4)), vec![Ok(2)]);
    }

    /// A leader that cannot write proposes an ISR without itself; alone, it proposes nothing.
    #[test]
    fn a_leader_that_cannot_write_proposes_to_leave_the_isr() {
        let mut r = leader(&[0, 1, 2]);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.resign(ctx(1), &mut out);
        assert_eq!(alter_proposals(&out), vec![vec![NodeId(1), NodeId(2)]]);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.resign(ctx(2), &mut out);
        assert!(out.is_empty(), "one proposal at a time");
        let mut alone = leader(&[0]);
        alone.resign(ctx(1), &mut out);
        assert!(out.is_empty());
    }

    /// A follower whose fetched batches could not be written asks its leader again, after a
    /// backoff, from what its log holds.
    #[test]
    fn a_failed_follower_append_fetches_again_from_the_log_end() {
        let mut r = Replica::new(NodeId(1), P, config(), RecoveredLog::default(), 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, &[0, 1], 1, 1), &mut out);
        let Some(Action::Send {
            message: Message::Fetch { request_id, .. },
            ..
        }) = out.pop()
        else {
            panic!("expected a fetch: {out:?}");
        };
        let batch = Batch {
            base_offset: 0,
            record_count: 3,
            leader_epoch: LeaderEpoch(1),
            payload: 0u64,
        };
        let data = FetchData {
            batches: vec![batch],
            high_watermark: 0,
            log_end_offset: 3,
        };
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_fetch_response(ctx(1), request_id, Ok(data), &mut out);
        assert_eq!(r.log_end_offset(), 3);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_log_write_failed(ctx(2), 0, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.log_end_offset(), 0);
        assert_eq!(r.epochs().latest_epoch(), None);
        // Nothing before the backoff; then a fetch from offset 0 (no epoch left to ask about).
        r.tick(ctx(3), &mut out);
        assert!(out.is_empty(), "{out:?}");
        r.tick(ctx(2 + config().fetch_backoff_ms), &mut out);
        assert!(matches!(
            out.as_slice(),
            [Action::Send {
                message: Message::Fetch {
                    fetch_offset: 0,
                    ..
                },
                ..
            }]
        ));
    }

    fn durable(r: &mut Replica, now_ms: i64, offset: i64) -> Vec<Action<u64>> {
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_durable(ctx(now_ms), offset, &mut out);
        out
    }

    #[test]
    fn isr_shrinks_after_lag_and_expands_once_caught_up() {
        let mut r = leader(&[0, 1, 2]);
        fetch(&mut r, 50, 1, 1, 0);
        fetch(&mut r, 50, 2, 1, 0);
        produce(&mut r, 60, 7);
        durable(&mut r, 61, 2);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.tick(ctx(140), &mut out);
        assert!(
            alter_proposals(&out).is_empty(),
            "within replica.lag.time.max.ms"
        );
        fetch(&mut r, 140, 1, 1, 2);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.tick(ctx(151), &mut out);
        assert_eq!(alter_proposals(&out), vec![vec![NodeId(0), NodeId(1)]]);
        // Until the controller commits, node 2 still counts for the high watermark.
        assert_eq!(r.maximal_isr(), vec![NodeId(0), NodeId(1), NodeId(2)]);
        assert_eq!(r.high_watermark(), 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_alter_partition_response(
            ctx(152),
            LeaderEpoch(1),
            1,
            Ok(state(0, &[0, 1], 1, 2)),
            &mut out,
        );
        assert_eq!(r.maximal_isr(), vec![NodeId(0), NodeId(1)]);
        assert_eq!(produce_results(&out), vec![Ok(0)]);
        // Node 2 catches up to the high watermark: proposed back, and counted at once.
        assert!(alter_proposals(&fetch(&mut r, 160, 2, 1, 1)).is_empty());
        let out = fetch(&mut r, 170, 2, 1, 2);
        assert_eq!(
            alter_proposals(&out),
            vec![vec![NodeId(0), NodeId(1), NodeId(2)]]
        );
        assert_eq!(r.maximal_isr(), vec![NodeId(0), NodeId(1), NodeId(2)]);
    }

    #[test]
    fn a_rejected_expansion_stays_counted_until_a_newer_state() {
        let mut r = leader(&[0, 1]);
        produce(&mut r, 1, 7);
        durable(&mut r, 2, 2);
        fetch(&mut r, 3, 1, 1, 2);
        assert_eq!(r.high_watermark(), 2);
        assert_eq!(alter_proposals(&fetch(&mut r, 4, 2, 1, 2)).len(), 1);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_alter_partition_response(
            ctx(5),
            LeaderEpoch(1),
            1,
            Err(ReplicaError::InvalidUpdateVersion),
            &mut out,
        );
        // The controller may hold an ISR with node 2: the high watermark keeps waiting for it,
        // and the proposal is not resent.
        produce(&mut r, 6, 8);
        durable(&mut r, 7, 4);
        fetch(&mut r, 8, 1, 1, 4);
        assert_eq!(r.high_watermark(), 2);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.tick(ctx(500), &mut out);
        assert!(alter_proposals(&out).is_empty());
        // A newer state settles it; node 2 (still behind) is proposed afresh later.
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(501), state(0, &[0, 1], 1, 3), &mut out);
        assert_eq!(r.maximal_isr(), vec![NodeId(0), NodeId(1)]);
        assert_eq!(r.high_watermark(), 4);
        assert_eq!(alter_proposals(&fetch(&mut r, 502, 2, 1, 4)).len(), 1);
    }

    #[test]
    fn an_ineligible_joiner_is_not_proposed_again_until_it_fetches() {
        // config(): replica_lag_time_max_ms 100, fetch_backoff_ms 10.
        let mut r = leader(&[0, 1]);
        fetch(&mut r, 1, 1, 1, 0);
        assert_eq!(alter_proposals(&fetch(&mut r, 2, 2, 1, 0)).len(), 1);
        let mut out: Vec<Action<u64>> = Vec::new();
        // The controller says node 2 is fenced (dead, or restarted and not registered yet).
        r.on_alter_partition_response(
            ctx(3),
            LeaderEpoch(1),
            1,
            Err(ReplicaError::IneligibleReplica),
            &mut out,
        );
        // Node 1's fetches (every one used to re-propose node 2) propose nothing: node 2's
        // last fetch no longer counts, and a refusal backs off.
        for now in [4, 20, 60] {
            assert!(alter_proposals(&fetch(&mut r, now, 1, 1, 0)).is_empty());
        }
        // Node 2 fetching again makes it a candidate once more.
        assert_eq!(alter_proposals(&fetch(&mut r, 61, 2, 1, 0)).len(), 1);
    }

    #[test]
    fn a_follower_that_stopped_fetching_is_not_proposed() {
        let mut r = leader(&[0, 1]);
        fetch(&mut r, 1, 2, 1, 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_alter_partition_response(
            ctx(2),
            LeaderEpoch(1),
            1,
            Err(ReplicaError::InvalidRequest),
            &mut out,
        );
        // Past replica.lag.time.max.ms without a fetch from node 2: not a joiner any more.
        assert!(alter_proposals(&fetch(&mut r, 200, 1, 1, 0)).is_empty());
    }

    /// A follower with epochs 1 @ 0 and 2 @ 10 (log end 20) facing a leader that never saw
    /// epoch 2 and wrote epoch 1 up to 15: KIP-101 alone would keep [10, 15) of epoch 2,
    /// which differs from the leader's epoch-1 batches there. KIP-279 cuts at 10.
    #[test]
    fn follower_truncation_follows_kip_279() {
        let epochs = EpochCache::from_entries([(LeaderEpoch(1), 0), (LeaderEpoch(2), 10)]);
        let log = RecoveredLog {
            log_end_offset: 20,
            high_watermark: 5,
            epochs,
        };
        let mut r = Replica::new(NodeId(1), P, config(), log, 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, &[0, 1], 3, 3), &mut out);
        let Some(Action::Send {
            message:
                Message::OffsetForLeaderEpoch {
                    request_id,
                    leader_epoch,
                    ..
                },
            ..
        }) = out.pop()
        else {
            panic!("expected OffsetForLeaderEpoch: {out:?}");
        };
        assert_eq!(leader_epoch, LeaderEpoch(2));
        let answer = EpochEndOffset {
            leader_epoch: Some(LeaderEpoch(1)),
            end_offset: 15,
        };
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_offset_for_leader_epoch_response(ctx(1), request_id, Ok(answer), &mut out);
        assert_eq!(
            out[0],
            Action::Truncate {
                partition: P,
                offset: 10
            }
        );
        assert_eq!(r.log_end_offset(), 10);
        assert!(matches!(
            &out[1],
            Action::Send {
                message: Message::Fetch {
                    fetch_offset: 10,
                    ..
                },
                ..
            }
        ));
    }

    /// Our nearest epoch is older than the leader's answer: cut to its end and ask again.
    #[test]
    fn follower_truncation_takes_several_rounds_when_epochs_interleave() {
        let epochs = EpochCache::from_entries([(LeaderEpoch(1), 0), (LeaderEpoch(3), 10)]);
        let log = RecoveredLog {
            log_end_offset: 20,
            high_watermark: 0,
            epochs,
        };
        let mut r = Replica::new(NodeId(1), P, config(), log, 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, &[0, 1], 4, 4), &mut out);
        let ask = |out: &[Action<u64>]| match out.last() {
            Some(Action::Send {
                message:
                    Message::OffsetForLeaderEpoch {
                        request_id,
                        leader_epoch,
                        ..
                    },
                ..
            }) => (*request_id, *leader_epoch),
            other => panic!("expected OffsetForLeaderEpoch, got {other:?}"),
        };
        let (id, epoch) = ask(&out);
        assert_eq!(epoch, LeaderEpoch(3));
        // The leader has epochs 1 @ 0, 2 @ 12, 4 @ 18.
        let mut out: Vec<Action<u64>> = Vec::new();
        let answer = EpochEndOffset {
            leader_epoch: Some(LeaderEpoch(2)),
            end_offset: 18,
        };
        r.on_offset_for_leader_epoch_response(ctx(1), id, Ok(answer), &mut out);
        assert_eq!(
            out[0],
            Action::Truncate {
                partition: P,
                offset: 10
            }
        );
        let (id, epoch) = ask(&out);
        assert_eq!(epoch, LeaderEpoch(1));
        let mut out: Vec<Action<u64>> = Vec::new();
        let answer = EpochEndOffset {
            leader_epoch: Some(LeaderEpoch(1)),
            end_offset: 12,
        };
        r.on_offset_for_leader_epoch_response(ctx(2), id, Ok(answer), &mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::Truncate { .. })));
        assert!(matches!(
            out.last(),
            Some(Action::Send {
                message: Message::Fetch {
                    fetch_offset: 10,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn consumers_wait_until_a_new_leader_commits_its_epoch_start() {
        let log = RecoveredLog {
            log_end_offset: 4,
            high_watermark: 2,
            epochs: EpochCache::from_entries([(LeaderEpoch(1), 0)]),
        };
        let mut r = Replica::new(NodeId(0), P, config(), log, 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, &[0, 1], 2, 2), &mut out);
        let consumer = FetchRequest {
            from: Address::Client(1),
            request_id: 1,
            replica: None,
            current_leader_epoch: LeaderEpoch(2),
            fetch_offset: 0,
        };
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_fetch(ctx(1), consumer, &mut out);
        assert_eq!(fetch_errors(&out), vec![ReplicaError::OffsetNotAvailable]);
        fetch(&mut r, 2, 1, 2, 4);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_fetch(ctx(3), consumer, &mut out);
        assert!(matches!(
            out[..],
            [Action::SendFetchResponse {
                high_watermark: 4,
                max_offset: 4,
                ..
            }]
        ));
    }

    /// The consumer read and OffsetForLeaderEpoch are plain queries: same answers as the
    /// message path, without actions.
    #[test]
    fn consumer_reads_and_epoch_ends_are_queries() {
        let log = RecoveredLog {
            log_end_offset: 4,
            high_watermark: 2,
            epochs: EpochCache::from_entries([(LeaderEpoch(1), 0)]),
        };
        let mut r = Replica::new(NodeId(0), P, config(), log, 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        assert_eq!(
            r.consumer_read(LeaderEpoch(2), 0),
            Err(ReplicaError::NotLeaderOrFollower)
        );
        r.on_partition_state(ctx(0), state(0, &[0, 1], 2, 2), &mut out);
        assert_eq!(
            r.consumer_read(LeaderEpoch(2), 0),
            Err(ReplicaError::OffsetNotAvailable)
        );
        fetch(&mut r, 2, 1, 2, 4);
        let range = ReadRange {
            from_offset: 1,
            max_offset: 4,
            high_watermark: 4,
            log_end_offset: 4,
        };
        assert_eq!(r.consumer_read(LeaderEpoch(2), 1), Ok(range));
        assert_eq!(
            r.consumer_read(LeaderEpoch(1), 1),
            Err(ReplicaError::FencedLeaderEpoch)
        );
        assert_eq!(
            r.consumer_read(LeaderEpoch(2), 5),
            Err(ReplicaError::OffsetOutOfRange)
        );
        assert_eq!(
            r.epoch_end_offset(LeaderEpoch(2), LeaderEpoch(1)),
            Ok(EpochEndOffset {
                leader_epoch: Some(LeaderEpoch(1)),
                end_offset: 4
            })
        );
        assert_eq!(
            r.epoch_end_offset(LeaderEpoch(3), LeaderEpoch(1)),
            Err(ReplicaError::UnknownLeaderEpoch)
        );
    }

    #[test]
    fn an_undefined_or_negative_epoch_answer_truncates_nothing() {
        let epochs = EpochCache::from_entries([(LeaderEpoch(1), 0)]);
        let log = RecoveredLog {
            log_end_offset: 5,
            high_watermark: 0,
            epochs,
        };
        let mut r = Replica::new(NodeId(1), P, config(), log, 0);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(0), state(0, &[0, 1], 2, 2), &mut out);
        for (i, answer) in [(None, -1), (Some(LeaderEpoch(1)), -1)]
            .into_iter()
            .enumerate()
        {
            let mut out: Vec<Action<u64>> = Vec::new();
            let now = 1_000 * (i as i64 + 1);
            r.tick(ctx(now), &mut out);
            let Some(Action::Send {
                message: Message::OffsetForLeaderEpoch { request_id, .. },
                ..
            }) = out.pop()
            else {
                panic!("expected OffsetForLeaderEpoch: {out:?}");
            };
            let answer = EpochEndOffset {
                leader_epoch: answer.0,
                end_offset: answer.1,
            };
            let mut out: Vec<Action<u64>> = Vec::new();
            r.on_offset_for_leader_epoch_response(ctx(now + 1), request_id, Ok(answer), &mut out);
            assert!(out.is_empty(), "{out:?}");
            assert_eq!(r.log_end_offset(), 5);
        }
    }

    /// Found by the simulator (seed 2226 with slow controller links): proposal numbers restart
    /// each epoch, so a late error for epoch 1's proposal 1 must not freeze epoch 3's.
    #[test]
    fn a_late_answer_to_an_older_epochs_proposal_is_ignored() {
        let mut r = leader(&[0, 1]);
        assert_eq!(alter_proposals(&fetch(&mut r, 1, 2, 1, 0)).len(), 1);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_partition_state(ctx(2), state(0, &[0, 1], 3, 3), &mut out);
        assert_eq!(
            r.role(),
            Role::Leader {
                leader_epoch: LeaderEpoch(3)
            }
        );
        assert_eq!(alter_proposals(&fetch(&mut r, 3, 2, 3, 0)).len(), 1);
        let mut out: Vec<Action<u64>> = Vec::new();
        r.on_alter_partition_response(
            ctx(4),
            LeaderEpoch(1),
            1,
            Err(ReplicaError::FencedLeaderEpoch),
            &mut out,
        );
        let mut out: Vec<Action<u64>> = Vec::new();
        r.tick(ctx(60), &mut out);
        assert_eq!(
            alter_proposals(&out),
            vec![vec![NodeId(0), NodeId(1), NodeId(2)]],
            "still resending"
        );
    }
}
