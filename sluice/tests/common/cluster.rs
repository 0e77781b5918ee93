//! A real multi-process `sluice` cluster on loopback (issue 7): one child process per node,
//! each with its own data dir, Kafka listener and rpc listener, all voters of one quorum.
//!
//! `Cluster::start(3)` picks every port up front (each node's `--seeds` names all rpc ports, and
//! a restarted node must come back on the same ports), starts all nodes at once and returns when
//! each printed `sluice ready:`. Node ids are 0..n and equal the Kafka broker ids, so an id taken
//! from Metadata is the argument of `kill`, `restart` and `stop_node`.
//!
//! The nodes authenticate each other on the rpc port with a cluster secret the harness writes
//! (`cluster.secret` in the temp dir, `--cluster-secret-file`), as a production cluster should.
//!
//! Every node's stdout and stderr go to `node-N.log` in the cluster's temp dir (appended across
//! restarts, with a marker line). When a test panics with a `Cluster` alive, `Drop` prints the
//! tail of every node's log, keeps the temp dir and prints its path (with
//! `SLUICE_TEST_KEEP_CLUSTER=1` it keeps it after a pass too).
//!
//! Nothing sleeps to synchronise: `wait_until` polls a condition against a deadline and fails
//! with the node logs; `try_metadata` is a fallible raw Metadata call for such conditions.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{READY_TIMEOUT, RawClient, STOP_TIMEOUT, tail, wait_deadline};

/// Cluster settings for tests: failures are detected in seconds, not Kafka's defaults
/// (names as in broker/src/config.rs `ClusterSection`; written to a `[cluster]` config file).
pub const CLUSTER_SETTINGS: &[(&str, i64)] = &[
    ("broker_session_timeout_ms", 3_000),
    ("broker_heartbeat_interval_ms", 500),
    ("replica_lag_time_max_ms", 5_000),
];
/// Shards per node: 2, so cross-shard paths run in cluster mode too.
pub const SHARDS_PER_NODE: &str = "2";
/// How much of each node's log a failure prints.
pub const LOG_TAIL_BYTES: usize = 12_000;
/// Set (to anything) to keep the cluster's temp dir after a passing test too.
pub const KEEP_ENV: &str = "SLUICE_TEST_KEEP_CLUSTER";
/// Timeout of one raw request made by `try_metadata` (a hung node is an error, not a hang).
const RAW_IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Cluster {
    nodes: Vec<Node>,
    /// None once `Drop` kept it for a failed test.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    seeds: String,
    config_path: PathBuf,
    secret_path: PathBuf,
    /// Extra environment of every node process (`SLUICE_*` config overrides).
    env: Vec<(String, String)>,
}

