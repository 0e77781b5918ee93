//! The transactional nemesis (issue 15, "Must show"): a real exactly-once
//! consume-transform-produce app (confluent-kafka: a read_committed consumer in a group, a
//! transactional producer, send_offsets_to_transaction, a seeded mix of commits and aborts;
//! nemesis_support/nemesis_txn.py) runs against a real 3-process cluster
//! (tests/common/cluster.rs) while seeded rounds SIGKILL, at a seeded moment (after a seeded
//! number of the app's transactions ended), one of:
//!
//! - `coordinator`: the transaction coordinator of the app's transactional id (the leader of
//!   its `__transaction_state` partition: Java's `String.hashCode`, `Utils.abs`, modulo the
//!   partition count, as Kafka's `TransactionStateManager.partitionFor`);
//! - `group-coordinator`: the group coordinator of the app's group (the leader of its
//!   `__consumer_offsets` partition), where TxnOffsetCommit and the markers' offsets go;
//! - `leader`: the leader of a seeded partition of the input or the output topic.
//!
//! During the fault the app must commit a transaction (the cluster serves around it; not for
//! a kill of the node leading the group's offsets partition, where a librdkafka bug holds the
//! app until the restart, see `Target::GroupCoordinator`); then the node restarts, and the round ends once the app committed again and every partition that
//! matters (both topics, the id's state partition, the group's offsets partition) has a
//! leader and a full ISR on every node. At the end (nemesis_txn.py checks): zero committed
//! records lost and zero duplicates (every acknowledged input record's transform is in the
//! read_committed output exactly once), no record of an aborted transaction visible, every
//! committed transaction visible whole, per-partition order, and no transaction left open
//! (the last stable offset reaches the high watermark).
//!
//! The short run (CI) has `DEFAULT_ROUNDS` rounds, one of each kind. The long run:
//!
//! ```text
//! SLUICE_NEMESIS_TXN_ROUNDS=20 SLUICE_NEMESIS_TXN_SEED=<seed> \
//!   cargo test -p sluice --test nemesis_txn -- --nocapture
//! ```
//!
//! The seed is printed first; the same seed replays the same rounds (kind, moment, partition)
//! and the app's commit/abort draws (the node a role lives on, and the clients' timing, are
//! not replayed). A failure prints the node logs and keeps the cluster's temp dir, which also
//! holds librdkafka's `eos` debug log of the transactional producer (`client.log`).

mod clients_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::nemesis::{
    COMMAND_TIMEOUT, LineChild, Rng, allowed_kinds, env_number, field, time_seed, wait_for_brokers,
};

const NODES: usize = 3;
/// The app's topics are `<TOPIC>-in` and `<TOPIC>-out`.
const TOPIC: &str = "eos";
const PARTITIONS: i32 = 3;
/// nemesis_txn.py's transactional id and group.
const TRANSACTIONAL_ID: &str = "eos-app-txn";
const GROUP: &str = "eos-app";
const TXN_STATE_TOPIC: &str = "__transaction_state";
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Rounds of the short run: one of each kind.
const DEFAULT_ROUNDS: usize = 3;
const ROUNDS_ENV: &str = "SLUICE_NEMESIS_TXN_ROUNDS";
/// Comma-separated kinds to draw from (default: all), for a run aimed at one of them.
const FAULTS_ENV: &str = "SLUICE_NEMESIS_TXN_FAULTS";
const SEED_ENV: &str = "SLUICE_NEMESIS_TXN_SEED";
/// librdkafka `debug` contexts of the app's transactional producer (default `eos`; e.g.
/// `eos,msg,protocol,broker` to see every produce request).
const DEBUG_ENV: &str = "SLUICE_NEMESIS_TXN_DEBUG";
/// The app aborts this share of its transactions on purpose (percent).
const ABORT_PERCENT: u64 = 25;
/// The fault strikes after 1..=this many more of the app's transactions ended.
const STRIKE_AFTER_TXNS_MAX: u64 = 4;
/// How long a role (a partition's leader) may take to be known after a restart.
const LEADER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Target {
    Coordinator,
    /// While its node is down the app is not required to commit: librdkafka 2.10+
    /// decommissions a broker that leaves Metadata (as a dead one does, in Kafka and Sluice
    /// alike) while it stays cached as the group coordinator, and
    /// `send_offsets_to_transaction` then waits, past its own timeout, for a broker state change
    /// that only the restart brings (confluentinc/librdkafka#5511, open; seen here as "Handle
    /// is terminating in state TRY_CONNECT" looping in the `broker` debug log).
    GroupCoordinator,
    /// The leader of (output topic?, partition).
    Leader(bool, i32),
}

