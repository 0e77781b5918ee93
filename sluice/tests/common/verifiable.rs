//! Apache Kafka's command-line tools as child processes of a test (issue 14), run exactly as
//! Kafka's `bin/*.sh` scripts run them (`java -cp <jars> <main class> args`, through
//! `refstack::JavaStack::java`), and the checker for the verifiable tools' JSON events.
//!
//! - [`run_tool`]: one tool run to completion within a deadline; stdout and stderr captured.
//! - [`EventTool`]: a long-running `kafka-verifiable-producer` / `kafka-verifiable-consumer`
//!   whose stdout (one JSON object per line) is parsed as it arrives, so a test can wait on
//!   progress while it kills brokers.
//! - [`acked`], [`consumed`], [`check_delivery`]: what the producer had acknowledged against
//!   what the consumer read: no acknowledged record lost, none stored twice.
//!
//! Included by path (`#[path = "common/verifiable.rs"] mod verifiable;`) by the test files
//! that run Kafka's tools, so the other test binaries do not compile it.
//!
//! Owns: process handling and event parsing. Does not own: which brokers the tools talk to.
//! Nothing sleeps to synchronise: every wait polls a condition against a deadline.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use refstack::JavaStack;
use serde_json::Value;

/// How long one short tool run (kafka-topics, kafka-configs, ...) may take on a loaded
/// 2-core machine before it counts as hung.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(90);
/// The verifiable producer's main class (`bin/kafka-verifiable-producer.sh`).
pub const VERIFIABLE_PRODUCER: &str = "org.apache.kafka.tools.VerifiableProducer";
/// The verifiable consumer's main class (`bin/kafka-verifiable-consumer.sh`).
pub const VERIFIABLE_CONSUMER: &str = "org.apache.kafka.tools.VerifiableConsumer";
/// `bin/kafka-topics.sh`.
pub const TOPIC_COMMAND: &str = "org.apache.kafka.tools.TopicCommand";
/// How much of a tool's stderr a failure message shows.
const STDERR_KEEP_BYTES: usize = 16 * 1024;

/// A finished tool run.
#[derive(Debug)]
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// The command line and both streams, for failure messages.
    pub fn describe(&self, what: &str) -> String {
        format!(
            "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            tail(&self.stderr, STDERR_KEEP_BYTES)
        )
    }
}

/// Runs `main_class args` on Kafka's jars and waits at most `timeout` (then kills it and
/// panics). The exit status is the caller's to judge.
pub fn run_tool(
    stack: &JavaStack,
    main_class: &str,
    args: &[&str],
    timeout: Duration,
) -> ToolOutput {
    let what = format!("{main_class} {}", args.join(" "));
    let mut child = stack
        .java(main_class)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e} (is `java` on PATH?)"));
    let stdout = collect(child.stdout.take().expect("piped stdout"));
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let status = wait_deadline(&mut child, timeout);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        Some(status) => ToolOutput {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what}: still running after {timeout:?}, killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            tail(&stderr, STDERR_KEEP_BYTES)
        ),
    }
}

/// A verifiable tool running in the background; its events are parsed as they arrive.
/// Killed when dropped.
pub struct EventTool {
    what: String,
    child: Option<Child>,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl EventTool {
    /// Starts `main_class args` with stdout read as JSON lines (a line that is not JSON is kept
    /// as a string value, so nothing is lost from failure messages).
    pub fn start(stack: &JavaStack, main_class: &str, args: &[&str]) -> EventTool {
        let what = format!("{main_class} {}", args.join(" "));
        let mut child = stack
            .java(main_class)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e} (is `java` on PATH?)"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&events);
        let out_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().expect("events").push(event);
            }
        });
        let sink = Arc::clone(&stderr_text);
        let err_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().expect("stderr");
                text.push_str(&line);
                text.push('\n');
                if text.len() > 4 * STDERR_KEEP_BYTES {
                    let keep = tail(&text, STDERR_KEEP_BYTES);
                    *text = keep;
                }
            }
        });
        EventTool {
            what,
            child: Some(child),
            events,
            stderr: stderr_text,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// The tool's stderr so far (its tail).
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Polls `check` over the events until it returns Ok or `timeout` passes; panics with the
    /// last error and the tool's stderr. A tool that exits before is a failure too, unless
    /// `check` holds on its final events.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[Value]) -> Result<(), String>,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() {
                self.join_readers();
            }
            let last = match check(&self.events()) {
                Ok(()) => return,
                Err(e) => e,
            };
            if let Some(status) = exited {
                panic!(
                    "{what}: {} exited ({status}) first; last: {last}\n{}",
                    self.what,
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not within {timeout:?}; last: {last}\n--- {} stderr ---\n{}",
                    self.what,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the tool to exit on its own (within `timeout`) and for its output to be
    /// read; panics otherwise. Returns its events.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Vec<Value>) {
        let mut child = self.child.take().expect("tool running");
        let Some(status) = wait_deadline(&mut child, timeout) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{}: still running after {timeout:?}, killed\n{}",
                self.what,
                self.stderr()
            );
        };
        self.join_readers();
        (status, self.events())
    }

    /// SIGKILL (a consumer that runs until told to stop); returns its events.
    pub fn kill(&mut self) -> Vec<Value> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
        self.events()
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for EventTool {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One record as a verifiable tool reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub value: String,
    pub partition: i32,
    pub offset: i64,
}

/// Events named `name`.
pub fn named<'a>(events: &'a [Value], name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["name"] == name)
}

