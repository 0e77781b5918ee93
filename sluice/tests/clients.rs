//! Real Kafka clients against a real `sluice` process (issue 3; issue 4's group tests are in
//! clients_groups.rs).
//!
//! Each test starts its own broker on a free loopback port with a fresh data dir, runs one client
//! program from tests/clients/ and asserts on its exit status and its `SUMMARY ... OK` line. The
//! programs do the checking (order per partition, keys, values, headers, timestamps, ListOffsets)
//! and say exactly what differed; see tests/clients/common.py for the record set they share.
//!
//! The clients come from `bash .ci/run`: Python ones from the venv named by SLUICE_TEST_PYTHON
//! (default ../.venv/bin/python), kafkajs from SLUICE_TEST_NODE_DIR/node_modules (default
//! ../tests/clients), kcat from PATH. A missing client fails the test with that instruction; it
//! never passes silently.

mod clients_support;
mod common;

use clients_support::{Broker, Client, run_client, run_client_with_pause};

/// The record count issue 3 asks for; the per-codec variants use fewer to keep the suite short.
const RECORDS_MAIN: u32 = 10_000;
const RECORDS_CODEC: u32 = 2_000;
const PARTITIONS_MAIN: u32 = 4;
const PARTITIONS_CODEC: u32 = 3;

fn produce_and_fetch(client: Client, compression: &str, records: u32, partitions: u32) {
    let broker = Broker::start();
    let topic = format!("{}-{compression}", client.name());
    let summary = run_client(
        client,
        &broker,
        &[
            "--topic",
            &topic,
            "--partitions",
            &partitions.to_string(),
            "--records",
            &records.to_string(),
            "--compression",
            compression,
        ],
    );
    summary.assert_counts(records, records);
    broker.stop();
}

macro_rules! produce_fetch_tests {
    ($($name:ident: $client:expr, $codec:literal, $records:expr, $partitions:expr;)*) => {$(
        #[test]
        fn $name() {
            produce_and_fetch($client, $codec, $records, $partitions);
        }
    )*};
}

produce_fetch_tests! {
    confluent_kafka_10k_records: Client::ConfluentKafka, "none", RECORDS_MAIN, PARTITIONS_MAIN;
    confluent_kafka_gzip: Client::ConfluentKafka, "gzip", RECORDS_CODEC, PARTITIONS_CODEC;
    confluent_kafka_snappy: Client::ConfluentKafka, "snappy", RECORDS_CODEC, PARTITIONS_CODEC;
    confluent_kafka_lz4: Client::ConfluentKafka, "lz4", RECORDS_CODEC, PARTITIONS_CODEC;
    confluent_kafka_zstd: Client::ConfluentKafka, "zstd", RECORDS_CODEC, PARTITIONS_CODEC;

    kafka_python_10k_records: Client::KafkaPython, "none", RECORDS_MAIN, PARTITIONS_MAIN;
    kafka_python_gzip: Client::KafkaPython, "gzip", RECORDS_CODEC, PARTITIONS_CODEC;
    kafka_python_snappy: Client::KafkaPython, "snappy", RECORDS_CODEC, PARTITIONS_CODEC;
    kafka_python_lz4: Client::KafkaPython, "lz4", RECORDS_CODEC, PARTITIONS_CODEC;
    kafka_python_zstd: Client::KafkaPython, "zstd", RECORDS_CODEC, PARTITIONS_CODEC;

    aiokafka_10k_records: Client::Aiokafka, "none", RECORDS_MAIN, PARTITIONS_MAIN;
    aiokafka_gzip: Client::Aiokafka, "gzip", RECORDS_CODEC, PARTITIONS_CODEC;
    aiokafka_snappy: Client::Aiokafka, "snappy", RECORDS_CODEC, PARTITIONS_CODEC;
    aiokafka_lz4: Client::Aiokafka, "lz4", RECORDS_CODEC, PARTITIONS_CODEC;
    aiokafka_zstd: Client::Aiokafka, "zstd", RECORDS_CODEC, PARTITIONS_CODEC;

    kafkajs_10k_records: Client::Kafkajs, "none", RECORDS_MAIN, PARTITIONS_MAIN;
    kafkajs_gzip: Client::Kafkajs, "gzip", RECORDS_CODEC, PARTITIONS_CODEC;
    kafkajs_snappy: Client::Kafkajs, "snappy", RECORDS_CODEC, PARTITIONS_CODEC;
    kafkajs_lz4: Client::Kafkajs, "lz4", RECORDS_CODEC, PARTITIONS_CODEC;
    kafkajs_zstd: Client::Kafkajs, "zstd", RECORDS_CODEC, PARTITIONS_CODEC;

    kcat_10k_records: Client::Kcat, "none", RECORDS_MAIN, PARTITIONS_MAIN;
    kcat_gzip: Client::Kcat, "gzip", RECORDS_CODEC, PARTITIONS_CODEC;
    kcat_snappy: Client::Kcat, "snappy", RECORDS_CODEC, PARTITIONS_CODEC;
    kcat_lz4: Client::Kcat, "lz4", RECORDS_CODEC, PARTITIONS_CODEC;
    kcat_zstd: Client::Kcat, "zstd", RECORDS_CODEC, PARTITIONS_CODEC;
}

