//! One KIP-848 consumer group (`group.protocol=consumer`): members heartbeat with their
//! subscriptions, the coordinator computes a target assignment with a server-side assignor
//! and moves every member towards it without ever giving a partition to two members at once
//! (Kafka's `ConsumerGroup` + `CurrentAssignmentBuilder`). Pure data and transitions; the
//! coordinator drives them (`consumer_ops.rs`).
//!
//! Epochs: the group epoch bumps whenever membership, subscriptions or the subscribed topics'
//! partition counts change; the target assignment is recomputed for that epoch; a member's
//! epoch reaches the target epoch once it has revoked what it must give up.
//!
//! Invariants: a partition is in at most one member's `assigned ∪ pending_revocation`; a
//! member in `UnrevokedPartitions` keeps its epoch until it confirms the revocation.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

pub use super::types::Assignment;

/// What the coordinator needs to know of topics (the broker's metadata implements it).
pub trait TopicResolver {
    /// (topic id, partition count) of a topic by name.
    fn topic_by_name(&self, name: &str) -> Option<(Uuid, i32)>;
    /// (name, partition count) of a topic by id.
    fn topic_by_id(&self, id: &Uuid) -> Option<(String, i32)>;
    /// Every topic a regex subscription may match (internal topics excluded).
    fn topic_names(&self) -> Vec<String>;
}

pub const ASSIGNOR_UNIFORM: &str = "uniform";
pub const ASSIGNOR_RANGE: &str = "range";
/// Kafka's group.consumer.assignors default order: the first is the default.
pub const ASSIGNORS: [&str; 2] = [ASSIGNOR_UNIFORM, ASSIGNOR_RANGE];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// Waiting for the member to confirm it revoked `pending_revocation`.
    UnrevokedPartitions,
    /// At the target epoch but some target partitions are still owned by others.
    UnreleasedPartitions,
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub subscribed_topic_names: BTreeSet<String>,
    /// A regex subscription (KIP-848 v1), matched against every topic name in full.
    pub subscribed_topic_regex: Option<SubscriptionRegex>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    pub session_deadline_ms: i64,
    pub revocation_deadline_ms: Option<i64>,
}

impl MemberState {
    /// Kafka's MemberState byte in the current-assignment record.
    pub fn code(self) -> i8 {
        match self {
            Self::Stable => 0,
            Self::UnrevokedPartitions => 1,
            Self::UnreleasedPartitions => 2,
        }
    }

    pub fn from_code(code: i8) -> Self {
        match code {
            1 => Self::UnrevokedPartitions,
            2 => Self::UnreleasedPartitions,
            _ => Self::Stable,
        }
    }
}

/// A compiled regex subscription; matches whole topic names, as Kafka's RE2J `matches`.
#[derive(Debug, Clone)]
pub struct SubscriptionRegex {
    pub source: String,
    regex: regex::Regex,
}

/// Longest regex source accepted (it is compiled and kept per member).
pub const SUBSCRIPTION_REGEX_BYTES_MAX: usize = 1024;

impl SubscriptionRegex {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        if source.len() > SUBSCRIPTION_REGEX_BYTES_MAX {
            return Err(regex::Error::CompiledTooBig(SUBSCRIPTION_REGEX_BYTES_MAX));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.regex.is_match(topic)
    }
}

impl ConsumerMember {
    pub fn subscribes_by_regex(&self, topic: &str) -> bool {
        self.subscribed_topic_regex
            .as_ref()
            .is_some_and(|r| r.matches(topic))
    }

    /// Whether `p` (what was last written) still describes this member and its target.
    pub fn is_persisted_as(&self, p: &PersistedMember, target: &Assignment) -> bool {
        let m = &p.metadata;
        let c = &p.current;
        p.target == *target
            && c.member_epoch == self.member_epoch
            && c.previous_member_epoch == self.previous_epoch
            && c.state == self.state.code()
            && c.assigned == self.assigned
            && c.pending_revocation == self.pending_revocation
            && m.instance_id == self.instance_id
            && m.rack_id == self.rack_id
            && m.client_id == self.client_id
            && m.client_host == self.client_host
            && m.rebalance_timeout_ms == self.rebalance_timeout_ms
            && m.server_assignor == self.server_assignor
            && m.subscribed_topic_regex.as_deref()
                == self
                    .subscribed_topic_regex
                    .as_ref()
                    .map(|r| r.source.as_str())
            && m.subscribed_topic_names
                .iter()
                .eq(self.subscribed_topic_names.iter())
    }

