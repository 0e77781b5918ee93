//! The nemesis (issue 12, "Keep it fixed"): a real 3-process cluster (tests/common/cluster.rs)
//! under a real idempotent acks=all producer and a committing consumer group (librdkafka through
//! confluent-kafka: nemesis_support/nemesis.py, run with SLUICE_TEST_PYTHON as the other client
//! tests are), through seeded random fault rounds:
//!
//! - `kill`: SIGKILL one node; the cluster must serve writes without it; restart it.
//! - `pause`: SIGSTOP one node until the cluster served writes without it (so the pause
//!   outlasts the broker session and replica lag timeouts wherever they matter); SIGCONT.
//! - `double-kill`: SIGKILL two nodes at once (no quorum, no ISR of 2 left), restart both.
//! - `full-restart`: every node SIGKILLed, or stopped cleanly (SIGTERM to all at once, or one
//!   after another as in a rolling stop; the seed decides), all restarted together.
//!
//! After every round the cluster must heal: a record sent after the repair acknowledged on
//! every partition, a leader and full ISR everywhere, and the group's committed offsets at or
//! above every commit acknowledged before the round. At the end (nemesis.py checks the first
//! four): every acknowledged record is in the log exactly once, at the offset its delivery
//! report gave (zero loss, no duplicates; a report without an offset must be one librdkafka
//! made itself, an implicit acknowledgement), the producer's order holds on every partition,
//! the live group saw everything and its commits reached the end, and after a clean stop of
//! all nodes every replica of every partition is byte-identical up to the high watermark.
//!
//! The short run (CI) has `DEFAULT_ROUNDS` rounds, one of each kind. The long run:
//!
//! ```text
//! SLUICE_NEMESIS_ROUNDS=200 SLUICE_NEMESIS_SEED=<seed> \
//!   cargo test --release -p sluice --test nemesis -- --nocapture
//! ```
//!
//! The seed is printed first; the same seed replays the same faults on the same nodes (the
//! timing of the clients against them is not replayed). `SLUICE_NEMESIS_FAULTS=pause,kill`
//! draws from those kinds only; `SLUICE_NEMESIS_LINGER_MS` sets the producer's linger.ms. The
//! nodes read `SLUICE_*` overrides from the environment too, e.g.
//! `SLUICE_CLUSTER_REQUEST_TIMEOUT_MS=1500` makes acks=all produces time out during a stall
//! (the path behind librdkafka's implicit acknowledgements, see nemesis.py). A failure prints
//! the node logs and keeps the cluster's temp dir, which also holds librdkafka's `eos` debug
//! log (`client.log`).

mod clients_support;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::cluster::Cluster;
use common::nemesis::{
    COMMAND_TIMEOUT, LineChild, Rng, allowed_kinds, env_number, field, time_seed, wait_for_brokers,
};
use common::tail;

const NODES: usize = 3;
const TOPIC: &str = "nemesis";
/// Rounds of the short run: one of each fault kind.
const DEFAULT_ROUNDS: usize = 4;
const ROUNDS_ENV: &str = "SLUICE_NEMESIS_ROUNDS";
const SEED_ENV: &str = "SLUICE_NEMESIS_SEED";
/// Comma-separated fault kinds to draw from (default: all), for a run aimed at one of them.
const FAULTS_ENV: &str = "SLUICE_NEMESIS_FAULTS";
/// The producer's linger.ms (default 5): longer spreads the five in-flight requests over more
/// time, so a stall's timeouts split them (implicit acknowledgements) more often.
const LINGER_ENV: &str = "SLUICE_NEMESIS_LINGER_MS";
/// Bytes of a record batch header up to and including `last_offset_delta`.
const BATCH_PREFIX_BYTES: usize = 27;

/// How a full restart takes the nodes down.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    TermAll,
    TermEach,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill(i32),
    Pause(i32),
    DoubleKill(i32, i32),
    FullRestart(Stop),
}

