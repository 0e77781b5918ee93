//! Scenario tests of the coordinator state machine, driven through its public API with a
//! simulated clock and an in-memory offsets log.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const GROUP: &str = "group";

fn test_config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

/// The coordinator plus an I/O layer that records replies and performs appends into memory.
struct Harness {
    coordinator: GroupCoordinator,
    now_ms: i64,
    next_request: u64,
    replies: HashMap<RequestId, Reply>,
    answered: std::collections::HashSet<RequestId>,
    /// When false, appends wait in `held` until `complete_held`.
    auto_append: bool,
    held: Vec<(AppendToken, i32, Bytes)>,
    log: BTreeMap<i32, Vec<Bytes>>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(test_config())
    }

    fn with_config(config: GroupConfig) -> Self {
        Self::with_seed(config, 7)
    }

    /// `seed` picks the member-id sequence (a restarted broker gets a new one).
    fn with_seed(config: GroupConfig, seed: u64) -> Self {
        let partitions = config.offsets_topic_partitions;
        let mut coordinator = GroupCoordinator::new(config, seed);
        for p in 0..partitions {
            coordinator.begin_load(p);
            coordinator.finish_load(0, p);
        }
        Self {
            coordinator,
            now_ms: 0,
            next_request: 0,
            replies: HashMap::new(),
            answered: Default::default(),
            auto_append: true,
            held: vec![],
            log: BTreeMap::new(),
        }
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn pump(&mut self) {
        loop {
            let outputs = self.coordinator.take_outputs();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                match output {
                    Output::Reply { request, reply } => {
                        assert!(
                            self.answered.insert(request),
                            "request {request:?} answered twice"
                        );
                        self.replies.insert(request, reply);
                    }
                    Output::Append {
                        partition,
                        token,
                        batches,
                    } => {
                        if self.auto_append {
                            self.log.entry(partition).or_default().push(batches);
                            self.coordinator
                                .append_complete(self.now_ms, token, AppendOutcome::Ok);
                        } else {
                            self.held.push((token, partition, batches));
                        }
                    }
                }
            }
        }
    }

    fn complete_held(&mut self, outcome: AppendOutcome) {
        for (token, partition, batches) in std::mem::take(&mut self.held) {
            if outcome == AppendOutcome::Ok {
                self.log.entry(partition).or_default().push(batches);
            }
            self.coordinator
                .append_complete(self.now_ms, token, outcome);
        }
        self.pump();
    }

    fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
        self.coordinator.tick(self.now_ms);
        self.pump();
    }

    fn take(&mut self, id: RequestId) -> Option<Reply> {
        self.replies.remove(&id)
    }

    fn join(&mut self, req: JoinGroup) -> RequestId {
        let id = self.request_id();
        self.coordinator.join_group(self.now_ms, id, req);
        self.pump();
        id
    }

    fn join_result(&mut self, id: RequestId) -> Option<JoinResult> {
        match self.take(id)? {
            Reply::Join(r) => Some(r),
            other => panic!("expected a JoinGroup reply, got {other:?}"),
        }
    }

    /// KIP-394 first join: returns the member id handed out.
    fn member_id_required(&mut self, client_id: &str) -> String {
        let mut req = join_req("");
        req.client_id = client_id.into();
        let id = self.join(req);
        let result = self.join_result(id).expect("answered at once");
        assert_eq!(result.error, Some(GroupError::MemberIdRequired));
        assert!(result.member_id.starts_with(&format!("{client_id}-")));
        result.member_id
    }

    /// A dynamic member's two-step join; returns (member id, pending join request).
    fn join_dynamic(&mut self, client_id: &str) -> (String, RequestId) {
        let member_id = self.member_id_required(client_id);
        let id = self.join(join_req(&member_id));
        (member_id, id)
    }

    fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> RequestId {
        let id = self.request_id();
        let req = SyncGroup {
            group_id: GROUP.into(),
            generation_id,
            member_id: member_id.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        };
        self.coordinator.sync_group(self.now_ms, id, req);
        self.pump();
        id
    }

    fn sync_result(&mut self, id: RequestId) -> Option<SyncResult> {
        match self.take(id)? {
            Reply::Sync(r) => Some(r),
            other => panic!("expected a SyncGroup reply, got {other:?}"),
        }
    }

    fn heartbeat_with(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Option<GroupError> {
        let id = self.request_id();
        let req = Heartbeat {
            group_id: GROUP.into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(Into::into),
            generation_id,
        };
        self.coordinator.heartbeat(self.now_ms, id, req);
        self.pump();
        match self.take(id) {
            Some(Reply::Heartbeat(e)) => e,
            other => panic!("expected a Heartbeat reply, got {other:?}"),
        }
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> Option<GroupError> {
        self.heartbeat_with(member_id, None, generation_id)
    }

    fn leave(&mut self, members: Vec<LeaveMember>) -> LeaveResult {
        let id = self.request_id();
        self.coordinator.leave_group(
            self.now_ms,
            id,
            LeaveGroup {
                group_id: GROUP.into(),
                members,
            },
        );
        self.pump();
        match self.take(id) {
            Some(Reply::Leave(r)) => r,
            other => panic!("expected a LeaveGroup reply, got {other:?}"),
        }
    }

    fn commit(
        &mut self,
        member_id: &str,
        generation_id: i32,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> RequestId {
        let id = self.request_id();
        let req = OffsetCommit {
            group_id: GROUP.into(),
            generation_id,
            member_id: member_id.into(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics: vec![CommitTopic {
                name: topic.into(),
                partitions: offsets
                    .iter()
                    .map(|(p, o)| CommitPartition {
                        partition: *p,
                        offset: *o,
                        leader_epoch: 3,
                        metadata: Some("md".into()),
                    })
                    .collect(),
            }],
        };
        self.coordinator.offset_commit(self.now_ms, id, req);
        self.pump();
        id
    }

    fn commit_errors(&mut self, id: RequestId) -> Vec<Option<GroupError>> {
        match self.take(id) {
            Some(Reply::OffsetCommit(topics)) => topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .map(|(_, e)| e)
                .collect(),
            other => panic!("expected an OffsetCommit reply, got {other:?}"),
        }
    }

    fn fetch(&mut self, topics: Option<Vec<TopicPartitions>>, require_stable: bool) -> FetchResult {
        let id = self.request_id();
        let req = OffsetFetch {
            group_id: GROUP.into(),
            topics,
            require_stable,
        };
        self.coordinator.offset_fetch(self.now_ms, id, &req);
        self.pump();
        match self.take(id) {
            Some(Reply::OffsetFetch(r)) => r,
            other => panic!("expected an OffsetFetch reply, got {other:?}"),
        }
    }

    fn describe(&mut self) -> DescribeResult {
        let id = self.request_id();
        self.coordinator.describe_group(self.now_ms, id, GROUP);
        self.pump();
        match self.take(id) {
            Some(Reply::Describe(r)) => r,
            other => panic!("expected a DescribeGroups reply, got {other:?}"),
        }
    }

    fn state(&mut self) -> GroupState {
        GroupState::parse(self.describe().state).expect("a classic state")
    }

    /// One member joined, synced, Stable. Returns (member id, generation).
    fn stable_single(&mut self, client_id: &str) -> (String, i32) {
        let (member_id, join) = self.join_dynamic(client_id);
        let result = self
            .join_result(join)
            .expect("single member join completes at once");
        assert_eq!(result.error, None);
        assert_eq!(result.leader, member_id);
        let sync = self.sync(
            &member_id,
            result.generation_id,
            vec![(member_id.clone(), Bytes::from_static(b"a1"))],
        );
        let sync = self.sync_result(sync).expect("stored and answered");
        assert_eq!(sync.error, None);
        (member_id, result.generation_id)
    }
}

/// A static member "i1" (leader) and a dynamic member, Stable at generation 2 with
/// assignments "S" and "D". Returns (static id, dynamic id).
fn stable_static_and_dynamic(h: &mut Harness) -> (String, String) {
    let s_join = h.join(static_join_req("", "i1"));
    let s = h.join_result(s_join).unwrap().member_id;
    let first = h.sync(&s, 1, vec![]);
    assert!(h.sync_result(first).is_some());
    let (d, d_join) = h.join_dynamic("d");
    let s_join = h.join(static_join_req(&s, "i1"));
    let rs = h.join_result(s_join).unwrap();
    let rd = h.join_result(d_join).unwrap();
    assert_eq!(
        (rs.generation_id, rd.generation_id, rs.leader.as_str()),
        (2, 2, s.as_str())
    );
    let assignment = vec![
        (s.clone(), Bytes::from_static(b"S")),
        (d.clone(), Bytes::from_static(b"D")),
    ];
    let ss = h.sync(&s, 2, assignment);
    let sd = h.sync(&d, 2, vec![]);
    assert!(h.sync_result(ss).is_some() && h.sync_result(sd).is_some());
    (s, d)
}

fn join_req(member_id: &str) -> JoinGroup {
    JoinGroup {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from_static(b"m"),
        }],
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
        supports_skip_assignment: true,
    }
}

fn static_join_req(member_id: &str, instance: &str) -> JoinGroup {
    JoinGroup {
        group_instance_id: Some(instance.into()),
        ..join_req(member_id)
    }
}

fn subscription(topics: &[&str]) -> Bytes {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let sub = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string((*t).to_owned()))
            .collect(),
    );
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut buf, 1).unwrap();
    buf.freeze()
}

#[test]
fn kip394_member_id_required_then_single_member_reaches_stable() {
    let mut h = Harness::new();
    let (member, generation) = h.stable_single("client");
    assert_eq!(generation, 1);
    assert_eq!(h.state(), GroupState::Stable);
    assert_eq!(h.heartbeat(&member, 1), None);
    let d = h.describe();
    assert_eq!(d.protocol_data, "range");
    assert_eq!(d.members[0].assignment, Bytes::from_static(b"a1"));
}

#[test]
fn join_without_kip394_gets_a_member_id_directly() {
    let mut h = Harness::new();
    let id = h.join(JoinGroup {
        require_known_member_id: false,
        ..join_req("")
    });
    let result = h.join_result(id).unwrap();
    assert_eq!(result.error, None);
    assert!(!result.member_id.is_empty());
    assert_eq!(result.leader, result.member_id);
    assert_eq!(result.members.len(), 1);
}

#[test]
fn second_member_triggers_rebalance_and_both_get_generation_two() {
    let mut h = Harness::new();
    let (a, g1) = h.stable_single("a");
    let (b, b_join) = h.join_dynamic("b");
    assert!(h.join_result(b_join).is_none(), "waits for a to rejoin");
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&a, g1), Some(GroupError::RebalanceInProgress));
    let a_join = h.join(join_req(&a));
    let ra = h.join_result(a_join).unwrap();
    let rb = h.join_result(b_join).unwrap();
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, a);
    assert_eq!(rb.leader, a);
    assert_eq!(ra.members.len(), 2, "the leader sees every member");
    assert!(rb.members.is_empty());
    assert_eq!(h.state(), GroupState::CompletingRebalance);
    // The follower syncs first and waits for the leader's assignment.
    let sb = h.sync(&b, 2, vec![]);
    assert!(h.sync_result(sb).is_none());
    let sa = h.sync(
        &a,
        2,
        vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ],
    );
    assert_eq!(
        h.sync_result(sa).unwrap().assignment,
        Bytes::from_static(b"A")
    );
    let rb = h.sync_result(sb).unwrap();
    assert_eq!(rb.assignment, Bytes::from_static(b"B"));
    assert_eq!(rb.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.state(), GroupState::Stable);
}

#[test]
fn unknown_member_is_rejected_everywhere() {
    let mut h = Harness::new();
    // Group does not exist yet.
    let id = h.join(join_req("ghost"));
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::UnknownMemberId)
    );
    assert_eq!(h.heartbeat("ghost", 1), Some(GroupError::UnknownMemberId));
    let s = h.sync("ghost", 1, vec![]);
    assert_eq!(
        h.sync_result(s).unwrap().error,
        Some(GroupError::UnknownMemberId)
    );
    // Group exists.
    let (_a, g) = h.stable_single("a");
    assert_eq!(h.heartbeat("ghost", g), Some(GroupError::UnknownMemberId));
    let id = h.join(join_req("ghost"));
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::UnknownMemberId)
    );
    let c = h.commit("ghost", g, "t", &[(0, 1)]);
    assert_eq!(h.commit_errors(c), vec![Some(GroupError::UnknownMemberId)]);
    let leave = h.leave(vec![LeaveMember {
        member_id: "ghost".into(),
        group_instance_id: None,
    }]);
    assert_eq!(leave.error, None);
    assert_eq!(leave.members[0].error, Some(GroupError::UnknownMemberId));
}

