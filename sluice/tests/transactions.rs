//! Exactly-once transactions through real clients (issue 15), each scenario proven against
//! Apache Kafka 4.3.1 (the oracle, `refstack::ApacheKafka`) before it is asked of Sluice.
//!
//! Scenarios (one runner, [`Scenario::run`], taking any bootstrap address):
//! - `eos_confluent`: tests/clients/txn_confluent.py, a seeded consume-transform-produce app on
//!   librdkafka (read_committed consumer in a group, send_offsets_to_transaction, random commits
//!   and aborts with seek-back); the output read under both isolation levels, the markers'
//!   offsets and the group's committed offsets checked. The seed is printed; set
//!   `SLUICE_TXN_SEED` to replay one.
//! - `java`: io.sluice.reftest.TxnScenarios (tests/java) in one JVM: commit/abort with Kafka's
//!   exact offset layout, sendOffsetsToTransaction with the consumer's group metadata, fencing
//!   by a second producer with the same transactional.id, and kafka-transactions (list,
//!   describe, describe-producers, find-hanging, abort --start-offset).
//! - `kcat`: tests/clients/txn_kcat.py, kcat's `-X transactional.id` produce read back by kcat
//!   under read_committed and read_uncommitted, around an aborted transaction.
//! - `kafkajs`: tests/clients/txn_kafkajs.js, send + sendOffsets + commit and abort, read with
//!   readUncommitted false and true.
//!
//! The programs do the checking and say exactly what differed (see their headers); a test
//! requires each one's success line. Against Sluice every scenario is its own test with its
//! own broker, ignored until issue 15's transaction support is merged. Against Kafka one test
//! starts one broker and runs every scenario on it (a JVM broker takes seconds to start), and
//! names every scenario that failed.
//!
//! Clients come from `.ci/run` as for tests/clients.rs (SLUICE_TEST_PYTHON,
//! SLUICE_TEST_NODE_DIR, kcat on PATH) and the Java jars from SLUICE_TEST_JAVA_DIR.

mod clients_support;
mod common;
#[path = "common/verifiable.rs"]
mod verifiable;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use clients_support::{Broker, Client, run_client_at, run_client_expect_mismatch};
use common::tail;
use refstack::{ApacheKafka, JavaStack, KafkaOptions};
use serde_json::Value;

/// TxnScenarios' scenarios, in the order they run.
const JAVA_SCENARIOS: &[&str] = &[
    "txn_commit_abort",
    "txn_send_offsets",
    "txn_fencing",
    "txn_tools",
];
/// The Java scenarios' class.
const JAVA_CLASS: &str = "io.sluice.reftest.TxnScenarios";
/// All Java scenarios in one JVM on a loaded 2-core machine (about 10 s against Kafka).
const JAVA_TIMEOUT: Duration = Duration::from_secs(240);
/// The EOS app's input: partitions, records, records per transaction (at most).
const EOS_PARTITIONS: &str = "3";
const EOS_RECORDS: &str = "600";
const EOS_BATCH: &str = "40";
/// Replays txn_confluent.py with this seed when set.
const SEED_ENV: &str = "SLUICE_TXN_SEED";
/// How much of the Java program's output a failure quotes.
const JAVA_OUTPUT_KEEP_BYTES: usize = 20_000;

/// One scenario of the "Must show" list.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    EosConfluent,
    Java,
    Kcat,
    Kafkajs,
}

const ALL: [Scenario; 4] = [
    Scenario::EosConfluent,
    Scenario::Java,
    Scenario::Kcat,
    Scenario::Kafkajs,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::EosConfluent => "eos-confluent-kafka",
            Scenario::Java => "java",
            Scenario::Kcat => "kcat",
            Scenario::Kafkajs => "kafkajs",
        }
    }

    /// Runs the scenario against `bootstrap`; panics with the program's output and
    /// `broker_log()` on any failure. Returns (and prints) the success line(s).
    fn run(self, bootstrap: &str, broker_log: &dyn Fn() -> String) -> String {
        match self {
            Scenario::EosConfluent => {
                let seed = std::env::var(SEED_ENV).ok();
                let mut args = vec![
                    "--partitions",
                    EOS_PARTITIONS,
                    "--records",
                    EOS_RECORDS,
                    "--batch",
                    EOS_BATCH,
                ];
                if let Some(seed) = &seed {
                    args.extend(["--seed", seed.as_str()]);
                }
                run_client_at(Client::TxnConfluent, bootstrap, &args, broker_log).line
            }
            Scenario::Kcat => run_client_at(Client::TxnKcat, bootstrap, &[], broker_log).line,
            Scenario::Kafkajs => run_client_at(Client::TxnKafkajs, bootstrap, &[], broker_log).line,
            Scenario::Java => run_java(bootstrap, broker_log),
        }
    }
}