impl Fault {
    const KINDS: [&'static str; 4] = ["kill", "pause", "double-kill", "full-restart"];

    fn kind(self) -> &'static str {
        Self::KINDS[match self {
            Fault::Kill(_) => 0,
            Fault::Pause(_) => 1,
            Fault::DoubleKill(..) => 2,
            Fault::FullRestart(_) => 3,
        }]
    }

    fn pick(kind: usize, rng: &mut Rng) -> Fault {
        let node = rng.below(NODES as u64) as i32;
        match kind {
            0 => Fault::Kill(node),
            1 => Fault::Pause(node),
            2 => {
                let other = (node + 1 + rng.below(NODES as u64 - 1) as i32) % NODES as i32;
                Fault::DoubleKill(node.min(other), node.max(other))
            }
            _ => Fault::FullRestart(match rng.below(3) {
                0 => Stop::Kill,
                1 => Stop::TermAll,
                _ => Stop::TermEach,
            }),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "kill node {n}"),
            Fault::Pause(n) => write!(f, "pause node {n}"),
            Fault::DoubleKill(a, b) => write!(f, "double-kill nodes {a} and {b}"),
            Fault::FullRestart(Stop::Kill) => write!(f, "full-restart (SIGKILL)"),
            Fault::FullRestart(Stop::TermAll) => write!(f, "full-restart (SIGTERM to all)"),
            Fault::FullRestart(Stop::TermEach) => write!(f, "full-restart (SIGTERM one by one)"),
        }
    }
}

#[test]
fn nemesis_rounds_lose_nothing() {
    let rounds = env_number(ROUNDS_ENV).map_or(DEFAULT_ROUNDS, |n| n as usize);
    let seed = env_number(SEED_ENV).unwrap_or_else(time_seed);
    eprintln!("nemesis: seed {seed} ({SEED_ENV}={seed} replays it), {rounds} rounds");
    let allowed = allowed_kinds(FAULTS_ENV, &Fault::KINDS);
    let mut rng = Rng(seed);
    // The first rounds cover every allowed kind once, in a seeded order; the rest are drawn.
    let mut kinds = allowed.clone();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }

    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster, NODES);
    let client_log = cluster.dir().join("client.log");
    let mut clients = start_clients(&cluster, &client_log);
    let ready = clients.expect(&mut cluster, "READY", "");
    eprintln!("nemesis: clients ready ({ready})");

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    for round in 1..=rounds {
        let kind = kinds
            .get(round - 1)
            .copied()
            .unwrap_or_else(|| allowed[rng.below(allowed.len() as u64) as usize]);
        let fault = Fault::pick(kind, &mut rng);
        *counts.entry(fault.kind()).or_default() += 1;
        clients.command(&mut cluster, &format!("ROUND {round} {}", fault.kind()));
        let at = Instant::now();
        inject(&mut cluster, &mut clients, round, fault);
        let healed = clients.command(&mut cluster, &format!("HEALED {round}"));
        // The clients saw a full ISR through whichever node answered them; every node must
        // agree before the next fault, or a round could start from a smaller ISR than it
        // assumes (a pause that the leader need not wait out).
        wait_full_isr(&cluster);
        eprintln!(
            "nemesis: round {round}/{rounds}: {fault}: healed in {:.1} s: {healed}",
            at.elapsed().as_secs_f64()
        );
    }

    clients.send(&mut cluster, "FINISH");
    let summary = clients.expect(&mut cluster, "SUMMARY", " OK");
    let high_watermarks = high_watermarks(&clients);
    clients.wait_success(&mut cluster);
    for node in cluster.node_ids() {
        cluster.stop_node(node);
    }
    let compared = compare_replicas(&cluster, &high_watermarks);
    eprintln!(
        "nemesis: seed {seed}: {rounds} rounds in {:.0} s ({counts:?}); {summary}; replicas \
         identical: {compared}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        field(&summary, "acked"),
        field(&summary, "verified"),
        "{summary}"
    );
}

