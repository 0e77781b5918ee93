//! Model-based property test of compaction: random appends (keyed values and tombstones),
//! time advances, cleaner rounds, clean reopens and DeleteRecords against a model that
//! remembers every record ever appended, checking Kafka's compaction guarantees after
//! every step:
//! - what the log holds is a subsequence of what was appended, each record at the offset
//!   it was given (offsets strictly increasing, never renumbered, nothing altered);
//! - for every key, the latest record appended at or above the log start is in the log
//!   (a latest tombstone may go, but only once delete.retention.ms has passed since it
//!   was appended), so a consumer reading from the start ends with the model's key set;
//! - a consumer reading from any offset sees that subsequence from its offset on;
//! - a round leaves at most one record per key below the end of the range it mapped.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use proptest::prelude::*;

use super::records::records;
use super::{CleanOptions, OffsetMap, Throttle, keyed_batch};
use crate::batch::BatchHeader;
use crate::{Log, LogConfig};

const KEYS: u8 = 6;
const DELETE_RETENTION_MS: i64 = 1_000;

#[derive(Clone, Debug)]
enum Op {
    /// Records (key index, value: None = tombstone).
    Append(Vec<(u8, Option<u8>)>),
    Advance(i64),
    Clean,
    Reopen,
    DeleteRecordsHalf,
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..KEYS, prop::option::weighted(0.8, any::<u8>())), 1..6).prop_map(Op::Append),
        2 => (1i64..800).prop_map(Op::Advance),
        3 => Just(Op::Clean),
        1 => Just(Op::Reopen),
        1 => Just(Op::DeleteRecordsHalf),
        1 => Just(Op::Retention),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    offset: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    /// When it was appended (its timestamp).
    at_ms: i64,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

async fn read_log(log: &Log, from: i64) -> Vec<Rec> {
    let r = log
        .read(from, i64::MAX, u32::MAX, true)
        .await
        .expect("read");
    let bytes = log.read_bytes(&r.slices).await.expect("read bytes");
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = BatchHeader::parse(&bytes[at..]).expect("header");
        let len = h.total_bytes() as usize;
        let batch = &bytes[at..at + len];
        for rec in records(batch, h) {
            let rec = rec.expect("well-formed record");
            if rec.offset >= from {
                let value = (!rec.tombstone).then(|| rec.value.to_vec());
                out.push(Rec {
                    offset: rec.offset,
                    key: rec.key.expect("keyed").to_vec(),
                    value,
                    at_ms: rec.timestamp,
                });
            }
        }
        at += len;
    }
    out
}

fn check(model: &[Rec], log_records: &[Rec], log_start: i64, now_ms: i64, label: &str) {
    let by_offset: HashMap<i64, &Rec> = model.iter().map(|r| (r.offset, r)).collect();
    let mut last = -1;
    for r in log_records {
        assert!(
            r.offset > last,
            "{label}: offsets not increasing at {}",
            r.offset
        );
        last = r.offset;
        let m = by_offset
            .get(&r.offset)
            .unwrap_or_else(|| panic!("{label}: unknown offset {}", r.offset));
        assert_eq!(
            (&m.key, &m.value),
            (&r.key, &r.value),
            "{label}: record at {} altered",
            r.offset
        );
    }
    let present: HashMap<i64, ()> = log_records.iter().map(|r| (r.offset, ())).collect();
    let mut latest: BTreeMap<&[u8], &Rec> = BTreeMap::new();
    for r in model.iter().filter(|r| r.offset >= log_start) {
        latest.insert(&r.key, r);
    }
    for (key, r) in latest {
        if present.contains_key(&r.offset) {
            continue;
        }
        assert!(
            r.value.is_none() && now_ms >= r.at_ms + DELETE_RETENTION_MS,
            "{label}: latest record of key {key:?} at {} ({:?}, appended at {}) missing at {now_ms}",
            r.offset,
            r.value,
            r.at_ms
        );
        assert!(
            log_records.iter().all(|x| x.key != key),
            "{label}: key {key:?} lost its tombstone but an older value is visible"
        );
    }
}

