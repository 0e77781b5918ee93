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

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Broker, tail};

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

/// Runs every scenario of `client` against a fresh broker, requires each to pass and returns
/// the program's output.
fn run_client(client: &str, scenarios: &[&str]) -> String {
    let program = program();
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("sluice.toml");
    std::fs::write(&config, QUICK_GROUPS).expect("write config");
    let broker = Broker::start_with(&["--config", config.to_str().expect("utf-8 path")]);

    let mut child = Command::new(&program)
        .args([client, broker.addr()])
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
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");

    let fail = |why: String| -> ! {
        panic!(
            "goclients {client}: {why}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- broker log ---\n{}",
            tail(&stdout, LOG_TAIL_BYTES),
            tail(&stderr, LOG_TAIL_BYTES),
            tail(&broker.log(), LOG_TAIL_BYTES)
        )
    };
    match status {
        Some(s) if s.success() => {}
        Some(s) => fail(format!("exited with {s}")),
        None => fail(format!("did not finish within {RUN_TIMEOUT:?} (killed)")),
    }
    for scenario in scenarios {
        let prefix = format!("ok {client} {scenario} ");
        if !stdout.lines().any(|l| l.starts_with(&prefix)) {
            fail(format!("no `{prefix}...` line"));
        }
    }
    let summary = format!("SUMMARY {client} ok={} failed=0", scenarios.len());
    if !stdout.lines().any(|l| l == summary) {
        fail(format!("no `{summary}` line"));
    }
    eprint!("{stdout}");
    broker.stop();
    stdout
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
