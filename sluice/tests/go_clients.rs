//! The current Go Kafka clients against a real `sluice` process (issue 14, part 2): franz-go
//! (kgo and kadm), IBM/sarama and segmentio/kafka-go, one test per client.
//!
//! Each test starts its own broker and runs tests/go's program (`goclients <client>
//! <bootstrap>`), which does the checking: produce with acks=all and acks=1 in every codec and
//! read back (values, headers, partitions, offsets), two group members sharing partitions,
//! commit and resume at the committed offsets, and the client's admin calls read back through
//! another call (tests/go/README.md lists them). The test requires exit 0, an `ok` line for
//! every scenario the client has, and a `SUMMARY <client> ok=N failed=0` line.
//!
//! The program comes from `bash .ci/run` (SLUICE_TEST_GO_CLIENTS, default
//! tests/go/bin/goclients). A missing program fails the test with the command that builds it.
//!
//! The broker forms groups at once (`group.initial.rebalance.delay.ms` 0 instead of Kafka's
//! 3 s) and asks KIP-848 members to heartbeat every 500 ms (instead of 5 s), so the group
//! scenarios do not idle; the protocol is unchanged.
//!
//! Transactions (issue 15): franz-go's `txn-eos` (a GroupTransactSession consume-transform-produce
//! app, seeded commits and aborts), `txn-fencing` and `txn-admin` (kadm's ListTransactions,
//! DescribeTransactions, DescribeProducers), and sarama's `txn` (commit, abort, AddMessageToTxn /
//! AddOffsetsToTxn in a ConsumerGroup), `txn-fencing` and `txn-admin` run against Sluice, one test per client, and all of them
//! against Apache Kafka 4.3.1 (`refstack::ApacheKafka`) in one test, which also runs each client
//! once with `--inject-fault` and requires the checks to fail: the expectations are Kafka's and
//! the checks can fail. The seed of a failed run is in its FAIL line (`GOCLIENTS_TXN_SEED`
//! replays it).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Broker, tail};
use refstack::{ApacheKafka, JavaStack, KafkaOptions};

/// One client's whole run takes 5-15 s against a debug broker; this only turns a hang into a
/// failure (each scenario also has its own 90 s deadline inside the program).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of the program's and the broker's output a failure quotes.
const LOG_TAIL_BYTES: usize = 8_000;

const BUILD_HINT: &str = "build it with `(cd tests/go && go build -mod=readonly -o bin/goclients .)` \
     or run `bash .ci/run`";

/// The broker settings the group scenarios rely on (see the module comment).
const QUICK_GROUPS: &str = "[group]\n\
    initial_rebalance_delay_ms = 0\n\
    consumer_heartbeat_interval_ms = 500\n";

#[test]
fn franz_go() {
    let stdout = run_client(
        "franz-go",
        &[
            "produce",
            "group",
            "group-kip848",
            "commit-resume",
            "admin",
            "elect-leaders",
        ],
    );
    // Sluice has no ElectLeaders (docs/status.md, "Go clients"): kadm must say so cleanly.
    // Kafka answers ELECTION_NOT_NEEDED (`elect-leaders=offered`); change this line with it.
    assert!(
        stdout.contains("ok franz-go elect-leaders elect-leaders=not-offered"),
        "{stdout}"
    );
}

#[test]
fn sarama() {
    run_client("sarama", &["produce", "group", "commit-resume", "admin"]);
}

#[test]
fn kafka_go() {
    run_client("kafka-go", &["produce", "group", "commit-resume", "admin"]);
}

/// franz-go's transactional scenarios (tests/go/franz_txn.go).
const FRANZ_TXN: &[&str] = &["txn-eos", "txn-fencing", "txn-admin"];
/// sarama's transactional scenarios (tests/go/sarama_txn.go).
const SARAMA_TXN: &[&str] = &["txn", "txn-fencing", "txn-admin"];

#[test]
fn franz_go_transactions() {
    run_client("franz-go", FRANZ_TXN);
}

#[test]
fn sarama_transactions() {
    run_client("sarama", SARAMA_TXN);
}