/// Runs TxnScenarios and requires a PASS line for every scenario of [`JAVA_SCENARIOS`].
fn run_java(bootstrap: &str, broker_log: &dyn Fn() -> String) -> String {
    let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let args: Vec<&str> = [bootstrap]
        .into_iter()
        .chain(JAVA_SCENARIOS.iter().copied())
        .collect();
    let out = verifiable::run_tool(&stack, JAVA_CLASS, &args, JAVA_TIMEOUT);
    let results: Vec<Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("scenario").is_some())
        .collect();
    let passed = |name: &str| {
        results
            .iter()
            .any(|r| r["scenario"] == name && r["status"] == "PASS")
    };
    let failed: Vec<&str> = JAVA_SCENARIOS
        .iter()
        .copied()
        .filter(|name| !passed(name))
        .collect();
    if !failed.is_empty() || !out.status.success() {
        panic!(
            "{JAVA_CLASS}: {}, not passed: {failed:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n\
             --- broker log ---\n{}",
            out.status,
            tail(&out.stdout, JAVA_OUTPUT_KEEP_BYTES),
            tail(&out.stderr, JAVA_OUTPUT_KEEP_BYTES),
            tail(&broker_log(), JAVA_OUTPUT_KEEP_BYTES)
        );
    }
    let lines = results
        .iter()
        .map(|r| format!("PASS {} {}ms {}", r["scenario"], r["ms"], r["detail"]))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{lines}");
    lines
}

/// Each client program, told to corrupt what its read_committed reader returned (one record
/// duplicated, or one dropped), must fail naming it: the checks that pass above can fail. On
/// the oracle only (the checks are the same against any broker); the EOS app runs small here.
fn checks_can_fail(bootstrap: &str) {
    let cases: [(Client, &[&str], &str); 4] = [
        (
            Client::TxnConfluent,
            &[
                "--prefix",
                "fault-eos",
                "--records",
                "60",
                "--batch",
                "15",
                "--inject-fault",
                "duplicate",
            ],
            "read_committed p0",
        ),
        (
            Client::TxnKcat,
            &["--topic", "fault-kcat", "--inject-fault", "missing"],
            "kcat read_committed",
        ),
        (
            Client::TxnKafkajs,
            &["--prefix", "fault-kafkajs", "--inject-fault", "duplicate"],
            "readUncommitted=false p0",
        ),
        (
            Client::TxnKafkajs,
            &["--prefix", "fault-kafkajs-2", "--inject-fault", "missing"],
            "readUncommitted=false p0",
        ),
    ];
    for (client, args, names) in cases {
        let line = run_client_expect_mismatch(client, bootstrap, args);
        assert!(
            line.contains(names),
            "{} {args:?}: the failure should name {names:?}: {line}",
            client.name()
        );
        eprintln!("{} found its injected fault: {line}", client.name());
    }
}

/// One scenario against a fresh Sluice broker.
fn against_sluice(scenario: Scenario) {
    let started = Instant::now();
    let broker = Broker::start();
    scenario.run(broker.addr(), &|| broker.log());
    eprintln!("sluice {scenario:?} passed in {:?}", started.elapsed());
    broker.stop();
}

#[test]
fn sluice_eos_confluent_kafka() {
    against_sluice(Scenario::EosConfluent);
}

#[test]
fn sluice_java_transactions_fencing_and_tools() {
    against_sluice(Scenario::Java);
}

#[test]
fn sluice_kcat_transactional_produce() {
    against_sluice(Scenario::Kcat);
}

#[test]
fn sluice_kafkajs_transactions() {
    against_sluice(Scenario::Kafkajs);
}

/// Every scenario against one Apache Kafka: they must pass there before Sluice is held to them.
#[test]
fn apache_kafka_all_scenarios() {
    let started = Instant::now();
    let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let kafka = ApacheKafka::start(
        &stack,
        KafkaOptions {
            props: vec![
                // The default 50 partitions take seconds to create on the first transaction.
                ("transaction.state.log.num.partitions".into(), "4".into()),
            ],
            ..KafkaOptions::short_lived()
        },
    )
    .unwrap_or_else(|e| panic!("start Apache Kafka: {e:#}"));
    eprintln!("Apache Kafka up in {:?}", started.elapsed());
    let bootstrap = kafka.bootstrap();
    let log = || kafka.log_tail(20_000);
    let mut failed = Vec::new();
    for scenario in ALL {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| scenario.run(&bootstrap, &log))) {
            Ok(_) => eprintln!("kafka {scenario:?} passed in {:?}", t.elapsed()),
            Err(_) => failed.push(scenario.name()),
        }
    }
    let t = Instant::now();
    if catch_unwind(AssertUnwindSafe(|| checks_can_fail(&bootstrap))).is_err() {
        failed.push("the checks' own failure (--inject-fault)");
    }
    eprintln!("injected faults found in {:?}", t.elapsed());
    eprintln!(
        "all scenarios against Apache Kafka in {:?}",
        started.elapsed()
    );
    kafka.stop();
    assert!(
        failed.is_empty(),
        "failed against Apache Kafka: {failed:?} (each one's output is above)"
    );
}
