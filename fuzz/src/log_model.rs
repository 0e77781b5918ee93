//! `log_ops`: arbitrary sequences of `engine::Log` operations, with closes, reopens and
//! simulated crashes, checked after every step against a model.
//!
//! Owns: the op decoder (plain bytes, no `arbitrary`, so the stable test needs no new crate),
//! the model (`BTreeMap` base offset -> batch bytes as stored, log start, log end, high
//! watermark, durable offset) and the checks.
//! Does not own: the engine's semantics; they are stated in `engine/src/log.rs` and this file
//! only restates what the model relies on, next to each check.
//! Shared by the fuzz target `fuzz/fuzz_targets/log_ops.rs` and the stable test
//! `engine/tests/log_model.rs` (which includes this file by path), so CI keeps it compiling
//! and replays the fixed inputs and every crash the fuzzer found.
//!
//! What survives what:
//! - `close` then reopen, or a drop without close then reopen: everything appended (the bytes
//!   are in the page cache; the process did not crash).
//! - A simulated crash (drop, then the active segment's file cut anywhere at or after the end
//!   of the last batch below the durable offset, optionally followed by a torn tail of 0x00 or
//!   0xFF bytes, which can never frame a batch): every batch below the durable offset, and
//!   then a prefix of the rest.
//!
//! Invariants checked: reads return exactly the model's batches (bytes equal, the greedy
//! prefix under `max_bytes`, at least one batch when asked); offsets, log start, high
//! watermark and durable offset move as documented; bad batches change nothing; timestamp
//! lookups and header scans agree with the model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use engine::batch::{build_test_batch, patch_header};
use engine::{FlushPolicy, Log, LogConfig, ReadError};

/// Operations per input: enough to roll, retain and reopen a few times, few enough that one
/// input runs in milliseconds.
pub const OPS_MAX: usize = 48;

/// What one input did, for tests that check the harness reaches the interesting paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ops: usize,
    pub appended_batches: usize,
    pub reopens: usize,
    pub crashes: usize,
    pub segments_max: usize,
}

/// Runs one input on the current thread's compio runtime (created once per thread).
pub fn run(data: &[u8]) -> Stats {
    RUNTIME.with(|rt| rt.block_on(run_async(data)))
}

thread_local! {
    static RUNTIME: compio::runtime::Runtime =
        compio::runtime::Runtime::new().expect("compio runtime (io_uring)");
}

/// `SLUICE_FUZZ_TRACE=1` prints each operation (to replay a crash input by hand).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SLUICE_FUZZ_TRACE").is_some())
}

/// Where per-input directories go: tmpfs when there is one (fdatasync is free there).
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Bytes of the input, read front to back; zeros once it runs out.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn i64(&mut self) -> i64 {
        (u64::from(self.u32()) | (u64::from(self.u32()) << 32)) as i64
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A value in `lo..=hi` (`lo <= hi`), biased by the input.
    fn in_range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo) as u64 + 1;
        lo + (u64::from(self.u32()) % span) as i64
    }
    /// A timestamp: mostly small and ordered, sometimes anything (producers choose them).
    fn timestamp(&mut self) -> i64 {
        match self.u8() % 8 {
            0 => self.i64(),
            1 => -1,
            _ => i64::from(self.u16()) * 10,
        }
    }
}

fn config(input: &mut Input) -> LogConfig {
    let flags = input.u8();
    LogConfig {
        segment_bytes: 4096 + u64::from(input.u16() % 8192),
        segment_ms: if flags & 1 == 1 {
            1 + i64::from(input.u16())
        } else {
            LogConfig::default().segment_ms
        },
        index_interval_bytes: [0, 1, 64, 256, 4096][usize::from(input.u8() % 5)],
        retention_ms: if flags & 2 == 2 {
            i64::from(input.u16())
        } else {
            -1
        },
        retention_bytes: if flags & 4 == 4 {
            i64::from(input.u16())
        } else {
            -1
        },
        flush: if flags & 8 == 8 {
            FlushPolicy::Interval {
                ms: i64::from(input.u8()),
                bytes: u64::from(input.u16()),
            }
        } else {
            FlushPolicy::EveryAppend
        },
        max_batch_bytes: if flags & 16 == 16 {
            u32::from(input.u16())
        } else {
            LogConfig::default().max_batch_bytes
        },
        preallocate: flags & 32 == 32,
    }
}