impl Target {
    const KINDS: [&'static str; 3] = ["coordinator", "group-coordinator", "leader"];

    fn pick(kind: usize, rng: &mut Rng) -> Target {
        match kind {
            0 => Target::Coordinator,
            1 => Target::GroupCoordinator,
            _ => Target::Leader(rng.below(2) == 1, rng.below(PARTITIONS as u64) as i32),
        }
    }

    fn kind(self) -> &'static str {
        Self::KINDS[match self {
            Target::Coordinator => 0,
            Target::GroupCoordinator => 1,
            Target::Leader(..) => 2,
        }]
    }

    /// (topic, partition) whose leader this target is.
    fn partition(self, cluster: &Cluster) -> (String, i32) {
        match self {
            Target::Coordinator => {
                let count = partition_count(cluster, TXN_STATE_TOPIC);
                (
                    TXN_STATE_TOPIC.into(),
                    java_partition_for(TRANSACTIONAL_ID, count),
                )
            }
            Target::GroupCoordinator => {
                let count = partition_count(cluster, OFFSETS_TOPIC);
                (OFFSETS_TOPIC.into(), java_partition_for(GROUP, count))
            }
            Target::Leader(output, p) => {
                (format!("{TOPIC}-{}", if output { "out" } else { "in" }), p)
            }
        }
    }
}

#[test]
fn transactions_survive_coordinator_and_leader_kills() {
    let rounds = env_number(ROUNDS_ENV).map_or(DEFAULT_ROUNDS, |n| n as usize);
    let seed = env_number(SEED_ENV).unwrap_or_else(time_seed);
    eprintln!("nemesis_txn: seed {seed} ({SEED_ENV}={seed} replays it), {rounds} rounds");
    let mut rng = Rng(seed);
    let allowed = allowed_kinds(FAULTS_ENV, &Target::KINDS);
    let mut kinds = allowed.clone();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }

    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster, NODES);
    let client_log = cluster.dir().join("client.log");
    let mut clients = start_clients(&cluster, &client_log, seed);
    let ready = clients.expect(&mut cluster, "READY", "");
    eprintln!("nemesis_txn: app ready ({ready})");

    let started = Instant::now();
    for round in 1..=rounds {
        let kind = kinds
            .get(round - 1)
            .copied()
            .unwrap_or_else(|| allowed[rng.below(allowed.len() as u64) as usize]);
        let target = Target::pick(kind, &mut rng);
        let after = 1 + rng.below(STRIKE_AFTER_TXNS_MAX);
        clients.command(&mut cluster, &format!("ROUND {round} {}", target.kind()));
        clients.command(&mut cluster, &format!("AFTER {round} {after}"));
        let (topic, partition) = target.partition(&cluster);
        let node = leader_of(&cluster, &topic, partition);
        let (offsets_topic, offsets_partition) = Target::GroupCoordinator.partition(&cluster);
        let group_coordinator = leader_of(&cluster, &offsets_topic, offsets_partition);
        let at = Instant::now();
        cluster.kill(node);
        // librdkafka#5511: no progress until the group coordinator's node is back (see
        // `Target::GroupCoordinator`), whichever role the round aimed at.
        if node != group_coordinator {
            clients.command(&mut cluster, &format!("ACKED {round}"));
        }
        cluster.restart(node);
        let healed = clients.command(&mut cluster, &format!("HEALED {round}"));
        wait_full_isr(&cluster);
        eprintln!(
            "nemesis_txn: round {round}/{rounds}: killed node {node} ({}: leader of {topic}-{partition}) \
             after {after} txns: healed in {:.1} s: {healed}",
            target.kind(),
            at.elapsed().as_secs_f64()
        );
    }

    clients.send(&mut cluster, "FINISH");
    let summary = clients.expect(&mut cluster, "SUMMARY", " OK");
    clients.wait_success(&mut cluster);
    eprintln!(
        "nemesis_txn: seed {seed}: {rounds} rounds in {:.0} s; {summary}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        field(&summary, "acked"),
        field(&summary, "verified"),
        "{summary}"
    );
    cluster.stop();
}

/// Input records of the Streams run: enough that a kill lands in the middle of the work.
const STREAMS_RECORDS: u64 = 8_000;
/// Input records added per kill round beyond the first (40 s of the program's input: a
/// round kills, waits for output, restarts and waits again, up to ~40 s on a loaded machine).
const STREAMS_RECORDS_PER_EXTRA_KILL: u64 = 20_000;
/// The first kill comes once the output's counts add up to this share of the input
/// (percent); further kills are spread evenly up to `STREAMS_LAST_KILL_AT_PERCENT`.
const STREAMS_KILL_AT_PERCENT: u64 = 25;
const STREAMS_LAST_KILL_AT_PERCENT: u64 = 90;
/// Kill rounds of the Streams run (default 1, the CI run; e.g. 20 by hand).
const STREAMS_KILLS_ENV: &str = "SLUICE_NEMESIS_STREAMS_KILLS";
/// The Streams program's topic prefix; its application.id is `<prefix>-app`.
const STREAMS_PREFIX: &str = "streams";

