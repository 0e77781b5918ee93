//! Kafka's own verifiable producer and consumer (the tools Kafka's system tests use) against a
//! real 3-process `sluice` cluster while partition leaders are killed (SIGKILL) and restarted
//! (issue 14).
//!
//! A topic with 3 partitions, RF 3 and `min.insync.replicas=2` is created with kafka-topics.
//! kafka-verifiable-producer (`--acks -1`, the tool's own settings: no retries, so a send that
//! meets a dead leader fails and is reported, never written twice) and
//! kafka-verifiable-consumer (`--verbose`: one event per record, committing after each poll)
//! run throughout. Two rounds each kill the leader of one partition, wait until another node
//! leads it and the producer has had more records acknowledged, restart the node and wait for
//! the full ISR again. Then every acknowledged record must have been read at the partition and
//! offset it was acknowledged at (zero lost), and no value may sit at two offsets (zero
//! duplicated). Re-reads of one offset after a rebalance are the consumer's at-least-once
//! replay, counted and printed, not duplicates in the log.
//!
//! A failure prints every node's log tail and keeps the cluster's temp dir (common/cluster.rs).

mod common;
#[path = "common/verifiable.rs"]
mod verifiable;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use kafka_protocol::messages::MetadataResponse;
use refstack::JavaStack;
use serde_json::Value;
use verifiable::{
    EventTool, TOOL_TIMEOUT, TOPIC_COMMAND, VERIFIABLE_CONSUMER, VERIFIABLE_PRODUCER, acked,
    check_delivery, consumed, run_tool, send_errors,
};

const NODES: usize = 3;
const TOPIC: &str = "verifiable";
const PARTITIONS: i32 = 3;
/// The producer's records and rate: about 24 s of traffic, longer than the two kill rounds.
const RECORDS: usize = 6_000;
const RECORDS_PER_SEC: usize = 250;
/// Records the producer must have acknowledged after a kill before the node comes back.
const ACKED_AFTER_KILL: usize = 250;
/// Quorum formation, leader election and ISR recovery on a loaded 2-core machine.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the consumer may take to read what the producer acknowledged.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn verifiable_producer_and_consumer_lose_nothing_while_leaders_die() {
    let started = Instant::now();
    let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster =
        Cluster::start_with_env(NODES, &[("SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")]);
    let bootstrap = cluster.bootstrap();
    cluster.wait_until("every broker registered", CLUSTER_TIMEOUT, |c| {
        let md = metadata(c, None)?;
        (md.brokers.len() == NODES)
            .then_some(())
            .ok_or(format!("{} brokers", md.brokers.len()))
    });
    let created = run_tool(
        &stack,
        TOPIC_COMMAND,
        &[
            "--bootstrap-server",
            &bootstrap,
            "--create",
            "--topic",
            TOPIC,
            "--partitions",
            &PARTITIONS.to_string(),
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
        TOOL_TIMEOUT,
    );
    assert!(
        created.status.success() && created.stdout.contains("Created topic"),
        "{}",
        created.describe("kafka-topics --create")
    );
    wait_full_isr(&cluster);

    let mut consumer = EventTool::start(
        &stack,
        VERIFIABLE_CONSUMER,
        &[
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            TOPIC,
            "--group-id",
            "verifiable-group",
            "--verbose",
            "--reset-policy",
            "earliest",
        ],
    );
    let mut producer = EventTool::start(
        &stack,
        VERIFIABLE_PRODUCER,
        &[
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            TOPIC,
            "--max-messages",
            &RECORDS.to_string(),
            "--throughput",
            &RECORDS_PER_SEC.to_string(),
            "--acks",
            "-1",
        ],
    );
    producer.wait_until("first acknowledgements", CLUSTER_TIMEOUT, |e| {
        at_least(acked(e).len(), ACKED_AFTER_KILL)
    });
    consumer.wait_until("first records read", CLUSTER_TIMEOUT, |e| {
        at_least(consumed(e).len(), 1)
    });

    for partition in [0, 1] {
        let leader = leader_of(&cluster, partition, None);
        let before = acked(&producer.events()).len();
        cluster.kill(leader);
        eprintln!("killed node {leader}, leader of partition {partition}, after {before} acks");
        cluster.wait_until("another leader", CLUSTER_TIMEOUT, |c| {
            let now = leader_of(c, partition, Some(leader));
            (now != leader)
                .then_some(())
                .ok_or(format!("still led by {now}"))
        });
        producer.wait_until("acknowledgements after the kill", CLUSTER_TIMEOUT, |e| {
            at_least(acked(e).len(), before + ACKED_AFTER_KILL)
        });
        cluster.restart(leader);
        wait_full_isr(&cluster);
    }

    let (status, produced) = producer.wait_exit(CLUSTER_TIMEOUT);
    assert!(
        status.success(),
        "verifiable producer: {status}\n{}",
        producer.stderr()
    );
    let acknowledged = acked(&produced);
    let errors = send_errors(&produced);
    assert_eq!(
        acknowledged.len() + errors.len(),
        RECORDS,
        "every send is acknowledged or reported failed"
    );
    let want: HashSet<(i32, i64)> = acknowledged
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    consumer.wait_until("every acknowledged record read", READ_TIMEOUT, |e| {
        let read: HashSet<(i32, i64)> = consumed(e)
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        let missing = want.difference(&read).count();
        (missing == 0)
            .then_some(())
            .ok_or(format!("{missing} not read yet"))
    });
    let read_events = consumer.kill();
    let delivery = check_delivery(&acknowledged, &consumed(&read_events))
        .unwrap_or_else(|e| panic!("{e}\nconsumer stderr:\n{}", consumer.stderr()));
    let committed_failures = read_events
        .iter()
        .filter(|e| e["name"] == "offsets_committed" && e["success"] == Value::Bool(false))
        .count();
    eprintln!(
        "verifiable: {} acknowledged, {} send errors (first: {:?}), {delivery:?}, {committed_failures} failed commits, {:?}",
        acknowledged.len(),
        errors.len(),
        errors.first(),
        started.elapsed()
    );
    cluster.stop();
}

