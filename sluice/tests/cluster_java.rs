//! Apache Kafka's Java client (4.3.1) through leader failures on a real 3-process cluster
//! (issue 14; the cluster harness is tests/common/cluster.rs).
//!
//! `io.sluice.reftest.ClusterChaos` (tests/java/src) runs an idempotent acks=all KafkaProducer
//! writing numbered records to a 3-partition topic (RF 3, min.insync.replicas 2) and prints
//! every acknowledgement. Meanwhile this test SIGKILLs the leader of partition 0, waits until
//! records sent after the kill are acknowledged on that partition (a new leader took over; the
//! program answers a MARK line with the number of its next record), restarts the
//! node and waits for the full ISR; then the same for the leader of partition 1. It then tells
//! the program to stop; the program flushes, reads every partition back with a KafkaConsumer
//! and prints what it read. The checks are here: no record given up, every acknowledged record
//! read back at its acknowledged partition and offset, none twice, nothing unacknowledged, and
//! per partition the numbers rise with the offsets (send order kept).
//!
//! A failure prints the Java output and the tail of every node's log and keeps the cluster's
//! temp dir.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::tail;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use refstack::JavaStack;

const NODES: usize = 3;
const TOPIC: &str = "java-chaos";
const PARTITIONS: i32 = 3;
/// Leader kills, one per round: round r kills the leader of partition r.
const ROUNDS: i32 = 2;
/// Acknowledgements on the killed leader's partition that prove a new leader took over.
const ACKS_AFTER_KILL: usize = 50;
/// Acknowledgements before the first kill and after the last restart.
const ACKS_AROUND: usize = 100;
/// How long the quorum may take to form, a topic to be replicated, a failover to finish.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the program may take to flush and read everything back after STOP.
const READ_TIMEOUT: Duration = Duration::from_secs(150);
/// How often a wait checks that no node died on its own.
const ALIVE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

#[test]
fn java_idempotent_producer_through_leader_kills() {
    let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster);
    create_topic(&cluster);
    wait_fully_replicated(&cluster);

    let mut program = Program::start(stack.java("io.sluice.reftest.ClusterChaos").args([
        &cluster.bootstrap(),
        TOPIC,
        &PARTITIONS.to_string(),
    ]));
    program.wait_for(&mut cluster, "first acknowledgements", STEP_TIMEOUT, |s| {
        s.acked.len() >= ACKS_AROUND
    });
    for partition in 0..ROUNDS {
        let leader = leader_of(&cluster, partition);
        eprintln!("round {partition}: SIGKILL node {leader}, leader of {TOPIC}-{partition}");
        cluster.kill(leader);
        let started = Instant::now();
        // Records numbered from the mark on were sent after the leader was gone: only a new
        // leader can acknowledge them.
        let mark = program.mark(&mut cluster);
        program.wait_for(
            &mut cluster,
            &format!("acknowledgements on partition {partition} after its leader {leader} died"),
            STEP_TIMEOUT,
            |s| s.acked_on_since(partition, mark) >= ACKS_AFTER_KILL,
        );
        eprintln!(
            "round {partition}: {ACKS_AFTER_KILL} acks on partition {partition} {:?} after the kill",
            started.elapsed()
        );
        cluster.restart(leader);
        wait_fully_replicated(&cluster);
    }
    let before = program.state.acked.len();
    program.wait_for(
        &mut cluster,
        "acknowledgements after the restarts",
        STEP_TIMEOUT,
        |s| s.acked.len() >= before + ACKS_AROUND,
    );
    program.stop_and_read(&mut cluster);

    let summary = program.check();
    eprintln!("{summary}");
    cluster.stop();
}

/// What the program printed so far, parsed.
#[derive(Default)]
struct State {
    /// Record number -> (partition, offset) acknowledged.
    acked: HashMap<u64, (i32, i64)>,
    acked_per_partition: HashMap<i32, usize>,
    nacks: Vec<String>,
    /// The answer to the last MARK.
    mark: Option<u64>,
    produced: Option<String>,
    /// (partition, offset, number) in the order the consumer returned them.
    read: Vec<(i32, i64, u64)>,
    end: Option<String>,
}

