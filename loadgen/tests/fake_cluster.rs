//! loadgen against a scripted two-broker fake cluster: leader routing, ApiVersions
//! negotiation, and retries with a metadata refresh when leadership moves mid-run.
//!
//! The fake speaks just enough Kafka (ApiVersions, Metadata, Produce) through kafka-protocol,
//! counts the records it appends per partition, and moves partition 0 from broker 0 to broker
//! 1 after broker 0 has answered a few Produce requests; requests that still reach broker 0
//! for partition 0 get NOT_LEADER_OR_FOLLOWER. For idempotent runs it also hands out a
//! producer id and, like a Kafka leader, rejects a batch whose base sequence is not the next
//! one expected for its producer and partition (OUT_OF_ORDER_SEQUENCE_NUMBER).
//!
//! For transactional runs broker 1 is also the transaction coordinator (FindCoordinator,
//! InitProducerId, AddPartitionsToTxn, EndTxn), and the fake checks the order of the
//! transaction protocol as a Kafka coordinator and leader would: a transactional batch only
//! for a partition added to the open transaction, EndTxn only once no Produce is being
//! handled, and after each EndTxn the next AddPartitionsToTxn is answered
//! CONCURRENT_TRANSACTIONS once (the markers are still being written). Broken rules are
//! collected as violations; committed records and markers are counted.

use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ApiVersionsResponse, BrokerId,
    EndTxnRequest, EndTxnResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, ProducerId, ResponseHeader,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, StrBytes, decode_request_header_from_buffer,
};
use kafka_wire::error::{
    CONCURRENT_TRANSACTIONS, NOT_LEADER_OR_FOLLOWER, OUT_OF_ORDER_SEQUENCE_NUMBER,
};
use loadgen::LoadgenArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOPIC: &str = "fake-topic";
const PARTITIONS: usize = 2;
/// Produce requests broker 0 answers before partition 0 moves to broker 1.
const MOVE_AFTER_REQUESTS: u64 = 3;
const PRODUCER_ID: i64 = 4242;

#[derive(Default)]
struct State {
    ports: Vec<u16>,
    leaders: Vec<i32>,
    /// Records appended per partition (from each accepted batch's records_count).
    appended: Vec<u64>,
    /// records_count of every accepted batch, in arrival order.
    batch_records: Vec<i32>,
    /// How long a Produce waits before it is handled (a slow broker).
    produce_delay: std::time::Duration,
    produce_requests_on_0: u64,
    not_leader_answers: u64,
    /// Highest Produce version any client used.
    produce_version_max: i16,
    /// Next expected base sequence per (producer id, partition) — the cluster's shared
    /// producer state, as replicated in Kafka.
    next_sequence: std::collections::HashMap<(i64, usize), i32>,
    out_of_order_answers: u64,
    producer_ids_issued: u64,
    /// Highest Produce version advertised (9 unless a test asks for more).
    produce_version_advertised: i16,
    txn: TxnModel,
}

/// The fake's transaction coordinator and the leaders' view of one transactional producer.
#[derive(Default)]
struct TxnModel {
    /// Partitions in the open transaction.
    added: std::collections::BTreeSet<usize>,
    /// Records of the open transaction.
    pending_records: u64,
    committed_records: u64,
    /// Commit markers: partitions of committed transactions.
    markers: u64,
    commits: u64,
    /// The next AddPartitionsToTxn gets CONCURRENT_TRANSACTIONS (set by EndTxn).
    markers_in_flight: bool,
    concurrent_answers: u64,
    /// Produce requests being handled now.
    produces_in_progress: u64,
    violations: Vec<String>,
    /// (key type, key) of each FindCoordinator.
    find_coordinator: Vec<(i8, String)>,
    /// Versions used: AddPartitionsToTxn, EndTxn (highest).
    add_partitions_version: i16,
    end_txn_version: i16,
}

type Shared = Arc<Mutex<State>>;

async fn serve(listener: TcpListener, node: i32, state: Shared) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(connection(socket, node, state.clone()));
    }
}