/// Kafka Streams 4.3.1 with `exactly_once_v2` (tests/java: io.sluice.reftest.StreamsEos, a word
/// count with a RocksDB store, its changelog and a repartition topic, all RF 3) in the 3-node
/// cluster. Streams 4 uses transaction version 2 (KIP-890 part 2) against Sluice, as against
/// Kafka 4. The node leading the app's group coordinator partition is SIGKILLed once a quarter
/// of the counts are out, the output must keep advancing without it, the node restarts, and
/// the read_committed output must reach exactly the expected count of every word, never
/// above it and never going down (the program checks and prints `RESULT OK` or `RESULT FAIL`).
/// With `SLUICE_NEMESIS_STREAMS_KILLS=N` (and `SLUICE_NEMESIS_TXN_SEED`) it runs N kill
/// rounds: after the first, each SIGKILLs a seeded node (whatever it leads: transaction and
/// group coordinators, partition leaders) once the counts pass its point, waits for the
/// output to advance, restarts the node and waits for the output to advance again. When the
/// program finishes (its input all counted) before the rounds do, the rest are not run and
/// the count done is printed.
/// Needs the Java jars (SLUICE_TEST_JAVA_DIR, as tests/cluster_java.rs).
#[test]
fn streams_exactly_once_word_count_through_a_broker_kill() {
    let stack = refstack::JavaStack::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let kills = env_number(STREAMS_KILLS_ENV).unwrap_or(1).max(1);
    let seed = env_number(SEED_ENV).unwrap_or_else(time_seed);
    eprintln!("streams: {kills} kill round(s), seed {seed}");
    let mut rng = Rng(seed);
    let records = STREAMS_RECORDS + (kills - 1) * STREAMS_RECORDS_PER_EXTRA_KILL;
    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster, NODES);
    let state_dir = cluster.dir().join("streams-state");
    let mut command = stack.java("io.sluice.reftest.StreamsEos");
    command
        .arg(cluster.bootstrap())
        .arg(STREAMS_PREFIX)
        .arg(records.to_string())
        .arg(&state_dir);
    let mut program = LineChild::spawn("StreamsEos", &mut command, |_| String::new());
    let started = Instant::now();
    let group = format!("{STREAMS_PREFIX}-app");
    // The program's RESULT line, when it came while a round waited for progress (the input
    // ran out before the rounds did: the rounds done are reported).
    let mut early: Option<String> = None;
    let mut done = 0;
    for round in 0..kills {
        let percent = STREAMS_KILL_AT_PERCENT
            + (STREAMS_LAST_KILL_AT_PERCENT - STREAMS_KILL_AT_PERCENT) * round / kills;
        let before = match program.progress_or_result(&mut cluster, records * percent / 100) {
            Ok(n) => n,
            Err(result) => {
                early = Some(result);
                break;
            }
        };
        let node = if round == 0 {
            let count = partition_count(&cluster, OFFSETS_TOPIC);
            leader_of(&cluster, OFFSETS_TOPIC, java_partition_for(&group, count))
        } else {
            let nodes = cluster.node_ids();
            nodes[rng.below(nodes.len() as u64) as usize]
        };
        cluster.kill(node);
        done += 1;
        eprintln!(
            "streams: round {}/{kills}: killed node {node} at {before} counts",
            round + 1
        );
        let during = program.progress_or_result(&mut cluster, before + 1);
        cluster.restart(node);
        let during = match during {
            Ok(n) => n,
            Err(result) => {
                early = Some(result);
                break;
            }
        };
        match program.progress_or_result(&mut cluster, during + 1) {
            Ok(after) => eprintln!(
                "streams: node {node} restarted; counts {during} while it was down, {after} after"
            ),
            Err(result) => {
                early = Some(result);
                break;
            }
        }
    }
    let result = early.unwrap_or_else(|| program.expect(&mut cluster, "RESULT", ""));
    eprintln!(
        "streams: RESULT {result} after {done} of {kills} kill rounds, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(done >= 1, "no kill landed before the program ended");
    assert!(result.starts_with("OK"), "Streams EOS: RESULT {result}");
    program.wait_success(&mut cluster);
    cluster.stop();
}