/// Injects one fault and repairs it (the clients heal around it afterwards).
fn inject(cluster: &mut Cluster, clients: &mut Clients, round: usize, fault: Fault) {
    match fault {
        Fault::Kill(node) => {
            cluster.kill(node);
            clients.command(cluster, &format!("ACKED {round}"));
            cluster.restart(node);
        }
        Fault::Pause(node) => {
            cluster.pause(node);
            // Writes acknowledged on every partition while it is frozen: the others noticed
            // (session timeout, ISR shrink) wherever it mattered.
            clients.command(cluster, &format!("ACKED {round}"));
            cluster.resume(node);
        }
        Fault::DoubleKill(a, b) => {
            cluster.kill(a);
            cluster.kill(b);
            cluster.restart_many(&[a, b]);
        }
        Fault::FullRestart(stop) => {
            let all = cluster.node_ids();
            match stop {
                Stop::Kill => {
                    for &node in &all {
                        cluster.kill(node);
                    }
                }
                Stop::TermAll => cluster.stop_many(&all),
                // The last ones stop without followers: nothing may wait for them
                // (cluster_shutdown.rs).
                Stop::TermEach => {
                    for &node in &all {
                        cluster.stop_node(node);
                    }
                }
            }
            cluster.restart_many(&all);
        }
    }
}

/// Every node's Metadata names a leader and a full ISR for every partition of the topic.
fn wait_full_isr(cluster: &Cluster) {
    cluster.wait_until(
        "every node sees a full ISR everywhere",
        COMMAND_TIMEOUT,
        |c| {
            for node in c.node_ids() {
                let md = c.try_metadata(node, Some(&[TOPIC]))?;
                let topic = md.topics.first().ok_or(format!("node {node}: no topic"))?;
                for p in &topic.partitions {
                    if p.error_code != 0 || p.leader_id.0 < 0 || p.isr_nodes.len() != NODES {
                        return Err(format!(
                            "node {node}: partition {} error {} leader {} ISR {:?}",
                            p.partition_index, p.error_code, p.leader_id.0, p.isr_nodes
                        ));
                    }
                }
            }
            Ok(())
        },
    );
}

// ---- the clients ------------------------------------------------------------------------------

/// nemesis.py on the line protocol (`common::nemesis::LineChild`).
type Clients = LineChild;

fn start_clients(cluster: &Cluster, client_log: &Path) -> Clients {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nemesis_support/nemesis.py");
    let mut command = Command::new(clients_support::python());
    command
        .arg(&script)
        .args(["--bootstrap", &cluster.bootstrap(), "--topic", TOPIC])
        .arg("--client-log")
        .arg(client_log)
        .args([
            "--linger-ms",
            &env_number(LINGER_ENV).unwrap_or(5).to_string(),
        ]);
    LineChild::spawn("nemesis.py", &mut command, client_log_hint)
}

