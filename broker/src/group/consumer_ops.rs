//! ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848) on [`GroupCoordinator`]:
//! Kafka's `GroupMetadataManager.consumerGroupHeartbeat`, reduced to what one node needs.
//!
//! State is persisted in Kafka's consumer-group record types (`consumer_records.rs`),
//! appended in the background after each change; a reload brings members back at their
//! epochs.

use std::collections::BTreeSet;

use super::api::*;
use bytes::Bytes;

use super::consumer::{
    ASSIGNORS, ConsumerGroup, ConsumerMember, MemberState, PersistedMember, SubscriptionRegex,
    TopicResolver,
};
use super::coordinator::GroupCoordinator;
use super::coordinator::{LoadedConsumerGroup, PendingAppend};
use super::error::GroupError;
use super::limits::GROUPS_PER_SHARD_MAX;

const LEAVE_EPOCH: i32 = -1;
const STATIC_LEAVE_EPOCH: i32 = -2;

impl GroupCoordinator {
    pub fn consumer_group_heartbeat(
        &mut self,
        now_ms: i64,
        request: RequestId,
        req: ConsumerHeartbeat,
        topics: &dyn TopicResolver,
    ) {
        let result = match self.consumer_heartbeat_inner(now_ms, req, topics) {
            Ok(result) => result,
            Err((error, message)) => ConsumerHeartbeatResult {
                error: Some(error),
                error_message: message,
                member_id: None,
                member_epoch: -1,
                heartbeat_interval_ms: 0,
                assignment: None,
            },
        };
        self.reply(request, Reply::ConsumerHeartbeat(result));
        self.tick(now_ms);
    }

    pub fn consumer_group_describe(&mut self, now_ms: i64, request: RequestId, group_id: &str) {
        let result = match self.check_group_status(group_id, false) {
            Err(error) => describe_error(error, None),
            Ok(_) => match self.consumer_groups.get(group_id) {
                Some(group) => describe(group),
                None if self
                    .groups
                    .get(group_id)
                    .is_some_and(|g| !g.members.is_empty()) =>
                {
                    describe_error(
                        GroupError::GroupIdNotFound,
                        Some(format!("Group {group_id} is not a consumer group.")),
                    )
                }
                None => describe_error(
                    GroupError::GroupIdNotFound,
                    Some(format!("Group {group_id} not found.")),
                ),
            },
        };
        self.reply(request, Reply::ConsumerDescribe(result));
        self.tick(now_ms);
    }

    /// Whether `group_id` is a consumer group with members (classic joins are refused).
    pub(super) fn is_live_consumer_group(&self, group_id: &str) -> bool {
        self.consumer_groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
    }

    fn consumer_heartbeat_inner(
        &mut self,
        now_ms: i64,
        req: ConsumerHeartbeat,
        topics: &dyn TopicResolver,
    ) -> Result<ConsumerHeartbeatResult, (GroupError, Option<String>)> {
        let partition = self
            .check_group_status(&req.group_id, false)
            .map_err(|e| (e, None))?;
        validate(&req).map_err(|m| (GroupError::InvalidRequest, Some(m.to_string())))?;
        let regex = match req
            .subscribed_topic_regex
            .as_deref()
            .map(SubscriptionRegex::new)
        {
            None => None,
            Some(Ok(regex)) => Some(regex),
            Some(Err(e)) => {
                return Err((GroupError::InvalidRegularExpression, Some(e.to_string())));
            }
        };
        if let Some(assignor) = req.server_assignor.as_deref()
            && !ASSIGNORS.contains(&assignor)
        {
            return Err((
                GroupError::UnsupportedAssignor,
                Some(format!("unknown assignor {assignor}")),
            ));
        }
        if self
            .groups
            .get(&req.group_id)
            .is_some_and(|g| !g.members.is_empty())
        {
            let message = format!("Group {} is not a consumer group.", req.group_id);
            return Err((GroupError::GroupIdNotFound, Some(message)));
        }
        let mut group = match self.consumer_groups.remove(&req.group_id) {
            Some(group) => group,
            None if req.member_epoch == 0 => {
                if self.groups.len() + self.consumer_groups.len() >= GROUPS_PER_SHARD_MAX {
                    return Err((GroupError::CoordinatorNotAvailable, None));
                }
                ConsumerGroup::new(req.group_id.clone(), partition)
            }
            // Sluice: membership is not persisted; a member from before a restart rejoins.
            None => return Err((GroupError::UnknownMemberId, None)),
        };
        let result = self.consumer_heartbeat_group(now_ms, &mut group, req, regex, topics);
        self.put_consumer_group(now_ms, group);
        result
    }

