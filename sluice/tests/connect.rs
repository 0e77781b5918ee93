//! Kafka Connect (Apache Kafka 4.3.1's connect-runtime, distributed mode) on a 3-node Sluice
//! cluster (issue 16).
//!
//! Two workers run `org.apache.kafka.connect.cli.ConnectDistributed` with a worker properties
//! file written into the cluster's temp dir, as `bin/connect-distributed.sh` does; the
//! FileStream connectors (connect-file) are found on the classpath (tests/java/target/lib).
//! The workers create their config, offset and status topics themselves (compacted, RF 3; the
//! test reads both back from the brokers). Through the REST API (plain HTTP/1.1 over
//! `TcpStream`, below) the test submits a FileStreamSource connector (source file -> topic) and a
//! FileStreamSink connector (topic -> sink file), then appends numbered lines to the source file
//! and requires the sink file to hold exactly the lines appended so far, each once and in order:
//!
//! 1. lines flow;
//! 2. the worker running the source task is SIGKILLed; more lines are appended while the other
//!    worker takes its work over;
//! 3. the leader of the lines topic is SIGKILLed; more lines; it restarts; more lines;
//! 4. both workers stop (SIGTERM) and all three brokers stop; everything starts again; the
//!    connectors' configs, offsets (REST `GET /connectors/{name}/offsets`) and status (RUNNING)
//!    are those from before, and lines appended after the restart are the only new lines in the
//!    sink file (nothing delivered again).
//!
//! Connect's file connectors deliver at least once: a worker killed between writing lines and
//! committing their offsets (every `offset.flush.interval.ms`) gives those lines again after the
//! failover, in Kafka as on Sluice. The test therefore kills the worker at a point where the
//! REST API shows every offset committed (both connectors' offsets at the end), then goes on
//! appending; the broker kill needs no such point (the idempotent producer and the group keep
//! the stream exact).
//!
//! The second test runs the same pipeline with exactly-once source support (KIP-618:
//! `exactly.once.source.support=enabled` on the workers, `exactly.once.support=required` on the
//! source connector): the source task writes its lines and its offsets in one transaction, so
//! there the worker running it is SIGKILLed in the middle of a stream of appends, at a moment
//! when one of its transactions is open (the leader's last stable offset below its high
//! watermark); the restarted task's fencing aborts it. The sink runs in a one-worker Connect
//! cluster of its own (reading read_committed), so the kill cannot touch it: a sink delivers at
//! least once. The test prints how many transactions the topic holds, committed and aborted.
//!
//! A failure prints the tail of every worker's log and of every node's log and keeps the
//! cluster's temp dir (the worker logs are in it too).

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, free_ports, read_lossy};
use common::tail;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, DescribeConfigsRequest, DescribeConfigsResponse,
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use refstack::{JavaStack, QUICK_JVM};
use serde_json::{Value, json};

