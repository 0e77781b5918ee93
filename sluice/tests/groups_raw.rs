//! Consumer groups driven with raw Kafka bytes: FindCoordinator, the KIP-394 join, SyncGroup,
//! heartbeats, the errors a member sees (unknown member, illegal generation, rebalance in
//! progress, fenced instance id, coordinator loading), static membership, batch leave,
//! committed offsets and their survival across a restart.
//!
//! The broker runs with Kafka's default group.initial.rebalance.delay.ms (3 s), so the first
//! join of each group takes that long. Retries wait on a condition with a deadline.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, RawClient};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

use kafka_wire::error::{
    COORDINATOR_LOAD_IN_PROGRESS, FENCED_INSTANCE_ID, GROUP_ID_NOT_FOUND, ILLEGAL_GENERATION,
    INVALID_REQUEST, MEMBER_ID_REQUIRED, NON_EMPTY_GROUP, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
};

/// How long a retried group request may keep getting COORDINATOR_LOAD_IN_PROGRESS.
const LOAD_DEADLINE: Duration = Duration::from_secs(20);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn create_topic(c: &mut RawClient, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s(topic)))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
}

/// OffsetFetch until the group's coordinator has loaded its partition; returns the answer.
fn fetch_loaded(c: &mut RawClient, group: &str) -> OffsetFetchResponse {
    let start = Instant::now();
    loop {
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default().with_group_id(gid(group)),
        ]);
        let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &req);
        if resp.groups[0].error_code != COORDINATOR_LOAD_IN_PROGRESS {
            return resp;
        }
        assert!(
            start.elapsed() < LOAD_DEADLINE,
            "group {group} still loading after {LOAD_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn join_request(group: &str, member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"meta")),
        ])
}

fn join(
    c: &mut RawClient,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
) -> JoinGroupResponse {
    c.call(
        ApiKey::JoinGroup,
        7,
        &join_request(group, member_id, instance),
    )
}

/// The KIP-394 first step: returns the member id the coordinator hands out.
fn member_id_required(c: &mut RawClient, group: &str) -> String {
    let resp = join(c, group, "", None);
    assert_eq!(resp.error_code, MEMBER_ID_REQUIRED);
    assert!(!resp.member_id.is_empty());
    resp.member_id.to_string()
}

fn sync(
    c: &mut RawClient,
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        );
    c.call(ApiKey::SyncGroup, 5, &req)
}

fn heartbeat(
    c: &mut RawClient,
    group: &str,
    member: &str,
    instance: Option<&str>,
    generation: i32,
) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_generation_id(generation);
    let resp: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &req);
    resp.error_code
}

fn commit(
    c: &mut RawClient,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_metadata(Some(s("md")))
                        })
                        .collect(),
                ),
        ]);
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req);
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

fn describe(
    c: &mut RawClient,
    group: &str,
    version: i16,
) -> describe_groups_response::DescribedGroup {
    let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    let mut resp: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, version, &req);
    resp.groups.remove(0)
}

#[test]
fn find_coordinator_names_this_node() {
    let broker = Broker::start();
    let mut c = broker.connect();
    let port: i32 = broker.addr().rsplit(':').next().unwrap().parse().unwrap();
    let req = FindCoordinatorRequest::default()
        .with_key(s("g"))
        .with_key_type(0);
    let resp: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 3, &req);
    assert_eq!((resp.error_code, resp.node_id.0, resp.port), (0, 0, port));
    let req = FindCoordinatorRequest::default()
        .with_coordinator_keys(vec![s("a"), s("b")])
        .with_key_type(0);
    let resp: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &req);
    assert_eq!(resp.coordinators.len(), 2);
    assert!(
        resp.coordinators
            .iter()
            .all(|k| k.error_code == 0 && k.port == port)
    );
    let req = FindCoordinatorRequest::default()
        .with_coordinator_keys(vec![s("txn")])
        .with_key_type(1);
    let resp: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &req);
    // The transaction coordinator: this node, once `__transaction_state` exists.
    assert_eq!(
        (resp.coordinators[0].error_code, resp.coordinators[0].port),
        (0, port)
    );
    let req = FindCoordinatorRequest::default()
        .with_coordinator_keys(vec![s("share")])
        .with_key_type(2);
    let resp: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 6, &req);
    assert_eq!(resp.coordinators[0].error_code, INVALID_REQUEST);
    // The offsets topic now exists, compacted, with Kafka's 50 partitions.
    let meta: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(s("__consumer_offsets")))),
        ])),
    );
    assert_eq!(meta.topics[0].error_code, 0);
    assert_eq!(meta.topics[0].partitions.len(), 50);
    assert!(meta.topics[0].is_internal, "regex subscribers must skip it");
}