    fn consumer_heartbeat_group(
        &mut self,
        now_ms: i64,
        group: &mut ConsumerGroup,
        req: ConsumerHeartbeat,
        regex: Option<SubscriptionRegex>,
        topics: &dyn TopicResolver,
    ) -> Result<ConsumerHeartbeatResult, (GroupError, Option<String>)> {
        let (member_id, new_member) = match req.member_epoch {
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => return leave(group, &req),
            0 => self.join_member(now_ms, group, &req)?,
            _ => (check_member(group, &req).map_err(|e| (e, None))?, false),
        };
        let member = group
            .members
            .get_mut(&member_id)
            .expect("joined or checked");
        member.session_deadline_ms = now_ms + i64::from(self.config.consumer_session_timeout_ms);
        if req.rebalance_timeout_ms >= 0 {
            member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.server_assignor.is_some() {
            member.server_assignor = req.server_assignor.clone();
        }
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        if req.rack_id.is_some() {
            member.rack_id = req.rack_id.clone();
        }
        // One bump for everything this heartbeat changes (a new member, its subscription,
        // the subscribed topics' partition counts).
        let mut bump = new_member;
        if let Some(names) = &req.subscribed_topic_names {
            let names: BTreeSet<String> = names.iter().cloned().collect();
            if names != member.subscribed_topic_names {
                member.subscribed_topic_names = names;
                bump = true;
            }
        }
        if let Some(regex) = regex
            && member.subscribed_topic_regex.as_ref().map(|r| &r.source) != Some(&regex.source)
        {
            member.subscribed_topic_regex = Some(regex);
            bump = true;
        }
        let metadata = group.current_subscription_metadata(topics);
        if !group.subscription_metadata_known {
            group.subscription_metadata = metadata;
            group.subscription_metadata_known = true;
        } else if metadata != group.subscription_metadata {
            group.subscription_metadata = metadata;
            bump = true;
        }
        if bump {
            group.bump_epoch();
        }
        if group.group_epoch > group.target_epoch {
            group.compute_target();
        }
        let changed = group.reconcile(&member_id, req.owned.as_ref(), now_ms);
        let member = &group.members[&member_id];
        let send = changed || req.member_epoch == 0 || req.owned.is_some();
        Ok(ConsumerHeartbeatResult {
            error: None,
            error_message: None,
            member_id: Some(member_id.clone()),
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: self.config.consumer_heartbeat_interval_ms,
            assignment: send.then(|| member.assigned.clone()),
        })
    }

    /// A member joins (epoch 0): a fresh member, or a rejoin that resets an existing one.
    fn join_member(
        &mut self,
        now_ms: i64,
        group: &mut ConsumerGroup,
        req: &ConsumerHeartbeat,
    ) -> Result<(String, bool), (GroupError, Option<String>)> {
        let member_id = if req.member_id.is_empty() {
            self.new_member_id("")
        } else {
            req.member_id.clone()
        };
        if let Some(instance) = &req.instance_id
            && let Some(old_id) = group.static_members.get(instance).cloned()
            && old_id != member_id
        {
            if group.members.get(&old_id).map(|m| m.member_epoch) != Some(STATIC_LEAVE_EPOCH) {
                let message = format!("instance id {instance} is still in use by another member");
                return Err((GroupError::UnreleasedInstanceId, Some(message)));
            }
            replace_static_member(group, instance, &old_id, &member_id);
            return Ok((member_id, false));
        }
        if group.members.contains_key(&member_id) {
            group.remove_member(&member_id);
        }
        if group.members.len() >= self.config.max_size {
            return Err((GroupError::GroupMaxSizeReached, None));
        }
        let member = ConsumerMember {
            member_id: member_id.clone(),
            instance_id: req.instance_id.clone(),
            rack_id: req.rack_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            member_epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            subscribed_topic_names: BTreeSet::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: now_ms + i64::from(self.config.consumer_session_timeout_ms),
            revocation_deadline_ms: None,
        };
        if let Some(instance) = &req.instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        group.members.insert(member_id.clone(), member);
        Ok((member_id, true))
    }

    /// Session expiry and revocation timeouts of KIP-848 members.
    pub(super) fn expire_consumer_timers(&mut self, now_ms: i64) {
        let due: Vec<String> = self
            .consumer_timers
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .map(|(_, id)| id.clone())
            .collect();
        for group_id in due {
            let Some(mut group) = self.consumer_groups.remove(&group_id) else {
                continue;
            };
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.session_deadline_ms <= now_ms
                        || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
                })
                .map(|m| m.member_id.clone())
                .collect();
            for member_id in expired {
                tracing::info!(target: "group", group = %group_id, member = %member_id, "consumer group member expired");
                group.remove_member(&member_id);
            }
            self.put_consumer_group(now_ms, group);
        }
    }

    pub(super) fn put_consumer_group(&mut self, now_ms: i64, mut group: ConsumerGroup) {
        self.persist_consumer_group(now_ms, &mut group);
        let deadline = group.next_deadline();
        if group.timer_key != deadline {
            if let Some(old) = group.timer_key {
                self.consumer_timers.remove(&(old, group.group_id.clone()));
            }
            if let Some(new) = deadline {
                self.consumer_timers.insert((new, group.group_id.clone()));
            }
            group.timer_key = deadline;
        }
        self.consumer_groups.insert(group.group_id.clone(), group);
    }

    /// Appends the records of what changed since the group was last persisted (Kafka writes
    /// the same record types; it answers after the write, we append in the background: a
    /// member whose epoch is lost in a crash is fenced and rejoins).
    fn persist_consumer_group(&mut self, now_ms: i64, group: &mut ConsumerGroup) {
        use super::consumer_records::{self as cr, key};
        let id = group.group_id.clone();
        let mut records: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        let empty = Assignment::new();
        for (member_id, member) in &group.members {
            let target = group.target.get(member_id).unwrap_or(&empty);
            let before = group.persisted.members.get(member_id);
            // The common heartbeat changes nothing persistent: compare without building.
            if before.is_some_and(|b| member.is_persisted_as(b, target)) {
                continue;
            }
            let now = member.persisted(target);
            if before.map(|b| &b.metadata) != Some(&now.metadata) {
                let k = key(cr::MEMBER_METADATA_KEY, &id, Some(member_id));
                records.push((k, Some(cr::member_metadata_value(&now.metadata))));
            }
            if before.map(|b| &b.target) != Some(&now.target) {
                let k = key(cr::TARGET_MEMBER_KEY, &id, Some(member_id));
                records.push((k, Some(cr::target_member_value(&now.target))));
            }
            if before.map(|b| &b.current) != Some(&now.current) {
                let k = key(cr::CURRENT_ASSIGNMENT_KEY, &id, Some(member_id));
                records.push((k, Some(cr::current_assignment_value(&now.current))));
            }
            group.persisted.members.insert(member_id.clone(), now);
        }
        let gone: Vec<String> = group
            .persisted
            .members
            .keys()
            .filter(|m| !group.members.contains_key(*m))
            .cloned()
            .collect();
        for member_id in gone {
            group.persisted.members.remove(&member_id);
            for kind in [
                cr::CURRENT_ASSIGNMENT_KEY,
                cr::TARGET_MEMBER_KEY,
                cr::MEMBER_METADATA_KEY,
            ] {
                records.push((key(kind, &id, Some(&member_id)), None));
            }
        }
        if group.persisted.group_epoch != Some(group.group_epoch) {
            group.persisted.group_epoch = Some(group.group_epoch);
            records.push((
                key(cr::GROUP_EPOCH_KEY, &id, None),
                Some(cr::epoch_value(group.group_epoch)),
            ));
        }
        if group.persisted.target_epoch != Some(group.target_epoch) {
            group.persisted.target_epoch = Some(group.target_epoch);
            records.push((
                key(cr::TARGET_EPOCH_KEY, &id, None),
                Some(cr::epoch_value(group.target_epoch)),
            ));
        }
        if !records.is_empty() {
            self.append(group.partition, &records, now_ms, PendingAppend::Background);
        }
    }

    /// Deletes an empty consumer group: its records are tombstoned (DeleteGroups, retention).
    pub(super) fn delete_consumer_group(&mut self, now_ms: i64, group_id: &str) {
        use super::consumer_records::{self as cr, key};
        let Some(group) = self.consumer_groups.get(group_id) else {
            return;
        };
        let partition = group.partition;
        let mut records: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        for member_id in group.persisted.members.keys() {
            for kind in [
                cr::CURRENT_ASSIGNMENT_KEY,
                cr::TARGET_MEMBER_KEY,
                cr::MEMBER_METADATA_KEY,
            ] {
                records.push((key(kind, group_id, Some(member_id)), None));
            }
        }
        records.push((key(cr::TARGET_EPOCH_KEY, group_id, None), None));
        records.push((key(cr::GROUP_EPOCH_KEY, group_id, None), None));
        self.remove_consumer_group(group_id);
        self.append(partition, &records, now_ms, PendingAppend::Background);
    }

    /// Rebuilds a consumer group replayed from the offsets log (members come back with a fresh
    /// session; the subscribed topics are re-read at the next heartbeat without a rebalance).
    pub(super) fn restore_consumer_group(
        &mut self,
        now_ms: i64,
        group_id: String,
        partition: i32,
        loaded: LoadedConsumerGroup,
    ) {
        let Some(group_epoch) = loaded.group_epoch else {
            return;
        };
        let mut group = ConsumerGroup::new(group_id, partition);
        group.group_epoch = group_epoch;
        group.target_epoch = loaded.target_epoch.unwrap_or(0);
        group.subscription_metadata_known = false;
        let session = i64::from(self.config.consumer_session_timeout_ms);
        for (member_id, m) in loaded.members {
            let (Some(metadata), Some(current)) = (m.metadata, m.current) else {
                continue;
            };
            let target = m.target.unwrap_or_default();
            let persisted = PersistedMember {
                metadata,
                current,
                target: target.clone(),
            };
            let member = ConsumerMember::from_persisted(
                member_id.clone(),
                persisted.clone(),
                now_ms + session,
            );
            if let Some(instance) = &member.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member_id.clone());
            }
            group.target.insert(member_id.clone(), target);
            group.members.insert(member_id.clone(), member);
            group.persisted.members.insert(member_id, persisted);
        }
        group.persisted.group_epoch = Some(group.group_epoch);
        group.persisted.target_epoch = loaded.target_epoch;
        self.put_consumer_group(now_ms, group);
    }

    /// Removes a consumer group from memory only (partition unloaded).
    pub(super) fn remove_consumer_group(&mut self, group_id: &str) {
        if let Some(group) = self.consumer_groups.remove(group_id)
            && let Some(old) = group.timer_key
        {
            self.consumer_timers.remove(&(old, group.group_id));
        }
    }

    /// KIP-848 rules for OffsetCommit to a consumer group (Kafka's
    /// `ConsumerGroup.validateOffsetCommit`): None when the commit may proceed.
    pub(super) fn validate_consumer_commit(
        &self,
        req: &OffsetCommit,
    ) -> Option<Option<GroupError>> {
        let group = self.consumer_groups.get(&req.group_id)?;
        if req.generation_id < 0 && group.members.is_empty() {
            return Some(None);
        }
        let Some(member) = group.members.get(&req.member_id) else {
            return Some(Some(GroupError::UnknownMemberId));
        };
        Some((req.generation_id != member.member_epoch).then_some(GroupError::StaleMemberEpoch))
    }
}

