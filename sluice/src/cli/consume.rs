//! `sluice consume TOPIC`: prints record values, one per line (`--print-keys`: KEY\tVALUE).
//!
//! Reads every partition of the topic from its leader. With `--group G` it is a member of the
//! classic consumer group G (`membership.rs`: range assignor, heartbeats, rebalances, a
//! LeaveGroup at the end): it reads the partitions assigned to it from G's committed offsets
//! and commits after each batch it prints (at least once: a rebalance between a print and its
//! commit lets the next owner print those records again). Without a committed offset it
//! starts at the log end, or the log start with `--from-beginning`. It stops after `--max-records N`, after `--timeout-ms` without new
//! records, or never (Ctrl-C).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::records::RecordBatchDecoder;

use super::client::{Client, check};
use super::membership::Member;
use super::metadata::{self, Leaders, PartitionInfo};
use super::offsets::{self, EARLIEST, LATEST};
use super::{Bootstrap, group, topic_name};

/// Fetch long-poll wait.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Bytes per partition per fetch.
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// Bytes per Fetch response.
const FETCH_MAX_BYTES: i32 = 16 * 1024 * 1024;
/// Kafka v2 batch header: base offset (8) + batch length (4) + ... ; the records start at 61.
const BATCH_HEADER_BYTES: usize = 61;
const BATCH_LENGTH_AT: usize = 8;
const LAST_OFFSET_DELTA_AT: usize = 23;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    pub topic: String,
    /// Consumer group whose committed offsets are used and advanced.
    #[arg(long)]
    pub group: Option<String>,
    /// Start at the log start where no offset is committed (default: the log end).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after printing N records.
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Stop after this many milliseconds without a new record.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Print KEY<TAB>VALUE instead of the value alone.
    #[arg(long)]
    pub print_keys: bool,
}

pub fn run(args: ConsumeArgs) -> Result<()> {
    let topic = args.topic.as_str();
    let mut bootstrap = Client::bootstrap(&args.bootstrap.bootstrap)?;
    let (partitions, brokers) = metadata::partitions(&mut bootstrap, topic)?;
    if partitions.is_empty() {
        bail!("topic {topic:?} has no partitions");
    }
    let mut leaders = Leaders::new(&args.bootstrap.bootstrap, brokers);
    let mut group = match &args.group {
        Some(g) => {
            let mut coordinator = group::coordinator(&args.bootstrap.bootstrap, g)?;
            let member = Member::join(&mut coordinator, g, topic, partitions.len())?;
            Some((coordinator, member, g.as_str()))
        }
        None => None,
    };
    let mut assigned = assigned_partitions(&partitions, group.as_ref().map(|g| &g.1));
    let mut positions = start_positions(
        &args,
        &mut leaders,
        group.as_mut().map(|g| &mut g.0),
        &assigned,
    )?;
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let limit = args.max_records.unwrap_or(u64::MAX);
    while printed < limit {
        let mut progressed = Vec::new();
        // One Fetch per leader for all its partitions: an idle round costs one long poll
        // per broker, not one per partition.
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for p in &assigned {
            by_leader
                .entry(p.leader)
                .or_default()
                .push((p.partition, positions[&p.partition]));
        }
        for (leader, wanted) in by_leader {
            for (partition, records) in fetch(&mut leaders, topic, leader, &wanted)? {
                let from = positions[&partition];
                let mut next = from;
                for r in records {
                    if r.skip {
                        next = next.max(r.offset + 1);
                    } else if r.offset >= from && printed < limit {
                        print(&mut out, &r, args.print_keys)?;
                        printed += 1;
                        next = r.offset + 1;
                    } else if r.offset >= from {
                        break;
                    }
                }
                if next > from {
                    positions.insert(partition, next);
                    progressed.push((partition, next));
                }
            }
        }
        out.flush().context("writing stdout")?;
        if let Some((coordinator, member, g)) = group.as_mut() {
            if !progressed.is_empty() {
                let commit = group::commit(coordinator, g, topic, &progressed, member);
                if let Err(e) = commit {
                    // A rebalance in between: the next heartbeat rejoins; records since the
                    // last commit may be read again by the partition's next owner.
                    eprintln!("sluice consume: commit failed: {e:#}");
                }
            }
            if member.heartbeat_if_due(coordinator)? {
                assigned = assigned_partitions(&partitions, Some(member));
                positions = start_positions(&args, &mut leaders, Some(coordinator), &assigned)?;
            }
        }
        if !progressed.is_empty() {
            last_record = Instant::now();
        } else if let Some(t) = args.timeout_ms
            && last_record.elapsed() >= Duration::from_millis(t)
        {
            break;
        } else if assigned.is_empty() {
            // More members than partitions: nothing to fetch, keep heartbeating.
            std::thread::sleep(Duration::from_millis(FETCH_MAX_WAIT_MS as u64));
        }
    }
    if let Some((coordinator, member, _)) = group.as_mut() {
        member.leave(coordinator);
    }
    Ok(())
}