impl State {
    /// Acknowledgements on `partition` of records numbered `first` or later.
    fn acked_on_since(&self, partition: i32, first: u64) -> usize {
        self.acked
            .iter()
            .filter(|&(&n, &(p, _))| p == partition && n >= first)
            .count()
    }

    fn apply(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<i64, String> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("bad line {line:?}"))
        };
        match words.first().copied() {
            Some("ACK") => {
                let (n, p, o) = (num(1)? as u64, num(2)? as i32, num(3)?);
                if self.acked.insert(n, (p, o)).is_some() {
                    return Err(format!("record {n} acknowledged twice"));
                }
                *self.acked_per_partition.entry(p).or_default() += 1;
            }
            Some("NACK") => self.nacks.push(line.to_string()),
            Some("MARK") => self.mark = Some(num(1)? as u64),
            Some("PRODUCED") => self.produced = Some(line.to_string()),
            Some("REC") => self.read.push((num(1)? as i32, num(2)?, num(3)? as u64)),
            Some("END") => self.end = Some(line.to_string()),
            _ => {}
        }
        Ok(())
    }
}

/// The running ClusterChaos program: its stdin, its stdout as parsed lines, its stderr.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    state: State,
    out: String,
}

impl Program {
    fn start(command: &mut std::process::Command) -> Program {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting java: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        Program {
            child,
            stdin,
            lines,
            stderr: Some(stderr),
            state: State::default(),
            out: String::new(),
        }
    }

