//! The free-space guard of one shard: a statvfs of the data dir on a timer, the reserve under
//! which Produce is refused, and resuming partitions whose log writes failed once space is back.
//!
//! Owns: the reserve (`log.disk_free_bytes_min`, `log.disk_free_percent_min`), the last
//! free-space reading of the shard, its log lines when it crosses the reserve, and the decision
//! when a partition's write refusal ends.
//! Does not own: setting a partition's refusal (`replica::driver`, when a log write fails),
//! the Kafka error code (the produce handler), the engine's cut-back of a failed write.
//! Invariants:
//! - statvfs runs on the shard's housekeeping timer (every `log.disk_check_interval_ms`) and
//!   once at a write failure, never per request.
//! - The reserve refuses client Produce only: replication, offset commits and the broker's
//!   own files keep the room the reserve leaves.
//! - A partition refused for lack of space resumes only once this shard is above the reserve
//!   and the filesystem has `RESUME_FREE_BYTES_MARGIN` more free than when its write failed,
//!   so a full disk is not retried every check.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::shard::Shard;

/// Free space that must come back, beyond what was free when a write failed for lack of
/// space, before that partition takes writes again.
pub const RESUME_FREE_BYTES_MARGIN: u64 = 1024 * 1024;

/// Why a partition refuses writes after one of its log writes failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRefusal {
    /// ENOSPC / EDQUOT: refused until free space grows past what it was then.
    NoSpace { available_bytes_at_failure: u64 },
    /// Another I/O error: refused until the next free-space check, then tried again.
    Io,
}

impl WriteRefusal {
    /// Whether a partition refused for `self` may write again, given this check's reading.
    pub fn lifted_by(self, disk: DiskState) -> bool {
        match self {
            WriteRefusal::NoSpace {
                available_bytes_at_failure,
            } => {
                !disk.low
                    && disk.available_bytes.is_some_and(|free| {
                        free >= available_bytes_at_failure.saturating_add(RESUME_FREE_BYTES_MARGIN)
                    })
            }
            WriteRefusal::Io => true,
        }
    }
}

/// The last free-space reading of the shard's data dir.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskState {
    /// None until the first successful statvfs.
    pub available_bytes: Option<u64>,
    pub reserve_bytes: u64,
    /// Below the reserve: Produce is refused.
    pub low: bool,
}

pub struct DiskGuard {
    data_dir: PathBuf,
    bytes_min: u64,
    percent_min: u8,
    interval: Duration,
    state: Cell<DiskState>,
    last_check: Cell<Option<Instant>>,
    /// The last statvfs failed (logged once until one succeeds).
    check_failing: Cell<bool>,
}

impl DiskGuard {
    pub fn new(config: &Config) -> DiskGuard {
        DiskGuard {
            data_dir: config.broker.data_dir.clone(),
            bytes_min: config.log.disk_free_bytes_min,
            percent_min: config.log.disk_free_percent_min,
            interval: Duration::from_millis(config.log.disk_check_interval_ms.max(1)),
            state: Cell::new(DiskState::default()),
            last_check: Cell::new(None),
            check_failing: Cell::new(false),
        }
    }

    pub fn state(&self) -> DiskState {
        self.state.get()
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Why Produce is refused right now (below the reserve), for the client's error message.
    pub fn produce_refusal(&self) -> Option<String> {
        let s = self.state.get();
        s.low.then(|| {
            format!(
                "free disk space {} bytes is below the broker's reserve of {} bytes \
                 (log.disk_free_bytes_min / log.disk_free_percent_min)",
                s.available_bytes.unwrap_or(0),
                s.reserve_bytes
            )
        })
    }

    pub fn due(&self, now: Instant) -> bool {
        self.last_check
            .get()
            .is_none_or(|last| now.duration_since(last) >= self.interval)
    }

    /// Reads the free space (statvfs) and updates the state; logs crossing the reserve.
    pub fn check(&self, shard: usize, now: Instant) -> DiskState {
        self.last_check.set(Some(now));
        let before = self.state.get();
        let space = match crate::sys::fs_space(&self.data_dir) {
            Ok(space) => {
                self.check_failing.set(false);
                space
            }
            Err(e) => {
                if !self.check_failing.replace(true) {
                    tracing::warn!(target: "broker::storage", shard, dir = %self.data_dir.display(), error = %e, "free-space check (statvfs) failed; keeping the last reading");
                }
                return before;
            }
        };
        let reserve_bytes = reserve_bytes(self.bytes_min, self.percent_min, space.total_bytes);
        let low = space.available_bytes < reserve_bytes;
        let state = DiskState {
            available_bytes: Some(space.available_bytes),
            reserve_bytes,
            low,
        };
        self.state.set(state);
        if low && !before.low {
            tracing::warn!(target: "broker::storage", shard, available_bytes = space.available_bytes, reserve_bytes, dir = %self.data_dir.display(), "free disk space below the reserve: produce refused with KAFKA_STORAGE_ERROR until space returns");
        } else if !low && before.low {
            tracing::info!(target: "broker::storage", shard, available_bytes = space.available_bytes, reserve_bytes, "free disk space back above the reserve: produce accepted again");
        }
        state
    }
}

/// The reserve: the larger of the bytes floor and the percentage of the filesystem.
pub fn reserve_bytes(bytes_min: u64, percent_min: u8, total_bytes: u64) -> u64 {
    let percent = total_bytes / 100 * u64::from(percent_min);
    bytes_min.max(percent)
}

/// The shard's free-space check (from its housekeeping loop): reads the free space, then
/// lets partitions refused after a failed write resume if the space came back.
pub fn check_shard(shard: &Rc<Shard>, now: Instant) {
    let disk = shard.disk.check(shard.id.0, now);
    let partitions: Vec<_> = shard
        .partitions
        .borrow()
        .values()
        .flat_map(|v| v.iter().flatten().cloned())
        .collect();
    for p in partitions {
        if !p.is_retired() {
            p.replica.on_disk_check(disk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_the_larger_of_bytes_and_percent() {
        assert_eq!(reserve_bytes(0, 0, 1 << 30), 0);
        assert_eq!(reserve_bytes(100, 0, 1 << 30), 100);
        assert_eq!(reserve_bytes(100, 10, 1000), 100);
        assert_eq!(reserve_bytes(10, 10, 1000), 100);
    }

    #[test]
    fn no_space_refusal_lifts_only_when_space_came_back_above_the_reserve() {
        let refusal = WriteRefusal::NoSpace {
            available_bytes_at_failure: 4096,
        };
        let reading = |free: u64, low: bool| DiskState {
            available_bytes: Some(free),
            reserve_bytes: 0,
            low,
        };
        assert!(!refusal.lifted_by(reading(4096, false)));
        assert!(!refusal.lifted_by(reading(4096 + RESUME_FREE_BYTES_MARGIN - 1, false)));
        assert!(refusal.lifted_by(reading(4096 + RESUME_FREE_BYTES_MARGIN, false)));
        assert!(!refusal.lifted_by(reading(1 << 40, true)));
        assert!(!refusal.lifted_by(DiskState::default()));
        assert!(WriteRefusal::Io.lifted_by(DiskState::default()));
    }
}
