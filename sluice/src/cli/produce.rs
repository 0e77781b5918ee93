//! `sluice produce TOPIC`: one record per stdin line (acks=all), optionally `KEY<sep>VALUE`.
//!
//! Records without a key go to partitions round robin, one batch at a time; keyed records go
//! to `hash(key) % partitions` (FNV-1a, stable across runs; not Kafka's murmur2, so a key
//! may land on another partition than with the Java client).

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::client::{check_msg, error_name};
use super::metadata::{self, Leaders};
use super::{Bootstrap, topic_name};

/// Records per batch (and per Produce request per partition).
pub const BATCH_RECORDS_MAX: usize = 1000;
/// Produce request timeout.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without SEP: no key).
    #[arg(long)]
    pub key_separator: Option<String>,
}

pub fn run(args: ProduceArgs) -> Result<()> {
    let mut bootstrap = super::client::Client::bootstrap(&args.bootstrap.bootstrap)?;
    let (partitions, brokers) = metadata::partitions(&mut bootstrap, &args.topic)?;
    if partitions.is_empty() {
        bail!("topic {:?} has no partitions", args.topic);
    }
    let mut leaders = Leaders::new(&args.bootstrap.bootstrap, brokers);
    let mut pending: Vec<Vec<Record>> = vec![Vec::new(); partitions.len()];
    let mut next_round_robin = 0usize;
    let mut sent = 0u64;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        let (key, value) = split(&line, args.key_separator.as_deref());
        let index = match key {
            Some(k) => (fnv1a(k.as_bytes()) % partitions.len() as u64) as usize,
            None => next_round_robin,
        };
        pending[index].push(record(key, value));
        if pending[index].len() >= BATCH_RECORDS_MAX {
            if key.is_none() {
                next_round_robin = (next_round_robin + 1) % partitions.len();
            }
            let p = &partitions[index];
            sent += send(
                &mut leaders,
                &args.topic,
                p.partition,
                p.leader,
                &mut pending[index],
            )?;
        }
    }
    for (index, batch) in pending.iter_mut().enumerate() {
        let p = &partitions[index];
        sent += send(&mut leaders, &args.topic, p.partition, p.leader, batch)?;
    }
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}

fn split<'a>(line: &'a str, separator: Option<&str>) -> (Option<&'a str>, &'a str) {
    match separator.and_then(|s| line.split_once(s)) {
        Some((k, v)) => (Some(k), v),
        None => (None, line),
    }
}

fn record(key: Option<&str>, value: &str) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms(),
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: IndexMap::new(),
    }
}

/// Sends `batch` (drained) to the partition's leader with acks=all; returns records written.
fn send(
    leaders: &mut Leaders,
    topic: &str,
    partition: i32,
    leader: i32,
    batch: &mut Vec<Record>,
) -> Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    for (i, r) in batch.iter_mut().enumerate() {
        r.offset = i as i64;
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        batch.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .context("encoding the record batch")?;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(PRODUCE_TIMEOUT_MS)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(buf.freeze())),
                ]),
        ]);
    let (response, _) = leaders.get(leader)?.call(&request)?;
    let answer = response
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .with_context(|| format!("Produce answered nothing for {topic}-{partition}"))?;
    check_msg(
        answer.error_code,
        answer.error_message.as_deref(),
        &format!("producing to {topic}-{partition}"),
    )
    .with_context(|| format!("code {}", error_name(answer.error_code)))?;
    let n = batch.len() as u64;
    batch.clear();
    Ok(n)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_key_and_value() {
        assert_eq!(split("k:v:w", Some(":")), (Some("k"), "v:w"));
        assert_eq!(split("plain", Some(":")), (None, "plain"));
        assert_eq!(split("k:v", None), (None, "k:v"));
    }
}
