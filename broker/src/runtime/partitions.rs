//! The partitions a shard owns: opened when metadata names them, closed (and their files
//! removed) when their topic is deleted, re-configured when their topic's configs change.
//!
//! Layout on disk: `<data_dir>/<topic>-<partition>/` as Kafka does. A deleted topic's
//! directories are renamed to `<topic>-<partition>.<id>-delete` first (atomic), then removed,
//! so a re-created topic of the same name never sees old segments. Like Kafka
//! (`LocalLog.logDirNameWithSuffixCappedLength`), the topic part of such a name is cut short
//! so the whole name fits a 255-byte file name: a 249-character topic name is legal, and a
//! rename that failed with ENAMETOOLONG once left its data for the re-created topic to serve.
//! Where the rename still fails, the directory is removed in place.
//!
//! A shard opens only the partitions this node replicates (by the committed partition states
//! in the metadata), each with a replication core attached; the core learns
//! its role later through `crate::replica::deliver`. The first such partition starts the
//! shard's replica timer.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::FutureExt;

use crate::metadata::{ClusterMetadata, TopicConfig, TopicMeta};
use crate::partition::{Partition, ReplicaSetup};
use crate::runtime::Shard;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("topic {topic}: invalid config: {source}")]
    Config {
        topic: String,
        #[source]
        source: crate::metadata::TopicConfigError,
    },
    #[error("partition {topic}-{partition}: {source}")]
    Log {
        topic: String,
        partition: i32,
        #[source]
        source: engine::LogError,
    },
    #[error("partition {topic}-{partition}: panicked while opening: {message}")]
    Panic {
        topic: String,
        partition: i32,
        message: String,
    },
}

pub fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// At start-up, before any shard opens a log: finishes interrupted topic deletions
/// (`*-delete` directories are removed) and moves aside partition directories the catalog
/// does not know (a crash between the catalog update and the rename of a deleted topic), so a
/// topic re-created under the same name never opens old segments. Stray directories are
/// renamed `<topic>-<partition>.<unique>-stray` (the topic cut short to fit, as for
/// `-delete`), never deleted: if the catalog itself was lost, the data is still there to
/// recover by hand. An entry that cannot be handled is logged and skipped; the sweep goes on.
/// Fails only when the data dir cannot be listed.
pub fn sweep_data_dir(
    data_dir: &std::path::Path,
    metadata: &ClusterMetadata,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(target: "broker::partition", dir = %data_dir.display(), %error, "listing the data dir failed at an entry; going on");
                continue;
            }
        };
        if let Err(error) = sweep_entry(&entry, metadata) {
            tracing::error!(target: "broker::partition", dir = %entry.path().display(), %error, "sweeping a data dir entry failed; going on");
        }
    }
    Ok(())
}

/// One entry of `sweep_data_dir`.
fn sweep_entry(entry: &std::fs::DirEntry, metadata: &ClusterMetadata) -> std::io::Result<()> {
    if !entry.file_type()?.is_dir() {
        return Ok(());
    }
    let name = entry.file_name().to_string_lossy().to_string();
    if name.ends_with(DELETE_SUFFIX) {
        tracing::info!(target: "broker::partition", dir = %name, "removing a deleted topic's partition");
        return std::fs::remove_dir_all(entry.path());
    }
    let Some((topic, index)) = name.rsplit_once('-') else {
        return Ok(());
    };
    let Ok(index) = index.parse::<i32>() else {
        return Ok(());
    };
    if !crate::metadata::valid_topic_name(topic) {
        return Ok(());
    }
    let known = metadata
        .topic(topic)
        .is_some_and(|t| index >= 0 && index < t.partitions);
    if known {
        return Ok(());
    }
    let unique = crate::metadata::new_topic_id().simple().to_string();
    let aside = entry
        .path()
        .with_file_name(capped_dir_name(topic, index, &unique, STRAY_SUFFIX));
    tracing::warn!(target: "broker::partition", dir = %name, aside = %aside.display(), "partition directory not in the catalog; moved aside");
    std::fs::rename(entry.path(), aside)
}

/// Brings the shard's open partitions in line with `new` and installs it as the shard's
/// metadata. Opens what is new, closes and removes what is gone, updates configs.
///
/// Never fails as a whole: a partition that cannot be opened (a damaged log, a config the
/// engine refuses, no file descriptors, even a panic in its recovery) is logged, marked
/// offline on this shard and returned; every other partition opens and the metadata is
/// installed, so one bad partition never takes the shard's other topics away.
pub async fn apply_metadata(shard: &Rc<Shard>, new: Arc<ClusterMetadata>) -> Vec<OpenError> {
    let old = shard.metadata();
    // Removed topics (or re-created under a new id).
    let removed: Vec<Arc<TopicMeta>> = old
        .topics
        .values()
        .filter(|t| new.topic(&t.name).is_none_or(|n| n.id != t.id))
        .cloned()
        .collect();
    for t in removed {
        remove_topic(shard, &t).await;
    }
    shard
        .offline_partitions
        .borrow_mut()
        .retain(|(topic, _), _| new.topic(topic).is_some());
    let mut failures = Vec::new();
    for t in new.topics.values() {
        open_topic(shard, t, &mut failures).await;
    }
    shard.set_metadata(new);
    failures
}