async fn connection(mut socket: TcpStream, node: i32, state: Shared) {
    loop {
        let Ok(size) = socket.read_i32().await else {
            return;
        };
        let mut frame = vec![0u8; size as usize];
        if socket.read_exact(&mut frame).await.is_err() {
            return;
        }
        let mut body = Bytes::from(frame);
        let header = decode_request_header_from_buffer(&mut body).expect("request header");
        let version = header.request_api_version;
        let api_key = ApiKey::try_from(header.request_api_key).expect("known api key");
        let mut out = BytesMut::new();
        let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
        match api_key {
            ApiKey::ApiVersions => {
                let produce_max = match state.lock().unwrap().produce_version_advertised {
                    0 => 9,
                    max => max,
                };
                // What Kafka 4 advertises for the transaction APIs.
                let versions = [
                    (ApiKey::Produce, 3, produce_max),
                    (ApiKey::Metadata, 0, 9),
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::InitProducerId, 0, 5),
                    (ApiKey::FindCoordinator, 0, 6),
                    (ApiKey::AddPartitionsToTxn, 0, 5),
                    (ApiKey::EndTxn, 0, 5),
                ];
                let response = ApiVersionsResponse::default().with_api_keys(
                    versions
                        .iter()
                        .map(|&(key, min, max)| {
                            ApiVersion::default()
                                .with_api_key(key as i16)
                                .with_min_version(min)
                                .with_max_version(max)
                        })
                        .collect(),
                );
                encode(&mut out, &response_header, &response, version);
            }
            ApiKey::Metadata => {
                MetadataRequest::decode(&mut body, version).expect("metadata request");
                let state = state.lock().unwrap();
                let response = MetadataResponse::default()
                    .with_brokers(
                        state
                            .ports
                            .iter()
                            .enumerate()
                            .map(|(id, port)| {
                                MetadataResponseBroker::default()
                                    .with_node_id(BrokerId(id as i32))
                                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                                    .with_port(i32::from(*port))
                            })
                            .collect(),
                    )
                    .with_controller_id(BrokerId(0))
                    .with_topics(vec![
                        MetadataResponseTopic::default()
                            .with_name(Some(loadgen::client::cluster::topic_name(TOPIC)))
                            .with_partitions(
                                state
                                    .leaders
                                    .iter()
                                    .enumerate()
                                    .map(|(p, &leader)| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(p as i32)
                                            .with_leader_id(BrokerId(leader))
                                            .with_replica_nodes(vec![BrokerId(leader)])
                                            .with_isr_nodes(vec![BrokerId(leader)])
                                    })
                                    .collect(),
                            ),
                    ]);
                encode(&mut out, &response_header, &response, version);
            }
            ApiKey::FindCoordinator => {
                let request = FindCoordinatorRequest::decode(&mut body, version).unwrap();
                let mut state = state.lock().unwrap();
                let key = (request.key_type, request.key.to_string());
                state.txn.find_coordinator.push(key);
                let response = FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(i32::from(state.ports[1]));
                encode(&mut out, &response_header, &response, version);
            }
            ApiKey::AddPartitionsToTxn => {
                let request = AddPartitionsToTxnRequest::decode(&mut body, version).unwrap();
                let mut state = state.lock().unwrap();
                let txn = &mut state.txn;
                txn.add_partitions_version = txn.add_partitions_version.max(version);
                if node != 1 {
                    txn.violations
                        .push("AddPartitionsToTxn off the coordinator".into());
                }
                let code = if std::mem::take(&mut txn.markers_in_flight) {
                    txn.concurrent_answers += 1;
                    CONCURRENT_TRANSACTIONS
                } else {
                    0
                };
                let mut results = Vec::new();
                for topic in &request.v3_and_below_topics {
                    let mut partitions = Vec::new();
                    for &p in &topic.partitions {
                        if code == 0 {
                            txn.added.insert(p as usize);
                        }
                        partitions.push(
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code),
                        );
                    }
                    results.push(
                        AddPartitionsToTxnTopicResult::default()
                            .with_name(topic.name.clone())
                            .with_results_by_partition(partitions),
                    );
                }
                let response = AddPartitionsToTxnResponse::default()
                    .with_results_by_topic_v3_and_below(results);
                encode(&mut out, &response_header, &response, version);
            }
            ApiKey::EndTxn => {
                let request = EndTxnRequest::decode(&mut body, version).unwrap();
                let mut state = state.lock().unwrap();
                let txn = &mut state.txn;
                txn.end_txn_version = txn.end_txn_version.max(version);
                if txn.produces_in_progress > 0 {
                    txn.violations.push(format!(
                        "EndTxn with {} Produce requests still being handled",
                        txn.produces_in_progress
                    ));
                }
                if !request.committed {
                    txn.violations.push("an abort".into());
                }
                txn.committed_records += std::mem::take(&mut txn.pending_records);
                txn.markers += txn.added.len() as u64;
                txn.added.clear();
                txn.commits += 1;
                txn.markers_in_flight = true;
                let response = EndTxnResponse::default();
                encode(&mut out, &response_header, &response, version);
            }
            ApiKey::InitProducerId => {
                let request = InitProducerIdRequest::decode(&mut body, version).unwrap();
                let mut state = state.lock().unwrap();
                state.producer_ids_issued += 1;
                if request.transactional_id.is_some() && node != 1 {
                    let violation = "a transactional InitProducerId off the coordinator".into();
                    state.txn.violations.push(violation);
                }
                let response = InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(PRODUCER_ID))
                    .with_producer_epoch(0);
                encode(&mut out, &response_header, &response, version);
            }
            ApiKey::Produce => {
                let request = ProduceRequest::decode(&mut body, version).expect("produce request");
                let delay = {
                    let mut state = state.lock().unwrap();
                    state.txn.produces_in_progress += 1;
                    state.produce_delay
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut state = state.lock().unwrap();
                state.txn.produces_in_progress -= 1;
                let transactional_request = request.transactional_id.is_some();
                state.produce_version_max = state.produce_version_max.max(version);
                if node == 0 {
                    state.produce_requests_on_0 += 1;
                    if state.produce_requests_on_0 == MOVE_AFTER_REQUESTS + 1 {
                        state.leaders[0] = 1;
                    }
                }
                let mut topics = Vec::new();
                for topic in &request.topic_data {
                    let mut partitions = Vec::new();
                    for data in &topic.partition_data {
                        let p = data.index as usize;
                        let code = if state.leaders[p] != node {
                            state.not_leader_answers += 1;
                            NOT_LEADER_OR_FOLLOWER
                        } else {
                            let mut batch = data.records.clone().expect("records");
                            let transactional = batch[22] & 0x10 != 0;
                            if transactional != transactional_request {
                                state.txn.violations.push(format!(
                                    "batch attribute bit 4 {transactional}, transactional id {transactional_request}"
                                ));
                            }
                            if transactional && !state.txn.added.contains(&p) {
                                state.txn.violations.push(format!(
                                    "a transactional batch for partition {p}, not in the transaction"
                                ));
                            }
                            batch.advance(43);
                            let producer_id = batch.get_i64();
                            batch.advance(2);
                            let base_sequence = batch.get_i32();
                            let count = batch.get_i32();
                            let in_order = producer_id < 0 || {
                                let next = state.next_sequence.entry((producer_id, p)).or_insert(0);
                                let ok = *next == base_sequence;
                                if ok {
                                    *next += count;
                                }
                                ok
                            };
                            if in_order {
                                if transactional {
                                    state.txn.pending_records += count as u64;
                                }
                                state.appended[p] += count as u64;
                                state.batch_records.push(count);
                                0
                            } else {
                                state.out_of_order_answers += 1;
                                OUT_OF_ORDER_SEQUENCE_NUMBER
                            }
                        };
                        partitions.push(
                            PartitionProduceResponse::default()
                                .with_index(data.index)
                                .with_error_code(code),
                        );
                    }
                    topics.push(
                        TopicProduceResponse::default()
                            .with_name(topic.name.clone())
                            .with_partition_responses(partitions),
                    );
                }
                if request.acks == 0 {
                    continue;
                }
                let response = ProduceResponse::default().with_responses(topics);
                encode(&mut out, &response_header, &response, version);
            }
            other => panic!("the fake cluster does not serve {other:?}"),
        }
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn encode<R: Encodable + HeaderVersion>(
    out: &mut BytesMut,
    header: &ResponseHeader,
    response: &R,
    version: i16,
) {
    let header_version = R::header_version(version);
    let size =
        header.compute_size(header_version).unwrap() + response.compute_size(version).unwrap();
    out.put_i32(size as i32);
    header.encode(out, header_version).unwrap();
    response.encode(out, version).unwrap();
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

struct Outcome {
    report: loadgen::Report,
    leaders: Vec<i32>,
    appended: Vec<u64>,
    batch_records: Vec<i32>,
    not_leader_answers: u64,
    out_of_order_answers: u64,
    producer_ids_issued: u64,
    produce_version_max: i16,
    txn: TxnModel,
}

async fn run_against_fake(extra: &[&str]) -> Outcome {
    run_against_fake_with_delay(extra, std::time::Duration::ZERO).await
}

/// `produce_delay`: each Produce request waits this long before it is handled.
async fn run_against_fake_with_delay(
    extra: &[&str],
    produce_delay: std::time::Duration,
) -> Outcome {
    run_against_fake_with(extra, produce_delay, 0).await
}

/// `produce_version_advertised`: the highest Produce version the fake offers (0: 9).
async fn run_against_fake_with(
    extra: &[&str],
    produce_delay: std::time::Duration,
    produce_version_advertised: i16,
) -> Outcome {
    let state: Shared = Arc::default();
    let mut listeners = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        state
            .lock()
            .unwrap()
            .ports
            .push(listener.local_addr().unwrap().port());
        listeners.push(listener);
    }
    {
        let mut s = state.lock().unwrap();
        s.leaders = vec![0, 1];
        s.appended = vec![0; PARTITIONS];
        s.produce_delay = produce_delay;
        s.produce_version_advertised = produce_version_advertised;
    }
    for (node, listener) in listeners.into_iter().enumerate() {
        tokio::spawn(serve(listener, node as i32, state.clone()));
    }
    let bootstrap = format!("127.0.0.1:{}", state.lock().unwrap().ports[1]);
    let mut argv = vec![
        "loadgen",
        "--bootstrap",
        &bootstrap,
        "--topic",
        TOPIC,
        "--records",
        "20000",
        "--record-bytes",
        "100",
        "--batch-bytes",
        "16384",
        "--linger-ms",
        "1",
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    let args = Cli::try_parse_from(argv).unwrap().args;
    let report = loadgen::run_quietly(args, std::future::pending())
        .await
        .unwrap();
    let mut state = state.lock().unwrap();
    Outcome {
        txn: std::mem::take(&mut state.txn),
        report,
        leaders: state.leaders.clone(),
        appended: state.appended.clone(),
        batch_records: state.batch_records.clone(),
        not_leader_answers: state.not_leader_answers,
        out_of_order_answers: state.out_of_order_answers,
        producer_ids_issued: state.producer_ids_issued,
        produce_version_max: state.produce_version_max,
    }
}

const RECORDS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_leader_move_without_losing_records() {
    let outcome = run_against_fake(&["--acks", "1"]).await;
    let report = &outcome.report;
    assert_eq!(outcome.leaders, vec![1, 1], "the fake moved partition 0");
    assert!(
        outcome.not_leader_answers > 0,
        "some request hit the old leader"
    );
    assert_eq!(
        outcome.produce_version_max, 9,
        "highest version both sides speak"
    );
    assert_eq!(outcome.producer_ids_issued, 0);
    assert_eq!(report.records_sent, RECORDS);
    assert_eq!(report.records_acked, RECORDS);
    assert_eq!(report.records_failed, 0);
    // Every record appended exactly once: rejected batches were resent to the new leader.
    assert_eq!(
        outcome.appended.iter().sum::<u64>(),
        RECORDS,
        "{:?}",
        outcome.appended
    );
    assert_eq!(
        report
            .errors_by_code
            .get("NOT_LEADER_OR_FOLLOWER(6)")
            .copied(),
        Some(outcome.not_leader_answers)
    );
}

/// Idempotent producers stamp contiguous sequences per partition, and batches resent after a
/// leader move keep their sequences and their order (max in flight 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_sequences_stay_in_order_across_a_leader_move() {
    let outcome = run_against_fake(&["--acks", "all", "--idempotence", "--producers", "1"]).await;
    let report = &outcome.report;
    assert_eq!(outcome.producer_ids_issued, 1);
    assert!(
        outcome.not_leader_answers > 0,
        "some request hit the old leader"
    );
    assert_eq!(
        outcome.out_of_order_answers, 0,
        "{:?}",
        report.errors_by_code
    );
    assert_eq!(report.records_acked, RECORDS);
    assert_eq!(
        outcome.appended.iter().sum::<u64>(),
        RECORDS,
        "{:?}",
        outcome.appended
    );
}