/// What the log must hold.
#[derive(Default)]
struct Model {
    /// base offset -> the batch as stored (base offset and leader epoch patched in).
    batches: BTreeMap<i64, Bytes>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    /// Offsets below this were fdatasynced (as the log reported it).
    durable_offset: i64,
}

/// Offsets only: the batches' bytes would drown a failure message.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let batches: Vec<(i64, i64, usize)> = self
            .batches
            .iter()
            .map(|(base, b)| (*base, last_offset(b), b.len()))
            .collect();
        f.debug_struct("Model")
            .field("log_start_offset", &self.log_start_offset)
            .field("high_watermark", &self.high_watermark)
            .field("log_end_offset", &self.log_end_offset)
            .field("durable_offset", &self.durable_offset)
            .field("batches (base, last, bytes)", &batches)
            .finish()
    }
}

fn last_offset(batch: &[u8]) -> i64 {
    let base = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
    let delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
    base + i64::from(delta)
}

fn max_timestamp(batch: &[u8]) -> i64 {
    i64::from_be_bytes(batch[35..43].try_into().expect("8 bytes"))
}

impl Model {
    /// Batches a read from `start` may return: the first one whose last offset reaches
    /// `start`, and all after it.
    fn from(&self, start: i64) -> impl Iterator<Item = (&i64, &Bytes)> {
        let first = self
            .batches
            .range(..=start)
            .next_back()
            .filter(|(_, b)| last_offset(b) >= start)
            .map_or(start, |(base, _)| *base);
        self.batches.range(first..)
    }

    /// Drops batches wholly below the log start (retention or DeleteRecords may keep their
    /// bytes, but no read or scan from the log start returns them).
    fn prune(&mut self) {
        let lso = self.log_start_offset;
        self.batches.retain(|_, b| last_offset(b) >= lso);
    }

    /// The bytes `read(start, max_offset, max_bytes, min_one_batch)` must return: batches
    /// from `start`, stopping before the first whose last offset reaches `max_offset` (and
    /// the log end), as long a prefix as fits `max_bytes`, or the first batch alone.
    fn expect_read(&self, start: i64, max_offset: i64, max_bytes: u32, min_one: bool) -> Vec<u8> {
        let limit = max_offset.min(self.log_end_offset);
        let mut out = Vec::new();
        for (_, b) in self.from(start) {
            if last_offset(b) >= limit {
                break;
            }
            if out.len() + b.len() > max_bytes as usize && !(min_one && out.is_empty()) {
                break;
            }
            out.extend_from_slice(b);
        }
        out
    }
}

async fn run_async(data: &[u8]) -> Stats {
    let mut input = Input { data, at: 0 };
    let config = config(&mut input);
    if trace() {
        eprintln!("{config:?}");
    }
    let tmp = tempfile::tempdir_in(scratch_root()).expect("tempdir");
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(dir.clone(), config.clone())
        .await
        .expect("open empty log");
    let mut h = Harness {
        log: Some(log),
        dir,
        config,
        model: Model::default(),
        now_ms: 0,
        stats: Stats::default(),
    };
    for _ in 0..OPS_MAX {
        if input.is_empty() {
            break;
        }
        h.step(&mut input).await;
        if trace() {
            let log = h.log();
            eprintln!(
                "  -> lso {} hw {} leo {} durable {} segments {}",
                log.log_start_offset(),
                log.high_watermark(),
                log.log_end_offset(),
                log.durable_offset(),
                log.segment_count()
            );
        }
        h.check_state();
        h.stats.ops += 1;
        h.stats.segments_max = h.stats.segments_max.max(h.log().segment_count());
    }
    h.check_full_read().await;
    h.reopen(true).await;
    h.check_full_read().await;
    h.stats
}

struct Harness {
    log: Option<Log>,
    dir: PathBuf,
    config: LogConfig,
    model: Model,
    /// The clock handed to time-based operations; only moves forward, as a shard's does.
    now_ms: i64,
    stats: Stats,
}

impl Harness {
    fn log(&self) -> &Log {
        self.log.as_ref().expect("log is open")
    }

