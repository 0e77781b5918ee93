//! Per-shard counters for Prometheus `/metrics`.
//!
//! Owns: the counters each shard publishes (requests by API key, request/response bytes,
//! connections accepted) and their rendering in the Prometheus text format 0.0.4.
//! Does not own: the HTTP listener (`http/`), the engine's own counters (`engine::LogMetrics`,
//! collected per scrape by a task on each shard).
//! Invariants: each `ShardMetrics` is written only by its own shard's thread (relaxed atomic
//! adds: no locks, no allocation on the data path); readers on the HTTP thread see values that
//! only grow.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use kafka_protocol::messages::ApiKey;

/// Size of the per-API-key request counter array (Kafka API keys are < 128 today).
pub const API_KEYS_MAX: usize = 128;

/// Counters of one shard, shared with the HTTP thread through `Shared::metrics`.
pub struct ShardMetrics {
    /// Requests dispatched, by API key.
    pub requests: [AtomicU64; API_KEYS_MAX],
    /// Request frame bytes read (size prefix included).
    pub request_bytes: AtomicU64,
    /// Response bytes handed to the socket (zero-copy file ranges included).
    pub response_bytes: AtomicU64,
    /// Client connections served by this shard since start.
    pub connections_accepted: AtomicU64,
    /// Produce partitions answered KAFKA_STORAGE_ERROR (disk full, below the free-space
    /// reserve, failed log write).
    pub produce_storage_errors: AtomicU64,
    /// Log cleaner (runtime/cleaner.rs): rounds run, bytes read and written, records
    /// removed, failed rounds.
    pub cleaner_rounds: AtomicU64,
    pub cleaner_bytes_read: AtomicU64,
    pub cleaner_bytes_written: AtomicU64,
    pub cleaner_records_removed: AtomicU64,
    pub cleaner_errors: AtomicU64,
    /// Gauges set at each pass: the largest dirty ratio (per mille) of a compacted partition
    /// on the shard, and the age of the oldest dirty data (Kafka's max-dirty-percent and
    /// max-compaction-delay-secs).
    pub cleaner_max_dirty_ratio_permille: AtomicU64,
    pub cleaner_max_lag_ms: AtomicU64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            produce_storage_errors: AtomicU64::new(0),
            cleaner_rounds: AtomicU64::new(0),
            cleaner_bytes_read: AtomicU64::new(0),
            cleaner_bytes_written: AtomicU64::new(0),
            cleaner_records_removed: AtomicU64::new(0),
            cleaner_errors: AtomicU64::new(0),
            cleaner_max_dirty_ratio_permille: AtomicU64::new(0),
            cleaner_max_lag_ms: AtomicU64::new(0),
        }
    }
}

impl ShardMetrics {
    /// One request of `api_key` whose frame (without the size prefix) is `frame_bytes` long.
    pub fn on_request(&self, api_key: i16, frame_bytes: usize) {
        if let Some(c) = usize::try_from(api_key)
            .ok()
            .and_then(|k| self.requests.get(k))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.request_bytes
            .fetch_add(frame_bytes as u64 + 4, Ordering::Relaxed);
    }

    pub fn on_response(&self, bytes: usize) {
        self.response_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// What one shard reports at scrape time (read on the shard itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardSnapshot {
    pub partitions: u64,
    pub log: engine::LogMetrics,
    /// Topics in the shard's metadata view.
    pub topics: u64,
    /// Partitions refusing writes: after a failed log write, or (leaders) while the shard is
    /// below the free-space reserve.
    pub partitions_write_refused: u64,
    /// Free bytes of the data dir's filesystem at the last check, and the reserve.
    pub disk_available_bytes: u64,
    pub disk_reserve_bytes: u64,
    /// Request bytes granted by the shard's `queued_max_request_bytes` share, not answered yet.
    pub request_bytes_queued: u64,
    /// Connections that stopped reading until the budget has room for their next frame.
    pub requests_waiting_for_budget: u64,
}

/// Everything one scrape renders.
pub struct Scrape<'a> {
    pub node_id: i32,
    pub shards: &'a [ShardMetrics],
    pub open_connections: &'a [u64],
    /// Per shard; None when the shard did not answer in time.
    pub snapshots: &'a [Option<ShardSnapshot>],
}