/// At full speed with room for only a few batches, batches leave full: a record that would
/// open a new batch waits until the buffer holds a whole batch more (as the Java producer
/// reserves batch.size), instead of opening a batch with the last bytes of room that then
/// lingers out holding one record (which had made every other batch a one-record batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_speed_batches_do_not_linger_out_with_one_record() {
    // 16 KiB batches of 100-byte records hold ~140 records; the buffer holds 4 batches; the
    // broker takes 5 ms per request, so the producer waits for room longer than the 1 ms
    // linger.
    let outcome = run_against_fake_with_delay(
        &["--acks", "1", "--buffer-bytes", "65536"],
        std::time::Duration::from_millis(5),
    )
    .await;
    assert_eq!(outcome.report.records_acked, RECORDS);
    let batches = outcome.batch_records.len();
    let single = outcome.batch_records.iter().filter(|&&n| n == 1).count();
    // A stalled task can still let a batch linger out small now and then; before the
    // reservation about half of all batches held one record.
    assert!(
        batches > 0 && single * 10 < batches,
        "{single} of {batches} batches held one record: {:?}",
        outcome.batch_records
    );
}

/// The transaction protocol's order, checked by the fake coordinator and leaders: InitProducerId
/// on the coordinator found with key type 1, every partition added before its first batch of
/// each transaction, EndTxn only when every Produce of the transaction is answered (here while
/// partition 0's leader moves, so some batches of a transaction are resends), a retry after
/// CONCURRENT_TRANSACTIONS, and the versions of transaction protocol version 1 although the
/// fake offers Kafka 4's (Produce 12, AddPartitionsToTxn 5, EndTxn 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_follow_the_protocol_order_across_a_leader_move() {
    let outcome = run_against_fake_with(
        &[
            "--acks",
            "all",
            "--producers",
            "1",
            "--transactional-id",
            "fake-tx",
            "--transaction-duration-ms",
            "5",
        ],
        std::time::Duration::from_millis(2),
        12,
    )
    .await;
    let report = &outcome.report;
    let txn = &outcome.txn;
    assert_eq!(txn.violations, Vec::<String>::new());
    assert_eq!(txn.find_coordinator, vec![(1, "fake-tx-0".to_string())]);
    assert_eq!(outcome.producer_ids_issued, 1);
    assert!(
        outcome.not_leader_answers > 0,
        "some request hit the old leader"
    );
    assert_eq!(outcome.out_of_order_answers, 0);
    assert_eq!(
        outcome.produce_version_max, 11,
        "transaction version 1 caps Produce"
    );
    assert_eq!(txn.add_partitions_version, 3);
    assert_eq!(txn.end_txn_version, 4);
    assert_eq!(report.records_acked, RECORDS);
    assert_eq!(txn.committed_records, RECORDS, "every record committed");
    assert_eq!(txn.pending_records, 0, "no transaction left open");
    let report_txn = report.transactions.as_ref().expect("a transaction section");
    assert!(txn.commits >= 3, "{} commits", txn.commits);
    assert_eq!(report_txn.committed, txn.commits);
    assert_eq!(report_txn.aborted, 0);
    assert_eq!(report_txn.partitions, txn.markers);
    assert!(txn.concurrent_answers > 0);
    assert!(report_txn.coordinator_retries >= txn.concurrent_answers);
}
