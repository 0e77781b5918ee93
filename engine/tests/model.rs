//! Property test: random appends, reads, truncations, rolls, retention and DeleteRecords
//! against an in-memory model (BTreeMap of base offset -> batch bytes), reopening the log
//! after every step.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use engine::batch::{BatchHeader, build_test_batch, patch_header};
use engine::{FlushPolicy, Log, LogConfig, ReadError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// One request of (records, payload bytes, timestamp) batches.
    Append(Vec<(i32, usize, i64)>),
    /// Read from log start + `from` (mod length), with these limits.
    Read {
        from: u16,
        max_bytes: u16,
        min_one: bool,
        below_hw: bool,
    },
    /// Truncate to log start + `to` (mod length + 1).
    Truncate(u16),
    /// Raise the high watermark to the log end.
    AdvanceHw,
    /// DeleteRecords up to log start + `to` (mod hw - start + 1).
    DeleteRecords(u16),
    Retention {
        now_ms: i64,
    },
    RollIfDue {
        now_ms: i64,
    },
    Durable,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((1i32..5, 0usize..400, 0i64..10_000), 1..4).prop_map(Op::Append),
        3 => (any::<u16>(), 50u16..3000, any::<bool>(), any::<bool>())
            .prop_map(|(from, max_bytes, min_one, below_hw)| Op::Read { from, max_bytes, min_one, below_hw }),
        1 => any::<u16>().prop_map(Op::Truncate),
        2 => Just(Op::AdvanceHw),
        1 => any::<u16>().prop_map(Op::DeleteRecords),
        1 => (0i64..20_000).prop_map(|now_ms| Op::Retention { now_ms }),
        1 => (0i64..20_000).prop_map(|now_ms| Op::RollIfDue { now_ms }),
        1 => Just(Op::Durable),
        1 => Just(Op::Close),
    ]
}

#[derive(Default)]
struct Model {
    /// base offset -> (last offset, max timestamp, bytes as stored)
    batches: BTreeMap<i64, (i64, i64, Vec<u8>)>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
}

impl Model {
    fn drop_below_start(&mut self) {
        let lso = self.log_start_offset;
        self.batches.retain(|_, (last, _, _)| *last >= lso);
    }

    /// Expected read: batches from the one holding `start`, stopping before a batch whose last
    /// offset reaches `max_offset`, within `max_bytes` unless `min_one` and none fit.
    fn read(&self, start: i64, max_offset: i64, max_bytes: u32, min_one: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, (last, _, bytes)) in self
            .batches
            .range(..)
            .filter(|(_, (last, _, _))| *last >= start)
        {
            if *last >= max_offset {
                break;
            }
            if out.len() + bytes.len() > max_bytes as usize && !(min_one && out.is_empty()) {
                break;
            }
            out.extend_from_slice(bytes);
        }
        out
    }
}

fn config(
    retention_bytes: i64,
    segment_ms: i64,
    index_interval_bytes: u32,
    preallocate: bool,
) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms,
        index_interval_bytes,
        retention_ms: 5_000,
        retention_bytes,
        flush: FlushPolicy::EveryAppend,
        max_batch_bytes: 1 << 20,
        preallocate,
    }
}

async fn reopen(dir: &Path, config: &LogConfig) -> Log {
    let (log, report) = Log::open(dir.into(), config.clone()).await.expect("reopen");
    assert!(
        report.truncations.is_empty(),
        "a clean reopen truncates nothing: {report:?}"
    );
    log
}

async fn check(log: &Log, model: &Model) {
    assert_eq!(log.log_end_offset(), model.log_end_offset, "log end offset");
    assert_eq!(
        log.log_start_offset(),
        model.log_start_offset,
        "log start offset"
    );
    let got = log
        .read(model.log_start_offset, i64::MAX, u32::MAX, true)
        .await
        .expect("full read");
    let bytes = log.read_bytes(&got.slices).await.expect("read bytes");
    let want = model.read(model.log_start_offset, i64::MAX, u32::MAX, true);
    assert!(
        bytes[..] == want[..],
        "full contents differ: {} vs {} bytes",
        bytes.len(),
        want.len()
    );
    let max_ts = model
        .batches
        .values()
        .map(|(last, ts, _)| (*ts, *last))
        .fold(None, |best: Option<(i64, i64)>, (ts, last)| {
            if best.is_none_or(|(t, _)| ts > t) {
                Some((ts, last))
            } else {
                best
            }
        });
    if let Some((ts, _)) = max_ts {
        // The first batch reaching each probe timestamp.
        for probe in [0, ts / 2, ts] {
            let want = model
                .batches
                .iter()
                .find(|(_, (_, t, _))| *t >= probe)
                .map(|(base, (_, t, _))| (*t, (*base).max(model.log_start_offset)));
            assert_eq!(
                log.offset_for_timestamp(probe).await.unwrap(),
                want,
                "offset_for_timestamp({probe})"
            );
        }
    }
}

