//! Issue 12 item 9: "delivery reports came back successful with no offset". A successful
//! acks=1 / acks=all ProduceResponse must carry the batch's base offset (Kafka answers -1 only
//! with an error, or never for acks=0); a retried idempotent batch that is a duplicate of one
//! already appended is answered with the ORIGINAL batch's base offset (Kafka's
//! ProducerStateEntry keeps the last five batches' metadata for exactly this).
//!
//! - `duplicates_answer_the_original_offsets`: one node; every batch of the five-batch window
//!   retried, with acks=1 and acks=all, before and after a restart (producer state rebuilt
//!   from the log): each answer is error 0 with the original base offset, and the log end does
//!   not move.
//! - `duplicates_answer_the_original_offsets_after_a_leader_change`: 3 nodes; batches acked
//!   (acks=all) by the leader, the leader SIGKILLed, the same batches retried at the new
//!   leader, whose producer state came from replication: the original offsets again.
//!
//! - `a_timed_out_batch_is_proved_by_the_next_success`: what item 9 actually was. Both
//!   followers frozen (no ISR change possible without a metadata quorum), so an acks=all batch
//!   times out: REQUEST_TIMED_OUT, though it is in the leader's log. Once they are back, the
//!   producer's next batch succeeds at the following offset. librdkafka takes such a success as
//!   proof that the earlier batch was written and reports its records delivered without an
//!   offset (`rd_kafka_dr_implicit_ack`: the "4 delivery reports ... with no offset", seen in
//!   the nemesis test with a short request timeout). The broker answered correctly, as Kafka
//!   does; a retry of the timed-out batch gets its original offset, and the log holds it once.
//!
//! Never a success without an offset: every answer here is checked for base_offset >= 0 when
//! its error is 0.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::Cluster;
use common::{Broker, RawClient, record_batch};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const PRODUCE_VERSION: i16 = 9;
use kafka_wire::error::{NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT};
/// The nodes' acks=all produce timeout in the timeout test (`cluster.request_timeout_ms`).
const SHORT_REQUEST_TIMEOUT: (&str, &str) = ("SLUICE_CLUSTER_REQUEST_TIMEOUT_MS", "2000");
/// Quorum forming, topic creation and a failover (broker session 3 s), debug build, 2 cores.
const WAIT: Duration = Duration::from_secs(90);
/// Batches a producer may have in flight, and the broker remembers per producer (Kafka: 5).
const WINDOW: i32 = 5;

#[test]
fn duplicates_answer_the_original_offsets() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    let create: CreateTopicsResponse =
        c.call(ApiKey::CreateTopics, 7, &create_request("dups", 1, 1, &[]));
    assert_eq!(create.topics[0].error_code, 0);
    let pid = init_producer_id(&mut c);
    // Five batches of 1..=5 records, acks alternating.
    let mut sent = Vec::new();
    let mut seq = 0;
    for i in 0..WINDOW {
        let count = i + 1;
        let batch = record_batch(count, Some((pid, 0, seq)));
        let acks = if i % 2 == 0 { -1 } else { 1 };
        let (error, base) = produce(&mut c, "dups", batch.clone(), acks);
        assert_eq!((error, base), (0, i64::from(seq)), "batch {i}");
        sent.push((batch, base));
        seq += count;
    }
    let end = i64::from(seq);
    assert_eq!(
        retry_window(&mut c, pid, &sent, seq, "live"),
        end,
        "retries appended nothing"
    );
    // The window moved by the batch appended after the retries.
    sent.remove(0);
    sent.push((record_batch(1, Some((pid, 0, seq))), end));
    seq += 1;
    // After a restart the producer state comes from the log's batch headers.
    drop(c);
    broker.restart();
    let mut c = broker.connect();
    assert_eq!(
        retry_window(&mut c, pid, &sent, seq, "after restart"),
        end + 1
    );
    broker.stop();
}