/// Runs `ops`, checking after each; returns how many records the log holds at the end.
async fn run_ops(ops: Vec<Op>) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let (mut log, _) = Log::open(path.clone(), config()).await.expect("open");
    let mut model: Vec<Rec> = Vec::new();
    let mut now_ms: i64 = 1_000_000;
    let mut map = OffsetMap::with_memory(1 << 20);
    let mut throttle = Throttle::new(u64::MAX);
    let never = |_: &BatchHeader| false;
    // Only DeleteRecords moves the log start of a compacted log (no time or size retention).
    let mut log_start = 0;
    for (step, op) in ops.into_iter().enumerate() {
        let label = format!("step {step} {op:?}");
        match op {
            Op::Append(recs) => {
                let keys: Vec<Vec<u8>> = recs.iter().map(|(k, _)| vec![b'k', *k]).collect();
                let values: Vec<Option<Vec<u8>>> =
                    recs.iter().map(|(_, v)| v.map(|v| vec![v; 120])).collect();
                let pairs: Vec<(&[u8], Option<&[u8]>)> = keys
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| (k.as_slice(), v.as_deref()))
                    .collect();
                // All records of a batch share the batch's timestamp base; record i is +i ms.
                let batch = keyed_batch(0, now_ms, &pairs);
                let info = log.append(Bytes::from(batch), 0).await.expect("append");
                for (i, (k, v)) in keys.into_iter().zip(values).enumerate() {
                    model.push(Rec {
                        offset: info.first_offset + i as i64,
                        key: k,
                        value: v,
                        at_ms: now_ms + i as i64,
                    });
                }
                log.set_high_watermark(log.log_end_offset());
            }
            Op::Advance(ms) => now_ms += ms,
            Op::Clean => {
                // The broker snapshots producer state at each roll; the cleaner stays below it.
                let active = log.active_segment_base();
                log.write_producer_snapshot(active, b"", &[])
                    .await
                    .expect("snapshot");
                let report = log
                    .clean(CleanOptions {
                        now_ms,
                        last_stable_offset: i64::MAX,
                        delete_retention_ms: DELETE_RETENTION_MS,
                        min_compaction_lag_ms: 0,
                        map: &mut map,
                        throttle: &mut throttle,
                        retain_batch: &never,
                    })
                    .await
                    .expect("clean");
                let recs = read_log(&log, log.log_start_offset()).await;
                let mut seen = HashMap::new();
                for r in recs.iter().filter(|r| r.offset < report.dirty_to) {
                    if let Some(prev) = seen.insert(r.key.clone(), r.offset) {
                        panic!(
                            "{label}: key {:?} at {prev} and {} below the mapped end {}",
                            r.key, r.offset, report.dirty_to
                        );
                    }
                }
            }
            Op::Reopen => {
                log.close().await.expect("close");
                drop(log);
                log = Log::open(path.clone(), config()).await.expect("reopen").0;
                log.set_high_watermark(log.log_end_offset());
            }
            Op::DeleteRecordsHalf => {
                let target = (log.log_start_offset() + log.high_watermark()) / 2;
                log.delete_records_before(target)
                    .await
                    .expect("delete records");
                log_start = log_start.max(target);
            }
            Op::Retention => {
                log.enforce_retention(now_ms).await.expect("retention");
            }
        }
        let start = log.log_start_offset();
        assert_eq!(
            start, log_start,
            "{label}: the log start moved without DeleteRecords"
        );
        let all = read_log(&log, start).await;
        check(&model, &all, start, now_ms, &label);
        // A consumer from any offset sees the same records from there on.
        for from in [
            start,
            (start + log.log_end_offset()) / 2,
            log.log_end_offset(),
        ] {
            let tail = read_log(&log, from).await;
            let expected: Vec<Rec> = all.iter().filter(|r| r.offset >= from).cloned().collect();
            assert_eq!(tail, expected, "{label}: read from {from}");
        }
    }
    read_log(&log, log.log_start_offset()).await.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn compaction_keeps_kafkas_guarantees(ops in prop::collection::vec(op(), 1..60)) {
        compio::runtime::Runtime::new().expect("runtime").block_on(run_ops(ops));
    }
}

#[test]
fn a_long_run_compacts_to_its_keys() {
    // Many rounds over few keys: the log stays near one record per key.
    let mut ops = Vec::new();
    for i in 0..200u32 {
        ops.push(Op::Append(vec![
            ((i % KEYS as u32) as u8, Some(i as u8));
            3
        ]));
        if i % 10 == 9 {
            ops.push(Op::Clean);
        }
        if i % 50 == 49 {
            ops.push(Op::Reopen);
        }
    }
    let left = compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run_ops(ops));
    // 600 records appended; what stays is a record per key in the cleaned part plus the
    // active segment (about 7 batches of 3) and what a round could not reach yet.
    assert!(left < 60, "{left} records left of 600");
}