    async fn step(&mut self, input: &mut Input<'_>) {
        self.now_ms += i64::from(input.u16());
        let op = input.u8() % 16;
        if trace() {
            eprintln!(
                "op {op} at now_ms {} (input byte {})",
                self.now_ms, input.at
            );
        }
        match op {
            0..=3 => self.append(input).await,
            4 => self.append_replicated(input).await,
            5 | 6 => self.read(input).await,
            7 => self.truncate(input).await,
            8 => self.set_high_watermark(input),
            9 => self.delete_records(input).await,
            10 => self.retention().await,
            11 => self.flush(input).await,
            12 => self.lookups(input).await,
            13 => self.reopen(input.bool()).await,
            14 => self.crash(input).await,
            _ => {
                self.log()
                    .roll_if_due(self.now_ms)
                    .await
                    .expect("roll_if_due");
            }
        }
    }

    /// The log's offsets agree with the model's; the documented orderings hold.
    fn check_state(&mut self) {
        let log = self.log();
        let m = &self.model;
        assert_eq!(log.log_end_offset(), m.log_end_offset, "log end offset");
        assert_eq!(
            log.log_start_offset(),
            m.log_start_offset,
            "log start offset"
        );
        assert_eq!(log.high_watermark(), m.high_watermark, "high watermark");
        assert!(
            m.log_start_offset <= m.high_watermark && m.high_watermark <= m.log_end_offset,
            "lso <= hw <= leo: {m:?}"
        );
        let durable = log.durable_offset();
        assert!(
            durable <= m.log_end_offset,
            "durable {durable} past the end"
        );
        self.model.durable_offset = durable;
    }

    async fn append(&mut self, input: &mut Input<'_>) {
        let count = 1 + usize::from(input.u8() % 3);
        let epoch = i32::from(input.u8() % 4);
        let mut batches = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..count {
            let records = 1 + i32::from(input.u8() % 20);
            let payload = usize::from(input.u16() % 3000);
            let base_ts = input.timestamp();
            let max_ts = base_ts.max(input.timestamp());
            let b = build_test_batch(records, payload, base_ts, max_ts, input.u8());
            bytes.extend_from_slice(&b);
            batches.push(b);
        }
        // One in eight appends carries a damaged byte in the CRC-covered part (or the magic):
        // it must be refused whole.
        // (Bytes 0..16 of each batch, base offset, length and leader epoch, are outside the
        // CRC: the first and last are overwritten at append.)
        let damage = input.u8().is_multiple_of(8).then(|| {
            let which = usize::from(input.u8()) % batches.len();
            let start: usize = batches[..which].iter().map(Vec::len).sum();
            let len = batches[which].len();
            let at = start + 16 + usize::from(input.u16()) % (len - 16);
            bytes[at] ^= 1 | input.u8();
        });
        let too_large = batches
            .iter()
            .any(|b| b.len() as u64 > u64::from(self.config.max_batch_bytes));
        let leo = self.model.log_end_offset;
        let result = self.log().append(Bytes::from(bytes), epoch).await;
        if damage.is_some() || too_large {
            let err = result.expect_err("a damaged or too large batch is refused");
            assert!(
                matches!(err, engine::AppendError::InvalidBatch { .. }),
                "{err}"
            );
            return;
        }
        let info = result.expect("append");
        assert_eq!(info.first_offset, leo, "offsets assigned from the log end");
        let mut next = leo;
        for mut b in batches {
            let records = i64::from(i32::from_be_bytes(b[57..61].try_into().expect("4")));
            patch_header(&mut b, next, epoch);
            self.model.batches.insert(next, Bytes::from(b));
            next += records;
        }
        assert_eq!(info.last_offset, next - 1);
        self.model.log_end_offset = next;
        self.stats.appended_batches += count;
    }

    /// A follower's append: offsets chosen by the "leader", at or after the log end, with a
    /// gap now and then (compaction, or a replica jumping ahead).
    async fn append_replicated(&mut self, input: &mut Input<'_>) {
        let leo = self.model.log_end_offset;
        let gap = match input.u8() % 8 {
            0 => i64::from(input.u16()),
            1 => i64::from(input.u32()) * 4,
            _ => 0,
        };
        let records = 1 + i32::from(input.u8() % 10);
        let ts = input.timestamp();
        let mut b = build_test_batch(records, usize::from(input.u16() % 2000), ts, ts, input.u8());
        let base = leo + gap;
        let epoch = i32::from(input.u8() % 4);
        if trace() {
            eprintln!("  append_replicated base {base} records {records} epoch {epoch}");
        }
        patch_header(&mut b, base, epoch);
        let info = self
            .log()
            .append_replicated(Bytes::from(b.clone()))
            .await
            .expect("append_replicated");
        assert_eq!(
            (info.first_offset, info.last_offset),
            (base, base + i64::from(records) - 1)
        );
        self.model.batches.insert(base, Bytes::from(b));
        self.model.log_end_offset = base + i64::from(records);
        self.stats.appended_batches += 1;
        // A regression must be refused and change nothing.
        if input.u8().is_multiple_of(4) && base > 0 {
            let mut old = build_test_batch(1, 10, 0, 0, 0);
            patch_header(&mut old, base + i64::from(records) - 1, epoch);
            let err = self.log().append_replicated(Bytes::from(old)).await;
            assert!(
                matches!(err, Err(engine::AppendError::OffsetNotMonotonic { .. })),
                "{err:?}"
            );
        }
    }