#[test]
fn duplicates_answer_the_original_offsets_after_a_leader_change() {
    let mut cluster = Cluster::start(3);
    wait_for_brokers(&cluster);
    let topic = "dups";
    create_topic(&cluster, topic);
    let leader = wait_leader(&cluster, topic, None, true);
    let mut c = cluster.connect(leader);
    let pid = init_producer_id(&mut c);
    let mut sent = Vec::new();
    let mut seq = 0;
    for i in 0..WINDOW {
        let count = i + 1;
        let batch = record_batch(count, Some((pid, 0, seq)));
        let (error, base) = produce(&mut c, topic, batch.clone(), -1);
        assert_eq!((error, base), (0, i64::from(seq)), "batch {i}");
        sent.push((batch, base));
        seq += count;
    }
    drop(c);
    cluster.kill(leader);
    let successor = wait_leader(&cluster, topic, Some(leader), false);
    // The successor may refuse for a moment (its producer state or ISR settling); a retry of a
    // duplicate is safe to repeat.
    for (i, (batch, base)) in sent.iter().enumerate() {
        for acks in [-1, 1] {
            let mut answer = (0, 0);
            cluster.wait_until(
                &format!("retry of batch {i} (acks={acks}) at node {successor}"),
                WAIT,
                |c| {
                    answer = try_produce(c, successor, topic, batch.clone(), acks)?;
                    match answer {
                        (0, _) => Ok(()),
                        (code, _) => Err(format!("error {code}")),
                    }
                },
            );
            assert_eq!(
                answer,
                (0, *base),
                "retry of batch {i} with acks={acks} at the new leader {successor}"
            );
        }
    }
    let next = record_batch(1, Some((pid, 0, seq)));
    let answer = try_produce(&cluster, successor, topic, next, -1).expect("produce");
    assert_eq!(
        answer,
        (0, i64::from(seq)),
        "the next batch follows the originals: the retries appended nothing"
    );
    cluster.restart(leader);
    cluster.stop();
}

#[test]
fn a_timed_out_batch_is_proved_by_the_next_success() {
    let mut cluster = Cluster::start_with_env(3, &[SHORT_REQUEST_TIMEOUT]);
    wait_for_brokers(&cluster);
    let topic = "timeouts";
    create_topic(&cluster, topic);
    let leader = wait_leader(&cluster, topic, None, true);
    let followers: Vec<i32> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    let mut c = cluster.connect(leader);
    let pid = init_producer_id(&mut c);
    assert_eq!(
        produce(&mut c, topic, record_batch(1, Some((pid, 0, 0))), -1),
        (0, 0)
    );
    // Frozen followers: the high watermark cannot pass the next batch, and without a metadata
    // quorum the ISR cannot shrink around them.
    for &f in &followers {
        cluster.pause(f);
    }
    let first = record_batch(2, Some((pid, 0, 1)));
    assert_eq!(
        produce(&mut c, topic, first.clone(), -1),
        (REQUEST_TIMED_OUT, -1),
        "an acks=all batch that cannot commit times out"
    );
    for &f in &followers {
        cluster.resume(f);
    }
    // The next batch (in sequence after the timed-out one) succeeds after it: the broker has
    // the timed-out batch. Retried on REQUEST_TIMED_OUT, as a producer does (a duplicate).
    let next = record_batch(3, Some((pid, 0, 3)));
    let mut answer = (0, 0);
    cluster.wait_until("the next batch succeeds", WAIT, |c| {
        let leader = current_leader(c, topic)?;
        answer = try_produce(c, leader, topic, next.clone(), -1)?;
        match answer.0 {
            0 => Ok(()),
            code => Err(format!("node {leader}: error {code}")),
        }
    });
    assert_eq!(answer, (0, 3), "the next batch follows the timed-out one");
    // A retry of the timed-out batch answers its offset (what a producer that retries rather
    // than inferring would see).
    let leader = current_leader(&cluster, topic).expect("a leader");
    assert_eq!(
        try_produce(&cluster, leader, topic, first, -1),
        Ok((0, 1)),
        "retry of the timed-out batch"
    );
    // Each batch once, in order.
    let fetched: FetchResponse = cluster
        .try_call(leader, ApiKey::Fetch, 12, &fetch_request(topic))
        .expect("fetch");
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(
        common::batches(p.records.clone().unwrap_or_default()),
        vec![(0, 1), (1, 2), (3, 3)]
    );
    cluster.stop();
}

// ---- helpers ----------------------------------------------------------------------------------

fn wait_for_brokers(cluster: &Cluster) {
    cluster.wait_until("every node lists every broker", WAIT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, Some(&[]))?;
            if md.brokers.len() != 3 {
                return Err(format!("node {node}: {} brokers", md.brokers.len()));
            }
        }
        Ok(())
    });
}

