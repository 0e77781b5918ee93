//! `iotune`: measures the data directory's disk with io_uring and writes an I/O profile the
//! broker reads at start-up to size its I/O queue depth and flush batching.
//!
//! Phases (share of `--duration`): sequential write 30% (128 KiB, QD 16, O_DIRECT, wrapping
//! over a preallocated file), sequential read 20% (128 KiB, QD 16), random read 30% (4 KiB,
//! split over QD 1/4/16/64), fdatasync 20% (4 KiB buffered write + fdatasync at QD 1, like the
//! broker's group commit). The file is removed afterwards. Bounded: duration <= 600 s, file <=
//! a quarter of the free space.
//!
//! Profile schema: [`IoProfile`] (JSON, `schema_version` 1), written to
//! `DATA_DIR/io-profile.json` unless `--output` says otherwise.

pub mod ring;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use io_uring::IoUring;
use serde::{Deserialize, Serialize};

use crate::sys;
use ring::{DIRECT_ALIGN_BYTES, Job, OpKind, run_job, run_sync_job};

/// Profile file name inside the data directory.
pub const PROFILE_FILE_NAME: &str = "io-profile.json";
pub const SCHEMA_VERSION: u32 = 1;
pub const DURATION_S_DEFAULT: u64 = 8;
pub const DURATION_S_MAX: u64 = 600;
pub const FILE_BYTES_DEFAULT: u64 = 1 << 30;
pub const FILE_BYTES_MIN: u64 = 16 << 20;
pub const SEQ_BLOCK_BYTES: usize = 128 << 10;
pub const SEQ_QUEUE_DEPTH: usize = 16;
pub const RAND_BLOCK_BYTES: usize = 4 << 10;
pub const RAND_QUEUE_DEPTHS: [usize; 4] = [1, 4, 16, 64];
pub const SYNC_BLOCK_BYTES: usize = 4 << 10;
/// Ring size: the deepest job plus room.
const RING_ENTRIES: u32 = 128;
/// A queue depth counts as enough once it reaches this share of the best IOPS.
const KNEE_SHARE: f64 = 0.9;
/// Bounds of the recommended flush batch.
pub const FLUSH_BATCH_BYTES_MIN: u64 = 64 << 10;
pub const FLUSH_BATCH_BYTES_MAX: u64 = 16 << 20;
const _: () = assert!(
    SEQ_BLOCK_BYTES.is_multiple_of(DIRECT_ALIGN_BYTES)
        && RAND_BLOCK_BYTES.is_multiple_of(DIRECT_ALIGN_BYTES)
);
const _: () =
    assert!(RAND_QUEUE_DEPTHS[3] as u32 <= RING_ENTRIES && SEQ_QUEUE_DEPTH as u32 <= RING_ENTRIES);
const _: () = assert!(FILE_BYTES_MIN.is_multiple_of(SEQ_BLOCK_BYTES as u64));