    async fn read(&mut self, input: &mut Input<'_>) {
        let m = &self.model;
        let start = input.in_range(m.log_start_offset - 1, m.log_end_offset + 1);
        let max_offset = match input.u8() % 3 {
            0 => i64::MAX,
            1 => m.high_watermark,
            _ => input.in_range(m.log_start_offset, m.log_end_offset + 1),
        };
        let max_bytes = match input.u8() % 3 {
            0 => u32::MAX,
            _ => u32::from(input.u16()),
        };
        let min_one = input.bool();
        let result = self.log().read(start, max_offset, max_bytes, min_one).await;
        if start < m.log_start_offset || start > m.log_end_offset {
            assert!(
                matches!(result, Err(ReadError::OffsetOutOfRange { .. })),
                "read at {start} outside [{}, {}]: {result:?}",
                m.log_start_offset,
                m.log_end_offset
            );
            return;
        }
        let result = result.expect("read");
        assert_eq!(result.log_start_offset, m.log_start_offset);
        assert_eq!(result.log_end_offset, m.log_end_offset);
        let got = self
            .log()
            .read_bytes(&result.slices)
            .await
            .expect("read_bytes");
        assert_eq!(got.len(), result.bytes as usize, "ReadResult::bytes");
        let want = self
            .model
            .expect_read(start, max_offset, max_bytes, min_one);
        assert!(
            got[..] == want[..],
            "read({start}, {max_offset}, {max_bytes}, {min_one}): got {} bytes, want {}",
            got.len(),
            want.len()
        );
    }

    /// Everything from the log start, in one read.
    async fn check_full_read(&mut self) {
        let (lso, leo) = (self.model.log_start_offset, self.model.log_end_offset);
        let result = self
            .log()
            .read(lso, i64::MAX, u32::MAX, true)
            .await
            .expect("read all");
        let got = self
            .log()
            .read_bytes(&result.slices)
            .await
            .expect("read_bytes");
        let want = self.model.expect_read(lso, i64::MAX, u32::MAX, true);
        assert!(
            got[..] == want[..],
            "full read of [{lso}, {leo}): got {} bytes, want {}",
            got.len(),
            want.len()
        );
    }

    /// Removes every batch with last offset >= `offset`; below the log start (or when the
    /// batch holding `offset` began below it), the log restarts empty at `offset`.
    async fn truncate(&mut self, input: &mut Input<'_>) {
        let m = &mut self.model;
        let offset = input.in_range((m.log_start_offset - 2).max(0), m.log_end_offset + 1);
        let log = self.log.as_ref().expect("open");
        if trace() {
            eprintln!("  truncate_to {offset}");
        }
        log.truncate_to(offset).await.expect("truncate_to");
        if offset >= m.log_end_offset {
            return;
        }
        let (lso, leo) = (log.log_start_offset(), log.log_end_offset());
        m.batches.retain(|_, b| last_offset(b) < offset);
        if offset < m.log_start_offset || (lso == offset && lso != m.log_start_offset) {
            // Kafka's truncateFullyAndStartAt: nothing valid is left.
            assert!(
                m.batches.is_empty(),
                "restarted at {offset} over batches {m:?}"
            );
            assert_eq!((lso, leo), (offset, offset), "a restart at {offset}");
            m.log_start_offset = offset;
            m.log_end_offset = offset;
        } else {
            // Without gaps the log end is exactly the cut; with gaps (replicated batches) it
            // is the end of the last kept batch, or the segment's base if none is left.
            let kept_end = m
                .batches
                .values()
                .next_back()
                .map_or(i64::MIN, |b| last_offset(b) + 1);
            assert!(
                leo <= offset && leo >= kept_end,
                "truncate_to({offset}) left {leo}"
            );
            m.log_end_offset = leo;
            m.log_start_offset = m.log_start_offset.min(leo);
        }
        // Kafka's truncateFullyAndStartAt moves it up to a restarted log's start.
        m.high_watermark = m.high_watermark.clamp(m.log_start_offset, m.log_end_offset);
        if let Some(b) = m.batches.values().next_back() {
            let epoch = i32::from_be_bytes(b[12..16].try_into().expect("4"));
            assert_eq!(log.last_leader_epoch(), Some(epoch), "epoch after truncate");
        }
    }