/// acks=1 and acks=0 (idempotence off): with acks=0 the broker must not answer the Produce, and
/// every record must still be there.
#[test]
fn confluent_kafka_acks_1_and_0() {
    let broker = Broker::start();
    for acks in ["1", "0"] {
        let topic = format!("acks-{acks}");
        let args = [
            "--topic",
            &topic,
            "--partitions",
            "3",
            "--records",
            "2000",
            "--acks",
            acks,
        ];
        run_client(Client::ConfluentKafka, &broker, &args).assert_counts(2000, 2000);
    }
    broker.stop();
}

/// The consumer is assigned and long-polling before the records exist; they arrive in flushed
/// chunks, each of which must wake the waiting fetches.
#[test]
fn confluent_kafka_consumer_waiting_while_producing() {
    let broker = Broker::start();
    let args = ["--topic", "live", "--records", "5000", "--mode", "live"];
    run_client(Client::ConfluentKafka, &broker, &args).assert_counts(5000, 5000);
    broker.stop();
}

/// 300 KB records read with a 1000-byte partition fetch limit: the broker must return the first
/// batch whole (KIP-74) or the consumer never makes progress.
fn large_records_with_small_fetch_limit(client: Client, codec: &str) {
    let broker = Broker::start();
    let topic = format!("large-{}", client.name());
    let args = [
        "--topic",
        &topic,
        "--partitions",
        "2",
        "--records",
        "40",
        "--value-bytes",
        "300000",
        "--fetch-max-bytes",
        "1000",
        "--compression",
        codec,
    ];
    run_client(client, &broker, &args).assert_counts(40, 40);
    broker.stop();
}

#[test]
fn confluent_kafka_large_records_small_fetch_limit() {
    large_records_with_small_fetch_limit(Client::ConfluentKafka, "none");
}

#[test]
fn kafka_python_large_records_small_fetch_limit() {
    large_records_with_small_fetch_limit(Client::KafkaPython, "lz4");
}

/// Batches written by one client are read by two others (the "client" header names the writer).
fn cross_client_read(producer: Client, codec: &str, readers: [Client; 2]) {
    let broker = Broker::start();
    let topic = format!("cross-{}-{codec}", producer.name());
    let common = [
        "--topic",
        &topic,
        "--partitions",
        "3",
        "--records",
        "1500",
        "--compression",
        codec,
    ];
    let produced = run_client(
        producer,
        &broker,
        &[&common[..], &["--mode", "produce"]].concat(),
    );
    let base_ts = produced.field("base_ts");
    for reader in readers {
        let args = [
            &common[..],
            &[
                "--mode",
                "consume",
                "--base-ts",
                &base_ts,
                "--produced-by",
                producer.name(),
            ],
        ]
        .concat();
        run_client(reader, &broker, &args).assert_counts(0, 1500);
    }
    broker.stop();
}