const NODES: usize = 3;
/// The topic between the two connectors: one partition, so the sink sees the source's order.
const TOPIC: &str = "connect-lines";
/// The workers' own topics (created by the workers, compacted, RF 3).
const CONFIG_TOPIC: &str = "connect-configs";
const OFFSET_TOPIC: &str = "connect-offsets";
const STATUS_TOPIC: &str = "connect-status";
/// The Connect cluster under test; with exactly-once, the sink's own one-worker cluster.
const MAIN_GROUP: &str = "sluice-connect";
const SINK_GROUP: &str = "sluice-connect-sink";
const SOURCE: &str = "file-source";
const SINK: &str = "file-sink";
/// Lines appended per step.
const LINES_PER_STEP: usize = 200;
/// The exactly-once test's stream: rounds of a few lines, a pause between rounds, and the
/// round after which the source's worker is killed. (Not FileStreamSource's `batch.size`: a
/// poll that fills it leaves the rest of what it read in its buffer until the file grows
/// again, so the file's last lines would wait for the next append.)
const EOS_ROUNDS: usize = 80;
const EOS_LINES_PER_ROUND: usize = 10;
const EOS_KILL_ROUND: usize = 25;
const EOS_ROUND_PAUSE: Duration = Duration::from_millis(25);
/// How long a worker may take to answer REST after start (a JVM on a loaded 2-core machine).
const WORKER_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a step (lines through, a failover, a rebalance) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a worker may take to exit after SIGTERM.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one REST request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The worker settings that make failover take seconds, not Connect's minutes
/// (`scheduled.rebalance.max.delay.ms` is 5 minutes by default).
const FAST_WORKER_SETTINGS: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    ("rebalance.timeout.ms", "30000"),
    ("scheduled.rebalance.max.delay.ms", "3000"),
    ("offset.flush.interval.ms", "500"),
    ("task.shutdown.graceful.timeout.ms", "5000"),
];
/// The two tests each start three brokers and two JVMs: one at a time on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn connect_file_pipeline_survives_kills_and_full_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(false);
    run.submit_connectors(false);

    run.append_and_wait("lines through both connectors");

    // 2. Kill the worker running the source task, at a point where every offset is committed.
    run.wait_offsets_committed();
    let victim = run.worker_running(SOURCE);
    eprintln!("SIGKILL worker {victim} (runs the source task)");
    run.workers[victim].kill();
    run.append_and_wait("lines after a worker was killed");
    run.wait_running_on(1 - victim);
    run.append_and_wait("lines with the tasks on the surviving worker");

    // 3. Kill the leader of the lines topic, append while it is down, restart it.
    run.broker_kill_and_restart();

    // The killed worker comes back before the full stop, so both stop cleanly.
    run.workers[victim].start(&run.stack);
    run.wait_worker_ready(victim);

    // 4. Stop everything, start everything, check what survived.
    run.full_restart_and_check();
    run.finish();
}

#[test]
fn connect_exactly_once_source_survives_worker_kill() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(true);
    run.submit_connectors(true);
    run.append_and_wait("lines through the exactly-once source");

    // Kill the source task's worker while lines are being appended, not at a committed point:
    // the transactional source must neither lose nor repeat a line. (The sink runs in its own
    // one-worker Connect cluster: a sink delivers at least once.)
    let victim = run.worker_running(SOURCE);
    let before = run.lines.len();
    // A stream of small appends (the task polls each into a transaction of its own), the kill
    // in its middle; the appends go on while the other worker takes the task over.
    for round in 0..EOS_ROUNDS {
        run.append_lines(EOS_LINES_PER_ROUND);
        if round == EOS_KILL_ROUND {
            let at_kill = run.wait_sink_grows(before);
            // Kill while the source's transaction is open: the leader's last stable offset
            // below its high watermark.
            let (lso, hw) = run.wait_open_transaction();
            run.workers[victim].kill();
            eprintln!(
                "SIGKILL worker {victim} (runs the exactly-once source task) with a transaction \
                 open (last stable offset {lso}, high watermark {hw}), {at_kill} of {} lines \
                 in the sink",
                run.lines.len()
            );
        }
        // Pacing, not synchronisation: appends spread over time make many transactions.
        thread::sleep(EOS_ROUND_PAUSE);
    }
    run.wait_sink("lines after the exactly-once source's worker was killed");
    run.wait_running_on(1 - victim);
    run.append_and_wait("lines with the exactly-once source on the surviving worker");
    eprintln!("{}", transactions_in_lines_topic(&run.cluster));
    run.finish();
}

/// One test's cluster, workers, files and expectations.
struct Run {
    stack: JavaStack,
    cluster: Cluster,
    /// Workers 0 and 1 form the Connect cluster under test; with exactly-once, worker 2 is a
    /// Connect cluster of its own that runs only the sink.
    workers: Vec<Worker>,
    sink_worker: Option<usize>,
    source_file: PathBuf,
    sink_file: PathBuf,
    /// Every line appended to the source file so far, in order.
    lines: Vec<String>,
    started: Instant,
}