    /// The member as its records describe it.
    pub fn persisted(&self, target: &Assignment) -> PersistedMember {
        PersistedMember {
            metadata: super::consumer_records::MemberMetadataValue {
                instance_id: self.instance_id.clone(),
                rack_id: self.rack_id.clone(),
                client_id: self.client_id.clone(),
                client_host: self.client_host.clone(),
                subscribed_topic_names: self.subscribed_topic_names.iter().cloned().collect(),
                subscribed_topic_regex: self
                    .subscribed_topic_regex
                    .as_ref()
                    .map(|r| r.source.clone()),
                rebalance_timeout_ms: self.rebalance_timeout_ms,
                server_assignor: self.server_assignor.clone(),
            },
            current: super::consumer_records::CurrentAssignmentValue {
                member_epoch: self.member_epoch,
                previous_member_epoch: self.previous_epoch,
                state: self.state.code(),
                assigned: self.assigned.clone(),
                pending_revocation: self.pending_revocation.clone(),
            },
            target: target.clone(),
        }
    }

    /// A member rebuilt from its records; its session starts now.
    pub fn from_persisted(member_id: String, p: PersistedMember, session_deadline_ms: i64) -> Self {
        Self {
            member_id,
            instance_id: p.metadata.instance_id,
            rack_id: p.metadata.rack_id,
            client_id: p.metadata.client_id,
            client_host: p.metadata.client_host,
            member_epoch: p.current.member_epoch,
            previous_epoch: p.current.previous_member_epoch,
            state: MemberState::from_code(p.current.state),
            subscribed_topic_names: p.metadata.subscribed_topic_names.into_iter().collect(),
            subscribed_topic_regex: p
                .metadata
                .subscribed_topic_regex
                .and_then(|r| SubscriptionRegex::new(&r).ok()),
            server_assignor: p.metadata.server_assignor,
            rebalance_timeout_ms: p.metadata.rebalance_timeout_ms,
            assigned: p.current.assigned,
            pending_revocation: p.current.pending_revocation,
            session_deadline_ms,
            revocation_deadline_ms: None,
        }
    }
}

/// Kafka's consumer group states, as ListGroups and ConsumerGroupDescribe name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Assigning => "Assigning",
            Self::Reconciling => "Reconciling",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub partition: i32,
    pub group_epoch: i32,
    pub target_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    /// instance id -> member id.
    pub static_members: BTreeMap<String, String>,
    pub target: BTreeMap<String, Assignment>,
    /// Subscribed topics' (id, partition count) the current group epoch was computed with.
    pub subscription_metadata: BTreeMap<String, (Uuid, i32)>,
    /// False after a reload (the topics are not persisted): the next heartbeat adopts the
    /// current ones without a rebalance.
    pub subscription_metadata_known: bool,
    /// What the offsets log holds for this group, to write only what changed.
    pub persisted: Persisted,
    pub timer_key: Option<i64>,
}

/// The consumer-group state last appended to `__consumer_offsets`.
#[derive(Debug, Default, Clone)]
pub struct Persisted {
    pub group_epoch: Option<i32>,
    pub target_epoch: Option<i32>,
    pub members: BTreeMap<String, PersistedMember>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PersistedMember {
    pub metadata: super::consumer_records::MemberMetadataValue,
    pub current: super::consumer_records::CurrentAssignmentValue,
    pub target: Assignment,
}

impl ConsumerGroup {
    pub fn new(group_id: String, partition: i32) -> Self {
        Self {
            group_id,
            partition,
            group_epoch: 0,
            target_epoch: 0,
            assignor: ASSIGNOR_UNIFORM.to_string(),
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscription_metadata: BTreeMap::new(),
            subscription_metadata_known: true,
            persisted: Persisted::default(),
            timer_key: None,
        }
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.target_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.target_epoch || m.state != MemberState::Stable)
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    pub fn bump_epoch(&mut self) {
        self.group_epoch = self.group_epoch.wrapping_add(1).max(1);
    }