/// kafka-python's snappy is xerial-framed; librdkafka and kafkajs must read it.
#[test]
fn cross_client_kafka_python_snappy() {
    cross_client_read(
        Client::KafkaPython,
        "snappy",
        [Client::ConfluentKafka, Client::Kafkajs],
    );
}

/// kafkajs's lz4 (lz4js frames) read by librdkafka and kafka-python.
#[test]
fn cross_client_kafkajs_lz4() {
    cross_client_read(
        Client::Kafkajs,
        "lz4",
        [Client::ConfluentKafka, Client::KafkaPython],
    );
}

/// librdkafka's zstd read by kafka-python and kafkajs.
#[test]
fn cross_client_confluent_kafka_zstd() {
    cross_client_read(
        Client::ConfluentKafka,
        "zstd",
        [Client::KafkaPython, Client::Kafkajs],
    );
}

/// CreateTopics (with a config, and again), DescribeConfigs, IncrementalAlterConfigs (SET and
/// DELETE), CreatePartitions, DeleteRecords, DescribeCluster, DeleteTopics through librdkafka;
/// a recreated topic starts empty; MESSAGE_TOO_LARGE and INVALID_TIMESTAMP where Kafka gives them.
#[test]
fn confluent_kafka_admin_apis() {
    let broker = Broker::start();
    run_client(Client::ConfluentAdmin, &broker, &["--topic", "admin"]);
    broker.stop();
}

/// message.timestamp.type=LogAppendTime: the broker stamps the batches it appends (rewriting
/// header and CRC); librdkafka (with check.crcs) sees LogAppendTime within the produce window.
#[test]
fn confluent_kafka_log_append_time() {
    let broker = Broker::start();
    run_client(
        Client::ConfluentAdmin,
        &broker,
        &["--topic", "lat", "--log-append-time"],
    );
    broker.stop();
}

/// The same through kafkajs, with the legacy AlterConfigs instead of the incremental one.
#[test]
fn kafkajs_admin_apis() {
    let broker = Broker::start();
    run_client(
        Client::Kafkajs,
        &broker,
        &["--topic", "admin", "--mode", "admin"],
    );
    broker.stop();
}

/// An idempotent producer keeps its producer id and sequences across a clean broker restart:
/// the broker must have kept its producer state (librdkafka would otherwise log an
/// UNKNOWN_PRODUCER_ID / epoch reset, which the program fails on), and the records before and
/// after read back exactly once, in order.
#[test]
fn idempotent_producer_across_restart() {
    let mut broker = Broker::start();
    let args = [
        "--topic",
        "idem-restart",
        "--partitions",
        "3",
        "--records",
        "4000",
        "--pause-after",
        "2000",
    ];
    let summary =
        run_client_with_pause(Client::ConfluentKafka, &mut broker, &args, Broker::restart);
    summary.assert_counts(4000, 4000);
    broker.stop();
}

/// The copying fetch path (`[kafka] zero_copy_fetch = false`, for connections that cannot take
/// splice) serves the same bytes: librdkafka, kafkajs and kcat read through it.
#[test]
fn copying_fetch_path() {
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("sluice.toml");
    std::fs::write(&config, "[kafka]\nzero_copy_fetch = false\n").expect("write config");
    let broker = Broker::start_with(&["--config", config.to_str().expect("utf-8 path")]);
    for client in [Client::ConfluentKafka, Client::Kafkajs, Client::Kcat] {
        let topic = format!("copying-{}", client.name());
        let args = [
            "--topic",
            &topic,
            "--partitions",
            "3",
            "--records",
            "3000",
            "--compression",
            "gzip",
        ];
        run_client(client, &broker, &args).assert_counts(3000, 3000);
    }
    broker.stop();
}