#[test]
fn membership_errors_and_rebalance() {
    let broker = Broker::start();
    let mut a = broker.connect();
    let mut b = broker.connect();
    let group = "raw-members";
    create_topic(&mut a, "t", 2);
    fetch_loaded(&mut a, group);

    // KIP-394: first MEMBER_ID_REQUIRED, then the join (after the initial delay).
    let ma = member_id_required(&mut a, group);
    let ja = join(&mut a, group, &ma, None);
    assert_eq!(
        (ja.error_code, ja.generation_id, ja.leader.to_string()),
        (0, 1, ma.clone())
    );
    assert_eq!(ja.members.len(), 1);
    let sa = sync(&mut a, group, &ma, 1, &[(&ma, b"A")]);
    assert_eq!((sa.error_code, &sa.assignment[..]), (0, &b"A"[..]));

    assert_eq!(heartbeat(&mut a, group, &ma, None, 1), 0);
    assert_eq!(heartbeat(&mut a, group, &ma, None, 2), ILLEGAL_GENERATION);
    assert_eq!(
        heartbeat(&mut a, group, "nobody", None, 1),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        join(&mut a, group, "nobody", None).error_code,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        commit(&mut a, group, &ma, 1, "t", &[(0, 5), (1, 6)]),
        vec![0, 0]
    );
    assert_eq!(
        commit(&mut a, group, &ma, 7, "t", &[(0, 5)]),
        vec![ILLEGAL_GENERATION]
    );
    assert_eq!(
        commit(&mut a, group, &ma, 1, "missing", &[(0, 5)]),
        vec![UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        commit(&mut a, group, &ma, 1, "t", &[(9, 5)]),
        vec![UNKNOWN_TOPIC_OR_PARTITION]
    );

    // A second member starts a rebalance; the first learns of it from its heartbeat.
    let mb = member_id_required(&mut b, group);
    let pending = b.send(ApiKey::JoinGroup, 7, &join_request(group, &mb, None));
    let start = Instant::now();
    loop {
        match heartbeat(&mut a, group, &ma, None, 1) {
            REBALANCE_IN_PROGRESS => break,
            0 => assert!(
                start.elapsed() < LOAD_DEADLINE,
                "no rebalance after a second member joined"
            ),
            other => panic!("heartbeat error {other}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sync(&mut a, group, &ma, 1, &[]).error_code,
        REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        describe(&mut a, group, 5).group_state.to_string(),
        "PreparingRebalance"
    );
    let ja = join(&mut a, group, &ma, None);
    let jb: JoinGroupResponse = b.recv(ApiKey::JoinGroup, 7, pending);
    assert_eq!((ja.error_code, jb.error_code), (0, 0));
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    assert_eq!(
        (ja.members.len(), jb.members.len()),
        (2, 0),
        "only the leader gets the members"
    );

    // ListGroups with a state filter, DeleteGroups refuses a group with members.
    let list: ListGroupsResponse = a.call(
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default().with_states_filter(vec![s("completingrebalance")]),
    );
    assert!(list.groups.iter().any(|g| g.group_id.0.as_str() == group));
    let del: DeleteGroupsResponse = a.call(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]),
    );
    assert_eq!(del.results[0].error_code, NON_EMPTY_GROUP);

    // Batch leave: both members plus one unknown.
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid(group))
        .with_members(vec![
            MemberIdentity::default().with_member_id(s(&ma)),
            MemberIdentity::default().with_member_id(s(&mb)),
            MemberIdentity::default().with_member_id(s("nobody")),
        ]);
    let resp: LeaveGroupResponse = a.call(ApiKey::LeaveGroup, 5, &leave);
    let errors: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
    assert_eq!(
        (resp.error_code, errors),
        (0, vec![0, 0, UNKNOWN_MEMBER_ID])
    );
    assert_eq!(describe(&mut a, group, 5).group_state.to_string(), "Empty");
    let del: DeleteGroupsResponse = a.call(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]),
    );
    assert_eq!(del.results[0].error_code, 0);
    assert_eq!(describe(&mut a, group, 6).error_code, GROUP_ID_NOT_FOUND);
    assert_eq!(describe(&mut a, group, 5).group_state.to_string(), "Dead");
}