/// The partitions this consumer reads: all of them, or its group assignment.
fn assigned_partitions(
    partitions: &[PartitionInfo],
    member: Option<&Member>,
) -> Vec<PartitionInfo> {
    match member {
        None => partitions.to_vec(),
        Some(m) => partitions
            .iter()
            .filter(|p| m.assignment.contains(&p.partition))
            .cloned()
            .collect(),
    }
}

/// Where each partition starts: the group's committed offset, else the log start or end.
fn start_positions(
    args: &ConsumeArgs,
    leaders: &mut Leaders,
    coordinator: Option<&mut Client>,
    partitions: &[PartitionInfo],
) -> Result<BTreeMap<i32, i64>> {
    let default = if args.from_beginning {
        EARLIEST
    } else {
        LATEST
    };
    let mut positions = offsets::list(leaders, &args.topic, partitions, default)?;
    if let (Some(c), Some(g)) = (coordinator, args.group.as_deref()) {
        let ids: Vec<i32> = partitions.iter().map(|p| p.partition).collect();
        for ((_, partition), offset) in group::committed(c, g, Some((&args.topic, &ids)))? {
            positions.insert(partition, offset);
        }
    }
    Ok(positions)
}

/// One decoded record of a Fetch answer (control records left out).
struct Fetched {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    /// A control or empty batch: not printed, but the position moves past it.
    skip: bool,
}

/// Fetches `(partition, offset)` pairs of `topic` from `leader`; returns each partition's
/// records (an error code on any partition is an error, named).
fn fetch(
    leaders: &mut Leaders,
    topic: &str,
    leader: i32,
    wanted: &[(i32, i64)],
) -> Result<Vec<(i32, Vec<Fetched>)>> {
    let partitions = wanted
        .iter()
        .map(|&(partition, from)| {
            FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(from)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(PARTITION_MAX_BYTES)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions),
        ]);
    let (response, _) = leaders.get(leader)?.call(&request)?;
    check(response.error_code, "Fetch")?;
    let mut out = Vec::with_capacity(wanted.len());
    for answer in response.responses.iter().flat_map(|t| t.partitions.iter()) {
        let partition = answer.partition_index;
        if !wanted.iter().any(|w| w.0 == partition) {
            continue;
        }
        check(answer.error_code, &format!("fetching {topic}-{partition}"))?;
        let records = match &answer.records {
            Some(records) => decode(records.clone())?,
            None => Vec::new(),
        };
        out.push((partition, records));
    }
    Ok(out)
}

/// Decodes the complete batches in `records` (a Fetch may end with a partial one).
fn decode(mut records: Bytes) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    while records.len() >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes(
            records[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let total =
            BATCH_LENGTH_AT + 4 + usize::try_from(length).context("negative batch length")?;
        if records.len() < total {
            break;
        }
        let mut batch = records.split_to(total);
        let base = i64::from_be_bytes(batch[..8].try_into().expect("8 bytes"));
        let last_delta = i32::from_be_bytes(
            batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let set = RecordBatchDecoder::decode(&mut batch).context("decoding a record batch")?;
        let mut any = false;
        for r in set.records {
            if r.control {
                continue;
            }
            any = true;
            out.push(Fetched {
                offset: r.offset,
                key: r.key,
                value: r.value,
                skip: false,
            });
        }
        if !any {
            // A control or empty batch still moves the position past it.
            out.push(Fetched {
                offset: base + i64::from(last_delta),
                key: None,
                value: None,
                skip: true,
            });
        }
    }
    Ok(out)
}

fn print(out: &mut impl Write, r: &Fetched, print_keys: bool) -> Result<()> {
    let value = r.value.as_deref().unwrap_or(b"");
    if print_keys {
        out.write_all(r.key.as_deref().unwrap_or(b""))?;
        out.write_all(b"\t")?;
    }
    out.write_all(value)?;
    out.write_all(b"\n")?;
    Ok(())
}
