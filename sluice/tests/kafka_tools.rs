//! Apache Kafka's own command-line tools against a real `sluice` process (issue 14): each tool
//! runs exactly as its `bin/kafka-*.sh` script runs it (`java -cp <Kafka 4.3 jars> <main
//! class> args`, `refstack::JavaStack::java`), and the test parses the output a user relies on.
//!
//! - kafka-topics: create (with configs), list, describe (PartitionCount, ReplicationFactor,
//!   Leader/Replicas/Isr, Configs), alter --partitions, delete, and the errors for an existing
//!   or a missing topic.
//! - kafka-configs: topic describe/alter (--add-config, --delete-config), broker describe
//!   --all; broker --alter and kafka-metadata-quorum assert the error a user gets, because
//!   Sluice has no dynamic broker configs and no DescribeQuorum (docs/status.md).
//! - kafka-verifiable-producer/consumer, kafka-consumer-groups: two acknowledged batches, one
//!   group that reads and commits everything (zero lost, zero duplicated), then describe (lag),
//!   reset --to-earliest and --to-datetime (the second batch's start) with --execute, checked
//!   with describe, delete.
//! - kafka-producer-perf-test, kafka-consumer-perf-test, kafka-get-offsets (latest and
//!   earliest), kafka-delete-records (the low watermark moves), kafka-log-dirs (JSON).
//!
//! The brokers run with `group.initial.rebalance.delay.ms=0` (as refstack's Kafka does), so a
//! consumer tool does not wait 3 s for its first assignment. Each test starts its own broker so
//! cargo can run them side by side; JVM start-up (1-2 s per tool) dominates the time.

mod common;
#[path = "common/verifiable.rs"]
mod verifiable;

use std::collections::BTreeMap;
use std::time::Instant;

use common::Broker;
use refstack::JavaStack;
use serde_json::Value;
use verifiable::{
    EventTool, TOOL_TIMEOUT, TOPIC_COMMAND, ToolOutput, VERIFIABLE_CONSUMER, VERIFIABLE_PRODUCER,
    acked, check_delivery, consumed, last_committed, run_tool, startup_ms,
};

const CONFIG_COMMAND: &str = "kafka.admin.ConfigCommand";
const CONSUMER_GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const GET_OFFSETS: &str = "org.apache.kafka.tools.GetOffsetShell";
const LOG_DIRS: &str = "org.apache.kafka.tools.LogDirsCommand";
const DELETE_RECORDS: &str = "org.apache.kafka.tools.DeleteRecordsCommand";
const PRODUCER_PERF: &str = "org.apache.kafka.tools.ProducerPerformance";
const CONSUMER_PERF: &str = "org.apache.kafka.tools.ConsumerPerformance";
const METADATA_QUORUM: &str = "org.apache.kafka.tools.MetadataQuorumCommand";

/// Records per verifiable-producer batch in the group test (small: every record is a JSON
/// line through a pipe).
const BATCH_A: usize = 150;
const BATCH_B: usize = 90;
/// Records the perf tools move.
const PERF_RECORDS: usize = 2_000;

#[test]
fn kafka_topics_create_list_describe_alter_delete() {
    let started = Instant::now();
    let s = Setup::start();
    let topic = "tools-topics";
    let out = s.ok(
        TOPIC_COMMAND,
        &[
            "--create",
            "--topic",
            topic,
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=86400000",
            "--config",
            "max.message.bytes=65536",
        ],
    );
    assert!(out.contains(&format!("Created topic {topic}.")), "{out}");
    let again = s.fails(
        TOPIC_COMMAND,
        &["--create", "--topic", topic, "--partitions", "1"],
    );
    assert!(
        again.stdout.contains("TopicExistsException")
            || again.stderr.contains("TopicExistsException"),
        "{}",
        again.describe("create an existing topic")
    );

    let listed = s.ok(TOPIC_COMMAND, &["--list"]);
    assert!(listed.lines().any(|l| l == topic), "--list: {listed}");

    let described = describe_topic(&s.ok(TOPIC_COMMAND, &["--describe", "--topic", topic]));
    assert_eq!(described.head["Topic"], topic);
    assert_eq!(described.head["PartitionCount"], "3");
    assert_eq!(described.head["ReplicationFactor"], "1");
    let configs: BTreeMap<&str, &str> = described.head["Configs"]
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(
        configs.get("retention.ms"),
        Some(&"86400000"),
        "{described:?}"
    );
    assert_eq!(
        configs.get("max.message.bytes"),
        Some(&"65536"),
        "{described:?}"
    );
    described.assert_partitions_led(3);

    s.ok(
        TOPIC_COMMAND,
        &["--alter", "--topic", topic, "--partitions", "5"],
    );
    let described = describe_topic(&s.ok(TOPIC_COMMAND, &["--describe", "--topic", topic]));
    assert_eq!(described.head["PartitionCount"], "5", "{described:?}");
    described.assert_partitions_led(5);

    s.ok(TOPIC_COMMAND, &["--delete", "--topic", topic]);
    let listed = s.ok(TOPIC_COMMAND, &["--list"]);
    assert!(
        !listed.lines().any(|l| l == topic),
        "deleted, still listed: {listed}"
    );
    let missing = s.fails(TOPIC_COMMAND, &["--describe", "--topic", topic]);
    assert!(
        missing.stdout.contains("does not exist") || missing.stderr.contains("does not exist"),
        "{}",
        missing.describe("describe a deleted topic")
    );
    s.broker.stop();
    eprintln!("kafka-topics: {:?}", started.elapsed());
}

