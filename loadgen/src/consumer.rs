//! One consumer: fetches its assigned partitions from their leaders, counts records and
//! measures end-to-end latency from the due time loadgen's producers embed in each value.
//!
//! Owns: one connection per leader, and (with `--group`) its group membership. Partitions are
//! assigned statically (partition p to consumer p % consumers) or by the group's range
//! assignment. Fetch positions are shared by all consumers of the run.
//! Invariants: a position only moves forward, to the offset after the last complete batch
//! fetched, and only by the consumer whose fetch started at it (compare and set), so a
//! partition read by two members during a rebalance is still counted once; consumers stop
//! once every position reached its target (the log end offsets observed after the producers
//! finished) or when aborted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, TopicName};
use kafka_wire::error::OFFSET_OUT_OF_RANGE;
use tokio::sync::{mpsc, watch};

use crate::client::cluster::topic_name;
use crate::client::group::GroupMember;
use crate::client::{Cluster, Connection, TopicLayout, error_codes};
use crate::producer::{StopSignal, VALUE_HEADER_BYTES, VALUE_MAGIC};
use crate::record_batch::for_each_value;
use crate::schedule::{Clock, latency_us};
use crate::stats::Stats;

/// Fetch long-poll time.
const FETCH_MAX_WAIT_MS: i32 = 100;
/// Most bytes one Fetch answer may carry.
const FETCH_MAX_BYTES: i32 = 64 * 1024 * 1024;
/// Most bytes per partition in one Fetch answer.
const FETCH_PARTITION_MAX_BYTES: i32 = 8 * 1024 * 1024;
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct ConsumerConfig {
    pub index: u32,
    /// Partitions this consumer reads (ignored with a group: the group assigns them).
    pub partitions: Vec<usize>,
    /// Consumer group to join, if any.
    pub group: Option<String>,
    /// Fetch with isolation level read_committed (a transactional run): records show up once
    /// their transaction commits. Aborted transactions' records are not filtered out (a
    /// transactional run aborts only when a batch failed, which the report counts anyway).
    pub read_committed: bool,
}

#[derive(Clone)]
pub struct ConsumerShared {
    pub cluster: Arc<Cluster>,
    pub stats: Arc<Stats>,
    pub clock: Clock,
    /// Offsets to read up to, once the producers are done.
    pub targets: watch::Receiver<Option<Arc<Vec<i64>>>>,
    pub stop: watch::Receiver<StopSignal>,
    /// Next offset to read, by partition, shared by all consumers (starts at the log end
    /// before producing).
    pub positions: Arc<Mutex<Vec<i64>>>,
    /// Told once this consumer has its first assignment.
    pub ready: mpsc::Sender<()>,
    /// Latencies of records due before this (µs since the epoch) are warm-up; set before
    /// the producers start.
    pub measure_from_us: Arc<AtomicU64>,
}

pub async fn run_consumer(config: ConsumerConfig, shared: ConsumerShared) -> Result<()> {
    let mut member = match &config.group {
        Some(group) => {
            let bootstrap = shared.cluster.admin().await?;
            let partitions = shared.cluster.layout().partitions();
            let topic = shared.cluster.topic().to_string();
            Some(GroupMember::join(bootstrap, group, &topic, partitions).await?)
        }
        None => None,
    };
    let _ = shared.ready.send(()).await;
    let result = consume(&config, &shared, member.as_mut()).await;
    if let Some(member) = member.as_mut() {
        member.leave().await;
    }
    result
}

async fn consume(
    config: &ConsumerConfig,
    shared: &ConsumerShared,
    mut member: Option<&mut GroupMember>,
) -> Result<()> {
    let topic = topic_name(shared.cluster.topic());
    let mut partitions = match &member {
        Some(member) => {
            note_assignment(config, member);
            member.assignment().to_vec()
        }
        None => config.partitions.clone(),
    };
    let mut layout = shared.cluster.layout();
    let mut connections: HashMap<i32, Connection> = HashMap::new();
    let mut stop = shared.stop.clone();
    let mut targets = shared.targets.clone();
    loop {
        if *stop.borrow_and_update() == StopSignal::Abort {
            return Ok(());
        }
        if let Some(targets) = targets.borrow_and_update().clone() {
            let positions = shared.positions.lock().expect("positions lock");
            if positions.iter().zip(targets.iter()).all(|(p, t)| p >= t) {
                return Ok(());
            }
        }
        if let Some(member) = member.as_deref_mut()
            && member.heartbeat_if_due().await?
        {
            note_assignment(config, member);
            partitions = member.assignment().to_vec();
        }
        let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
        let mut leaderless = false;
        for &partition in &partitions {
            match layout.leaders.get(partition).copied().flatten() {
                Some(leader) => by_leader.entry(leader).or_default().push(partition),
                None => leaderless = true,
            }
        }
        let mut refresh = leaderless;
        let idle = by_leader.is_empty();
        for (leader, partitions) in by_leader {
            let connection = match connection_for(&mut connections, &layout, leader).await {
                Ok(connection) => connection,
                Err(_) => {
                    shared.stats.error(error_codes::NETWORK_EXCEPTION, 1);
                    refresh = true;
                    continue;
                }
            };
            let isolation_level = i8::from(config.read_committed);
            match fetch_once(&connection, &topic, &partitions, isolation_level, shared).await {
                Ok(needs_refresh) => refresh |= needs_refresh,
                Err(error) => {
                    connections.remove(&leader);
                    shared.stats.error(error_codes::NETWORK_EXCEPTION, 1);
                    eprintln!("loadgen: consumer {}: {error:#}", config.index);
                    refresh = true;
                }
            }
        }
        if refresh || idle {
            tokio::select! {
                _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                _ = stop.changed() => {}
                _ = targets.changed() => {}
            }
        }
        if refresh && shared.cluster.refresh().await.is_ok() {
            layout = shared.cluster.layout();
        }
    }
}