fn validate(req: &ConsumerHeartbeat) -> Result<(), &'static str> {
    if req.group_id.is_empty() {
        return Err("GroupId can't be empty.");
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms < 0 {
                return Err("RebalanceTimeoutMs must be provided in first request.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return Err(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
            if req.owned.as_ref().is_some_and(|o| !o.is_empty()) {
                return Err("TopicPartitions must be empty when (re-)joining.");
            }
        }
        e if e > 0 || e == LEAVE_EPOCH || e == STATIC_LEAVE_EPOCH => {
            if req.member_id.is_empty() {
                return Err("MemberId can't be empty.");
            }
        }
        _ => return Err("MemberEpoch is invalid."),
    }
    Ok(())
}

/// Checks a heartbeating member's id, instance and epoch.
fn check_member(group: &ConsumerGroup, req: &ConsumerHeartbeat) -> Result<String, GroupError> {
    let member = group
        .members
        .get(&req.member_id)
        .ok_or(GroupError::UnknownMemberId)?;
    if let Some(instance) = &req.instance_id
        && group.static_members.get(instance) != Some(&req.member_id)
    {
        return Err(GroupError::FencedInstanceId);
    }
    if req.member_epoch != member.member_epoch {
        // A lost response: the member may still be one epoch behind if it owns nothing new.
        let subset = req.owned.as_ref().is_some_and(|o| {
            o.iter()
                .all(|(t, ps)| member.assigned.get(t).is_some_and(|a| ps.is_subset(a)))
        });
        if !(req.member_epoch == member.previous_epoch && subset) {
            return Err(GroupError::FencedMemberEpoch);
        }
    }
    Ok(req.member_id.clone())
}