#[test]
fn kafka_configs_topic_and_broker_and_metadata_quorum() {
    let started = Instant::now();
    let s = Setup::start();
    let topic = "tools-configs";
    s.ok(
        TOPIC_COMMAND,
        &[
            "--create",
            "--topic",
            topic,
            "--partitions",
            "1",
            "--config",
            "max.message.bytes=65536",
        ],
    );
    let topic_entity = ["--entity-type", "topics", "--entity-name", topic];
    let out = s.ok(
        CONFIG_COMMAND,
        &[
            &topic_entity[..],
            &[
                "--alter",
                "--add-config",
                "retention.ms=3600000,cleanup.policy=delete",
                "--delete-config",
                "max.message.bytes",
            ],
        ]
        .concat(),
    );
    assert!(
        out.contains(&format!("Completed updating config for topic {topic}.")),
        "{out}"
    );
    let described = config_lines(&s.ok(
        CONFIG_COMMAND,
        &[&topic_entity[..], &["--describe"]].concat(),
    ));
    assert_eq!(
        described.get("retention.ms").map(String::as_str),
        Some("3600000"),
        "{described:?}"
    );
    assert_eq!(
        described.get("cleanup.policy").map(String::as_str),
        Some("delete"),
        "{described:?}"
    );
    assert!(
        !described.contains_key("max.message.bytes"),
        "deleted config still set: {described:?}"
    );

    let broker_entity = ["--entity-type", "brokers", "--entity-name", "0"];
    let all = config_lines(&s.ok(
        CONFIG_COMMAND,
        &[&broker_entity[..], &["--describe", "--all"]].concat(),
    ));
    for key in [
        "log.retention.ms",
        "log.segment.bytes",
        "num.partitions",
        "message.max.bytes",
    ] {
        let value = all
            .get(key)
            .unwrap_or_else(|| panic!("broker 0 --all lacks {key}: {all:?}"));
        assert!(value.parse::<i64>().is_ok(), "{key}={value}");
    }
    // Kafka changes log.retention.ms per broker at run time (a dynamic broker config); Sluice's
    // broker configs are static and the request is refused with INVALID_CONFIG.
    let refused = s.fails(
        CONFIG_COMMAND,
        &[
            &broker_entity[..],
            &["--alter", "--add-config", "log.retention.ms=3600000"],
        ]
        .concat(),
    );
    assert!(
        refused.stderr.contains("InvalidConfigurationException")
            && refused.stderr.contains("broker configs are static"),
        "{}",
        refused.describe("alter a broker config")
    );

    // kafka-metadata-quorum needs DescribeQuorum (API 55), which Sluice does not list.
    let quorum = s.fails(METADATA_QUORUM, &["describe", "--status"]);
    assert!(
        quorum.stderr.contains("UnsupportedVersionException")
            && quorum.stderr.contains("DESCRIBE_QUORUM"),
        "{}",
        quorum.describe("kafka-metadata-quorum describe --status")
    );
    s.broker.stop();
    eprintln!(
        "kafka-configs, kafka-metadata-quorum: {:?}",
        started.elapsed()
    );
}

