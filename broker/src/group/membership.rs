//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the group timers: Kafka's classic group
//! state machine (`GroupCoordinator.scala`, 3.x) on [`GroupCoordinator`].
//!
//! States: Empty -> PreparingRebalance (a member joins) -> CompletingRebalance (join phase
//! done: every member answered, the leader got the member list) -> Stable (the leader's
//! assignment is stored and handed out) -> PreparingRebalance (a member joins, leaves, changes
//! metadata, or expires) ...; PreparingRebalance -> Empty when nobody is left; Empty -> Dead
//! when deleted or expired. Deviations from Kafka are marked "Sluice:".

use std::collections::BTreeMap;

use bytes::Bytes;

use super::api::*;
use super::classic::{ClassicGroup, GroupState, InitialDelay, JoinTimer, Member};
use super::coordinator::{GroupCoordinator, PendingAppend, join_error, sync_error};
use super::error::GroupError;
use super::limits::NEW_MEMBER_JOIN_TIMEOUT_MS;
use super::records;

impl GroupCoordinator {
    pub fn join_group(&mut self, now_ms: i64, request: RequestId, req: JoinGroup) {
        self.join_group_inner(now_ms, request, req);
        self.tick(now_ms);
    }

    pub fn sync_group(&mut self, now_ms: i64, request: RequestId, req: SyncGroup) {
        match self.check_group_status(&req.group_id, false) {
            Ok(_) => {}
            // Loading lost the rebalance in progress: make the member rejoin (as Kafka).
            Err(GroupError::CoordinatorLoadInProgress) => {
                return self.reply(
                    request,
                    Reply::Sync(sync_error(GroupError::RebalanceInProgress)),
                );
            }
            Err(error) => return self.reply(request, Reply::Sync(sync_error(error))),
        }
        let Some(mut group) = self.take_group(&req.group_id) else {
            return self.reply(
                request,
                Reply::Sync(sync_error(GroupError::UnknownMemberId)),
            );
        };
        self.do_sync_group(now_ms, &mut group, request, req);
        self.put_group(group);
        self.tick(now_ms);
    }

    pub fn heartbeat(&mut self, now_ms: i64, request: RequestId, req: Heartbeat) {
        let error = match self.check_group_status(&req.group_id, false) {
            // Loading: answer blindly, as Kafka does.
            Err(GroupError::CoordinatorLoadInProgress) => None,
            Err(error) => Some(error),
            Ok(_) => match self.take_group(&req.group_id) {
                None => Some(GroupError::UnknownMemberId),
                Some(mut group) => {
                    let error = heartbeat_group(now_ms, &mut group, &req);
                    // A heartbeat only moves a session deadline later.
                    self.put_group_deadlines_later(group);
                    error
                }
            },
        };
        self.reply(request, Reply::Heartbeat(error));
        self.tick(now_ms);
    }

    pub fn leave_group(&mut self, now_ms: i64, request: RequestId, req: LeaveGroup) {
        if let Err(error) = self.check_group_status(&req.group_id, false) {
            let result = LeaveResult {
                error: Some(error),
                members: vec![],
            };
            return self.reply(request, Reply::Leave(result));
        }
        let mut group = self.take_group(&req.group_id);
        let mut members = Vec::with_capacity(req.members.len());
        for leaving in req.members {
            let error = match group.as_mut() {
                None => Some(GroupError::UnknownMemberId),
                Some(group) => self.leave_one(now_ms, group, &leaving),
            };
            members.push(LeaveMemberResult {
                member_id: leaving.member_id,
                group_instance_id: leaving.group_instance_id,
                error,
            });
        }
        if let Some(group) = group {
            self.put_group(group);
        }
        self.reply(
            request,
            Reply::Leave(LeaveResult {
                error: None,
                members,
            }),
        );
        self.tick(now_ms);
    }

    // ---- JoinGroup -----------------------------------------------------------------------