/// Opens (or re-configures) the partitions of `topic` that this shard owns. Failures are
/// per partition: each is logged, marked offline and pushed to `failures`.
async fn open_topic(shard: &Rc<Shard>, topic: &Arc<TopicMeta>, failures: &mut Vec<OpenError>) {
    let config = shard.config();
    let owned: Vec<(i32, crate::metadata::PartitionInfo)> = (0..topic.partitions)
        .filter(|&p| shard.owner_of(&topic.name, p) == shard.id)
        // Only partitions this node replicates, once their state is known.
        .filter_map(|p| match topic.partition_state(p) {
            Some(info) if info.replicas.contains(&shard.shared.node_id()) => {
                Some((p, info.clone()))
            }
            _ => None,
        })
        .collect();
    let topic_config = match TopicConfig::resolve(&config.log, &topic.configs) {
        Ok(c) => c,
        Err(source) => {
            for &(p, _) in &owned {
                let error = OpenError::Config {
                    topic: topic.name.clone(),
                    source: source.clone(),
                };
                mark_offline(shard, &topic.name, p, error, failures);
            }
            return;
        }
    };
    for (p, info) in owned {
        let opened =
            std::panic::AssertUnwindSafe(open_partition(shard, topic, p, &info, &topic_config))
                .catch_unwind()
                .await;
        let result = match opened {
            Ok(result) => result,
            Err(panic) => Err(OpenError::Panic {
                topic: topic.name.clone(),
                partition: p,
                message: panic_message(&*panic),
            }),
        };
        match result {
            Ok(()) => {
                shard
                    .offline_partitions
                    .borrow_mut()
                    .remove(&(topic.name.clone(), p));
            }
            Err(error) => mark_offline(shard, &topic.name, p, error, failures),
        }
    }
}