/// The profile file (schema_version 1). Rates are per second; latencies in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoProfile {
    pub schema_version: u32,
    pub data_dir: String,
    pub measured_at_unix_s: u64,
    pub duration_s: f64,
    /// False when the filesystem refused O_DIRECT (tmpfs): reads then measure the page cache.
    pub direct_io: bool,
    pub file_bytes: u64,
    pub seq_write: Bandwidth,
    pub seq_read: Bandwidth,
    pub rand_read: RandRead,
    pub fdatasync_latency_us: Percentiles,
    pub recommended: Recommended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub block_bytes: u64,
    pub queue_depth: u32,
    pub bytes_per_sec: u64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandRead {
    pub block_bytes: u64,
    /// IOPS at each queue depth tried.
    pub points: Vec<QueueDepthPoint>,
    pub iops_max: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDepthPoint {
    pub queue_depth: u32,
    pub iops: u64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// What the broker should use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommended {
    /// In-flight I/Os per shard: the smallest tried depth reaching 90% of the best IOPS.
    pub io_queue_depth: u32,
    /// Group-commit batch: bytes the disk writes during one median fdatasync.
    pub flush_batch_bytes: u64,
    /// Group-commit window: one median fdatasync.
    pub flush_interval_us: u64,
}

#[derive(Debug, Clone)]
pub struct IotuneOptions {
    pub data_dir: PathBuf,
    pub duration: Duration,
    pub file_bytes: u64,
    /// Where to write the profile; None: DATA_DIR/io-profile.json.
    pub output: Option<PathBuf>,
}

/// Runs all phases and writes the profile; returns it.
pub fn run(opts: &IotuneOptions) -> anyhow::Result<IoProfile> {
    ensure!(
        opts.duration.as_secs() <= DURATION_S_MAX,
        "--duration is at most {DURATION_S_MAX} s"
    );
    ensure!(
        opts.duration >= Duration::from_millis(400),
        "--duration must be at least 0.4 s"
    );
    fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let free = sys::available_bytes(&opts.data_dir).context("statvfs on the data dir")?;
    let file_bytes = round_down(opts.file_bytes.min(free / 4), SEQ_BLOCK_BYTES as u64);
    ensure!(
        file_bytes >= FILE_BYTES_MIN,
        "need at least {} MiB free x4 in {}",
        FILE_BYTES_MIN >> 20,
        opts.data_dir.display()
    );
    let path = opts
        .data_dir
        .join(format!(".iotune-{}.tmp", std::process::id()));
    let result = measure(opts, &path, file_bytes);
    let _ = fs::remove_file(&path);
    let profile = result?;
    let out = opts
        .output
        .clone()
        .unwrap_or_else(|| opts.data_dir.join(PROFILE_FILE_NAME));
    let text = serde_json::to_string_pretty(&profile)? + "\n";
    fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    Ok(profile)
}

/// Reads DATA_DIR/io-profile.json if present (for the broker at start-up).
pub fn read_profile(data_dir: &Path) -> anyhow::Result<Option<IoProfile>> {
    let path = data_dir.join(PROFILE_FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let profile: IoProfile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        profile.schema_version == SCHEMA_VERSION,
        "{} has schema_version {}, expected {SCHEMA_VERSION}",
        path.display(),
        profile.schema_version
    );
    Ok(Some(profile))
}

fn measure(opts: &IotuneOptions, path: &Path, file_bytes: u64) -> anyhow::Result<IoProfile> {
    let started = Instant::now();
    let total = opts.duration;
    let (file, direct_io) = open_file(path)?;
    sys::fallocate(&file, file_bytes).context("preallocating the test file")?;
    let mut ring =
        new_ring().context("io_uring_setup (see `sluice-tune check --only io-uring`)")?;
    let fd = file.as_raw_fd();

    // Sequential write, wrapping over the file; the extent written bounds the read phases.
    let mut next = 0u64;
    let mut written_end = 0u64;
    let mut seq_offset = || {
        let at = next;
        next = (next + SEQ_BLOCK_BYTES as u64) % file_bytes;
        written_end = written_end.max(at + SEQ_BLOCK_BYTES as u64);
        at
    };
    let deadline = Instant::now() + total.mul_f64(0.3);
    let w = run_job(
        &mut ring,
        Job {
            fd,
            kind: OpKind::Write,
            block_bytes: SEQ_BLOCK_BYTES,
            queue_depth: SEQ_QUEUE_DEPTH,
            next_offset: &mut seq_offset,
            deadline,
        },
    )
    .context("sequential write")?;
    file.sync_all().context("fsync after the write phase")?;
    let region =
        round_down(written_end.min(file_bytes), SEQ_BLOCK_BYTES as u64).max(SEQ_BLOCK_BYTES as u64);

    let mut next = 0u64;
    let mut seq_read_offset = || {
        let at = next;
        next = (next + SEQ_BLOCK_BYTES as u64) % region;
        at
    };
    let deadline = Instant::now() + total.mul_f64(0.2);
    let r = run_job(
        &mut ring,
        Job {
            fd,
            kind: OpKind::Read,
            block_bytes: SEQ_BLOCK_BYTES,
            queue_depth: SEQ_QUEUE_DEPTH,
            next_offset: &mut seq_read_offset,
            deadline,
        },
    )
    .context("sequential read")?;

    let blocks = region / RAND_BLOCK_BYTES as u64;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand_offset = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % blocks) * RAND_BLOCK_BYTES as u64
    };
    let mut points = Vec::new();
    let slice = total.mul_f64(0.3 / RAND_QUEUE_DEPTHS.len() as f64);
    for &qd in &RAND_QUEUE_DEPTHS {
        let deadline = Instant::now() + slice;
        let res = run_job(
            &mut ring,
            Job {
                fd,
                kind: OpKind::Read,
                block_bytes: RAND_BLOCK_BYTES,
                queue_depth: qd,
                next_offset: &mut rand_offset,
                deadline,
            },
        )
        .with_context(|| format!("random read at QD {qd}"))?;
        points.push(QueueDepthPoint {
            queue_depth: qd as u32,
            iops: per_sec(res.ops, res.elapsed),
            latency_us: percentiles(&res.latency_us),
        });
    }
    drop(file);

    // fdatasync: buffered appends to a fresh preallocated file, like a log segment.
    let sync_path = path.with_extension("sync");
    let sync_file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&sync_path)
        .context("creating the fdatasync file")?;
    let sync_region = 64u64 << 20;
    sys::fallocate(&sync_file, sync_region).context("preallocating the fdatasync file")?;
    sync_file.sync_all()?;
    let deadline = Instant::now() + total.mul_f64(0.2);
    let sync = run_sync_job(
        &mut ring,
        sync_file.as_raw_fd(),
        SYNC_BLOCK_BYTES,
        sync_region,
        deadline,
    );
    drop(sync_file);
    let _ = fs::remove_file(&sync_path);
    let (_, sync_hist) = sync.context("write + fdatasync")?;

    let seq_write = Bandwidth {
        block_bytes: SEQ_BLOCK_BYTES as u64,
        queue_depth: SEQ_QUEUE_DEPTH as u32,
        bytes_per_sec: per_sec(w.bytes, w.elapsed),
        latency_us: percentiles(&w.latency_us),
    };
    let seq_read = Bandwidth {
        block_bytes: SEQ_BLOCK_BYTES as u64,
        queue_depth: SEQ_QUEUE_DEPTH as u32,
        bytes_per_sec: per_sec(r.bytes, r.elapsed),
        latency_us: percentiles(&r.latency_us),
    };
    let fdatasync_latency_us = percentiles(&sync_hist);
    let recommended = recommend(&points, seq_write.bytes_per_sec, &fdatasync_latency_us);
    let iops_max = points.iter().map(|p| p.iops).max().unwrap_or(0);
    Ok(IoProfile {
        schema_version: SCHEMA_VERSION,
        data_dir: opts.data_dir.display().to_string(),
        measured_at_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        duration_s: started.elapsed().as_secs_f64(),
        direct_io,
        file_bytes,
        seq_write,
        seq_read,
        rand_read: RandRead {
            block_bytes: RAND_BLOCK_BYTES as u64,
            points,
            iops_max,
        },
        fdatasync_latency_us,
        recommended,
    })
}

