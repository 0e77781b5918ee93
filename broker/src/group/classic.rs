//! One classic-protocol group: its members, generation, selected protocol, timers and committed
//! offsets (Kafka's `GroupMetadata`). Pure data and queries; the transitions that emit replies
//! and appends live in the coordinator (`membership.rs`, `offsets.rs`).
//!
//! Invariants: `static_members` maps every instance id of a static member in `members` to that
//! member's id and nothing else; `leader_id`, when set, names a member; `pending_sync` and
//! `members` ⊇ relation: every pending-sync id is a member; a member awaits at most one
//! JoinGroup and one SyncGroup at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::api::{Protocol, RequestId};
use super::records::OffsetCommitValue;

/// Where a record stands in its offsets partition's log, in log order (Kafka's
/// `OffsetAndMetadata.recordOffset`, as a stamp: the coordinator stamps records in the order
/// they reach the log — replay order, then emission order, which the backend keeps as append
/// order — so stamps of one partition compare as log offsets do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogOrder(pub u64);

/// A committed offset and the place of the record that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub value: OffsetCommitValue,
    pub log_order: LogOrder,
}

impl std::ops::Deref for CommittedOffset {
    type Target = OffsetCommitValue;

    fn deref(&self) -> &OffsetCommitValue {
        &self.value
    }
}

/// Stores `offset` for `tp` unless the committed one was written later in the log: Kafka's
/// rule when a transaction's offsets are materialised (`replayEndTransactionMarker`: with a
/// mix of transactional and plain commits the one appended last wins), also applied to plain
/// commits, whose appends may be acknowledged out of order with a marker. True when stored.
pub fn materialize_offset(
    offsets: &mut BTreeMap<(String, i32), CommittedOffset>,
    tp: (String, i32),
    offset: CommittedOffset,
) -> bool {
    if offsets
        .get(&tp)
        .is_some_and(|existing| existing.log_order > offset.log_order)
    {
        return false;
    }
    offsets.insert(tp, offset);
    true
}

/// Kafka's `GroupState` names, as ListGroups and DescribeGroups report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }

    /// Parses a ListGroups states filter entry (case-insensitive, as Kafka).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Empty,
            Self::PreparingRebalance,
            Self::CompletingRebalance,
            Self::Stable,
            Self::Dead,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// States from which a rebalance may start (Kafka's `canRebalance`).
    pub fn can_rebalance(self) -> bool {
        matches!(self, Self::Stable | Self::CompletingRebalance | Self::Empty)
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    pub awaiting_join: Option<RequestId>,
    pub awaiting_sync: Option<RequestId>,
    /// Joined but not yet through a completed join phase (expires on the new-member timeout).
    pub is_new: bool,
    pub heartbeat_deadline_ms: i64,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| &p.metadata)
    }

    /// Same protocols with the same metadata in the same order (Kafka's `matches`).
    pub fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    /// Whether the heartbeat timer may remove this member now (Kafka's
    /// `hasSatisfiedHeartbeat`, negated): members waiting on a JoinGroup or SyncGroup
    /// reply count as alive, except new members, which expire while waiting.
    pub fn heartbeat_expired(&self, now_ms: i64) -> bool {
        if now_ms < self.heartbeat_deadline_ms {
            return false;
        }
        self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none())
    }

    /// The heartbeat deadline the timer must watch, if any.
    fn heartbeat_timer(&self) -> Option<i64> {
        let watched = self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none());
        watched.then_some(self.heartbeat_deadline_ms)
    }
}

/// The join phase's timer (Kafka's `DelayedJoin` and `InitialDelayedJoin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTimer {
    pub deadline_ms: i64,
    /// Set for the first rebalance of an empty group (group.initial.rebalance.delay.ms).
    pub initial: Option<InitialDelay>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialDelay {
    pub delay_ms: i64,
    pub remaining_ms: i64,
}

#[derive(Debug)]
pub struct ClassicGroup {
    pub group_id: String,
    /// The `__consumer_offsets` partition holding this group.
    pub partition: i32,
    pub state: GroupState,
    pub state_timestamp_ms: Option<i64>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    pub static_members: HashMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED -> expiry deadline.
    pub pending_members: BTreeMap<String, i64>,
    /// Members that got their JoinGroup reply but have not sent SyncGroup yet.
    pub pending_sync: BTreeSet<String>,
    pub new_member_added: bool,
    pub join_timer: Option<JoinTimer>,
    pub sync_deadline_ms: Option<i64>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Offset commits appended but not yet acknowledged, per partition.
    pub pending_commits: BTreeMap<(String, i32), u32>,
    /// Topics the consumer-protocol members subscribe to (None when unknown).
    pub subscribed_topics: Option<BTreeSet<String>>,
    /// The deadline under which the coordinator's timer index files this group.
    pub timer_key: Option<i64>,
}

