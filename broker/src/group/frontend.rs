//! Group requests on any shard (the `*_frontend` role): make sure `__consumer_offsets`
//! exists, find the offsets partition of a group and the shard that owns it, and run the
//! coordinator operation there (as partition requests are routed to their owner).
//!
//! The coordinator of a group is the node leading its offsets partition
//! ([`coordinator_of`]); a request reaching any other node gets NOT_COORDINATOR here, before
//! it hops to the owner shard, so the client finds the coordinator again. On the owner shard
//! the replica's role is what counts: named by the metadata but not (yet) leading is
//! NOT_COORDINATOR too, after waiting up to `ROLE_WAIT` for the role to follow.
//!
//! Invariants: a group's operations always run on the one shard owning its offsets
//! partition, so its state is never touched from two threads; the partition count used for
//! routing is the topic's actual count, the same on every shard.

use std::rc::Rc;
use std::sync::Arc;

use super::api::{Reply, RequestId};
use super::backend::{backend, group_config};
use super::coordinator::GroupCoordinator;
use super::error::GroupError;
use super::records::{OFFSETS_TOPIC, partition_for_group};
use crate::controller::frontend::create_compacted_topic;
use crate::metadata::{BrokerInfo, ClusterMetadata, TopicMeta};
use crate::runtime::Shard;

/// How long a request for a partition the metadata says this node leads waits
/// for the replica to report leading before it gets NOT_COORDINATOR.
const ROLE_WAIT: std::time::Duration = std::time::Duration::from_millis(1_000);

/// Creates `__consumer_offsets` (compacted, `offsets.topic.num.partitions` partitions) when
/// missing, as Kafka does on the first FindCoordinator; returns its metadata.
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<Arc<TopicMeta>, GroupError> {
    if let Some(topic) = shard.metadata().topic(OFFSETS_TOPIC) {
        return Ok(topic.clone());
    }
    let partitions = shard.config().group.offsets_topic_num_partitions;
    let segment_bytes = shard.config().group.offsets_topic_segment_bytes;
    let created =
        create_compacted_topic(shard, OFFSETS_TOPIC, partitions, -1, -1, segment_bytes).await;
    match created {
        Some(Err(message)) => {
            tracing::debug!(target: "group", %message, "offsets topic creation")
        }
        Some(_) => start_all_backends(shard).await,
        None => return Err(GroupError::CoordinatorNotAvailable),
    }
    // The control plane pushes the new metadata to every shard before it answers.
    shard
        .metadata()
        .topic(OFFSETS_TOPIC)
        .cloned()
        .ok_or(GroupError::CoordinatorNotAvailable)
}

/// The node leading `group_id`'s offsets partition, i.e. its coordinator (`None` while the
/// partition has no leader).
pub fn coordinator_of(topic: &TopicMeta, group_id: &str) -> Option<i32> {
    let partition = partition_for_group(group_id, topic.partitions);
    topic.partition_state(partition).and_then(|s| s.leader)
}

/// The broker FindCoordinator names for `group_id`, or
/// COORDINATOR_NOT_AVAILABLE while its offsets partition has no leader (or the leader is not
/// a registered broker yet).
pub fn coordinator_broker<'m>(
    metadata: &'m ClusterMetadata,
    topic: &TopicMeta,
    group_id: &str,
) -> Result<&'m BrokerInfo, GroupError> {
    coordinator_of(topic, group_id)
        .and_then(|leader| metadata.brokers.get(&leader))
        .ok_or(GroupError::CoordinatorNotAvailable)
}