#[test]
fn illegal_generation_on_heartbeat_sync_and_commit() {
    let mut h = Harness::new();
    let (a, g) = h.stable_single("a");
    assert_eq!(h.heartbeat(&a, g + 1), Some(GroupError::IllegalGeneration));
    let s = h.sync(&a, g - 1, vec![]);
    assert_eq!(
        h.sync_result(s).unwrap().error,
        Some(GroupError::IllegalGeneration)
    );
    let c = h.commit(&a, g + 5, "t", &[(0, 1)]);
    assert_eq!(
        h.commit_errors(c),
        vec![Some(GroupError::IllegalGeneration)]
    );
    // A commit with a generation for a group that does not exist.
    let id = h.request_id();
    let req = OffsetCommit {
        group_id: "other".into(),
        generation_id: 3,
        member_id: "m".into(),
        group_instance_id: None,
        retention_time_ms: -1,
        topics: vec![CommitTopic {
            name: "t".into(),
            partitions: vec![CommitPartition {
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        }],
    };
    h.coordinator.offset_commit(0, id, req);
    h.pump();
    assert_eq!(
        h.commit_errors(id),
        vec![Some(GroupError::IllegalGeneration)]
    );
}

#[test]
fn rebalance_in_progress_for_sync_and_commit_during_completing() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let (_b, b_join) = h.join_dynamic("b");
    // Preparing: SyncGroup says rebalance in progress; commits of the current generation pass.
    let s = h.sync(&a, 1, vec![]);
    assert_eq!(
        h.sync_result(s).unwrap().error,
        Some(GroupError::RebalanceInProgress)
    );
    let c = h.commit(&a, 1, "t", &[(0, 5)]);
    assert_eq!(
        h.commit_errors(c),
        vec![None],
        "commits are allowed while preparing (cooperative)"
    );
    let a_join = h.join(join_req(&a));
    assert!(h.join_result(a_join).is_some() && h.join_result(b_join).is_some());
    // Completing: commits are refused until the assignment is out.
    let c = h.commit(&a, 2, "t", &[(0, 6)]);
    assert_eq!(
        h.commit_errors(c),
        vec![Some(GroupError::RebalanceInProgress)]
    );
    assert_eq!(h.heartbeat(&a, 2), None);
}

#[test]
fn session_expiry_removes_member_and_empties_group() {
    let mut h = Harness::new();
    let (a, g) = h.stable_single("a");
    h.advance(i64::from(SESSION_MS) - 1);
    assert_eq!(h.heartbeat(&a, g), None);
    h.advance(i64::from(SESSION_MS) - 1);
    assert_eq!(h.state(), GroupState::Stable);
    h.advance(1);
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.describe().members.len(), 0);
    assert_eq!(h.heartbeat(&a, g), Some(GroupError::UnknownMemberId));
}

#[test]
fn session_expiry_of_one_member_rebalances_the_rest() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let (b, b_join) = h.join_dynamic("b");
    let a_join = h.join(join_req(&a));
    let _ = (
        h.join_result(a_join).unwrap(),
        h.join_result(b_join).unwrap(),
    );
    let sa = h.sync(&a, 2, vec![]);
    let sb = h.sync(&b, 2, vec![]);
    assert!(h.sync_result(sa).is_some() && h.sync_result(sb).is_some());
    // Only a keeps heartbeating.
    for _ in 0..3 {
        h.advance(4_000);
        let _ = h.heartbeat(&a, 2);
    }
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&b, 2), Some(GroupError::UnknownMemberId));
    let a_join = h.join(join_req(&a));
    let r = h.join_result(a_join).unwrap();
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
}

#[test]
fn rebalance_timeout_kicks_members_that_do_not_rejoin() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let (b, b_join) = h.join_dynamic("b");
    let a_join = h.join(join_req(&a));
    let _ = (
        h.join_result(a_join).unwrap(),
        h.join_result(b_join).unwrap(),
    );
    for m in [&a, &b] {
        let s = h.sync(m, 2, vec![]);
        assert!(h.sync_result(s).is_some() || m == &b);
    }
    // c joins; a rejoins; b keeps heartbeating but never rejoins.
    let (c, c_join) = h.join_dynamic("c");
    let a_join = h.join(join_req(&a));
    let mut waited = 0;
    while waited < i64::from(REBALANCE_MS) - 2_000 {
        h.advance(2_000);
        waited += 2_000;
        assert_eq!(h.heartbeat(&b, 2), Some(GroupError::RebalanceInProgress));
        assert!(h.join_result(a_join).is_none());
    }
    h.advance(2_000);
    let ra = h.join_result(a_join).unwrap();
    let rc = h.join_result(c_join).unwrap();
    assert_eq!((ra.generation_id, rc.generation_id), (3, 3));
    let members: Vec<_> = ra.members.iter().map(|m| m.member_id.clone()).collect();
    assert!(members.contains(&a) && members.contains(&c) && !members.contains(&b));
    assert_eq!(h.heartbeat(&b, 2), Some(GroupError::UnknownMemberId));
}

#[test]
fn pending_sync_expiry_removes_silent_members() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let (b, b_join) = h.join_dynamic("b");
    let a_join = h.join(join_req(&a));
    let _ = (
        h.join_result(a_join).unwrap(),
        h.join_result(b_join).unwrap(),
    );
    // a syncs (leader) and heartbeats; b never sends SyncGroup.
    let sa = h.sync(&a, 2, vec![]);
    assert!(h.sync_result(sa).is_some());
    for _ in 0..8 {
        h.advance(4_000);
        if h.heartbeat(&a, 2) == Some(GroupError::RebalanceInProgress) {
            break;
        }
    }
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(!h.describe().members.iter().any(|m| m.member_id == b));
}

#[test]
fn pending_kip394_member_blocks_join_until_it_expires() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let _pending = h.member_id_required("p");
    // The leader rejoins: the join phase waits for the pending member.
    let a_join = h.join(join_req(&a));
    assert!(h.join_result(a_join).is_none());
    h.advance(i64::from(SESSION_MS) - 1);
    assert!(h.join_result(a_join).is_none());
    h.advance(1);
    let r = h.join_result(a_join).expect("pending member expired");
    assert_eq!(r.generation_id, 2);
}

#[test]
fn initial_rebalance_delay_collects_members() {
    let mut h = Harness::with_config(GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..test_config()
    });
    let (a, a_join) = h.join_dynamic("a");
    h.advance(1_000);
    let (b, b_join) = h.join_dynamic("b");
    h.advance(1_999);
    assert!(h.join_result(a_join).is_none());
    h.advance(1);
    // b arrived during the delay: it is extended by another delay.
    assert!(h.join_result(a_join).is_none());
    h.advance(2_999);
    assert!(h.join_result(a_join).is_none());
    h.advance(1);
    let ra = h.join_result(a_join).unwrap();
    let rb = h.join_result(b_join).unwrap();
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    assert_eq!(ra.members.len() + rb.members.len(), 2);
    assert!([a, b].contains(&ra.leader));
}

#[test]
fn static_member_restart_takes_over_without_rebalance() {
    let mut h = Harness::new();
    let (s, d) = stable_static_and_dynamic(&mut h);
    // s restarts: no member id, same instance id, same metadata.
    let rejoin = h.join(static_join_req("", "i1"));
    let r = h
        .join_result(rejoin)
        .expect("answered once the group is stored");
    assert_eq!(r.error, None);
    assert_ne!(r.member_id, s);
    assert_eq!(r.generation_id, 2, "no new generation");
    // KIP-814: the restarted leader knows it leads but must not assign.
    assert_eq!(
        (r.leader.as_str(), r.skip_assignment),
        (r.member_id.as_str(), true)
    );
    assert_eq!(r.members.len(), 2);
    assert_eq!(h.state(), GroupState::Stable);
    assert_eq!(
        h.heartbeat(&d, 2),
        None,
        "the other member sees no rebalance"
    );
    assert_eq!(
        h.heartbeat_with(&s, Some("i1"), 2),
        Some(GroupError::FencedInstanceId)
    );
    let s2 = r.member_id;
    let sync = h.sync(&s2, 2, vec![]);
    assert_eq!(
        h.sync_result(sync).unwrap().assignment,
        Bytes::from_static(b"S")
    );
    assert_eq!(h.heartbeat_with(&s2, Some("i1"), 2), None);
    // The old id is fenced on join, sync and commit too.
    let j = h.join(static_join_req(&s, "i1"));
    assert_eq!(
        h.join_result(j).unwrap().error,
        Some(GroupError::FencedInstanceId)
    );
    let id = h.request_id();
    h.coordinator.sync_group(
        h.now_ms,
        id,
        SyncGroup {
            group_id: GROUP.into(),
            generation_id: 2,
            member_id: s.clone(),
            group_instance_id: Some("i1".into()),
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
    );
    h.pump();
    assert_eq!(
        h.sync_result(id).unwrap().error,
        Some(GroupError::FencedInstanceId)
    );
    let id = h.request_id();
    h.coordinator.offset_commit(
        h.now_ms,
        id,
        OffsetCommit {
            group_id: GROUP.into(),
            generation_id: 2,
            member_id: s,
            group_instance_id: Some("i1".into()),
            retention_time_ms: -1,
            topics: vec![CommitTopic {
                name: "t".into(),
                partitions: vec![CommitPartition {
                    partition: 0,
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                }],
            }],
        },
    );
    h.pump();
    assert_eq!(
        h.commit_errors(id),
        vec![Some(GroupError::FencedInstanceId)]
    );
}

#[test]
fn static_member_restart_with_new_metadata_rebalances() {
    let mut h = Harness::new();
    let s_join = h.join(static_join_req("", "i1"));
    let s = h.join_result(s_join).unwrap().member_id;
    let ss = h.sync(&s, 1, vec![]);
    assert!(h.sync_result(ss).is_some());
    let mut req = static_join_req("", "i1");
    req.protocols[0].metadata = Bytes::from_static(b"changed");
    let rejoin = h.join(req);
    let r = h
        .join_result(rejoin)
        .expect("single member: the rebalance completes at once");
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.leader, r.member_id);
}

#[test]
fn static_member_survives_rebalance_without_rejoining_until_session_expiry() {
    let mut h = Harness::new();
    let s_join = h.join(static_join_req("", "i1"));
    let s = h.join_result(s_join).unwrap().member_id;
    let ss = h.sync(&s, 1, vec![]);
    assert!(h.sync_result(ss).is_some());
    let (_d, d_join) = h.join_dynamic("d");
    h.advance(i64::from(SESSION_MS) - 1);
    let _ = h.heartbeat_with(&s, Some("i1"), 1);
    h.advance(REBALANCE_MS as i64 - i64::from(SESSION_MS) + 1);
    // Rebalance timeout: the static member stays (it is not a laggard to kick).
    let rd = h
        .join_result(d_join)
        .expect("join phase completed by its timeout");
    assert_eq!(rd.generation_id, 2);
    assert!(h.describe().members.iter().any(|m| m.member_id == s));
}

#[test]
fn leave_group_batch_and_by_instance_id() {
    let mut h = Harness::new();
    let (s, d) = stable_static_and_dynamic(&mut h);
    let leave = h.leave(vec![
        LeaveMember {
            member_id: String::new(),
            group_instance_id: Some("i1".into()),
        },
        LeaveMember {
            member_id: d.clone(),
            group_instance_id: None,
        },
        LeaveMember {
            member_id: "ghost".into(),
            group_instance_id: None,
        },
        LeaveMember {
            member_id: "stale".into(),
            group_instance_id: Some("i1".into()),
        },
    ]);
    let errors: Vec<_> = leave.members.iter().map(|m| m.error).collect();
    // i1 left first, so "stale"+i1 is unknown rather than fenced.
    assert_eq!(
        errors,
        vec![
            None,
            None,
            Some(GroupError::UnknownMemberId),
            Some(GroupError::UnknownMemberId)
        ]
    );
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.heartbeat(&s, 2), Some(GroupError::UnknownMemberId));
}

#[test]
fn leave_with_stale_member_id_of_static_member_is_fenced() {
    let mut h = Harness::new();
    let s_join = h.join(static_join_req("", "i1"));
    let _ = h.join_result(s_join).unwrap();
    let leave = h.leave(vec![LeaveMember {
        member_id: "stale".into(),
        group_instance_id: Some("i1".into()),
    }]);
    assert_eq!(leave.members[0].error, Some(GroupError::FencedInstanceId));
}

