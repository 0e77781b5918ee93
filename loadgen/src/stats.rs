//! Run statistics: HDR latency histograms, counters, errors by Kafka code, interval snapshots
//! for the live progress line.
//!
//! Owns: everything the report is computed from. Producers and consumers record once per
//! batch (a short mutex hold), never per record across threads.
//! Invariants: latencies are µs, clamped into [1, LATENCY_US_MAX]; counters only grow.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track (1 hour); above it values are clamped.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// HDR precision: 3 significant digits (0.1% value error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            histogram: Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
                .expect("static histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, latency_us: u64) {
        self.record_n(latency_us, 1);
    }

    pub fn record_n(&mut self, latency_us: u64, count: u64) {
        let value = latency_us.clamp(1, LATENCY_US_MAX);
        self.histogram
            .record_n(value, count)
            .expect("value clamped into the histogram's range");
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share bounds");
    }

    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        let empty = h.is_empty();
        let q = |quantile: f64| {
            if empty {
                0
            } else {
                h.value_at_quantile(quantile)
            }
        };
        LatencySummary {
            count: h.len(),
            min: if empty { 0 } else { h.min() },
            mean: if empty {
                0.0
            } else {
                (h.mean() * 10.0).round() / 10.0
            },
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: if empty { 0 } else { h.max() },
        }
    }

    /// `(percentile, value_us)` points for a percentile plot, from p0 to p99.9999.
    pub fn percentile_curve(&self) -> Vec<(f64, u64)> {
        if self.histogram.is_empty() {
            return Vec::new();
        }
        let mut points = Vec::new();
        // Evenly spaced in log10(1 / (1 - q)): the "nines" axis.
        let mut nines = 0.0f64;
        while nines <= 6.0 {
            let quantile = 1.0 - 10f64.powf(-nines);
            points.push((quantile * 100.0, self.histogram.value_at_quantile(quantile)));
            nines += 0.05;
        }
        points.push((100.0, self.histogram.max()));
        points
    }
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

/// Percentiles of one histogram, as written into the report (µs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

/// A histogram recorded into for the whole run and for the current progress interval.
#[derive(Default)]
pub struct Recorder {
    pub total: LatencyHistogram,
    pub interval: LatencyHistogram,
}

impl Recorder {
    pub fn record_n(&mut self, latency_us: u64, count: u64, measured: bool) {
        self.interval.record_n(latency_us, count);
        if measured {
            self.total.record_n(latency_us, count);
        }
    }
}

/// Shared counters of one run.
#[derive(Default)]
pub struct Stats {
    pub records_sent: AtomicU64,
    pub records_acked: AtomicU64,
    pub bytes_acked: AtomicU64,
    pub records_failed: AtomicU64,
    pub records_consumed: AtomicU64,
    pub bytes_consumed: AtomicU64,
    pub requests_sent: AtomicU64,
    /// Open loop: records due before the end that the producers never got to generate.
    pub records_behind_schedule: AtomicU64,
    pub produce: Mutex<Recorder>,
    pub end_to_end: Mutex<Recorder>,
    /// Transactional runs: transactions committed, and aborted (a batch of theirs failed).
    pub transactions_committed: AtomicU64,
    pub transactions_aborted: AtomicU64,
    /// Partitions added to the committed transactions (one commit marker each).
    pub transaction_partitions: AtomicU64,
    /// Resends to the transaction coordinator (CONCURRENT_TRANSACTIONS while the previous
    /// transaction's markers are written, coordinator moves, broken connections).
    pub coordinator_retries: AtomicU64,
    /// EndTxn(commit) latency: from sending EndTxn to its answer, retries included.
    pub commit: Mutex<Recorder>,
    errors: Mutex<BTreeMap<i16, u64>>,
}