/// A crash at each step of the swap protocol: the states a crash can leave are built from a
/// log before and after a round (its first group), and each must open to a consistent log:
/// a `.cleaned` file is dropped (the log as before), a `.swap` file is finished (the first
/// group as cleaned, the rest as before), also when the originals are partly removed.
#[test]
fn an_interrupted_swap_is_finished_or_dropped_at_open() {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let root = tempfile::tempdir().expect("tempdir");
            let live = root.path().join("live");
            let (log, _) = Log::open(live.clone(), config()).await.expect("open");
            for round in 0..40u8 {
                let keys: Vec<Vec<u8>> = (0..4u8).map(|k| vec![b'k', (round + k) % 6]).collect();
                let value = vec![round; 120];
                let pairs: Vec<(&[u8], Option<&[u8]>)> = keys
                    .iter()
                    .map(|k| (k.as_slice(), Some(value.as_slice())))
                    .collect();
                log.append(
                    Bytes::from(keyed_batch(0, 1_000 + i64::from(round), &pairs)),
                    0,
                )
                .await
                .expect("append");
            }
            log.set_high_watermark(log.log_end_offset());
            log.write_producer_snapshot(log.active_segment_base(), b"", &[])
                .await
                .expect("snapshot");
            log.close().await.expect("close");
            drop(log);
            let before_dir = root.path().join("before");
            copy_dir(&live, &before_dir);
            let (log, _) = Log::open(live.clone(), config()).await.expect("reopen");
            let before = read_log(&log, 0).await;
            let mut map = OffsetMap::with_memory(1 << 20);
            let never = |_: &BatchHeader| false;
            log.clean(CleanOptions {
                now_ms: 10_000,
                last_stable_offset: i64::MAX,
                delete_retention_ms: DELETE_RETENTION_MS,
                min_compaction_lag_ms: 0,
                map: &mut map,
                throttle: &mut Throttle::new(u64::MAX),
                retain_batch: &never,
            })
            .await
            .expect("clean");
            log.close().await.expect("close");
            drop(log);
            let bases = |dir: &std::path::Path| {
                let mut v: Vec<i64> = std::fs::read_dir(dir)
                    .expect("list")
                    .filter_map(|e| {
                        crate::segment::parse_segment_name(e.ok()?.file_name().to_str()?, "log")
                    })
                    .collect();
                v.sort_unstable();
                v
            };
            let (old, new) = (bases(&before_dir), bases(&live));
            // The first group: [new[0], new[1]) replaced the old segments in that range.
            let (base, end) = (new[0], new[1]);
            let cleaned = std::fs::read(crate::segment::segment_path(&live, base, "log"))
                .expect("cleaned log");
            let original = std::fs::read(crate::segment::segment_path(&before_dir, base, "log"))
                .expect("original log");
            assert!(
                cleaned.len() < original.len(),
                "the round cleaned the first group ({old:?} -> {new:?})"
            );
            let (log, _) = Log::open(live.clone(), config()).await.expect("reopen");
            let after = read_log(&log, 0).await;
            drop(log);
            let mut swapped: Vec<Rec> = after.iter().filter(|r| r.offset < end).cloned().collect();
            swapped.extend(before.iter().filter(|r| r.offset >= end).cloned());

            // Crash after step 1: a .cleaned file beside the originals.
            let state = root.path().join("cleaned");
            copy_dir(&before_dir, &state);
            std::fs::write(
                super::swap_path(&state, base, end, super::CLEANED_SUFFIX),
                &cleaned,
            )
            .unwrap();
            let (log, _) = Log::open(state.clone(), config())
                .await
                .expect("open after step 1");
            assert_eq!(
                read_log(&log, 0).await,
                before,
                "a .cleaned file is dropped"
            );
            drop(log);
            assert!(!super::swap_path(&state, base, end, super::CLEANED_SUFFIX).exists());

            // Crash after step 2 (all originals there), and inside step 3 (some removed).
            for removed in [0usize, 1, 2] {
                let state = root.path().join(format!("swap-{removed}"));
                copy_dir(&before_dir, &state);
                std::fs::write(
                    super::swap_path(&state, base, end, super::SWAP_SUFFIX),
                    &cleaned,
                )
                .unwrap();
                for b in old.iter().filter(|&&b| b >= base && b < end).take(removed) {
                    for suffix in ["log", "index", "timeindex"] {
                        let _ =
                            std::fs::remove_file(crate::segment::segment_path(&state, *b, suffix));
                    }
                }
                let (log, _) = Log::open(state.clone(), config())
                    .await
                    .expect("open after step 2");
                assert_eq!(
                    read_log(&log, 0).await,
                    swapped,
                    "a .swap file is finished ({removed} originals gone)"
                );
                let kept = bases(&state);
                assert!(kept.iter().all(|b| *b == base || *b >= end), "{kept:?}");
            }
        });
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}
