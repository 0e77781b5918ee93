//! Verification of a transactional produce (KIP-890 part 1): before a partition leader
//! appends the first transactional batch of a producer's transaction to a partition, it asks
//! the transaction coordinator whether the partition was added to the producer's open
//! transaction. A produce that was delayed past its transaction's end (the hazard behind
//! "hanging transactions", and one of the Jepsen findings on Kafka's protocol) is refused
//! instead of opening a transaction no coordinator knows about, which would hold the last
//! stable offset back until an operator aborted it.
//!
//! The coordinator is asked directly when it is on this node, else with AddPartitionsToTxn
//! v4 (`verify_only`) over the wire, as Kafka's `AddPartitionsToTxnManager` does. Errors
//! map as Kafka's ReplicaManager maps them for producers: a partition not in the
//! transaction is INVALID_TXN_STATE; a coordinator that cannot answer now is
//! NOT_ENOUGH_REPLICAS (retried by every client without a metadata refresh); a fenced
//! producer is INVALID_PRODUCER_EPOCH.
//!
//! The caller holds the partition's append ticket across the check, so no marker can be
//! appended between the answer and the append.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::metadata::TxnError;
use super::records::{TXN_STATE_TOPIC, partition_for};
use crate::runtime::Shard;

/// Deadline of one verification call to another broker's coordinator.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// An error for the produce answer: Kafka's code and a message.
pub type ProduceError = (ResponseError, Option<String>);

/// Asks `transactional_id`'s coordinator whether `topic`-`partition` is in the open
/// transaction of `producer_id` at `epoch`.
pub async fn verify(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(), ProduceError> {
    let Some(state) = shard.metadata().topic(TXN_STATE_TOPIC).cloned() else {
        return Err((
            ResponseError::InvalidProducerIdMapping,
            Some("no transaction coordinator knows this transactional id".into()),
        ));
    };
    let state_partition = partition_for(transactional_id, state.partitions);
    let leader = state
        .partition_state(state_partition)
        .and_then(|s| s.leader);
    let answer: Result<i16, ProduceError> = match leader {
        None => Err(unverified("the transaction coordinator has no leader")),
        Some(node) if node == shard.shared.node_id() => {
            let id = transactional_id.to_string();
            let tp = vec![(topic.to_string(), partition)];
            let local = super::frontend::call(shard, &id.clone(), move |s, backend| {
                Box::pin(async move { backend.verify_partitions(&s, &id, producer_id, epoch, &tp) })
            })
            .await;
            Ok(match local {
                Ok(included) if included.first() == Some(&true) => 0,
                Ok(_) => ResponseError::TransactionAbortable.code(),
                Err(e) => TxnError::code(e),
            })
        }
        Some(node) => {
            remote(
                shard,
                node,
                transactional_id,
                producer_id,
                epoch,
                topic,
                partition,
            )
            .await
        }
    };
    match answer? {
        0 => Ok(()),
        code => Err(produce_error(code)),
    }
}

fn unverified(why: &str) -> ProduceError {
    (
        ResponseError::NotEnoughReplicas,
        Some(format!(
            "unable to verify the partition is in the transaction: {why}"
        )),
    )
}

/// Kafka's translation of a coordinator's verification answer for producers.
fn produce_error(code: i16) -> ProduceError {
    use ResponseError as E;
    let is = |e: E| code == e.code();
    if is(E::TransactionAbortable) || is(E::InvalidTxnState) {
        (
            E::InvalidTxnState,
            Some("Partition was not added to the transaction".into()),
        )
    } else if is(E::ProducerFenced) || is(E::InvalidProducerEpoch) {
        (E::InvalidProducerEpoch, None)
    } else if is(E::InvalidProducerIdMapping) {
        (E::InvalidProducerIdMapping, None)
    } else {
        unverified(&kafka_wire::error::error_name(code))
    }
}

/// AddPartitionsToTxn v4 with `verify_only` to the coordinator on `node`.
async fn remote(
    shard: &Rc<Shard>,
    node: i32,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<i16, ProduceError> {
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![partition]),
            ]),
    ]);
    let response = super::peer::call_broker(shard, node, &request, 4, VERIFY_TIMEOUT)
        .await
        .map_err(|e| unverified(&e))?;
    if response.error_code != 0 {
        return Ok(response.error_code);
    }
    let code = response
        .results_by_transaction
        .first()
        .and_then(|t| t.topic_results.first())
        .and_then(|t| t.results_by_partition.first())
        .map(|p| p.partition_error_code);
    code.ok_or_else(|| unverified("empty answer"))
}
