//! Group coordinators in a real 3-process cluster (issue 7), with raw Kafka requests: the
//! coordinator of a group is the node leading its `__consumer_offsets` partition.
//!
//! - FindCoordinator (v3 single key and v4 batched keys, asked of every node) names, for each
//!   group, the leader Metadata gives for its offsets partition.
//! - A group request reaching another node gets NOT_COORDINATOR (JoinGroup, OffsetCommit,
//!   OffsetFetch); the coordinator takes the commit once it is replicated.
//! - The coordinator is SIGKILLed: a surviving node becomes coordinator, loads the partition
//!   and serves the committed offset, and takes new commits. The killed node restarts as a
//!   follower of the partition and answers NOT_COORDINATOR (it does not load what it does not
//!   lead).
//!
//! Nodes come from tests/common/cluster.rs (short failure detection). Every wait polls a
//! condition against a deadline.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const NODES: usize = 3;
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's offsets.topic.num.partitions, the broker's default.
const OFFSETS_PARTITIONS: i32 = 50;
const TOPIC: &str = "data";
const GROUP: &str = "cluster-group";
use kafka_wire::error::{NOT_COORDINATOR, TOPIC_ALREADY_EXISTS};
/// Quorum forming, topic creation, a failover (broker session 3 s) and a load, on 2 cores.
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn group_coordinator_follows_offsets_partition_leadership() {
    let mut cluster = Cluster::start(NODES);
    cluster.wait_until("every node lists every broker", WAIT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, Some(&[]))?;
            if md.brokers.len() != NODES {
                return Err(format!("node {node}: {} brokers", md.brokers.len()));
            }
        }
        Ok(())
    });
    create_data_topic(&cluster);

    // Every node names the same coordinator for every key, and it is the offsets partition's
    // leader.
    let keys: Vec<String> = (0..8)
        .map(|i| format!("g{i}"))
        .chain([GROUP.into()])
        .collect();
    cluster.wait_until(
        "FindCoordinator agrees with the offsets partitions' leaders",
        WAIT,
        |c| {
            for node in c.node_ids() {
                let named = find_coordinators(c, node, &keys)?;
                let leaders = offsets_leaders(c, node)?;
                for (key, coordinator) in keys.iter().zip(named) {
                    let leader = leaders[partition_for_group(key) as usize];
                    if coordinator != leader {
                        return Err(format!(
                            "node {node}: {key} -> {coordinator}, partition leader {leader}"
                        ));
                    }
                }
                let single = find_coordinator_v3(c, node, GROUP)?;
                if single != leaders[partition_for_group(GROUP) as usize] {
                    return Err(format!("node {node}: v3 names {single}"));
                }
            }
            Ok(())
        },
    );
    let coordinator = find_coordinator_v3(&cluster, 0, GROUP).expect("found above");
    let other = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != coordinator)
        .expect("three nodes");

    // Another node refuses the group's requests with NOT_COORDINATOR.
    assert_eq!(join_error(&cluster, other), Ok(NOT_COORDINATOR));
    assert_eq!(commit(&cluster, other, 42), Ok(NOT_COORDINATOR));
    assert_eq!(fetch(&cluster, other), Ok((NOT_COORDINATOR, -1)));

    // The coordinator takes the commit (once replicated) and serves it.
    cluster.wait_until("commit 42 at the coordinator", WAIT, |c| {
        expect_code(commit(c, coordinator, 42)?, 0)
    });
    assert_eq!(fetch(&cluster, coordinator), Ok((0, 42)));

    // The coordinator dies: another node leads the partition, loads it and serves the offset.
    cluster.kill(coordinator);
    let mut successor = -1;
    cluster.wait_until("a new coordinator serves offset 42", WAIT, |c| {
        let named = find_coordinator_v3(c, other, GROUP)?;
        if named == coordinator || named < 0 {
            return Err(format!("FindCoordinator still names {named}"));
        }
        successor = named;
        match fetch(c, named)? {
            (0, 42) => Ok(()),
            got => Err(format!("node {named}: OffsetFetch {got:?}")),
        }
    });
    cluster.wait_until("commit 43 at the new coordinator", WAIT, |c| {
        expect_code(commit(c, successor, 43)?, 0)
    });
    assert_eq!(fetch(&cluster, successor), Ok((0, 43)));

    // Back as a follower of the partition, the old coordinator does not serve the group.
    cluster.restart(coordinator);
    cluster.wait_until(
        "the restarted node answers NOT_COORDINATOR",
        WAIT,
        |c| match fetch(c, coordinator)? {
            (NOT_COORDINATOR, _) => Ok(()),
            got => Err(format!("node {coordinator}: OffsetFetch {got:?}")),
        },
    );
    assert_eq!(
        find_coordinator_v3(&cluster, coordinator, GROUP),
        Ok(successor)
    );
    assert_eq!(fetch(&cluster, successor), Ok((0, 43)));
    cluster.stop();
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn expect_code(code: i16, want: i16) -> Result<(), String> {
    if code == want {
        Ok(())
    } else {
        Err(format!("error code {code}"))
    }
}