fn run_ops(
    ops: Vec<Op>,
    retention_bytes: i64,
    segment_ms: i64,
    index_interval_bytes: u32,
    preallocate: bool,
) {
    compio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let config = config(
                retention_bytes,
                segment_ms,
                index_interval_bytes,
                preallocate,
            );
            let mut log = reopen(dir.path(), &config).await;
            let mut model = Model::default();
            for op in ops {
                let closes = matches!(op, Op::Close);
                match op {
                    Op::Append(specs) => {
                        let mut request = Vec::new();
                        let mut stored = Vec::new();
                        let mut next = model.log_end_offset;
                        for (records, payload, ts) in specs {
                            let mut b =
                                build_test_batch(records, payload, ts, ts, (next % 250) as u8);
                            request.extend_from_slice(&b);
                            patch_header(&mut b, next, 3);
                            stored.push((next, next + i64::from(records) - 1, ts, b));
                            next += i64::from(records);
                        }
                        let info = log.append(Bytes::from(request), 3).await.expect("append");
                        assert_eq!(info.first_offset, model.log_end_offset);
                        assert_eq!(info.last_offset, next - 1);
                        for (base, last, ts, b) in stored {
                            model.batches.insert(base, (last, ts, b));
                        }
                        model.log_end_offset = next;
                    }
                    Op::Read {
                        from,
                        max_bytes,
                        min_one,
                        below_hw,
                    } => {
                        let span = model.log_end_offset - model.log_start_offset + 1;
                        let start = model.log_start_offset + i64::from(from) % span;
                        let max_offset = if below_hw {
                            model.high_watermark
                        } else {
                            i64::MAX
                        };
                        let got = log
                            .read(start, max_offset, u32::from(max_bytes), min_one)
                            .await
                            .expect("read");
                        let bytes = log.read_bytes(&got.slices).await.unwrap();
                        let want = model.read(start, max_offset, u32::from(max_bytes), min_one);
                        assert!(
                            bytes[..] == want[..],
                            "read({start}, {max_offset}, {max_bytes}, {min_one}) differs"
                        );
                        let before = model.log_start_offset - 1;
                        if before >= 0 {
                            assert!(matches!(
                                log.read(before, i64::MAX, 100, true).await,
                                Err(ReadError::OffsetOutOfRange { .. })
                            ));
                        }
                    }
                    Op::Truncate(to) => {
                        let span = model.log_end_offset - model.log_start_offset + 1;
                        let to = model.log_start_offset + i64::from(to) % span;
                        log.truncate_to(to).await.expect("truncate");
                        // A batch holding `to` goes whole.
                        let cut = model
                            .batches
                            .iter()
                            .find(|(_, (last, _, _))| *last >= to)
                            .map(|(b, _)| *b);
                        match cut {
                            Some(cut) if cut < model.log_start_offset => {
                                model.batches.clear();
                                model.log_start_offset = to;
                                model.log_end_offset = to;
                            }
                            Some(cut) => {
                                model.batches.split_off(&cut);
                                model.log_end_offset = cut;
                            }
                            None => {}
                        }
                        model.high_watermark = model.high_watermark.min(model.log_end_offset);
                    }
                    Op::AdvanceHw => {
                        log.set_high_watermark(model.log_end_offset);
                        model.high_watermark = model.log_end_offset;
                    }
                    Op::DeleteRecords(to) => {
                        let span = model.high_watermark - model.log_start_offset + 1;
                        let to = model.log_start_offset + i64::from(to) % span;
                        let lso = log.delete_records_before(to).await.expect("delete records");
                        assert_eq!(lso, to.max(model.log_start_offset));
                        model.log_start_offset = lso;
                        model.drop_below_start();
                    }
                    Op::Retention { now_ms } => {
                        let report = log.enforce_retention(now_ms).await.expect("retention");
                        assert!(report.log_start_offset >= model.log_start_offset);
                        assert!(
                            report.log_start_offset
                                <= model.high_watermark.max(model.log_start_offset)
                        );
                        if report.deleted_segments > 0 {
                            assert!(
                                model.batches.contains_key(&report.log_start_offset)
                                    || report.log_start_offset == model.log_end_offset,
                                "retention cuts on a batch boundary"
                            );
                        }
                        model.log_start_offset = report.log_start_offset;
                        model.drop_below_start();
                    }
                    Op::RollIfDue { now_ms } => log.roll_if_due(now_ms).await.expect("roll"),
                    Op::Durable => {
                        let leo = log.log_end_offset();
                        log.wait_durable(leo - 1).await.expect("durable");
                        assert_eq!(log.durable_offset(), leo);
                    }
                    Op::Close => log.close().await.expect("close"),
                }
                if !closes {
                    check(&log, &model).await;
                }
                // Reopen after every step; the model must survive it unchanged.
                drop(log);
                log = reopen(dir.path(), &config).await;
                assert!(log.high_watermark() <= model.high_watermark);
                log.set_high_watermark(model.high_watermark);
                check(&log, &model).await;
            }
        });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("ENGINE_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_across_reopens(
        ops in prop::collection::vec(op(), 1..40),
        retention_bytes in prop_oneof![Just(-1i64), 2_000i64..20_000],
        segment_ms in prop_oneof![Just(i64::MAX / 2), 1_000i64..10_000],
        index_interval_bytes in prop_oneof![0u32..64, 64u32..1024],
        preallocate in any::<bool>(),
    ) {
        run_ops(ops, retention_bytes, segment_ms, index_interval_bytes, preallocate);
    }
}

#[test]
fn headers_from_model_batches_parse() {
    let b = build_test_batch(2, 10, 5, 6, 0);
    let h = BatchHeader::parse(&b).unwrap();
    assert_eq!(h.records_count(), 2);
}