/// Opens one partition, or re-configures it if it is open already.
async fn open_partition(
    shard: &Rc<Shard>,
    topic: &Arc<TopicMeta>,
    p: i32,
    info: &crate::metadata::PartitionInfo,
    topic_config: &TopicConfig,
) -> Result<(), OpenError> {
    let config = shard.config();
    let handle = &shard.shared.cluster;
    if let Some(existing) = shard.partition(&topic.name, p) {
        if *existing.config.borrow() != *topic_config {
            let old_log_config = existing.config.borrow().log_config(&config.log);
            let new_log_config = topic_config.log_config(&config.log);
            // Broker-side checks (max.message.bytes, timestamps) apply at once.
            *existing.config.borrow_mut() = topic_config.clone();
            let min = topic_config.min_insync_replicas.max(1) as usize;
            existing
                .replica
                .step(|core, _, _| core.set_min_insync_replicas(min));
            if old_log_config != new_log_config {
                reopen(
                    shard,
                    &existing,
                    topic,
                    topic_config.clone(),
                    new_log_config,
                )
                .await?;
            }
        }
        return Ok(());
    }
    let open = shard.shared.open_partition_replicas.load(Ordering::Relaxed);
    let budget = shard.shared.fd_budget.partition_replicas_max;
    if open >= budget as usize {
        // Over the open-file budget (the limit was lowered under existing partitions):
        // this one stays offline rather than take the descriptors kept for connections.
        let message = format!(
            "not opened: {open} partition replicas are open, the open-file budget is {budget} \
             (RLIMIT_NOFILE {}; docs/operations.md, \"Open files\")",
            shard.shared.fd_budget.limit
        );
        return Err(OpenError::Log {
            topic: topic.name.clone(),
            partition: p,
            source: engine::LogError::Limit(message),
        });
    }
    let dir = partition_dir(&config.broker.data_dir, &topic.name, p);
    ensure_replica_ticker(shard);
    let setup = ReplicaSetup {
        node: shard.shared.node_id(),
        partition_id: info.partition_id,
        config: handle.replica_config,
        request_id_base: crate::replica::request_id_base(),
        env: crate::replica::ShardEnv::new(shard, Arc::clone(handle)),
    };
    let partition = Partition::open(
        topic.name.clone(),
        p,
        dir,
        info.leader_epoch,
        topic_config.clone(),
        topic_config.log_config(&config.log),
        setup,
    )
    .await
    .map_err(|source| OpenError::Log {
        topic: topic.name.clone(),
        partition: p,
        source,
    })?;
    let mut map = shard.partitions.borrow_mut();
    let slots = map.entry(topic.name.clone()).or_default();
    let idx = p as usize;
    if slots.len() <= idx {
        slots.resize(idx + 1, None);
    }
    if slots[idx].replace(partition).is_none() {
        shard
            .shared
            .open_partition_replicas
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn mark_offline(
    shard: &Shard,
    topic: &str,
    partition: i32,
    error: OpenError,
    failures: &mut Vec<OpenError>,
) {
    tracing::error!(target: "broker::partition", shard = shard.id.0, topic, partition, %error, "partition offline: it could not be opened; the shard's other partitions are unaffected");
    shard
        .offline_partitions
        .borrow_mut()
        .insert((topic.to_string(), partition), error.to_string());
    failures.push(error);
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Starts this shard's replica timer once.
fn ensure_replica_ticker(shard: &Rc<Shard>) {
    if !shard.replica_ticker_started.replace(true) {
        compio::runtime::spawn(crate::replica::run_ticker(Rc::clone(shard))).detach();
    }
}

/// Applies log-level settings (retention, segment size and age, flush policy) to a live
/// partition: the engine has no re-configure call, so the log is closed and opened again with
/// the new config, after the appends already queued. The old `Partition` is retired: requests
/// still holding it get NOT_LEADER_OR_FOLLOWER (retriable) and its fetch waiters are woken to
/// re-read from the new one.
async fn reopen(
    shard: &Rc<Shard>,
    old: &Rc<Partition>,
    topic: &TopicMeta,
    topic_config: TopicConfig,
    log_config: engine::LogConfig,
) -> Result<(), OpenError> {
    let _guard = old.append_lock.lock().await;
    old.retire();
    // The replication core carries over; its queued actions wait for the new log.
    let new = old.reopen_replicated(topic_config, log_config).await;
    let new = new.map_err(|source| OpenError::Log {
        topic: topic.name.clone(),
        partition: old.index,
        source,
    })?;
    if let Some(slot) = shard
        .partitions
        .borrow_mut()
        .get_mut(&topic.name)
        .and_then(|v| v.get_mut(old.index as usize))
    {
        *slot = Some(new);
    }
    old.data_notify.notify_all();
    tracing::info!(target: "broker::partition", topic = %topic.name, partition = old.index, "re-opened with new log config");
    Ok(())
}

/// Closes the topic's partitions on this shard and deletes their directories, and the
/// directories of partitions this shard owns but did not open (one that failed to open keeps
/// its files too, and a re-created topic must not find them).
async fn remove_topic(shard: &Rc<Shard>, topic: &TopicMeta) {
    let parts = shard
        .partitions
        .borrow_mut()
        .remove(&topic.name)
        .unwrap_or_default();
    for p in parts.into_iter().flatten() {
        shard
            .shared
            .open_partition_replicas
            .fetch_sub(1, Ordering::Relaxed);
        // Wait for in-flight appends, then close.
        let _guard = p.append_lock.lock().await;
        p.retire();
        if let Err(e) = p.log.close().await {
            tracing::warn!(target: "broker::partition", topic = %topic.name, partition = p.index, error = %e, "close failed");
        }
        p.data_notify.notify_all();
    }
    let data_dir = &shard.config().broker.data_dir;
    for index in 0..topic.partitions {
        if shard.owner_of(&topic.name, index) == shard.id {
            delete_partition_dir(data_dir, topic, index);
        }
    }
}

/// Suffix of a deleted partition's directory until it is removed.
const DELETE_SUFFIX: &str = "-delete";
/// Suffix of a partition directory the catalog does not know, kept for recovery by hand.
const STRAY_SUFFIX: &str = "-stray";
/// Longest file name the data dir's file system takes (NAME_MAX of Linux file systems).
const FILE_NAME_BYTES_MAX: usize = 255;
/// Kafka's longest topic name (`valid_topic_name`).
const TOPIC_NAME_BYTES_MAX: usize = 249;

// A partition directory itself always fits: 249 + "-" + the partition's digits.
const _: () = assert!(
    crate::config::PARTITIONS_PER_TOPIC_MAX <= 100_000
        && TOPIC_NAME_BYTES_MAX + 1 + 5 <= FILE_NAME_BYTES_MAX
);

/// `<topic>-<partition>.<unique><suffix>`, the topic cut short so that the whole name fits
/// `FILE_NAME_BYTES_MAX` (Kafka: `LocalLog.logDirNameWithSuffixCappedLength`). The suffix
/// still names the directory's state, so the start-up sweep recognises it.
fn capped_dir_name(topic: &str, partition: i32, unique: &str, suffix: &str) -> String {
    let tail = format!("-{partition}.{unique}{suffix}");
    let mut keep = topic
        .len()
        .min(FILE_NAME_BYTES_MAX.saturating_sub(tail.len()));
    // Topic names are ASCII (`valid_topic_name`); stay on a char boundary regardless.
    while !topic.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{tail}", &topic[..keep])
}

/// Renames a deleted topic's partition directory to its `-delete` name and removes it. If
/// the rename fails, the directory is removed in place: either way nothing is left under the
/// partition's own name for a re-created topic to open. What a failed removal leaves under
/// the `-delete` name, the start-up sweep removes.
fn delete_partition_dir(data_dir: &std::path::Path, topic: &TopicMeta, index: i32) {
    let dir = partition_dir(data_dir, &topic.name, index);
    let unique = topic.id.simple().to_string();
    let doomed = dir.with_file_name(capped_dir_name(&topic.name, index, &unique, DELETE_SUFFIX));
    match std::fs::rename(&dir, &doomed) {
        Ok(()) => {
            if let Err(error) = std::fs::remove_dir_all(&doomed) {
                tracing::warn!(target: "broker::partition", dir = %doomed.display(), %error, "remove failed; the start-up sweep retries");
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(target: "broker::partition", dir = %dir.display(), %error, "rename for delete failed; removing in place");
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(target: "broker::partition", dir = %dir.display(), %error, "a deleted partition's files could not be removed: remove the directory by hand before re-creating the topic")
                }
            }
        }
    }
}

/// Flushes and closes every partition on this shard (shutdown).
pub async fn close_all(shard: &Rc<Shard>) {
    let all: Vec<Rc<Partition>> = shard
        .partitions
        .borrow_mut()
        .drain()
        .flat_map(|(_, v)| v.into_iter().flatten())
        .collect();
    for p in all {
        let _guard = p.append_lock.lock().await;
        // The next open then loads it and scans nothing (Kafka snapshots at clean close).
        if let Err(e) = p.snapshot_locked().await {
            tracing::warn!(target: "broker::partition", topic = %p.topic, partition = p.index, error = %e, "producer snapshot at close failed");
        }
        p.retire();
        if let Err(e) = p.log.close().await {
            tracing::error!(target: "broker::partition", topic = %p.topic, partition = p.index, error = %e, "close failed");
        }
        p.data_notify.notify_all();
    }
}

/// Housekeeping for every partition on this shard: `flush_tick` (interval flushes and
/// checkpoints) always; segment.ms rolls and retention when `full`.
pub async fn housekeeping(shard: &Rc<Shard>, now_ms: i64, full: bool) {
    let all: Vec<Rc<Partition>> = shard
        .partitions
        .borrow()
        .values()
        .flat_map(|v| v.iter().flatten().cloned())
        .collect();
    for p in all {
        if p.is_retired() {
            continue;
        }
        if full {
            if let Err(e) = p.log.roll_if_due(now_ms).await {
                tracing::warn!(target: "broker::partition", topic = %p.topic, partition = p.index, error = %e, "segment roll failed");
            }
            match p.log.enforce_retention(now_ms).await {
                Ok(report) if report.deleted_segments > 0 => p.after_log_start_moved(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "broker::partition", topic = %p.topic, partition = p.index, error = %e, "retention failed")
                }
            }
        }
        if let Err(e) = p.log.flush_tick(now_ms).await {
            tracing::warn!(target: "broker::partition", topic = %p.topic, partition = p.index, error = %e, "flush failed");
        }
        // After a roll: a producer-state snapshot at the new segment (Kafka's roll does it).
        if let Err(e) = p.snapshot_if_rolled().await {
            tracing::warn!(target: "broker::partition", topic = %p.topic, partition = p.index, error = %e, "producer snapshot failed");
        }
    }
}

/// The shard's free-space check (from its housekeeping loop): reads the free space, then
/// lets partitions refused after a failed write resume if the space came back.
pub fn check_disk(shard: &Rc<Shard>, now: Instant) {
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
    fn capped_dir_names_fit_and_keep_their_suffix() {
        let unique = "0123456789abcdef0123456789abcdef";
        let short = capped_dir_name("orders", 3, unique, DELETE_SUFFIX);
        assert_eq!(short, format!("orders-3.{unique}-delete"));
        let long = "x".repeat(TOPIC_NAME_BYTES_MAX);
        for partition in [0, 9, crate::config::PARTITIONS_PER_TOPIC_MAX - 1] {
            for suffix in [DELETE_SUFFIX, STRAY_SUFFIX] {
                let name = capped_dir_name(&long, partition, unique, suffix);
                assert_eq!(name.len(), FILE_NAME_BYTES_MAX, "{name}");
                assert!(name.ends_with(&format!("-{partition}.{unique}{suffix}")));
                assert!(name.starts_with("xxx"));
            }
        }
    }
}
