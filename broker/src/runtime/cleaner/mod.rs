//! The log cleaner's task on each shard: picks the compacted partitions whose dirty ratio
//! (or max.compaction.lag.ms) makes them due and runs `engine::Log::clean` on them, one at a
//! time, filthiest first (Kafka's `LogCleanerManager.grabFilthiestCompactedLog`).
//!
//! Owns: the `[cleaner]` settings, the shard's offset map and I/O throttle, the choice of
//! what to clean, the cleaner counters on `/metrics`.
//! Does not own: what a round keeps or removes and the swap (engine `compaction`), which
//! batches producer state needs (`Partition::retains_for_producer_state`).
//! Invariants: one round at a time per shard, each with the shard's share of the offset-map
//! memory and of the I/O budget; every partition at most once per pass, so a round that
//! cannot make progress (an open transaction at the log start) does not spin; the task
//! yields at every read, write and throttle pause, and appends and fetches on the same
//! partition go on meanwhile (the engine takes the write lock only to swap a group in).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shard;
use crate::partition::Partition;

pub mod config;

pub use config::{CleanerSection, DEDUPE_BUFFER_BYTES_PER_SHARD_MIN};

/// Runs passes until the shard stops.
pub async fn cleaner_loop(shard: Rc<Shard>) {
    let config = shard.config().cleaner.clone();
    if !config.enabled {
        return;
    }
    let shards = shard.shared.shard_count().max(1) as u64;
    let map_bytes = (config.dedupe_buffer_bytes / shards).max(DEDUPE_BUFFER_BYTES_PER_SHARD_MIN);
    let mut map = engine::OffsetMap::with_memory(map_bytes as usize);
    let io_budget = match config.io_max_bytes_per_second {
        0 => u64::MAX,
        n => (n / shards).max(1),
    };
    let mut throttle = engine::Throttle::new(io_budget);
    let backoff = Duration::from_millis(config.backoff_ms);
    while !shard.is_stopping() {
        let stop = shard.stop_notify.notified();
        let sleep = Box::pin(compio::time::sleep(backoff));
        if let futures_util::future::Either::Right(_) =
            futures_util::future::select(sleep, stop).await
        {
            break;
        }
        pass(&shard, &mut map, &mut throttle).await;
    }
}

/// Cleans every due partition once, filthiest first.
async fn pass(shard: &Rc<Shard>, map: &mut engine::OffsetMap, throttle: &mut engine::Throttle) {
    let mut done: Vec<Rc<Partition>> = Vec::new();
    loop {
        if shard.is_stopping() {
            return;
        }
        let now_ms = crate::partition::now_ms();
        let Some(p) = filthiest(shard, now_ms, &done) else {
            return;
        };
        done.push(Rc::clone(&p));
        let config = p.config.borrow().clone();
        let retain = |h: &engine::batch::BatchHeader| p.retains_for_producer_state(h);
        let result = p
            .log
            .clean(engine::CleanOptions {
                now_ms,
                last_stable_offset: p.last_stable_offset(),
                delete_retention_ms: config.delete_retention_ms,
                min_compaction_lag_ms: config.min_compaction_lag_ms,
                map,
                throttle,
                retain_batch: &retain,
            })
            .await;
        let metrics = &shard.shared.metrics[shard.id.0];
        match result {
            Ok(report) => {
                metrics.cleaner_rounds.fetch_add(1, Ordering::Relaxed);
                metrics
                    .cleaner_bytes_read
                    .fetch_add(report.bytes_read, Ordering::Relaxed);
                metrics
                    .cleaner_bytes_written
                    .fetch_add(report.bytes_written, Ordering::Relaxed);
                metrics
                    .cleaner_records_removed
                    .fetch_add(report.records_removed, Ordering::Relaxed);
                tracing::info!(target: "broker::cleaner", shard = shard.id.0, topic = %p.topic, partition = p.index,
                    dirty_from = report.dirty_from, dirty_to = report.dirty_to, bytes_read = report.bytes_read,
                    bytes_written = report.bytes_written, records_removed = report.records_removed,
                    segments_before = report.segments_before, segments_after = report.segments_after,
                    groups_skipped = report.groups_skipped, "cleaned");
            }
            Err(error) => {
                metrics.cleaner_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "broker::cleaner", shard = shard.id.0, topic = %p.topic, partition = p.index, %error, "cleaning failed; retried next pass");
            }
        }
    }
}

/// The due compacted partition with the highest dirty ratio, not yet done this pass; also
/// publishes the shard's largest dirty ratio and cleaner lag.
fn filthiest(shard: &Rc<Shard>, now_ms: i64, done: &[Rc<Partition>]) -> Option<Rc<Partition>> {
    let partitions: Vec<Rc<Partition>> = shard
        .partitions
        .borrow()
        .values()
        .flat_map(|v| v.iter().flatten().cloned())
        .collect();
    let mut best: Option<(f64, Rc<Partition>)> = None;
    let mut max_ratio = 0.0f64;
    let mut max_lag_ms = 0i64;
    for p in partitions {
        if p.is_retired() || done.iter().any(|d| Rc::ptr_eq(d, &p)) {
            continue;
        }
        let config = p.config.borrow().clone();
        if !config.cleanup_policy.compacts() {
            continue;
        }
        let stats = p
            .log
            .dirty_stats(now_ms, p.last_stable_offset(), config.min_compaction_lag_ms);
        if stats.dirty_bytes == 0 {
            continue;
        }
        let ratio = stats.dirty_ratio();
        let lag_ms = stats
            .dirty_first_timestamp
            .map_or(0, |t| now_ms.saturating_sub(t).max(0));
        max_ratio = max_ratio.max(ratio);
        max_lag_ms = max_lag_ms.max(lag_ms);
        let due =
            ratio >= config.min_cleanable_dirty_ratio || lag_ms > config.max_compaction_lag_ms;
        if due && best.as_ref().is_none_or(|(r, _)| ratio > *r) {
            best = Some((ratio, p));
        }
    }
    let metrics = &shard.shared.metrics[shard.id.0];
    metrics
        .cleaner_max_dirty_ratio_permille
        .store((max_ratio * 1000.0) as u64, Ordering::Relaxed);
    metrics
        .cleaner_max_lag_ms
        .store(max_lag_ms as u64, Ordering::Relaxed);
    best.map(|(_, p)| p)
}
