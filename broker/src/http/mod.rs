//! The broker's HTTP listener: Prometheus `/metrics` and `/v1/status`.
//!
//! Owns: a small blocking HTTP/1.1 server on its own thread (std::net, one request per
//! connection, `Connection: close`). Does not own: the counters (`metrics.rs`, written by the
//! shards) nor any Kafka state.
//! Invariants: nothing here runs on a shard thread. A scrape reads the shards' atomics and
//! sends each shard one small task on its mesh queue (to read its logs' `engine::LogMetrics`);
//! a shard that does not answer within `SHARD_ANSWER_TIMEOUT` is left out of that scrape, so a
//! busy shard is never waited on.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::metadata::ShardId;
use engine::LogMetrics;

use crate::metrics::{self, Scrape, ShardSnapshot};
use crate::partition::Partition;
use crate::runtime::{Shard, ShardTask, Shared};

/// Longest a scrape waits for all shards' engine counters.
pub const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Socket timeout for a client of the HTTP listener (a slow client cannot stall it for long).
pub const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head accepted.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// Binds `addr` and serves on a thread named `sluice-http`. Returns the bound address.
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("sluice-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = serve(s, &shared) {
                            tracing::debug!(target: "broker::http", error = %e, "http client");
                        }
                    }
                    Err(e) => tracing::debug!(target: "broker::http", error = %e, "accept"),
                }
            }
        })?;
    Ok(local)
}

fn serve(stream: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_IO_TIMEOUT))?;
    // The head is read through a bounded `take`: a client sending an endless line cannot
    // make the buffer grow past the limit.
    let mut reader = BufReader::new((&stream).take(REQUEST_HEAD_BYTES_MAX as u64));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render_metrics(shared),
        ),
        ("GET", "/v1/status") => ("200 OK", "application/json", render_status(shared)),
        ("GET", "/v1/cleaner") => ("200 OK", "application/json", render_cleaner(shared)),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

/// Asks every shard for its engine counters; None for shards that did not answer in time.
fn collect_snapshots(shared: &Arc<Shared>) -> Vec<Option<ShardSnapshot>> {
    let shards = shared.shard_count();
    let (tx, rx) = mpsc::channel::<(usize, ShardSnapshot)>();
    for id in 0..shards {
        let tx = tx.clone();
        let task: ShardTask = Box::new(move |shard: &Rc<Shard>| {
            let snapshot = snapshot_of(shard);
            let _ = tx.send((id, snapshot));
            Box::pin(async {})
        });
        // try_send: a full mesh queue means a busy shard; it is skipped, not waited on.
        let _ = shared.mesh[id].try_send(task);
    }
    drop(tx);
    let mut out = vec![None; shards];
    let deadline = Instant::now() + SHARD_ANSWER_TIMEOUT;
    while out.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((id, s)) => out[id] = Some(s),
            Err(_) => break,
        }
    }
    out
}

/// Runs on the shard: sums its partitions' engine counters. A partition's `LogMetrics` count
/// from when its log was opened, so a partition that went away (topic deleted, log re-opened
/// for a config change) would make the sum drop: its last seen counters move into a per-shard
/// `retired` total instead, keeping every family monotonic (counts between its last scrape
/// and its removal are not seen).
fn snapshot_of(shard: &Rc<Shard>) -> ShardSnapshot {
    let disk = shard.disk.state();
    let mut s = ShardSnapshot {
        topics: shard.metadata().topics.len() as u64,
        disk_available_bytes: disk.available_bytes.unwrap_or(0),
        disk_reserve_bytes: disk.reserve_bytes,
        request_bytes_queued: shard.request_budget.in_use() as u64,
        requests_waiting_for_budget: shard.request_budget.waiting() as u64,
        ..ShardSnapshot::default()
    };
    {
        let seen = shard.services.get_or_init(|| RefCell::new(Seen::default()));
        let mut seen = seen.borrow_mut();
        let mut current: Vec<(Weak<Partition>, LogMetrics)> = Vec::new();
        for partitions in shard.partitions.borrow().values() {
            for p in partitions.iter().flatten() {
                s.partitions += 1;
                // Below the reserve, leaders refuse client Produce (internal topics take no
                // client Produce, and their own writes go on).
                let refused = p.replica.failed()
                    || p.replica.write_refusal().is_some()
                    || (disk.low
                        && p.replica.is_leader()
                        && !crate::metadata::is_internal_topic(&p.topic));
                s.partitions_write_refused += u64::from(refused);
                current.push((Rc::downgrade(p), p.log.metrics()));
            }
        }
        // A held Weak keeps its allocation, so an address match is the same partition.
        let live: HashSet<*const Partition> = current.iter().map(|(p, _)| p.as_ptr()).collect();
        let mut retired = seen.retired;
        for (old, last) in &seen.partitions {
            if !live.contains(&old.as_ptr()) {
                add(&mut retired, last);
            }
        }
        s.log = retired;
        for (_, m) in &current {
            add(&mut s.log, m);
        }
        seen.retired = retired;
        seen.partitions = current;
    }
    s
}

