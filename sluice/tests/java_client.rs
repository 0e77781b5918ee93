//! Apache Kafka's own Java client (4.3.1: KafkaProducer, KafkaConsumer, Admin) against a real
//! `sluice` process (issue 14).
//!
//! One broker and one JVM run the whole suite, `io.sluice.reftest.ClientSuite` from
//! tests/java/src (a JVM takes seconds to start on two cores): producer acks 0/1/all,
//! idempotence, every codec, headers, records at and above max.message.bytes; a two-member
//! group under the classic protocol and under KIP-848 splitting partitions, committing and
//! resuming; seek by timestamp; the Admin calls (topics, configs, partitions, listOffsets,
//! deleteRecords, groups, cluster, log dirs, electLeaders' UnsupportedVersionException). The
//! Java program checks what it reads back and prints `PASS <scenario> ...` per scenario; this
//! test requires a PASS for every scenario it names and prints the Java output and the broker
//! log on any failure.
//!
//! The jars come from `.ci/run` (Maven, `tests/java/target`, or `SLUICE_TEST_JAVA_DIR`); when
//! they are missing the test fails with the command that builds them.

mod common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Broker, tail};
use refstack::JavaStack;

/// The scenarios of ClientSuite this test requires, in the order they run.
const SCENARIOS: &[&str] = &[
    "produce_acks_0",
    "produce_acks_1",
    "produce_acks_all",
    "produce_idempotent",
    "produce_codecs",
    "produce_headers",
    "produce_large_records",
    "group_classic",
    "group_consumer",
    "seek_by_timestamp",
    "admin_topics_configs",
    "admin_offsets_records",
    "admin_cluster_log_dirs",
    "admin_elect_leaders_unsupported",
];
/// The whole suite on a loaded 2-core machine (it takes about a minute).
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn java_client_suite() {
    let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let broker = Broker::start();
    let (status, stdout, stderr) = run_java(
        stack
            .java("io.sluice.reftest.ClientSuite")
            .arg(broker.addr())
            .args(SCENARIOS),
        SUITE_TIMEOUT,
    );
    let missing: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|name| {
            !stdout
                .lines()
                .any(|l| l.strip_prefix("PASS ").and_then(|r| r.split(' ').next()) == Some(name))
        })
        .collect();
    if !missing.is_empty() || status != Some(0) {
        panic!(
            "Java client suite: exit {status:?}, not passed: {missing:?}\n--- stdout ---\n{}\n\
             --- stderr ---\n{}\n--- broker log ---\n{}",
            tail(&stdout, 30_000),
            tail(&stderr, 10_000),
            tail(&broker.log(), 20_000)
        );
    }
    for line in stdout.lines().filter(|l| l.starts_with("PASS ")) {
        eprintln!("{line}");
    }
    broker.stop();
}

/// Runs a Java program to its end or `timeout` (then kills it); returns its exit code (None
/// when killed or signalled), stdout and stderr.
fn run_java(
    command: &mut std::process::Command,
    timeout: Duration,
) -> (Option<i32>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting java: {e}"));
    let stdout = reader(child.stdout.take().expect("stdout"));
    let stderr = reader(child.stderr.take().expect("stderr"));
    let status = wait(&mut child, timeout);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    (status, stdout, stderr)
}

fn reader(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The exit code, or None after killing a child that outlived `timeout`.
fn wait(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