struct Node {
    id: i32,
    kafka_addr: String,
    rpc_addr: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Cluster {
    /// Starts `nodes` voters and waits until each printed `ready`.
    pub fn start(nodes: usize) -> Cluster {
        Cluster::start_with_env(nodes, &[])
    }

    /// `start` with extra environment for every node process, e.g. a `SLUICE_CLUSTER_*`
    /// override of a setting `CLUSTER_SETTINGS` does not name; restarts keep it.
    pub fn start_with_env(nodes: usize, env: &[(&str, &str)]) -> Cluster {
        assert!(nodes >= 1, "a cluster needs a node");
        let dir = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .expect("temp dir");
        let dir_path = dir.path().to_path_buf();
        let ports = free_ports(2 * nodes);
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| {
                let data_dir = dir_path.join(format!("node-{i}"));
                std::fs::create_dir_all(&data_dir).expect("node data dir");
                Node {
                    id: i as i32,
                    kafka_addr: format!("127.0.0.1:{}", ports[2 * i]),
                    rpc_addr: format!("127.0.0.1:{}", ports[2 * i + 1]),
                    data_dir,
                    log_path: dir_path.join(format!("node-{i}.log")),
                    child: None,
                    starts: 0,
                }
            })
            .collect();
        let seeds = nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.rpc_addr))
            .collect::<Vec<_>>()
            .join(",");
        let config_path = dir_path.join("cluster.toml");
        let mut config = String::from("[cluster]\n");
        for (key, value) in CLUSTER_SETTINGS {
            config.push_str(&format!("{key} = {value}\n"));
        }
        std::fs::write(&config_path, config).expect("write cluster.toml");
        let secret_path = dir_path.join("cluster.secret");
        write_secret(&secret_path);
        let mut cluster = Cluster {
            nodes,
            dir: Some(dir),
            dir_path,
            seeds,
            config_path,
            secret_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // All at once: a node may wait for the quorum before it listens.
        let ready: Vec<_> = (0..cluster.nodes.len()).map(|i| cluster.spawn(i)).collect();
        let deadline = Instant::now() + READY_TIMEOUT;
        for (i, rx) in ready.into_iter().enumerate() {
            cluster.wait_ready(i, &rx, deadline);
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node ids, 0..n.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// "127.0.0.1:K0,127.0.0.1:K1,...": every node's Kafka listener, running or not.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka_addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// "127.0.0.1:PORT" of one node's Kafka listener.
    pub fn kafka_addr(&self, node: i32) -> &str {
        &self.node(node).kafka_addr
    }

    /// "127.0.0.1:PORT" of one node's rpc listener.
    pub fn rpc_addr(&self, node: i32) -> &str {
        &self.node(node).rpc_addr
    }

    /// The cluster secret file every node was started with.
    pub fn secret_path(&self) -> &Path {
        &self.secret_path
    }

    /// The `--seeds` every node was started with.
    pub fn seeds(&self) -> &str {
        &self.seeds
    }

    /// The temp dir holding every node's data dir, log and the config file.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    pub fn data_dir(&self, node: i32) -> &Path {
        &self.node(node).data_dir
    }

    pub fn is_running(&mut self, node: i32) -> bool {
        let n = self.node_mut(node);
        matches!(n.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Err naming every node that the test did not kill or stop but is gone, with its exit
    /// status (a crash, or a signal from outside).
    pub fn check_alive(&mut self) -> Result<(), String> {
        let mut dead = Vec::new();
        for n in &mut self.nodes {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                dead.push(format!("node {} exited on its own: {status}", n.id));
            }
        }
        if dead.is_empty() {
            Ok(())
        } else {
            Err(dead.join("; "))
        }
    }

    /// SIGKILL, no clean shutdown; returns when the process is gone, with the wall-clock time
    /// the signal was sent (for kill-to-recovery measurements against other processes' clocks).
    pub fn kill(&mut self, node: i32) -> SystemTime {
        let idx = self.index(node);
        let mut child = self.nodes[idx]
            .child
            .take()
            .unwrap_or_else(|| panic!("kill: node {node} is not running"));
        let at = SystemTime::now();
        let _ = child.kill();
        let _ = child.wait();
        self.mark(idx, "killed (SIGKILL) by the test");
        at
    }

    /// Starts a stopped or killed node again on the same ports and data dir and waits for
    /// `ready`; a running node is stopped cleanly first.
    pub fn restart(&mut self, node: i32) {
        let idx = self.index(node);
        if self.nodes[idx].child.is_some() {
            self.stop_node(node);
        }
        let rx = self.spawn(idx);
        self.wait_ready(idx, &rx, Instant::now() + READY_TIMEOUT);
    }

    /// SIGTERM to one node; it must exit 0 within `STOP_TIMEOUT`.
    pub fn stop_node(&mut self, node: i32) {
        let idx = self.index(node);
        let Some(child) = self.nodes[idx].child.take() else {
            return;
        };
        let pid = child.id();
        self.nodes[idx].child = Some(child);
        sigterm(pid);
        self.reap_stopped(idx);
    }

    /// Starts several stopped or killed nodes at once (running ones are stopped cleanly
    /// first) and waits until each printed `ready`: a node may wait for a quorum before it
    /// listens, so nodes that form one together must start together.
    pub fn restart_many(&mut self, nodes: &[i32]) {
        for &node in nodes {
            let idx = self.index(node);
            if self.nodes[idx].child.is_some() {
                self.stop_node(node);
            }
        }
        let ready: Vec<(usize, Receiver<String>)> = nodes
            .iter()
            .map(|&node| {
                let idx = self.index(node);
                (idx, self.spawn(idx))
            })
            .collect();
        let deadline = Instant::now() + READY_TIMEOUT;
        for (idx, rx) in ready {
            self.wait_ready(idx, &rx, deadline);
        }
    }

    /// SIGSTOP: the node stays a process but does nothing (a long GC pause, a frozen VM) until
    /// `resume`.
    pub fn pause(&mut self, node: i32) {
        let idx = self.index(node);
        let pid = self.nodes[idx]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("pause: node {node} is not running"))
            .id();
        signal(pid, "STOP");
        self.mark(idx, "paused (SIGSTOP) by the test");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&mut self, node: i32) {
        let idx = self.index(node);
        let pid = self.nodes[idx]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("resume: node {node} is not running"))
            .id();
        signal(pid, "CONT");
        self.mark(idx, "resumed (SIGCONT) by the test");
    }

    /// SIGTERM to several nodes at once (a full-cluster restart by an operator); each must exit
    /// 0 within `STOP_TIMEOUT`. Nodes not running are skipped.
    pub fn stop_many(&mut self, nodes: &[i32]) {
        let running: Vec<usize> = nodes
            .iter()
            .map(|&node| self.index(node))
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        for &i in &running {
            sigterm(self.nodes[i].child.as_ref().expect("running").id());
        }
        for i in running {
            self.reap_stopped(i);
        }
    }

    /// SIGTERM to every running node at once; each must exit 0 within `STOP_TIMEOUT`.
    pub fn stop(mut self) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        for &i in &running {
            sigterm(self.nodes[i].child.as_ref().expect("running").id());
        }
        for i in running {
            self.reap_stopped(i);
        }
    }

    /// Polls `check` until it returns Ok or `timeout` passes; on timeout panics with the last
    /// error and the node logs. Returns how long it took.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Cluster) -> Result<(), String>,
    ) -> Duration {
        let start = Instant::now();
        let mut last;
        loop {
            match check(self) {
                Ok(()) => return start.elapsed(),
                Err(e) => last = e,
            }
            if start.elapsed() >= timeout {
                panic!(
                    "{what}: not reached within {timeout:?}; last: {last}\n{}",
                    self.logs_tail(LOG_TAIL_BYTES)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Metadata (v12) from one node for `topics` (None = all topics); Err on any connection or
    /// decoding problem, so conditions can poll nodes that are still starting.
    pub fn try_metadata(
        &self,
        node: i32,
        topics: Option<&[&str]>,
    ) -> Result<MetadataResponse, String> {
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                })
                .collect()
        });
        let req = MetadataRequest::default()
            .with_topics(topics)
            .with_allow_auto_topic_creation(false);
        try_call(self.kafka_addr(node), ApiKey::Metadata, 12, &req)
    }

    /// One raw request to one node on a fresh connection; Err on any connection or decoding
    /// problem.
    pub fn try_call<Req: Encodable, Resp: Decodable>(
        &self,
        node: i32,
        api_key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp, String> {
        try_call(self.kafka_addr(node), api_key, version, body)
    }

    /// CreateTopics (v7) of one topic, sent to the controller first and then to the other
    /// nodes until one takes it (NOT_CONTROLLER: the next); retried within `timeout`. A request
    /// whose answer was lost may have created the topic, so TOPIC_ALREADY_EXISTS after such a
    /// loss is success. Returns the (partitions, replication factor) answered, None when the
    /// topic turned out to exist; panics on any other error code.
    pub fn create_topic(&self, req: &CreateTopicsRequest, timeout: Duration) -> Option<(i32, i16)> {
        use kafka_wire::error::{NOT_CONTROLLER, TOPIC_ALREADY_EXISTS};
        let topic = req.topics[0].name.0.to_string();
        let mut outcome_unknown = false;
        let mut answered = None;
        self.wait_until(&format!("CreateTopics {topic}"), timeout, |c| {
            let controller = c.try_metadata(c.node_ids()[0], Some(&[]))?.controller_id.0;
            let mut order = vec![controller];
            order.extend(c.node_ids().into_iter().filter(|&n| n != controller));
            let mut last = String::new();
            for node in order.into_iter().filter(|&n| n >= 0) {
                let resp: CreateTopicsResponse = c
                    .try_call(node, ApiKey::CreateTopics, 7, req)
                    .inspect_err(|_| outcome_unknown = true)?;
                let t = &resp.topics[0];
                match t.error_code {
                    0 => {
                        answered = Some((t.num_partitions, t.replication_factor));
                        return Ok(());
                    }
                    TOPIC_ALREADY_EXISTS if outcome_unknown => return Ok(()),
                    NOT_CONTROLLER => last = format!("node {node}: NOT_CONTROLLER"),
                    code => panic!(
                        "CreateTopics {topic} on node {node}: error {code} {:?}\n{}",
                        t.error_message,
                        c.logs_tail(LOG_TAIL_BYTES)
                    ),
                }
            }
            Err(last)
        });
        answered
    }

    /// A raw (panicking) Kafka connection to one node.
    /// The leader of `topic`-`partition` as the first node that knows it answers.
    pub fn try_leader_of(&self, topic: &str, partition: i32) -> Result<i32, String> {
        let mut last = String::new();
        for node in self.node_ids() {
            let md = match self.try_metadata(node, Some(&[topic])) {
                Ok(md) => md,
                Err(e) => {
                    last = format!("node {node}: {e}");
                    continue;
                }
            };
            let found = md
                .topics
                .first()
                .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition));
            match found {
                Some(p) if p.error_code == 0 && p.leader_id.0 >= 0 => return Ok(p.leader_id.0),
                other => {
                    last = format!(
                        "node {node}: {topic}-{partition}: {:?}",
                        other.map(|p| (p.error_code, p.leader_id.0))
                    )
                }
            }
        }
        Err(last)
    }

    /// [`Cluster::try_leader_of`] until it names one, within `timeout`.
    pub fn leader_of(&self, topic: &str, partition: i32, timeout: Duration) -> i32 {
        let mut leader = -1;
        self.wait_until(&format!("a leader of {topic}-{partition}"), timeout, |c| {
            leader = c.try_leader_of(topic, partition)?;
            Ok(())
        });
        leader
    }

    /// Until every node's Metadata lists every broker and a controller, within `timeout`.
    pub fn wait_for_brokers(&self, timeout: Duration) {
        self.wait_until("every node lists every broker", timeout, |c| {
            for node in c.node_ids() {
                let md = c.try_metadata(node, None)?;
                if md.brokers.len() != c.len() || md.controller_id.0 < 0 {
                    return Err(format!(
                        "node {node}: {} brokers, controller {}",
                        md.brokers.len(),
                        md.controller_id.0
                    ));
                }
            }
            Ok(())
        });
    }

    pub fn connect(&self, node: i32) -> RawClient {
        RawClient::connect(self.kafka_addr(node))
    }

    /// One node's whole log so far.
    pub fn log(&self, node: i32) -> String {
        read_lossy(&self.node(node).log_path)
    }

    /// The tail of every node's log, each under a header naming the node and its file.
    pub fn logs_tail(&self, bytes: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "--- node {} log ({}; kafka={} rpc={}) ---\n{}\n",
                n.id,
                n.log_path.display(),
                n.kafka_addr,
                n.rpc_addr,
                tail(&read_lossy(&n.log_path), bytes)
            ));
        }
        out
    }

    fn node(&self, node: i32) -> &Node {
        &self.nodes[self.index(node)]
    }

    fn node_mut(&mut self, node: i32) -> &mut Node {
        let idx = self.index(node);
        &mut self.nodes[idx]
    }

    fn index(&self, node: i32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == node)
            .unwrap_or_else(|| panic!("no node {node} in a {}-node cluster", self.nodes.len()))
    }

    /// Appends a marker line to a node's log (starts, kills), so a failure's log reads in order.
    fn mark(&self, idx: usize, what: &str) {
        let n = &self.nodes[idx];
        if let Ok(mut f) = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&n.log_path)
        {
            let _ = writeln!(f, "===== [test harness] node {} {what} =====", n.id);
        }
    }

    /// Starts node `idx`; the receiver gets its `sluice ready:` line.
    fn spawn(&mut self, idx: usize) -> Receiver<String> {
        self.nodes[idx].starts += 1;
        let starts = self.nodes[idx].starts;
        self.mark(idx, &format!("start #{starts}"));
        let n = &self.nodes[idx];
        let stderr_log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&n.log_path)
            .expect("node log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("start")
            .arg("--config")
            .arg(&self.config_path)
            .args(["--node-id", &n.id.to_string()])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--kafka-addr", &n.kafka_addr])
            .args(["--rpc-addr", &n.rpc_addr])
            .args(["--seeds", &self.seeds])
            .arg("--cluster-secret-file")
            .arg(&self.secret_path)
            .args(["--shards", SHARDS_PER_NODE])
            // The host tuning report is the same for every node and start; it would fill the
            // log tails a failure prints.
            .env("SLUICE_BROKER_TUNING_REPORT", "false")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_log))
            .spawn()
            .expect("spawn the sluice binary");
        let stdout = child.stdout.take().expect("stdout");
        let log_path = n.log_path.clone();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || copy_stdout(stdout, &log_path, tx));
        self.nodes[idx].child = Some(child);
        rx
    }

    fn wait_ready(&mut self, idx: usize, rx: &Receiver<String>, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => {
                let id = self.nodes[idx].id;
                let exited = self.nodes[idx]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "node {id} did not print `sluice ready:` ({e:?}; exit status: {exited:?})\n{}",
                    self.logs_tail(LOG_TAIL_BYTES)
                );
            }
        };
        let n = &self.nodes[idx];
        let kafka = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listener="))
            .unwrap_or_else(|| panic!("node {}: no listener= in ready line: {line}", n.id));
        assert_eq!(
            kafka, n.kafka_addr,
            "node {} listens on another address than asked: {line}",
            n.id
        );
    }

    /// Waits for node `idx` to exit after SIGTERM; it must exit 0.
    fn reap_stopped(&mut self, idx: usize) {
        let id = self.nodes[idx].id;
        let mut child = self.nodes[idx].child.take().expect("running");
        let status = wait_deadline(&mut child, STOP_TIMEOUT);
        self.mark(idx, &format!("exited after SIGTERM: {status:?}"));
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!(
                "node {id} exited with {s} after SIGTERM (want 0)\n{}",
                self.logs_tail(LOG_TAIL_BYTES)
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {id} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.logs_tail(LOG_TAIL_BYTES)
                );
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A node that died on its own (not by the test's kill or stop) is the first thing a
        // failure should say: its exit status names the signal.
        let mut states = Vec::new();
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        states.push(format!("node {} had exited on its own: {status}", n.id))
                    }
                    _ => states.push(format!("node {} was running", n.id)),
                }
                let _ = child.kill();
                let _ = child.wait();
            } else {
                states.push(format!("node {} was stopped by the test", n.id));
            }
        }
        let panicking = thread::panicking();
        if panicking {
            eprintln!("{}", self.logs_tail(LOG_TAIL_BYTES));
            eprintln!("node states at the failure: {}", states.join("; "));
        }
        if (panicking || std::env::var_os(KEEP_ENV).is_some())
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("cluster data dirs and full logs kept in {}", kept.display());
        }
    }
}