    /// Reads the program's lines until `done` holds; fails on a deadline, a node that died on
    /// its own, a program that ended, or a line that breaks the protocol.
    fn wait_for(
        &mut self,
        cluster: &mut Cluster,
        what: &str,
        timeout: Duration,
        done: impl Fn(&State) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.state) {
            if let Err(dead) = cluster.check_alive() {
                self.fail(&format!("waiting for {what}: {dead}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(&format!("no {what} within {timeout:?}"));
            }
            match self.lines.recv_timeout(left.min(ALIVE_CHECK_INTERVAL)) {
                Ok(line) => {
                    if let Err(e) = self.state.apply(&line) {
                        self.fail(&e);
                    }
                    if !line.starts_with("ACK ") && !line.starts_with("REC ") {
                        self.out.push_str(&line);
                        self.out.push('\n');
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("the program ended while waiting for {what}"))
                }
            }
        }
    }

    /// Sends MARK and returns the program's answer: the number of the next record it sends.
    fn mark(&mut self, cluster: &mut Cluster) -> u64 {
        self.state.mark = None;
        self.send("MARK");
        self.wait_for(cluster, "the answer to MARK", STEP_TIMEOUT, |s| {
            s.mark.is_some()
        });
        self.state.mark.expect("waited for it")
    }

    fn send(&mut self, line: &str) {
        let sent = match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|()| stdin.flush()),
            None => Ok(()),
        };
        if let Err(e) = sent {
            self.fail(&format!("cannot send {line}: {e}"));
        }
    }

    /// STOP, then waits for the read-back to end and the program to exit 0.
    fn stop_and_read(&mut self, cluster: &mut Cluster) {
        self.send("STOP");
        self.stdin = None;
        self.wait_for(cluster, "the read-back", READ_TIMEOUT, |s| s.end.is_some());
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => self.fail(&format!("exited with {status}")),
                _ if Instant::now() > deadline => self.fail("did not exit after END"),
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Every check of the run; returns a one-line summary.
    fn check(&mut self) -> String {
        let s = &self.state;
        let mut problems = Vec::new();
        if !s.nacks.is_empty() {
            problems.push(format!(
                "{} records given up, first: {}",
                s.nacks.len(),
                s.nacks[0]
            ));
        }
        for (&n, &(p, _)) in &s.acked {
            if i64::from(p) != n as i64 % i64::from(PARTITIONS) {
                problems.push(format!("record {n} acknowledged on partition {p}"));
            }
        }
        let mut read_at: HashMap<u64, (i32, i64)> = HashMap::new();
        let mut per_partition: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
        for &(p, o, n) in &s.read {
            if let Some(first) = read_at.insert(n, (p, o)) {
                problems.push(format!(
                    "record {n} read twice: at {first:?} and ({p}, {o})"
                ));
            }
            per_partition.entry(p).or_default().push((o, n));
        }
        for (n, at) in &s.acked {
            match read_at.get(n) {
                None => problems.push(format!("acknowledged record {n} at {at:?} not read back")),
                Some(got) if got != at => problems.push(format!(
                    "record {n} acknowledged at {at:?}, read back at {got:?}"
                )),
                Some(_) => {}
            }
        }
        for n in read_at.keys().filter(|n| !s.acked.contains_key(n)) {
            problems.push(format!("record {n} read back but never acknowledged"));
        }
        for (p, records) in &per_partition {
            for pair in records.windows(2) {
                let ((o1, n1), (o2, n2)) = (pair[0], pair[1]);
                if o2 <= o1 || n2 <= n1 {
                    problems.push(format!(
                        "partition {p}: record {n2} at offset {o2} follows record {n1} at offset {o1}"
                    ));
                }
            }
        }
        problems.truncate(20);
        let summary = format!(
            "{} acknowledged over {ROUNDS} leader kills, all read back once, in order ({}; {})",
            s.acked.len(),
            s.produced.as_deref().unwrap_or("?"),
            s.end.as_deref().unwrap_or("?")
        );
        if !problems.is_empty() {
            self.fail(&problems.join("\n"));
        }
        summary
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        panic!(
            "ClusterChaos: {why}\nacknowledged {} ({:?} per partition), read {}\n\
             --- its stdout (without ACK/REC lines) ---\n{}\n--- its stderr ---\n{}",
            self.state.acked.len(),
            self.state.acked_per_partition,
            self.state.read.len(),
            tail(&self.out, 8_000),
            tail(&stderr, 20_000)
        );
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The leader of `partition` as a running node reports it, with a full ISR.
fn leader_of(cluster: &Cluster, partition: i32) -> i32 {
    let mut leader = -1;
    cluster.wait_until(
        &format!("a leader of {TOPIC}-{partition}"),
        STEP_TIMEOUT,
        |c| {
            let md = c.try_metadata(c.node_ids()[0], Some(&[TOPIC]))?;
            let p = md
                .topics
                .first()
                .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
                .ok_or("no such partition")?;
            if p.error_code != 0 || p.leader_id.0 < 0 {
                return Err(format!("error {} leader {}", p.error_code, p.leader_id.0));
            }
            leader = p.leader_id.0;
            Ok(())
        },
    );
    leader
}

fn wait_for_brokers(cluster: &Cluster) {
    cluster.wait_until("every node lists every broker", STEP_TIMEOUT, |c| {
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

fn create_topic(cluster: &Cluster) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(NODES as i16)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("min.insync.replicas"))
                        .with_value(Some(StrBytes::from_static_str("2"))),
                ]),
        ])
        .with_timeout_ms(30_000);
    cluster.create_topic(&req, STEP_TIMEOUT);
}

/// Every node reports every partition with a leader and all nodes in the ISR.
fn wait_fully_replicated(cluster: &Cluster) {
    cluster.wait_until(
        &format!("{TOPIC}: a leader and the full ISR on every node"),
        STEP_TIMEOUT,
        |c| {
            for node in c.node_ids() {
                let md = c.try_metadata(node, Some(&[TOPIC]))?;
                let t = md.topics.first().ok_or("no topic")?;
                if t.error_code != 0 || t.partitions.len() != PARTITIONS as usize {
                    return Err(format!("node {node}: error {}", t.error_code));
                }
                for p in &t.partitions {
                    if p.error_code != 0
                        || p.isr_nodes.len() != c.len()
                        || !p.isr_nodes.contains(&p.leader_id)
                    {
                        return Err(format!(
                            "node {node}: partition {} error {} leader {} isr {:?}",
                            p.partition_index, p.error_code, p.leader_id.0, p.isr_nodes
                        ));
                    }
                }
            }
            Ok(())
        },
    );
}