#[test]
fn verifiable_tools_and_consumer_groups_describe_reset_delete() {
    let started = Instant::now();
    let s = Setup::start();
    let topic = "tools-groups";
    let group = "tools-group";
    s.ok(
        TOPIC_COMMAND,
        &["--create", "--topic", topic, "--partitions", "3"],
    );

    // Two acknowledged batches; six keys spread each over the partitions.
    let batch = |count: usize, prefix: &str| {
        let events = s.events(
            VERIFIABLE_PRODUCER,
            &[
                "--topic",
                topic,
                "--max-messages",
                &count.to_string(),
                "--acks",
                "-1",
                "--repeating-keys",
                "6",
                "--value-prefix",
                prefix,
            ],
        );
        let records = acked(&events);
        assert_eq!(records.len(), count, "acknowledged; events: {events:?}");
        (startup_ms(&events), records)
    };
    let (_, batch_a) = batch(BATCH_A, "1");
    let (b_start_ms, batch_b) = batch(BATCH_B, "2");
    let all: Vec<_> = batch_a.iter().chain(&batch_b).cloned().collect();
    let mut end = BTreeMap::from([(0, 0), (1, 0), (2, 0)]);
    for r in &all {
        let e = end.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    assert_eq!(get_offsets(&s.ok(GET_OFFSETS, &["--topic", topic])), end);

    // One member reads and commits everything.
    let events = s.events(
        VERIFIABLE_CONSUMER,
        &[
            "--topic",
            topic,
            "--group-id",
            group,
            "--max-messages",
            &all.len().to_string(),
            "--verbose",
            "--reset-policy",
            "earliest",
        ],
    );
    let delivery = check_delivery(&all, &consumed(&events)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (delivery.replayed, delivery.unacked_read),
        (0, 0),
        "{delivery:?}"
    );
    let committed = last_committed(&events, topic);
    let nonempty: BTreeMap<i32, i64> = end
        .iter()
        .filter(|&(_, &o)| o > 0)
        .map(|(&p, &o)| (p, o))
        .collect();
    assert_eq!(committed, nonempty, "offsets_committed events");

    let listed = s.ok(CONSUMER_GROUPS, &["--list"]);
    assert!(
        listed.lines().any(|l| l.trim() == group),
        "--list: {listed}"
    );
    let describe = || {
        group_table(
            &s.ok(CONSUMER_GROUPS, &["--describe", "--group", group]),
            "CURRENT-OFFSET",
        )
    };
    let expect = |current: &BTreeMap<i32, i64>| -> BTreeMap<i32, (i64, i64, i64)> {
        current
            .iter()
            .map(|(&p, &c)| (p, (c, end[&p], end[&p] - c)))
            .collect()
    };
    assert_eq!(
        describe(),
        expect(&nonempty),
        "describe after the full read (CURRENT, LOG-END, LAG)"
    );

    // --to-earliest on the whole topic: every partition back to 0.
    let reset = |how: &[&str]| {
        let args = [
            &["--reset-offsets", "--group", group, "--topic", topic][..],
            how,
            &["--execute"],
        ]
        .concat();
        group_table(&s.ok(CONSUMER_GROUPS, &args), "NEW-OFFSET")
    };
    let zeros: BTreeMap<i32, i64> = end.keys().map(|&p| (p, 0)).collect();
    assert_eq!(
        reset(&["--to-earliest"]),
        zeros.iter().map(|(&p, &o)| (p, (o, 0, 0))).collect()
    );
    assert_eq!(describe(), expect(&zeros), "describe after --to-earliest");

    // --to-datetime at the second producer's start: the first offset of batch B per partition
    // (its end where batch B wrote nothing).
    let mut b_first = end.clone();
    for r in &batch_b {
        let first = b_first.get_mut(&r.partition).expect("partition");
        *first = (*first).min(r.offset);
    }
    let datetime = format_utc_ms(b_start_ms);
    assert_eq!(
        reset(&["--to-datetime", &datetime]),
        b_first.iter().map(|(&p, &o)| (p, (o, 0, 0))).collect(),
        "--to-datetime {datetime}"
    );
    assert_eq!(
        describe(),
        expect(&b_first),
        "describe after --to-datetime {datetime}"
    );

    let out = s.ok(CONSUMER_GROUPS, &["--delete", "--group", group]);
    assert!(
        out.contains(&format!(
            "Deletion of requested consumer groups ('{group}') was successful."
        )),
        "{out}"
    );
    let listed = s.ok(CONSUMER_GROUPS, &["--list"]);
    assert!(
        !listed.lines().any(|l| l.trim() == group),
        "deleted, still listed: {listed}"
    );
    s.broker.stop();
    eprintln!(
        "verifiable tools, kafka-consumer-groups: {:?}",
        started.elapsed()
    );
}

#[test]
fn perf_tests_get_offsets_delete_records_log_dirs() {
    let started = Instant::now();
    let s = Setup::start();
    let topic = "tools-perf";
    s.ok(
        TOPIC_COMMAND,
        &["--create", "--topic", topic, "--partitions", "2"],
    );
    let records = PERF_RECORDS.to_string();
    let out = s.ok(
        PRODUCER_PERF,
        &[
            "--topic",
            topic,
            "--num-records",
            &records,
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--command-property",
            "acks=all",
        ],
    );
    // "2000 records sent, 1234.5 records/sec (0.12 MB/sec), 8.1 ms avg latency, ..."
    let summary = out
        .lines()
        .rev()
        .find(|l| l.contains("records sent"))
        .unwrap_or_else(|| panic!("no summary line: {out}"));
    let words: Vec<&str> = summary.split_whitespace().collect();
    assert_eq!(words[0], records, "{summary}");
    let rate: f64 = words[3].parse().unwrap_or_else(|_| panic!("{summary}"));
    assert!(rate > 0.0, "{summary}");

    let end = get_offsets(&s.ok(GET_OFFSETS, &["--topic", topic]));
    assert_eq!(end.values().sum::<i64>(), PERF_RECORDS as i64, "{end:?}");

    let out = s.ok(
        CONSUMER_PERF,
        &[
            "--topic",
            topic,
            "--num-records",
            &records,
            "--timeout",
            "30000",
        ],
    );
    // A CSV header and one row.
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("header").split(", ").collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no row: {out}"))
        .split(", ")
        .collect();
    let column = |name: &str| {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name}: {out}"));
        row[i]
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("{name}: {out}"))
    };
    assert_eq!(
        column("data.consumed.in.nMsg"),
        PERF_RECORDS as f64,
        "{out}"
    );
    assert!(column("nMsg.sec") > 0.0 && column("MB.sec") > 0.0, "{out}");

    // delete-records on partition 0 moves its low watermark; partition 1 keeps 0.
    let cut = end[&0] / 2;
    assert!(cut > 0, "partition 0 got no records: {end:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("delete.json");
    std::fs::write(
        &json,
        format!(
            r#"{{"partitions":[{{"topic":"{topic}","partition":0,"offset":{cut}}}],"version":1}}"#
        ),
    )
    .expect("write offsets json");
    let out = s.ok(
        DELETE_RECORDS,
        &["--offset-json-file", json.to_str().expect("utf-8 path")],
    );
    assert!(
        out.contains(&format!("partition: {topic}-0\tlow_watermark: {cut}")),
        "{out}"
    );
    let earliest = get_offsets(&s.ok(GET_OFFSETS, &["--topic", topic, "--time", "-2"]));
    assert_eq!(earliest, BTreeMap::from([(0, cut), (1, 0)]));

    // log-dirs: the JSON after the two progress lines has both partitions, with bytes.
    let out = s.ok(LOG_DIRS, &["--describe", "--topic-list", topic]);
    let json: Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line: {out}"));
    let brokers = json["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1, "{json}");
    assert_eq!(brokers[0]["broker"], 0, "{json}");
    let mut sizes = BTreeMap::new();
    for dir in brokers[0]["logDirs"].as_array().expect("logDirs") {
        assert!(dir["error"].is_null(), "{json}");
        for p in dir["partitions"].as_array().expect("partitions") {
            assert_eq!(p["isFuture"], false, "{json}");
            assert_eq!(p["offsetLag"], 0, "{json}");
            sizes.insert(
                p["partition"].as_str().expect("name").to_string(),
                p["size"].as_i64().expect("size"),
            );
        }
    }
    let names: Vec<&String> = sizes.keys().collect();
    assert_eq!(
        names,
        [&format!("{topic}-0"), &format!("{topic}-1")],
        "{json}"
    );
    assert!(sizes[&format!("{topic}-1")] >= end[&1] * 100, "{json}");
    s.broker.stop();
    eprintln!(
        "perf tests, get-offsets, delete-records, log-dirs: {:?}",
        started.elapsed()
    );
}

/// A broker and the jars.
struct Setup {
    broker: Broker,
    stack: JavaStack,
    _config: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
        let config = tempfile::tempdir().expect("temp dir");
        let path = config.path().join("sluice.toml");
        std::fs::write(&path, "[group]\ninitial_rebalance_delay_ms = 0\n").expect("write config");
        let broker = Broker::start_with(&["--config", path.to_str().expect("utf-8 path")]);
        Setup {
            broker,
            stack,
            _config: config,
        }
    }

    fn run(&self, main_class: &str, args: &[&str]) -> ToolOutput {
        let args = [&["--bootstrap-server", self.broker.addr()][..], args].concat();
        run_tool(&self.stack, main_class, &args, TOOL_TIMEOUT)
    }

    /// Runs a tool that must succeed; its stdout.
    fn ok(&self, main_class: &str, args: &[&str]) -> String {
        let out = self.run(main_class, args);
        assert!(
            out.status.success(),
            "{}",
            out.describe(&format!("{main_class} {args:?}"))
        );
        out.stdout
    }

    /// Runs a tool that must fail.
    fn fails(&self, main_class: &str, args: &[&str]) -> ToolOutput {
        let out = self.run(main_class, args);
        assert!(
            !out.status.success(),
            "{}",
            out.describe(&format!("{main_class} {args:?} should fail"))
        );
        out
    }

    /// Runs a verifiable tool to completion; its events.
    fn events(&self, main_class: &str, args: &[&str]) -> Vec<Value> {
        let args = [&["--bootstrap-server", self.broker.addr()][..], args].concat();
        let mut tool = EventTool::start(&self.stack, main_class, &args);
        let (status, events) = tool.wait_exit(TOOL_TIMEOUT);
        assert!(
            status.success(),
            "{main_class} {args:?}: {status}\n{}",
            tool.stderr()
        );
        events
    }
}