impl Run {
    fn start(exactly_once: bool) -> Run {
        let stack = JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
        let started = Instant::now();
        let cluster = Cluster::start(NODES);
        cluster.wait_for_brokers(STEP_TIMEOUT);
        create_lines_topic(&cluster);
        let dir = cluster.dir().to_path_buf();
        let source_file = dir.join("source.txt");
        let sink_file = dir.join("sink.txt");
        File::create(&source_file).expect("create the source file");
        let log4j = dir.join("connect-log4j2.properties");
        std::fs::write(&log4j, common::CONNECT_LOG4J2).expect("write the log4j2 config");
        let count = if exactly_once { 3 } else { 2 };
        let ports = free_ports(count);
        let mut workers: Vec<Worker> = (0..count)
            .map(|i| {
                let props = if i < 2 {
                    worker_properties(&cluster.bootstrap(), ports[i], MAIN_GROUP, exactly_once)
                } else {
                    worker_properties(&cluster.bootstrap(), ports[i], SINK_GROUP, false)
                };
                Worker::new(i, ports[i], &dir, &log4j, &props)
            })
            .collect();
        for w in &mut workers {
            w.start(&stack);
        }
        let mut run = Run {
            stack,
            cluster,
            workers,
            sink_worker: exactly_once.then_some(2),
            source_file,
            sink_file,
            lines: Vec::new(),
            started,
        };
        for i in 0..run.workers.len() {
            run.wait_worker_ready(i);
        }
        run.check_internal_topics();
        eprintln!("cluster and workers up in {:?}", run.started.elapsed());
        run
    }

    fn submit_connectors(&mut self, exactly_once: bool) {
        let mut source = json!({
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "tasks.max": "1",
            "file": self.source_file.to_str().expect("utf-8 path"),
            "topic": TOPIC,
        });
        if exactly_once {
            source["exactly.once.support"] = json!("required");
            // One transaction per poll (the lines appended since the last one).
            source["transaction.boundary"] = json!("poll");
        }
        let sink = json!({
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "tasks.max": "1",
            "file": self.sink_file.to_str().expect("utf-8 path"),
            "topics": TOPIC,
        });
        for (name, config) in [(SOURCE, &source), (SINK, &sink)] {
            let path = format!("/connectors/{name}/config");
            self.rest_until(&format!("PUT {path}"), |run| {
                let (code, body) = run.http_any(name, "PUT", &path, Some(config))?;
                match code {
                    200 | 201 => Ok(()),
                    _ => Err(format!("{code} {body}")),
                }
            });
        }
        for name in [SOURCE, SINK] {
            self.wait_status_running(name);
        }
    }

