//! Support for the real-client tests: the runner for the client programs in tests/clients/,
//! against a broker from the shared harness (tests/common/mod.rs, which each client test file
//! declares as `mod common;` before this module).
//!
//! Nothing here sleeps to synchronise: a client is done when it exits; the wait has a deadline
//! and a failure message that carries the client's and the broker's output.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use crate::common::Broker;
use crate::common::tail;

/// How long one client program may run: 10,000 records against a debug broker on 2 cores take a
/// few seconds; this bound only turns a hang into a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);
/// How much of a process's output a failure message quotes.
const LOG_TAIL_BYTES: usize = 6_000;

// ---- clients -----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    ConfluentKafka,
    KafkaPython,
    Aiokafka,
    Kafkajs,
    Kcat,
    /// group_scenario.py: consumer-group scenarios with confluent-kafka and kafka-python members.
    GroupScenario,
    /// confluent_admin_client.py: the topic admin APIs through librdkafka's AdminClient.
    ConfluentAdmin,
    /// txn_confluent.py: exactly-once consume-transform-produce through librdkafka (issue 15).
    TxnConfluent,
    /// txn_kcat.py: kcat's transactional producer, read back under both isolation levels.
    TxnKcat,
    /// txn_kafkajs.js: kafkajs transactions with sendOffsets, commit and abort.
    TxnKafkajs,
    /// compaction_client.py: keyed rounds, tombstones and read-back checks on a compacted
    /// topic (issue 16).
    Compaction,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::ConfluentKafka => "confluent-kafka",
            Client::KafkaPython => "kafka-python",
            Client::Aiokafka => "aiokafka",
            Client::Kafkajs => "kafkajs",
            Client::Kcat => "kcat",
            Client::GroupScenario => "group-scenario",
            Client::ConfluentAdmin => "confluent-kafka-admin",
            Client::Compaction => "confluent-kafka-compaction",
            Client::TxnConfluent => "confluent-kafka-transactions",
            Client::TxnKcat => "kcat-transactions",
            Client::TxnKafkajs => "kafkajs-transactions",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Client::ConfluentKafka => "confluent_kafka_client.py",
            Client::KafkaPython => "kafka_python_client.py",
            Client::Aiokafka => "aiokafka_client.py",
            Client::Kafkajs => "kafkajs_client.js",
            Client::Kcat => "kcat_client.py",
            Client::GroupScenario => "group_scenario.py",
            Client::ConfluentAdmin => "confluent_admin_client.py",
            Client::Compaction => "compaction_client.py",
            Client::TxnConfluent => "txn_confluent.py",
            Client::TxnKcat => "txn_kcat.py",
            Client::TxnKafkajs => "txn_kafkajs.js",
        }
    }
}

/// tests/clients/ in this checkout: the client programs (always the checked-out ones).
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients")
}

const INSTALL_HINT: &str =
    "run `bash .ci/run` (or its install steps) to install the real Kafka clients";