impl ClassicGroup {
    pub fn new(group_id: String, partition: i32, now_ms: i64) -> Self {
        Self {
            group_id,
            partition,
            state: GroupState::Empty,
            state_timestamp_ms: Some(now_ms),
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            new_member_added: false,
            join_timer: None,
            sync_deadline_ms: None,
            offsets: BTreeMap::new(),
            pending_commits: BTreeMap::new(),
            subscribed_topics: None,
            timer_key: None,
        }
    }

    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = Some(now_ms);
    }

    pub fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub fn static_member_id(&self, instance_id: &str) -> Option<&str> {
        self.static_members.get(instance_id).map(String::as_str)
    }

    /// Kafka's `isStaticMemberFenced`: the instance id is known and maps to another member.
    pub fn is_static_member_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|id| self.static_member_id(id))
            .is_some_and(|current| current != member_id)
    }

    pub fn awaiting_join_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    /// Every member rejoined and no KIP-394 member is still to come back.
    pub fn all_members_joined(&self) -> bool {
        self.awaiting_join_count() == self.members.len() && self.pending_members.is_empty()
    }

    /// The largest rebalance timeout among members (Kafka's `rebalanceTimeoutMs`).
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Kafka's `supportsProtocols`.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.is(GroupState::Empty) {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| self.all_members_support(&p.name))
    }

    fn all_members_support(&self, protocol: &str) -> bool {
        self.members
            .values()
            .all(|m| m.metadata(protocol).is_some())
    }

    /// Kafka's `selectProtocol`: among protocols every member supports, the one most members
    /// list first (ties go to the name first in order, for determinism).
    pub fn select_protocol(&self) -> Option<String> {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find(|p| self.all_members_support(&p.name));
            if let Some(p) = choice {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(name, _)| name.to_owned())
    }

    /// Adds a member (Kafka's `add`): the first member fixes the protocol type and leads.
    pub fn add_member(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        self.pending_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member (Kafka's `remove`); the caller answers its pending requests first.
    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.pending_sync.remove(member_id);
        Some(member)
    }

    /// Kafka's `maybeElectNewJoinedLeader`: keeps a leader that rejoined, else picks any member
    /// that did. False when no member rejoined.
    pub fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.clone() else {
            return false;
        };
        let leader_joined = self
            .members
            .get(&leader)
            .is_some_and(|m| m.awaiting_join.is_some());
        if leader_joined {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(m) => {
                self.leader_id = Some(m.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Recomputes the consumer-protocol subscriptions from members' metadata for the selected
    /// protocol (Kafka's `computeSubscribedTopics`). None when any member's metadata does not
    /// decode or the group does not use the consumer protocol.
    pub fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            let metadata = member.metadata(protocol)?;
            for topic in decode_subscription_topics(metadata)? {
                topics.insert(topic);
            }
        }
        Some(topics)
    }

    /// Whether offsets of `topic` are in use by the group (unknown subscriptions count as in
    /// use, as Kafka's `isSubscribedToTopic`).
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        self.subscribed_topics
            .as_ref()
            .is_none_or(|t| t.contains(topic))
    }

    pub fn has_offsets(&self) -> bool {
        !self.offsets.is_empty() || !self.pending_commits.is_empty()
    }

    /// The earliest instant a timer of this group needs attention.
    pub fn next_deadline(&self) -> Option<i64> {
        let join = self.join_timer.map(|t| t.deadline_ms);
        let sync = self.sync_deadline_ms;
        let pending = self.pending_members.values().copied().min();
        let heartbeat = self
            .members
            .values()
            .filter_map(Member::heartbeat_timer)
            .min();
        [join, sync, pending, heartbeat].into_iter().flatten().min()
    }
}

/// The protocol type of Kafka's Java consumer and its kin.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The subscribed topics of a ConsumerProtocolSubscription (any version: all start with
/// `version:i16 topics:[string]`, never flexible). Parsed by hand, with every length checked
/// against the bytes present: kafka-protocol's decoder reserves capacity for whatever array
/// length the input claims, so a crafted member metadata would abort the broker.
fn decode_subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let mut rest: &[u8] = metadata;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    // Each topic takes at least its 2-byte length.
    if count > metadata.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        topics.push(std::str::from_utf8(take(len)?).ok()?.to_owned());
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_parse_case_insensitively() {
        assert_eq!(GroupState::parse("stable"), Some(GroupState::Stable));
        assert_eq!(
            GroupState::parse("PreparingRebalance"),
            Some(GroupState::PreparingRebalance)
        );
        assert_eq!(GroupState::parse("nope"), None);
    }

    #[test]
    fn subscription_topics_decode_and_garbage_is_none() {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let sub = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        sub.encode(&mut buf, 1).unwrap();
        assert_eq!(
            decode_subscription_topics(&buf.freeze()),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            decode_subscription_topics(&Bytes::from_static(&[0, 1, 0xff])),
            None
        );
        assert_eq!(decode_subscription_topics(&Bytes::new()), None);
        // A huge claimed topic count is rejected without allocating for it.
        assert_eq!(
            decode_subscription_topics(&Bytes::from_static(b"changed")),
            None
        );
        for version in [0i16, 3] {
            let mut v3 = bytes::BytesMut::new();
            v3.extend_from_slice(&version.to_be_bytes());
            ConsumerProtocolSubscription::default()
                .with_topics(vec![StrBytes::from_static_str("t")])
                .encode(&mut v3, version)
                .unwrap();
            assert_eq!(
                decode_subscription_topics(&v3.freeze()),
                Some(vec!["t".to_string()])
            );
        }
    }
}
