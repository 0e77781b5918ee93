//! MirrorMaker 2 (Apache Kafka 4.3.1's connect-mirror, dedicated mode) from one Sluice cluster
//! to another (issue 16).
//!
//! Two Sluice clusters: `A` (source) of three nodes, the topic replicated 3 times, and `B`
//! (target) of one node (four nodes, MM2 and the Java steps keep two cores busy enough).
//! `org.apache.kafka.connect.mirror.MirrorMaker` runs with
//! an `mm2.properties` written into A's temp dir, as `bin/connect-mirror-maker.sh` does, with the
//! A->B flow for one 3-partition topic, group offset sync on and checkpoints every second.
//!
//! The Java client (`io.sluice.reftest.MirrorCheck`, one step per JVM) produces numbered
//! records on A and a consumer group reads all of them and commits; then:
//! - B's `A.<topic>` holds every record once, per partition as many as A's partition
//!   (read back from B and checked: count, distinct numbers, values matching keys);
//! - MM2's checkpoints on B (`RemoteClusterUtils.translateOffsets`) and the group's offsets
//!   that MM2 wrote to B's `__consumer_offsets` (`sync.group.offsets.enabled`) equal, per
//!   partition, what the group committed on A (the records are replicated one to one, so the
//!   translated offset of the end is the end).
//!
//! This runs twice: records and a commit before MM2 starts (it catches up), then more records
//! and a second commit while it runs, with the leader of partition 0 on A SIGKILLed after the
//! records were produced (the group reads and commits, and MM2 syncs offsets, while it is
//! down; it restarts at the end).
//!
//! A failure prints MM2's log tail, the Java step's output and both clusters' node logs, and
//! keeps the temp dirs.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, read_lossy};
use common::tail;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use refstack::{JavaStack, QUICK_JVM};

const SOURCE_NODES: usize = 3;
const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;
const GROUP: &str = "mirror-check-group";
/// Records produced (and consumed by the group) before MM2 starts, and while it runs.
const FIRST_RECORDS: u64 = 600;
const SECOND_RECORDS: u64 = 400;
/// How long one Java step may take.
const JAVA_STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long MM2 may take to mirror records or translate offsets (it starts in this time too).
const MIRROR_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn mirror_maker_2_replicates_records_and_group_offsets() {
    let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let source = Cluster::start(SOURCE_NODES);
    let target = Cluster::start(1);
    let mut run = Run {
        stack,
        source,
        target,
        mm2: None,
        mm2_log: PathBuf::new(),
    };
    create_topic(&run.source);
    let remote_topic = format!("A.{TOPIC}");

    // 1. Records and a commit before MM2 runs.
    run.produce(0, FIRST_RECORDS);
    let committed = run.consume(FIRST_RECORDS);
    run.start_mm2();
    run.wait_mirrored(&remote_topic, FIRST_RECORDS, &committed);
    run.wait_translated(&remote_topic, &committed);
    eprintln!(
        "{FIRST_RECORDS} records and the group's offsets {committed:?} mirrored, {:?} in",
        started.elapsed()
    );

    // 2. More records; the leader of partition 0 on A is SIGKILLed; the group reads and
    // commits while it is down, MM2 mirrors from the new leaders; the node comes back.
    run.produce(FIRST_RECORDS, SECOND_RECORDS);
    let leader = run.source.leader_of(TOPIC, 0, JAVA_STEP_TIMEOUT);
    eprintln!("SIGKILL node {leader} of A, leader of {TOPIC}-0");
    run.source.kill(leader);
    let committed = run.consume(SECOND_RECORDS);
    let total = FIRST_RECORDS + SECOND_RECORDS;
    run.wait_mirrored(&remote_topic, total, &committed);
    run.wait_translated(&remote_topic, &committed);
    run.source.restart(leader);
    eprintln!(
        "{total} records and the group's offsets {committed:?} mirrored; {:?} in all",
        started.elapsed()
    );
    run.finish();
}

struct Run {
    stack: JavaStack,
    source: Cluster,
    target: Cluster,
    mm2: Option<Child>,
    mm2_log: PathBuf,
}

impl Run {
    fn produce(&self, first: u64, count: u64) {
        let out = self.java_step(&[
            "produce",
            &self.source.bootstrap(),
            TOPIC,
            &first.to_string(),
            &count.to_string(),
        ]);
        if !out.contains(&format!("PRODUCED {count}")) {
            self.fail(&format!("produce: {out}"));
        }
    }

    /// The group reads `count` records on the source and commits; partition -> committed offset.
    fn consume(&self, count: u64) -> BTreeMap<i32, i64> {
        let out = self.java_step(&[
            "consume",
            &self.source.bootstrap(),
            TOPIC,
            GROUP,
            &count.to_string(),
        ]);
        let committed = parse_offsets(&out, "COMMITTED", None);
        if committed.len() != PARTITIONS as usize {
            self.fail(&format!("consume committed {committed:?}: {out}"));
        }
        committed
    }