/// Kafka's `partitionFor` of a group or transactional id: `Utils.abs(id.hashCode()) % count`
/// (Java's String.hashCode over UTF-16 units; `Utils.abs(Integer.MIN_VALUE)` is 0).
fn java_partition_for(id: &str, count: i32) -> i32 {
    let hash = id.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % count
}

fn partition_count(cluster: &Cluster, topic: &str) -> i32 {
    let mut count = 0;
    cluster.wait_until(&format!("{topic} exists"), LEADER_TIMEOUT, |c| {
        let mut last = String::new();
        for node in c.node_ids() {
            match c.try_metadata(node, Some(&[topic])) {
                Ok(md) => match md.topics.first() {
                    Some(t) if t.error_code == 0 && !t.partitions.is_empty() => {
                        count = t.partitions.len() as i32;
                        return Ok(());
                    }
                    Some(t) => last = format!("node {node}: {topic} error {}", t.error_code),
                    None => last = format!("node {node}: no {topic}"),
                },
                Err(e) => last = format!("node {node}: {e}"),
            }
        }
        Err(last)
    });
    count
}

/// The leader of `topic`-`partition` as some node's Metadata names it.
fn leader_of(cluster: &Cluster, topic: &str, partition: i32) -> i32 {
    let mut leader = -1;
    cluster.wait_until(
        &format!("a leader of {topic}-{partition}"),
        LEADER_TIMEOUT,
        |c| {
            let mut last = String::new();
            for node in c.node_ids() {
                let md = match c.try_metadata(node, Some(&[topic])) {
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
                    Some(p) if p.error_code == 0 && p.leader_id.0 >= 0 => {
                        leader = p.leader_id.0;
                        return Ok(());
                    }
                    other => {
                        last = format!(
                            "node {node}: {:?}",
                            other.map(|p| (p.error_code, p.leader_id.0))
                        )
                    }
                }
            }
            Err(last)
        },
    );
    leader
}

/// Every node's Metadata names a leader and a full ISR for every partition of both topics,
/// the transactional id's state partition and the group's offsets partition: the next round
/// must not start from a smaller ISR than it assumes.
fn wait_full_isr(cluster: &Cluster) {
    let txn_state = Target::Coordinator.partition(cluster);
    let offsets = Target::GroupCoordinator.partition(cluster);
    let input = format!("{TOPIC}-in");
    let output = format!("{TOPIC}-out");
    let topics: [&str; 4] = [&input, &output, &txn_state.0, &offsets.0];
    cluster.wait_until(
        "every node sees a full ISR everywhere",
        COMMAND_TIMEOUT,
        |c| {
            for node in c.node_ids() {
                let md = c.try_metadata(node, Some(&topics))?;
                for topic in &md.topics {
                    let name = topic.name.as_ref().map_or("?", |n| n.0.as_str());
                    let only = if name == txn_state.0 {
                        Some(txn_state.1)
                    } else if name == offsets.0 {
                        Some(offsets.1)
                    } else {
                        None
                    };
                    for p in &topic.partitions {
                        if only.is_some_and(|o| o != p.partition_index) {
                            continue;
                        }
                        if p.error_code != 0 || p.leader_id.0 < 0 || p.isr_nodes.len() != NODES {
                            return Err(format!(
                                "node {node}: {name}-{} error {} leader {} ISR {:?}",
                                p.partition_index, p.error_code, p.leader_id.0, p.isr_nodes
                            ));
                        }
                    }
                }
            }
            Ok(())
        },
    );
}

// ---- the clients ------------------------------------------------------------------------------

/// nemesis_txn.py, or the Streams program, on the line protocol (`common::nemesis::LineChild`).
type Clients = LineChild;

fn start_clients(cluster: &Cluster, client_log: &Path, seed: u64) -> Clients {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nemesis_support/nemesis_txn.py");
    let mut command = Command::new(clients_support::python());
    command
        .arg(&script)
        .args(["--bootstrap", &cluster.bootstrap(), "--topic", TOPIC])
        .arg("--client-log")
        .arg(client_log)
        .args(["--seed", &seed.to_string()])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--abort-percent", &ABORT_PERCENT.to_string()])
        .args([
            "--debug",
            &std::env::var(DEBUG_ENV).unwrap_or_else(|_| "eos".into()),
        ]);
    LineChild::spawn("nemesis_txn.py", &mut command, client_log_hint)
}

/// Where librdkafka's `eos` log of the app's producer is.
fn client_log_hint(cluster: &Cluster) -> String {
    format!(
        "(librdkafka's eos log: {})",
        cluster.dir().join("client.log").display()
    )
}