fn note_assignment(config: &ConsumerConfig, member: &GroupMember) {
    eprintln!(
        "loadgen: consumer {} in group {} generation {}: partitions {:?}",
        config.index,
        config.group.as_deref().unwrap_or(""),
        member.generation_id(),
        member.assignment()
    );
}

async fn connection_for(
    connections: &mut HashMap<i32, Connection>,
    layout: &TopicLayout,
    leader: i32,
) -> Result<Connection> {
    if let Some(connection) = connections.get(&leader) {
        return Ok(connection.clone());
    }
    let Some(addr) = layout.brokers.get(&leader) else {
        bail!("no address for broker {leader}");
    };
    let connection = Connection::connect(addr, 1).await?;
    connections.insert(leader, connection.clone());
    Ok(connection)
}

/// One Fetch for `partitions` on one leader. Returns true if metadata should be refreshed.
async fn fetch_once(
    connection: &Connection,
    topic: &TopicName,
    partitions: &[usize],
    isolation_level: i8,
    shared: &ConsumerShared,
) -> Result<bool> {
    let fetch_offsets: Vec<(usize, i64)> = {
        let positions = shared.positions.lock().expect("positions lock");
        partitions.iter().map(|&p| (p, positions[p])).collect()
    };
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_isolation_level(isolation_level)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(
                    fetch_offsets
                        .iter()
                        .map(|&(p, offset)| {
                            FetchPartition::default()
                                .with_partition(p as i32)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(offset)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES)
                        })
                        .collect(),
                ),
        ]);
    let response = connection.call(&request, ApiKey::Fetch).await?;
    if response.error_code != 0 {
        shared.stats.error(response.error_code, 1);
        return Ok(error_codes::needs_metadata_refresh(response.error_code));
    }
    let mut refresh = false;
    for topic_response in &response.responses {
        for partition in &topic_response.partitions {
            let index = partition.partition_index as usize;
            let Some(&(_, from)) = fetch_offsets.iter().find(|(p, _)| *p == index) else {
                continue;
            };
            if partition.error_code != 0 {
                shared.stats.error(partition.error_code, 1);
                if partition.error_code == OFFSET_OUT_OF_RANGE {
                    // The broker dropped data loadgen has not read (retention, truncation):
                    // counted as an error, reading goes on from the log start.
                    eprintln!(
                        "loadgen: partition {index}: offset {from} out of range, \
                         skipping to log start {}",
                        partition.log_start_offset
                    );
                    if partition.log_start_offset <= from {
                        bail!("partition {index}: fetch offset {from} out of range");
                    }
                    let mut positions = shared.positions.lock().expect("positions lock");
                    if positions[index] == from {
                        positions[index] = partition.log_start_offset;
                    }
                    continue;
                }
                refresh |= error_codes::needs_metadata_refresh(partition.error_code);
                continue;
            }
            let Some(blob) = &partition.records else {
                continue;
            };
            let measure_from_us = shared.measure_from_us.load(Ordering::Relaxed);
            let read = read_partition(blob, from, shared.clock.now_us(), measure_from_us)?;
            if read.next == from {
                continue;
            }
            // Count only if no other consumer moved this partition meanwhile.
            {
                let mut positions = shared.positions.lock().expect("positions lock");
                if positions[index] != from {
                    continue;
                }
                positions[index] = read.next;
            }
            if !read.latencies.is_empty() {
                let mut recorder = shared.stats.end_to_end.lock().expect("recorder lock");
                for &(latency, measured) in &read.latencies {
                    recorder.record_n(latency, 1, measured);
                }
            }
            shared
                .stats
                .records_consumed
                .fetch_add(read.records, Ordering::Relaxed);
            shared
                .stats
                .bytes_consumed
                .fetch_add(read.bytes, Ordering::Relaxed);
        }
    }
    Ok(refresh)
}

/// What one partition's fetched records held.
struct PartitionRead {
    next: i64,
    records: u64,
    bytes: u64,
    latencies: Vec<(u64, bool)>,
}

fn read_partition(
    blob: &bytes::Bytes,
    from: i64,
    now_us: u64,
    measure_from_us: u64,
) -> Result<PartitionRead> {
    let mut read = PartitionRead {
        next: from,
        records: 0,
        bytes: 0,
        latencies: Vec::new(),
    };
    let mut next = from;
    for_each_value(
        blob,
        |batch| next = next.max(batch.next_offset()),
        |offset, value| {
            if offset < from {
                return;
            }
            read.records += 1;
            read.bytes += value.len() as u64;
            if value.len() >= VALUE_HEADER_BYTES && value[8..12] == VALUE_MAGIC {
                let due_us = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
                read.latencies
                    .push((latency_us(due_us, now_us), due_us >= measure_from_us));
            }
        },
    )?;
    read.next = next;
    Ok(read)
}

/// Assigns partitions round robin: consumer `c` of `consumers` reads `p` where
/// `p % consumers == c`.
pub fn assignment(partitions: usize, consumers: u32, index: u32) -> Vec<usize> {
    assert!(consumers > 0 && index < consumers);
    (0..partitions)
        .filter(|p| p % consumers as usize == index as usize)
        .collect()
}

/// When consumers are told to give up after producers finished.
pub fn drain_deadline(now: Instant, drain_secs: f64) -> Instant {
    now + Duration::from_secs_f64(drain_secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_covers_every_partition_once() {
        let mut seen = Vec::new();
        for c in 0..3 {
            seen.extend(assignment(8, 3, c));
        }
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        assert!(assignment(2, 4, 3).is_empty());
    }
}
