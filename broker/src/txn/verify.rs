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
//! Under transaction version 2 (KIP-890 part 2: Produce v12+, TxnOffsetCommit v5) the same
//! call adds the partition to the transaction instead (`Check::Add`; AddPartitionsToTxn v5
//! without `verify_only` over the wire): the client no longer sends AddPartitionsToTxn.
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

use super::metadata::{TxnError, TxnVersion};
use super::records::{TXN_STATE_TOPIC, partition_for};
use crate::runtime::Shard;

/// Deadline of one verification call to another broker's coordinator.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// An error for the produce answer: Kafka's code and a message.
pub type ProduceError = (ResponseError, Option<String>);

/// What the coordinator is asked (Kafka's `TransactionSupportedOperation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Is the partition in the open transaction? (transaction version below 2)
    Verify,
    /// Add the partition to the producer's transaction (transaction version 2).
    Add,
}

impl Check {
    /// The check a request of `version` gets: `Add` from `first_add_version` on (Produce
    /// v12, TxnOffsetCommit v5) while the cluster's finalized `transaction.version` is 2.
    pub fn for_request(shard: &Shard, version: i16, first_add_version: i16) -> Check {
        let finalized = TxnVersion(shard.config().transaction.version);
        if version >= first_add_version && finalized.bumps_epoch() {
            Check::Add
        } else {
            Check::Verify
        }
    }
}

/// Asks `transactional_id`'s coordinator whether `topic`-`partition` is in the open
/// transaction of `producer_id` at `epoch` (or to add it, `Check::Add`); answers that
/// transaction's `txn_sequence` when the coordinator gave it (`None` from a coordinator that
/// does not send it, e.g. Kafka's).
pub async fn verify(
    shard: &Rc<Shard>,
    check: Check,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<Option<u64>, ProduceError> {
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
    let answer: Result<(i16, Option<u64>), ProduceError> = match leader {
        None => Err(unverified("the transaction coordinator has no leader")),
        Some(node) if node == shard.shared.node_id() => {
            let id = transactional_id.to_string();
            let tp = vec![(topic.to_string(), partition)];
            let local = super::frontend::call(shard, &id.clone(), move |s, backend| {
                Box::pin(async move {
                    match check {
                        Check::Verify => {
                            backend.verify_partitions(&s, &id, producer_id, epoch, &tp)
                        }
                        Check::Add => backend
                            .add_partitions(&s, &id, producer_id, epoch, tp, TxnVersion::V2)
                            .await
                            .map(|sequence| (vec![true], sequence)),
                    }
                })
            })
            .await;
            Ok(match local {
                Ok((included, sequence)) if included.first() == Some(&true) => (0, Some(sequence)),
                Ok(_) => (ResponseError::TransactionAbortable.code(), None),
                Err(e) => (TxnError::code(e), None),
            })
        }
        Some(node) => {
            remote(
                shard,
                check,
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
        (0, sequence) => Ok(sequence.filter(|s| *s != 0)),
        (code, _) => Err(produce_error(code)),
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

/// AddPartitionsToTxn to the coordinator on `node`: v4 with `verify_only`, or v5 without
/// it to add (what Kafka's `AddPartitionsToTxnManager` sends).
#[allow(clippy::too_many_arguments)] // the request's fields
async fn remote(
    shard: &Rc<Shard>,
    check: Check,
    node: i32,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(i16, Option<u64>), ProduceError> {
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(check == Check::Verify)
            .with_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![partition]),
            ]),
    ]);
    let version = match check {
        Check::Verify => 4,
        Check::Add => 5,
    };
    let response = super::peer::call_broker(shard, node, &request, version, VERIFY_TIMEOUT)
        .await
        .map_err(|e| unverified(&e))?;
    if response.error_code != 0 {
        return Ok((response.error_code, None));
    }
    let result = response.results_by_transaction.first();
    let code = result
        .and_then(|t| t.topic_results.first())
        .and_then(|t| t.results_by_partition.first())
        .map(|p| p.partition_error_code);
    let sequence = result.and_then(|t| super::tagged_sequence(&t.unknown_tagged_fields));
    code.map(|c| (c, sequence))
        .ok_or_else(|| unverified("empty answer"))
}