    pub fn remove_member(&mut self, member_id: &str) -> Option<ConsumerMember> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        self.target.remove(member_id);
        self.bump_epoch();
        Some(member)
    }

    /// The subscribed topics as they exist now.
    pub fn current_subscription_metadata(
        &self,
        topics: &dyn TopicResolver,
    ) -> BTreeMap<String, (Uuid, i32)> {
        let mut names: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed_topic_names.iter().cloned())
            .collect();
        if self
            .members
            .values()
            .any(|m| m.subscribed_topic_regex.is_some())
        {
            for name in topics.topic_names() {
                if self.members.values().any(|m| m.subscribes_by_regex(&name)) {
                    names.insert(name);
                }
            }
        }
        names
            .into_iter()
            .filter_map(|name| topics.topic_by_name(&name).map(|t| (name, t)))
            .collect()
    }

    /// The assignor most members prefer (Kafka's `computePreferredServerAssignor`); ties and
    /// no preference give the default.
    pub fn preferred_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        ASSIGNORS
            .iter()
            .find(|a| votes.get(**a).copied() == Some(best) && best > 0)
            .unwrap_or(&ASSIGNORS[0])
            .to_string()
    }

    /// Computes the target assignment for the current group epoch.
    pub fn compute_target(&mut self) {
        self.assignor = self.preferred_assignor();
        let subscriptions: BTreeMap<String, BTreeSet<Uuid>> = self
            .members
            .iter()
            .map(|(id, m)| {
                let ids = self
                    .subscription_metadata
                    .iter()
                    .filter(|(name, _)| {
                        m.subscribed_topic_names.contains(*name) || m.subscribes_by_regex(name)
                    })
                    .map(|(_, t)| t.0);
                (id.clone(), ids.collect())
            })
            .collect();
        let partitions: BTreeMap<Uuid, i32> =
            self.subscription_metadata.values().copied().collect();
        self.target = if self.assignor == ASSIGNOR_RANGE {
            assign_range(&subscriptions, &partitions)
        } else {
            assign_uniform(&subscriptions, &partitions, &self.target)
        };
        self.target_epoch = self.group_epoch;
    }

    /// Whether a member other than `member_id` holds `(topic, partition)`.
    fn owned_by_other(&self, member_id: &str, topic: &Uuid, partition: i32) -> bool {
        self.members.values().any(|m| {
            m.member_id != member_id
                && (contains(&m.assigned, topic, partition)
                    || contains(&m.pending_revocation, topic, partition))
        })
    }

    /// Moves `member_id` towards its target (Kafka's `CurrentAssignmentBuilder`). `owned` is
    /// what the member reported owning in this heartbeat, if it reported. Returns whether the
    /// member's epoch or assignment changed.
    pub fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) -> bool {
        let Some(member) = self.members.get(member_id) else {
            return false;
        };
        let before = (member.member_epoch, member.assigned.clone(), member.state);
        if member.state == MemberState::UnrevokedPartitions {
            let revoked = owned.is_some_and(|o| !intersects(o, &member.pending_revocation));
            if !revoked {
                return false;
            }
            let member = self.members.get_mut(member_id).expect("present");
            member.pending_revocation.clear();
            member.revocation_deadline_ms = None;
            member.state = MemberState::Stable;
        }
        let member = &self.members[member_id];
        if member.member_epoch == self.target_epoch && member.state == MemberState::Stable {
            return (member.member_epoch, &member.assigned) != (before.0, &before.1);
        }
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let kept = intersection(&member.assigned, &target);
        let revoke = difference(&member.assigned, &target);
        if !revoke.is_empty() {
            let timeout = i64::from(member.rebalance_timeout_ms.max(0));
            let member = self.members.get_mut(member_id).expect("present");
            member.assigned = kept;
            member.pending_revocation = revoke;
            member.state = MemberState::UnrevokedPartitions;
            member.revocation_deadline_ms = Some(now_ms + timeout);
        } else {
            let wanted = difference(&target, &member.assigned);
            let mut assigned = kept;
            let mut withheld = false;
            for (topic, parts) in &wanted {
                for p in parts {
                    if self.owned_by_other(member_id, topic, *p) {
                        withheld = true;
                    } else {
                        assigned.entry(*topic).or_default().insert(*p);
                    }
                }
            }
            let target_epoch = self.target_epoch;
            let member = self.members.get_mut(member_id).expect("present");
            member.assigned = assigned;
            if member.member_epoch != target_epoch {
                member.previous_epoch = member.member_epoch;
                member.member_epoch = target_epoch;
            }
            member.state = if withheld {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
        }
        let member = &self.members[member_id];
        (member.member_epoch, &member.assigned, member.state) != (before.0, &before.1, before.2)
    }

    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline_ms), m.revocation_deadline_ms])
            .flatten()
            .min()
    }
}