/// Per shard (a service of the shard): the partitions seen at the last scrape and the
/// counters of those gone.
#[derive(Default)]
struct Seen {
    partitions: Vec<(Weak<Partition>, LogMetrics)>,
    retired: LogMetrics,
}

fn add(total: &mut LogMetrics, m: &LogMetrics) {
    total.appended_batches += m.appended_batches;
    total.appended_bytes += m.appended_bytes;
    total.sync_rounds += m.sync_rounds;
    total.segments_rolled += m.segments_rolled;
    total.segments_deleted += m.segments_deleted;
}

fn render_metrics(shared: &Arc<Shared>) -> String {
    let snapshots = collect_snapshots(shared);
    let open: Vec<u64> = shared
        .connections
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as u64)
        .collect();
    metrics::render(&Scrape {
        node_id: shared.node_id(),
        shards: &shared.metrics,
        open_connections: &open,
        snapshots: &snapshots,
    })
}

/// `/v1/cleaner`: every compacted partition replica on this node with where the log cleaner
/// stands (`engine::DirtyStats`), as `sluice topic describe --http-addr` prints it. Shards
/// that do not answer within `SHARD_ANSWER_TIMEOUT` are left out.
fn render_cleaner(shared: &Arc<Shared>) -> String {
    let shards = shared.shard_count();
    let (tx, rx) = mpsc::channel::<Vec<serde_json::Value>>();
    for id in 0..shards {
        let tx = tx.clone();
        let task: ShardTask = Box::new(move |shard: &Rc<Shard>| {
            let _ = tx.send(cleaner_rows(shard));
            Box::pin(async {})
        });
        let _ = shared.mesh[id].try_send(task);
    }
    drop(tx);
    let mut rows = Vec::new();
    let deadline = Instant::now() + SHARD_ANSWER_TIMEOUT;
    for _ in 0..shards {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(mut r) => rows.append(&mut r),
            Err(_) => break,
        }
    }
    rows.sort_by_key(|r| {
        (
            r["topic"].as_str().unwrap_or("").to_string(),
            r["partition"].as_i64(),
        )
    });
    serde_json::json!({ "partitions": rows }).to_string()
}

/// Runs on the shard: its compacted partitions' cleaner state.
fn cleaner_rows(shard: &Rc<Shard>) -> Vec<serde_json::Value> {
    let now_ms = crate::partition::now_ms();
    let partitions: Vec<Rc<Partition>> = shard
        .partitions
        .borrow()
        .values()
        .flat_map(|v| v.iter().flatten().cloned())
        .collect();
    partitions
        .iter()
        .filter(|p| !p.is_retired() && p.config.borrow().cleanup_policy.compacts())
        .map(|p| {
            let lag = p.config.borrow().min_compaction_lag_ms;
            let s = p.log.dirty_stats(now_ms, p.last_stable_offset(), lag);
            serde_json::json!({
                "topic": p.topic,
                "partition": p.index,
                "shard": shard.id.0,
                "log_start_offset": p.log.log_start_offset(),
                "log_end_offset": p.log.log_end_offset(),
                "first_dirty_offset": s.first_dirty_offset,
                "first_uncleanable_offset": s.first_uncleanable_offset,
                "clean_bytes": s.clean_bytes,
                "dirty_bytes": s.dirty_bytes,
                "uncleanable_bytes": s.uncleanable_bytes,
                "dirty_ratio": s.dirty_ratio(),
            })
        })
        .collect()
}

fn render_status(shared: &Arc<Shared>) -> String {
    let snapshots = collect_snapshots(shared);
    let topics = snapshots[ShardId(0).0].map(|s| s.topics);
    serde_json::json!({
        "node_id": shared.node_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "shards": shared.shard_count(),
        "topics": topics,
        "kafka_addr": format!("{}:{}", shared.advertised_host, shared.advertised_port),
    })
    .to_string()
}
