//! Log compaction on a real broker (issue 16), checked with confluent-kafka
//! (tests/clients/compaction_client.py): a compacted topic written in rounds of the same keys
//! (and tombstones) is cleaned by the broker's cleaner task while it is written; a consumer
//! reading from the beginning always ends with exactly the latest value of every live key and
//! nothing of the deleted ones, the log shrinks to about one record per key, and that holds
//! across a clean restart and across SIGKILLs at random moments while the cleaner works
//! (the swap protocol's recovery, engine/src/compaction). A record without a key is refused
//! with INVALID_RECORD, as Kafka refuses it.

mod clients_support;
mod common;

use std::time::{Duration, Instant};

use clients_support::{Client, run_client};
use common::Broker;
use common::requests::create_topic_ok;

const TOPIC: &str = "compacted";
const KEYS: u32 = 300;
/// Rounds of every key before the checks; each round is ~40 KB, ~3 segments per partition.
const ROUNDS: u32 = 12;
/// SIGKILL rounds: produce a round, kill at a seeded moment, restart, check.
const KILL_ROUNDS: u32 = 6;
/// How long the cleaner may take to bring the log down (its I/O is throttled to 200 KB/s
/// so that the kills land inside rounds).
const CLEAN_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker's config; its HTTP listener on a fixed free port (the same across restarts).
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("sluice.toml");
    let http = format!("127.0.0.1:{}", common::cluster::free_ports(1)[0]);
    std::fs::write(
        &path,
        format!(
            "[log]\nsegment_bytes = 16384\nhousekeeping_interval_ms = 200\n\
         [cleaner]\nbackoff_ms = 100\nio_max_bytes_per_second = 200000\n\
         [http]\naddr = \"{http}\"\n"
        ),
    )
    .expect("write config");
    path
}

fn produce(broker: &Broker, round: u32, delete: &str) {
    produce_to(broker, TOPIC, round, delete, "none");
}

fn produce_to(broker: &Broker, topic: &str, round: u32, delete: &str, compression: &str) {
    let (round, keys) = (round.to_string(), KEYS.to_string());
    let mut args = vec![
        "produce",
        topic,
        &round,
        &keys,
        "--compression",
        compression,
    ];
    if !delete.is_empty() {
        args.extend(["--delete", delete]);
    }
    run_client(Client::Compaction, broker, &args);
}

/// Reads the topic and checks the latest values; returns how many records it read.
fn read(broker: &Broker, round: u32, delete: &str) -> u64 {
    read_from(broker, TOPIC, round, delete)
}

fn read_from(broker: &Broker, topic: &str, round: u32, delete: &str) -> u64 {
    let (round, keys) = (round.to_string(), KEYS.to_string());
    let mut args = vec!["read", topic, &round, &keys];
    if !delete.is_empty() {
        args.extend(["--delete", delete]);
    }
    run_client(Client::Compaction, broker, &args)
        .field("records")
        .parse()
        .expect("a count")
}

#[test]
fn compacted_topic_keeps_the_latest_value_per_key_through_restarts_and_kills() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let mut broker = Broker::start_with(&["--config", config.to_str().expect("utf-8 path")]);
    let mut c = broker.connect();
    create_topic_ok(
        &mut c,
        TOPIC,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    );

    // A record without a key is refused, in a plain batch and in a compressed one.
    for compression in ["none", "zstd"] {
        let args = ["keyless", TOPIC, "--compression", compression];
        let keyless = run_client(Client::Compaction, &broker, &args);
        assert_eq!(keyless.field("error"), "INVALID_RECORD", "{compression}");
    }

    // Rounds of every key; the last one deletes the first 30 keys.
    let deleted: String = (0..30)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for round in 0..ROUNDS {
        produce(&broker, round, "");
    }
    let last = ROUNDS - 1;
    produce(&broker, last, &deleted);
    let written = u64::from(KEYS * (ROUNDS + 1));
    let started = Instant::now();
    let mut records = read(&broker, last, &deleted);
    // The cleaner brings the log down to about a record per key (the active segments and
    // the tombstones' last round stay): well under a third of what was written.
    while records * 3 > written {
        assert!(
            started.elapsed() < CLEAN_TIMEOUT,
            "the log still holds {records} of {written} records after {CLEAN_TIMEOUT:?}\n{}",
            common::tail(&broker.log(), 4000)
        );
        std::thread::sleep(Duration::from_millis(500));
        records = read(&broker, last, &deleted);
    }
    eprintln!(
        "cleaned: {records} of {written} records left after {:?}",
        started.elapsed()
    );

    broker.restart();
    read(&broker, last, &deleted);
    cleaner_state_is_described(&broker);

    // SIGKILL at seeded moments while new rounds are written and cleaned.
    let seed: u64 = std::env::var("SLUICE_COMPACTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261207);
    eprintln!("kill rounds with seed {seed} (SLUICE_COMPACTION_SEED replays)");
    let mut rng = seed;
    for k in 0..KILL_ROUNDS {
        let round = ROUNDS + k;
        produce(&broker, round, &deleted);
        // xorshift: 0..1500 ms, within the cleaner's 100 ms passes over the new round.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 1500));
        broker.kill();
        broker.start_again();
        read(&broker, round, &deleted);
    }
    let log = broker.log();
    let interrupted = log
        .matches("completing an interrupted segment swap")
        .count()
        + log
            .matches("removing an unfinished cleaned segment")
            .count();
    let rounds = log
        .lines()
        .filter(|l| l.contains("broker::cleaner") && l.contains("cleaned"))
        .count();
    eprintln!("{interrupted} interrupted cleanings recovered; cleaner log lines: {rounds}");
    broker.stop();
}