    fn start_mm2(&mut self) {
        let dir = self.source.dir().to_path_buf();
        let props = dir.join("mm2.properties");
        std::fs::write(
            &props,
            mm2_properties(&self.source.bootstrap(), &self.target.bootstrap()),
        )
        .expect("write mm2.properties");
        let log4j = dir.join("mm2-log4j2.properties");
        std::fs::write(&log4j, common::CONNECT_LOG4J2).expect("write the log4j2 config");
        self.mm2_log = dir.join("mm2.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.mm2_log)
            .expect("mm2 log");
        let err = log.try_clone().expect("mm2 log");
        let child = self
            .stack
            .jvm()
            .args(["-Xms128m", "-Xmx512m", "-Djava.awt.headless=true"])
            .args(QUICK_JVM)
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("org.apache.kafka.connect.mirror.MirrorMaker")
            .arg(&props)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting MirrorMaker: {e}"));
        self.mm2 = Some(child);
    }

    /// Waits until B's remote topic holds `total` records, each number once with its value,
    /// and each partition ends where A's does (`committed`: the group read A to its end).
    fn wait_mirrored(&mut self, remote_topic: &str, total: u64, committed: &BTreeMap<i32, i64>) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < MIRROR_TIMEOUT {
            self.check_mm2_alive();
            if self.topic_exists_on_target(remote_topic) {
                let out = self.java_step(&["read", &self.target.bootstrap(), remote_topic]);
                let ends = parse_partition_ends(&out);
                let want = format!("RECORDS {total} {total} 0 {} 0", total - 1);
                if out.lines().any(|l| l == want) && &ends == committed {
                    eprintln!(
                        "B's {remote_topic}: {total} records, ends {ends:?}, after {:?}",
                        started.elapsed()
                    );
                    return;
                }
                // More than `total`, or a number twice, never heals: fail at once.
                if let Some(records) = out.lines().find(|l| l.starts_with("RECORDS ")) {
                    let n: Vec<u64> = records
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|w| w.parse().ok())
                        .collect();
                    if n.len() == 5 && (n[0] > total || n[0] != n[1] || n[4] != 0) {
                        self.fail(&format!("B's {remote_topic} is wrong: {out}"));
                    }
                }
                last = out;
            }
            thread::sleep(Duration::from_millis(500));
        }
        self.fail(&format!(
            "B's {remote_topic}: not {total} records ending at {committed:?} within \
             {MIRROR_TIMEOUT:?}; last read:\n{last}"
        ));
    }

    /// Waits until MM2's checkpoints and the group's offsets on B equal `committed` (on A).
    fn wait_translated(&mut self, remote_topic: &str, committed: &BTreeMap<i32, i64>) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < MIRROR_TIMEOUT {
            self.check_mm2_alive();
            let checkpoints = self.java_step(&["translate", &self.target.bootstrap(), "A", GROUP]);
            let offsets = self.java_step(&["offsets", &self.target.bootstrap(), GROUP]);
            let translated = parse_offsets(&checkpoints, "CHECKPOINT", Some(remote_topic));
            let synced = parse_offsets(&offsets, "OFFSET", Some(remote_topic));
            if &translated == committed && &synced == committed {
                eprintln!(
                    "group {GROUP} on B: checkpoints and committed offsets {synced:?} after {:?}",
                    started.elapsed()
                );
                return;
            }
            // A translated offset beyond what the group committed is wrong, not late.
            for (name, got) in [("checkpoint", &translated), ("synced offset", &synced)] {
                for (p, o) in got {
                    if committed.get(p).is_some_and(|c| o > c) {
                        self.fail(&format!(
                            "{name} {remote_topic}-{p} at {o}, beyond A's commit {committed:?}"
                        ));
                    }
                }
            }
            last = format!("{checkpoints}{offsets}");
            thread::sleep(Duration::from_millis(500));
        }
        self.fail(&format!(
            "group {GROUP} on B: not {committed:?} within {MIRROR_TIMEOUT:?}; last:\n{last}"
        ));
    }

    fn topic_exists_on_target(&self, topic: &str) -> bool {
        self.target
            .try_metadata(0, Some(&[topic]))
            .is_ok_and(|md| md.topics.first().is_some_and(|t| t.error_code == 0))
    }

    fn check_mm2_alive(&mut self) {
        if let Some(Ok(Some(status))) = self.mm2.as_mut().map(|c| c.try_wait()) {
            self.fail(&format!("MirrorMaker exited: {status}"));
        }
    }

    /// One MirrorCheck step; its stdout. Fails on a non-zero exit or `JAVA_STEP_TIMEOUT`.
    fn java_step(&self, args: &[&str]) -> String {
        let mut child = self
            .stack
            .java("io.sluice.reftest.MirrorCheck")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting java: {e}"));
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + JAVA_STEP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                _ => thread::sleep(Duration::from_millis(50)),
            }
        };
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        match status {
            Some(s) if s.success() => out,
            _ => self.fail(&format!(
                "MirrorCheck {args:?}: {}\n--- stdout ---\n{out}\n--- stderr ---\n{}",
                status.map_or("timed out".to_string(), |s| s.to_string()),
                tail(&err, 8_000)
            )),
        }
    }

    fn finish(&mut self) {
        if let Some(mut child) = self.mm2.take() {
            // kill(1) as the cluster harness does: our child, not reaped yet.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.fail("MirrorMaker did not exit within 60 s of SIGTERM");
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn fail(&self, why: &str) -> ! {
        // The clusters' Drop prints the nodes' logs and keeps their temp dirs.
        panic!(
            "{why}\n--- MirrorMaker log ({}) ---\n{}",
            self.mm2_log.display(),
            tail(&read_lossy(&self.mm2_log), 12_000)
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.mm2.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mm2_properties(source: &str, target: &str) -> String {
    let settings: &[(&str, &str)] = &[
        ("clusters", "A, B"),
        ("A.bootstrap.servers", source),
        ("B.bootstrap.servers", target),
        ("A->B.enabled", "true"),
        ("A->B.topics", TOPIC),
        ("B->A.enabled", "false"),
        // B has one node: every topic MM2 creates there has one replica; the offset syncs
        // live on A (three nodes).
        ("replication.factor", "1"),
        ("checkpoints.topic.replication.factor", "1"),
        ("heartbeats.topic.replication.factor", "1"),
        ("offset-syncs.topic.replication.factor", "3"),
        ("offset.storage.replication.factor", "1"),
        ("status.storage.replication.factor", "1"),
        ("config.storage.replication.factor", "1"),
        // Sluice has no ACLs yet (docs/status.md).
        ("sync.topic.acls.enabled", "false"),
        ("sync.group.offsets.enabled", "true"),
        ("sync.group.offsets.interval.seconds", "1"),
        ("emit.checkpoints.interval.seconds", "1"),
        ("emit.heartbeats.interval.seconds", "1"),
        ("refresh.topics.interval.seconds", "2"),
        ("refresh.groups.interval.seconds", "2"),
        // An offset sync for every record, so the end of each partition translates exactly.
        ("offset.lag.max", "0"),
        ("offset.flush.interval.ms", "1000"),
    ];
    settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
}

/// `KEY [TOPIC] PARTITION OFFSET` lines -> partition -> offset; with `topic`, only its lines
/// (the line has the topic), without, lines `KEY PARTITION OFFSET`.
fn parse_offsets(out: &str, key: &str, topic: Option<&str>) -> BTreeMap<i32, i64> {
    let mut offsets = BTreeMap::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let rest = match (words.first(), topic) {
            (Some(&k), None) if k == key && words.len() == 3 => &words[1..],
            (Some(&k), Some(t)) if k == key && words.len() == 4 && words[1] == t => &words[2..],
            _ => continue,
        };
        if let (Ok(p), Ok(o)) = (rest[0].parse(), rest[1].parse()) {
            offsets.insert(p, o);
        }
    }
    offsets
}

/// `PARTITION P END E READ N` lines -> P -> E, only where N == E (read from offset 0 to the end).
fn parse_partition_ends(out: &str) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() == 6
            && w[0] == "PARTITION"
            && w[2] == "END"
            && w[4] == "READ"
            && w[3] == w[5]
            && let (Ok(p), Ok(e)) = (w[1].parse(), w[3].parse())
        {
            ends.insert(p, e);
        }
    }
    ends
}

fn create_topic(cluster: &Cluster) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(SOURCE_NODES as i16),
        ])
        .with_timeout_ms(30_000);
    cluster.wait_until("every node lists every broker", JAVA_STEP_TIMEOUT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, None)?;
            if md.brokers.len() != c.len() || md.controller_id.0 < 0 {
                return Err(format!("node {node}: {} brokers", md.brokers.len()));
            }
        }
        Ok(())
    });
    cluster.create_topic(&req, JAVA_STEP_TIMEOUT);
    cluster.wait_until(&format!("{TOPIC}: the full ISR"), JAVA_STEP_TIMEOUT, |c| {
        let md = c.try_metadata(0, Some(&[TOPIC]))?;
        let t = md.topics.first().ok_or("no topic")?;
        let full = t.partitions.len() == PARTITIONS as usize
            && t.partitions.iter().all(|p| p.isr_nodes.len() == c.len());
        if t.error_code == 0 && full {
            Ok(())
        } else {
            Err(format!(
                "error {} partitions {:?}",
                t.error_code, t.partitions
            ))
        }
    });
}