impl Stats {
    pub fn error(&self, code: i16, count: u64) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(code)
            .or_default() += count;
    }

    pub fn errors(&self) -> BTreeMap<i16, u64> {
        self.errors.lock().expect("errors lock").clone()
    }

    pub fn snapshot(&self) -> Counters {
        Counters {
            records_sent: self.records_sent.load(Ordering::Relaxed),
            records_acked: self.records_acked.load(Ordering::Relaxed),
            bytes_acked: self.bytes_acked.load(Ordering::Relaxed),
            records_failed: self.records_failed.load(Ordering::Relaxed),
            records_consumed: self.records_consumed.load(Ordering::Relaxed),
            bytes_consumed: self.bytes_consumed.load(Ordering::Relaxed),
            requests_sent: self.requests_sent.load(Ordering::Relaxed),
            transactions_committed: self.transactions_committed.load(Ordering::Relaxed),
        }
    }

    /// Takes and clears the interval histograms: (produce, end-to-end).
    pub fn take_interval(&self) -> (LatencySummary, LatencySummary) {
        let take = |recorder: &Mutex<Recorder>| {
            let mut recorder = recorder.lock().expect("recorder lock");
            let summary = recorder.interval.summary();
            recorder.interval.reset();
            summary
        };
        (take(&self.produce), take(&self.end_to_end))
    }
}

/// Counter values at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub records_sent: u64,
    pub records_acked: u64,
    pub bytes_acked: u64,
    pub records_failed: u64,
    pub records_consumed: u64,
    pub bytes_consumed: u64,
    pub requests_sent: u64,
    pub transactions_committed: u64,
}

impl Counters {
    pub fn minus(&self, earlier: &Counters) -> Counters {
        Counters {
            records_sent: self.records_sent - earlier.records_sent,
            records_acked: self.records_acked - earlier.records_acked,
            bytes_acked: self.bytes_acked - earlier.bytes_acked,
            records_failed: self.records_failed - earlier.records_failed,
            records_consumed: self.records_consumed - earlier.records_consumed,
            bytes_consumed: self.bytes_consumed - earlier.bytes_consumed,
            requests_sent: self.requests_sent - earlier.requests_sent,
            transactions_committed: self.transactions_committed - earlier.transactions_committed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_values() {
        let mut h = LatencyHistogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min, 1);
        assert!((4_995..=5_005).contains(&s.p50), "{s:?}");
        assert!((9_890..=9_910).contains(&s.p99), "{s:?}");
        assert!((9_985..=10_000).contains(&s.p999), "{s:?}");
        assert!((9_995..=10_010).contains(&s.max), "{s:?}");
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.p9999);
        assert!(s.p9999 <= s.max);
    }

    #[test]
    fn empty_summary_is_zero_and_values_are_clamped() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.summary(), LatencySummary::default());
        assert!(h.percentile_curve().is_empty());
        h.record(0);
        h.record(u64::MAX);
        let s = h.summary();
        assert_eq!(s.min, 1);
        assert!(s.max >= LATENCY_US_MAX && s.max <= LATENCY_US_MAX + LATENCY_US_MAX / 500);
    }

    #[test]
    fn recorder_keeps_warmup_out_of_the_total() {
        let mut r = Recorder::default();
        r.record_n(100, 5, false);
        r.record_n(200, 3, true);
        assert_eq!(r.interval.count(), 8);
        assert_eq!(r.total.count(), 3);
        assert_eq!(r.total.summary().p50, 200);
    }

    #[test]
    fn interval_is_cleared_when_taken_and_errors_accumulate() {
        let stats = Stats::default();
        stats.produce.lock().unwrap().record_n(50, 10, true);
        let (produce, e2e) = stats.take_interval();
        assert_eq!(produce.count, 10);
        assert_eq!(e2e.count, 0);
        assert_eq!(stats.take_interval().0.count, 0);
        assert_eq!(stats.produce.lock().unwrap().total.count(), 10);
        stats.error(6, 2);
        stats.error(6, 1);
        stats.error(3, 1);
        assert_eq!(stats.errors(), BTreeMap::from([(3, 1), (6, 3)]));
    }

    #[test]
    fn percentile_curve_is_monotonic() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100_000u64 {
            h.record(v % 977 + v / 1000);
        }
        let curve = h.percentile_curve();
        assert!(curve.len() > 100);
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(curve.last().unwrap().1, h.summary().max);
    }
}
