//! When each record is meant to be sent, and the clock latencies are measured against.
//!
//! Coordinated omission: a closed-loop generator that waits for the system before sending
//! its next record never measures the records it *would* have sent during a stall, so the
//! stall shows up as one slow sample instead of thousands. In open-loop mode (`--rate`) record
//! `i` of a producer is due at `start + i / rate` whatever happens, and its latency is
//! `ack_time - due_time`: a stall delays every record due during it, and every one of them is
//! charged for the wait. In max-throughput mode there is no schedule; a record's send time is
//! when it was generated.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic clock in microseconds since the Unix epoch, shared by producers and consumers
/// of one run (so end-to-end latency never goes negative from wall-clock steps).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_epoch_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let start_epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            start_epoch_us,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn start_epoch_us(&self) -> u64 {
        self.start_epoch_us
    }

    pub fn now_us(&self) -> u64 {
        self.at_us(Instant::now())
    }

    pub fn at_us(&self, instant: Instant) -> u64 {
        self.start_epoch_us + instant.saturating_duration_since(self.start).as_micros() as u64
    }

    pub fn instant_at(&self, epoch_us: u64) -> Instant {
        self.start + Duration::from_micros(epoch_us.saturating_sub(self.start_epoch_us))
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Open-loop schedule of one producer: record `i` is due `i * interval` after `start_us`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_us: u64,
    /// None: max-throughput mode.
    interval_ns: Option<f64>,
}

impl Schedule {
    pub fn open_loop(start_us: u64, rate_per_sec: f64) -> Schedule {
        assert!(rate_per_sec > 0.0);
        Schedule {
            start_us,
            interval_ns: Some(1e9 / rate_per_sec),
        }
    }

    pub fn max_throughput(start_us: u64) -> Schedule {
        Schedule {
            start_us,
            interval_ns: None,
        }
    }

    pub fn is_open_loop(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// When record `index` is due (µs since the epoch); in max-throughput mode `now_us`.
    pub fn due_us(&self, index: u64, now_us: u64) -> u64 {
        match self.interval_ns {
            Some(interval) => self.start_us + ((index as f64) * interval / 1000.0) as u64,
            None => now_us,
        }
    }

    /// How many records are due by `now_us` in total (open loop); unbounded in max mode.
    pub fn due_by(&self, now_us: u64) -> u64 {
        match self.interval_ns {
            Some(interval) => {
                let elapsed_ns = now_us.saturating_sub(self.start_us) as f64 * 1000.0;
                (elapsed_ns / interval) as u64 + 1
            }
            None => u64::MAX,
        }
    }
}

impl Schedule {
    /// How many records are due strictly before `until_us` (open loop); unbounded in max mode.
    pub fn due_before(&self, until_us: u64) -> u64 {
        match self.interval_ns {
            Some(interval) => {
                let elapsed_ns = until_us.saturating_sub(self.start_us) as f64 * 1000.0;
                (elapsed_ns / interval).ceil() as u64
            }
            None => u64::MAX,
        }
    }
}

/// Latency charged to a record: from when it was due to when its answer came.
pub fn latency_us(due_us: u64, acked_us: u64) -> u64 {
    acked_us.saturating_sub(due_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencyHistogram;

    #[test]
    fn open_loop_schedule_is_evenly_spaced() {
        let schedule = Schedule::open_loop(1_000_000, 1000.0);
        assert_eq!(schedule.due_us(0, 0), 1_000_000);
        assert_eq!(schedule.due_us(1, 0), 1_001_000);
        assert_eq!(schedule.due_us(500, 0), 1_500_000);
        assert_eq!(schedule.due_by(1_000_000), 1);
        assert_eq!(schedule.due_by(1_000_999), 1);
        assert_eq!(schedule.due_by(1_001_000), 2);
        assert_eq!(schedule.due_by(2_000_000), 1001);
        // A run of 1 s at 1000/s holds records 0..=999.
        assert_eq!(schedule.due_before(2_000_000), 1000);
        assert_eq!(schedule.due_before(1_000_000), 0);
        assert_eq!(schedule.due_before(1_000_001), 1);
        let max = Schedule::max_throughput(5);
        assert_eq!(max.due_us(10, 77), 77);
        assert_eq!(max.due_by(0), u64::MAX);
    }

    /// A 1 s stall at 1000 records/s: every record due during the stall is charged for its
    /// wait, so p50 of the stalled second is ~500 ms, not one slow sample among fast ones.
    #[test]
    fn a_stall_is_charged_to_every_record_due_during_it() {
        let schedule = Schedule::open_loop(0, 1000.0);
        let service_us = 200;
        let stall_from_us = 1_000_000;
        let stall_until_us = 2_000_000;
        let mut corrected = LatencyHistogram::new();
        let mut naive = LatencyHistogram::new();
        // A closed-loop sender blocked by the stall sends the record due at the stall's start
        // when the stall ends, and then continues on schedule from there.
        for index in 0..3000u64 {
            let due = schedule.due_us(index, 0);
            let sent = if (stall_from_us..stall_until_us).contains(&due) {
                stall_until_us
            } else {
                due
            };
            let acked = sent + service_us;
            corrected.record(latency_us(due, acked));
            // The naive measurement starts the clock when the record actually went out.
            naive.record(latency_us(sent, acked));
        }
        assert_eq!(corrected.count(), 3000);
        assert_eq!(naive.value_at_quantile(0.99), service_us);
        let p99 = corrected.value_at_quantile(0.99);
        assert!((900_000..=1_010_000).contains(&p99), "corrected p99 {p99}");
        let p50 = corrected.value_at_quantile(0.5);
        assert!(p50 < 1_000, "half the run was not stalled: p50 {p50}");
        // One third of the records waited: the p83 lies inside the stall.
        let p83 = corrected.value_at_quantile(0.83);
        assert!((400_000..=600_000).contains(&p83), "p83 {p83}");
    }

    #[test]
    fn clock_is_monotonic_and_round_trips() {
        let clock = Clock::new();
        let a = clock.now_us();
        let b = clock.now_us();
        assert!(b >= a);
        let at = clock.instant_at(a + 1500);
        assert_eq!(clock.at_us(at), a + 1500);
    }
}
