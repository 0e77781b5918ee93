//! Bounded recovery of transaction state (issue 15) against a real sluice child: a
//! partition of many small segments holding transactional data from three producers
//! (raw Produce plus WriteTxnMarkers, the coordinator played by the test as in
//! `txn_partition.rs`), with producer-state snapshots written at segment rolls and the
//! aborted transactions in per-segment `.txnindex` files. After a SIGKILL, after a damaged
//! and then a deleted newest snapshot, and after a clean stop, read_committed Fetch answers
//! the same `aborted_transactions` and last stable offset, and DescribeProducers the same
//! producers, as before; the broker's "producer state loaded" line shows how many batches
//! each open scanned (fewer than the log holds whenever a snapshot was usable, none after a
//! clean stop).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::requests::{create_topic_ok, name, produce_request, producer_list, producers_request};
use common::{Broker, RawClient, init_producer_id, record_batch, record_batch_sized, txn_batch};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeProducersResponse, FetchRequest, FetchResponse, ProduceResponse,
    ProducerId, TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};

const TOPIC: &str = "txnrec";
const TRANSACTIONAL_ID: &str = "txn-recovery";
const READ_COMMITTED: i8 = 1;
/// The smallest segment.bytes a topic may have; each transaction adds a ~300 KB plain batch,
/// so a segment holds about three transactions.
const SEGMENT_BYTES: &str = "1048576";
const FILLER_BYTES: usize = 300_000;
const TRANSACTIONS: i32 = 30;
/// How long housekeeping (1 s ticks) may take to write the snapshot after the last roll.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

fn broker_config() -> tempfile::NamedTempFile {
    let mut config = tempfile::NamedTempFile::new().expect("config file");
    // The test plays the coordinator: no KIP-890 verification of the transactional batches.
    std::io::Write::write_all(
        &mut config,
        b"[transaction]\npartition_verification_enable = false\n",
    )
    .expect("config written");
    config
}

fn produce(c: &mut RawClient, records: Bytes) -> i64 {
    let req = produce_request(TOPIC, 0, records, -1).with_transactional_id(Some(TransactionalId(
        kafka_protocol::protocol::StrBytes::from_static_str(TRANSACTIONAL_ID),
    )));
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    p.base_offset
}

fn end_txn(c: &mut RawClient, pid: i64, commit: bool) {
    let req = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(0)
            .with_transaction_result(commit)
            .with_coordinator_epoch(0)
            .with_topics(vec![
                WritableTxnMarkerTopic::default()
                    .with_name(name(TOPIC))
                    .with_partition_indexes(vec![0]),
            ]),
    ]);
    let resp: WriteTxnMarkersResponse = c.call(ApiKey::WriteTxnMarkers, 1, &req);
    assert_eq!(resp.markers[0].topics[0].partitions[0].error_code, 0);
}

/// read_committed Fetch at `offset`: (high watermark, last stable offset, aborted list).
fn fetch(c: &mut RawClient, offset: i64) -> (i64, i64, Vec<(i64, i64)>) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(READ_COMMITTED)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let aborted = p
        .aborted_transactions
        .as_ref()
        .expect("read_committed answers a list")
        .iter()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    (p.high_watermark, p.last_stable_offset, aborted)
}

/// DescribeProducers: (id, epoch, last sequence, coordinator epoch, txn start), by id.
fn producers(c: &mut RawClient) -> Vec<(i64, i32, i32, i32, i64)> {
    let resp: DescribeProducersResponse =
        c.call(ApiKey::DescribeProducers, 0, &producers_request(TOPIC));
    producer_list(&resp)
}

/// Everything read_committed consumers and tools see of the transactions, from several
/// fetch offsets (each segment's files, and the in-memory tail).
type Seen = (
    Vec<(i64, i64, Vec<(i64, i64)>)>,
    Vec<(i64, i32, i32, i32, i64)>,
);

fn seen(c: &mut RawClient, end: i64) -> Seen {
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    // After a restart the high watermark comes back from the checkpoint at once on a single
    // node; wait for it rather than rely on it.
    while fetch(c, 0).0 < end {
        assert!(Instant::now() < deadline, "high watermark below {end}");
        std::thread::yield_now();
    }
    let fetches = [0, end / 3, end / 2, end - 5]
        .into_iter()
        .map(|offset| fetch(c, offset))
        .collect();
    (fetches, producers(c))
}

fn partition_dir(broker: &Broker) -> PathBuf {
    broker.data_dir().join(format!("{TOPIC}-0"))
}

/// Offsets of the files with `suffix` in `dir`, ascending.
fn offsets(dir: &Path, suffix: &str) -> Vec<i64> {
    let mut out: Vec<i64> = std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(suffix)?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The fields of the last "producer state loaded" line of the test topic: (snapshot offset
/// as logged, batches scanned, snapshots discarded).
fn last_load(broker: &Broker) -> (String, u64, u32) {
    let log = strip_ansi(&broker.log());
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("producer state loaded") && l.contains(TOPIC))
        .unwrap_or_else(|| panic!("no load line for {TOPIC}:\n{log}"))
        .to_string();
    let field = |key: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} missing in {line}"))
            .to_string()
    };
    (
        field("snapshot_offset="),
        field("batches_scanned=").parse().expect("a count"),
        field("snapshots_discarded=").parse().expect("a count"),
    )
}

/// Waits until housekeeping wrote a snapshot at or above the active segment's base.
fn wait_snapshot_after_last_roll(dir: &Path) -> i64 {
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    loop {
        let active = *offsets(dir, ".log").last().expect("a segment");
        if let Some(&newest) = offsets(dir, ".snapshot").last()
            && newest >= active
        {
            return newest;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot at or above segment {active}: {:?}",
            offsets(dir, ".snapshot")
        );
        std::thread::sleep(Duration::from_millis(50)); // polling a directory, with a deadline
    }
}