fn contains(a: &Assignment, topic: &Uuid, partition: i32) -> bool {
    a.get(topic).is_some_and(|p| p.contains(&partition))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|qs| !ps.is_disjoint(qs)))
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let common: BTreeSet<i32> = b
                .get(t)
                .map(|qs| ps.intersection(qs).copied().collect())
                .unwrap_or_default();
            (!common.is_empty()).then_some((*t, common))
        })
        .collect()
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let rest: BTreeSet<i32> = match b.get(t) {
                Some(qs) => ps.difference(qs).copied().collect(),
                None => ps.clone(),
            };
            (!rest.is_empty()).then_some((*t, rest))
        })
        .collect()
}

/// The uniform assignor: every partition of a subscribed topic goes to one subscribed member,
/// counts balanced (within one for identical subscriptions), previous owners kept where the
/// balance allows (sticky).
pub fn assign_uniform(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    partitions: &BTreeMap<Uuid, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    if subscriptions.is_empty() {
        return out;
    }
    let all: Vec<(Uuid, i32)> = partitions
        .iter()
        .filter(|(t, _)| subscriptions.values().any(|s| s.contains(*t)))
        .flat_map(|(t, n)| (0..*n).map(move |p| (*t, p)))
        .collect();
    let members = subscriptions.len();
    let base = all.len() / members;
    let mut extra = all.len() % members;
    let mut counts: BTreeMap<&str, usize> = subscriptions.keys().map(|m| (m.as_str(), 0)).collect();
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    // Sticky pass: keep previous partitions up to the fair share.
    for (member, assignment) in previous {
        let Some(subscribed) = subscriptions.get(member) else {
            continue;
        };
        for (topic, parts) in assignment {
            if !subscribed.contains(topic) {
                continue;
            }
            for p in parts {
                let count = counts[member.as_str()];
                let in_range = partitions.get(topic).is_some_and(|n| *p < *n);
                let room = count < base || (count == base && extra > 0);
                if in_range && room && taken.insert((*topic, *p)) {
                    if count == base {
                        extra -= 1;
                    }
                    *counts.get_mut(member.as_str()).expect("member") += 1;
                    out.get_mut(member)
                        .expect("member")
                        .entry(*topic)
                        .or_default()
                        .insert(*p);
                }
            }
        }
    }
    // The rest to the least loaded subscribed member.
    for (topic, p) in all {
        if taken.contains(&(topic, p)) {
            continue;
        }
        let chosen = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(&topic))
            .map(|(m, _)| m.as_str())
            .min_by_key(|m| (counts[m], *m));
        if let Some(m) = chosen {
            *counts.get_mut(m).expect("member") += 1;
            out.get_mut(m)
                .expect("member")
                .entry(topic)
                .or_default()
                .insert(p);
        }
    }
    out
}