    fn join_group_inner(&mut self, now_ms: i64, request: RequestId, req: JoinGroup) {
        let partition = match self.check_group_status(&req.group_id, false) {
            Ok(p) => p,
            Err(e) => return self.reply(request, Reply::Join(join_error(&req.member_id, e))),
        };
        // Flexible versions carry strings longer than the record format's i16 lengths.
        let too_long = |s: &str| s.len() > records::STRING_BYTES_MAX;
        if req.group_instance_id.as_deref().is_some_and(too_long)
            || too_long(&req.protocol_type)
            || req.protocols.iter().any(|p| too_long(&p.name))
        {
            let result = join_error(&req.member_id, GroupError::InvalidRequest);
            return self.reply(request, Reply::Join(result));
        }
        if self.is_live_consumer_group(&req.group_id) {
            let result = join_error(&req.member_id, GroupError::InconsistentGroupProtocol);
            return self.reply(request, Reply::Join(result));
        }
        let timeout = req.session_timeout_ms;
        if timeout < self.config.min_session_timeout_ms
            || timeout > self.config.max_session_timeout_ms
        {
            let result = join_error(&req.member_id, GroupError::InvalidSessionTimeout);
            return self.reply(request, Reply::Join(result));
        }
        let is_unknown = req.member_id.is_empty();
        let mut group = match self.take_group(&req.group_id) {
            Some(group) => group,
            None if is_unknown => match self.create_group(&req.group_id, partition, now_ms) {
                Ok(group) => group,
                Err(e) => return self.reply(request, Reply::Join(join_error("", e))),
            },
            None => {
                let result = join_error(&req.member_id, GroupError::UnknownMemberId);
                return self.reply(request, Reply::Join(result));
            }
        };
        if !self.accept_joining_member(&group, &req) {
            self.reply(
                request,
                Reply::Join(join_error("", GroupError::GroupMaxSizeReached)),
            );
        } else if is_unknown {
            self.join_new_member(now_ms, &mut group, request, req);
        } else {
            self.join_existing_member(now_ms, &mut group, request, req);
        }
        if group.is(GroupState::PreparingRebalance) {
            self.try_complete_join(now_ms, &mut group);
        }
        self.put_group(group);
    }

    /// Sluice: known members, pending members and static members rejoining are always
    /// accepted; anyone else only while members + pending members < group.max.size (Kafka
    /// counts only members awaiting join while preparing; its size is configurable live, ours
    /// is fixed at start-up, and pending members count so they stay bounded).
    fn accept_joining_member(&self, group: &ClassicGroup, req: &JoinGroup) -> bool {
        let known = group.members.contains_key(&req.member_id)
            || group.pending_members.contains_key(&req.member_id)
            || req
                .group_instance_id
                .as_deref()
                .is_some_and(|i| group.static_member_id(i).is_some());
        known || group.members.len() + group.pending_members.len() < self.config.max_size
    }

    /// Kafka's `doNewMemberJoinGroup`.
    fn join_new_member(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        req: JoinGroup,
    ) {
        if !group.supports_protocols(&req.protocol_type, &req.protocols) {
            let result = join_error("", GroupError::InconsistentGroupProtocol);
            return self.reply(request, Reply::Join(result));
        }
        let member_id = self.new_member_id(&req.client_id);
        if let Some(instance) = req.group_instance_id.clone() {
            match group.static_member_id(&instance).map(str::to_owned) {
                Some(old) => self
                    .update_static_member(now_ms, group, request, &instance, old, member_id, req),
                None => self.add_member_and_rebalance(now_ms, group, request, member_id, req),
            }
        } else if req.require_known_member_id {
            let deadline = now_ms + i64::from(req.session_timeout_ms);
            group.pending_members.insert(member_id.clone(), deadline);
            let result = join_error(&member_id, GroupError::MemberIdRequired);
            self.reply(request, Reply::Join(result));
        } else {
            self.add_member_and_rebalance(now_ms, group, request, member_id, req);
        }
    }