#[test]
fn transaction_state_survives_restarts_from_snapshots_and_txn_indexes() {
    let config = broker_config();
    let config_path = config.path().to_str().expect("utf-8 path").to_string();
    let mut broker = Broker::start_with(&["--config", &config_path]);
    let mut c = broker.connect();
    create_topic_ok(&mut c, TOPIC, &[("segment.bytes", SEGMENT_BYTES)]);
    let pids: Vec<i64> = (0..3).map(|_| init_producer_id(&mut c)).collect();

    // Each transaction: one transactional record, a large plain batch, then its marker
    // (every third aborted). Three batches per transaction.
    let mut sequences = [0i32; 3];
    let mut batches = 0u64;
    for i in 0..TRANSACTIONS {
        let k = (i % 3) as usize;
        produce(&mut c, txn_batch(1, pids[k], 0, sequences[k]));
        sequences[k] += 1;
        produce(&mut c, record_batch_sized(1, FILLER_BYTES, None));
        end_txn(&mut c, pids[k], i % 3 != 1);
        batches += 3;
    }
    // One transaction left open: it holds the last stable offset.
    let open_at = produce(&mut c, txn_batch(1, pids[0], 0, sequences[0]));
    sequences[0] += 1;
    produce(&mut c, record_batch(2, None));
    batches += 2;

    let dir = partition_dir(&broker);
    let segments = offsets(&dir, ".log").len();
    assert!(segments >= 8, "{segments} segments");
    // The index entries reach their files with the housekeeping after a roll: wait for one.
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    while offsets(&dir, ".txnindex").is_empty() {
        assert!(Instant::now() < deadline, "aborted transactions indexed");
        std::thread::sleep(Duration::from_millis(50)); // polling a directory, with a deadline
    }
    let seen_open = seen(&mut c, open_at + 3);
    assert_eq!(
        seen_open.0[0].1, open_at,
        "the open transaction holds the LSO"
    );
    assert_eq!(seen_open.0[0].2.len(), (TRANSACTIONS / 3) as usize);
    wait_snapshot_after_last_roll(&dir);

    // A tail after that snapshot, in the active segment (small batches: no roll, so no
    // snapshot covers it): the open transaction committed, one more aborted, one left open.
    // A restart must re-derive it (its aborted transaction is in no .txnindex yet).
    end_txn(&mut c, pids[0], true);
    produce(&mut c, txn_batch(1, pids[2], 0, sequences[2]));
    end_txn(&mut c, pids[2], false);
    let last_open = produce(&mut c, txn_batch(1, pids[1], 0, sequences[1]));
    let tail_batches = 4;
    batches += tail_batches;
    let end = last_open + 1;
    let before = seen(&mut c, end);
    assert_eq!(
        before.0[0].1, last_open,
        "the last open transaction holds the LSO"
    );
    assert_eq!(before.0[0].2.len(), (TRANSACTIONS / 3 + 1) as usize);

    // SIGKILL: no snapshot at close; open loads the one written after the last roll.
    drop(c);
    broker.kill();
    broker.start_again();
    let mut c = broker.connect();
    assert_eq!(seen(&mut c, end), before);
    let (snapshot, scanned, discarded) = last_load(&broker);
    eprintln!(
        "after SIGKILL: snapshot {snapshot}, {scanned} of {batches} batches scanned, {segments} segments"
    );
    assert_ne!(snapshot, "None");
    assert!(
        scanned >= tail_batches && scanned < batches / 4,
        "scanned {scanned} of {batches}"
    );
    assert_eq!(discarded, 0);

    // The newest snapshot damaged: an older one (or the full scan), the same state.
    drop(c);
    broker.kill();
    let newest = *offsets(&dir, ".snapshot").last().expect("a snapshot");
    let newest_path = dir.join(format!("{newest:020}.snapshot"));
    let mut bytes = std::fs::read(&newest_path).expect("snapshot");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&newest_path, bytes).expect("damaged");
    broker.start_again();
    let mut c = broker.connect();
    assert_eq!(seen(&mut c, end), before);
    let (_, scanned_after_damage, discarded) = last_load(&broker);
    eprintln!("damaged newest snapshot: {scanned_after_damage} of {batches} batches scanned");
    assert_eq!(discarded, 1);
    assert!(scanned_after_damage > scanned && scanned_after_damage <= batches);
    assert!(broker.log().contains("producer snapshot unusable"));

    // Every snapshot deleted: the full scan, still the same state.
    drop(c);
    broker.kill();
    for offset in offsets(&dir, ".snapshot") {
        std::fs::remove_file(dir.join(format!("{offset:020}.snapshot"))).expect("removed");
    }
    broker.start_again();
    let mut c = broker.connect();
    assert_eq!(seen(&mut c, end), before);
    let (snapshot, scanned, _) = last_load(&broker);
    eprintln!("no snapshot: {snapshot}, {scanned} of {batches} batches scanned");
    assert_eq!((snapshot.as_str(), scanned), ("None", batches));

    // A clean stop writes a snapshot at the end: the next open scans nothing.
    drop(c);
    broker.restart();
    let mut c = broker.connect();
    assert_eq!(seen(&mut c, end), before);
    let (snapshot, scanned, _) = last_load(&broker);
    eprintln!("after a clean stop: {snapshot}, {scanned} batches scanned");
    assert_eq!(
        (snapshot.as_str(), scanned),
        (format!("Some({end})").as_str(), 0)
    );
    drop(c);
    broker.stop();
}