/// The same across SIGKILL: every acknowledged record is there after the restart, and the
/// producer state is rebuilt from the log (no clean-shutdown snapshot to lean on).
#[test]
fn idempotent_producer_across_broker_kill() {
    let mut broker = Broker::start();
    let args = [
        "--topic",
        "idem-kill",
        "--partitions",
        "3",
        "--records",
        "4000",
        "--pause-after",
        "2000",
    ];
    let summary = run_client_with_pause(Client::ConfluentKafka, &mut broker, &args, |b| {
        b.kill();
        // Straight back up: the listener of the killed process may linger for a few ms; the
        // broker retries the bind (FINDINGS.md 4, fixed in 8f56bdf).
        b.start_again();
    });
    summary.assert_counts(4000, 4000);
    broker.stop();
}

/// The same through kafka-python (its own API versions), with the legacy AlterConfigs and the
/// config source DescribeConfigs reports.
#[test]
fn kafka_python_admin_apis() {
    let broker = Broker::start();
    run_client(
        Client::KafkaPython,
        &broker,
        &["--topic", "admin", "--mode", "admin"],
    );
    broker.stop();
}

/// 64 partitions over both shards: kafka-python's incremental fetch sessions (KIP-227) track
/// them all.
#[test]
fn kafka_python_64_partitions() {
    let broker = Broker::start();
    let args = [
        "--topic",
        "many",
        "--partitions",
        "64",
        "--records",
        "12800",
    ];
    run_client(Client::KafkaPython, &broker, &args).assert_counts(12800, 12800);
    broker.stop();
}

/// kcat cannot create topics: its producer's Metadata request auto-creates one with the broker's
/// default partition count.
#[test]
fn kcat_auto_created_topic() {
    let broker = Broker::start();
    let summary = run_client(
        Client::Kcat,
        &broker,
        &[
            "--topic",
            "kcat-auto",
            "--create",
            "auto",
            "--records",
            "500",
        ],
    );
    summary.assert_counts(500, 500);
    broker.stop();
}

/// Everything acknowledged before a clean shutdown is there after restart, read by the same
/// client and by a different one (librdkafka writes, then kafka-python and kafkajs read).
#[test]
fn restart_between_produce_and_fetch() {
    let mut broker = Broker::start();
    let records = "5000";
    let common = [
        "--topic",
        "restart",
        "--partitions",
        "5",
        "--records",
        records,
        "--compression",
        "lz4",
    ];
    let produced = run_client(
        Client::ConfluentKafka,
        &broker,
        &[&common[..], &["--mode", "produce"]].concat(),
    );
    produced.assert_counts(5000, 0);
    let base_ts = produced.field("base_ts");

    broker.restart();
    let consume = [&common[..], &["--mode", "consume", "--base-ts", &base_ts]].concat();
    run_client(Client::ConfluentKafka, &broker, &consume).assert_counts(0, 5000);
    // Other clients read the same records; the header "client" says who wrote them.
    let cross = [&consume[..], &["--produced-by", "confluent-kafka"]].concat();
    run_client(Client::KafkaPython, &broker, &cross).assert_counts(0, 5000);
    run_client(Client::Kafkajs, &broker, &cross).assert_counts(0, 5000);

    // And a second restart after more traffic (a new topic) still serves both.
    let second = [
        "--topic",
        "restart-2",
        "--partitions",
        "2",
        "--records",
        "1000",
        "--mode",
        "produce",
    ];
    let produced_2 = run_client(Client::KafkaPython, &broker, &second);
    broker.restart();
    run_client(
        Client::KafkaPython,
        &broker,
        &[
            "--topic",
            "restart-2",
            "--partitions",
            "2",
            "--records",
            "1000",
            "--mode",
            "consume",
            "--base-ts",
            &produced_2.field("base_ts"),
        ],
    )
    .assert_counts(0, 1000);
    run_client(Client::ConfluentKafka, &broker, &consume).assert_counts(0, 5000);
    broker.stop();
}