/// The leader of partition 0 as node 0..n (the first that answers) names it.
fn current_leader(cluster: &Cluster, topic: &str) -> Result<i32, String> {
    let mut last = String::new();
    for node in cluster.node_ids() {
        match cluster.try_metadata(node, Some(&[topic])) {
            Ok(md) => {
                let leader = md
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .map_or(-1, |p| p.leader_id.0);
                if leader >= 0 {
                    return Ok(leader);
                }
                last = format!("node {node}: no leader");
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn fetch_request(topic: &str) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// Retries every batch of `sent` with acks=all and acks=1 (each must be answered with its
/// original base offset), then appends one more batch at `next_seq`; returns its base offset.
fn retry_window(
    c: &mut RawClient,
    pid: i64,
    sent: &[(Bytes, i64)],
    next_seq: i32,
    when: &str,
) -> i64 {
    for (i, (batch, base)) in sent.iter().enumerate() {
        for acks in [-1, 1] {
            assert_eq!(
                produce(c, "dups", batch.clone(), acks),
                (0, *base),
                "{when}: retry of batch {i} with acks={acks}"
            );
        }
    }
    let next = record_batch(1, Some((pid, 0, next_seq)));
    let (error, base) = produce(c, "dups", next, -1);
    assert_eq!(error, 0, "{when}: the next batch after the retries");
    base
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn create_request(
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s(topic)))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(s(k))
                                .with_value(Some(s(v)))
                        })
                        .collect(),
                ),
        ])
        .with_timeout_ms(30_000)
}

/// RF=3, min.insync.replicas=2, through whichever node takes it.
fn create_topic(cluster: &Cluster, topic: &str) {
    let req = create_request(topic, 1, 3, &[("min.insync.replicas", "2")]);
    cluster.create_topic(&req, WAIT);
}

/// The partition's leader once every live node agrees on it (not `not`), with a full ISR of 3
/// when `full_isr`.
fn wait_leader(cluster: &Cluster, topic: &str, not: Option<i32>, full_isr: bool) -> i32 {
    let mut leader = -1;
    let nodes: Vec<i32> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| Some(n) != not)
        .collect();
    cluster.wait_until(&format!("{topic}-0 has a leader"), WAIT, |c| {
        let mut seen = Vec::new();
        for &node in &nodes {
            let md = c.try_metadata(node, Some(&[topic]))?;
            let p = md
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| format!("node {node}: no partition"))?;
            if p.error_code != 0 || p.leader_id.0 < 0 || Some(p.leader_id.0) == not {
                return Err(format!(
                    "node {node}: error {} leader {}",
                    p.error_code, p.leader_id.0
                ));
            }
            if full_isr && p.isr_nodes.len() != 3 {
                return Err(format!("node {node}: ISR {:?}", p.isr_nodes));
            }
            seen.push(p.leader_id.0);
        }
        seen.dedup();
        match seen.as_slice() {
            [one] => {
                // Metadata names the leader before its shard has opened the partition (a
                // client then gets a retriable error and retries); these tests' first produce
                // must not, so the leader must also answer for the partition.
                leader_serves(c, *one, topic)?;
                leader = *one;
                Ok(())
            }
            _ => Err(format!("nodes disagree: {seen:?}")),
        }
    });
    leader
}

/// ListOffsets(latest) of partition 0 at `node` answers without error.
fn leader_serves(cluster: &Cluster, node: i32, topic: &str) -> Result<(), String> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let resp: ListOffsetsResponse = cluster.try_call(node, ApiKey::ListOffsets, 7, &req)?;
    match resp.topics[0].partitions[0].error_code {
        0 => Ok(()),
        code => Err(format!("node {node}: ListOffsets error {code}")),
    }
}

fn init_producer_id(c: &mut RawClient) -> i64 {
    let init: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0, "InitProducerId");
    assert!(init.producer_id.0 >= 0);
    init.producer_id.0
}

fn produce_request(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

/// (error, base offset) of partition 0's answer; a success must carry an offset.
fn answer(resp: &ProduceResponse) -> (i16, i64) {
    let p = &resp.responses[0].partition_responses[0];
    assert!(
        p.error_code != 0 || p.base_offset >= 0,
        "a successful produce answered base offset {}",
        p.base_offset
    );
    (p.error_code, p.base_offset)
}

fn produce(c: &mut RawClient, topic: &str, records: Bytes, acks: i16) -> (i16, i64) {
    let resp: ProduceResponse = c.call(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(topic, records, acks),
    );
    answer(&resp)
}

fn try_produce(
    cluster: &Cluster,
    node: i32,
    topic: &str,
    records: Bytes,
    acks: i16,
) -> Result<(i16, i64), String> {
    let resp: ProduceResponse = cluster.try_call(
        node,
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(topic, records, acks),
    )?;
    let got = answer(&resp);
    if got.0 == NOT_LEADER_OR_FOLLOWER {
        return Err(format!("node {node}: NOT_LEADER_OR_FOLLOWER"));
    }
    Ok(got)
}
