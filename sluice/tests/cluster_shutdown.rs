//! A clean stop does not wait for replication that cannot happen (found by the nemesis test,
//! issue 12): an acks=all produce (or an offset commit) in flight on a node whose followers are
//! gone held its connection, and with it the shutdown, until `cluster.request_timeout_ms`,
//! past `broker.shutdown_timeout_s`; the node then exited 1 ("shutdown timed out"). Stopping a
//! whole cluster, the last nodes to go hit it.
//!
//! Here both followers of a partition are frozen (SIGSTOP), an acks=all produce is appended by
//! the leader and waits for them, and the leader gets SIGTERM: it must answer the produce
//! NOT_LEADER_OR_FOLLOWER (retriable, as Kafka answers when a leader goes away) and exit 0
//! within the harness's stop deadline.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::record_batch;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "stopping";
use kafka_wire::error::NOT_LEADER_OR_FOLLOWER;
/// Quorum forming and topic creation, debug build, 2 cores.
const WAIT: Duration = Duration::from_secs(90);

#[test]
fn a_leader_stops_cleanly_while_a_produce_waits_for_frozen_followers() {
    let mut cluster = Cluster::start(3);
    cluster.wait_until("every node lists every broker", WAIT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, Some(&[]))?;
            if md.brokers.len() != 3 {
                return Err(format!("node {node}: {} brokers", md.brokers.len()));
            }
        }
        Ok(())
    });
    create_topic(&cluster);
    let (leader, epoch) = wait_leader(&cluster);
    let followers: Vec<i32> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    for &f in &followers {
        cluster.pause(f);
    }
    let mut c = cluster.connect(leader);
    let id = c.send(ApiKey::Produce, 9, &produce_request(record_batch(1, None)));
    // The leader appended it (its log end moved) and now waits for the frozen followers.
    cluster.wait_until(
        "the leader appended the batch",
        WAIT,
        |c| match log_end_offset(c, leader, epoch)? {
            1 => Ok(()),
            end => Err(format!("log end offset {end}")),
        },
    );
    cluster.stop_node(leader);
    let resp: ProduceResponse = c.recv(ApiKey::Produce, 9, id);
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, NOT_LEADER_OR_FOLLOWER,
        "the waiting produce is answered at the stop"
    );
    for &f in &followers {
        cluster.resume(f);
    }
    cluster.stop();
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// RF=3, min.insync.replicas=2, through whichever node takes it.
fn create_topic(cluster: &Cluster) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(s("min.insync.replicas"))
                        .with_value(Some(s("2"))),
                ]),
        ])
        .with_timeout_ms(30_000);
    cluster.create_topic(&req, WAIT);
}

/// (leader, leader epoch) of partition 0 once every node agrees and the ISR is full.
fn wait_leader(cluster: &Cluster) -> (i32, i32) {
    let mut found = (-1, -1);
    cluster.wait_until(
        &format!("{TOPIC}-0 has a leader and a full ISR"),
        WAIT,
        |c| {
            let mut seen = Vec::new();
            for node in c.node_ids() {
                let md = c.try_metadata(node, Some(&[TOPIC]))?;
                let p = md
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .ok_or_else(|| format!("node {node}: no partition"))?;
                if p.error_code != 0 || p.leader_id.0 < 0 || p.isr_nodes.len() != 3 {
                    return Err(format!(
                        "node {node}: error {} leader {} ISR {:?}",
                        p.error_code, p.leader_id.0, p.isr_nodes
                    ));
                }
                seen.push((p.leader_id.0, p.leader_epoch));
            }
            seen.dedup();
            match seen.as_slice() {
                [one] => {
                    found = *one;
                    Ok(())
                }
                _ => Err(format!("nodes disagree: {seen:?}")),
            }
        },
    );
    found
}

fn produce_request(records: bytes::Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

/// The leader's log end offset: OffsetForLeaderEpoch for its current epoch ends there.
fn log_end_offset(cluster: &Cluster, leader: i32, epoch: i32) -> Result<i64, String> {
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(s(TOPIC)))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(epoch),
                ]),
        ]);
    let resp: OffsetForLeaderEpochResponse =
        cluster.try_call(leader, ApiKey::OffsetForLeaderEpoch, 4, &req)?;
    let p = &resp.topics[0].partitions[0];
    if p.error_code != 0 {
        return Err(format!("error {}", p.error_code));
    }
    Ok(p.end_offset)
}