fn leave(
    group: &mut ConsumerGroup,
    req: &ConsumerHeartbeat,
) -> Result<ConsumerHeartbeatResult, (GroupError, Option<String>)> {
    if !group.members.contains_key(&req.member_id) {
        return Err((GroupError::UnknownMemberId, None));
    }
    if let Some(instance) = &req.instance_id
        && group.static_members.get(instance) != Some(&req.member_id)
    {
        return Err((GroupError::FencedInstanceId, None));
    }
    if req.member_epoch == STATIC_LEAVE_EPOCH
        && let Some(member) = group.members.get_mut(&req.member_id)
        && member.instance_id.is_some()
    {
        // A static member leaving to restart (KIP-848): it keeps its place and partitions
        // until its session times out, so its next incarnation takes over without a
        // rebalance; what it was revoking is released now.
        member.previous_epoch = member.member_epoch;
        member.member_epoch = STATIC_LEAVE_EPOCH;
        member.pending_revocation.clear();
        member.revocation_deadline_ms = None;
        member.state = MemberState::Stable;
    } else {
        group.remove_member(&req.member_id);
    }
    Ok(ConsumerHeartbeatResult {
        error: None,
        error_message: None,
        member_id: Some(req.member_id.clone()),
        member_epoch: req.member_epoch,
        heartbeat_interval_ms: 0,
        assignment: None,
    })
}

