//! DescribeLogDirs: one log directory (the data dir) with the size of every partition.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{RequestContext, Versions, str_bytes, topic_name};
use crate::runtime::Shard;

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
    let mut topics = Vec::new();
    for (name, parts) in wanted {
        let sizes = join_all(parts.iter().map(|&p| {
            let name = name.clone();
            async move {
                shard
                    .with_partition(&name, p, |part| {
                        Box::pin(async move { part.log.size_bytes() as i64 })
                    })
                    .await
            }
        }))
        .await;
        let partitions: Vec<DescribeLogDirsPartition> = parts
            .iter()
            .zip(sizes)
            .filter_map(|(&p, size)| {
                size.ok().map(|s| {
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