/// Every transactional scenario against one Apache Kafka 4.3.1 (its default, transaction
/// version 2), then each client with an injected fault, which must fail naming the corrupted
/// read_committed partition. Names every part that failed.
#[test]
fn apache_kafka_transactions() {
    let started = Instant::now();
    let program = program();
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
    let mut failed = Vec::new();
    for (client, scenarios) in [("franz-go", FRANZ_TXN), ("sarama", SARAMA_TXN)] {
        let t = Instant::now();
        let run = run_program(&program, client, &bootstrap, scenarios);
        match check_run(client, scenarios, &run) {
            Ok(()) => eprintln!("kafka {client} {scenarios:?} passed in {:?}", t.elapsed()),
            Err(why) => {
                eprintln!("kafka {client}: {why}\n{}", run.report());
                failed.push(format!("{client}: {why}"));
            }
        }
    }
    let t = Instant::now();
    for (client, scenario, fault) in [
        ("franz-go", "txn-eos", "duplicate"),
        ("sarama", "txn", "missing"),
    ] {
        let flag = format!("--inject-fault={fault}");
        let run = run_program(&program, client, &bootstrap, &[flag.as_str(), scenario]);
        let prefix = format!("FAIL {client} {scenario}: ");
        let line = run.stdout.lines().find(|l| l.starts_with(&prefix));
        match (run.status.map(|s| s.code()), line) {
            (Some(Some(1)), Some(line)) if line.contains("read_committed p0") => {
                eprintln!("{client} {scenario} found its injected fault ({fault}): {line}")
            }
            _ => {
                eprintln!(
                    "{client} {scenario} {flag}: no FAIL naming read_committed p0 (exit {:?})\n{}",
                    run.status,
                    run.report()
                );
                failed.push(format!(
                    "{client} {scenario} {flag}: the checks did not fail"
                ));
            }
        }
    }
    eprintln!("injected faults found in {:?}", t.elapsed());
    eprintln!(
        "Go transactions against Apache Kafka in {:?}",
        started.elapsed()
    );
    if !failed.is_empty() {
        eprintln!("--- Kafka log ---\n{}", kafka.log_tail(LOG_TAIL_BYTES));
    }
    kafka.stop();
    assert!(
        failed.is_empty(),
        "failed against Apache Kafka: {failed:#?}"
    );
}

/// SLUICE_TEST_GO_CLIENTS, or tests/go/bin/goclients in this checkout.
fn program() -> PathBuf {
    let path = match std::env::var_os("SLUICE_TEST_GO_CLIENTS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/go/bin/goclients"),
    };
    assert!(
        path.is_file(),
        "the Go client program {} is missing: {BUILD_HINT}",
        path.display()
    );
    path
}

/// Runs the given scenarios of `client` against a fresh broker, requires each to pass and
/// returns the program's output.
fn run_client(client: &str, scenarios: &[&str]) -> String {
    let program = program();
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("sluice.toml");
    std::fs::write(&config, QUICK_GROUPS).expect("write config");
    let broker = Broker::start_with(&["--config", config.to_str().expect("utf-8 path")]);
    let run = run_program(&program, client, broker.addr(), scenarios);
    if let Err(why) = check_run(client, scenarios, &run) {
        panic!(
            "goclients {client}: {why}\n{}\n--- broker log ---\n{}",
            run.report(),
            tail(&broker.log(), LOG_TAIL_BYTES)
        );
    }
    eprint!("{}", run.stdout);
    broker.stop();
    run.stdout
}

/// One finished (or killed) run of the program.
struct Run {
    /// None: it did not finish within RUN_TIMEOUT and was killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The ends of its output, for a failure message.
    fn report(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&self.stdout, LOG_TAIL_BYTES),
            tail(&self.stderr, LOG_TAIL_BYTES)
        )
    }
}

/// Runs `goclients <client> <bootstrap> <args...>` to the end (or RUN_TIMEOUT).
fn run_program(program: &Path, client: &str, bootstrap: &str, args: &[&str]) -> Run {
    let mut child = Command::new(program)
        .args([client, bootstrap])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {BUILD_HINT}", program.display()));
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let status = wait_deadline(&mut child, RUN_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Requires exit 0, an `ok` line for every scenario and the `SUMMARY ... failed=0` line.
fn check_run(client: &str, scenarios: &[&str], run: &Run) -> Result<(), String> {
    match run.status {
        Some(s) if s.success() => {}
        Some(s) => return Err(format!("exited with {s}")),
        None => return Err(format!("did not finish within {RUN_TIMEOUT:?} (killed)")),
    }
    for scenario in scenarios {
        let prefix = format!("ok {client} {scenario} ");
        if !run.stdout.lines().any(|l| l.starts_with(&prefix)) {
            return Err(format!("no `{prefix}...` line"));
        }
    }
    let summary = format!("SUMMARY {client} ok={} failed=0", scenarios.len());
    if !run.stdout.lines().any(|l| l == summary) {
        return Err(format!("no `{summary}` line"));
    }
    Ok(())
}

/// Waits for the child to exit, up to `timeout` (std has no timed wait; this polls `try_wait`).
fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn drain(mut out: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