#[test]
fn static_member_restart_is_fenced_and_needs_no_rebalance() {
    let broker = Broker::start();
    let mut c = broker.connect();
    let group = "raw-static";
    fetch_loaded(&mut c, group);
    let first = join(&mut c, group, "", Some("instance-1"));
    assert_eq!(
        (first.error_code, first.generation_id),
        (0, 1),
        "static members skip KIP-394"
    );
    let old = first.member_id.to_string();
    assert_eq!(sync(&mut c, group, &old, 1, &[(&old, b"P")]).error_code, 0);

    // The same instance restarts (JoinGroup v9): a new member id, same generation, its old
    // assignment; as the leader it is told to skip the assignment (KIP-814).
    let again: JoinGroupResponse = c.call(
        ApiKey::JoinGroup,
        9,
        &join_request(group, "", Some("instance-1")),
    );
    assert_eq!((again.error_code, again.generation_id), (0, 1));
    let new = again.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(
        (again.leader.to_string(), again.skip_assignment),
        (new.clone(), true)
    );
    let resync = sync(&mut c, group, &new, 1, &[]);
    assert_eq!((resync.error_code, &resync.assignment[..]), (0, &b"P"[..]));
    assert_eq!(heartbeat(&mut c, group, &new, Some("instance-1"), 1), 0);
    assert_eq!(
        heartbeat(&mut c, group, &old, Some("instance-1"), 1),
        FENCED_INSTANCE_ID
    );
    assert_eq!(
        join(&mut c, group, &old, Some("instance-1")).error_code,
        FENCED_INSTANCE_ID
    );
    let d = describe(&mut c, group, 5);
    assert_eq!(d.group_state.to_string(), "Stable");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id.to_string(), new);
    assert_eq!(
        d.members[0]
            .group_instance_id
            .as_ref()
            .map(|s| s.to_string()),
        Some("instance-1".to_string())
    );

    // An older client (v7) restarting as the leader gets the previous leader id, so it does
    // not assign (KIP-345); still no rebalance.
    let old_client = join(&mut c, group, "", Some("instance-1"));
    assert_eq!((old_client.error_code, old_client.generation_id), (0, 1));
    assert_eq!(old_client.leader.to_string(), new);
    assert!(!old_client.skip_assignment && old_client.members.is_empty());
    let new = old_client.member_id.to_string();

    // Administrative removal by instance id alone (LeaveGroup v3+).
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid(group))
        .with_members(vec![
            MemberIdentity::default()
                .with_member_id(s(""))
                .with_group_instance_id(Some(s("instance-1"))),
        ]);
    let resp: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 4, &leave);
    assert_eq!(resp.members[0].error_code, 0);
    assert_eq!(
        heartbeat(&mut c, group, &new, Some("instance-1"), 1),
        UNKNOWN_MEMBER_ID
    );
}

#[test]
fn offsets_survive_restart_and_are_never_served_before_loading() {
    let mut broker = Broker::start();
    let group = "raw-offsets";
    {
        let mut c = broker.connect();
        create_topic(&mut c, "t", 2);
        fetch_loaded(&mut c, group);
        // A standalone consumer: generation -1, no member id.
        assert_eq!(
            commit(&mut c, group, "", -1, "t", &[(0, 42), (1, 7)]),
            vec![0, 0]
        );
    }
    broker.restart();
    let mut c = broker.connect();
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1, 2]),
            ])),
        OffsetFetchRequestGroup::default().with_group_id(gid("never-seen")),
    ]);
    // The shards replay their offsets partitions from start-up; until a partition is loaded
    // its groups answer COORDINATOR_LOAD_IN_PROGRESS, never offsets it has not read yet.
    let start = Instant::now();
    let mut loading_seen = 0;
    let resp = loop {
        let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &req);
        if resp.groups.iter().all(|g| g.error_code == 0) {
            break resp;
        }
        assert!(
            resp.groups
                .iter()
                .all(|g| g.error_code == 0 || g.error_code == COORDINATOR_LOAD_IN_PROGRESS),
            "{resp:?}"
        );
        loading_seen += 1;
        assert!(start.elapsed() < LOAD_DEADLINE, "still loading: {resp:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("answered COORDINATOR_LOAD_IN_PROGRESS {loading_seen} times after the restart");
    let offsets: Vec<(i32, i64)> = resp.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offsets, vec![(0, 42), (1, 7), (2, -1)]);
    assert_eq!(
        resp.groups[0].topics[0].partitions[0]
            .metadata
            .as_deref()
            .map(|m| m.to_string()),
        Some("md".into())
    );
    assert!(resp.groups[1].topics.is_empty());
    // The pre-v8 single-group form.
    let old: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        5,
        &OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(None),
    );
    assert_eq!(old.error_code, 0);
    assert_eq!(old.topics[0].partitions.len(), 2);
    assert_eq!(describe(&mut c, group, 5).group_state.to_string(), "Empty");
}