#[test]
fn leader_leaving_while_completing_tells_followers_to_rejoin() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let (b, b_join) = h.join_dynamic("b");
    let a_join = h.join(join_req(&a));
    let _ = (
        h.join_result(a_join).unwrap(),
        h.join_result(b_join).unwrap(),
    );
    let sb = h.sync(&b, 2, vec![]);
    assert!(h.sync_result(sb).is_none());
    h.leave(vec![LeaveMember {
        member_id: a,
        group_instance_id: None,
    }]);
    assert_eq!(
        h.sync_result(sb).unwrap().error,
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    let b_join = h.join(join_req(&b));
    let r = h.join_result(b_join).unwrap();
    assert_eq!((r.generation_id, r.leader.as_str()), (3, b.as_str()));
}

#[test]
fn duplicate_join_answers_the_older_request() {
    let mut h = Harness::new();
    let (s, d) = stable_static_and_dynamic(&mut h);
    let (_c, c_join) = h.join_dynamic("c");
    let first = h.join(join_req(&d));
    let second = h.join(join_req(&d));
    assert_eq!(
        h.join_result(first).unwrap().error,
        Some(GroupError::RebalanceInProgress)
    );
    assert!(
        h.join_result(second).is_none(),
        "still waiting for the static member"
    );
    let s_join = h.join(static_join_req(&s, "i1"));
    assert_eq!(h.join_result(second).unwrap().generation_id, 3);
    assert!(h.join_result(s_join).is_some() && h.join_result(c_join).is_some());
}

#[test]
fn follower_rejoin_with_same_metadata_in_stable_keeps_generation() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let (b, b_join) = h.join_dynamic("b");
    let a_join = h.join(join_req(&a));
    let _ = (
        h.join_result(a_join).unwrap(),
        h.join_result(b_join).unwrap(),
    );
    let sa = h.sync(&a, 2, vec![]);
    let sb = h.sync(&b, 2, vec![]);
    let _ = (h.sync_result(sa), h.sync_result(sb));
    let again = h.join(join_req(&b));
    let r = h.join_result(again).unwrap();
    assert_eq!((r.error, r.generation_id), (None, 2));
    assert_eq!(h.state(), GroupState::Stable);
    // The leader rejoining forces a rebalance.
    let _lead = h.join(join_req(&a));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

#[test]
fn protocol_checks() {
    let mut h = Harness::new();
    let (a, g) = h.stable_single("a");
    let mut other = join_req("");
    other.protocol_type = "connect".into();
    let id = h.join(other);
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut other = join_req("");
    other.protocols[0].name = "roundrobin".into();
    let id = h.join(other);
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let id = h.request_id();
    h.coordinator.sync_group(
        0,
        id,
        SyncGroup {
            group_id: GROUP.into(),
            generation_id: g,
            member_id: a,
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("sticky".into()),
            assignments: vec![],
        },
    );
    h.pump();
    assert_eq!(
        h.sync_result(id).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut empty = join_req("");
    empty.group_id = "fresh".into();
    empty.protocols.clear();
    let id = h.join(empty);
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InconsistentGroupProtocol)
    );
}

#[test]
fn invalid_group_id_and_session_timeout() {
    let mut h = Harness::new();
    let id = h.join(JoinGroup {
        group_id: String::new(),
        ..join_req("")
    });
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InvalidGroupId)
    );
    let id = h.join(JoinGroup {
        session_timeout_ms: 10,
        ..join_req("")
    });
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InvalidSessionTimeout)
    );
    let id = h.join(JoinGroup {
        session_timeout_ms: i32::MAX,
        ..join_req("")
    });
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InvalidSessionTimeout)
    );
}

#[test]
fn group_max_size_is_enforced() {
    let mut h = Harness::with_config(GroupConfig {
        max_size: 2,
        ..test_config()
    });
    let _a = h.member_id_required("a");
    let _b = h.member_id_required("b");
    let id = h.join(join_req(""));
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::GroupMaxSizeReached)
    );
}

#[test]
fn loading_and_not_coordinator() {
    let mut h = Harness::new();
    let (a, g) = h.stable_single("a");
    let partition = h.coordinator.partition_for(GROUP);
    h.coordinator.begin_load(partition);
    let id = h.join(join_req(""));
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::CoordinatorLoadInProgress)
    );
    assert_eq!(
        h.heartbeat(&a, g),
        None,
        "heartbeats are answered blindly while loading"
    );
    let s = h.sync(&a, g, vec![]);
    assert_eq!(
        h.sync_result(s).unwrap().error,
        Some(GroupError::RebalanceInProgress)
    );
    let c = h.commit(&a, g, "t", &[(0, 1)]);
    assert_eq!(
        h.commit_errors(c),
        vec![Some(GroupError::CoordinatorLoadInProgress)]
    );
    assert_eq!(
        h.fetch(None, false).error,
        Some(GroupError::CoordinatorLoadInProgress)
    );
    assert_eq!(
        h.describe().error,
        Some(GroupError::CoordinatorLoadInProgress)
    );
    h.coordinator.unload_partition(partition);
    let id = h.join(join_req(""));
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::NotCoordinator)
    );
    assert_eq!(h.heartbeat(&a, g), Some(GroupError::NotCoordinator));
}

#[test]
fn unload_answers_waiting_requests() {
    let mut h = Harness::new();
    let (a, _) = h.stable_single("a");
    let (_b, b_join) = h.join_dynamic("b");
    h.coordinator
        .unload_partition(h.coordinator.partition_for(GROUP));
    h.pump();
    assert_eq!(
        h.join_result(b_join).unwrap().error,
        Some(GroupError::NotCoordinator)
    );
    assert_eq!(h.heartbeat(&a, 1), Some(GroupError::NotCoordinator));
}

/// Cluster mode: the offsets partition's leadership moves away while a commit is being
/// replicated, then comes back to this node (same coordinator, reloaded from the log).
#[test]
fn leadership_moves_away_and_back() {
    let mut h = Harness::new();
    let partition = h.coordinator.partition_for(GROUP);
    let (a, g) = h.stable_single("a");
    let c = h.commit(&a, g, "t", &[(0, 100)]);
    assert_eq!(h.commit_errors(c), vec![None]);
    h.auto_append = false;
    let in_flight = h.commit(&a, g, "t", &[(0, 101)]);
    assert!(h.take(in_flight).is_none(), "waits for replication");

    h.coordinator.unload_partition(partition);
    h.pump();
    assert_eq!(h.heartbeat(&a, g), Some(GroupError::NotCoordinator));
    let c = h.commit(&a, g, "t", &[(0, 102)]);
    assert_eq!(h.commit_errors(c), vec![Some(GroupError::NotCoordinator)]);
    assert_eq!(h.describe().error, Some(GroupError::NotCoordinator));
    // The group's timers went with it: a session timeout later nothing expires or is written.
    let log_before = h.log.clone();
    h.advance(i64::from(SESSION_MS) * 3);
    assert_eq!(h.held.len(), 1, "only the in-flight commit");
    assert_eq!(h.log, log_before);
    // The replica lost leadership, so the append fails: the commit is answered once.
    h.complete_held(AppendOutcome::NotLeader);
    assert_eq!(
        h.commit_errors(in_flight),
        vec![Some(GroupError::NotCoordinator)]
    );
    h.auto_append = true;

    // Leading again: loading answers COORDINATOR_LOAD_IN_PROGRESS, then the log's state is
    // back (101 was never replicated, so 100 is the committed offset).
    h.coordinator.begin_load(partition);
    let c = h.commit(&a, g, "t", &[(0, 103)]);
    assert_eq!(
        h.commit_errors(c),
        vec![Some(GroupError::CoordinatorLoadInProgress)]
    );
    for batches in h.log.get(&partition).cloned().into_iter().flatten() {
        h.coordinator.replay(partition, batches).unwrap();
    }
    h.coordinator.finish_load(h.now_ms, partition);
    h.pump();
    let fetched = h.fetch(None, false);
    assert_eq!(fetched.topics[0].partitions[0].offset, 100);
    let d = h.describe();
    assert_eq!((d.error, d.state), (None, "Stable"));
    assert_eq!(d.members.len(), 1);
    assert_eq!(
        h.heartbeat(&a, g),
        None,
        "members carry on at their generation"
    );
}

#[test]
fn standalone_commit_creates_empty_group_and_fetch_returns_it() {
    let mut h = Harness::new();
    let c = h.commit("", -1, "t", &[(0, 10), (1, 20)]);
    assert_eq!(h.commit_errors(c), vec![None, None]);
    let all = h.fetch(None, false);
    let offsets: Vec<_> = all.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition, p.offset, p.leader_epoch))
        .collect();
    assert_eq!(offsets, vec![(0, 10, 3), (1, 20, 3)]);
    let some = h.fetch(
        Some(vec![TopicPartitions {
            name: "t".into(),
            partitions: vec![1, 7],
        }]),
        false,
    );
    let got: Vec<_> = some.topics[0]
        .partitions
        .iter()
        .map(|p| (p.offset, p.metadata.clone()))
        .collect();
    assert_eq!(got, vec![(20, "md".to_string()), (-1, String::new())]);
    let d = h.describe();
    assert_eq!((d.state, d.protocol_type.as_str()), ("Empty", ""));
    // Once the group has members, standalone commits are refused.
    let (_a, _) = h.stable_single("a");
    let c = h.commit("", -1, "t", &[(0, 11)]);
    assert_eq!(h.commit_errors(c), vec![Some(GroupError::UnknownMemberId)]);
}

#[test]
fn require_stable_sees_in_flight_commits_and_failed_appends_do_not_apply() {
    let mut h = Harness::new();
    let c = h.commit("", -1, "t", &[(0, 10)]);
    assert_eq!(h.commit_errors(c), vec![None]);
    h.auto_append = false;
    let c = h.commit("", -1, "t", &[(0, 11)]);
    assert!(h.take(c).is_none(), "waits for the append");
    let tp = Some(vec![TopicPartitions {
        name: "t".into(),
        partitions: vec![0],
    }]);
    let stable = h.fetch(tp.clone(), true);
    assert_eq!(
        stable.topics[0].partitions[0].error,
        Some(GroupError::UnstableOffsetCommit)
    );
    let plain = h.fetch(tp.clone(), false);
    assert_eq!(plain.topics[0].partitions[0].offset, 10);
    h.complete_held(AppendOutcome::Failed);
    assert_eq!(
        h.commit_errors(c),
        vec![Some(GroupError::CoordinatorNotAvailable)]
    );
    assert_eq!(h.fetch(tp.clone(), true).topics[0].partitions[0].offset, 10);
    let c = h.commit("", -1, "t", &[(0, 12)]);
    h.complete_held(AppendOutcome::Ok);
    assert_eq!(h.commit_errors(c), vec![None]);
    assert_eq!(h.fetch(tp, true).topics[0].partitions[0].offset, 12);
}

#[test]
fn offset_metadata_too_large_is_per_partition() {
    let mut h = Harness::new();
    let id = h.request_id();
    let big = "x".repeat(4097);
    h.coordinator.offset_commit(
        0,
        id,
        OffsetCommit {
            group_id: GROUP.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics: vec![CommitTopic {
                name: "t".into(),
                partitions: vec![
                    CommitPartition {
                        partition: 0,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: Some(big),
                    },
                    CommitPartition {
                        partition: 1,
                        offset: 2,
                        leader_epoch: -1,
                        metadata: None,
                    },
                ],
            }],
        },
    );
    h.pump();
    assert_eq!(
        h.commit_errors(id),
        vec![Some(GroupError::OffsetMetadataTooLarge), None]
    );
}