/// kafka-topics --describe: the topic line and one line per partition, as "Key: value" maps.
#[derive(Debug)]
struct TopicDescription {
    head: BTreeMap<String, String>,
    partitions: Vec<BTreeMap<String, String>>,
}

impl TopicDescription {
    /// Partitions 0..count, each led by broker 0 with replicas and ISR [0].
    fn assert_partitions_led(&self, count: usize) {
        let ids: Vec<&str> = self
            .partitions
            .iter()
            .map(|p| p["Partition"].as_str())
            .collect();
        let want: Vec<String> = (0..count).map(|p| p.to_string()).collect();
        assert_eq!(ids, want, "{self:?}");
        for p in &self.partitions {
            for key in ["Leader", "Replicas", "Isr"] {
                assert_eq!(p[key], "0", "{key}: {self:?}");
            }
        }
    }
}

fn describe_topic(out: &str) -> TopicDescription {
    let fields = |line: &str| -> BTreeMap<String, String> {
        line.split('\t')
            .filter_map(|f| f.trim().split_once(": "))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    };
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let mut head = fields(lines.next().unwrap_or_else(|| panic!("empty describe")));
    // An empty "Configs: " loses its ": " to the trim, so it is added when absent.
    head.entry("Configs".to_string()).or_default();
    let partitions = lines.map(fields).collect();
    TopicDescription { head, partitions }
}

