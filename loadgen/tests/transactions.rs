//! loadgen's transactional mode (`--transactional-id`) against a real single-node Apache
//! Kafka (refstack) and a real Sluice (`common::start_broker`), in both transaction protocol
//! versions: a short load of 100 ms transactions at version 1 (`--transaction-version 1`) and
//! one at the version the broker finalizes (both finalize `transaction.version` 2, so the
//! default must pick 2), each on its own topic with its own transactional ids; then the log is
//! checked from the outside. Every acknowledged record is committed: the last stable offset
//! (ListOffsets, read_committed) reaches the log end, the log holds exactly the acknowledged
//! records plus one commit marker per partition per transaction, every data batch carries the
//! transactional attribute, and a read_committed consumer read every record. The coordinator
//! shows which protocol ran (DescribeTransactions): at version 1 the producers' epochs stay at
//! the 0 InitProducerId gave a new id; at version 2 every commit bumped one, so the epochs
//! add up to the commit count.

use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTransactionsRequest, FetchRequest, ListOffsetsRequest, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use loadgen::LoadgenArgs;
use loadgen::client::Connection;
use loadgen::record_batch::for_each_value;
use refstack::{ApacheKafka, JavaStack, KafkaOptions};

const PARTITIONS: i32 = 4;
const PRODUCERS: u32 = 2;
/// How long the last transaction's markers may take to land after its EndTxn answer.
const MARKERS_TIMEOUT: Duration = Duration::from_secs(20);
const ISOLATION_READ_UNCOMMITTED: i8 = 0;
const ISOLATION_READ_COMMITTED: i8 = 1;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

#[test]
fn every_acknowledged_record_is_committed_on_apache_kafka() {
    let stack = JavaStack::locate().expect("the reference stack's jars");
    let kafka = ApacheKafka::start(&stack, KafkaOptions::default()).expect("Apache Kafka");
    check_both_versions(&kafka.bootstrap(), &|| kafka.log_tail(4000));
}

#[test]
fn every_acknowledged_record_is_committed_on_sluice() {
    let sluice = common::start_broker();
    check_both_versions(&sluice.addr, &|| String::new());
}

/// Version 1 asked for, then the broker's choice (which must be version 2).
fn check_both_versions(bootstrap: &str, log_tail: &dyn Fn() -> String) {
    check_transactional_load(bootstrap, Load::V1, log_tail);
    check_transactional_load(bootstrap, Load::Default, log_tail);
}

/// Which transaction version a load asks for.
#[derive(Clone, Copy)]
enum Load {
    /// `--transaction-version 1`.
    V1,
    /// No flag: what the broker finalizes (2 on Kafka 4.3.1 and on Sluice).
    Default,
}

impl Load {
    fn topic(self) -> &'static str {
        match self {
            Load::V1 => "txn-load-v1",
            Load::Default => "txn-load-default",
        }
    }

    fn transactional_id(self) -> &'static str {
        match self {
            Load::V1 => "loadgen-it-v1",
            Load::Default => "loadgen-it-default",
        }
    }

    fn expected_version(self) -> u8 {
        match self {
            Load::V1 => 1,
            Load::Default => 2,
        }
    }
}

