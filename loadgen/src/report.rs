//! The run's report: JSON (design.md section 9 fields plus parameters and host facts) and the
//! human summary printed at the end.
//!
//! Invariants: `records_acked + records_failed <= records_sent` once the run drained;
//! throughput figures cover the measured window (after warm-up) only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::args::LoadgenArgs;
use crate::client::error_codes;
use crate::stats::{Counters, LatencySummary};

/// `(percentile, latency_us)` points of one histogram.
pub type PercentileCurve = Vec<(f64, u64)>;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub start_time: String,
    pub host: HostInfo,
    pub git_sha: Option<String>,
    pub parameters: LoadgenArgs,
    /// Partitions of the topic as found or created.
    pub partitions: usize,
    pub topic_created: bool,
    /// Seconds of the measured window (after warm-up).
    pub measured_secs: f64,
    /// Seconds from the first record to the last answer.
    pub elapsed_secs: f64,
    pub interrupted: bool,
    pub records_sent: u64,
    pub records_acked: u64,
    pub records_failed: u64,
    pub requests_sent: u64,
    /// Open loop: records that fell due but were never sent because the producers were
    /// behind schedule when the run ended (their latency is not in the histograms).
    pub records_behind_schedule: u64,
    /// Error occurrences (per partition per response), all codes together.
    pub errors: u64,
    /// Error occurrences by Kafka code, e.g. "NOT_LEADER_OR_FOLLOWER(6)".
    pub errors_by_code: BTreeMap<String, u64>,
    pub produce: ProduceReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<ConsumeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_latency_us: Option<LatencySummary>,
    /// Transactional runs (`--transactional-id`) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions: Option<TransactionReport>,
    /// Percentile curves (produce, end to end) for `--plot`; not part of the JSON.
    #[serde(skip)]
    pub plot_points: Option<(PercentileCurve, PercentileCurve)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub mb_per_sec: f64,
    /// Ack latency from each record's due time (coordinated-omission corrected under --rate).
    pub latency_us: LatencySummary,
    pub open_loop: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransactionReport {
    /// The transaction protocol version the producers followed (1: KIP-98, 2: KIP-890).
    pub version: u8,
    /// Transactions committed over the whole run (warm-up included).
    pub committed: u64,
    /// Transactions aborted because one of their batches was given up.
    pub aborted: u64,
    /// Commits per second in the measured window.
    pub per_sec: f64,
    /// Partitions in the committed transactions: the commit markers written (one control
    /// record per partition per transaction), which take offsets besides the records.
    pub partitions: u64,
    /// Resends to the coordinator (CONCURRENT_TRANSACTIONS while the previous transaction's
    /// markers are written, coordinator moves); not counted as errors.
    pub coordinator_retries: u64,
    /// EndTxn(commit), sent to answered (retries included), for transactions begun in the
    /// measured window.
    pub commit_latency_us: LatencySummary,
}

