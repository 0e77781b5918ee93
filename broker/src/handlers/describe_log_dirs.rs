//! DescribeLogDirs: one log directory (the data dir) with the size of every partition.

use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{RequestContext, Versions, str_bytes, topic_name};
use crate::runtime::scatter::{Scatter, scatter_gather};
use crate::runtime::{LocalBoxFuture, Shard};

pub const VERSIONS: Versions = Versions { min: 1, max: 4 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let metadata = shard.metadata();
    let wanted: Vec<(String, Vec<i32>)> = match req.topics {
        None => metadata
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions).collect()))
            .collect(),
        Some(ts) => ts
            .into_iter()
            .filter(|t| metadata.topic(t.topic.0.as_str()).is_some())
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    };
    // Every partition's size from its owner: one hop per shard; a partition that is unknown
    // or not open on its owner is left out.
    let mut sizes: Vec<Option<Option<i64>>> = Vec::new();
    let mut by_shard = Scatter::new(shard.shared.shard_count());
    for (name, parts) in &wanted {
        let count = metadata.topic(name).map_or(0, |m| m.partitions);
        for &p in parts {
            let slot = sizes.len();
            if (0..count).contains(&p) {
                by_shard.push(shard.owner_of(name, p), slot, (name.clone(), p));
                sizes.push(None);
            } else {
                sizes.push(Some(None));
            }
        }
    }
    scatter_gather(shard, by_shard, &mut sizes, sizes_on_owner, || None).await;
    let mut sizes = sizes.into_iter().map(Option::flatten);
    let mut topics = Vec::with_capacity(wanted.len());
    for (name, parts) in wanted {
        let partitions: Vec<DescribeLogDirsPartition> = parts
            .iter()
            .zip(sizes.by_ref())
            .filter_map(|(&p, size)| {
                size.map(|s| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p)
                        .with_partition_size(s)
                })
            })
            .collect();
        topics.push(
            DescribeLogDirsTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions),
        );
    }
    let dir = shard
        .config()
        .broker
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| shard.config().broker.data_dir.clone());
    // total/usable bytes exist from v4 on.
    let (total, usable) = match crate::sys::disk_space(&dir) {
        Some((t, u)) if ctx.version >= 4 => (t as i64, u as i64),
        _ => (-1, -1),
    };
    DescribeLogDirsResponse::default().with_results(vec![
        DescribeLogDirsResult::default()
            .with_log_dir(str_bytes(&dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(total)
            .with_usable_bytes(usable),
    ])
}

/// On the owner: the size of each of its partitions (topic, partition) that is open here.
fn sizes_on_owner(
    shard: &Rc<Shard>,
    items: Vec<(String, i32)>,
) -> LocalBoxFuture<Vec<Option<i64>>> {
    let sizes = items
        .iter()
        .map(|(topic, p)| {
            shard
                .partition(topic, *p)
                .map(|part| part.log.size_bytes() as i64)
        })
        .collect();
    Box::pin(std::future::ready(sizes))
}