/// The range assignor: per topic, its subscribers (by member id) get contiguous ranges, the
/// first `partitions % members` one partition more.
pub fn assign_range(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, count) in partitions {
        let subscribers: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let count = usize::try_from(*count).unwrap_or(0);
        let per = count / subscribers.len();
        let extra = count % subscribers.len();
        let mut next = 0usize;
        for (i, m) in subscribers.into_iter().enumerate() {
            let n = per + usize::from(i < extra);
            let parts: BTreeSet<i32> = (next..next + n).map(|p| p as i32).collect();
            next += n;
            if !parts.is_empty() {
                out.get_mut(m).expect("member").insert(*topic, parts);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn subs(members: &[&str], topics: &[Uuid]) -> BTreeMap<String, BTreeSet<Uuid>> {
        members
            .iter()
            .map(|m| (m.to_string(), topics.iter().copied().collect()))
            .collect()
    }

    fn sizes(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values()
            .map(|x| x.values().map(BTreeSet::len).sum())
            .collect()
    }

    fn all_once(a: &BTreeMap<String, Assignment>, expected: usize) {
        let mut seen = BTreeSet::new();
        for x in a.values() {
            for (t, ps) in x {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "partition {t}-{p} assigned twice");
                }
            }
        }
        assert_eq!(seen.len(), expected);
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let t = topic(1);
        let parts = BTreeMap::from([(t, 6)]);
        let three = assign_uniform(&subs(&["a", "b", "c"], &[t]), &parts, &BTreeMap::new());
        assert_eq!(sizes(&three), vec![2, 2, 2]);
        all_once(&three, 6);
        let four = assign_uniform(&subs(&["a", "b", "c", "d"], &[t]), &parts, &three);
        let mut s = sizes(&four);
        s.sort();
        assert_eq!(s, vec![1, 1, 2, 2]);
        all_once(&four, 6);
        // Stickiness: each old member keeps at least one of its partitions.
        for m in ["a", "b", "c"] {
            let kept = intersection(&three[m], &four[m]);
            assert!(!kept.is_empty(), "{m} lost everything");
        }
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let (t1, t2) = (topic(1), topic(2));
        let mut s = subs(&["a"], &[t1]);
        s.insert("b".into(), [t2].into());
        let parts = BTreeMap::from([(t1, 3), (t2, 2)]);
        let out = assign_uniform(&s, &parts, &BTreeMap::new());
        assert_eq!(out["a"].keys().copied().collect::<Vec<_>>(), vec![t1]);
        assert_eq!(out["b"].keys().copied().collect::<Vec<_>>(), vec![t2]);
        all_once(&out, 5);
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let t = topic(1);
        let out = assign_range(&subs(&["a", "b"], &[t]), &BTreeMap::from([(t, 5)]));
        assert_eq!(out["a"][&t], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&t], BTreeSet::from([3, 4]));
    }
}

#[cfg(test)]
mod persisted_tests {
    use super::*;

    #[test]
    fn is_persisted_as_agrees_with_persisted() {
        let mut m = ConsumerMember {
            member_id: "m".into(),
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            member_epoch: 3,
            previous_epoch: 2,
            state: MemberState::Stable,
            subscribed_topic_names: ["a".to_string(), "b".to_string()].into(),
            subscribed_topic_regex: SubscriptionRegex::new("x.*").ok(),
            server_assignor: None,
            rebalance_timeout_ms: 10,
            assigned: Assignment::from([(Uuid::from_bytes([1; 16]), [0, 1].into())]),
            pending_revocation: Assignment::new(),
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
        };
        let target = Assignment::new();
        let p = m.persisted(&target);
        assert!(m.is_persisted_as(&p, &target));
        m.member_epoch = 4;
        assert!(!m.is_persisted_as(&p, &target));
        m.member_epoch = 3;
        m.subscribed_topic_names.insert("c".into());
        assert!(!m.is_persisted_as(&p, &target));
        m.subscribed_topic_names.remove("c");
        m.subscribed_topic_regex = None;
        assert!(!m.is_persisted_as(&p, &target));
    }
}
