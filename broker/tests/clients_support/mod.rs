//! Support for the real-client tests: a `sluice` child process per test and the runner for the
//! client programs in tests/clients/.
//!
//! Broker: a private stand-in with the same API as the shared harness planned in
//! tests/common/mod.rs (`Broker::start()`, `.addr()`, `.data_dir()`, `.stop()`, `.kill()`,
//! `.restart()`); the client tests switch to the shared one when it lands.
//!
//! Nothing here sleeps to synchronise: the broker is ready when it prints `ready`, it is gone
//! when `wait` says so, and a client is done when it exits; each wait has a deadline and a
//! failure message that carries the process's output.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the broker may take to print `ready` (a debug build starting its shards).
const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean shutdown (SIGTERM) may take.
const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client program may run: 10,000 records against a debug broker on 2 cores take a
/// few seconds; this bound only turns a hang into a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);
/// How much of a process's output a failure message quotes.
const LOG_TAIL_BYTES: usize = 6_000;

// ---- broker ------------------------------------------------------------------------------------

pub struct Broker {
    child: Option<Child>,
    addr: String,
    data_dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl Broker {
    /// Starts `sluice start` on a free loopback port with a fresh data dir and waits for `ready`.
    pub fn start() -> Broker {
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-clients-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut broker = Broker {
            child: None,
            addr,
            data_dir,
            log: Arc::new(Mutex::new(String::new())),
        };
        broker.spawn();
        broker
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// SIGTERM, then the exit status must be 0 within the deadline.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGKILL, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill broker");
            child.wait().expect("wait for killed broker");
        }
    }

    /// Clean stop and start again on the same address and data dir.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// The broker's output so far (stdout and stderr interleaved by line), for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log.lock().expect("log lock"), LOG_TAIL_BYTES)
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // kill(1) rather than libc::kill: no unsafe in tests for one signal. The child is not
        // reaped yet, so its pid cannot have been reused.
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(
            matches!(sent, Ok(s) if s.success()),
            "SIGTERM to broker: {sent:?}"
        );
        let status = wait_deadline(&mut child, BROKER_STOP_TIMEOUT);
        match status {
            Some(status) => assert!(
                status.success(),
                "broker exited with {status} after SIGTERM (want 0)\n--- broker log ---\n{}",
                self.log_tail()
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM\n--- broker log ---\n{}",
                    self.log_tail()
                );
            }
        }
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["start", "--kafka-addr", &self.addr, "--data-dir"])
            .arg(self.data_dir.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the sluice binary");
        let (ready_tx, ready_rx) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let log = Arc::clone(&self.log);
            let ready_tx = ready_tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("ready") {
                        let _ = ready_tx.send(());
                    }
                    let mut log = log.lock().expect("log lock");
                    log.push_str(&line);
                    log.push('\n');
                    trim_front(&mut log, 4 * LOG_TAIL_BYTES);
                }
            });
        }
        drop(ready_tx);
        self.child = Some(child);
        self.wait_ready(&ready_rx);
    }

    fn wait_ready(&mut self, ready_rx: &Receiver<()>) {
        let deadline = Instant::now() + BROKER_READY_TIMEOUT;
        match ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Both output pipes closed without `ready`: the broker exited.
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| wait_deadline(c, Duration::from_secs(5)));
                self.child = None;
                panic!(
                    "broker exited ({status:?}) before printing `ready` on {}\n--- broker log ---\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                panic!(
                    "broker did not print `ready` within {BROKER_READY_TIMEOUT:?}\n--- broker log ---\n{}",
                    self.log_tail()
                );
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A test that panicked leaves its broker here: never leak the process.
        self.kill();
    }
}

/// A port the kernel just handed out for loopback; freed again for the broker to bind. Another
/// process could take it in between; the broker would then fail to start, loudly.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
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

// ---- clients -----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    ConfluentKafka,
    KafkaPython,
    Kafkajs,
    Kcat,
    /// group_scenario.py: consumer-group scenarios with confluent-kafka and kafka-python members.
    GroupScenario,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::ConfluentKafka => "confluent-kafka",
            Client::KafkaPython => "kafka-python",
            Client::Kafkajs => "kafkajs",
            Client::Kcat => "kcat",
            Client::GroupScenario => "group-scenario",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Client::ConfluentKafka => "confluent_kafka_client.py",
            Client::KafkaPython => "kafka_python_client.py",
            Client::Kafkajs => "kafkajs_client.js",
            Client::Kcat => "kcat_client.py",
            Client::GroupScenario => "group_scenario.py",
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
        Client::Kafkajs => {
            let mut cmd = Command::new("node");
            cmd.arg(script).env("NODE_PATH", node_modules());
            cmd
        }
        Client::Kcat => {
            assert!(on_path("kcat"), "kcat is not on PATH: {INSTALL_HINT}");
            let mut cmd = Command::new(python());
            cmd.arg(script);
            cmd
        }
        Client::ConfluentKafka | Client::KafkaPython | Client::GroupScenario => {
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
    let mut cmd = client_command(client);
    cmd.arg("--bootstrap").arg(broker.addr()).args(args);
    let what = format!("{} {}", client.name(), args.join(" "));
    let output = run_with_deadline(cmd, CLIENT_TIMEOUT, &what, broker);
    let summary = output
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("SUMMARY ") && l.ends_with(" OK"))
        .unwrap_or_else(|| {
            panic!(
                "{what}: exited 0 without a SUMMARY ... OK line\n--- stdout ---\n{}\n--- stderr ---\n{}",
                tail(&output.stdout, LOG_TAIL_BYTES),
                tail(&output.stderr, LOG_TAIL_BYTES)
            )
        })
        .to_string();
    eprintln!("{summary}");
    Summary { line: summary }
}

pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion within `timeout`, asserting exit status 0.
pub fn run_with_deadline(
    mut cmd: Command,
    timeout: Duration,
    what: &str,
    broker: &Broker,
) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start ({e}): {INSTALL_HINT}"));
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let status = wait_deadline(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = Output {
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    match status {
        Some(s) if s.success() => output,
        _ => {
            let why = match status {
                Some(s) if s.code() == Some(3) => {
                    format!("exited with {s}: client missing, {INSTALL_HINT}")
                }
                Some(s) => format!("exited with {s}"),
                None => format!("did not finish within {timeout:?} (killed)"),
            };
            panic!(
                "{what}: {why}\n--- stderr ---\n{}\n--- stdout ---\n{}\n--- broker log ---\n{}",
                tail(&output.stderr, LOG_TAIL_BYTES),
                tail(&output.stdout, LOG_TAIL_BYTES / 2),
                broker.log_tail()
            );
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

fn tail(s: &str, bytes: usize) -> String {
    if s.len() <= bytes {
        return s.to_string();
    }
    let mut start = s.len() - bytes;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &s[start..])
}

fn trim_front(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = s.len() - max / 2;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}