    /// Appends `n` numbered lines to the source file.
    fn append_lines(&mut self, n: usize) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.source_file)
            .expect("open the source file");
        let mut text = String::new();
        for _ in 0..n {
            let line = format!("line {:06} of the sluice connect test", self.lines.len());
            text.push_str(&line);
            text.push('\n');
            self.lines.push(line);
        }
        f.write_all(text.as_bytes())
            .expect("append to the source file");
        f.sync_all().expect("sync the source file");
    }

    fn append_and_wait(&mut self, what: &str) {
        self.append_lines(LINES_PER_STEP);
        self.wait_sink(what);
    }

    /// Waits until the sink file holds exactly the lines appended so far; fails at once when it
    /// holds anything else than a prefix of them (a line twice, out of order, or foreign).
    fn wait_sink(&mut self, what: &str) {
        let started = Instant::now();
        let deadline = started + STEP_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.sink_file).unwrap_or_default();
            // Only complete lines: the sink writes a line and its newline separately.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let got: Vec<&str> = complete.lines().collect();
            if let Some(bad) = got.iter().zip(&self.lines).position(|(g, want)| g != want) {
                self.fail(&format!(
                    "{what}: sink line {bad} is {:?}, the source's is {:?} ({} sink lines, {} source lines)",
                    got[bad],
                    self.lines[bad],
                    got.len(),
                    self.lines.len()
                ));
            }
            if got.len() > self.lines.len() {
                self.fail(&format!(
                    "{what}: the sink has {} lines, the source {}: extra {:?}",
                    got.len(),
                    self.lines.len(),
                    &got[self.lines.len()..(self.lines.len() + 3).min(got.len())]
                ));
            }
            if got.len() == self.lines.len() {
                eprintln!(
                    "{what}: {} lines in the sink after {:?}",
                    got.len(),
                    started.elapsed()
                );
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{what}: the sink has {} of {} lines after {STEP_TIMEOUT:?}; {}",
                    got.len(),
                    self.lines.len(),
                    lines_topic_ends(&self.cluster)
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Appends a few lines every `EOS_ROUND_PAUSE` and polls the leader of the lines topic
    /// (ListOffsets latest, read_committed and read_uncommitted, on one connection) until a
    /// transaction is open on it; returns (last stable offset, high watermark).
    fn wait_open_transaction(&mut self) -> (i64, i64) {
        let leader = self.cluster.leader_of(TOPIC, 0, STEP_TIMEOUT);
        let mut client = self.cluster.connect(leader);
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut appended = Instant::now();
        loop {
            let ends: Vec<i64> = [1i8, 0]
                .into_iter()
                .map(|isolation| {
                    let r: ListOffsetsResponse =
                        client.call(ApiKey::ListOffsets, 7, &list_offsets_latest(isolation));
                    r.topics[0].partitions[0].offset
                })
                .collect();
            if ends[0] < ends[1] {
                return (ends[0], ends[1]);
            }
            if Instant::now() > deadline {
                self.fail("no open transaction on the lines topic seen");
            }
            if appended.elapsed() >= EOS_ROUND_PAUSE {
                self.append_lines(EOS_LINES_PER_ROUND);
                appended = Instant::now();
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (polling every few ms) until the sink holds more than `before` lines; returns how
    /// many complete lines it held then.
    fn wait_sink_grows(&mut self, before: usize) -> usize {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.sink_file).unwrap_or_default();
            let complete = text.bytes().filter(|&b| b == b'\n').count();
            if complete > before {
                return complete;
            }
            if Instant::now() > deadline {
                self.fail(&format!("the sink stayed at {complete} lines"));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until both connectors' committed offsets (REST) are at the end: the source's byte
    /// position at the file's length, the sink's topic offset at the line count.
    fn wait_offsets_committed(&mut self) {
        let file_len = std::fs::metadata(&self.source_file)
            .expect("source file")
            .len();
        let lines = self.lines.len() as u64;
        self.rest_until("every offset committed", |run| {
            let (source, sink) = run.offsets()?;
            if source == Some(file_len) && sink == Some(lines) {
                Ok(())
            } else {
                Err(format!(
                    "source position {source:?} (file {file_len}), sink offset {sink:?} (lines {lines})"
                ))
            }
        });
    }

    /// (source position, sink offset) from `GET /connectors/{name}/offsets`.
    fn offsets(&self) -> Result<(Option<u64>, Option<u64>), String> {
        let source = self.http_json(
            SOURCE,
            "GET",
            &format!("/connectors/{SOURCE}/offsets"),
            None,
        )?;
        let sink = self.http_json(SINK, "GET", &format!("/connectors/{SINK}/offsets"), None)?;
        let first = |v: &Value, key: &str| v["offsets"][0]["offset"][key].as_u64();
        Ok((first(&source, "position"), first(&sink, "kafka_offset")))
    }

    /// The index of the worker whose REST address the connector's task 0 reports.
    fn worker_running(&mut self, connector: &str) -> usize {
        self.wait_status_running(connector);
        let status = self
            .http_json(
                connector,
                "GET",
                &format!("/connectors/{connector}/status"),
                None,
            )
            .unwrap_or_else(|e| self.fail(&e));
        let id = status["tasks"][0]["worker_id"].as_str().unwrap_or_default();
        self.workers
            .iter()
            .position(|w| w.rest_id() == id)
            .unwrap_or_else(|| self.fail(&format!("{connector}: task on unknown worker {id:?}")))
    }

    /// Waits until both connectors and their tasks run on worker `survivor`.
    fn wait_running_on(&mut self, survivor: usize) {
        let id = self.workers[survivor].rest_id();
        let started = Instant::now();
        let moved: &[&str] = if self.sink_worker.is_some() {
            &[SOURCE]
        } else {
            &[SOURCE, SINK]
        };
        self.rest_until(&format!("every task on worker {survivor}"), |run| {
            for &name in moved {
                let s = run.http_json(name, "GET", &format!("/connectors/{name}/status"), None)?;
                let task = &s["tasks"][0];
                if s["connector"]["state"] != "RUNNING"
                    || task["state"] != "RUNNING"
                    || task["worker_id"] != id.as_str()
                {
                    return Err(format!("{name}: {s}"));
                }
            }
            Ok(())
        });
        eprintln!(
            "{moved:?} running on worker {survivor} {:?} after the wait began",
            started.elapsed()
        );
    }

    fn broker_kill_and_restart(&mut self) {
        let leader = self.cluster.leader_of(TOPIC, 0, STEP_TIMEOUT);
        eprintln!("SIGKILL node {leader}, leader of {TOPIC}-0");
        self.cluster.kill(leader);
        self.append_and_wait("lines while the old leader is down");
        self.cluster.restart(leader);
        wait_fully_replicated(&self.cluster, TOPIC);
        self.append_and_wait("lines after the old leader came back");
    }

    /// Stops both workers and all brokers, starts everything again, and checks that the
    /// connectors' configs, offsets and status survived and that nothing is delivered twice.
    fn full_restart_and_check(&mut self) {
        let configs_before: Vec<Value> = [SOURCE, SINK]
            .iter()
            .map(|name| {
                self.http_json(name, "GET", &format!("/connectors/{name}/config"), None)
                    .unwrap_or_else(|e| self.fail(&e))
            })
            .collect();
        self.wait_offsets_committed();
        let offsets_before = self.offsets().unwrap_or_else(|e| self.fail(&e));
        for i in 0..self.workers.len() {
            self.workers[i].stop().unwrap_or_else(|e| self.fail(&e));
        }
        let nodes = self.cluster.node_ids();
        self.cluster.stop_many(&nodes);
        eprintln!("workers and brokers stopped; starting everything again");
        self.cluster.restart_many(&nodes);
        self.cluster.wait_for_brokers(STEP_TIMEOUT);
        for i in 0..self.workers.len() {
            self.workers[i].start(&self.stack);
        }
        for i in 0..self.workers.len() {
            self.wait_worker_ready(i);
        }
        for (name, before) in [SOURCE, SINK].iter().zip(&configs_before) {
            let after = self
                .http_json(name, "GET", &format!("/connectors/{name}/config"), None)
                .unwrap_or_else(|e| self.fail(&e));
            if &after != before {
                self.fail(&format!("{name}: config {before} before, {after} after"));
            }
        }
        let offsets_after = self.offsets().unwrap_or_else(|e| self.fail(&e));
        if offsets_after != offsets_before {
            self.fail(&format!(
                "offsets (source position, sink offset) {offsets_before:?} before the restart, \
                 {offsets_after:?} after"
            ));
        }
        for name in [SOURCE, SINK] {
            self.wait_status_running(name);
        }
        eprintln!("after the full restart: configs, offsets {offsets_after:?} and status kept");
        // Only these lines may be new in the sink.
        self.append_and_wait("lines after the full restart");
    }

    fn check_internal_topics(&mut self) {
        for topic in [CONFIG_TOPIC, OFFSET_TOPIC, STATUS_TOPIC] {
            let md = self
                .cluster
                .try_metadata(0, Some(&[topic]))
                .unwrap_or_else(|e| self.fail(&e));
            let t = &md.topics[0];
            let rf: Vec<usize> = t.partitions.iter().map(|p| p.replica_nodes.len()).collect();
            if t.error_code != 0 || rf.is_empty() || rf.iter().any(|&r| r != NODES) {
                self.fail(&format!(
                    "{topic}: error {} replicas per partition {rf:?}",
                    t.error_code
                ));
            }
            let policy = cleanup_policy(&self.cluster, topic).unwrap_or_else(|e| self.fail(&e));
            if policy != "compact" {
                self.fail(&format!("{topic}: cleanup.policy={policy}"));
            }
            eprintln!(
                "{topic}: {} partitions, RF {NODES}, cleanup.policy={policy}",
                rf.len()
            );
        }
    }

    fn wait_worker_ready(&mut self, i: usize) {
        let deadline = Instant::now() + WORKER_READY_TIMEOUT;
        loop {
            if let Some(status) = self.workers[i].exited() {
                self.fail(&format!("worker {i} exited: {status}"));
            }
            // The herder answers /connectors once it joined the group and read the config topic.
            match self.workers[i].http("GET", "/connectors", None) {
                Ok((200, _)) => return,
                Ok(_) | Err(_) if Instant::now() > deadline => self.fail(&format!(
                    "worker {i}: REST not ready in {WORKER_READY_TIMEOUT:?}"
                )),
                _ => thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    fn wait_status_running(&mut self, name: &str) {
        let path = format!("/connectors/{name}/status");
        self.rest_until(&format!("{name} RUNNING"), |run| {
            let s = run.http_json(name, "GET", &path, None)?;
            let tasks = s["tasks"].as_array().map(Vec::len).unwrap_or(0);
            if s["connector"]["state"] == "RUNNING"
                && tasks == 1
                && s["tasks"][0]["state"] == "RUNNING"
            {
                Ok(())
            } else {
                Err(s.to_string())
            }
        });
    }

    /// Polls `check` (REST calls to any live worker) until Ok or `STEP_TIMEOUT`.
    fn rest_until(&mut self, what: &str, mut check: impl FnMut(&Run) -> Result<(), String>) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut last;
        loop {
            match check(self) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{what}: not within {STEP_TIMEOUT:?}; last: {last}"
                ));
            }
            if let Err(dead) = self.cluster.check_alive() {
                self.fail(&dead);
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// A REST call about `connector` to the first running worker of its Connect cluster that
    /// answers; any status.
    fn http_any(
        &self,
        connector: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        let mut last = String::from("no worker running");
        let serves = |i: usize| match self.sink_worker {
            None => true,
            Some(sink) => (i == sink) == (connector == SINK),
        };
        let live = self.workers.iter().filter(|w| w.child.is_some());
        for w in live.filter(|w| serves(w.index)) {
            match w.http(method, path, body) {
                Ok(answer) => return Ok(answer),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A REST call about `connector` that must answer 2xx with JSON.
    fn http_json(
        &self,
        connector: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let (code, text) = self.http_any(connector, method, path, body)?;
        if !(200..300).contains(&code) {
            return Err(format!("{method} {path}: {code} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}: {text}"))
    }

    fn finish(&mut self) {
        eprintln!(
            "{} lines, each once and in order; {:?} in all",
            self.lines.len(),
            self.started.elapsed()
        );
        for i in 0..self.workers.len() {
            self.workers[i].stop().unwrap_or_else(|e| self.fail(&e));
        }
        let nodes = self.cluster.node_ids();
        self.cluster.stop_many(&nodes);
    }

    fn fail(&self, why: &str) -> ! {
        let mut logs = String::new();
        for w in &self.workers {
            logs.push_str(&format!(
                "--- worker {} log ({}) ---\n{}\n",
                w.index,
                w.log.display(),
                tail(&read_lossy(&w.log), 10_000)
            ));
        }
        // The cluster's Drop prints the nodes' logs and keeps its temp dir.
        panic!("{why}\n{logs}");
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.kill_if_running();
        }
    }
}

/// One Connect worker process.
struct Worker {
    index: usize,
    port: u16,
    props: PathBuf,
    log4j: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Worker {
    fn new(index: usize, port: u16, dir: &Path, log4j: &Path, properties: &str) -> Worker {
        let props = dir.join(format!("worker-{index}.properties"));
        std::fs::write(&props, properties).expect("write the worker properties");
        Worker {
            index,
            port,
            props,
            log4j: log4j.to_path_buf(),
            log: dir.join(format!("worker-{index}.log")),
            child: None,
        }
    }

    /// Starts the worker as `bin/connect-distributed.sh worker.properties` does.
    fn start(&mut self, stack: &JavaStack) {
        assert!(self.child.is_none(), "worker {} already runs", self.index);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("worker log");
        writeln!(log, "=== worker {} started by the test ===", self.index).expect("log");
        let err = log.try_clone().expect("worker log");
        let child = stack
            .jvm()
            .args(["-Xms128m", "-Xmx512m", "-Djava.awt.headless=true"])
            .args(QUICK_JVM)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.log4j.display()
            ))
            .arg("org.apache.kafka.connect.cli.ConnectDistributed")
            .arg(&self.props)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting worker {}: {e}", self.index));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("kill: worker not running");
        let _ = child.kill();
        let _ = child.wait();
        self.mark("killed (SIGKILL) by the test");
    }

    fn kill_if_running(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (Connect's shutdown hook stops the herder and commits offsets); SIGKILL if it
    /// has not exited within `WORKER_STOP_TIMEOUT` (see below).
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // kill(1), as the cluster harness does: our child, not reaped yet, so its own pid.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if !matches!(sent, Ok(s) if s.success()) {
            return Err(format!("SIGTERM to worker {}: {sent:?}", self.index));
        }
        let deadline = Instant::now() + WORKER_STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    // Seen once in CI (2026-12-07): the worker logged "Stopped http..." and
                    // then hung before "Herder stopping", with Jetty's own shutdown hook
                    // failing beside Connect's ("Unable to destroy: STARTED"): a Connect /
                    // Jetty shutdown race before any broker request. Every caller waits for
                    // the offsets to be committed before it stops a worker, so a SIGKILL here
                    // loses nothing the checks look at.
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "worker {} did not exit within {WORKER_STOP_TIMEOUT:?} of SIGTERM: killed",
                        self.index
                    );
                    return Ok(());
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
        self.mark("stopped (SIGTERM) by the test");
        Ok(())
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            None => Some("not started".into()),
            _ => None,
        }
    }

    /// The worker id Connect reports: the advertised REST host and port.
    fn rest_id(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn mark(&self, what: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "=== worker {} {what} ===", self.index);
        }
    }

    fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        http(self.port, method, path, body)
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(|e| format!("{e}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Accept: application/json\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no header end in {raw:?}"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest).ok_or_else(|| format!("{method} {path}: bad chunks {rest:?}"))?
    } else {
        rest.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// The worker properties of a Connect cluster `group` (its topics are named after it).
fn worker_properties(bootstrap: &str, port: u16, group: &str, exactly_once: bool) -> String {
    let topic = |kind: &str| {
        if group == MAIN_GROUP {
            format!("connect-{kind}")
        } else {
            format!("{group}-{kind}")
        }
    };
    let mut props = vec![
        ("bootstrap.servers", bootstrap.to_string()),
        ("group.id", group.to_string()),
        (
            "key.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
        ("config.storage.topic", topic("configs")),
        ("offset.storage.topic", topic("offsets")),
        ("status.storage.topic", topic("status")),
        ("config.storage.replication.factor", NODES.to_string()),
        ("offset.storage.replication.factor", NODES.to_string()),
        ("status.storage.replication.factor", NODES.to_string()),
        ("offset.storage.partitions", "5".into()),
        ("status.storage.partitions", "3".into()),
        ("listeners", format!("http://127.0.0.1:{port}")),
        ("rest.advertised.host.name", "127.0.0.1".into()),
        ("rest.advertised.port", port.to_string()),
        // The connectors are on the classpath; their ServiceLoader manifests name them, so
        // the worker need not scan every jar by reflection.
        ("plugin.discovery", "service_load".into()),
    ];
    for (k, v) in FAST_WORKER_SETTINGS {
        props.push((k, v.to_string()));
    }
    if exactly_once {
        props.push(("exactly.once.source.support", "enabled".into()));
    }
    if group == SINK_GROUP {
        // The sink must not see the lines of an aborted transaction.
        props.push(("consumer.isolation.level", "read_committed".into()));
    }
    props
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>()
}

fn cleanup_policy(cluster: &Cluster, topic: &str) -> Result<String, String> {
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("cleanup.policy")])),
    ]);
    let resp: DescribeConfigsResponse = cluster.try_call(0, ApiKey::DescribeConfigs, 4, &req)?;
    let r = resp.results.first().ok_or("no result")?;
    if r.error_code != 0 {
        return Err(format!("{topic}: DescribeConfigs error {}", r.error_code));
    }
    r.configs
        .iter()
        .find(|c| c.name.as_str() == "cleanup.policy")
        .and_then(|c| c.value.as_ref().map(|v| v.to_string()))
        .ok_or_else(|| format!("{topic}: no cleanup.policy"))
}

/// The lines topic's end as every running node answers ListOffsets (latest), read_uncommitted
/// and read_committed: where a stuck sink waits.
fn lines_topic_ends(cluster: &Cluster) -> String {
    let mut out = String::from("ListOffsets latest of the lines topic (uncommitted, committed):");
    for node in cluster.node_ids() {
        let mut ends = Vec::new();
        for isolation in [0i8, 1] {
            let answer: Result<ListOffsetsResponse, String> = cluster.try_call(
                node,
                ApiKey::ListOffsets,
                7,
                &list_offsets_latest(isolation),
            );
            ends.push(match answer {
                Ok(r) => {
                    let p = &r.topics[0].partitions[0];
                    format!("error {} offset {}", p.error_code, p.offset)
                }
                Err(e) => e,
            });
        }
        out.push_str(&format!(" node {node}: {ends:?};"));
    }
    out.push_str(" Fetch from offset 0 (isolation: hw, lso, last batch (base, count)):");
    for node in cluster.node_ids() {
        for isolation in [0i8, 1] {
            let req = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_isolation_level(isolation)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]);
            let answer: Result<FetchResponse, String> =
                cluster.try_call(node, ApiKey::Fetch, 12, &req);
            if let Ok(r) = answer {
                let p = &r.responses[0].partitions[0];
                let batches = common::batches(p.records.clone().unwrap_or_default());
                out.push_str(&format!(
                    " node {node} isolation {isolation}: error {} hw {} lso {} last batch {:?} \
                     aborted {:?};",
                    p.error_code,
                    p.high_watermark,
                    p.last_stable_offset,
                    batches.last(),
                    p.aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    out
}

/// ListOffsets (v7) of the lines topic's latest offset at one isolation level (1: committed).
fn list_offsets_latest(isolation: i8) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ])
}

/// How many transactions the lines topic holds, committed and aborted (its control batches,
/// read from the leader), for the report.
fn transactions_in_lines_topic(cluster: &Cluster) -> String {
    let leader = cluster.leader_of(TOPIC, 0, STEP_TIMEOUT);
    let (mut commits, mut aborts, mut offset) = (0, 0, 0i64);
    loop {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let answer: Result<FetchResponse, String> =
            cluster.try_call(leader, ApiKey::Fetch, 12, &req);
        let Ok(r) = answer else {
            return "transactions: the leader did not answer".into();
        };
        let p = &r.responses[0].partitions[0];
        let mut records = p.records.clone().unwrap_or_default();
        let mut read_any = false;
        while records.len() >= 61 {
            let base = i64::from_be_bytes(records[0..8].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(records[8..12].try_into().expect("4 bytes")) as usize;
            let count = i32::from_be_bytes(records[57..61].try_into().expect("4 bytes"));
            let attributes = i16::from_be_bytes(records[21..23].try_into().expect("2 bytes"));
            if records.len() < 12 + len {
                break;
            }
            if attributes & 0x20 != 0 {
                // A control batch's one record: key (version i16, type i16), type 0 = abort.
                let marker = records.slice(61..12 + len);
                if control_type(&marker) == Some(0) {
                    aborts += 1;
                } else {
                    commits += 1;
                }
            }
            offset = base + i64::from(count);
            read_any = true;
            records = records.slice(12 + len..);
        }
        if !read_any || offset >= p.high_watermark {
            break;
        }
    }
    format!("the lines topic holds {commits} committed and {aborts} aborted transactions")
}

/// The type of a control record (its key's second i16) from the records of a control batch.
fn control_type(records: &[u8]) -> Option<i16> {
    // record: length varint, attributes i8, timestamp delta varint, offset delta varint,
    // key length varint, key (version i16, type i16).
    let mut at = 0;
    let varint = |at: &mut usize| -> Option<i64> {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let b = *records.get(*at)?;
            *at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
            shift += 7;
        }
    };
    varint(&mut at)?;
    at += 1;
    varint(&mut at)?;
    varint(&mut at)?;
    varint(&mut at)?;
    let key = records.get(at..at + 4)?;
    Some(i16::from_be_bytes([key[2], key[3]]))
}

fn create_lines_topic(cluster: &Cluster) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(NODES as i16)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("min.insync.replicas"))
                        .with_value(Some(StrBytes::from_static_str("2"))),
                ]),
        ])
        .with_timeout_ms(30_000);
    cluster.create_topic(&req, STEP_TIMEOUT);
    wait_fully_replicated(cluster, TOPIC);
}

/// Every node reports every partition of `topic` with a leader and all nodes in the ISR.
fn wait_fully_replicated(cluster: &Cluster, topic: &str) {
    cluster.wait_until(
        &format!("{topic}: a leader and the full ISR on every node"),
        STEP_TIMEOUT,
        |c| {
            for node in c.node_ids() {
                let md = c.try_metadata(node, Some(&[topic]))?;
                let t = md.topics.first().ok_or("no topic")?;
                if t.error_code != 0 || t.partitions.is_empty() {
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