/// Runs `op` against the coordinator that owns `group_id` and returns its reply.
pub async fn call<F>(shard: &Rc<Shard>, group_id: &str, op: F) -> Result<Reply, GroupError>
where
    F: FnOnce(&mut GroupCoordinator, i64, RequestId) + Send + 'static,
{
    let topic = ensure_offsets_topic(shard).await?;
    let partition = partition_for_group(group_id, topic.partitions);
    if coordinator_of(&topic, group_id) != Some(shard.shared.node_id()) {
        return Err(GroupError::NotCoordinator);
    }
    let owner = shard.owner_of(OFFSETS_TOPIC, partition);
    let partitions = topic.partitions;
    shard
        .invoke(owner, move |s: &Rc<Shard>| {
            let s = Rc::clone(s);
            Box::pin(async move {
                // Another shard may know the new topic before this one has opened its
                // partitions (a shard installs new metadata only once they are open).
                if s.metadata().topic(OFFSETS_TOPIC).is_none() {
                    return Err(GroupError::CoordinatorLoadInProgress);
                }
                let config = group_config(&s, partitions);
                let backend = backend(&s, &config);
                if !backend.leads(partition) {
                    // The metadata named this node but its replica has not
                    // become leader here yet (its new state follows the metadata), or no
                    // longer leads. NOT_COORDINATOR after a short wait: every client handles
                    // it on every group API (Java's SyncGroup and Heartbeat do not retry
                    // COORDINATOR_LOAD_IN_PROGRESS).
                    let topic = s.metadata().topic(OFFSETS_TOPIC).cloned();
                    let named = topic.and_then(|t| t.partition_state(partition)?.leader);
                    if named != Some(s.shared.node_id())
                        || !backend.wait_to_lead(partition, ROLE_WAIT).await
                    {
                        return Err(GroupError::NotCoordinator);
                    }
                }
                Ok(backend.call(&s, partition, op).await)
            })
        })
        .await
        .unwrap_or(Err(GroupError::CoordinatorNotAvailable))
}

/// Starts every shard's backend (replaying its offsets partitions) right after the offsets
/// topic was created, so groups on other shards are loaded before their first request.
async fn start_all_backends(shard: &Rc<Shard>) {
    for target in 0..shard.shared.shard_count() {
        let _ = shard
            .invoke(crate::metadata::ShardId(target), |s: &Rc<Shard>| {
                super::backend::start_if_present(s);
                Box::pin(async {})
            })
            .await;
    }
}

/// Runs `op` on every shard's coordinator (ListGroups); one reply per shard.
pub async fn call_all_shards<F>(shard: &Rc<Shard>, op: F) -> Result<Vec<Reply>, GroupError>
where
    F: Fn(&mut GroupCoordinator, i64, RequestId) + Send + Sync + Clone + 'static,
{
    // Listing creates nothing: without the offsets topic there are no groups.
    let Some(topic) = shard.metadata().topic(OFFSETS_TOPIC).cloned() else {
        return Ok(vec![]);
    };
    let partitions = topic.partitions;
    let mut replies = Vec::with_capacity(shard.shared.shard_count());
    for target in 0..shard.shared.shard_count() {
        let op = op.clone();
        let reply = shard
            .invoke(crate::metadata::ShardId(target), move |s: &Rc<Shard>| {
                let s = Rc::clone(s);
                Box::pin(async move {
                    let config = group_config(&s, partitions);
                    backend(&s, &config).call_shard_wide(&s, op).await
                })
            })
            .await
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        replies.push(reply);
    }
    Ok(replies)
}

/// The broker's metadata as the coordinator's topic view (KIP-848 assignors).
pub struct MetadataTopics(pub Arc<crate::metadata::ClusterMetadata>);

impl super::consumer::TopicResolver for MetadataTopics {
    fn topic_by_name(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        self.0.topic(name).map(|t| (t.id, t.partitions))
    }

    fn topic_by_id(&self, id: &uuid::Uuid) -> Option<(String, i32)> {
        self.0
            .topic_by_id(id)
            .map(|t| (t.name.clone(), t.partitions))
    }

    fn topic_names(&self) -> Vec<String> {
        let names = self.0.topics.keys();
        names
            .filter(|name| name.as_str() != OFFSETS_TOPIC)
            .cloned()
            .collect()
    }
}