fn consumer_heartbeat(
    c: &mut RawClient,
    req: &ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let start = Instant::now();
    loop {
        let resp: ConsumerGroupHeartbeatResponse = c.call(ApiKey::ConsumerGroupHeartbeat, 0, req);
        if resp.error_code != COORDINATOR_LOAD_IN_PROGRESS {
            return resp;
        }
        assert!(start.elapsed() < LOAD_DEADLINE, "still loading");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kip848_consumer_group_heartbeat() {
    use kafka_wire::error::FENCED_MEMBER_EPOCH;
    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "t848", 3);
    let group = "raw-848";
    let join = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t848"))]))
        .with_topic_partitions(Some(vec![]));
    let r = consumer_heartbeat(&mut c, &join);
    assert_eq!(
        (r.error_code, r.member_epoch),
        (0, 1),
        "{:?}",
        r.error_message
    );
    let member = r
        .member_id
        .clone()
        .expect("v0: the coordinator picks the member id");
    let assignment = r.assignment.expect("a joining member gets its assignment");
    assert_eq!(assignment.topic_partitions.len(), 1);
    assert!(!assignment.topic_partitions[0].topic_id.is_nil());
    assert_eq!(assignment.topic_partitions[0].partitions, vec![0, 1, 2]);

    let beat = |epoch: i32, member: &StrBytes| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(member.clone())
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(-1)
    };
    let r = consumer_heartbeat(&mut c, &beat(1, &member));
    assert_eq!(
        (r.error_code, r.member_epoch, r.heartbeat_interval_ms),
        (0, 1, 5_000)
    );
    assert!(r.assignment.is_none(), "unchanged assignment is not resent");
    assert_eq!(
        consumer_heartbeat(&mut c, &beat(9, &member)).error_code,
        FENCED_MEMBER_EPOCH
    );
    assert_eq!(
        consumer_heartbeat(&mut c, &beat(1, &s("ghost"))).error_code,
        UNKNOWN_MEMBER_ID
    );

    let described: ConsumerGroupDescribeResponse = c.call(
        ApiKey::ConsumerGroupDescribe,
        0,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid(group)]),
    );
    let g = &described.groups[0];
    assert_eq!(
        (g.error_code, g.group_state.as_str(), g.group_epoch),
        (0, "Stable", 1)
    );
    assert_eq!(
        g.members[0].assignment.topic_partitions[0]
            .topic_name
            .0
            .as_str(),
        "t848"
    );

    let r = consumer_heartbeat(&mut c, &beat(-1, &member));
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    assert_eq!(
        consumer_heartbeat(&mut c, &beat(1, &member)).error_code,
        UNKNOWN_MEMBER_ID
    );
}