    fn set_high_watermark(&mut self, input: &mut Input<'_>) {
        let m = &mut self.model;
        let hw = input.in_range(m.high_watermark - 1, m.log_end_offset + 1);
        self.log.as_ref().expect("open").set_high_watermark(hw);
        // Clamped to the log end, never moved backwards.
        m.high_watermark = m.high_watermark.max(hw.min(m.log_end_offset));
    }

    async fn delete_records(&mut self, input: &mut Input<'_>) {
        let m = &self.model;
        let offset = input.in_range(m.log_start_offset - 1, m.high_watermark + 1);
        if trace() {
            eprintln!("  delete_records_before {offset}");
        }
        let result = self.log().delete_records_before(offset).await;
        let m = &mut self.model;
        if offset > m.high_watermark || offset < 0 {
            assert!(
                result.is_err(),
                "delete_records_before({offset}) past hw {m:?}"
            );
            return;
        }
        let lso = result.expect("delete_records_before");
        m.log_start_offset = m.log_start_offset.max(offset);
        assert_eq!(lso, m.log_start_offset);
        m.prune();
    }

    async fn retention(&mut self) {
        let report = self
            .log()
            .enforce_retention(self.now_ms)
            .await
            .expect("enforce_retention");
        let m = &mut self.model;
        let lso = report.log_start_offset;
        assert!(lso >= m.log_start_offset, "{report:?} {m:?}");
        // Whole segments go, each ending at or below the high watermark. The new start is
        // the next segment's base: a batch start, or past a gap (replicated batches) it may
        // pass the high watermark, which follows it (as Kafka's maybeIncrementLogStartOffset)
        // over offsets that hold no batch.
        let moved = if lso > m.log_start_offset {
            lso
        } else {
            i64::MIN
        };
        for (base, b) in m.batches.range(..moved) {
            assert!(
                last_offset(b) < lso,
                "retention put the log start {lso} inside batch {base}: {m:?}"
            );
            assert!(
                last_offset(b) < m.high_watermark,
                "retention removed batch {base} at or above the high watermark: {m:?}"
            );
            assert!(
                self.config.retention_ms >= 0 || self.config.retention_bytes >= 0,
                "infinite retention removed batch {base}: {m:?}"
            );
        }
        m.high_watermark = m.high_watermark.max(lso);
        m.log_start_offset = lso;
        m.prune();
    }

    async fn flush(&mut self, input: &mut Input<'_>) {
        if input.bool() {
            self.log()
                .flush_tick(self.now_ms)
                .await
                .expect("flush_tick");
        } else {
            let m = &self.model;
            let offset = input.in_range(m.log_start_offset - 1, m.log_end_offset + 1);
            self.log().wait_durable(offset).await.expect("wait_durable");
            let want = offset.saturating_add(1).min(m.log_end_offset);
            assert!(
                self.log().durable_offset() >= want,
                "wait_durable({offset})"
            );
        }
    }

    /// offset_for_timestamp and scan_headers against the model.
    async fn lookups(&mut self, input: &mut Input<'_>) {
        let m = &self.model;
        let ts = input.timestamp();
        let found = self
            .log()
            .offset_for_timestamp(ts)
            .await
            .expect("offset_for_timestamp");
        let want = m
            .batches
            .iter()
            .find(|(_, b)| max_timestamp(b) >= ts)
            .map(|(base, b)| (max_timestamp(b), (*base).max(m.log_start_offset)));
        assert_eq!(found, want, "offset_for_timestamp({ts})");

        let from = input.in_range(m.log_start_offset, m.log_end_offset);
        let mut scanned = Vec::new();
        self.log()
            .scan_headers(from, |h| scanned.push((h.base_offset(), h.last_offset())))
            .await
            .expect("scan_headers");
        let want: Vec<(i64, i64)> = m
            .from(from)
            .map(|(base, b)| (*base, last_offset(b)))
            .collect();
        assert_eq!(scanned, want, "scan_headers({from})");
    }

