//! Engine benchmarks: append (1 KiB / 16 KiB / 1 MiB batches, with and without a
//! per-append fdatasync), reads, one cleaner round (compaction), and the same disk's raw sequential buffered write bandwidth
//! and raw fdatasync latency, measured in the same run so the engine's numbers can be read
//! as ratios of what the disk gives.
//!
//!   cargo bench -p engine --bench engine            # criterion groups + the ratio report
//!   ENGINE_BENCH_DIR=/mnt/disk cargo bench -p engine # put the files on another disk
//!
//! Writes are bounded: logs and raw files roll every 64 MiB and keep at most 256 MiB.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::fs::{File, OpenOptions};
use compio::io::AsyncWriteAtExt;
use criterion::{BenchmarkId, Criterion, Throughput};
use engine::batch::build_test_batch;
use engine::{Log, LogConfig};

const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (16 * 1024, "16KiB"), (1024 * 1024, "1MiB")];
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const KEEP_BYTES: u64 = 256 * 1024 * 1024;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("ENGINE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).expect("bench dir")
}

fn runtime() -> compio::runtime::Runtime {
    compio::runtime::Runtime::new().expect("runtime")
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        retention_bytes: KEEP_BYTES as i64,
        ..LogConfig::default()
    }
}

fn batch(bytes: usize) -> Bytes {
    Bytes::from(build_test_batch(1, bytes - 61, 0, 0, 0x5A))
}

/// Sequential buffered writes of `chunk` bytes into 64 MiB files, the same shape as the log.
struct RawWriter {
    dir: PathBuf,
    file: File,
    files: Vec<PathBuf>,
    position: u64,
}

impl RawWriter {
    async fn new(dir: &Path) -> RawWriter {
        let path = dir.join("raw-0");
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .await
            .unwrap();
        RawWriter {
            dir: dir.to_path_buf(),
            file,
            files: vec![path],
            position: 0,
        }
    }
    async fn write(&mut self, buf: Vec<u8>) -> Vec<u8> {
        if self.position + buf.len() as u64 > SEGMENT_BYTES {
            let path = self.dir.join(format!("raw-{}", self.files.len()));
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .await
                .unwrap();
            self.files.push(path);
            self.position = 0;
            let keep = (KEEP_BYTES / SEGMENT_BYTES) as usize;
            if self.files.len() > keep {
                let old = self.files.len() - keep - 1;
                let _ = std::fs::remove_file(&self.files[old]);
            }
        }
        let compio::BufResult(res, buf) = self.file.write_all_at(buf, self.position).await;
        res.unwrap();
        self.position += buf.len() as u64;
        buf
    }
}

fn raw_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_write");
    for (size, name) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let dir = bench_dir();
            let rt = runtime();
            let mut w = rt.block_on(RawWriter::new(dir.path()));
            let mut buf = vec![0x5Au8; size];
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        buf = w.write(std::mem::take(&mut buf)).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.throughput(Throughput::Bytes(1024));
    group.bench_function("fdatasync_1KiB", |b| {
        let dir = bench_dir();
        let rt = runtime();
        let mut w = rt.block_on(RawWriter::new(dir.path()));
        let mut buf = vec![0x5Au8; 1024];
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    buf = w.write(std::mem::take(&mut buf)).await;
                    w.file.sync_data().await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for (size, name) in SIZES {
        for durable in [false, true] {
            group.throughput(Throughput::Bytes(size as u64));
            let id = format!(
                "{name}/{}",
                if durable { "fdatasync" } else { "page_cache" }
            );
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                let dir = bench_dir();
                let rt = runtime();
                let (log, _) = rt
                    .block_on(Log::open(dir.path().into(), log_config()))
                    .unwrap();
                let data = batch(size);
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for i in 0..iters {
                            let info = log.append(data.clone(), 0).await.unwrap();
                            if durable {
                                log.wait_durable(info.last_offset).await.unwrap();
                            }
                            if i % 256 == 255 {
                                log.enforce_retention(0).await.unwrap();
                            }
                        }
                        start.elapsed()
                    })
                });
                rt.block_on(log.close()).unwrap();
            });
        }
    }
    group.finish();
}

