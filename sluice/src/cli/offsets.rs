//! ListOffsets for the console commands: earliest / latest offsets per partition.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};

use super::client::check;
use super::metadata::{Leaders, PartitionInfo};
use super::topic_name;

/// ListOffsets timestamp for the log start offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the log end offset (high watermark).
pub const LATEST: i64 = -1;

/// `partition -> offset` at `timestamp` (EARLIEST / LATEST) for every partition of `topic`.
pub fn list(
    leaders: &mut Leaders,
    topic: &str,
    partitions: &[PartitionInfo],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for p in partitions {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(p.partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp),
                    ]),
            ]);
        let (response, _) = leaders.get(p.leader)?.call(&request)?;
        let answer = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|a| a.partition_index == p.partition)
            .with_context(|| format!("ListOffsets answered nothing for {topic}-{}", p.partition))?;
        check(
            answer.error_code,
            &format!("offsets of {topic}-{}", p.partition),
        )?;
        out.insert(p.partition, answer.offset);
    }
    Ok(out)
}