    /// Closes (or just drops) the log and opens it again: nothing appended is lost.
    async fn reopen(&mut self, close: bool) {
        let log = self.log.take().expect("open");
        if close {
            log.close().await.expect("close");
            assert!(
                log.append(Bytes::from(build_test_batch(1, 0, 0, 0, 0)), 0)
                    .await
                    .is_err()
            );
        }
        drop(log);
        let (log, report) = Log::open(self.dir.clone(), self.config.clone())
            .await
            .expect("reopen");
        assert!(
            report.truncations.is_empty(),
            "a clean reopen cut data: {report:?}"
        );
        self.log = Some(log);
        self.stats.reopens += 1;
        self.after_reopen();
    }

    /// The high watermark comes from the last checkpoint (it may be older) and the durable
    /// offset is the log end (recovery synced what it kept).
    fn after_reopen(&mut self) {
        let log = self.log();
        let (lso, hw, leo) = (
            log.log_start_offset(),
            log.high_watermark(),
            log.log_end_offset(),
        );
        let m = &mut self.model;
        assert_eq!(leo, m.log_end_offset, "reopen changed the log end");
        // Recovery takes the checkpointed log start, raised to the first segment's base (as
        // Kafka's LogLoader): with a gap (replicated batches) after DeleteRecords it may move
        // forward over offsets that hold no batch, never past one.
        let first_batch = m
            .batches
            .iter()
            .find(|(_, b)| last_offset(b) >= m.log_start_offset)
            .map_or(leo, |(base, _)| *base);
        assert!(
            lso == m.log_start_offset.min(leo) || (lso > m.log_start_offset && lso <= first_batch),
            "reopen moved the log start from {} to {lso} (first batch at {first_batch})",
            m.log_start_offset
        );
        assert!(
            hw <= m.high_watermark.max(lso),
            "hw {hw} grew past {}",
            m.high_watermark
        );
        m.log_start_offset = lso;
        m.high_watermark = hw;
        m.prune();
    }

    /// Drops the log, damages the active segment's unsynced tail as a crash might, reopens.
    async fn crash(&mut self, input: &mut Input<'_>) {
        let durable = self.log().durable_offset();
        drop(self.log.take());
        let Some(active) = active_segment(&self.dir) else {
            panic!("no segment file in {}", self.dir.display());
        };
        let bytes = std::fs::read(&active).expect("read active segment");
        // Batches wholly below the durable offset are fdatasynced; cut nowhere before them.
        let (mut pos, mut keep, mut data_end) = (0usize, 0usize, 0usize);
        while let Some(header) = bytes.get(pos..pos + 61) {
            let length = i32::from_be_bytes(header[8..12].try_into().expect("4"));
            let total = usize::try_from(length).unwrap_or(0) + 12;
            if total < 61 || pos + total > bytes.len() {
                break;
            }
            if last_offset(header) < durable {
                keep = pos + total;
            }
            pos += total;
            data_end = pos;
        }
        let cut = keep + input.u32() as usize % (data_end - keep + 1);
        let torn = usize::from(input.u8() % 128);
        let fill = if input.bool() { 0xFF } else { 0x00 };
        let mut damaged = bytes[..cut].to_vec();
        damaged.resize(cut + torn, fill);
        if self.config.preallocate && input.bool() {
            damaged.resize(damaged.len().max(bytes.len()), 0);
        }
        if trace() {
            eprintln!(
                "  crash: {} cut at {cut} of {} (durable batches end at {keep}), {torn} torn bytes",
                active.display(),
                bytes.len()
            );
        }
        std::fs::write(&active, &damaged).expect("write damaged segment");

        let (log, report) = Log::open(self.dir.clone(), self.config.clone())
            .await
            .expect("reopen after a crash");
        let leo = log.log_end_offset();
        let m = &mut self.model;
        assert!(
            leo >= durable && leo <= m.log_end_offset,
            "after a crash the log ends at {leo}, durable was {durable}, end {}: {report:?}",
            m.log_end_offset
        );
        // A prefix survives: every batch ending below the new end, nothing after it.
        m.batches.retain(|_, b| last_offset(b) < leo);
        m.log_end_offset = leo;
        self.log = Some(log);
        self.stats.crashes += 1;
        self.after_reopen();
    }
}

/// The segment file with the highest base offset.
fn active_segment(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
}