fn read(c: &mut Criterion, quick: bool) {
    let mut group = c.benchmark_group("read");
    for (size, name) in [(1024usize, "1KiB_batches"), (16 * 1024, "16KiB_batches")] {
        let dir = bench_dir();
        let rt = runtime();
        let (log, _) = rt
            .block_on(Log::open(dir.path().into(), log_config()))
            .unwrap();
        let data = batch(size);
        let log_bytes = if quick { 2 } else { 32 } * 1024 * 1024;
        let total = log_bytes / size;
        rt.block_on(async {
            for _ in 0..total {
                log.append(data.clone(), 0).await.unwrap();
            }
        });
        let leo = log.log_end_offset();
        group.throughput(Throughput::Bytes(1024 * 1024));
        group.bench_function(BenchmarkId::new("locate_1MiB", name), |b| {
            let mut at = 0i64;
            b.iter(|| {
                let r = rt
                    .block_on(log.read(at, i64::MAX, 1024 * 1024, true))
                    .unwrap();
                at = (at + 97) % leo;
                r.bytes
            });
        });
        group.bench_function(BenchmarkId::new("copy_1MiB", name), |b| {
            let mut at = 0i64;
            b.iter(|| {
                rt.block_on(async {
                    let r = log.read(at, i64::MAX, 1024 * 1024, true).await.unwrap();
                    at = (at + 97) % leo;
                    log.read_bytes(&r.slices).await.unwrap().len()
                })
            });
        });
    }
    group.finish();
}

/// What append validation costs per batch (CRC32C over the batch plus framing checks).
fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    for (size, name) in SIZES {
        let data = batch(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                engine::batch::validate_batch(&data, u32::MAX >> 4, true)
                    .unwrap()
                    .1
            })
        });
    }
    group.finish();
}

/// Validation of batches of ~100-byte records (10, 160 and 10 240 per batch): `producer` is
/// the append path's check (framing, CRC32C, and counting the records by their length
/// prefixes), `leader` the same without the record walk (what a producer batch cost before the
/// walk existed), `walk` the walk alone. Side by side in one run, so their ratio holds even on
/// a loaded machine.
fn validate_records(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_records");
    for (size, name) in SIZES {
        let records = (size / 100) as i32;
        let data = build_test_batch(records, size - 61, 0, 0, 0x5A);
        group.throughput(Throughput::Bytes(size as u64));
        for (kind, strict) in [("producer", true), ("leader", false)] {
            group.bench_function(BenchmarkId::new(kind, name), |b| {
                b.iter(|| {
                    engine::batch::validate_batch(&data, u32::MAX >> 4, strict)
                        .unwrap()
                        .1
                })
            });
        }
        group.bench_function(BenchmarkId::new("walk", name), |b| {
            b.iter(|| engine::batch::count_records(&data[61..]).unwrap())
        });
    }
    group.finish();
}