/// A ring that interrupts the one submitting thread as little as possible (task work runs
/// when we wait, as fio sets it up); plain setup on kernels older than 6.1.
fn new_ring() -> std::io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::builder().setup_coop_taskrun().build(RING_ENTRIES))
        .or_else(|_| IoUring::new(RING_ENTRIES))
}

/// Opens the test file with O_DIRECT, or buffered where the filesystem refuses it.
fn open_file(path: &Path) -> anyhow::Result<(File, bool)> {
    let open = |flags: i32| {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((
            open(0).with_context(|| format!("creating {}", path.display()))?,
            false,
        )),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The broker's settings from the measurements (pure; see [`Recommended`]).
pub fn recommend(
    points: &[QueueDepthPoint],
    write_bytes_per_sec: u64,
    sync: &Percentiles,
) -> Recommended {
    let best = points.iter().map(|p| p.iops).max().unwrap_or(0);
    let io_queue_depth = points
        .iter()
        .filter(|p| p.iops as f64 >= best as f64 * KNEE_SHARE)
        .map(|p| p.queue_depth)
        .min()
        .unwrap_or(1);
    let flush_interval_us = sync.p50.max(1);
    let flush_batch_bytes = ((write_bytes_per_sec as u128 * flush_interval_us as u128 / 1_000_000)
        as u64)
        .clamp(FLUSH_BATCH_BYTES_MIN, FLUSH_BATCH_BYTES_MAX);
    Recommended {
        io_queue_depth,
        flush_batch_bytes,
        flush_interval_us,
    }
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        samples: h.len(),
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

fn per_sec(count: u64, elapsed: Duration) -> u64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 {
        0
    } else {
        (count as f64 / s) as u64
    }
}

fn round_down(v: u64, unit: u64) -> u64 {
    v / unit * unit
}

/// Human summary lines for the CLI.
pub fn summary(p: &IoProfile) -> Vec<String> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut lines = vec![
        format!(
            "seq write  {:>9.1} MiB/s  (128 KiB, QD {}, direct={})",
            mib(p.seq_write.bytes_per_sec),
            p.seq_write.queue_depth,
            p.direct_io
        ),
        format!(
            "seq read   {:>9.1} MiB/s  (128 KiB, QD {})",
            mib(p.seq_read.bytes_per_sec),
            p.seq_read.queue_depth
        ),
    ];
    for pt in &p.rand_read.points {
        lines.push(format!(
            "rand read  {:>9} IOPS   (4 KiB, QD {:>2}, p50 {} us, p99 {} us)",
            pt.iops, pt.queue_depth, pt.latency_us.p50, pt.latency_us.p99
        ));
    }
    let s = &p.fdatasync_latency_us;
    lines.push(format!(
        "fdatasync  p50 {} us, p99 {} us, p999 {} us, max {} us ({} syncs of 4 KiB appends)",
        s.p50, s.p99, s.p999, s.max, s.samples
    ));
    let r = &p.recommended;
    lines.push(format!(
        "recommended: io_queue_depth {}, flush_batch_bytes {}, flush_interval_us {}",
        r.io_queue_depth, r.flush_batch_bytes, r.flush_interval_us
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(qd: u32, iops: u64) -> QueueDepthPoint {
        QueueDepthPoint {
            queue_depth: qd,
            iops,
            latency_us: Percentiles::default(),
        }
    }

    #[test]
    fn recommendation_picks_the_knee_and_clamps_the_batch() {
        let points = [
            point(1, 5_000),
            point(4, 18_000),
            point(16, 39_000),
            point(64, 40_000),
        ];
        let sync = Percentiles {
            samples: 10,
            p50: 2_000,
            p99: 5_000,
            p999: 9_000,
            max: 10_000,
        };
        let r = recommend(&points, 500 << 20, &sync);
        assert_eq!(r.io_queue_depth, 16);
        assert_eq!(r.flush_interval_us, 2_000);
        assert_eq!(r.flush_batch_bytes, (500u64 << 20) * 2 / 1000);
        let slow = recommend(
            &points,
            1 << 20,
            &Percentiles {
                p50: 10,
                ..sync.clone()
            },
        );
        assert_eq!(slow.flush_batch_bytes, FLUSH_BATCH_BYTES_MIN);
    }
}