fn at_least(have: usize, want: usize) -> Result<(), String> {
    (have >= want)
        .then_some(())
        .ok_or(format!("{have} of {want}"))
}

/// Metadata for the topic (or all) from the first node that answers, skipping `avoid`.
fn metadata(cluster: &Cluster, avoid: Option<i32>) -> Result<MetadataResponse, String> {
    let mut last = String::from("no node asked");
    for node in cluster.node_ids().into_iter().filter(|&n| Some(n) != avoid) {
        match cluster.try_metadata(node, Some(&[TOPIC])) {
            Ok(md) => return Ok(md),
            Err(e) => last = format!("node {node}: {e}"),
        }
    }
    Err(last)
}

/// The leader of `partition` as a node other than `avoid` sees it (-1 when none).
fn leader_of(cluster: &Cluster, partition: i32, avoid: Option<i32>) -> i32 {
    let md = metadata(cluster, avoid).unwrap_or_else(|e| panic!("metadata: {e}"));
    md.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == partition)
        .map(|p| p.leader_id.0)
        .unwrap_or(-1)
}

/// Every partition has a leader and all 3 replicas in its ISR, on every node.
fn wait_full_isr(cluster: &Cluster) {
    cluster.wait_until("a leader and a full ISR everywhere", CLUSTER_TIMEOUT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, Some(&[TOPIC]))?;
            let partitions = md.topics.first().map(|t| &t.partitions[..]).unwrap_or(&[]);
            if partitions.len() != PARTITIONS as usize {
                return Err(format!("node {node}: {} partitions", partitions.len()));
            }
            for p in partitions {
                if p.leader_id.0 < 0 || p.isr_nodes.len() != NODES {
                    return Err(format!(
                        "node {node}: partition {} leader {} isr {:?}",
                        p.partition_index, p.leader_id.0, p.isr_nodes
                    ));
                }
            }
        }
        Ok(())
    });
}