/// What a transactional run counted ([`Measured::transactions`]).
#[derive(Debug, Clone, Copy)]
pub struct Transactions {
    pub version: u8,
    pub committed: u64,
    pub aborted: u64,
    pub partitions: u64,
    pub coordinator_retries: u64,
    pub commit_latency: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeReport {
    pub records: u64,
    pub bytes: u64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub mb_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
}

impl HostInfo {
    pub fn current() -> HostInfo {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string())
        };
        HostInfo {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Inputs to [`Report::build`] that the run measured.
pub struct Measured {
    pub total: Counters,
    pub records_behind_schedule: u64,
    /// Counter values when the measured window began (zero without warm-up).
    pub at_window_start: Counters,
    pub measured_secs: f64,
    pub elapsed_secs: f64,
    pub produce_latency: LatencySummary,
    pub end_to_end_latency: Option<LatencySummary>,
    pub transactions: Option<Transactions>,
    pub errors: BTreeMap<i16, u64>,
    pub interrupted: bool,
    pub partitions: usize,
    pub topic_created: bool,
    pub open_loop: bool,
}

impl Report {
    pub fn build(args: &LoadgenArgs, start_time: String, measured: Measured) -> Report {
        let window = measured.total.minus(&measured.at_window_start);
        let secs = measured.measured_secs.max(1e-9);
        let rate = |n: u64| n as f64 / secs;
        let consume = (args.consumers > 0).then(|| ConsumeReport {
            records: measured.total.records_consumed,
            bytes: measured.total.bytes_consumed,
            records_per_sec: rate(window.records_consumed),
            bytes_per_sec: rate(window.bytes_consumed),
            mb_per_sec: rate(window.bytes_consumed) / 1e6,
        });
        Report {
            tool: "sluice-loadgen",
            version: env!("CARGO_PKG_VERSION"),
            start_time,
            host: HostInfo::current(),
            git_sha: git_sha(),
            parameters: args.clone(),
            partitions: measured.partitions,
            topic_created: measured.topic_created,
            measured_secs: measured.measured_secs,
            elapsed_secs: measured.elapsed_secs,
            interrupted: measured.interrupted,
            records_sent: measured.total.records_sent,
            records_acked: measured.total.records_acked,
            records_failed: measured.total.records_failed,
            requests_sent: measured.total.requests_sent,
            records_behind_schedule: measured.records_behind_schedule,
            errors: measured.errors.values().sum(),
            errors_by_code: measured
                .errors
                .iter()
                .map(|(&code, &n)| (error_codes::name(code), n))
                .collect(),
            produce: ProduceReport {
                records_per_sec: rate(window.records_acked),
                bytes_per_sec: rate(window.bytes_acked),
                mb_per_sec: rate(window.bytes_acked) / 1e6,
                latency_us: measured.produce_latency,
                open_loop: measured.open_loop,
            },
            consume,
            end_to_end_latency_us: measured.end_to_end_latency,
            transactions: measured.transactions.map(|t| TransactionReport {
                version: t.version,
                committed: t.committed,
                aborted: t.aborted,
                per_sec: rate(window.transactions_committed),
                partitions: t.partitions,
                coordinator_retries: t.coordinator_retries,
                commit_latency_us: t.commit_latency,
            }),
            plot_points: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    pub fn human_summary(&self) -> String {
        let mut out = String::new();
        let p = &self.parameters;
        let _ = writeln!(
            out,
            "loadgen: {} -> topic {} ({} partitions), {} producer(s), {} consumer(s), acks={}, {} B records, compression {}, {}",
            p.bootstrap,
            p.topic,
            self.partitions,
            p.producers,
            p.consumers,
            p.acks,
            p.record_bytes,
            p.compression,
            match p.rate {
                Some(rate) => format!("open loop at {rate} records/s"),
                None => "max throughput".to_string(),
            }
        );
        if self.interrupted {
            let _ = writeln!(out, "  INTERRUPTED: partial results");
        }
        let _ = writeln!(
            out,
            "  produced: {} sent, {} acked, {} failed in {:.2}s measured ({:.2}s total)",
            self.records_sent,
            self.records_acked,
            self.records_failed,
            self.measured_secs,
            self.elapsed_secs
        );
        let _ = writeln!(
            out,
            "  produce throughput: {:.0} records/s, {:.2} MB/s",
            self.produce.records_per_sec, self.produce.mb_per_sec
        );
        let _ = writeln!(
            out,
            "  produce latency (us): {}",
            latency_line(&self.produce.latency_us)
        );
        if let Some(consume) = &self.consume {
            let _ = writeln!(
                out,
                "  consumed: {} records, {:.0} records/s, {:.2} MB/s",
                consume.records, consume.records_per_sec, consume.mb_per_sec
            );
        }
        if let Some(e2e) = &self.end_to_end_latency_us {
            let _ = writeln!(out, "  end-to-end latency (us): {}", latency_line(e2e));
        }
        if let Some(t) = &self.transactions {
            let _ = writeln!(
                out,
                "  transactions (version {}): {} committed ({:.1}/s, {} ms each), {} aborted, {} \
                 coordinator retries",
                t.version,
                t.committed,
                t.per_sec,
                p.transaction_duration_ms,
                t.aborted,
                t.coordinator_retries
            );
            let _ = writeln!(
                out,
                "  commit latency (us): {}",
                latency_line(&t.commit_latency_us)
            );
        }
        if self.records_behind_schedule > 0 {
            let _ = writeln!(
                out,
                "  WARNING: {} records fell due but were never sent (loadgen or the broker could not keep up with --rate)",
                self.records_behind_schedule
            );
        }
        if self.errors == 0 {
            let _ = writeln!(out, "  errors: none");
        } else {
            let _ = writeln!(out, "  errors: {} {:?}", self.errors, self.errors_by_code);
        }
        out
    }
}

pub fn latency_line(s: &LatencySummary) -> String {
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {} (n={})",
        s.p50, s.p90, s.p99, s.p999, s.p9999, s.max, s.count
    )
}

/// The commit of the working directory, if it is a git checkout and git is installed.
fn git_sha() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// RFC 3339 UTC time for seconds since the epoch (civil-from-days, no time crate needed).
pub fn rfc3339_utc(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let secs_of_day = epoch_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    fn args(extra: &[&str]) -> LoadgenArgs {
        let mut argv = vec!["loadgen", "--topic", "t", "--record-bytes", "100"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    fn measured(consumers: bool) -> Measured {
        let total = Counters {
            records_sent: 12_000,
            records_acked: 12_000,
            bytes_acked: 1_200_000,
            records_failed: 0,
            records_consumed: if consumers { 12_000 } else { 0 },
            bytes_consumed: if consumers { 1_200_000 } else { 0 },
            requests_sent: 40,
            transactions_committed: 25,
        };
        let at_window_start = Counters {
            records_sent: 2_000,
            records_acked: 2_000,
            bytes_acked: 200_000,
            records_consumed: if consumers { 2_000 } else { 0 },
            bytes_consumed: if consumers { 200_000 } else { 0 },
            ..Counters::default()
        };
        let latency = LatencySummary {
            count: 10_000,
            min: 10,
            mean: 100.0,
            p50: 90,
            p90: 150,
            p99: 300,
            p999: 900,
            p9999: 1000,
            max: 1200,
        };
        Measured {
            total,
            records_behind_schedule: 0,
            at_window_start,
            measured_secs: 2.0,
            elapsed_secs: 2.5,
            produce_latency: latency,
            end_to_end_latency: consumers.then_some(latency),
            transactions: None,
            errors: BTreeMap::from([(6, 2)]),
            interrupted: false,
            partitions: 4,
            topic_created: true,
            open_loop: false,
        }
    }

    #[test]
    fn json_holds_the_section_9_fields_with_consistent_numbers() {
        let report = Report::build(&args(&["--consumers", "1"]), rfc3339_utc(0), measured(true));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let num = |path: &str| {
            json.pointer(path)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or_else(|| panic!("{path} missing in {json}"))
        };
        // 10 000 records acked in the 2 s window.
        assert_eq!(num("/produce/records_per_sec"), 5_000.0);
        assert_eq!(num("/produce/bytes_per_sec"), 500_000.0);
        assert_eq!(num("/produce/mb_per_sec"), 0.5);
        for field in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            num(&format!("/produce/latency_us/{field}"));
            num(&format!("/end_to_end_latency_us/{field}"));
        }
        assert!(num("/produce/latency_us/p50") <= num("/produce/latency_us/p99"));
        assert!(num("/produce/latency_us/p99") <= num("/produce/latency_us/max"));
        assert_eq!(num("/records_sent"), 12_000.0);
        assert_eq!(num("/records_acked"), 12_000.0);
        assert_eq!(num("/errors"), 2.0);
        assert_eq!(json["errors_by_code"]["NOT_LEADER_OR_FOLLOWER(6)"], 2);
        assert_eq!(num("/consume/records_per_sec"), 5_000.0);
        assert_eq!(num("/consume/records"), 12_000.0);
        assert_eq!(json["parameters"]["topic"], "t");
        assert_eq!(json["parameters"]["acks"], "all");
        assert_eq!(json["parameters"]["record_bytes"], 100);
        assert_eq!(json["parameters"]["keys"], "none");
        assert_eq!(json["start_time"], "1970-01-01T00:00:00Z");
        for field in ["hostname", "kernel", "cpus"] {
            assert!(json["host"].get(field).is_some(), "host.{field}");
        }
        assert!(json.get("git_sha").is_some());
        let text = report.human_summary();
        assert!(text.contains("5000 records/s"), "{text}");
    }

    #[test]
    fn transaction_section_only_in_transactional_runs() {
        let mut m = measured(false);
        m.at_window_start.transactions_committed = 5;
        m.transactions = Some(Transactions {
            version: 2,
            committed: 25,
            aborted: 1,
            partitions: 100,
            coordinator_retries: 3,
            commit_latency: m.produce_latency,
        });
        let report = Report::build(&args(&["--transactional-id", "tx"]), rfc3339_utc(0), m);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        // 20 commits in the 2 s window.
        assert_eq!(json["transactions"]["per_sec"], 10.0);
        assert_eq!(json["transactions"]["committed"], 25);
        assert_eq!(json["transactions"]["version"], 2);
        assert_eq!(json["transactions"]["partitions"], 100);
        assert_eq!(json["transactions"]["commit_latency_us"]["p99"], 300);
        assert_eq!(json["parameters"]["transactional_id"], "tx");
        let text = report.human_summary();
        assert!(
            text.contains("25 committed (10.0/s, 100 ms each)"),
            "{text}"
        );
        assert!(text.contains("commit latency (us): p50 90"), "{text}");
        let plain = Report::build(&args(&[]), rfc3339_utc(0), measured(false));
        assert!(!plain.to_json().contains("\"transactions\""));
    }

    #[test]
    fn consumer_sections_only_with_consumers() {
        let report = Report::build(&args(&[]), rfc3339_utc(0), measured(false));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert!(json.get("consume").is_none());
        assert!(json.get("end_to_end_latency_us").is_none());
        assert!(json.pointer("/produce/latency_us/p999").is_some());
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