/// Kafka's `Utils.abs(groupId.hashCode) % offsets.topic.num.partitions`.
fn partition_for_group(group: &str) -> i32 {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (hash & 0x7fff_ffff) % OFFSETS_PARTITIONS
}

/// `TOPIC` with 1 partition on all nodes (any node forwards CreateTopics to the controller).
fn create_data_topic(cluster: &Cluster) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(NODES as i16),
        ])
        .with_timeout_ms(30_000);
    cluster.wait_until("CreateTopics data", WAIT, |c| {
        let resp: CreateTopicsResponse = c.try_call(0, ApiKey::CreateTopics, 7, &req)?;
        match resp.topics[0].error_code {
            0 | TOPIC_ALREADY_EXISTS => Ok(()),
            code => Err(format!("error {code} {:?}", resp.topics[0].error_message)),
        }
    });
}

/// FindCoordinator v4 (batched keys) on `node`: each key's coordinator id; Err while any key
/// has an error (the offsets topic is being created or has no leader yet).
fn find_coordinators(cluster: &Cluster, node: i32, keys: &[String]) -> Result<Vec<i32>, String> {
    let req = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(keys.iter().map(|k| s(k)).collect());
    let resp: FindCoordinatorResponse = cluster.try_call(node, ApiKey::FindCoordinator, 4, &req)?;
    let mut ids = Vec::with_capacity(keys.len());
    for (key, c) in keys.iter().zip(&resp.coordinators) {
        if c.key.as_str() != key.as_str() || c.error_code != 0 {
            return Err(format!(
                "node {node}: {key}: {:?} error {}",
                c.key, c.error_code
            ));
        }
        let port = cluster
            .kafka_addr(c.node_id.0)
            .rsplit(':')
            .next()
            .unwrap_or("");
        if c.port.to_string() != port {
            return Err(format!(
                "node {node}: {key}: port {} for node {}",
                c.port, c.node_id.0
            ));
        }
        ids.push(c.node_id.0);
    }
    if ids.len() != keys.len() {
        return Err(format!("node {node}: {} answers", ids.len()));
    }
    Ok(ids)
}

/// FindCoordinator v3 (one key) on `node`.
fn find_coordinator_v3(cluster: &Cluster, node: i32, group: &str) -> Result<i32, String> {
    let req = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_key(s(group));
    let resp: FindCoordinatorResponse = cluster.try_call(node, ApiKey::FindCoordinator, 3, &req)?;
    if resp.error_code != 0 {
        return Err(format!(
            "node {node}: FindCoordinator error {}",
            resp.error_code
        ));
    }
    Ok(resp.node_id.0)
}

/// The leader of every `__consumer_offsets` partition in `node`'s Metadata.
fn offsets_leaders(cluster: &Cluster, node: i32) -> Result<Vec<i32>, String> {
    let md = cluster.try_metadata(node, Some(&[OFFSETS_TOPIC]))?;
    let topic = md.topics.first().ok_or("no offsets topic")?;
    let mut leaders = vec![-1; OFFSETS_PARTITIONS as usize];
    for p in &topic.partitions {
        if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
            *slot = p.leader_id.0;
        }
    }
    Ok(leaders)
}

/// JoinGroup v5 (a new member) at `node`: its error code.
fn join_error(cluster: &Cluster, node: i32) -> Result<i16, String> {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(bytes::Bytes::from_static(b"\0\0\0\0\0\0")),
        ]);
    let resp: JoinGroupResponse = cluster.try_call(node, ApiKey::JoinGroup, 5, &req)?;
    Ok(resp.error_code)
}

/// A standalone OffsetCommit v8 (generation -1) of `offset` for `TOPIC`-0 at `node`.
fn commit(cluster: &Cluster, node: i32, offset: i64) -> Result<i16, String> {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ]);
    let resp: OffsetCommitResponse = cluster.try_call(node, ApiKey::OffsetCommit, 8, &req)?;
    Ok(resp.topics[0].partitions[0].error_code)
}

/// OffsetFetch v7 of `TOPIC`-0 at `node`: (top-level error, committed offset).
fn fetch(cluster: &Cluster, node: i32) -> Result<(i16, i64), String> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partition_indexes(vec![0]),
        ]));
    let resp: OffsetFetchResponse = cluster.try_call(node, ApiKey::OffsetFetch, 7, &req)?;
    if resp.error_code != 0 {
        return Ok((resp.error_code, -1));
    }
    let offset = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.committed_offset);
    Ok((0, offset))
}
