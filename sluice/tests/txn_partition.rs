//! The partition side of transactions (issue 15) over raw Kafka bytes against a real sluice
//! child: transactional batches from two producers, WriteTxnMarkers (commit and abort) over
//! the wire, read_committed / read_uncommitted Fetch (the last stable offset, the aborted
//! transaction list), ListOffsets at both isolation levels, DescribeProducers, the epoch
//! fencing of markers, and the same state rebuilt from the log after a restart.
//!
//! `a_new_leader_has_the_transactions_its_predecessor_replicated` does the same in a 3-node
//! cluster across a leader kill.
//!
//! The transaction coordinator is not involved: the test plays its part (markers with the
//! coordinator epoch it chooses), so each partition-side rule is checked on its own. The
//! brokers run with `transaction.partition.verification.enable=false` (Kafka's switch for
//! KIP-890's produce verification, `[transaction] partition_verification_enable`), so the
//! partitions take transactional batches the coordinator never heard of; the produce
//! requests still carry a transactional id, as Kafka requires for transactional records.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use common::requests::{
    create_topic_ok, name, new_topic, produce_request, producer_list, producers_request,
};
use common::{Broker, RawClient, batches, crc32c, init_producer_id, record_batch, txn_batch};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, DescribeProducersResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, ProducerId,
    TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};

const TOPIC: &str = "txn";
/// The transactional id every produce request here carries.
const TRANSACTIONAL_ID: &str = "txn-partition";
/// Brokers here run without KIP-890 produce verification (see the top of the file).
const NO_VERIFICATION: (&str, &str) = ("SLUICE_TRANSACTION_PARTITION_VERIFICATION_ENABLE", "false");

/// Produce (v9, acks=all) of `records` to partition 0 with the transactional id: (error,
/// base offset, the answer's error message).
fn produce_answer(c: &mut RawClient, topic: &str, records: Bytes) -> (i16, i64, String) {
    let req = txn_produce_request(topic, records);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    let message = p
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    (p.error_code, p.base_offset, message)
}

fn txn_produce_request(topic: &str, records: Bytes) -> ProduceRequest {
    produce_request(topic, 0, records, -1).with_transactional_id(Some(TransactionalId(
        kafka_protocol::protocol::StrBytes::from_static_str(TRANSACTIONAL_ID),
    )))
}
const READ_UNCOMMITTED: i8 = 0;
const READ_COMMITTED: i8 = 1;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_RECORD: i16 = 87;
const INVALID_TXN_STATE: i16 = 48;

/// One marker: (producer id, producer epoch, commit, coordinator epoch, topic, partitions).
type MarkerSpec<'a> = (i64, i16, bool, i32, &'a str, &'a [i32]);

/// WriteTxnMarkers v1: the error code of each partition, in request order.
fn write_markers(c: &mut RawClient, markers: &[MarkerSpec]) -> Vec<i16> {
    let resp: WriteTxnMarkersResponse =
        c.call(ApiKey::WriteTxnMarkers, 1, &markers_request(markers));
    marker_codes(&resp, markers)
}

fn markers_request(markers: &[MarkerSpec]) -> WriteTxnMarkersRequest {
    WriteTxnMarkersRequest::default().with_markers(
        markers
            .iter()
            .map(
                |&(pid, epoch, commit, coordinator_epoch, topic, partitions)| {
                    WritableTxnMarker::default()
                        .with_producer_id(ProducerId(pid))
                        .with_producer_epoch(epoch)
                        .with_transaction_result(commit)
                        .with_coordinator_epoch(coordinator_epoch)
                        .with_topics(vec![
                            WritableTxnMarkerTopic::default()
                                .with_name(name(topic))
                                .with_partition_indexes(partitions.to_vec()),
                        ])
                },
            )
            .collect(),
    )
}