/// librdkafka's implicit acknowledgements and sequence errors from `client.log`.
fn client_log_hint(cluster: &Cluster) -> String {
    let client_log = std::fs::read_to_string(cluster.dir().join("client.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            ["IMPLICITACK", "DUPSEQ", "ERRSEQ"]
                .iter()
                .any(|k| l.contains(k))
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    format!(
        "--- librdkafka implicit acks and sequence errors (client.log) ---\n{}",
        tail(&client_log, 4_000)
    )
}

/// The `HW <partition> <offset>` lines printed before the summary.
fn high_watermarks(clients: &Clients) -> BTreeMap<i32, i64> {
    clients
        .out()
        .lines()
        .filter_map(|l| l.strip_prefix("HW "))
        .map(|rest| {
            let mut words = rest.split_whitespace().map(|w| w.parse::<i64>());
            match (words.next(), words.next()) {
                (Some(Ok(p)), Some(Ok(hw))) => (p as i32, hw),
                _ => panic!("bad HW line: {rest}"),
            }
        })
        .collect()
}

// ---- replicas ---------------------------------------------------------------------------------

/// One record batch of a replica's log: base offset, last offset, its bytes.
type Batch = (i64, i64, Vec<u8>);

/// Compares every partition's replicas across the nodes' data dirs (all stopped): for the
/// nemesis topic each of the three replicas holds the same batches, byte for byte, up to the
/// high watermark the clients read; for every other partition (the group's offsets) the
/// replicas agree on what they all have. Returns a one-line account; panics on a difference.
fn compare_replicas(cluster: &Cluster, high_watermarks: &BTreeMap<i32, i64>) -> String {
    let mut dirs: BTreeMap<String, Vec<(i32, Vec<Batch>)>> = BTreeMap::new();
    for node in cluster.node_ids() {
        for name in partition_dirs(cluster.data_dir(node)) {
            let batches = read_batches(&cluster.data_dir(node).join(&name));
            dirs.entry(name).or_default().push((node, batches));
        }
    }
    let mut partitions = 0;
    let mut batches_compared = 0;
    for (name, replicas) in &dirs {
        let topic_partition = name
            .rsplit_once('-')
            .and_then(|(t, p)| Some((t, p.parse::<i32>().ok()?)));
        let hw = match topic_partition {
            Some((TOPIC, p)) => {
                let hw = *high_watermarks
                    .get(&p)
                    .unwrap_or_else(|| panic!("no high watermark for {name}"));
                assert_eq!(
                    replicas.len(),
                    NODES,
                    "{name}: replicas on nodes {:?} only",
                    replicas.iter().map(|r| r.0).collect::<Vec<_>>()
                );
                Some(hw)
            }
            _ => None,
        };
        if replicas.len() < 2 {
            continue;
        }
        partitions += 1;
        let committed: Vec<(i32, &[Batch])> = replicas
            .iter()
            .map(|(node, batches)| {
                let upto = match hw {
                    Some(hw) => {
                        let n = batches.iter().take_while(|b| b.0 < hw).count();
                        let end = batches[..n].last().map_or(0, |b| b.1 + 1);
                        assert!(
                            end >= hw,
                            "{name}: node {node}'s log ends at {end}, below the high watermark {hw}"
                        );
                        n
                    }
                    None => replicas.iter().map(|r| r.1.len()).min().unwrap_or(0),
                };
                (*node, &batches[..upto])
            })
            .collect();
        let (first_node, first) = committed[0];
        for &(node, other) in &committed[1..] {
            assert_eq!(
                first.len(),
                other.len(),
                "{name}: node {first_node} has {} batches, node {node} {}",
                first.len(),
                other.len()
            );
            for (a, b) in first.iter().zip(other) {
                assert!(
                    a == b,
                    "{name}: nodes {first_node} and {node} differ at the batch at offset {} \
                     (theirs at {})",
                    a.0,
                    b.0
                );
            }
        }
        batches_compared += first.len();
    }
    format!("{partitions} partitions, {batches_compared} batches each on every replica")
}

/// Partition directories (`<topic>-<n>` holding segments) in a node's data dir.
fn partition_dirs(data_dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.rsplit_once('-')
                .is_some_and(|(_, p)| p.parse::<i32>().is_ok())
        })
        .filter(|name| !segment_files(&data_dir.join(name)).is_empty())
        .collect()
}

/// `<20 digits>.log` files of a partition directory, in offset order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "log")
                        && p.file_stem()
                            .and_then(|s| s.to_str())
                            .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The record batches of a partition directory's segments, in order; a segment's
/// preallocated zero tail ends it.
fn read_batches(dir: &Path) -> Vec<Batch> {
    let mut out = Vec::new();
    for file in segment_files(dir) {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut pos = 0usize;
        while pos + BATCH_PREFIX_BYTES <= bytes.len() {
            let b = &bytes[pos..];
            let base = i64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
            let length = i32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
            if length <= 0 {
                break;
            }
            let total = 12 + length as usize;
            assert!(
                pos + total <= bytes.len(),
                "{}: batch at byte {pos} runs past the end",
                file.display()
            );
            let delta = i32::from_be_bytes(b[23..27].try_into().expect("4 bytes"));
            out.push((base, base + i64::from(delta), b[..total].to_vec()));
            pos += total;
        }
    }
    out
}

// ---- small things -----------------------------------------------------------------------------