    /// Kafka's `doCurrentMemberJoinGroup`.
    fn join_existing_member(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        req: JoinGroup,
    ) {
        let member_id = req.member_id.clone();
        let instance = req.group_instance_id.as_deref();
        if !group.supports_protocols(&req.protocol_type, &req.protocols) {
            let result = join_error(&member_id, GroupError::InconsistentGroupProtocol);
            return self.reply(request, Reply::Join(result));
        }
        if group.pending_members.contains_key(&member_id) {
            // Pending members are never static (static members skip KIP-394); a client that
            // adds an instance id here must not take over another member's instance.
            if instance.is_some_and(|i| group.static_member_id(i).is_some()) {
                let result = join_error(&member_id, GroupError::FencedInstanceId);
                return self.reply(request, Reply::Join(result));
            }
            return self.add_member_and_rebalance(now_ms, group, request, member_id, req);
        }
        let instance_unknown = instance.is_some_and(|i| group.static_member_id(i).is_none());
        let error = if group.is_static_member_fenced(instance, &member_id) {
            Some(GroupError::FencedInstanceId)
        } else if !group.members.contains_key(&member_id) || instance_unknown {
            Some(GroupError::UnknownMemberId)
        } else {
            None
        };
        if let Some(error) = error {
            return self.reply(request, Reply::Join(join_error(&member_id, error)));
        }
        let matches = group.members[&member_id].matches(&req.protocols);
        match group.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(now_ms, group, request, req)
            }
            GroupState::CompletingRebalance if matches => {
                // A retry of a JoinGroup whose reply was lost: same answer again.
                let result = current_join_result(group, &member_id, group.is_leader(&member_id));
                self.reply(request, Reply::Join(result));
            }
            GroupState::Stable if matches && !group.is_leader(&member_id) => {
                let result = current_join_result(group, &member_id, false);
                self.reply(request, Reply::Join(result));
            }
            // The leader rejoining forces a rebalance (topic metadata changed), as does a
            // change of metadata.
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(now_ms, group, request, req)
            }
            GroupState::Empty | GroupState::Dead => self.reply(
                request,
                Reply::Join(join_error(&member_id, GroupError::UnknownMemberId)),
            ),
        }
    }

    /// Kafka's `addMemberAndRebalance`.
    fn add_member_and_rebalance(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        member_id: String,
        req: JoinGroup,
    ) {
        let member = Member {
            member_id,
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(request),
            awaiting_sync: None,
            is_new: true,
            // New members cannot heartbeat yet; they expire if the join phase outlasts this.
            heartbeat_deadline_ms: now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS,
        };
        if group.is(GroupState::PreparingRebalance) && group.generation_id == 0 {
            group.new_member_added = true;
        }
        group.add_member(member);
        self.maybe_prepare_rebalance(now_ms, group);
    }

    fn update_member_and_rebalance(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        req: JoinGroup,
    ) {
        let member_id = req.member_id.clone();
        self.update_member(group, &member_id, request, req);
        self.maybe_prepare_rebalance(now_ms, group);
    }

    /// Kafka's `updateMember`. Sluice: a JoinGroup that was still waiting (its client gave up
    /// and sent another) is answered REBALANCE_IN_PROGRESS instead of never.
    fn update_member(
        &mut self,
        group: &mut ClassicGroup,
        member_id: &str,
        request: RequestId,
        req: JoinGroup,
    ) {
        let member = group
            .members
            .get_mut(member_id)
            .expect("caller checked membership");
        member.protocols = req.protocols;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.session_timeout_ms = req.session_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        if let Some(old) = member.awaiting_join.replace(request) {
            self.reply(
                old,
                Reply::Join(join_error(member_id, GroupError::RebalanceInProgress)),
            );
        }
    }

    /// Kafka's `updateStaticMemberAndRebalance` (KIP-345): a known static member restarts with
    /// a fresh member id. The old id is fenced; in a Stable group whose selected protocol and
    /// the member's metadata for it are unchanged, the new id takes over the old assignment
    /// without a rebalance once the group is stored. Sluice: Kafka checks only that the
    /// selected protocol stays; a changed subscription needs a new assignment, so we also
    /// require unchanged metadata.
    #[allow(clippy::too_many_arguments)]
    fn update_static_member(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        instance: &str,
        old_id: String,
        new_id: String,
        req: JoinGroup,
    ) {
        let skip_supported = req.supports_skip_assignment;
        let previous_leader = group.leader_id.clone().unwrap_or_default();
        self.replace_static_member(group, instance, &old_id, &new_id);
        let member = group.members.get_mut(&new_id).expect("just replaced");
        member.heartbeat_deadline_ms = now_ms + i64::from(req.session_timeout_ms);
        let old_protocols = member.protocols.clone();
        self.update_member(group, &new_id, request, req);
        match group.state {
            GroupState::Stable => {
                let selected = group.select_protocol();
                let unchanged = group.protocol_name.as_deref().is_some_and(|p| {
                    selected.as_deref() == Some(p)
                        && old_protocols
                            .iter()
                            .find(|x| x.name == p)
                            .map(|x| &x.metadata)
                            == group.members[&new_id].metadata(p)
                });
                if unchanged {
                    let leader = (!skip_supported).then_some(previous_leader);
                    self.store_static_rejoin(now_ms, group, request, new_id, leader);
                } else {
                    self.maybe_prepare_rebalance(now_ms, group);
                }
            }
            // The leader may already hold the old id in its assignment: start over.
            GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, group),
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with a static member has members")
            }
        }
    }

    /// Stores the group with the replaced member and answers it afterwards. A JoinGroup v9+
    /// client (KIP-814) that led learns it leads, with the member list, and that it must skip
    /// the assignment (a Stable group would not hand a new one out). Older clients get
    /// `old_leader`, the leader id from before the replacement: a replaced leader then does
    /// not see itself as leader and assigns nothing (Kafka's KIP-345 behaviour).
    fn store_static_rejoin(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        member_id: String,
        old_leader: Option<String>,
    ) {
        let is_leader = old_leader.is_none() && group.is_leader(&member_id);
        let assignment: BTreeMap<String, Bytes> = group
            .members
            .values()
            .map(|m| (m.member_id.clone(), m.assignment.clone()))
            .collect();
        let record = Self::group_record(group, &assignment);
        let result = JoinResult {
            error: None,
            generation_id: group.generation_id,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            leader: old_leader.unwrap_or_else(|| group.leader_id.clone().unwrap_or_default()),
            skip_assignment: is_leader,
            member_id: member_id.clone(),
            members: if is_leader {
                member_list(group)
            } else {
                vec![]
            },
        };
        let pending = PendingAppend::StaticRejoin {
            group_id: group.group_id.clone(),
            member_id,
            request,
            result,
        };
        self.append(group.partition, &[record], now_ms, pending);
    }

    pub(super) fn static_rejoin_appended(
        &mut self,
        group_id: &str,
        member_id: &str,
        request: RequestId,
        result: JoinResult,
        error: Option<GroupError>,
    ) {
        let Some(mut group) = self.take_group(group_id) else {
            return;
        };
        let waiting = group
            .members
            .get_mut(member_id)
            .filter(|m| m.awaiting_join == Some(request));
        if let Some(member) = waiting {
            member.awaiting_join = None;
            let reply = match error {
                None => result,
                // Sluice: Kafka reverts to the old member id; the old client is gone (this is
                // its restart), so we keep the new id and let the member rejoin.
                Some(e) => join_error(member_id, e),
            };
            self.reply(request, Reply::Join(reply));
        }
        self.put_group(group);
    }

    /// Kafka's `replaceStaticMember`: the old id's waiting requests are fenced.
    fn replace_static_member(
        &mut self,
        group: &mut ClassicGroup,
        instance: &str,
        old_id: &str,
        new_id: &str,
    ) {
        let mut member = group
            .members
            .remove(old_id)
            .expect("static member maps to a member");
        if let Some(r) = member.awaiting_join.take() {
            self.reply(
                r,
                Reply::Join(join_error(old_id, GroupError::FencedInstanceId)),
            );
        }
        if let Some(r) = member.awaiting_sync.take() {
            self.reply(r, Reply::Sync(sync_error(GroupError::FencedInstanceId)));
        }
        member.member_id = new_id.to_owned();
        group.members.insert(new_id.to_owned(), member);
        if group.is_leader(old_id) {
            group.leader_id = Some(new_id.to_owned());
        }
        group
            .static_members
            .insert(instance.to_owned(), new_id.to_owned());
        if group.pending_sync.remove(old_id) {
            group.pending_sync.insert(new_id.to_owned());
        }
    }

    pub(super) fn maybe_prepare_rebalance(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        if group.state.can_rebalance() {
            self.prepare_rebalance(now_ms, group);
        }
    }

    /// Kafka's `prepareRebalance`: members waiting on SyncGroup are told to rejoin; the first
    /// rebalance of an empty group waits group.initial.rebalance.delay.ms for more members.
    pub(super) fn prepare_rebalance(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        if group.is(GroupState::CompletingRebalance) {
            self.reset_and_propagate_assignment_error(
                now_ms,
                group,
                GroupError::RebalanceInProgress,
            );
        }
        group.sync_deadline_ms = None;
        let timeout_ms = group.rebalance_timeout_ms();
        group.join_timer = Some(if group.is(GroupState::Empty) {
            let delay_ms = self.config.initial_rebalance_delay_ms;
            JoinTimer {
                deadline_ms: now_ms + delay_ms,
                initial: Some(InitialDelay {
                    delay_ms,
                    remaining_ms: (timeout_ms - delay_ms).max(0),
                }),
            }
        } else {
            JoinTimer {
                deadline_ms: now_ms + timeout_ms,
                initial: None,
            }
        });
        group.transition(GroupState::PreparingRebalance, now_ms);
        self.try_complete_join(now_ms, group);
    }

    /// Completes the join phase early once everyone is in (Kafka's `DelayedJoin.tryComplete`;
    /// the initial delay always runs to its timer).
    pub(super) fn try_complete_join(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        let delayed = group.join_timer.is_some_and(|t| t.initial.is_none());
        if group.is(GroupState::PreparingRebalance) && delayed && group.all_members_joined() {
            self.complete_join(now_ms, group);
        }
    }

    /// Kafka's `onCompleteJoin`.
    fn complete_join(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        group.join_timer = None;
        // Dynamic members that did not rejoin in time are dropped; static ones stay until
        // their session expires (KIP-345).
        let laggards: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in laggards {
            self.fail_member_requests(group, &member_id, GroupError::UnknownMemberId);
            group.remove_member(&member_id);
        }
        if !group.maybe_elect_new_joined_leader() && !group.members.is_empty() {
            // Nobody rejoined: wait another rebalance timeout for sessions to expire.
            let deadline_ms = now_ms + group.rebalance_timeout_ms();
            group.join_timer = Some(JoinTimer {
                deadline_ms,
                initial: None,
            });
            return;
        }
        self.init_next_generation(now_ms, group);
        if group.is(GroupState::Empty) {
            let record = Self::group_record(group, &BTreeMap::new());
            self.append(
                group.partition,
                &[record],
                now_ms,
                PendingAppend::Background,
            );
            return;
        }
        let leader_view = member_list(group);
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for member_id in ids {
            let is_leader = group.is_leader(&member_id);
            let mut result = current_join_result(group, &member_id, false);
            if is_leader {
                result.members = leader_view.clone();
            }
            let member = group.members.get_mut(&member_id).expect("listed above");
            if let Some(request) = member.awaiting_join.take() {
                self.reply(request, Reply::Join(result));
            }
            member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            member.is_new = false;
            group.pending_sync.insert(member_id);
        }
        group.sync_deadline_ms = Some(now_ms + group.rebalance_timeout_ms());
    }

    /// Kafka's `initNextGeneration`.
    fn init_next_generation(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        group.generation_id = group.generation_id.wrapping_add(1);
        group.new_member_added = false;
        group.pending_sync.clear();
        if group.members.is_empty() {
            group.protocol_name = None;
            group.transition(GroupState::Empty, now_ms);
        } else {
            group.protocol_name = group.select_protocol();
            group.transition(GroupState::CompletingRebalance, now_ms);
        }
        group.subscribed_topics = group.compute_subscribed_topics();
    }

    // ---- SyncGroup -----------------------------------------------------------------------

    /// Kafka's `doSyncGroup`.
    fn do_sync_group(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        request: RequestId,
        req: SyncGroup,
    ) {
        let member_id = req.member_id.as_str();
        let error = if group.is_static_member_fenced(req.group_instance_id.as_deref(), member_id) {
            Some(GroupError::FencedInstanceId)
        } else if !group.members.contains_key(member_id) {
            Some(GroupError::UnknownMemberId)
        } else if req.generation_id != group.generation_id {
            Some(GroupError::IllegalGeneration)
        } else if (req.protocol_type.is_some() && req.protocol_type != group.protocol_type)
            || (req.protocol_name.is_some() && req.protocol_name != group.protocol_name)
        {
            Some(GroupError::InconsistentGroupProtocol)
        } else {
            match group.state {
                GroupState::Empty => Some(GroupError::UnknownMemberId),
                GroupState::PreparingRebalance => Some(GroupError::RebalanceInProgress),
                GroupState::Dead => Some(GroupError::CoordinatorNotAvailable),
                GroupState::CompletingRebalance | GroupState::Stable => None,
            }
        };
        if let Some(error) = error {
            return self.reply(request, Reply::Sync(sync_error(error)));
        }
        group.pending_sync.remove(member_id);
        if group.is(GroupState::Stable) {
            let member = group.members.get_mut(member_id).expect("checked above");
            member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            let result = SyncResult {
                error: None,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                assignment: member.assignment.clone(),
            };
            return self.reply(request, Reply::Sync(result));
        }
        let member = group.members.get_mut(member_id).expect("checked above");
        if let Some(old) = member.awaiting_sync.replace(request) {
            self.reply(
                old,
                Reply::Sync(sync_error(GroupError::RebalanceInProgress)),
            );
        }
        if group.is_leader(member_id) {
            // Members the leader left out get an empty assignment; unknown ids are ignored.
            let mut given: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
            let assignment: BTreeMap<String, Bytes> = group
                .members
                .keys()
                .map(|id| (id.clone(), given.remove(id).unwrap_or_default()))
                .collect();
            let record = Self::group_record(group, &assignment);
            let pending = PendingAppend::Sync {
                group_id: group.group_id.clone(),
                generation_id: group.generation_id,
                assignment,
            };
            self.append(group.partition, &[record], now_ms, pending);
        }
    }

    /// The leader's assignment is stored (or not): hand it out and go Stable, or start over.
    pub(super) fn sync_appended(
        &mut self,
        now_ms: i64,
        group_id: &str,
        generation_id: i32,
        assignment: BTreeMap<String, Bytes>,
        error: Option<GroupError>,
    ) {
        let Some(mut group) = self.take_group(group_id) else {
            return;
        };
        // The group may have moved on while the append was in flight.
        if group.is(GroupState::CompletingRebalance) && group.generation_id == generation_id {
            match error {
                Some(error) => {
                    self.reset_and_propagate_assignment_error(now_ms, &mut group, error);
                    self.maybe_prepare_rebalance(now_ms, &mut group);
                }
                None => {
                    for (member_id, member) in group.members.iter_mut() {
                        member.assignment = assignment.get(member_id).cloned().unwrap_or_default();
                    }
                    self.propagate_assignment(now_ms, &mut group, None);
                    group.transition(GroupState::Stable, now_ms);
                }
            }
        }
        self.put_group(group);
    }

    fn reset_and_propagate_assignment_error(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        error: GroupError,
    ) {
        for member in group.members.values_mut() {
            member.assignment = Bytes::new();
        }
        self.propagate_assignment(now_ms, group, Some(error));
    }

    /// Kafka's `propagateAssignment`: answers waiting SyncGroups and restarts their members'
    /// session timers.
    fn propagate_assignment(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        error: Option<GroupError>,
    ) {
        let (protocol_type, protocol_name) = match error {
            None => (group.protocol_type.clone(), group.protocol_name.clone()),
            Some(_) => (None, None),
        };
        let mut replies = Vec::new();
        for member in group.members.values_mut() {
            if let Some(request) = member.awaiting_sync.take() {
                let result = SyncResult {
                    error,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                replies.push((request, result));
                member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            }
        }
        for (request, result) in replies {
            self.reply(request, Reply::Sync(result));
        }
    }

    // ---- LeaveGroup and removal ----------------------------------------------------------

    /// One member of a LeaveGroup (Kafka's per-member loop in `handleLeaveGroup`).
    fn leave_one(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        leaving: &LeaveMember,
    ) -> Option<GroupError> {
        let instance = leaving.group_instance_id.as_deref();
        if leaving.member_id.is_empty() {
            // Administrative removal of a static member by instance id (KIP-345).
            let current = instance
                .and_then(|i| group.static_member_id(i))
                .map(str::to_owned);
            return match current {
                Some(member_id) => {
                    self.remove_member_and_update_group(now_ms, group, &member_id);
                    None
                }
                None => Some(GroupError::UnknownMemberId),
            };
        }
        if group.pending_members.remove(&leaving.member_id).is_some() {
            self.try_complete_join(now_ms, group);
            None
        } else if group.is_static_member_fenced(instance, &leaving.member_id) {
            Some(GroupError::FencedInstanceId)
        } else if group.members.contains_key(&leaving.member_id) {
            self.remove_member_and_update_group(now_ms, group, &leaving.member_id);
            None
        } else {
            Some(GroupError::UnknownMemberId)
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`. Sluice: a SyncGroup the member still waits on
    /// is answered too (UNKNOWN_MEMBER_ID) rather than left hanging.
    pub(super) fn remove_member_and_update_group(
        &mut self,
        now_ms: i64,
        group: &mut ClassicGroup,
        member_id: &str,
    ) {
        self.fail_member_requests(group, member_id, GroupError::UnknownMemberId);
        group.remove_member(member_id);
        match group.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now_ms, group)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, group),
        }
    }

    // ---- timers --------------------------------------------------------------------------

    /// Runs the group's due timers (join phase, sync phase, KIP-394 pending members, sessions).
    pub(super) fn expire_timers(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        self.expire_join_timer(now_ms, group);
        if group.sync_deadline_ms.is_some_and(|d| d <= now_ms) {
            group.sync_deadline_ms = None;
            self.expire_pending_sync(now_ms, group);
        }
        let expired: Vec<String> = group
            .pending_members
            .iter()
            .filter(|(_, d)| **d <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for member_id in expired {
            group.pending_members.remove(&member_id);
            self.try_complete_join(now_ms, group);
        }
        let expired: Vec<String> = group
            .members
            .values()
            .filter(|m| m.heartbeat_expired(now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            if group
                .members
                .get(&member_id)
                .is_some_and(|m| m.heartbeat_expired(now_ms))
            {
                tracing::info!(target: "group", group = %group.group_id, member = %member_id, "session expired");
                self.remove_member_and_update_group(now_ms, group, &member_id);
            }
        }
    }

    /// Kafka's `DelayedJoin` / `InitialDelayedJoin` expiry: the initial delay extends while
    /// new members keep arriving, up to the rebalance timeout.
    fn expire_join_timer(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        let Some(timer) = group.join_timer.filter(|t| t.deadline_ms <= now_ms) else {
            return;
        };
        if !group.is(GroupState::PreparingRebalance) {
            group.join_timer = None;
            return;
        }
        match timer.initial {
            Some(initial) if group.new_member_added && initial.remaining_ms != 0 => {
                group.new_member_added = false;
                let delay_ms = self
                    .config
                    .initial_rebalance_delay_ms
                    .min(initial.remaining_ms);
                let remaining_ms = (initial.remaining_ms - initial.delay_ms).max(0);
                group.join_timer = Some(JoinTimer {
                    deadline_ms: now_ms + delay_ms,
                    initial: Some(InitialDelay {
                        delay_ms,
                        remaining_ms,
                    }),
                });
            }
            _ => self.complete_join(now_ms, group),
        }
    }

    /// Members that got their JoinGroup answer but never sent SyncGroup within the rebalance
    /// timeout are removed and the group rebalances (Kafka's `onExpirePendingSync`).
    fn expire_pending_sync(&mut self, now_ms: i64, group: &mut ClassicGroup) {
        let active = matches!(
            group.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if !active || group.pending_sync.is_empty() {
            return;
        }
        let laggards: Vec<String> = group.pending_sync.iter().cloned().collect();
        for member_id in laggards {
            self.fail_member_requests(group, &member_id, GroupError::UnknownMemberId);
            group.remove_member(&member_id);
        }
        self.prepare_rebalance(now_ms, group);
    }
}

/// Kafka's `handleHeartbeat` for an existing group.
fn heartbeat_group(now_ms: i64, group: &mut ClassicGroup, req: &Heartbeat) -> Option<GroupError> {
    if group.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
        return Some(GroupError::FencedInstanceId);
    }
    let state = group.state;
    let generation_id = group.generation_id;
    let Some(member) = group.members.get_mut(&req.member_id) else {
        return Some(GroupError::UnknownMemberId);
    };
    if req.generation_id != generation_id {
        return Some(GroupError::IllegalGeneration);
    }
    match state {
        GroupState::Empty => Some(GroupError::UnknownMemberId),
        GroupState::Dead => Some(GroupError::CoordinatorNotAvailable),
        GroupState::CompletingRebalance | GroupState::Stable | GroupState::PreparingRebalance => {
            member.heartbeat_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            (state == GroupState::PreparingRebalance).then_some(GroupError::RebalanceInProgress)
        }
    }
}

/// The JoinGroup answer describing the current generation (members left empty).
fn current_join_result(group: &ClassicGroup, member_id: &str, with_members: bool) -> JoinResult {
    JoinResult {
        error: None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader_id.clone().unwrap_or_default(),
        skip_assignment: false,
        member_id: member_id.to_owned(),
        members: if with_members {
            member_list(group)
        } else {
            vec![]
        },
    }
}

/// Every member's metadata for the selected protocol (what the leader assigns from).
fn member_list(group: &ClassicGroup) -> Vec<JoinedMember> {
    let protocol = group.protocol_name.as_deref().unwrap_or_default();
    group
        .members
        .values()
        .map(|m| JoinedMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            metadata: m.metadata(protocol).cloned().unwrap_or_default(),
        })
        .collect()
}