fn marker_codes(resp: &WriteTxnMarkersResponse, markers: &[MarkerSpec]) -> Vec<i16> {
    assert_eq!(resp.markers.len(), markers.len());
    resp.markers
        .iter()
        .zip(markers)
        .flat_map(|(m, spec)| {
            assert_eq!(m.producer_id.0, spec.0);
            m.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn fetch_request(
    offset: i64,
    isolation_level: i8,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// What a Fetch answered for partition 0.
#[derive(Debug)]
struct Fetched {
    high_watermark: i64,
    last_stable_offset: i64,
    /// (producer id, first offset); None when the field is null.
    aborted: Option<Vec<(i64, i64)>>,
    /// (base offset, record count) per batch.
    batches: Vec<(i64, i32)>,
}

fn fetch_answer(resp: &FetchResponse) -> Fetched {
    assert_eq!(resp.error_code, 0);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    Fetched {
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        aborted: p.aborted_transactions.as_ref().map(|list| {
            list.iter()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect()
        }),
        batches: batches(p.records.clone().unwrap_or_default()),
    }
}

fn fetch(c: &mut RawClient, offset: i64, isolation_level: i8) -> Fetched {
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_request(offset, isolation_level, 0, 0),
    );
    fetch_answer(&resp)
}

/// ListOffsets v7 LATEST of partition 0 at `isolation_level`.
fn latest(c: &mut RawClient, isolation_level: i8) -> i64 {
    let resp: ListOffsetsResponse =
        c.call(ApiKey::ListOffsets, 7, &latest_request(isolation_level));
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

fn latest_request(isolation_level: i8) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ])
}

/// DescribeProducers v0 of partition 0: (producer id, epoch, last sequence, coordinator
/// epoch, current transaction start offset), by producer id.
fn producers(c: &mut RawClient) -> Vec<(i64, i32, i32, i32, i64)> {
    let resp: DescribeProducersResponse =
        c.call(ApiKey::DescribeProducers, 0, &producers_request(TOPIC));
    producer_list(&resp)
}

/// Waits (with a deadline) until a read_committed LATEST reaches `offset`: the high
/// watermark follows an acks=all append at once on a single node, but the test does not
/// rely on it.
fn wait_last_stable_offset(c: &mut RawClient, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lso = latest(c, READ_COMMITTED);
        if lso >= offset {
            assert_eq!(lso, offset);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "last stable offset stuck at {lso}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn transactions_on_a_partition_markers_lso_and_restart() {
    let mut config = tempfile::NamedTempFile::new().expect("config file");
    std::io::Write::write_all(
        &mut config,
        b"[transaction]\npartition_verification_enable = false\n",
    )
    .expect("config written");
    let config_path = config.path().to_str().expect("utf-8 path").to_string();
    let mut broker = Broker::start_with(&["--config", &config_path]);
    let mut c = broker.connect();
    create_topic_ok(&mut c, TOPIC, &[]);
    let p1 = init_producer_id(&mut c);
    let p2 = init_producer_id(&mut c);
    assert_ne!(p1, p2);

    // Offsets: p1 0..=2, plain 3..=4, p2 5..=6, p1 7.
    assert_eq!(produce_answer(&mut c, TOPIC, txn_batch(3, p1, 0, 0)).1, 0);
    assert_eq!(produce_answer(&mut c, TOPIC, record_batch(2, None)).1, 3);
    assert_eq!(produce_answer(&mut c, TOPIC, txn_batch(2, p2, 0, 0)).1, 5);
    assert_eq!(produce_answer(&mut c, TOPIC, txn_batch(1, p1, 0, 3)).1, 7);
    // Non-transactional data from p1 while its transaction is open.
    let (code, _, _) = produce_answer(&mut c, TOPIC, record_batch(1, Some((p1, 0, 4))));
    assert_eq!(code, INVALID_TXN_STATE);

    // read_committed stops at the last stable offset (p1's first offset); read_uncommitted
    // sees everything; both answer the same last stable offset.
    let committed = fetch(&mut c, 0, READ_COMMITTED);
    assert_eq!(
        (committed.high_watermark, committed.last_stable_offset),
        (8, 0)
    );
    assert!(committed.batches.is_empty());
    assert_eq!(committed.aborted, Some(vec![]));
    let uncommitted = fetch(&mut c, 0, READ_UNCOMMITTED);
    assert_eq!(uncommitted.last_stable_offset, 0);
    assert_eq!(uncommitted.batches, vec![(0, 3), (3, 2), (5, 2), (7, 1)]);
    assert_eq!(uncommitted.aborted, None);
    assert_eq!(latest(&mut c, READ_UNCOMMITTED), 8);
    assert_eq!(latest(&mut c, READ_COMMITTED), 0);
    assert_eq!(
        producers(&mut c),
        vec![(p1, 0, 3, -1, 0), (p2, 0, 1, -1, 5)]
    );

    // A read_committed long poll parked at the last stable offset wakes when it moves.
    let addr = broker.addr().to_string();
    let poll = std::thread::spawn(move || {
        let mut c2 = RawClient::connect(&addr);
        let resp: FetchResponse = c2.call(
            ApiKey::Fetch,
            12,
            &fetch_request(0, READ_COMMITTED, 20_000, 1),
        );
        fetch_answer(&resp)
    });

    // The coordinator's markers: commit p1, abort p2 (offsets 8 and 9).
    assert_eq!(
        write_markers(
            &mut c,
            &[
                (p1, 0, true, 0, TOPIC, &[0]),
                (p2, 0, false, 0, TOPIC, &[0])
            ]
        ),
        vec![0, 0]
    );
    wait_last_stable_offset(&mut c, 10);
    let woken = poll.join().unwrap();
    assert!(
        !woken.batches.is_empty(),
        "the parked fetch woke with data: {woken:?}"
    );

    let committed = fetch(&mut c, 0, READ_COMMITTED);
    assert_eq!(
        (committed.high_watermark, committed.last_stable_offset),
        (10, 10)
    );
    // Control batches are returned (the client skips them) with the aborted list.
    assert_eq!(
        committed.batches,
        vec![(0, 3), (3, 2), (5, 2), (7, 1), (8, 1), (9, 1)]
    );
    assert_eq!(committed.aborted, Some(vec![(p2, 5)]));
    // Kafka's rule: an aborted transaction ending at or after the fetch offset.
    assert_eq!(
        fetch(&mut c, 9, READ_COMMITTED).aborted,
        Some(vec![(p2, 5)])
    );
    assert_eq!(fetch(&mut c, 10, READ_COMMITTED).aborted, Some(vec![]));
    assert_eq!(fetch(&mut c, 0, READ_UNCOMMITTED).aborted, None);
    assert_eq!(latest(&mut c, READ_UNCOMMITTED), 10);
    assert_eq!(
        producers(&mut c),
        vec![(p1, 0, 3, 0, -1), (p2, 0, 1, 0, -1)]
    );

    // Transaction version 2: the marker carries p1's bumped epoch 1 (an empty transaction
    // here), from coordinator epoch 1; then an older producer epoch and an older coordinator
    // epoch are fenced.
    assert_eq!(
        write_markers(&mut c, &[(p1, 1, false, 1, TOPIC, &[0])]),
        vec![0]
    );
    assert_eq!(
        write_markers(&mut c, &[(p1, 0, false, 1, TOPIC, &[0])]),
        vec![INVALID_PRODUCER_EPOCH]
    );
    assert_eq!(
        write_markers(&mut c, &[(p1, 1, true, 0, TOPIC, &[0])]),
        vec![TRANSACTION_COORDINATOR_FENCED]
    );
    // Unknown partitions, and the known one beside them in the same marker.
    assert_eq!(
        write_markers(
            &mut c,
            &[
                (p2, 0, false, 0, "no-such-topic", &[0]),
                (p2, 0, true, 0, TOPIC, &[7, 0]),
            ]
        ),
        vec![UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_OR_PARTITION, 0]
    );
    // A client cannot write a control batch through Produce.
    let mut forged = txn_batch(1, p1, 1, 0).to_vec();
    forged[21..23].copy_from_slice(&0x30i16.to_be_bytes());
    let crc = crc32c(&forged[21..]);
    forged[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        produce_answer(&mut c, TOPIC, Bytes::from(forged)).0,
        INVALID_RECORD
    );

    // p2 opens another transaction (offset 12), then the broker restarts.
    assert_eq!(produce_answer(&mut c, TOPIC, txn_batch(1, p2, 0, 2)).1, 12);
    assert_eq!(latest(&mut c, READ_COMMITTED), 12);
    let before = producers(&mut c);
    assert_eq!(before, vec![(p1, 1, -1, 1, -1), (p2, 0, 2, 0, 12)]);
    drop(c);
    broker.restart();
    let mut c = broker.connect();
    wait_last_stable_offset(&mut c, 12);
    assert_eq!(latest(&mut c, READ_UNCOMMITTED), 13);
    assert_eq!(
        producers(&mut c),
        before,
        "producer state rebuilt from the log"
    );
    let committed = fetch(&mut c, 0, READ_COMMITTED);
    assert_eq!(committed.last_stable_offset, 12);
    assert_eq!(committed.aborted, Some(vec![(p2, 5)]));
    // The rebuilt coordinator epoch still fences.
    assert_eq!(
        write_markers(&mut c, &[(p1, 1, true, 0, TOPIC, &[0])]),
        vec![TRANSACTION_COORDINATOR_FENCED]
    );
    assert_eq!(
        write_markers(&mut c, &[(p2, 0, false, 0, TOPIC, &[0])]),
        vec![0]
    );
    wait_last_stable_offset(&mut c, 14);
    let committed = fetch(&mut c, 0, READ_COMMITTED);
    assert_eq!(committed.aborted, Some(vec![(p2, 5), (p2, 12)]));
    broker.stop();
}

/// How long the 3-node cluster may take to form, create the topic and elect a new leader.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(90);

/// The partition leader per `node`'s Metadata, once the ISR holds every live node.
fn leader_with_full_isr(c: &Cluster, live: &[i32]) -> Result<i32, String> {
    let md = c.try_metadata(live[0], Some(&[TOPIC]))?;
    let p = md
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("no partition")?;
    let leader = p.leader_id.0;
    if p.error_code != 0 || !live.contains(&leader) || p.isr_nodes.len() != live.len() {
        return Err(format!(
            "leader {leader}, isr {:?}, error {}",
            p.isr_nodes, p.error_code
        ));
    }
    Ok(leader)
}

/// acks=all Produce on `node`: the base offset, or Err with the error code.
fn try_produce(c: &Cluster, node: i32, records: Bytes) -> Result<i64, String> {
    let req = txn_produce_request(TOPIC, records);
    let resp: ProduceResponse = c.try_call(node, ApiKey::Produce, 9, &req)?;
    let p = &resp.responses[0].partition_responses[0];
    match p.error_code {
        0 => Ok(p.base_offset),
        code => Err(format!("node {node}: produce error {code}")),
    }
}

/// Markers replicate with the data: after the leader dies, the new leader (a former
/// follower, which recorded the producer state from fetched batches) has the same open
/// transaction, aborted list and coordinator epochs, and ends the transaction itself.
#[test]
fn a_new_leader_has_the_transactions_its_predecessor_replicated() {
    let mut cluster = Cluster::start_with_env(3, &[NO_VERIFICATION]);
    cluster.wait_until("3 brokers registered", CLUSTER_TIMEOUT, |c| {
        let md = c.try_metadata(c.node_ids()[0], Some(&[]))?;
        match md.brokers.len() {
            3 => Ok(()),
            n => Err(format!("{n} brokers")),
        }
    });
    let topic = new_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")]);
    cluster.create_topic(
        &CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000),
        CLUSTER_TIMEOUT,
    );
    let all = cluster.node_ids();
    let mut first = -1;
    cluster.wait_until("a leader and a full ISR", CLUSTER_TIMEOUT, |c| {
        first = leader_with_full_isr(c, &all)?;
        Ok(())
    });
    // Producer ids of the test's choosing: the partition takes any.
    let (p1, p2) = (1_000, 2_000);
    // The leader may learn it leads a moment after Metadata says so: retry the first append.
    cluster.wait_until("the first transactional append", CLUSTER_TIMEOUT, |c| {
        assert_eq!(try_produce(c, first, txn_batch(3, p1, 0, 0))?, 0);
        Ok(())
    });
    assert_eq!(try_produce(&cluster, first, txn_batch(2, p2, 0, 0)), Ok(3));
    let abort_p2: &[MarkerSpec] = &[(p2, 0, false, 3, TOPIC, &[0])];
    let resp: WriteTxnMarkersResponse = cluster
        .try_call(
            first,
            ApiKey::WriteTxnMarkers,
            1,
            &markers_request(abort_p2),
        )
        .unwrap();
    assert_eq!(marker_codes(&resp, abort_p2), vec![0]);
    assert_eq!(try_produce(&cluster, first, record_batch(1, None)), Ok(6));
    let committed: ListOffsetsResponse = cluster
        .try_call(
            first,
            ApiKey::ListOffsets,
            7,
            &latest_request(READ_COMMITTED),
        )
        .unwrap();
    assert_eq!(committed.topics[0].partitions[0].offset, 0);

    cluster.kill(first);
    let live: Vec<i32> = all.iter().copied().filter(|&n| n != first).collect();
    let mut second = -1;
    cluster.wait_until("a new leader", CLUSTER_TIMEOUT, |c| {
        second = leader_with_full_isr(c, &live)?;
        Ok(())
    });
    // Its high watermark reaches the log end (7), its last stable offset stays at p1's
    // first offset.
    cluster.wait_until("the new leader's offsets", CLUSTER_TIMEOUT, |c| {
        let offset = |isolation_level| -> Result<i64, String> {
            let resp: ListOffsetsResponse = c.try_call(
                second,
                ApiKey::ListOffsets,
                7,
                &latest_request(isolation_level),
            )?;
            let p = &resp.topics[0].partitions[0];
            match p.error_code {
                0 => Ok(p.offset),
                code => Err(format!("ListOffsets error {code}")),
            }
        };
        match (offset(READ_UNCOMMITTED)?, offset(READ_COMMITTED)?) {
            (7, 0) => Ok(()),
            other => Err(format!("(high watermark, LSO) = {other:?}")),
        }
    });
    let resp: DescribeProducersResponse = cluster
        .try_call(
            second,
            ApiKey::DescribeProducers,
            0,
            &producers_request(TOPIC),
        )
        .unwrap();
    assert_eq!(
        producer_list(&resp),
        vec![(p1, 0, 2, -1, 0), (p2, 0, 1, 3, -1)]
    );
    // p2's coordinator epoch (3) came with the replicated marker: an older one is fenced.
    let zombie: &[MarkerSpec] = &[(p2, 0, true, 2, TOPIC, &[0])];
    let resp: WriteTxnMarkersResponse = cluster
        .try_call(second, ApiKey::WriteTxnMarkers, 1, &markers_request(zombie))
        .unwrap();
    assert_eq!(
        marker_codes(&resp, zombie),
        vec![TRANSACTION_COORDINATOR_FENCED]
    );
    let commit_p1: &[MarkerSpec] = &[(p1, 0, true, 3, TOPIC, &[0])];
    let resp: WriteTxnMarkersResponse = cluster
        .try_call(
            second,
            ApiKey::WriteTxnMarkers,
            1,
            &markers_request(commit_p1),
        )
        .unwrap();
    assert_eq!(marker_codes(&resp, commit_p1), vec![0]);
    cluster.wait_until("the committed transaction readable", CLUSTER_TIMEOUT, |c| {
        let resp: FetchResponse = c.try_call(
            second,
            ApiKey::Fetch,
            12,
            &fetch_request(0, READ_COMMITTED, 0, 0),
        )?;
        let got = fetch_answer(&resp);
        if got.last_stable_offset != 8 {
            return Err(format!("{got:?}"));
        }
        assert_eq!(got.aborted, Some(vec![(p2, 3)]));
        assert_eq!(got.batches, vec![(0, 3), (3, 2), (5, 1), (6, 1), (7, 1)]);
        Ok(())
    });
    cluster.stop();
}
