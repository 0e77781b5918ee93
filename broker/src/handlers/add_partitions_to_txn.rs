//! AddPartitionsToTxn: a transactional producer adds partitions to its open transaction
//! (v0-v3, one transaction per request), and brokers batch several transactions per
//! request (v4+; with `verify_only` a partition leader asks whether the partitions are in
//! the producer's open transaction, KIP-890 part 1; v5 without it adds them for a
//! transaction version 2 producer, KIP-890 part 2). Each transaction is run on its
//! coordinator (`crate::txn`).
//!
//! Per-partition answers follow Kafka's `AddPartitionsToTxnResponse`: an unknown topic or
//! partition fails the whole transaction's request with UNKNOWN_TOPIC_OR_PARTITION on those
//! partitions and OPERATION_NOT_ATTEMPTED on the rest; a coordinator error is given on
//! every partition; PRODUCER_FENCED reads INVALID_PRODUCER_EPOCH below v2.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName};

use super::{RequestContext, Versions};
use crate::runtime::Shard;
use crate::txn::frontend::call;
use crate::txn::{TxnError, TxnVersion};

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };
/// Transactions in one batched (v4+) request.
const TRANSACTIONS_PER_REQUEST_MAX: usize = 1_000;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let fenced_code = ctx.version >= 2;
    if ctx.version <= 3 {
        let (results, _) = one_transaction(
            shard,
            req.v3_and_below_transactional_id.0.to_string(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            &req.v3_and_below_topics,
            fenced_code,
            TxnVersion::V0,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    if req.transactions.len() > TRANSACTIONS_PER_REQUEST_MAX {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    }
    // v5 comes only from brokers adding a partition for a transaction version 2 producer
    // (Kafka's `transactionVersionForAddPartitionsToTxn`).
    let version = if ctx.version > 4 {
        TxnVersion::V2
    } else {
        TxnVersion::V0
    };
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in req.transactions {
        let (topic_results, sequence) = one_transaction(
            shard,
            t.transactional_id.0.to_string(),
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
            true,
            version,
        )
        .await;
        let mut result = AddPartitionsToTxnResult::default()
            .with_transactional_id(t.transactional_id)
            .with_topic_results(topic_results);
        if let Some(sequence) = sequence.filter(|s| *s != 0) {
            // For the asking partition leader (a Sluice broker): see `txn::TXN_SEQUENCE_TAG`.
            result.unknown_tagged_fields.insert(
                crate::txn::TXN_SEQUENCE_TAG,
                bytes::Bytes::copy_from_slice(&sequence.to_be_bytes()),
            );
        }
        results.push(result);
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

#[allow(clippy::too_many_arguments)]
async fn one_transaction(
    shard: &Rc<Shard>,
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
    fenced_code: bool,
    version: TxnVersion,
) -> (Vec<AddPartitionsToTxnTopicResult>, Option<u64>) {
    let metadata = shard.metadata();
    let mut partitions = Vec::new();
    let mut unknown = Vec::new();
    for t in topics {
        let name = t.name.0.to_string();
        let known = metadata.topic(&name).map(|m| m.partitions);
        for &p in &t.partitions {
            if known.is_some_and(|n| p >= 0 && p < n) {
                partitions.push((name.clone(), p));
            } else {
                unknown.push((name.clone(), p));
            }
        }
    }
    if !unknown.is_empty() {
        let code = |tp: &(String, i32)| {
            if unknown.contains(tp) {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::OperationNotAttempted.code()
            }
        };
        return (answer(topics, code), None);
    }
    let outcome: Result<(Vec<bool>, u64), TxnError> = if verify_only {
        let partitions = partitions.clone();
        call(shard, &transactional_id.clone(), move |s, backend| {
            Box::pin(async move {
                backend.verify_partitions(&s, &transactional_id, producer_id, epoch, &partitions)
            })
        })
        .await
    } else {
        let count = partitions.len();
        let partitions = partitions.clone();
        call(shard, &transactional_id.clone(), move |s, backend| {
            Box::pin(async move {
                backend
                    .add_partitions(
                        &s,
                        &transactional_id,
                        producer_id,
                        epoch,
                        partitions,
                        version,
                    )
                    .await
            })
        })
        .await
        .map(|sequence| (vec![true; count], sequence))
    };
    match outcome {
        Ok((included, sequence)) => {
            let code = |tp: &(String, i32)| {
                let i = partitions.iter().position(|x| x == tp);
                if i.is_some_and(|i| included[i]) {
                    0
                } else {
                    ResponseError::TransactionAbortable.code()
                }
            };
            (answer(topics, code), Some(sequence))
        }
        Err(e) => {
            let code = e.code_for(fenced_code);
            (answer(topics, |_| code), None)
        }
    }
}

/// The per-topic answer with `code` per partition.
fn answer(
    topics: &[AddPartitionsToTxnTopic],
    code: impl Fn(&(String, i32)) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let results = t
                .partitions
                .iter()
                .map(|&p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(code(&(name.clone(), p)))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(t.name.0.clone()))
                .with_results_by_partition(results)
        })
        .collect()
}