/// The producer's `producer_send_success` events: what the broker acknowledged, where.
pub fn acked(events: &[Value]) -> Vec<Record> {
    named(events, "producer_send_success")
        .map(|e| record(e, "producer_send_success"))
        .collect()
}

/// The producer's `producer_send_error` events (sends the broker did not acknowledge).
pub fn send_errors(events: &[Value]) -> Vec<String> {
    named(events, "producer_send_error")
        .map(|e| format!("{}: {}", e["exception"], e["message"]))
        .collect()
}

/// The consumer's `record_data` events (`--verbose`): every record handed to it, in order.
pub fn consumed(events: &[Value]) -> Vec<Record> {
    named(events, "record_data")
        .map(|e| record(e, "record_data"))
        .collect()
}

/// The startup_complete event's timestamp (ms since the epoch): every record a producer sends
/// carries a later create time.
pub fn startup_ms(events: &[Value]) -> i64 {
    named(events, "startup_complete")
        .next()
        .and_then(|e| e["timestamp"].as_i64())
        .unwrap_or_else(|| panic!("no startup_complete event in {events:?}"))
}

/// The last offset each partition of `topic` had committed successfully (`offsets_committed`
/// events with `success: true`).
pub fn last_committed(events: &[Value], topic: &str) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for e in named(events, "offsets_committed").filter(|e| e["success"] == true) {
        for o in e["offsets"].as_array().into_iter().flatten() {
            if o["topic"] == topic {
                let partition = o["partition"].as_i64().expect("partition") as i32;
                out.insert(partition, o["offset"].as_i64().expect("offset"));
            }
        }
    }
    out
}

/// What [`check_delivery`] found besides the failures it reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Acknowledged records, each read back at its acknowledged partition and offset.
    pub acked: usize,
    /// Distinct (partition, offset) pairs the consumer read.
    pub read_distinct: usize,
    /// Reads of a (partition, offset) already read: the consumer's at-least-once replay after
    /// a rebalance or a failed commit, not a second copy in the log.
    pub replayed: usize,
    /// Values read that the producer had not acknowledged (a send that failed after the write
    /// may still be in the log; Kafka allows that).
    pub unacked_read: usize,
}

/// Every acknowledged record was read at the partition and offset it was acknowledged at
/// (zero lost), no value is stored at two places (zero duplicated), and no offset holds two
/// different values. Err lists the first offenders of each kind.
pub fn check_delivery(acked: &[Record], read: &[Record]) -> Result<Delivery, String> {
    let mut at: HashMap<(i32, i64), &str> = HashMap::new();
    let mut problems = Vec::new();
    for r in read {
        if let Some(previous) = at.insert((r.partition, r.offset), &r.value)
            && previous != r.value
        {
            problems.push(format!(
                "partition {} offset {} read as {previous:?} and as {:?}",
                r.partition, r.offset, r.value
            ));
        }
    }
    let mut places: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (&place, &value) in &at {
        places.entry(value).or_default().push(place);
    }
    let mut duplicated: Vec<String> = places
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|(value, p)| format!("value {value:?} stored at (partition, offset) {p:?}"))
        .collect();
    duplicated.sort();
    let lost: Vec<String> = acked
        .iter()
        .filter(|a| at.get(&(a.partition, a.offset)) != Some(&a.value.as_str()))
        .map(|a| {
            format!(
                "acknowledged {:?} at partition {} offset {}: read {:?}",
                a.value,
                a.partition,
                a.offset,
                at.get(&(a.partition, a.offset))
            )
        })
        .collect();
    for (kind, list) in [("lost", &lost), ("duplicated", &duplicated)] {
        if !list.is_empty() {
            problems.push(format!(
                "{} {kind}, first: {:?}",
                list.len(),
                &list[..list.len().min(10)]
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let acked_values: HashSet<&str> = acked.iter().map(|a| a.value.as_str()).collect();
    Ok(Delivery {
        acked: acked.len(),
        read_distinct: at.len(),
        replayed: read.len() - at.len(),
        unacked_read: places.keys().filter(|v| !acked_values.contains(*v)).count(),
    })
}

fn record(event: &Value, name: &str) -> Record {
    let field = |key: &str| {
        event[key]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} event without {key}: {event}"))
    };
    Record {
        value: event["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} event without a value: {event}"))
            .to_string(),
        partition: field("partition") as i32,
        offset: field("offset"),
    }
}

/// The last `bytes` of `s` (at a char boundary).
fn tail(s: &str, bytes: usize) -> String {
    let mut cut = s.len().saturating_sub(bytes);
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

fn collect(mut stream: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(value: &str, partition: i32, offset: i64) -> Record {
        Record {
            value: value.to_string(),
            partition,
            offset,
        }
    }

    #[test]
    fn check_delivery_finds_loss_duplicates_and_replays() {
        let acked = [r("a", 0, 0), r("b", 0, 1), r("c", 1, 0)];
        let fine = [
            r("a", 0, 0),
            r("b", 0, 1),
            r("c", 1, 0),
            r("b", 0, 1),
            r("x", 1, 1),
        ];
        assert_eq!(
            check_delivery(&acked, &fine),
            Ok(Delivery {
                acked: 3,
                read_distinct: 4,
                replayed: 1,
                unacked_read: 1
            })
        );
        let lost = [r("a", 0, 0), r("c", 1, 0)];
        assert!(
            check_delivery(&acked, &lost)
                .unwrap_err()
                .contains("1 lost")
        );
        let twice = [r("a", 0, 0), r("b", 0, 1), r("c", 1, 0), r("b", 1, 1)];
        assert!(
            check_delivery(&acked, &twice)
                .unwrap_err()
                .contains("1 duplicated")
        );
    }
}