/// A batch of `records` keyed records (key `k<n>` for n from `first_key`, cycling over
/// `keys`), each with a `value_bytes` value, offsets from 0 (the log assigns them).
fn keyed_batch(first_key: u64, keys: u64, records: u64, value_bytes: usize) -> Bytes {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut raw = ((v << 1) ^ (v >> 63)) as u64;
        while raw >= 0x80 {
            out.push((raw & 0x7f) as u8 | 0x80);
            raw >>= 7;
        }
        out.push(raw as u8);
    }
    let mut body = Vec::new();
    let value = vec![0x5Au8; value_bytes];
    for i in 0..records {
        let key = format!("k{}", (first_key + i) % keys);
        let mut r = vec![0u8];
        varint(&mut r, 0);
        varint(&mut r, i as i64);
        varint(&mut r, key.len() as i64);
        r.extend_from_slice(key.as_bytes());
        varint(&mut r, value.len() as i64);
        r.extend_from_slice(&value);
        varint(&mut r, 0);
        varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let mut b = Vec::with_capacity(61 + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&((records - 1) as i32).to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(records as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = engine::batch::batch_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Cleaner throughput: one round over a log of `LOG_BYTES` of 1 KiB keyed records, in MB/s of
/// dirty log; "overwrites" (1,000 keys: ~94% of the records go) and "unique" (every key once:
/// everything stays, the round still reads, maps and copies it all).
fn clean(c: &mut Criterion, quick: bool) {
    const RECORD_VALUE_BYTES: usize = 1000;
    const RECORDS_PER_BATCH: u64 = 16;
    let log_bytes: u64 = if quick { 2 << 20 } else { 16 << 20 };
    let batches = log_bytes / (RECORDS_PER_BATCH * 1024);
    let mut group = c.benchmark_group("clean");
    group.throughput(Throughput::Bytes(log_bytes));
    for (name, keys) in [("overwrites", 1_000u64), ("unique", u64::MAX)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let rt = runtime();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = bench_dir();
                    total += rt.block_on(async {
                        let config = LogConfig {
                            segment_bytes: 1 << 20,
                            ..LogConfig::default()
                        };
                        let (log, _) = Log::open(dir.path().join("log"), config).await.unwrap();
                        for i in 0..batches {
                            let batch = keyed_batch(
                                i * RECORDS_PER_BATCH,
                                keys,
                                RECORDS_PER_BATCH,
                                RECORD_VALUE_BYTES,
                            );
                            log.append(batch, 0).await.unwrap();
                        }
                        log.set_high_watermark(log.log_end_offset());
                        log.write_producer_snapshot(log.active_segment_base(), b"", &[])
                            .await
                            .unwrap();
                        let mut map = engine::OffsetMap::with_memory(64 << 20);
                        let mut throttle = engine::Throttle::new(u64::MAX);
                        let keep = |_: &engine::batch::BatchHeader| false;
                        let start = Instant::now();
                        let report = log
                            .clean(engine::CleanOptions {
                                now_ms: 0,
                                last_stable_offset: i64::MAX,
                                delete_retention_ms: 0,
                                min_compaction_lag_ms: 0,
                                map: &mut map,
                                throttle: &mut throttle,
                                retain_batch: &keep,
                            })
                            .await
                            .unwrap();
                        let took = start.elapsed();
                        assert!(report.bytes_written > 0, "the round rewrote the log");
                        took
                    });
                }
                total
            })
        });
    }
    group.finish();
}