/// A static member's new incarnation takes over the place, epoch and partitions its
/// predecessor left with epoch -2; no group epoch bump, so nobody else rebalances.
fn replace_static_member(group: &mut ConsumerGroup, instance: &str, old_id: &str, new_id: &str) {
    let mut member = group
        .members
        .remove(old_id)
        .expect("static member maps to a member");
    member.member_id = new_id.to_owned();
    member.member_epoch = member.previous_epoch;
    if let Some(target) = group.target.remove(old_id) {
        group.target.insert(new_id.to_owned(), target);
    }
    group
        .static_members
        .insert(instance.to_owned(), new_id.to_owned());
    group.members.insert(new_id.to_owned(), member);
}

fn describe(group: &ConsumerGroup) -> ConsumerDescribeResult {
    ConsumerDescribeResult {
        error: None,
        error_message: None,
        state: group.state().as_str(),
        group_epoch: group.group_epoch,
        assignment_epoch: group.target_epoch,
        assignor_name: group.assignor.clone(),
        members: group
            .members
            .values()
            .map(|m| ConsumerDescribedMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                member_epoch: m.member_epoch,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
                subscribed_topic_regex: m.subscribed_topic_regex.as_ref().map(|r| r.source.clone()),
                assignment: m.assigned.clone(),
                target_assignment: group.target.get(&m.member_id).cloned().unwrap_or_default(),
            })
            .collect(),
    }
}

fn describe_error(error: GroupError, message: Option<String>) -> ConsumerDescribeResult {
    ConsumerDescribeResult {
        error: Some(error),
        error_message: message,
        state: "Dead",
        group_epoch: -1,
        assignment_epoch: -1,
        assignor_name: String::new(),
        members: vec![],
    }
}