/// Runs the transactional load against `bootstrap` and checks the log; `log_tail` is the
/// broker's log for a failure message.
fn check_transactional_load(bootstrap: &str, load: Load, log_tail: &dyn Fn() -> String) {
    let bootstrap = bootstrap.to_string();
    let partitions = PARTITIONS.to_string();
    let producers = PRODUCERS.to_string();
    let topic = load.topic();
    let mut argv = vec![
        "loadgen",
        "--bootstrap",
        &bootstrap,
        "--topic",
        topic,
        "--partitions",
        &partitions,
        "--record-bytes",
        "200",
        "--rate",
        "4000",
        "--duration",
        "3",
        "--producers",
        &producers,
        "--consumers",
        "1",
        "--transactional-id",
        load.transactional_id(),
        "--transaction-duration-ms",
        "100",
        "--quiet",
    ];
    if let Load::V1 = load {
        argv.extend(["--transaction-version", "1"]);
    }
    let args = Cli::try_parse_from(argv).expect("valid flags").args;
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let report = runtime
        .block_on(loadgen::run_quietly(args, std::future::pending()))
        .unwrap_or_else(|e| panic!("loadgen: {e:#}\n{}", log_tail()));
    eprint!("{}", report.human_summary());
    let transactions = report.transactions.as_ref().expect("a transaction section");
    assert_eq!(transactions.version, load.expected_version());
    let acked = report.records_acked;
    assert!(acked > 5_000, "3 s at 4000/s acked only {acked}");
    assert_eq!(report.records_sent, acked);
    assert_eq!(report.records_failed, 0);
    // At version 2 a transaction's first batch to a partition is verified with the
    // coordinator; while the previous transaction completes the leader answers
    // NOT_ENOUGH_REPLICAS (Kafka 4's wrapping of CONCURRENT_TRANSACTIONS) or
    // CONCURRENT_TRANSACTIONS, which the producer resends (no record failed, checked above).
    // Any other error, or any at version 1, fails the test.
    let verification_retries: &[&str] = match load {
        Load::V1 => &[],
        Load::Default => &["NOT_ENOUGH_REPLICAS(19)", "CONCURRENT_TRANSACTIONS(51)"],
    };
    let unexpected: Vec<_> = report
        .errors_by_code
        .iter()
        .filter(|(code, _)| !verification_retries.contains(&code.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "{:?}", report.errors_by_code);
    assert_eq!(transactions.aborted, 0);
    // Two producers, 100 ms transactions, 3 s: up to 60 commits (about 40 on a quiet machine,
    // 11 seen on Kafka with the machine loaded). A producer whose transactions never
    // completed while it produced would commit once, at the end: 2.
    assert!(
        transactions.committed >= 5,
        "{} commits",
        transactions.committed
    );
    assert!(transactions.partitions >= transactions.committed);
    assert_eq!(transactions.commit_latency_us.count, transactions.committed);
    let consumed = report.consume.as_ref().expect("consumer section").records;
    assert_eq!(consumed, acked, "the read_committed consumer's count");

    runtime.block_on(async {
        let connection = Connection::connect(&bootstrap, 1).await.expect("connect");
        // EndTxn is answered before the markers are written: wait for the last ones.
        let deadline = Instant::now() + MARKERS_TIMEOUT;
        let (end, stable) = loop {
            let end = list_offsets(&connection, topic, ISOLATION_READ_UNCOMMITTED).await;
            let stable = list_offsets(&connection, topic, ISOLATION_READ_COMMITTED).await;
            let markers_written = end.iter().sum::<i64>() as u64 == acked + transactions.partitions;
            if (stable == end && markers_written) || Instant::now() > deadline {
                break (end, stable);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            stable, end,
            "a transaction stayed open (LSO below the log end)"
        );
        assert_eq!(
            end.iter().sum::<i64>() as u64,
            acked + transactions.partitions,
            "log end offsets {end:?}: {acked} records + {} commit markers",
            transactions.partitions
        );
        let (data_batches, markers, records) = read_all(&connection, topic, &end).await;
        assert_eq!(records, acked);
        assert_eq!(markers, transactions.partitions);
        assert!(data_batches > 0);
        let epochs = producer_epochs(&connection, load.transactional_id()).await;
        match load.expected_version() {
            1 => assert_eq!(
                epochs,
                vec![0; PRODUCERS as usize],
                "version 1 bumps no epoch"
            ),
            _ => assert_eq!(
                epochs.iter().map(|&e| u64::from(e as u16)).sum::<u64>(),
                transactions.committed,
                "version 2: one epoch bump per commit, epochs {epochs:?}"
            ),
        }
    });
}

fn topic_name(topic: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(topic))
}

/// The producer epoch the coordinator holds for each of the run's transactional ids
/// (`PREFIX-i`), each checked to be committing or committed.
async fn producer_epochs(connection: &Connection, prefix: &str) -> Vec<i16> {
    let request = DescribeTransactionsRequest::default().with_transactional_ids(
        (0..PRODUCERS)
            .map(|i| TransactionalId(StrBytes::from_string(format!("{prefix}-{i}"))))
            .collect(),
    );
    // DescribeTransactions has one version, v0.
    let response = connection
        .call_at(&request, 0)
        .await
        .expect("DescribeTransactions");
    response
        .transaction_states
        .iter()
        .map(|state| {
            assert_eq!(state.error_code, 0, "DescribeTransactions {state:?}");
            // The last markers are in the log; CompleteCommit may still be on its way.
            assert!(
                ["PrepareCommit", "CompleteCommit"].contains(&state.transaction_state.as_str()),
                "{state:?}"
            );
            state.producer_epoch
        })
        .collect()
}

/// Each partition's latest offset at `isolation_level` (the LSO for read_committed).
async fn list_offsets(
    connection: &Connection,
    topic: &'static str,
    isolation_level: i8,
) -> Vec<i64> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    (0..PARTITIONS)
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(-1)
                        })
                        .collect(),
                ),
        ]);
    let response = connection
        .call(&request, ApiKey::ListOffsets)
        .await
        .expect("ListOffsets");
    let mut offsets = vec![-1; PARTITIONS as usize];
    for partition in &response.topics[0].partitions {
        assert_eq!(partition.error_code, 0, "ListOffsets {partition:?}");
        offsets[partition.partition_index as usize] = partition.offset;
    }
    offsets
}

/// Reads every partition from 0 to `end` (read_uncommitted): (data batches, control batches,
/// records). Every data batch must carry the transactional attribute.
async fn read_all(connection: &Connection, topic: &'static str, end: &[i64]) -> (u64, u64, u64) {
    let (mut data_batches, mut markers, mut records) = (0u64, 0u64, 0u64);
    for (partition, &end) in end.iter().enumerate() {
        let mut offset = 0;
        while offset < end {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(100)
                .with_min_bytes(1)
                .with_max_bytes(16 << 20)
                .with_isolation_level(ISOLATION_READ_UNCOMMITTED)
                .with_session_epoch(-1)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(topic_name(topic))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(partition as i32)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(offset)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(8 << 20),
                        ]),
                ]);
            let response = connection
                .call(&request, ApiKey::Fetch)
                .await
                .expect("Fetch");
            let answer = &response.responses[0].partitions[0];
            assert_eq!(answer.error_code, 0, "Fetch partition {partition}");
            let blob = answer.records.clone().unwrap_or_default();
            let before = offset;
            for_each_value(
                &blob,
                |batch| {
                    offset = batch.next_offset();
                    assert!(batch.transactional, "a batch without bit 4: {batch:?}");
                    if batch.control {
                        markers += 1;
                    } else {
                        data_batches += 1;
                    }
                },
                |_, _| records += 1,
            )
            .expect("well-formed batches");
            assert!(offset > before, "partition {partition} stuck at {offset}");
        }
    }
    (data_batches, markers, records)
}