/// Appends on one log while the same runtime (one shard) cleans another: 1 KiB appends (page
/// cache) one after the other, their latency with the cleaner idle and with rounds running
/// (unthrottled, and throttled to 50 MB/s), in alternating phases of the same run. Prints
/// p50 / p99 / max and the p99 ratios (a thread-per-core shard runs the cleaner between its
/// requests: this is what an append on that shard waits).
fn clean_interference(quick: bool) {
    let rt = runtime();
    let appends = if quick { 200 } else { 5_000 };
    let dirty_batches: u64 = if quick { 64 } else { 1_024 };
    let rounds = if quick { 1 } else { 3 };
    rt.block_on(async {
        let dir = bench_dir();
        let (hot, _) = Log::open(dir.path().join("hot"), log_config())
            .await
            .unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let (cold, _) = Log::open(dir.path().join("cold"), config).await.unwrap();
        let cold = Rc::new(cold);
        let data = batch(1024);
        let mut phases: Vec<(&str, Vec<Duration>)> = vec![
            ("idle", Vec::new()),
            ("cleaning", Vec::new()),
            ("cleaning 50MB/s", Vec::new()),
        ];
        for _ in 0..rounds {
            for phase in phases.iter_mut() {
                // Fresh dirty data for the cleaner: 16 MiB of overwrites.
                let base = cold.log_end_offset() as u64;
                for i in 0..dirty_batches {
                    cold.append(keyed_batch(base + i * 16, 1_000, 16, 1000), 0)
                        .await
                        .unwrap();
                }
                cold.set_high_watermark(cold.log_end_offset());
                cold.write_producer_snapshot(cold.active_segment_base(), b"", &[])
                    .await
                    .unwrap();
                let stop = Rc::new(std::cell::Cell::new(false));
                let cleaner = (phase.0 != "idle").then(|| {
                    let (cold, stop) = (cold.clone(), stop.clone());
                    let budget = if phase.0 == "cleaning" {
                        u64::MAX
                    } else {
                        50_000_000
                    };
                    compio::runtime::spawn(async move {
                        let mut map = engine::OffsetMap::with_memory(64 << 20);
                        let mut throttle = engine::Throttle::new(budget);
                        let keep = |_: &engine::batch::BatchHeader| false;
                        let mut bytes = 0;
                        while !stop.get() {
                            let r = cold
                                .clean(engine::CleanOptions {
                                    now_ms: 0,
                                    last_stable_offset: i64::MAX,
                                    delete_retention_ms: 0,
                                    min_compaction_lag_ms: 0,
                                    map: &mut map,
                                    throttle: &mut throttle,
                                    retain_batch: &keep,
                                })
                                .await
                                .unwrap();
                            bytes += r.bytes_read;
                            if r.dirty_to == r.dirty_from {
                                compio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                        bytes
                    })
                });
                for _ in 0..appends / rounds {
                    let t = Instant::now();
                    hot.append(data.clone(), 0).await.unwrap();
                    phase.1.push(t.elapsed());
                    // Let the cleaner run between appends, as requests arrive on a shard.
                    compio::time::sleep(Duration::from_micros(200)).await;
                }
                stop.set(true);
                if let Some(task) = cleaner {
                    let _ = task.await;
                }
            }
        }
        let mut p99s = Vec::new();
        println!(
            "cleaner interference ({}): 1 KiB appends on a shard that cleans another log",
            if quick {
                "test mode, tiny sample"
            } else {
                "full"
            }
        );
        for (name, mut lat) in phases {
            lat.sort();
            let p99 = percentile(&lat, 0.99);
            println!(
                "  {name:16} p50 {:?} p99 {:?} max {:?} ({} appends)",
                percentile(&lat, 0.50),
                p99,
                lat.last().copied().unwrap_or_default(),
                lat.len()
            );
            p99s.push(p99);
        }
        println!(
            "  p99 ratio cleaning / idle {:.2}, throttled / idle {:.2}",
            p99s[1].as_secs_f64() / p99s[0].as_secs_f64(),
            p99s[2].as_secs_f64() / p99s[0].as_secs_f64()
        );
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints the two ratios, measured back to back on the same disk:
/// non-durable append bandwidth / raw buffered write bandwidth (1 MiB), and durable
/// append p99 under concurrency (group commit) / raw fdatasync p99.
fn ratio_report(quick: bool) {
    let rt = runtime();
    let ops = if quick { 20 } else { 400 };
    rt.block_on(async {
        // Bandwidth: 1 MiB writes, 256 MiB per pass (20 MiB in test mode), raw and log
        // passes alternated three times; the median of each is compared.
        let n = if quick { 20 } else { 256 };
        let mut raw_passes = Vec::new();
        let mut log_passes = Vec::new();
        for _ in 0..3 {
            let dir = bench_dir();
            let mut w = RawWriter::new(dir.path()).await;
            let mut buf = vec![0x5Au8; 1024 * 1024];
            let start = Instant::now();
            for _ in 0..n {
                buf = w.write(std::mem::take(&mut buf)).await;
            }
            raw_passes.push(n as f64 / start.elapsed().as_secs_f64());
            drop(w);
            drop(dir);
            let dir = bench_dir();
            let (log, _) = Log::open(dir.path().into(), log_config()).await.unwrap();
            let data = batch(1024 * 1024);
            let start = Instant::now();
            for _ in 0..n {
                log.append(data.clone(), 0).await.unwrap();
            }
            log_passes.push(n as f64 / start.elapsed().as_secs_f64());
            log.close().await.unwrap();
        }
        raw_passes.sort_by(f64::total_cmp);
        log_passes.sort_by(f64::total_cmp);
        let (raw_bw, log_bw) = (raw_passes[1], log_passes[1]);

        // Latency, in alternating rounds so drift of a shared disk hits both alike:
        // raw 1 KiB write + fdatasync one at a time, then 1 KiB durable appends from 16
        // concurrent producers sharing fdatasyncs (group commit).
        let producers = 16;
        let rounds = if quick { 1 } else { 4 };
        let mut raw = Vec::new();
        let mut ours = Vec::new();
        let mut sync_rounds = 0;
        for _ in 0..rounds {
            let dir = bench_dir();
            let mut w = RawWriter::new(dir.path()).await;
            let mut buf = vec![0x5Au8; 1024];
            for _ in 0..ops / rounds {
                let t = Instant::now();
                buf = w.write(std::mem::take(&mut buf)).await;
                w.file.sync_data().await.unwrap();
                raw.push(t.elapsed());
            }
            drop(w);
            drop(dir);

            let dir = bench_dir();
            let (log, _) = Log::open(dir.path().into(), log_config()).await.unwrap();
            let log = Rc::new(log);
            let mut tasks = Vec::new();
            for _ in 0..producers {
                let log = log.clone();
                let n = ops / rounds / producers * 4;
                tasks.push(compio::runtime::spawn(async move {
                    let data = batch(1024);
                    let mut lat = Vec::with_capacity(n);
                    for _ in 0..n {
                        let t = Instant::now();
                        let info = log.append(data.clone(), 0).await.unwrap();
                        log.wait_durable(info.last_offset).await.unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
            for t in tasks {
                ours.extend(t.await.unwrap());
            }
            sync_rounds += log.sync_rounds();
            log.close().await.unwrap();
        }
        raw.sort();
        ours.sort();

        let (raw50, raw99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
        let (our50, our99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
        println!("engine ratio report ({}):", if quick { "test mode, tiny sample" } else { "full" });
        println!(
            "  bandwidth 1 MiB: raw buffered write {raw_bw:.0} MiB/s, append (page cache) {log_bw:.0} MiB/s, ratio {:.2} (target >= 0.80)",
            log_bw / raw_bw
        );
        println!("  raw 1 KiB write+fdatasync: p50 {raw50:?} p99 {raw99:?} ({} ops)", raw.len());
        println!(
            "  durable 1 KiB append, {producers} producers, group commit: p50 {our50:?} p99 {our99:?} ({} ops, {sync_rounds} fdatasync rounds), p99 ratio {:.2} (target <= 1.50)",
            ours.len(),
            our99.as_secs_f64() / raw99.as_secs_f64()
        );
    });
}

fn main() {
    let quick =
        !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--quick");
    if std::env::var("ENGINE_BENCH_RATIO_ONLY").is_ok_and(|v| v == "1") {
        ratio_report(quick);
        return;
    }
    if std::env::var("ENGINE_BENCH_CLEAN_ONLY").is_ok_and(|v| v == "1") {
        clean_interference(quick);
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    validate(&mut c);
    validate_records(&mut c);
    raw_write(&mut c);
    append(&mut c);
    read(&mut c, quick);
    clean(&mut c, quick);
    c.final_summary();
    ratio_report(quick);
    clean_interference(quick);
}