/// Renders `scrape` in the Prometheus text exposition format 0.0.4.
pub fn render(scrape: &Scrape) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    header(
        &mut out,
        "sluice_requests_total",
        "counter",
        "Kafka requests dispatched, by shard and API.",
    );
    for (shard, m) in scrape.shards.iter().enumerate() {
        for (key, c) in m.requests.iter().enumerate() {
            let n = load(c);
            if n == 0 {
                continue;
            }
            let api = i16::try_from(key)
                .ok()
                .and_then(|k| ApiKey::try_from(k).ok())
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|| key.to_string());
            let _ = writeln!(
                out,
                "sluice_requests_total{{shard=\"{shard}\",api=\"{api}\"}} {n}"
            );
        }
    }
    per_shard(
        &mut out,
        scrape,
        "sluice_request_bytes_total",
        "counter",
        "Request bytes read.",
        |m| load(&m.request_bytes),
    );
    per_shard(
        &mut out,
        scrape,
        "sluice_response_bytes_total",
        "counter",
        "Response bytes written.",
        |m| load(&m.response_bytes),
    );
    per_shard(
        &mut out,
        scrape,
        "sluice_connections_accepted_total",
        "counter",
        "Client connections served since start.",
        |m| load(&m.connections_accepted),
    );
    per_shard(
        &mut out,
        scrape,
        "sluice_produce_storage_errors_total",
        "counter",
        "Produce partitions answered KAFKA_STORAGE_ERROR (disk full, below the free-space reserve, failed log write).",
        |m| load(&m.produce_storage_errors),
    );
    type Counter = fn(&ShardMetrics) -> &AtomicU64;
    // (name, type, help, field, what one unit of the field is in the exported unit): the two
    // gauges are stored as thousandths (per mille, milliseconds).
    let cleaner: [(&str, &str, &str, Counter, f64); 7] = [
        (
            "sluice_cleaner_rounds_total",
            "counter",
            "Log cleaner rounds run.",
            |m| &m.cleaner_rounds,
            1.0,
        ),
        (
            "sluice_cleaner_bytes_read_total",
            "counter",
            "Bytes the log cleaner read.",
            |m| &m.cleaner_bytes_read,
            1.0,
        ),
        (
            "sluice_cleaner_bytes_written_total",
            "counter",
            "Bytes the log cleaner wrote (cleaned segments).",
            |m| &m.cleaner_bytes_written,
            1.0,
        ),
        (
            "sluice_cleaner_records_removed_total",
            "counter",
            "Records the log cleaner removed.",
            |m| &m.cleaner_records_removed,
            1.0,
        ),
        (
            "sluice_cleaner_errors_total",
            "counter",
            "Log cleaner rounds that failed.",
            |m| &m.cleaner_errors,
            1.0,
        ),
        (
            "sluice_cleaner_max_dirty_ratio",
            "gauge",
            "Largest dirty ratio (dirty / cleanable bytes) of a compacted partition.",
            |m| &m.cleaner_max_dirty_ratio_permille,
            1000.0,
        ),
        (
            "sluice_cleaner_max_lag_seconds",
            "gauge",
            "Age of the oldest uncleaned data of a compacted partition.",
            |m| &m.cleaner_max_lag_ms,
            1000.0,
        ),
    ];
    for (name, kind, help, field, per_unit) in cleaner {
        header(&mut out, name, kind, help);
        for (shard, m) in scrape.shards.iter().enumerate() {
            let value = load(field(m)) as f64 / per_unit;
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
        }
    }
    header(
        &mut out,
        "sluice_connections",
        "gauge",
        "Open client connections.",
    );
    for (shard, n) in scrape.open_connections.iter().enumerate() {
        let _ = writeln!(out, "sluice_connections{{shard=\"{shard}\"}} {n}");
    }
    type Field = fn(&ShardSnapshot) -> u64;
    let engine: [(&str, &str, &str, Field); 11] = [
        (
            "sluice_partitions_write_refused",
            "gauge",
            "Partitions refusing writes for lack of disk space or after a failed log write.",
            |s| s.partitions_write_refused,
        ),
        (
            "sluice_disk_available_bytes",
            "gauge",
            "Free bytes of the data dir's filesystem at the last check.",
            |s| s.disk_available_bytes,
        ),
        (
            "sluice_disk_reserve_bytes",
            "gauge",
            "Free-space reserve under which Produce is refused.",
            |s| s.disk_reserve_bytes,
        ),
        (
            "sluice_request_bytes_queued",
            "gauge",
            "Request bytes read and not answered yet (kafka.queued_max_request_bytes).",
            |s| s.request_bytes_queued,
        ),
        (
            "sluice_requests_waiting_for_budget",
            "gauge",
            "Connections not reading until the request budget has room for their next frame.",
            |s| s.requests_waiting_for_budget,
        ),
        (
            "sluice_partitions",
            "gauge",
            "Partitions owned by the shard.",
            |s| s.partitions,
        ),
        (
            "sluice_log_appended_batches_total",
            "counter",
            "Record batches appended (engine).",
            |s| s.log.appended_batches,
        ),
        (
            "sluice_log_appended_bytes_total",
            "counter",
            "Bytes appended (engine).",
            |s| s.log.appended_bytes,
        ),
        (
            "sluice_log_sync_rounds_total",
            "counter",
            "Group-commit fdatasync rounds (engine).",
            |s| s.log.sync_rounds,
        ),
        (
            "sluice_log_segments_rolled_total",
            "counter",
            "Segments rolled (engine).",
            |s| s.log.segments_rolled,
        ),
        (
            "sluice_log_segments_deleted_total",
            "counter",
            "Segments deleted by retention (engine).",
            |s| s.log.segments_deleted,
        ),
    ];
    for (name, kind, help, field) in engine {
        header(&mut out, name, kind, help);
        for (shard, snap) in scrape.snapshots.iter().enumerate() {
            if let Some(s) = snap {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", field(s));
            }
        }
    }
    header(
        &mut out,
        "sluice_build_info",
        "gauge",
        "Build and node information.",
    );
    let _ = writeln!(
        out,
        "sluice_build_info{{version=\"{}\",node_id=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        scrape.node_id
    );
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn per_shard(
    out: &mut String,
    scrape: &Scrape,
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&ShardMetrics) -> u64,
) {
    header(out, name, kind, help);
    for (shard, m) in scrape.shards.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples() {
        let shards = [ShardMetrics::default(), ShardMetrics::default()];
        shards[1].on_request(ApiKey::Produce as i16, 96);
        shards[1].on_request(999, 10); // out of range: bytes counted, no panic
        let snaps = [Some(ShardSnapshot::default()), None];
        let text = render(&Scrape {
            node_id: 3,
            shards: &shards,
            open_connections: &[0, 1],
            snapshots: &snaps,
        });
        assert!(text.contains("# TYPE sluice_requests_total counter"));
        assert!(text.contains("sluice_requests_total{shard=\"1\",api=\"Produce\"} 1"));
        assert!(text.contains("sluice_request_bytes_total{shard=\"1\"} 114"));
        assert!(text.contains("sluice_partitions{shard=\"0\"} 0"));
        assert!(!text.contains("sluice_partitions{shard=\"1\"}"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