/// Milliseconds since the Unix epoch (what the scenario scripts compare their clocks with).
pub fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `count` distinct free loopback ports: all bound at once (so the kernel hands out distinct
/// ones), then released for the nodes to take. Another process could take one in between; the
/// node then fails to start and says so in its log.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn sigterm(pid: u32) {
    // kill(1) rather than libc::kill: no unsafe for one signal; the child is not reaped yet,
    // so its pid cannot have been reused.
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(
        matches!(sent, Ok(s) if s.success()),
        "SIGTERM to {pid}: {sent:?}"
    );
}

/// `kill -<name> <pid>` (STOP, CONT): as `sigterm`, the child is not reaped, so its pid is its
/// own.
fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
    assert!(
        matches!(sent, Ok(s) if s.success()),
        "SIG{name} to {pid}: {sent:?}"
    );
}

/// Copies a node's stdout into its log file line by line and hands the `ready` line over.
fn copy_stdout(stdout: impl Read, log_path: &Path, ready: mpsc::Sender<String>) {
    let mut log = OpenOptions::new().append(true).create(true).open(log_path);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("sluice ready:") {
            let _ = ready.send(line.clone());
        }
        if let Ok(f) = log.as_mut() {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// One request and its response on a fresh connection, every failure an Err.
pub fn try_call<Req: Encodable, Resp: Decodable>(
    addr: &str,
    api_key: ApiKey,
    version: i16,
    body: &Req,
) -> Result<Resp, String> {
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, RAW_IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(RAW_IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("cluster-test")));
    let mut buf = bytes::BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| format!("encode header: {e}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("encode body: {e}"))?;
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    stream
        .write_all(&frame)
        .map_err(|e| format!("{addr}: write: {e}"))?;
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|e| format!("{addr}: read size: {e}"))?;
    let mut payload = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    stream
        .read_exact(&mut payload)
        .map_err(|e| format!("{addr}: read body: {e}"))?;
    let mut payload = bytes::Bytes::from(payload);
    let header = ResponseHeader::decode(&mut payload, api_key.response_header_version(version))
        .map_err(|e| format!("{addr}: response header: {e}"))?;
    if header.correlation_id != 1 {
        return Err(format!("{addr}: correlation id {}", header.correlation_id));
    }
    Resp::decode(&mut payload, version).map_err(|e| format!("{addr}: decode response: {e}"))
}

pub fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A fresh secret for one test cluster, readable by its owner only. Not for production: the
/// bytes come from std's per-process random hasher keys and the clock, enough to keep test
/// clusters apart.
fn write_secret(path: &Path) {
    use std::hash::{BuildHasher, Hasher};
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = String::new();
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(unix_ms(SystemTime::now()));
        secret.push_str(&format!("{:016x}", h.finish()));
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the cluster secret file");
    writeln!(f, "{secret}").expect("write the cluster secret file");
}
