//! TxnOffsetCommit (API 28): a transactional producer commits a consumer group's offsets as
//! part of its transaction (Kafka's `handleTxnOffsetCommitRequest`). Routed like OffsetCommit
//! to the group's coordinator shard; the offsets stay pending until the transaction's marker
//! reaches the group's `__consumer_offsets` partition (`group::backend::complete_transaction`).
//! Partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION here, as in Kafka. v3+ carry
//! the KIP-447 member fields (generation id, member id, group instance id) the coordinator
//! fences with; v4 may answer TRANSACTION_ABORTABLE; v5 is v4 for transaction version 2.
//!
//! Before the append the transaction is verified with its coordinator, as Kafka 4 does
//! (`crate::txn::verify`): the group's offsets partition must be in the producer's open
//! transaction (AddOffsetsToTxn), else INVALID_TXN_STATE and nothing is stored, so no
//! pending offsets can outlive their transaction (they would answer UNSTABLE_OFFSET_COMMIT
//! to require_stable fetches for good). A coordinator that cannot answer now gives
//! COORDINATOR_NOT_AVAILABLE (retried). From v5, while the cluster finalizes transaction
//! version 2, the coordinator adds the offsets partition to the transaction instead (KIP-890
//! part 2: the client sends no AddOffsetsToTxn).

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::{RequestContext, Versions};
use crate::group::{
    self, CommitPartition, CommitTopic, GroupError, Reply, TxnOffsetCommit, code_of,
};
use crate::runtime::Shard;
use crate::txn::verify::Check;

/// Kafka 4.1 serves v0..v5.
pub const VERSIONS: Versions = Versions { min: 0, max: 5 };
/// The first version that adds the offsets partition to the transaction itself
/// (transaction version 2; the client sends no AddOffsetsToTxn).
const FIRST_ADD_PARTITION_VERSION: i16 = 5;

/// Before v2 clients did not know COORDINATOR_LOAD_IN_PROGRESS here (KAFKA-7296): Kafka
/// answers COORDINATOR_NOT_AVAILABLE to them instead.
const LOAD_IN_PROGRESS_KNOWN_FROM_VERSION: i16 = 2;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let metadata = shard.metadata();
    let known = |topic: &str, partition: i32| {
        metadata
            .topic(topic)
            .is_some_and(|t| partition >= 0 && partition < t.partitions)
    };
    let topics: Vec<CommitTopic> = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .filter(|p| known(&name, p.partition_index))
                .map(|p| CommitPartition {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
                .collect();
            CommitTopic { name, partitions }
        })
        .filter(|t: &CommitTopic| !t.partitions.is_empty())
        .collect();
    let mut errors: HashMap<(String, i32), Option<GroupError>> = HashMap::new();
    let check = Check::for_request(shard, ctx.version, FIRST_ADD_PARTITION_VERSION);
    let verified = if topics.is_empty()
        || (check == Check::Verify && !shard.config().transaction.partition_verification_enable)
    {
        Ok(())
    } else {
        verify(shard, check, &req).await
    };
    if let Err(code) = verified {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let code = if known(&name, p.partition_index) {
                            code
                        } else {
                            code_of(Some(GroupError::UnknownTopicOrPartition))
                        };
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        return TxnOffsetCommitResponse::default().with_topics(topics);
    }
    if !topics.is_empty() {
        let commit = TxnOffsetCommit {
            transactional_id: req.transactional_id.0.to_string(),
            group_id: req.group_id.0.to_string(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            generation_id: req.generation_id,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            topics: topics.clone(),
        };
        let group_id = commit.group_id.clone();
        let reply = group::frontend::call(shard, &group_id, move |c, now, id| {
            c.txn_offset_commit(now, id, commit)
        })
        .await;
        match reply {
            Ok(Reply::TxnOffsetCommit(result)) => {
                for t in result {
                    for (p, e) in t.partitions {
                        errors.insert((t.name.clone(), p), e);
                    }
                }
            }
            Ok(other) => unreachable!("TxnOffsetCommit answered with {other:?}"),
            Err(error) => {
                for t in &topics {
                    for p in &t.partitions {
                        errors.insert((t.name.clone(), p.partition), Some(error));
                    }
                }
            }
        }
    }
    let old_client = ctx.version < LOAD_IN_PROGRESS_KNOWN_FROM_VERSION;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = match errors.get(&(name.clone(), p.partition_index)) {
                        Some(Some(GroupError::CoordinatorLoadInProgress)) if old_client => {
                            Some(GroupError::CoordinatorNotAvailable)
                        }
                        Some(e) => *e,
                        None => Some(GroupError::UnknownTopicOrPartition),
                    };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code_of(error))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// The coordinator's word that the group's offsets partition is in the producer's open
/// transaction; the error code for every partition otherwise.
async fn verify(shard: &Rc<Shard>, check: Check, req: &TxnOffsetCommitRequest) -> Result<(), i16> {
    use kafka_protocol::ResponseError;
    let offsets = match crate::group::frontend::ensure_offsets_topic(shard).await {
        Ok(topic) => topic,
        Err(e) => return Err(code_of(Some(e))),
    };
    let partition = crate::group::records::partition_for_group(&req.group_id.0, offsets.partitions);
    let verified = crate::txn::verify::verify(
        shard,
        check,
        &req.transactional_id.0,
        req.producer_id.0,
        req.producer_epoch,
        crate::group::records::OFFSETS_TOPIC,
        partition,
    )
    .await;
    match verified {
        Ok(_) => Ok(()),
        Err((ResponseError::NotEnoughReplicas, message)) => {
            tracing::debug!(target: "group", ?message, "transactional offset commit not verified yet");
            Err(ResponseError::CoordinatorNotAvailable.code())
        }
        Err((code, _)) => Err(code.code()),
    }
}