/// Compressed batches are compacted too (inflated, filtered, deflated with their own codec),
/// and what the cleaner wrote reads back through librdkafka: each codec's topic loses at
/// least a round's worth of records, with the latest values exact.
#[test]
fn compressed_batches_are_compacted_with_their_codec() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let broker = Broker::start_with(&["--config", config.to_str().expect("utf-8 path")]);
    let mut c = broker.connect();
    const CODEC_ROUNDS: u32 = 8;
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compacted-{codec}");
        create_topic_ok(
            &mut c,
            &topic,
            &[
                ("cleanup.policy", "compact"),
                ("min.cleanable.dirty.ratio", "0.01"),
            ],
        );
        for round in 0..CODEC_ROUNDS {
            produce_to(&broker, &topic, round, "", codec);
        }
    }
    let written = u64::from(KEYS * CODEC_ROUNDS);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compacted-{codec}");
        let started = Instant::now();
        let mut records = read_from(&broker, &topic, CODEC_ROUNDS - 1, "");
        // Compressed rounds are small, so much of them sits in the active segment, which is
        // never cleaned: at least a round's worth must be gone.
        while records + u64::from(KEYS) > written {
            assert!(
                started.elapsed() < CLEAN_TIMEOUT,
                "{topic} still holds {records} of {written} records after {CLEAN_TIMEOUT:?}\n{}",
                common::tail(&broker.log(), 4000)
            );
            std::thread::sleep(Duration::from_millis(500));
            records = read_from(&broker, &topic, CODEC_ROUNDS - 1, "");
        }
        eprintln!(
            "{codec}: {records} of {written} records left after {:?}",
            started.elapsed()
        );
    }
    broker.stop();
}

/// `sluice topic describe --http-addr` shows where the cleaner stands on the partition: the
/// first dirty offset has moved past the start (rounds ran) and the ratio is a number.
fn cleaner_state_is_described(broker: &Broker) {
    let http = common::metrics::http_addr(broker); // fixed in the config: the same after restarts
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "topic",
            "describe",
            TOPIC,
            "--bootstrap",
            broker.addr(),
            "--http-addr",
            &http,
        ])
        .output()
        .expect("run sluice topic describe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "topic describe failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = stdout
        .split_once("cleaner (replicas on")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no cleaner table:\n{stdout}"));
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("0"))
        .unwrap_or_else(|| panic!("no partition 0 row:\n{stdout}"))
        .split_whitespace()
        .collect();
    let first_dirty: i64 = row[2].parse().expect("first dirty offset");
    let ratio: f64 = row[6].parse().expect("dirty ratio");
    assert!(first_dirty > 0 && (0.0..=1.0).contains(&ratio), "{stdout}");
    eprintln!("{stdout}");
    // The same broker's /metrics counts the rounds since its restart; a round runs within the
    // cleaner's 100 ms backoff once the restart's new segment rolls, so wait with a deadline.
    let started = Instant::now();
    loop {
        let samples = common::metrics::scrape(&http);
        let sum = |family: &str| -> f64 {
            samples
                .iter()
                .filter(|(series, _)| series.split('{').next() == Some(family))
                .map(|(_, v)| v)
                .sum()
        };
        let rounds = sum("sluice_cleaner_rounds_total");
        let read = sum("sluice_cleaner_bytes_read_total");
        let ratio = sum("sluice_cleaner_max_dirty_ratio");
        assert!(
            (0.0..=2.0).contains(&ratio),
            "max dirty ratio per shard is a ratio: {ratio}"
        );
        if rounds > 0.0 && read > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < CLEAN_TIMEOUT,
            "no cleaner round counted on /metrics after {CLEAN_TIMEOUT:?}: rounds {rounds}, bytes read {read}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