#[test]
fn shutdown_answers_a_waiting_join_and_exits_cleanly() {
    use kafka_wire::error::NOT_COORDINATOR;
    let broker = Broker::start();
    let mut a = broker.connect();
    let mut b = broker.connect();
    let group = "raw-shutdown";
    fetch_loaded(&mut a, group);
    let first = join(&mut a, group, "", Some("a"));
    assert_eq!(first.error_code, 0);
    // b's join waits for a to rejoin, which it never does (rebalance timeout 30 s).
    let pending = b.send(ApiKey::JoinGroup, 7, &join_request(group, "", Some("b")));
    let start = Instant::now();
    loop {
        if heartbeat(&mut a, group, &first.member_id, Some("a"), 1) == REBALANCE_IN_PROGRESS {
            break;
        }
        assert!(start.elapsed() < LOAD_DEADLINE, "no rebalance started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopping = std::thread::spawn(move || broker.stop());
    // The waiting JoinGroup is answered (or its connection closed), not left hanging.
    if let Some(mut frame) = b.recv_frame() {
        let header =
            ResponseHeader::decode(&mut frame, ApiKey::JoinGroup.response_header_version(7))
                .unwrap();
        assert_eq!(header.correlation_id, pending);
        let resp = JoinGroupResponse::decode(&mut frame, 7).unwrap();
        assert_eq!(resp.error_code, NOT_COORDINATOR);
    }
    stopping
        .join()
        .expect("the broker exits 0 within the stop deadline");
}

/// The oldest versions each group API still serves, end to end: JoinGroup v0 (no rebalance
/// timeout, no KIP-394), SyncGroup v0, Heartbeat v0, OffsetCommit v2 (retention time),
/// OffsetFetch v1 (no top-level error), LeaveGroup v0 (one member), DescribeGroups v0,
/// ListGroups v0, FindCoordinator v0.
#[test]
fn oldest_versions_work() {
    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "old", 1);
    let group = "raw-old";
    let fc: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        0,
        &FindCoordinatorRequest::default().with_key(s(group)),
    );
    assert_eq!(fc.error_code, 0);
    fetch_loaded(&mut c, group);
    let j: JoinGroupResponse = c.call(ApiKey::JoinGroup, 0, &join_request(group, "", None));
    assert_eq!(
        (j.error_code, j.generation_id),
        (0, 1),
        "v0 has no MEMBER_ID_REQUIRED"
    );
    let member = j.member_id.to_string();
    let sreq = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(1)
        .with_member_id(s(&member))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(Bytes::from_static(b"x")),
        ]);
    let sr: SyncGroupResponse = c.call(ApiKey::SyncGroup, 0, &sreq);
    assert_eq!((sr.error_code, &sr.assignment[..]), (0, &b"x"[..]));
    let hb: HeartbeatResponse = c.call(
        ApiKey::Heartbeat,
        0,
        &HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(&member))
            .with_generation_id(1),
    );
    assert_eq!(hb.error_code, 0);
    let commit = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(1)
        .with_member_id(s(&member))
        .with_retention_time_ms(60_000)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("old")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(3),
                ]),
        ]);
    let cr: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 2, &commit);
    assert_eq!(cr.topics[0].partitions[0].error_code, 0);
    let fetch = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("old")))
                .with_partition_indexes(vec![0]),
        ]));
    let fr: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 1, &fetch);
    assert_eq!(fr.topics[0].partitions[0].committed_offset, 3);
    let dg: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        0,
        &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
    );
    assert_eq!(dg.groups[0].group_state.as_str(), "Stable");
    assert_eq!(dg.groups[0].protocol_data.as_str(), "range");
    // KIP-430: asked for, the operations are every GROUP operation (no authorizer).
    let dg: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        3,
        &DescribeGroupsRequest::default()
            .with_groups(vec![gid(group)])
            .with_include_authorized_operations(true),
    );
    assert_eq!(dg.groups[0].authorized_operations, 0x0d48);
    let lg: ListGroupsResponse = c.call(ApiKey::ListGroups, 0, &ListGroupsRequest::default());
    assert!(lg.groups.iter().any(|g| g.group_id.0.as_str() == group));
    let lv: LeaveGroupResponse = c.call(
        ApiKey::LeaveGroup,
        0,
        &LeaveGroupRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(&member)),
    );
    assert_eq!(lv.error_code, 0);
    let lv: LeaveGroupResponse = c.call(
        ApiKey::LeaveGroup,
        0,
        &LeaveGroupRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(&member)),
    );
    assert_eq!(
        lv.error_code, UNKNOWN_MEMBER_ID,
        "v0 carries the member's error on top"
    );
    // An error from a join at v0..v6 still encodes (protocol name is not nullable there).
    let bad: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join_request(group, "nobody", None));
    assert_eq!(bad.error_code, UNKNOWN_MEMBER_ID);
}