#[test]
fn sync_store_failure_resets_and_rebalances() {
    let mut h = Harness::new();
    let (a, a_join) = h.join_dynamic("a");
    let r = h.join_result(a_join).unwrap();
    h.auto_append = false;
    let s = h.sync(
        &a,
        r.generation_id,
        vec![(a.clone(), Bytes::from_static(b"x"))],
    );
    h.complete_held(AppendOutcome::NotLeader);
    assert_eq!(
        h.sync_result(s).unwrap().error,
        Some(GroupError::NotCoordinator)
    );
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

fn consumer_group_with_subscription(h: &mut Harness, topics: &[&str]) -> (String, i32) {
    let member = h.member_id_required("a");
    let mut req = join_req(&member);
    req.protocols[0].metadata = subscription(topics);
    let j = h.join(req);
    let g = h.join_result(j).unwrap().generation_id;
    let s = h.sync(&member, g, vec![]);
    assert!(h.sync_result(s).is_some());
    (member, g)
}

#[test]
fn offset_delete_respects_subscriptions() {
    let mut h = Harness::new();
    let (a, g) = consumer_group_with_subscription(&mut h, &["in-use"]);
    let c1 = h.commit(&a, g, "in-use", &[(0, 1)]);
    let c2 = h.commit(&a, g, "old", &[(0, 2)]);
    assert_eq!(h.commit_errors(c1), vec![None]);
    assert_eq!(h.commit_errors(c2), vec![None]);
    let id = h.request_id();
    h.coordinator.offset_delete(
        h.now_ms,
        id,
        OffsetDelete {
            group_id: GROUP.into(),
            topics: vec![
                TopicPartitions {
                    name: "in-use".into(),
                    partitions: vec![0],
                },
                TopicPartitions {
                    name: "old".into(),
                    partitions: vec![0],
                },
            ],
        },
    );
    h.pump();
    let Some(Reply::OffsetDelete(r)) = h.take(id) else {
        panic!()
    };
    assert_eq!(r.error, None);
    assert_eq!(
        r.topics[0].partitions,
        vec![(0, Some(GroupError::GroupSubscribedToTopic))]
    );
    assert_eq!(r.topics[1].partitions, vec![(0, None)]);
    let all = h.fetch(None, false);
    assert_eq!(all.topics.len(), 1);
    assert_eq!(all.topics[0].name, "in-use");
    // Unknown group.
    let id = h.request_id();
    h.coordinator.offset_delete(
        h.now_ms,
        id,
        OffsetDelete {
            group_id: "nope".into(),
            topics: vec![],
        },
    );
    h.pump();
    let Some(Reply::OffsetDelete(r)) = h.take(id) else {
        panic!()
    };
    assert_eq!(r.error, Some(GroupError::GroupIdNotFound));
}

#[test]
fn delete_groups() {
    let mut h = Harness::new();
    let del = |h: &mut Harness, group: &str| {
        let id = h.request_id();
        h.coordinator.delete_group(h.now_ms, id, group);
        h.pump();
        match h.take(id) {
            Some(Reply::DeleteGroup(e)) => e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(del(&mut h, "missing"), Some(GroupError::GroupIdNotFound));
    let (a, _) = h.stable_single("a");
    assert_eq!(del(&mut h, GROUP), Some(GroupError::NonEmptyGroup));
    h.leave(vec![LeaveMember {
        member_id: a,
        group_instance_id: None,
    }]);
    let c = h.commit("", -1, "t", &[(0, 1)]);
    let _ = h.commit_errors(c);
    assert_eq!(del(&mut h, GROUP), None);
    assert!(!h.describe().exists);
    assert!(h.fetch(None, false).topics.is_empty());
}

#[test]
fn list_groups_with_state_filter() {
    let mut h = Harness::new();
    let _ = h.stable_single("a");
    let c = h.request_id();
    h.coordinator.offset_commit(
        0,
        c,
        OffsetCommit {
            group_id: "simple".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics: vec![CommitTopic {
                name: "t".into(),
                partitions: vec![CommitPartition {
                    partition: 0,
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                }],
            }],
        },
    );
    h.pump();
    let list = |h: &mut Harness, states: &[&str]| {
        let id = h.request_id();
        let filter = ListGroups {
            states_filter: states.iter().map(|s| s.to_string()).collect(),
            types_filter: vec![],
        };
        h.coordinator.list_groups(0, id, &filter);
        h.pump();
        match h.take(id) {
            Some(Reply::List(r)) => r.groups.into_iter().map(|g| g.group_id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        list(&mut h, &[]),
        vec![GROUP.to_string(), "simple".to_string()]
    );
    assert_eq!(list(&mut h, &["stable"]), vec![GROUP.to_string()]);
    assert_eq!(list(&mut h, &["Empty", "Dead"]), vec!["simple".to_string()]);
}

#[test]
fn describe_hides_metadata_unless_stable() {
    let mut h = Harness::new();
    let (_a, _) = h.stable_single("a");
    assert_eq!(h.describe().members[0].metadata, Bytes::from_static(b"m"));
    let (_b, _bj) = h.join_dynamic("b");
    let d = h.describe();
    assert_eq!(d.state, "PreparingRebalance");
    assert_eq!(d.protocol_data, "");
    assert!(
        d.members
            .iter()
            .all(|m| m.metadata.is_empty() && m.assignment.is_empty())
    );
}

/// Replays the harness's log into a fresh coordinator.
fn reload(h: &Harness, now_ms: i64) -> Harness {
    let mut fresh = Harness::with_seed(h.coordinator.config().clone(), 8);
    fresh.now_ms = now_ms;
    let partition = h.coordinator.partition_for(GROUP);
    fresh.coordinator.begin_load(partition);
    for batches in h.log.get(&partition).into_iter().flatten() {
        fresh
            .coordinator
            .replay(partition, batches.clone())
            .unwrap();
    }
    fresh.coordinator.finish_load(now_ms, partition);
    fresh.log = h.log.clone();
    fresh
}

#[test]
fn state_survives_reload_from_the_offsets_log() {
    let mut h = Harness::new();
    let (s, d) = stable_static_and_dynamic(&mut h);
    let c = h.commit(&d, 2, "t", &[(0, 100), (1, 200)]);
    assert_eq!(h.commit_errors(c), vec![None, None]);
    let before = h.describe();

    let mut r = reload(&h, 50);
    let after = r.describe();
    assert_eq!(after, before);
    assert_eq!(r.heartbeat(&d, 2), None);
    assert_eq!(r.heartbeat_with(&s, Some("i1"), 2), None);
    let all = r.fetch(None, false);
    let offsets: Vec<_> = all.topics[0]
        .partitions
        .iter()
        .map(|p| (p.offset, p.metadata.clone()))
        .collect();
    assert_eq!(offsets, vec![(100, "md".into()), (200, "md".into())]);
    // The static member restarts after the broker restart: still no rebalance.
    let rejoin = r.join(static_join_req("", "i1"));
    let res = r.join_result(rejoin).unwrap();
    assert_eq!((res.error, res.generation_id), (None, 2));
    assert_ne!(res.member_id, s);
    assert_eq!(
        (res.leader.as_str(), res.skip_assignment),
        (res.member_id.as_str(), true)
    );
    // Members that never come back expire after their session.
    r.advance(i64::from(SESSION_MS) + 1);
    assert_ne!(r.state(), GroupState::Stable);
}

#[test]
fn deleted_group_stays_deleted_after_reload() {
    let mut h = Harness::new();
    let c = h.commit("", -1, "t", &[(0, 1)]);
    let _ = h.commit_errors(c);
    let id = h.request_id();
    h.coordinator.delete_group(0, id, GROUP);
    h.pump();
    let mut r = reload(&h, 0);
    assert!(!r.describe().exists);
}

#[test]
fn offsets_expire_after_retention_and_empty_group_goes_away() {
    let retention = 60_000;
    let config = GroupConfig {
        offsets_retention_ms: retention,
        offsets_retention_check_interval_ms: 1_000,
        ..test_config()
    };
    let mut h = Harness::with_config(config.clone());
    let c = h.commit("", -1, "t", &[(0, 1)]);
    let _ = h.commit_errors(c);
    h.advance(retention - 1_000);
    assert_eq!(h.fetch(None, false).topics.len(), 1);
    h.advance(2_000);
    assert!(h.fetch(None, false).topics.is_empty());
    assert!(
        !h.describe().exists,
        "empty group without offsets is removed"
    );
    let r = reload(&h, h.now_ms);
    assert!(r.coordinator.groups.is_empty(), "tombstones were written");
}

#[test]
fn consumer_group_offsets_expire_from_when_it_became_empty() {
    let retention = 60_000;
    let config = GroupConfig {
        offsets_retention_ms: retention,
        offsets_retention_check_interval_ms: 1_000,
        ..test_config()
    };
    let mut h = Harness::with_config(config);
    let (a, g) = consumer_group_with_subscription(&mut h, &["t"]);
    let c = h.commit(&a, g, "t", &[(0, 1)]);
    let _ = h.commit_errors(c);
    // Stable and subscribed: never expires.
    for _ in 0..20 {
        h.advance(5_000);
        assert_eq!(h.heartbeat(&a, g), None);
    }
    assert_eq!(h.fetch(None, false).topics.len(), 1);
    h.leave(vec![LeaveMember {
        member_id: a,
        group_instance_id: None,
    }]);
    h.advance(retention - 2_000);
    assert_eq!(h.fetch(None, false).topics.len(), 1);
    h.advance(3_000);
    assert!(h.fetch(None, false).topics.is_empty());
}

/// Random operations from several clients; checks that no request is answered twice and that
/// once time runs far ahead every request has been answered.
#[test]
fn random_operations_answer_every_request_exactly_once() {
    for seed in 0..40u64 {
        let mut h = Harness::new();
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut members: Vec<(String, Option<String>)> = vec![];
        let mut issued = vec![];
        for _ in 0..300 {
            let pick = (next() % 8) as usize;
            let generation = (next() % 4) as i32;
            let member = if members.is_empty() {
                (String::new(), None)
            } else {
                members[next() as usize % members.len()].clone()
            };
            match pick {
                0 => {
                    let id = h.join(join_req(""));
                    issued.push(id);
                    if let Some(r) = h.join_result(id)
                        && !r.member_id.is_empty()
                    {
                        members.push((r.member_id, None));
                    }
                }
                1 => {
                    let instance = format!("i{}", next() % 3);
                    let id = h.join(static_join_req(&member.0, &instance));
                    issued.push(id);
                    members.push((String::new(), Some(instance)));
                }
                2 => issued.push(h.join(join_req(&member.0))),
                3 => {
                    let assignments = members
                        .iter()
                        .map(|(m, _)| (m.clone(), Bytes::from_static(b"x")))
                        .collect();
                    issued.push(h.sync(&member.0, generation, assignments));
                }
                4 => {
                    let _ = h.heartbeat_with(&member.0, member.1.as_deref(), generation);
                }
                5 => {
                    let _ = h.leave(vec![LeaveMember {
                        member_id: member.0.clone(),
                        group_instance_id: member.1.clone(),
                    }]);
                }
                6 => issued.push(h.commit(&member.0, generation, "t", &[(0, 1)])),
                _ => h.advance((next() % 8_000) as i64),
            }
        }
        h.advance(10 * 60 * 1000);
        h.advance(10 * 60 * 1000);
        for id in issued {
            assert!(
                h.answered.contains(&id),
                "seed {seed}: request {id:?} never answered"
            );
        }
    }
}

// ---- KIP-848 consumer groups --------------------------------------------------------------

mod kip848 {
    use std::collections::BTreeSet;

    use uuid::Uuid;

    use super::*;
    use crate::group::consumer::TopicResolver;

    const TOPIC: &str = "t";

    struct Topics(Vec<(String, Uuid, i32)>);

    impl TopicResolver for Topics {
        fn topic_by_name(&self, name: &str) -> Option<(Uuid, i32)> {
            self.0.iter().find(|t| t.0 == name).map(|t| (t.1, t.2))
        }
        fn topic_by_id(&self, id: &Uuid) -> Option<(String, i32)> {
            self.0
                .iter()
                .find(|t| t.1 == *id)
                .map(|t| (t.0.clone(), t.2))
        }
        fn topic_names(&self) -> Vec<String> {
            self.0.iter().map(|t| t.0.clone()).collect()
        }
    }

    fn topic_id() -> Uuid {
        Uuid::from_bytes([7; 16])
    }

    fn topics(partitions: i32) -> Topics {
        Topics(vec![(TOPIC.into(), topic_id(), partitions)])
    }

    fn hb(member_id: &str, epoch: i32) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            group_id: GROUP.into(),
            member_id: member_id.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: if epoch == 0 { 30_000 } else { -1 },
            subscribed_topic_names: (epoch == 0).then(|| vec![TOPIC.to_string()]),
            subscribed_topic_regex: None,
            server_assignor: None,
            owned: (epoch == 0).then(Assignment::new),
            client_id: "c".into(),
            client_host: "/h".into(),
        }
    }

    fn owned(parts: &[i32]) -> Assignment {
        Assignment::from([(topic_id(), parts.iter().copied().collect::<BTreeSet<i32>>())])
    }

    fn parts(a: &Option<Assignment>) -> Option<Vec<i32>> {
        a.as_ref().map(|a| {
            a.get(&topic_id())
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default()
        })
    }

    impl Harness {
        fn cg(&mut self, req: ConsumerHeartbeat, topics: &Topics) -> ConsumerHeartbeatResult {
            let id = self.request_id();
            self.coordinator
                .consumer_group_heartbeat(self.now_ms, id, req, topics);
            self.pump();
            match self.take(id) {
                Some(Reply::ConsumerHeartbeat(r)) => r,
                other => panic!("expected a ConsumerGroupHeartbeat reply, got {other:?}"),
            }
        }
    }

    #[test]
    fn single_member_gets_every_partition() {
        let mut h = Harness::new();
        let t = topics(4);
        let r = h.cg(hb("", 0), &t);
        assert_eq!(r.error, None);
        let member = r.member_id.unwrap();
        assert_eq!(r.member_epoch, 1);
        assert_eq!(parts(&r.assignment), Some(vec![0, 1, 2, 3]));
        assert_eq!(r.heartbeat_interval_ms, 5_000);
        // A plain heartbeat: nothing changed, no assignment sent.
        let r = h.cg(hb(&member, 1), &t);
        assert_eq!((r.error, r.member_epoch, r.assignment), (None, 1, None));
    }

    #[test]
    fn second_member_waits_for_revocation() {
        let mut h = Harness::new();
        let t = topics(4);
        let a = h.cg(hb("a", 0), &t);
        assert_eq!(parts(&a.assignment), Some(vec![0, 1, 2, 3]));
        let b = h.cg(hb("b", 0), &t);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(
            parts(&b.assignment),
            Some(vec![]),
            "a still owns everything"
        );
        // a is told to give up two partitions and keeps its epoch until it has.
        let a = h.cg(hb("a", 1), &t);
        assert_eq!(a.member_epoch, 1);
        let kept = parts(&a.assignment).unwrap();
        assert_eq!(kept.len(), 2);
        let mut still = hb("a", 1);
        still.owned = Some(owned(&[0, 1, 2, 3]));
        let a2 = h.cg(still, &t);
        assert_eq!(a2.member_epoch, 1, "not revoked yet");
        let mut revoked = hb("a", 1);
        revoked.owned = Some(owned(&kept));
        let a3 = h.cg(revoked, &t);
        assert_eq!(a3.member_epoch, 2);
        // Now b gets the released partitions.
        let b = h.cg(hb("b", 2), &t);
        let got = parts(&b.assignment).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| !kept.contains(p)));
        let d = {
            let id = h.request_id();
            h.coordinator.consumer_group_describe(h.now_ms, id, GROUP);
            h.pump();
            match h.take(id) {
                Some(Reply::ConsumerDescribe(d)) => d,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            (d.state, d.group_epoch, d.assignment_epoch),
            ("Stable", 2, 2)
        );
    }

    #[test]
    fn epochs_and_members_are_checked() {
        let mut h = Harness::new();
        let t = topics(2);
        let _ = h.cg(hb("a", 0), &t);
        assert_eq!(
            h.cg(hb("ghost", 1), &t).error,
            Some(GroupError::UnknownMemberId)
        );
        assert_eq!(
            h.cg(hb("a", 7), &t).error,
            Some(GroupError::FencedMemberEpoch)
        );
        let mut bad = hb("a", 0);
        bad.subscribed_topic_names = None;
        assert_eq!(h.cg(bad, &t).error, Some(GroupError::InvalidRequest));
        let mut bad = hb("a", 0);
        bad.server_assignor = Some("sticky".into());
        assert_eq!(h.cg(bad, &t).error, Some(GroupError::UnsupportedAssignor));
        // A classic member's group is not a consumer group, and vice versa.
        let j = h.join(join_req(""));
        assert_eq!(
            h.join_result(j).unwrap().error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        let mut other = hb("", 0);
        other.group_id = "classic".into();
        let mut classic = join_req("");
        classic.group_id = "classic".into();
        classic.require_known_member_id = false;
        let j = h.join(classic);
        assert_eq!(h.join_result(j).unwrap().error, None);
        assert_eq!(h.cg(other, &t).error, Some(GroupError::GroupIdNotFound));
    }

    #[test]
    fn leave_and_session_expiry_reassign() {
        let mut h = Harness::new();
        let t = topics(2);
        let _ = h.cg(hb("a", 0), &t);
        let _ = h.cg(hb("b", 0), &t);
        let r = h.cg(hb("a", -1), &t);
        assert_eq!((r.error, r.member_epoch), (None, -1));
        // b gets both partitions once a's are free.
        let r = h.cg(hb("b", 2), &t);
        assert_eq!(parts(&r.assignment), Some(vec![0, 1]));
        let c = h.cg(hb("c", 0), &t);
        assert!(c.error.is_none());
        // c stops heartbeating: it expires after the session timeout, b keeps going.
        for _ in 0..10 {
            h.advance(5_000);
            let mut keep = hb("b", h.cg(hb("b", 4), &t).member_epoch);
            keep.owned = None;
            let _ = h.cg(keep, &t);
        }
        let c = h.cg(hb(&c.member_id.unwrap(), c.member_epoch), &t);
        assert_eq!(c.error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn offset_commits_check_the_member_epoch() {
        let mut h = Harness::new();
        let t = topics(2);
        let r = h.cg(hb("a", 0), &t);
        let ok = h.commit("a", r.member_epoch, "t", &[(0, 9)]);
        assert_eq!(h.commit_errors(ok), vec![None]);
        let stale = h.commit("a", r.member_epoch - 1, "t", &[(0, 9)]);
        assert_eq!(
            h.commit_errors(stale),
            vec![Some(GroupError::StaleMemberEpoch)]
        );
        let ghost = h.commit("z", 1, "t", &[(0, 9)]);
        assert_eq!(
            h.commit_errors(ghost),
            vec![Some(GroupError::UnknownMemberId)]
        );
        assert_eq!(h.fetch(None, false).topics[0].partitions[0].offset, 9);
        // Listed as a consumer group, not twice.
        let id = h.request_id();
        h.coordinator.list_groups(
            0,
            id,
            &ListGroups {
                states_filter: vec![],
                types_filter: vec![],
            },
        );
        h.pump();
        let Some(Reply::List(list)) = h.take(id) else {
            panic!()
        };
        assert_eq!(list.groups.len(), 1);
        assert_eq!(
            (list.groups[0].group_type, list.groups[0].state),
            ("consumer", "Stable")
        );
        // Not deletable while it has members; deletable once empty.
        let del = |h: &mut Harness| {
            let id = h.request_id();
            h.coordinator.delete_group(h.now_ms, id, GROUP);
            h.pump();
            match h.take(id) {
                Some(Reply::DeleteGroup(e)) => e,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(del(&mut h), Some(GroupError::NonEmptyGroup));
        let _ = h.cg(hb("a", -1), &t);
        assert_eq!(del(&mut h), None);
        assert!(h.fetch(None, false).topics.is_empty());
    }

    #[test]
    fn static_member_restart_keeps_its_partitions_without_a_rebalance() {
        let mut h = Harness::new();
        let t = topics(4);
        let stat = |id: &str, epoch: i32| ConsumerHeartbeat {
            instance_id: Some("i1".into()),
            ..hb(id, epoch)
        };
        let a = h.cg(stat("a", 0), &t);
        assert_eq!(a.member_epoch, 1);
        let _b = h.cg(hb("b", 0), &t);
        // Let the two settle: a revokes two partitions, b picks them up.
        let a = h.cg(stat("a", 1), &t);
        let kept = parts(&a.assignment).unwrap();
        let mut confirm = stat("a", 1);
        confirm.owned = Some(owned(&kept));
        let a = h.cg(confirm, &t);
        assert_eq!(a.member_epoch, 2);
        let b = h.cg(hb("b", 2), &t);
        assert_eq!(parts(&b.assignment).map(|p| p.len()), Some(2));
        // Another incarnation while a is alive is refused.
        assert_eq!(
            h.cg(stat("a2", 0), &t).error,
            Some(GroupError::UnreleasedInstanceId)
        );
        // a leaves to restart (-2); its partitions stay reserved; b sees nothing change.
        let left = h.cg(stat("a", -2), &t);
        assert_eq!((left.error, left.member_epoch), (None, -2));
        let b = h.cg(hb("b", 2), &t);
        assert_eq!((b.member_epoch, b.assignment), (2, None));
        let a2 = h.cg(stat("a2", 0), &t);
        assert_eq!(a2.error, None);
        assert_eq!(
            (a2.member_epoch, parts(&a2.assignment)),
            (2, Some(kept.clone()))
        );
        let b = h.cg(hb("b", 2), &t);
        assert_eq!((b.member_epoch, b.assignment), (2, None), "no rebalance");
        // If the restart never comes, the reserved place expires and b takes over.
        let gone = h.cg(stat("a2", -2), &t);
        assert_eq!(gone.error, None);
        for _ in 0..12 {
            h.advance(5_000);
            let e = h.cg(
                hb(
                    "b",
                    0.max(h.coordinator.consumer_groups[GROUP].members["b"].member_epoch),
                ),
                &t,
            );
            assert_eq!(e.error, None);
            let mut all = hb("b", e.member_epoch);
            all.owned = Some(owned(&(0..4).collect::<Vec<_>>()));
            let _ = h.cg(all, &t);
        }
        let b = &h.coordinator.consumer_groups[GROUP].members["b"];
        assert_eq!(b.assigned.get(&topic_id()).map(|p| p.len()), Some(4));
    }

    #[test]
    fn regex_subscriptions_match_whole_topic_names() {
        let mut h = Harness::new();
        let t = Topics(vec![
            ("orders-eu".into(), Uuid::from_bytes([1; 16]), 2),
            ("orders-us".into(), Uuid::from_bytes([2; 16]), 1),
            ("xorders-eu".into(), Uuid::from_bytes([3; 16]), 5),
        ]);
        let mut join = hb("a", 0);
        join.subscribed_topic_names = None;
        join.subscribed_topic_regex = Some("orders-.*".into());
        let r = h.cg(join.clone(), &t);
        assert_eq!(r.error, None);
        let a = r.assignment.unwrap();
        assert_eq!(a.values().map(|p| p.len()).sum::<usize>(), 3, "{a:?}");
        assert!(!a.contains_key(&Uuid::from_bytes([3; 16])));
        let d = describe_cg(&mut h);
        assert_eq!(
            d.members[0].subscribed_topic_regex.as_deref(),
            Some("orders-.*")
        );
        // Survives a reload.
        let mut r2 = super::reload(&h, h.now_ms);
        let d = describe_cg(&mut r2);
        assert_eq!(
            d.members[0].subscribed_topic_regex.as_deref(),
            Some("orders-.*")
        );
        // A regex that does not compile.
        join.member_id = "b".into();
        join.subscribed_topic_regex = Some("orders-(".into());
        assert_eq!(
            h.cg(join, &t).error,
            Some(GroupError::InvalidRegularExpression)
        );
    }

    fn describe_cg(h: &mut Harness) -> ConsumerDescribeResult {
        let id = h.request_id();
        h.coordinator.consumer_group_describe(h.now_ms, id, GROUP);
        h.pump();
        match h.take(id) {
            Some(Reply::ConsumerDescribe(d)) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn consumer_group_survives_a_reload() {
        let mut h = Harness::new();
        let t = topics(4);
        let _ = h.cg(hb("a", 0), &t);
        let _ = h.cg(hb("b", 0), &t);
        let a = h.cg(hb("a", 1), &t);
        let kept = parts(&a.assignment).unwrap();
        let mut confirm = hb("a", 1);
        confirm.owned = Some(owned(&kept));
        assert_eq!(h.cg(confirm, &t).member_epoch, 2);
        assert_eq!(h.cg(hb("b", 2), &t).member_epoch, 2);
        let before = describe_cg(&mut h);
        assert_eq!(before.state, "Stable");

        let mut r = super::reload(&h, h.now_ms);
        let after = describe_cg(&mut r);
        assert_eq!(after, before);
        // Members carry on at their epochs; nothing is reassigned.
        let b = r.cg(hb("b", 2), &t);
        assert_eq!((b.error, b.member_epoch, b.assignment), (None, 2, None));
        let a = r.cg(hb("a", 2), &t);
        assert_eq!((a.error, a.member_epoch, a.assignment), (None, 2, None));
        assert_eq!(describe_cg(&mut r).group_epoch, 2);

        // Both leave and the group is deleted: it stays gone after another reload.
        let _ = r.cg(hb("a", -1), &t);
        let _ = r.cg(hb("b", -1), &t);
        let id = r.request_id();
        r.coordinator.delete_group(r.now_ms, id, GROUP);
        r.pump();
        assert_eq!(r.take(id), Some(Reply::DeleteGroup(None)));
        let mut again = super::reload(&r, r.now_ms);
        assert_eq!(
            describe_cg(&mut again).error,
            Some(GroupError::GroupIdNotFound)
        );
    }

    #[test]
    fn new_partitions_bump_the_epoch() {
        let mut h = Harness::new();
        let r = h.cg(hb("a", 0), &topics(2));
        assert_eq!(parts(&r.assignment), Some(vec![0, 1]));
        let r = h.cg(hb("a", 1), &topics(3));
        assert_eq!(
            (r.member_epoch, parts(&r.assignment)),
            (2, Some(vec![0, 1, 2]))
        );
    }
}

#[test]
fn huge_client_id_still_fits_the_record_format() {
    let mut h = Harness::new();
    let mut req = join_req("");
    req.client_id = "é".repeat(20_000);
    let first = h.join(req);
    let member = h.join_result(first).unwrap().member_id;
    assert!(member.len() < 300 && member.starts_with('é'));
    let j = h.join(join_req(&member));
    let g = h.join_result(j).unwrap().generation_id;
    let s = h.sync(&member, g, vec![]);
    assert_eq!(
        h.sync_result(s).unwrap().error,
        None,
        "the group record was written"
    );
}

#[test]
fn strings_longer_than_the_record_format_are_refused() {
    let mut h = Harness::new();
    let long = "g".repeat(40_000);
    let id = h.join(JoinGroup {
        group_id: long.clone(),
        ..join_req("")
    });
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InvalidGroupId)
    );
    let id = h.join(JoinGroup {
        group_instance_id: Some(long.clone()),
        ..join_req("")
    });
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InvalidRequest)
    );
    let mut req = join_req("");
    req.protocols[0].name = long;
    let id = h.join(req);
    assert_eq!(
        h.join_result(id).unwrap().error,
        Some(GroupError::InvalidRequest)
    );
}

/// KIP-848 under random joins, leaves, crashes and heartbeats of clients that revoke as told:
/// no partition is ever held by two members (by the coordinator's books or by the clients),
/// and once membership is quiet every member reaches the target epoch with every partition
/// assigned exactly once.
#[test]
fn kip848_random_membership_never_double_assigns_and_converges() {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::group::consumer::TopicResolver;
    use uuid::Uuid;

    struct One(Uuid, i32);
    impl TopicResolver for One {
        fn topic_by_name(&self, name: &str) -> Option<(Uuid, i32)> {
            (name == "t").then_some((self.0, self.1))
        }
        fn topic_by_id(&self, id: &Uuid) -> Option<(String, i32)> {
            (*id == self.0).then(|| ("t".to_string(), self.1))
        }
        fn topic_names(&self) -> Vec<String> {
            vec!["t".to_string()]
        }
    }

    #[derive(Clone)]
    struct Client {
        epoch: i32,
        owned: BTreeSet<i32>,
        /// A client whose heartbeats fail for a session timeout drops its partitions (as
        /// librdkafka does); until then it may still hold them.
        last_ok_ms: i64,
    }
    const SESSION_MS: i64 = 45_000;

    let topic = Uuid::from_bytes([3; 16]);
    let mut converged = 0;
    for seed in 0..30u64 {
        let topics = One(topic, 7);
        let mut h = Harness::new();
        let mut rng = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut clients: BTreeMap<String, Client> = BTreeMap::new();
        let heartbeat =
            |h: &mut Harness, clients: &mut BTreeMap<String, Client>, id: &str, join: bool| {
                let client = clients.get(id).cloned();
                let epoch = if join {
                    0
                } else {
                    client.as_ref().map_or(0, |c| c.epoch)
                };
                let owned = client.as_ref().map(|c| c.owned.clone()).unwrap_or_default();
                let req = ConsumerHeartbeat {
                    group_id: GROUP.into(),
                    member_id: id.into(),
                    member_epoch: epoch,
                    instance_id: None,
                    rack_id: None,
                    rebalance_timeout_ms: 60_000,
                    subscribed_topic_names: Some(vec!["t".into()]),
                    subscribed_topic_regex: None,
                    server_assignor: None,
                    owned: Some(if join {
                        Assignment::new()
                    } else {
                        Assignment::from([(topic, owned)])
                    }),
                    client_id: "c".into(),
                    client_host: "/h".into(),
                };
                let rid = h.request_id();
                h.coordinator
                    .consumer_group_heartbeat(h.now_ms, rid, req, &topics);
                h.pump();
                let Some(Reply::ConsumerHeartbeat(r)) = h.take(rid) else {
                    panic!("no reply")
                };
                match r.error {
                    None => {
                        let c = clients.entry(id.to_string()).or_insert(Client {
                            epoch: 0,
                            owned: BTreeSet::new(),
                            last_ok_ms: 0,
                        });
                        c.epoch = r.member_epoch;
                        c.last_ok_ms = h.now_ms;
                        if let Some(a) = r.assignment {
                            // The client revokes and takes what it is given.
                            c.owned = a.get(&topic).cloned().unwrap_or_default();
                        }
                    }
                    Some(_) => {
                        clients.remove(id);
                    }
                }
            };
        let check = |h: &Harness, clients: &BTreeMap<String, Client>| {
            let group = &h.coordinator.consumer_groups[GROUP];
            let mut held = BTreeSet::new();
            for m in group.members.values() {
                for set in [&m.assigned, &m.pending_revocation] {
                    for p in set.get(&topic).into_iter().flatten() {
                        assert!(held.insert(*p), "seed {seed}: partition {p} held twice");
                    }
                }
            }
            let mut owned = BTreeSet::new();
            for c in clients
                .values()
                .filter(|c| h.now_ms - c.last_ok_ms < SESSION_MS)
            {
                for p in &c.owned {
                    assert!(owned.insert(*p), "seed {seed}: clients both own {p}");
                }
            }
        };
        for step in 0..200 {
            let id = format!("m{}", next(6));
            match next(10) {
                0 | 1 => heartbeat(&mut h, &mut clients, &id, true),
                2 => {
                    // A clean leave.
                    if clients.contains_key(&id) {
                        let rid = h.request_id();
                        let req = ConsumerHeartbeat {
                            member_epoch: -1,
                            ..hb_leave(&id)
                        };
                        h.coordinator
                            .consumer_group_heartbeat(h.now_ms, rid, req, &topics);
                        h.pump();
                        clients.remove(&id);
                    }
                }
                3 => {
                    // A crash: the client vanishes, the coordinator finds out by timeout.
                    clients.remove(&id);
                }
                4 => h.advance(next(20_000) as i64),
                _ => {
                    if clients.contains_key(&id) {
                        heartbeat(&mut h, &mut clients, &id, false);
                    }
                }
            }
            if h.coordinator.consumer_groups.contains_key(GROUP) {
                check(&h, &clients);
            }
            let _ = step;
        }
        // Quiet: crashed members expire, the rest heartbeat until stable.
        for _ in 0..20 {
            h.advance(5_000);
            let ids: Vec<String> = clients.keys().cloned().collect();
            for id in ids {
                if clients.contains_key(&id) {
                    heartbeat(&mut h, &mut clients, &id, false);
                }
            }
            check(&h, &clients);
        }
        let Some(group) = h.coordinator.consumer_groups.get(GROUP) else {
            continue;
        };
        if clients.is_empty() {
            continue;
        }
        assert_eq!(group.state().as_str(), "Stable", "seed {seed}");
        let all: BTreeSet<i32> = clients
            .values()
            .flat_map(|c| c.owned.iter().copied())
            .collect();
        assert_eq!(
            all,
            (0..7).collect(),
            "seed {seed}: every partition owned once"
        );
        converged += 1;
    }
    assert!(converged >= 10, "only {converged} runs ended with members");
}

fn hb_leave(member_id: &str) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        member_epoch: -1,
        instance_id: None,
        rack_id: None,
        rebalance_timeout_ms: -1,
        subscribed_topic_names: None,
        subscribed_topic_regex: None,
        server_assignor: None,
        owned: None,
        client_id: "c".into(),
        client_host: "/h".into(),
    }
}

#[test]
fn static_leader_restart_with_a_pre_kip814_client_keeps_the_old_leader_id() {
    let mut h = Harness::new();
    let (s, d) = stable_static_and_dynamic(&mut h);
    let old_client = JoinGroup {
        supports_skip_assignment: false,
        ..static_join_req("", "i1")
    };
    let rejoin = h.join(old_client);
    let r = h.join_result(rejoin).expect("no rebalance");
    assert_eq!((r.error, r.generation_id), (None, 2));
    assert_eq!((r.leader.as_str(), r.skip_assignment), (s.as_str(), false));
    assert!(r.members.is_empty(), "it must not see itself as the leader");
    assert_eq!(h.heartbeat(&d, 2), None);
}

#[test]
fn static_follower_restart_with_a_pre_kip814_client_needs_no_rebalance() {
    let mut h = Harness::new();
    // The dynamic member leads here; the static one follows.
    let (d, dj) = h.join_dynamic("d");
    let g = h.join_result(dj).unwrap().generation_id;
    let sd = h.sync(&d, g, vec![]);
    assert!(h.sync_result(sd).is_some());
    let sj = h.join(static_join_req("", "i9"));
    let dj = h.join(join_req(&d));
    let rs = h.join_result(sj).unwrap();
    let rd = h.join_result(dj).unwrap();
    assert_eq!(rd.leader, d);
    let sd = h.sync(
        &d,
        rd.generation_id,
        vec![(rs.member_id.clone(), Bytes::from_static(b"F"))],
    );
    let ss = h.sync(&rs.member_id, rs.generation_id, vec![]);
    assert!(h.sync_result(sd).is_some() && h.sync_result(ss).is_some());
    let old_client = JoinGroup {
        supports_skip_assignment: false,
        ..static_join_req("", "i9")
    };
    let rejoin = h.join(old_client);
    let r = h.join_result(rejoin).expect("no rebalance");
    assert_eq!(
        (r.generation_id, r.leader.as_str(), r.skip_assignment),
        (rd.generation_id, d.as_str(), false)
    );
    assert_eq!(h.state(), GroupState::Stable);
}

#[test]
fn heartbeats_keep_members_alive_past_the_first_filed_deadline() {
    // The group's timer stays filed at the first session deadline while heartbeats move the
    // real one later; firing early must not expire anybody.
    let mut h = Harness::new();
    let (a, g) = h.stable_single("a");
    for _ in 0..10 {
        h.advance(i64::from(SESSION_MS) / 2);
        assert_eq!(h.heartbeat(&a, g), None);
    }
    assert_eq!(h.state(), GroupState::Stable);
    h.advance(i64::from(SESSION_MS));
    assert_eq!(h.state(), GroupState::Empty, "expires once heartbeats stop");
}

/// Transactional offset commits (TxnOffsetCommit) and their completion by markers.
mod txn {
    use super::*;
    use crate::group::limits::PENDING_TXN_OFFSETS_PER_SHARD_MAX;
    use crate::group::records::{TxnProducer, encode_marker_batch};

    const PRODUCER: i64 = 4000;
    const EPOCH: i16 = 2;

    /// Who commits: (member id, generation, group instance id).
    struct Committer<'a>(&'a str, i32, Option<&'a str>);

    const STANDALONE: Committer<'static> = Committer("", -1, None);

    impl Harness {
        fn txn_commit_as(
            &mut self,
            who: &Committer,
            producer_id: i64,
            topic: &str,
            offsets: &[(i32, i64)],
        ) -> RequestId {
            let id = self.request_id();
            let req = TxnOffsetCommit {
                transactional_id: "tx".into(),
                group_id: GROUP.into(),
                producer_id,
                producer_epoch: EPOCH,
                generation_id: who.1,
                member_id: who.0.into(),
                group_instance_id: who.2.map(str::to_owned),
                topics: vec![CommitTopic {
                    name: topic.into(),
                    partitions: offsets
                        .iter()
                        .map(|(p, o)| CommitPartition {
                            partition: *p,
                            offset: *o,
                            leader_epoch: 5,
                            metadata: Some("txn".into()),
                        })
                        .collect(),
                }],
            };
            self.coordinator.txn_offset_commit(self.now_ms, id, req);
            self.pump();
            id
        }

        fn txn_commit(&mut self, producer_id: i64, offsets: &[(i32, i64)]) -> RequestId {
            self.txn_commit_as(&STANDALONE, producer_id, "t", offsets)
        }

        fn txn_errors(&mut self, id: RequestId) -> Vec<Option<GroupError>> {
            match self.take(id) {
                Some(Reply::TxnOffsetCommit(topics)) => topics
                    .into_iter()
                    .flat_map(|t| t.partitions)
                    .map(|(_, e)| e)
                    .collect(),
                other => panic!("expected a TxnOffsetCommit reply, got {other:?}"),
            }
        }

        /// The partition side's part: the marker is appended to the group's offsets
        /// partition, then the coordinator is told.
        fn end_txn(&mut self, producer_id: i64, commit: bool) {
            let partition = self.coordinator.partition_for(GROUP);
            let producer = TxnProducer {
                producer_id,
                producer_epoch: EPOCH,
            };
            self.log
                .entry(partition)
                .or_default()
                .push(encode_marker_batch(producer, commit, self.now_ms));
            self.coordinator
                .complete_transaction(self.now_ms, partition, producer_id, commit);
            self.pump();
        }

        /// (offset, error) of partition `p` of topic "t".
        fn fetch_one(&mut self, p: i32, require_stable: bool) -> (i64, Option<GroupError>) {
            let r = self.fetch(
                Some(vec![TopicPartitions {
                    name: "t".into(),
                    partitions: vec![p],
                }]),
                require_stable,
            );
            assert_eq!(r.error, None);
            let got = &r.topics[0].partitions[0];
            (got.offset, got.error)
        }
    }

    #[test]
    fn pending_offsets_are_invisible_until_the_commit_marker() {
        let mut h = Harness::new();
        let c = h.txn_commit(PRODUCER, &[(0, 10), (1, 20)]);
        assert_eq!(h.txn_errors(c), vec![None, None]);
        assert_eq!(
            h.fetch_one(0, false),
            (-1, None),
            "pending is not committed"
        );
        assert_eq!(
            h.fetch_one(0, true),
            (-1, Some(GroupError::UnstableOffsetCommit)),
            "require_stable sees the open transaction"
        );
        assert_eq!(
            h.fetch_one(2, true),
            (-1, None),
            "other partitions are stable"
        );
        assert!(
            h.fetch(None, false).topics.is_empty(),
            "a fetch of all offsets lists committed ones only"
        );
        // Another producer's marker changes nothing.
        h.end_txn(PRODUCER + 1, true);
        assert_eq!(h.fetch_one(0, false), (-1, None));
        h.end_txn(PRODUCER, true);
        assert_eq!(h.fetch_one(0, true), (10, None));
        assert_eq!(h.fetch_one(1, true), (20, None));
        let all = h.fetch(None, true);
        let p = &all.topics[0].partitions[1];
        assert_eq!(
            (p.offset, p.leader_epoch, p.metadata.as_str()),
            (20, 5, "txn")
        );
        // A second marker for the same transaction finds nothing (idempotent).
        h.end_txn(PRODUCER, false);
        assert_eq!(h.fetch_one(0, true), (10, None));
    }

    #[test]
    fn abort_drops_the_pending_offsets_and_keeps_the_committed_ones() {
        let mut h = Harness::new();
        let c = h.commit("", -1, "t", &[(0, 5)]);
        assert_eq!(h.commit_errors(c), vec![None]);
        let c = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert_eq!(h.txn_errors(c), vec![None]);
        assert_eq!(h.fetch_one(0, false), (5, None));
        assert_eq!(
            h.fetch_one(0, true),
            (-1, Some(GroupError::UnstableOffsetCommit))
        );
        h.end_txn(PRODUCER, false);
        assert_eq!(h.fetch_one(0, true), (5, None));
        // The producer's next transaction starts clean.
        let c = h.txn_commit(PRODUCER, &[(1, 7)]);
        assert_eq!(h.txn_errors(c), vec![None]);
        h.end_txn(PRODUCER, true);
        assert_eq!(h.fetch_one(0, true), (5, None));
        assert_eq!(h.fetch_one(1, true), (7, None));
    }

    #[test]
    fn the_commit_written_later_in_the_log_wins() {
        // Transactional first, plain commit after: the plain one stays at the marker.
        let mut h = Harness::new();
        let t = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert_eq!(h.txn_errors(t), vec![None]);
        let n = h.commit("", -1, "t", &[(0, 20)]);
        assert_eq!(h.commit_errors(n), vec![None]);
        h.end_txn(PRODUCER, true);
        assert_eq!(h.fetch_one(0, true), (20, None));
        // The same from the log.
        let mut r = reload(&h, h.now_ms);
        assert_eq!(r.fetch_one(0, true), (20, None));

        // Plain first, transactional after: the transaction's offset wins.
        let mut h = Harness::new();
        let n = h.commit("", -1, "t", &[(0, 20)]);
        assert_eq!(h.commit_errors(n), vec![None]);
        let t = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert_eq!(h.txn_errors(t), vec![None]);
        h.end_txn(PRODUCER, true);
        assert_eq!(h.fetch_one(0, true), (10, None));
        let mut r = reload(&h, h.now_ms);
        assert_eq!(r.fetch_one(0, true), (10, None));

        // A plain commit appended before the transaction's but acknowledged after the
        // marker does not overwrite it.
        let mut h = Harness::new();
        h.auto_append = false;
        let n = h.commit("", -1, "t", &[(0, 20)]);
        let held = std::mem::take(&mut h.held);
        h.auto_append = true;
        let t = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert_eq!(h.txn_errors(t), vec![None]);
        h.end_txn(PRODUCER, true);
        h.held = held;
        h.complete_held(AppendOutcome::Ok);
        assert_eq!(h.commit_errors(n), vec![None]);
        assert_eq!(h.fetch_one(0, true), (10, None));
    }

    #[test]
    fn classic_group_fencing_follows_kip_447() {
        let mut h = Harness::new();
        let (s, d) = stable_static_and_dynamic(&mut h);
        let ok = Committer(&d, 2, None);
        let c = h.txn_commit_as(&ok, PRODUCER, "t", &[(0, 1)]);
        assert_eq!(h.txn_errors(c), vec![None]);
        let cases = [
            (Committer(&d, 1, None), GroupError::IllegalGeneration),
            (Committer(&d, 3, None), GroupError::IllegalGeneration),
            (Committer("ghost", 2, None), GroupError::UnknownMemberId),
            (Committer(&d, 2, Some("i1")), GroupError::FencedInstanceId),
            (Committer(&s, 2, Some("nope")), GroupError::UnknownMemberId),
            (Committer("", 2, None), GroupError::UnknownMemberId),
        ];
        for (who, error) in cases {
            let c = h.txn_commit_as(&who, PRODUCER, "t", &[(0, 1)]);
            assert_eq!(h.txn_errors(c), vec![Some(error)], "{}/{}", who.0, who.1);
        }
        let c = h.txn_commit_as(&Committer(&s, 2, Some("i1")), PRODUCER, "t", &[(1, 1)]);
        assert_eq!(h.txn_errors(c), vec![None], "the static member itself");
        // Producers that send no group metadata (before v3) commit to a group with members,
        // which plain commits may not.
        let c = h.txn_commit(PRODUCER, &[(2, 1)]);
        assert_eq!(h.txn_errors(c), vec![None]);
        let plain = h.commit("", -1, "t", &[(2, 1)]);
        assert_eq!(
            h.commit_errors(plain),
            vec![Some(GroupError::UnknownMemberId)]
        );
    }

    #[test]
    fn completing_rebalance_does_not_refuse_transactional_commits() {
        let mut h = Harness::new();
        let (a, _) = h.stable_single("a");
        let (_b, b_join) = h.join_dynamic("b");
        let a_join = h.join(join_req(&a));
        assert!(h.join_result(a_join).is_some() && h.join_result(b_join).is_some());
        assert_eq!(h.state(), GroupState::CompletingRebalance);
        let plain = h.commit(&a, 2, "t", &[(0, 6)]);
        assert_eq!(
            h.commit_errors(plain),
            vec![Some(GroupError::RebalanceInProgress)]
        );
        let c = h.txn_commit_as(&Committer(&a, 2, None), PRODUCER, "t", &[(0, 6)]);
        assert_eq!(
            h.txn_errors(c),
            vec![None],
            "the group state is not enforced"
        );
    }

    #[test]
    fn unknown_group_missing_producer_and_coordinator_errors() {
        let mut h = Harness::new();
        // A group that does not exist: generation -1 creates a simple group, any other is
        // ILLEGAL_GENERATION (Kafka's validateTransactionalOffsetCommit).
        let c = h.txn_commit_as(&Committer("m", 3, None), PRODUCER, "t", &[(0, 1)]);
        assert_eq!(h.txn_errors(c), vec![Some(GroupError::IllegalGeneration)]);
        assert!(!h.describe().exists);
        let c = h.txn_commit(-1, &[(0, 1)]);
        assert_eq!(h.txn_errors(c), vec![Some(GroupError::InvalidRequest)]);
        let c = h.txn_commit(PRODUCER, &[(0, 1)]);
        assert_eq!(h.txn_errors(c), vec![None]);
        assert_eq!(h.describe().state, "Empty");
        // Metadata over offset.metadata.max.bytes is refused per partition.
        let id = h.request_id();
        let big = "x".repeat(4097);
        let req = TxnOffsetCommit {
            transactional_id: "tx".into(),
            group_id: GROUP.into(),
            producer_id: PRODUCER,
            producer_epoch: EPOCH,
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![CommitTopic {
                name: "t".into(),
                partitions: vec![
                    CommitPartition {
                        partition: 0,
                        offset: 3,
                        leader_epoch: -1,
                        metadata: Some(big),
                    },
                    CommitPartition {
                        partition: 1,
                        offset: 4,
                        leader_epoch: -1,
                        metadata: None,
                    },
                ],
            }],
        };
        h.coordinator.txn_offset_commit(0, id, req);
        h.pump();
        assert_eq!(
            h.txn_errors(id),
            vec![Some(GroupError::OffsetMetadataTooLarge), None]
        );
        // Loading and not-coordinator partitions.
        let partition = h.coordinator.partition_for(GROUP);
        h.coordinator.begin_load(partition);
        let c = h.txn_commit(PRODUCER, &[(0, 1)]);
        assert_eq!(
            h.txn_errors(c),
            vec![Some(GroupError::CoordinatorLoadInProgress)]
        );
        h.coordinator.unload_partition(partition);
        let c = h.txn_commit(PRODUCER, &[(0, 1)]);
        assert_eq!(h.txn_errors(c), vec![Some(GroupError::NotCoordinator)]);
    }

    #[test]
    fn failed_append_leaves_nothing_pending_and_fenced_epoch_is_reported() {
        let mut h = Harness::new();
        h.auto_append = false;
        let c = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert!(h.take(c).is_none(), "waits for the append");
        assert_eq!(
            h.fetch_one(0, true),
            (-1, Some(GroupError::UnstableOffsetCommit)),
            "in flight is unstable"
        );
        h.complete_held(AppendOutcome::Failed);
        assert_eq!(
            h.txn_errors(c),
            vec![Some(GroupError::CoordinatorNotAvailable)]
        );
        assert_eq!(h.fetch_one(0, true), (-1, None));
        h.end_txn(PRODUCER, true);
        assert_eq!(h.fetch_one(0, true), (-1, None), "nothing to commit");
        let c = h.txn_commit(PRODUCER, &[(0, 11)]);
        h.complete_held(AppendOutcome::InvalidProducerEpoch);
        assert_eq!(
            h.txn_errors(c),
            vec![Some(GroupError::InvalidProducerEpoch)]
        );
        assert_eq!(GroupError::InvalidProducerEpoch.code(), 47);
    }

    #[test]
    fn the_batch_is_transactional_with_the_producer_and_no_sequence() {
        let mut h = Harness::new();
        let c = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert_eq!(h.txn_errors(c), vec![None]);
        let partition = h.coordinator.partition_for(GROUP);
        let batch = h.log[&partition].last().unwrap().clone();
        let header = engine::batch::BatchHeader::parse(&batch).expect("a v2 batch");
        assert_eq!(header.total_bytes() as usize, batch.len(), "one batch");
        // Kafka's v2 header: producer id at 43, epoch at 51, base sequence at 53,
        // attributes at 21 (bit 4 transactional, bit 5 control).
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        assert_eq!(attributes & 0x10, 0x10, "transactional");
        assert_eq!(attributes & 0x20, 0, "not a control batch");
        let producer_id = i64::from_be_bytes(batch[43..51].try_into().unwrap());
        let epoch = i16::from_be_bytes([batch[51], batch[52]]);
        let base_sequence = i32::from_be_bytes(batch[53..57].try_into().unwrap());
        assert_eq!((producer_id, epoch, base_sequence), (PRODUCER, EPOCH, -1));
        let entries = records::decode_log(batch).unwrap();
        assert!(matches!(
            &entries[..],
            [records::LogEntry::Record {
                producer_id: PRODUCER,
                value: Some(_),
                ..
            }]
        ));
    }

    #[test]
    fn replay_rebuilds_committed_aborted_and_open_transactions() {
        let mut h = Harness::new();
        let a = PRODUCER;
        let b = PRODUCER + 1;
        let c = PRODUCER + 2;
        let id = h.txn_commit(a, &[(0, 10)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        let id = h.txn_commit(b, &[(1, 20)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        let id = h.txn_commit(c, &[(2, 30)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        h.end_txn(a, true);
        h.end_txn(b, false);
        // c is still open at the log end.
        let mut r = reload(&h, h.now_ms);
        assert_eq!(r.describe().state, "Empty", "the simple group exists again");
        assert_eq!(r.fetch_one(0, true), (10, None), "committed");
        assert_eq!(r.fetch_one(1, true), (-1, None), "aborted");
        assert_eq!(
            r.fetch_one(2, true),
            (-1, Some(GroupError::UnstableOffsetCommit)),
            "open: pending again"
        );
        assert_eq!(r.fetch_one(2, false), (-1, None));
        // Its marker after the reload completes it.
        r.end_txn(c, true);
        assert_eq!(r.fetch_one(2, true), (30, None));
        let mut again = reload(&r, r.now_ms);
        assert_eq!(again.fetch_one(2, true), (30, None));
        assert_eq!(again.fetch_one(0, true), (10, None));
    }

    #[test]
    fn a_marker_reported_while_loading_applies_after_the_replay() {
        let mut h = Harness::new();
        let id = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        let partition = h.coordinator.partition_for(GROUP);
        let mut fresh = Harness::with_seed(h.coordinator.config().clone(), 9);
        fresh.coordinator.begin_load(partition);
        // The marker lands after the replay's end: reported while loading.
        fresh
            .coordinator
            .complete_transaction(0, partition, PRODUCER, true);
        for batches in h.log.get(&partition).into_iter().flatten() {
            fresh
                .coordinator
                .replay(partition, batches.clone())
                .unwrap();
        }
        fresh.coordinator.finish_load(0, partition);
        assert_eq!(fresh.fetch_one(0, true), (10, None));
    }

    #[test]
    fn unloading_forgets_pending_offsets() {
        let mut h = Harness::new();
        let id = h.txn_commit(PRODUCER, &[(0, 10)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        let partition = h.coordinator.partition_for(GROUP);
        h.coordinator.unload_partition(partition);
        // A marker for a partition no longer led here is not applied.
        h.coordinator
            .complete_transaction(0, partition, PRODUCER, true);
        h.coordinator.begin_load(partition);
        h.coordinator.finish_load(0, partition);
        assert_eq!(h.fetch_one(0, true), (-1, None));
    }

    #[test]
    fn offset_delete_and_group_deletion_remove_pending_offsets() {
        let mut h = Harness::new();
        let id = h.txn_commit(PRODUCER, &[(0, 10), (1, 11)]);
        assert_eq!(h.txn_errors(id), vec![None, None]);
        let id = h.request_id();
        h.coordinator.offset_delete(
            0,
            id,
            OffsetDelete {
                group_id: GROUP.into(),
                topics: vec![TopicPartitions {
                    name: "t".into(),
                    partitions: vec![0],
                }],
            },
        );
        h.pump();
        assert!(matches!(h.take(id), Some(Reply::OffsetDelete(r)) if r.error.is_none()));
        assert_eq!(h.fetch_one(0, true), (-1, None), "no longer pending");
        assert_eq!(
            h.fetch_one(1, true),
            (-1, Some(GroupError::UnstableOffsetCommit))
        );
        h.end_txn(PRODUCER, true);
        assert_eq!(
            h.fetch_one(0, true),
            (-1, None),
            "deleted before the commit"
        );
        assert_eq!(h.fetch_one(1, true), (11, None));
        let mut r = reload(&h, h.now_ms);
        assert_eq!(
            r.fetch_one(0, true),
            (-1, None),
            "the tombstone is in the log"
        );
        assert_eq!(r.fetch_one(1, true), (11, None));

        // DeleteGroups tombstones pending offsets too; the commit then finds nothing.
        let id = h.txn_commit(PRODUCER, &[(2, 12)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        let id = h.request_id();
        h.coordinator.delete_group(h.now_ms, id, GROUP);
        h.pump();
        assert_eq!(h.take(id), Some(Reply::DeleteGroup(None)));
        h.end_txn(PRODUCER, true);
        assert!(!h.describe().exists);
        assert!(h.fetch(None, false).topics.is_empty());
        let mut r = reload(&h, h.now_ms);
        assert!(!r.describe().exists, "nothing comes back from the log");
        assert_eq!(r.fetch_one(2, true), (-1, None));
    }

    #[test]
    fn retention_waits_for_open_transactions() {
        let retention = 60_000;
        let config = GroupConfig {
            offsets_retention_ms: retention,
            offsets_retention_check_interval_ms: 1_000,
            ..test_config()
        };
        let mut h = Harness::with_config(config);
        let c = h.commit("", -1, "t", &[(0, 1)]);
        assert_eq!(h.commit_errors(c), vec![None]);
        let id = h.txn_commit(PRODUCER, &[(0, 2)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        h.advance(retention + 2_000);
        assert_eq!(
            h.fetch_one(0, false),
            (1, None),
            "an offset with a pending transactional one does not expire"
        );
        h.end_txn(PRODUCER, false);
        h.advance(2_000);
        assert_eq!(h.fetch_one(0, false), (-1, None), "expires once it ends");
        // A group holding only an open transaction's offsets is not removed.
        let id = h.txn_commit(PRODUCER, &[(1, 3)]);
        assert_eq!(h.txn_errors(id), vec![None]);
        h.advance(retention + 2_000);
        assert!(h.describe().exists);
        h.end_txn(PRODUCER, true);
        assert_eq!(h.fetch_one(1, true), (3, None));
    }

    #[test]
    fn pending_offsets_are_bounded() {
        let mut h = Harness::new();
        h.auto_append = false;
        let many: Vec<(i32, i64)> = (0..PENDING_TXN_OFFSETS_PER_SHARD_MAX as i32)
            .map(|p| (p, 1))
            .collect();
        let big = h.txn_commit(PRODUCER, &many);
        // In flight counts against the limit.
        let over = h.txn_commit(PRODUCER + 1, &[(0, 1)]);
        assert_eq!(
            h.txn_errors(over),
            vec![Some(GroupError::CoordinatorNotAvailable)]
        );
        h.complete_held(AppendOutcome::Ok);
        assert!(h.txn_errors(big).iter().all(Option::is_none));
        h.auto_append = true;
        let over = h.txn_commit(PRODUCER + 1, &[(0, 1)]);
        assert_eq!(
            h.txn_errors(over),
            vec![Some(GroupError::CoordinatorNotAvailable)],
            "pending counts too"
        );
        h.end_txn(PRODUCER, false);
        let ok = h.txn_commit(PRODUCER + 1, &[(0, 1)]);
        assert_eq!(h.txn_errors(ok), vec![None]);
    }

    #[test]
    fn consumer_group_members_commit_with_their_member_epoch() {
        struct OneTopic;
        impl crate::group::consumer::TopicResolver for OneTopic {
            fn topic_by_name(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
                (name == "t").then_some((uuid::Uuid::from_bytes([7; 16]), 2))
            }
            fn topic_by_id(&self, id: &uuid::Uuid) -> Option<(String, i32)> {
                (*id == uuid::Uuid::from_bytes([7; 16])).then(|| ("t".to_string(), 2))
            }
            fn topic_names(&self) -> Vec<String> {
                vec!["t".into()]
            }
        }
        let mut h = Harness::new();
        let id = h.request_id();
        let join = ConsumerHeartbeat {
            group_id: GROUP.into(),
            member_id: "a".into(),
            member_epoch: 0,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            subscribed_topic_regex: None,
            server_assignor: None,
            owned: Some(Assignment::new()),
            client_id: "c".into(),
            client_host: "/h".into(),
        };
        h.coordinator
            .consumer_group_heartbeat(h.now_ms, id, join, &OneTopic);
        h.pump();
        let Some(Reply::ConsumerHeartbeat(r)) = h.take(id) else {
            panic!("no heartbeat reply")
        };
        let epoch = r.member_epoch;
        let c = h.txn_commit_as(&Committer("a", epoch, None), PRODUCER, "t", &[(0, 9)]);
        assert_eq!(h.txn_errors(c), vec![None]);
        let stale = h.txn_commit_as(&Committer("a", epoch - 1, None), PRODUCER, "t", &[(0, 9)]);
        assert_eq!(
            h.txn_errors(stale),
            vec![Some(GroupError::IllegalGeneration)],
            "a stale member epoch is ILLEGAL_GENERATION for transactional commits"
        );
        let ghost = h.txn_commit_as(&Committer("z", 1, None), PRODUCER, "t", &[(0, 9)]);
        assert_eq!(h.txn_errors(ghost), vec![Some(GroupError::UnknownMemberId)]);
        h.end_txn(PRODUCER, true);
        assert_eq!(h.fetch_one(0, true), (9, None));
    }
}

mod txn_in_flight {
    use super::*;

    fn txn_req(producer_id: i64, offset: i64) -> TxnOffsetCommit {
        TxnOffsetCommit {
            transactional_id: "tx".into(),
            group_id: GROUP.into(),
            producer_id,
            producer_epoch: 0,
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![CommitTopic {
                name: "t".into(),
                partitions: vec![CommitPartition {
                    partition: 0,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                }],
            }],
        }
    }

    #[test]
    fn a_batch_acknowledged_after_a_reload_is_left_to_the_log() {
        let mut h = Harness::new();
        h.auto_append = false;
        let id = h.request_id();
        h.coordinator.txn_offset_commit(0, id, txn_req(78, 10));
        h.pump();
        let partition = h.coordinator.partition_for(GROUP);
        // Leadership moves away and back; this load's log does not hold the batch.
        h.coordinator.unload_partition(partition);
        h.coordinator.begin_load(partition);
        h.coordinator.finish_load(0, partition);
        h.complete_held(AppendOutcome::Ok);
        assert!(h.take(id).is_some(), "answered");
        let r = h.fetch(
            Some(vec![TopicPartitions {
                name: "t".into(),
                partitions: vec![0],
            }]),
            true,
        );
        assert_eq!(
            r.topics[0].partitions[0].error, None,
            "not pending from memory"
        );
    }

    #[test]
    fn a_marker_while_the_batch_is_in_flight_applies_to_it() {
        for commit in [true, false] {
            let mut h = Harness::new();
            h.auto_append = false;
            let id = h.request_id();
            let req = TxnOffsetCommit {
                transactional_id: "tx".into(),
                group_id: GROUP.into(),
                producer_id: 77,
                producer_epoch: 0,
                generation_id: -1,
                member_id: String::new(),
                group_instance_id: None,
                topics: vec![CommitTopic {
                    name: "t".into(),
                    partitions: vec![CommitPartition {
                        partition: 0,
                        offset: 10,
                        leader_epoch: -1,
                        metadata: None,
                    }],
                }],
            };
            h.coordinator.txn_offset_commit(0, id, req);
            h.pump();
            let partition = h.coordinator.partition_for(GROUP);
            // The coordinator aborts (or commits) while the batch replicates.
            h.coordinator.complete_transaction(0, partition, 77, commit);
            h.complete_held(AppendOutcome::Ok);
            assert_eq!(
                h.take(id),
                Some(Reply::TxnOffsetCommit(vec![TopicErrors {
                    name: "t".into(),
                    partitions: vec![(0, None)],
                }]))
            );
            let r = h.fetch(
                Some(vec![TopicPartitions {
                    name: "t".into(),
                    partitions: vec![0],
                }]),
                true,
            );
            let p = &r.topics[0].partitions[0];
            let want = if commit { 10 } else { -1 };
            assert_eq!((p.offset, p.error), (want, None), "commit={commit}");
        }
    }
}