/// The Python with confluent-kafka and kafka-python: SLUICE_TEST_PYTHON or ../.venv/bin/python.
pub fn python() -> PathBuf {
    let python = match std::env::var_os("SLUICE_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    };
    assert!(
        python.exists(),
        "client test Python {} not found: {INSTALL_HINT}",
        python.display()
    );
    python
}

/// The folder whose node_modules holds kafkajs: SLUICE_TEST_NODE_DIR or ../tests/clients.
pub fn node_modules() -> PathBuf {
    let dir = match std::env::var_os("SLUICE_TEST_NODE_DIR") {
        Some(p) => PathBuf::from(p),
        None => clients_dir(),
    };
    let modules = dir.join("node_modules");
    assert!(
        modules.join("kafkajs").exists(),
        "kafkajs not found in {}: {INSTALL_HINT}",
        modules.display()
    );
    modules
}

fn client_command(client: Client) -> Command {
    let script = clients_dir().join(client.script());
    match client {
        Client::Kafkajs | Client::TxnKafkajs => {
            let mut cmd = Command::new("node");
            cmd.arg(script).env("NODE_PATH", node_modules());
            cmd
        }
        Client::Kcat | Client::TxnKcat => {
            assert!(on_path("kcat"), "kcat is not on PATH: {INSTALL_HINT}");
            let mut cmd = Command::new(python());
            cmd.arg(script);
            cmd
        }
        Client::ConfluentKafka
        | Client::KafkaPython
        | Client::Aiokafka
        | Client::GroupScenario
        | Client::ConfluentAdmin
        | Client::Compaction
        | Client::TxnConfluent => {
            let mut cmd = Command::new(python());
            cmd.arg(script);
            cmd
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// What a client program printed on success.
pub struct Summary {
    pub line: String,
}

impl Summary {
    /// The value of `key=value` in the summary line.
    pub fn field(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("summary has no {key}=: {}", self.line))
            .to_string()
    }

    pub fn assert_counts(&self, produced: u32, consumed: u32) {
        assert_eq!(
            self.field("produced"),
            produced.to_string(),
            "produced count in: {}",
            self.line
        );
        assert_eq!(
            self.field("consumed"),
            consumed.to_string(),
            "consumed count in: {}",
            self.line
        );
    }
}

/// Runs a client program against the broker and returns its summary; any non-zero exit, a
/// missing summary or a timeout fails the test with the program's and the broker's output.
pub fn run_client(client: Client, broker: &Broker, args: &[&str]) -> Summary {
    run_client_at(client, broker.addr(), args, &|| broker.log())
}

/// `run_client` against any bootstrap address (Sluice or the reference Apache Kafka);
/// `broker_log` gives the broker's log for a failure message.
pub fn run_client_at(
    client: Client,
    bootstrap: &str,
    args: &[&str],
    broker_log: &dyn Fn() -> String,
) -> Summary {
    let what = format!("{} {}", client.name(), args.join(" "));
    let mut child = spawn_client(client, bootstrap, args, &what);
    let stdout = drain_lines(child.stdout.take().expect("stdout"), None);
    let stderr = drain(child.stderr.take().expect("stderr"));
    finish(child, stdout, stderr, &what, broker_log)
}

/// Runs a client program that must find a mismatch (a fault injected into what it read): it
/// must exit 1 with a `FAIL: ...` line on stderr, which is returned. Shows that the program's
/// checks can fail.
pub fn run_client_expect_mismatch(client: Client, bootstrap: &str, args: &[&str]) -> String {
    let what = format!("{} {}", client.name(), args.join(" "));
    let mut child = spawn_client(client, bootstrap, args, &what);
    let stdout = drain_lines(child.stdout.take().expect("stdout"), None);
    let stderr = drain(child.stderr.take().expect("stderr"));
    let status = wait_deadline(&mut child, CLIENT_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let fail_line = stderr.lines().find(|l| l.starts_with("FAIL: "));
    match (status.and_then(|s| s.code()), fail_line) {
        (Some(1), Some(line)) => line.to_string(),
        (code, _) => panic!(
            "{what}: want exit 1 with a FAIL line (the injected fault found), got exit {code:?}\n\
             --- stderr ---\n{}\n--- stdout ---\n{}",
            tail(&stderr, LOG_TAIL_BYTES),
            tail(&stdout, LOG_TAIL_BYTES / 2)
        ),
    }
}

/// Like `run_client` for a program started with `--pause-after N`: once it prints `PAUSED`
/// (everything so far acknowledged) `on_pause` runs (say, a broker restart), then the program is
/// told to go on and must finish as usual.
pub fn run_client_with_pause(
    client: Client,
    broker: &mut Broker,
    args: &[&str],
    on_pause: impl FnOnce(&mut Broker),
) -> Summary {
    let what = format!("{} {}", client.name(), args.join(" "));
    let mut child = spawn_client(client, broker.addr(), args, &what);
    let (paused_tx, paused_rx) = mpsc::channel();
    let stdout = drain_lines(child.stdout.take().expect("stdout"), Some(paused_tx));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let mut stdin = child.stdin.take().expect("stdin");
    // Disconnected means the program exited without pausing: `finish` reports why.
    if paused_rx.recv_timeout(CLIENT_TIMEOUT).is_ok() {
        on_pause(broker);
        writeln!(stdin, "go").unwrap_or_else(|e| panic!("{what}: cannot resume it: {e}"));
    }
    drop(stdin);
    finish(child, stdout, stderr, &what, &|| broker.log())
}

fn spawn_client(client: Client, bootstrap: &str, args: &[&str], what: &str) -> Child {
    let mut cmd = client_command(client);
    cmd.arg("--bootstrap").arg(bootstrap).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start ({e}): {INSTALL_HINT}"))
}

/// Waits (with the deadline) for the program, requires exit 0 and a `SUMMARY ... OK` line.
fn finish(
    mut child: Child,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
    what: &str,
    broker_log: &dyn Fn() -> String,
) -> Summary {
    let status = wait_deadline(&mut child, CLIENT_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let why = match status {
        Some(s) if s.success() => None,
        Some(s) if s.code() == Some(3) => {
            Some(format!("exited with {s}: client missing, {INSTALL_HINT}"))
        }
        Some(s) => Some(format!("exited with {s}")),
        None => Some(format!("did not finish within {CLIENT_TIMEOUT:?} (killed)")),
    };
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("SUMMARY ") && l.ends_with(" OK"));
    match (why, summary) {
        (None, Some(line)) => {
            eprintln!("{line}");
            Summary {
                line: line.to_string(),
            }
        }
        (why, _) => panic!(
            "{what}: {}\n--- stderr ---\n{}\n--- stdout ---\n{}\n--- broker log ---\n{}",
            why.unwrap_or_else(|| "exited 0 without a SUMMARY ... OK line".to_string()),
            tail(&stderr, LOG_TAIL_BYTES),
            tail(&stdout, LOG_TAIL_BYTES / 2),
            tail(&broker_log(), LOG_TAIL_BYTES)
        ),
    }
}

/// Waits for the child to exit, up to `timeout`; polls `try_wait` because std has no timed wait.
fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads stdout line by line, telling `paused` when the program prints `PAUSED`.
fn drain_lines(
    out: impl Read + Send + 'static,
    paused: Option<mpsc::Sender<()>>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let (true, Some(tx)) = (line == "PAUSED", &paused) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

fn drain(mut out: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