/// kafka-configs --describe: "  key=value sensitive=... synonyms={...}" lines.
fn config_lines(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| {
            let (key, rest) = l.trim().split_once('=')?;
            let value = rest.split(" sensitive=").next()?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// kafka-get-offsets: "topic:partition:offset" lines.
fn get_offsets(out: &str) -> BTreeMap<i32, i64> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.rsplitn(3, ':');
            let offset = parts.next().and_then(|o| o.parse().ok());
            let partition = parts.next().and_then(|p| p.parse().ok());
            match (partition, offset) {
                (Some(p), Some(o)) => (p, o),
                _ => panic!("not topic:partition:offset: {l:?} in {out}"),
            }
        })
        .collect()
}

/// A kafka-consumer-groups table (describe or reset): partition -> (`first_column`,
/// LOG-END-OFFSET, LAG); the last two are 0 where the table lacks them (reset's NEW-OFFSET).
fn group_table(out: &str, first_column: &str) -> BTreeMap<i32, (i64, i64, i64)> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .find(|l| l.starts_with("GROUP"))
        .unwrap_or_else(|| panic!("no table: {out}"))
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let number = |row: &[&str], name: &str| -> i64 {
        match col(name) {
            None => 0,
            Some(i) => row[i]
                .parse()
                .unwrap_or_else(|_| panic!("{name} in {row:?}: {out}")),
        }
    };
    let partition = col("PARTITION").expect("PARTITION column");
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .map(|row| {
            let p: i32 = row[partition]
                .parse()
                .unwrap_or_else(|_| panic!("{row:?}: {out}"));
            (
                p,
                (
                    number(&row, first_column),
                    number(&row, "LOG-END-OFFSET"),
                    number(&row, "LAG"),
                ),
            )
        })
        .collect()
}

/// `ms` since the epoch as kafka-consumer-groups' --to-datetime wants it
/// (yyyy-MM-ddTHH:mm:ss.SSSZ), through coreutils `date`.
fn format_utc_ms(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}.{:03}", ms / 1000, ms % 1000),
            "+%Y-%m-%dT%H:%M:%S.%3NZ",
        ])
        .output()
        .expect("run date");
    assert!(out.status.success(), "date: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}
