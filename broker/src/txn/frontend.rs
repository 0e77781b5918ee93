//! Transaction requests on any shard (the `*_frontend` role): make sure
//! `__transaction_state` exists, find a transactional id's state partition and the shard
//! that owns it, and run the coordinator operation there.
//!
//! The coordinator of an id is the node leading its state partition; a request reaching
//! another node gets NOT_COORDINATOR before it hops shards. On the owner shard the
//! replica's role counts: named by the metadata but not (yet) leading is NOT_COORDINATOR
//! after a short wait, as for groups.
//!
//! Invariants: an id's operations always run on the one shard owning its state partition;
//! the partition count used for routing is the topic's actual count, the same everywhere.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use super::backend::{TxnBackend, TxnView, backend};
use super::metadata::TxnError;
use super::records::{TXN_STATE_TOPIC, partition_for};
use crate::controller::frontend::create_compacted_topic;
use crate::metadata::{BrokerInfo, ClusterMetadata, ShardId, TopicMeta};
use crate::runtime::Shard;

/// How long a request for a partition the metadata says this node leads waits for the
/// replica to report leading before it gets NOT_COORDINATOR.
const ROLE_WAIT: std::time::Duration = std::time::Duration::from_millis(1_000);

/// Creates `__transaction_state` (compacted, `state_log_num_partitions` partitions,
/// `state_log_replication_factor` replicas, `state_log_min_isr`) when missing, as Kafka does
/// on the first transactional FindCoordinator; returns its metadata.
pub async fn ensure_state_topic(shard: &Rc<Shard>) -> Result<Arc<TopicMeta>, TxnError> {
    if let Some(topic) = shard.metadata().topic(TXN_STATE_TOPIC) {
        return Ok(topic.clone());
    }
    let config = &shard.config().transaction;
    let created = create_compacted_topic(
        shard,
        TXN_STATE_TOPIC,
        config.state_log_num_partitions,
        config.state_log_replication_factor,
        config.state_log_min_isr,
        config.state_log_segment_bytes,
    )
    .await;
    match created {
        Some(Err(message)) => {
            tracing::debug!(target: "txn", %message, "transaction state topic creation")
        }
        Some(_) => start_all_backends(shard).await,
        None => return Err(TxnError::CoordinatorNotAvailable),
    }
    shard
        .metadata()
        .topic(TXN_STATE_TOPIC)
        .cloned()
        .ok_or(TxnError::CoordinatorNotAvailable)
}

/// The broker FindCoordinator names for `transactional_id`, or COORDINATOR_NOT_AVAILABLE
/// while its state partition has no leader.
pub fn coordinator_broker<'m>(
    metadata: &'m ClusterMetadata,
    topic: &TopicMeta,
    transactional_id: &str,
) -> Result<&'m BrokerInfo, TxnError> {
    let partition = partition_for(transactional_id, topic.partitions);
    topic
        .partition_state(partition)
        .and_then(|s| s.leader)
        .and_then(|leader| metadata.brokers.get(&leader))
        .ok_or(TxnError::CoordinatorNotAvailable)
}

type LocalFuture<T> = Pin<Box<dyn Future<Output = Result<T, TxnError>>>>;

/// Runs `op` on the coordinator of `transactional_id` (its owner shard) and returns its
/// result. The topic is not created here: only FindCoordinator creates it.
pub async fn call<T, F>(shard: &Rc<Shard>, transactional_id: &str, op: F) -> Result<T, TxnError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>, Rc<TxnBackend>) -> LocalFuture<T> + Send + 'static,
{
    if transactional_id.is_empty() {
        return Err(TxnError::InvalidRequest);
    }
    let Some(topic) = shard.metadata().topic(TXN_STATE_TOPIC).cloned() else {
        return Err(TxnError::NotCoordinator);
    };
    let partition = partition_for(transactional_id, topic.partitions);
    let leader = topic.partition_state(partition).and_then(|s| s.leader);
    if leader != Some(shard.shared.node_id()) {
        return Err(TxnError::NotCoordinator);
    }
    let owner = shard.owner_of(TXN_STATE_TOPIC, partition);
    shard
        .invoke(owner, move |s: &Rc<Shard>| {
            let s = Rc::clone(s);
            Box::pin(async move {
                if s.metadata().topic(TXN_STATE_TOPIC).is_none() {
                    return Err(TxnError::CoordinatorLoadInProgress);
                }
                let backend = backend(&s);
                if !backend.leads(partition) {
                    super::backend::start_if_present(&s);
                    if !backend.wait_to_lead(partition, ROLE_WAIT).await {
                        return Err(TxnError::NotCoordinator);
                    }
                }
                op(s, backend).await
            })
        })
        .await
        .unwrap_or(Err(TxnError::CoordinatorNotAvailable))
}

/// Every shard's loaded transactions (ListTransactions). Err when a shard is still loading
/// (COORDINATOR_LOAD_IN_PROGRESS, as Kafka answers while loading).
pub async fn list_all(shard: &Rc<Shard>) -> Result<Vec<TxnView>, TxnError> {
    if shard.metadata().topic(TXN_STATE_TOPIC).is_none() {
        return Ok(Vec::new());
    }
    let mut all = Vec::new();
    for target in 0..shard.shared.shard_count() {
        let listed = shard
            .invoke(ShardId(target), |s: &Rc<Shard>| {
                let s = Rc::clone(s);
                Box::pin(async move {
                    let b = backend(&s);
                    if b.all_loaded() {
                        Ok(b.list())
                    } else {
                        Err(TxnError::CoordinatorLoadInProgress)
                    }
                })
            })
            .await
            .unwrap_or(Err(TxnError::CoordinatorNotAvailable))?;
        all.extend(listed);
    }
    Ok(all)
}

/// Starts every shard's backend right after the state topic was created.
async fn start_all_backends(shard: &Rc<Shard>) {
    for target in 0..shard.shared.shard_count() {
        let _ = shard
            .invoke(ShardId(target), |s: &Rc<Shard>| {
                super::backend::start_if_present(s);
                Box::pin(async {})
            })
            .await;
    }
}
