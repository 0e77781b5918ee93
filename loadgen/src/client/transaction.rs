//! A transactional producer's conversation with its transaction coordinator
//! (`--transactional-id`), as the Java producer's `TransactionManager` has it, in either
//! transaction protocol version ([`TransactionVersion`]):
//! FindCoordinator (key type 1) -> InitProducerId(transactional id, timeout) once, then per
//! transaction
//! - version 1 (KIP-98): AddPartitionsToTxn (v3 and below) before the first batch to a
//!   partition, and EndTxn (v4 and below) once every produce of the transaction is answered;
//! - version 2 (KIP-890 part 2): no AddPartitionsToTxn (Produce v12 adds the partition), and
//!   EndTxn v5, whose answer carries the producer id and epoch for the next transaction: the
//!   coordinator bumps the epoch at every end, and hands out a new producer id at epoch 0 once
//!   the epoch is exhausted (`TransactionManager.EndTxnHandler`: adopt them, reset sequences).
//!
//! Which version: `--transaction-version`, else version 2 when the coordinator's ApiVersions
//! answer finalizes `transaction.version` at 2 or more, as the Java producer decides.
//!
//! Owns: the connection to the coordinator, the producer id and epoch it handed out, and the
//! retry rules: NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE look the coordinator up again,
//! CONCURRENT_TRANSACTIONS (the previous transaction's markers are still being written) and
//! other retriable codes wait and resend, anything else fails the run (a fenced producer,
//! INVALID_TXN_STATE: loadgen has no recovery for those).
//! Invariants: one request to the coordinator at a time (the connection allows one in flight);
//! every retry is counted ([`TransactionCoordinator::retries`]); one operation gives up after
//! [`COORDINATOR_DEADLINE`]; a version 2 coordinator serves EndTxn v5 and Produce v12 (checked
//! at [`TransactionCoordinator::init`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_wire::error::{
    CONCURRENT_TRANSACTIONS, COORDINATOR_NOT_AVAILABLE, NONE, NOT_COORDINATOR,
    OPERATION_NOT_ATTEMPTED,
};

use super::cluster::Cluster;
use super::connection::Connection;
use super::error_codes;
use super::versions::TransactionVersion;

/// FindCoordinator's key type for a transactional id (0 is a group).
pub const KEY_TYPE_TRANSACTION: i8 = 1;
/// Wait before resending after a retriable answer (the Java producer's `retry.backoff.ms`).
pub const COORDINATOR_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Wait after CONCURRENT_TRANSACTIONS on a transaction's first AddPartitionsToTxn: the
/// previous transaction is completing (Java's `ADD_PARTITIONS_RETRY_BACKOFF_MS`).
pub const CONCURRENT_TRANSACTIONS_BACKOFF: Duration = Duration::from_millis(20);
/// One coordinator operation (with its retries) gives up after this long.
pub const COORDINATOR_DEADLINE: Duration = Duration::from_secs(60);

/// What to do after one answer from the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    /// Resend after this long.
    Retry(Duration),
    /// Look the coordinator up again, then resend.
    FindCoordinator,
    Fail,
}

/// The retry rule for an error `code`; `concurrent_backoff` is the wait after
/// CONCURRENT_TRANSACTIONS.
pub fn next_step(code: i16, concurrent_backoff: Duration) -> Next {
    match code {
        NONE => Next::Done,
        NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE => Next::FindCoordinator,
        CONCURRENT_TRANSACTIONS => Next::Retry(concurrent_backoff),
        code if error_codes::is_retriable(code) => Next::Retry(COORDINATOR_RETRY_BACKOFF),
        _ => Next::Fail,
    }
}

/// The coordinator of one transactional id, and the producer identity it gave out.
pub struct TransactionCoordinator {
    transactional_id: TransactionalId,
    connection: Option<Connection>,
    producer_id: i64,
    producer_epoch: i16,
    version: TransactionVersion,
    retries: u64,
}

impl TransactionCoordinator {
    /// Finds the coordinator of `transactional_id` and gets a producer id and epoch from it
    /// (InitProducerId also fences an older producer with the same id and aborts its open
    /// transaction). `version`: the transaction version to follow, `None` for what the
    /// coordinator finalized.
    pub async fn init(
        cluster: &Cluster,
        transactional_id: &str,
        transaction_timeout_ms: i32,
        version: Option<TransactionVersion>,
    ) -> Result<TransactionCoordinator> {
        let mut coordinator = TransactionCoordinator {
            transactional_id: TransactionalId(StrBytes::from_string(transactional_id.into())),
            connection: None,
            producer_id: -1,
            producer_epoch: -1,
            version: version.unwrap_or(TransactionVersion::V1),
            retries: 0,
        };
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(coordinator.transactional_id.clone()))
            .with_transaction_timeout_ms(transaction_timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response = coordinator
            .call(cluster, "InitProducerId", COORDINATOR_RETRY_BACKOFF, |c| {
                let request = request.clone();
                async move {
                    let r = c.call(&request, ApiKey::InitProducerId).await?;
                    Ok((r.error_code, r))
                }
            })
            .await?;
        coordinator.producer_id = response.producer_id.0;
        coordinator.producer_epoch = response.producer_epoch;
        let connection = coordinator.coordinator(cluster).await?;
        coordinator.version = version.unwrap_or_else(|| {
            TransactionVersion::for_finalized_level(connection.transaction_version_finalized())
        });
        if coordinator.version == TransactionVersion::V2 {
            let end_txn = connection.version_for(ApiKey::EndTxn)?;
            let produce = connection.version_for(ApiKey::Produce)?;
            if TransactionVersion::V2.end_txn_version(end_txn).is_none()
                || TransactionVersion::V2.produce_version(produce).is_none()
            {
                bail!(
                    "transaction version 2 needs EndTxn v5 and Produce v12; {} serves EndTxn \
                     v{end_txn}, Produce v{produce} (try --transaction-version 1)",
                    connection.addr()
                );
            }
        }
        Ok(coordinator)
    }

    /// The transaction protocol version this producer follows.
    pub fn version(&self) -> TransactionVersion {
        self.version
    }

    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }

    pub fn transactional_id(&self) -> &TransactionalId {
        &self.transactional_id
    }

    /// Resends so far (retriable answers, coordinator moves, broken connections).
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Adds `partitions` of `topic` to the open transaction (AddPartitionsToTxn v3 and
    /// below; transaction version 1 only). `first` marks the transaction's first add, which
    /// retries CONCURRENT_TRANSACTIONS sooner.
    pub async fn add_partitions(
        &mut self,
        cluster: &Cluster,
        topic: &TopicName,
        partitions: &[i32],
        first: bool,
    ) -> Result<()> {
        assert_eq!(
            self.version,
            TransactionVersion::V1,
            "transaction version 2 adds partitions with Produce"
        );
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(self.transactional_id.clone())
            .with_v3_and_below_producer_id(ProducerId(self.producer_id))
            .with_v3_and_below_producer_epoch(self.producer_epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(topic.clone())
                    .with_partitions(partitions.to_vec()),
            ]);
        let backoff = if first {
            CONCURRENT_TRANSACTIONS_BACKOFF
        } else {
            COORDINATOR_RETRY_BACKOFF
        };
        self.call(cluster, "AddPartitionsToTxn", backoff, |c| {
            let request = request.clone();
            async move {
                let response = c.call(&request, ApiKey::AddPartitionsToTxn).await?;
                Ok((add_partitions_error(&response), ()))
            }
        })
        .await
    }

    /// Commits (or aborts) the open transaction: EndTxn, answered once the coordinator has
    /// logged PrepareCommit/PrepareAbort (the markers may be written after the answer). At
    /// transaction version 2 the producer id and epoch become the answer's (the next
    /// transaction's sequences start at 0: the caller resets them).
    pub async fn end(&mut self, cluster: &Cluster, commit: bool) -> Result<()> {
        let request = EndTxnRequest::default()
            .with_transactional_id(self.transactional_id.clone())
            .with_producer_id(ProducerId(self.producer_id))
            .with_producer_epoch(self.producer_epoch)
            .with_committed(commit);
        let version = self.version;
        let (producer_id, producer_epoch) = self
            .call(cluster, "EndTxn", COORDINATOR_RETRY_BACKOFF, |c| {
                let request = request.clone();
                async move {
                    let negotiated = c.version_for(ApiKey::EndTxn)?;
                    let at = version.end_txn_version(negotiated).ok_or_else(|| {
                        anyhow!("{} serves EndTxn up to v{negotiated} only", c.addr())
                    })?;
                    let r = c.call_at(&request, at).await?;
                    Ok((r.error_code, (r.producer_id.0, r.producer_epoch)))
                }
            })
            .await?;
        if version == TransactionVersion::V2 {
            if producer_id < 0 || producer_epoch < 0 {
                bail!(
                    "EndTxn for transactional id {} at transaction version 2 answered producer \
                     id {producer_id}, epoch {producer_epoch}",
                    self.transactional_id.as_str()
                );
            }
            self.producer_id = producer_id;
            self.producer_epoch = producer_epoch;
        }
        Ok(())
    }

    /// Sends with `send` until the coordinator answers without error, following
    /// [`next_step`]; a broken connection counts as COORDINATOR_NOT_AVAILABLE.
    async fn call<T, F, Fut>(
        &mut self,
        cluster: &Cluster,
        what: &str,
        concurrent_backoff: Duration,
        mut send: F,
    ) -> Result<T>
    where
        F: FnMut(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<(i16, T)>>,
    {
        let deadline = Instant::now() + COORDINATOR_DEADLINE;
        let mut last = String::new();
        while Instant::now() < deadline {
            let connection = match self.coordinator(cluster).await {
                Ok(connection) => connection,
                Err(error) => {
                    last = format!("{error:#}");
                    self.retries += 1;
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                    continue;
                }
            };
            let (code, answer) = match send(connection).await {
                Ok(answered) => answered,
                Err(error) => {
                    last = format!("{error:#}");
                    self.connection = None;
                    self.retries += 1;
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                    continue;
                }
            };
            last = error_codes::name(code);
            match next_step(code, concurrent_backoff) {
                Next::Done => return Ok(answer),
                Next::Retry(backoff) => tokio::time::sleep(backoff).await,
                Next::FindCoordinator => {
                    self.connection = None;
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                }
                Next::Fail => bail!(
                    "{what} for transactional id {}: {last}",
                    self.transactional_id.as_str()
                ),
            }
            self.retries += 1;
        }
        Err(anyhow!(
            "{what} for transactional id {}: still failing after {COORDINATOR_DEADLINE:?} ({last})",
            self.transactional_id.as_str()
        ))
    }

    /// The coordinator's connection, looked up with FindCoordinator (key type 1) if needed.
    async fn coordinator(&mut self, cluster: &Cluster) -> Result<Connection> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let admin = cluster.admin().await?;
        let request = FindCoordinatorRequest::default()
            .with_key(self.transactional_id.0.clone())
            .with_key_type(KEY_TYPE_TRANSACTION);
        let response = admin
            .call(&request, ApiKey::FindCoordinator)
            .await
            .context("FindCoordinator")?;
        if response.error_code != NONE {
            bail!(
                "FindCoordinator: {}",
                error_codes::name(response.error_code)
            );
        }
        let addr = format!("{}:{}", response.host.as_str(), response.port);
        // One request at a time: the transaction's steps are sequential.
        let connection = Connection::connect(&addr, 1).await?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }
}

/// The error of an AddPartitionsToTxn v3 answer: the first partition error other than
/// OPERATION_NOT_ATTEMPTED (which only says another partition failed), else NONE.
fn add_partitions_error(response: &kafka_protocol::messages::AddPartitionsToTxnResponse) -> i16 {
    let mut not_attempted = false;
    for topic in &response.results_by_topic_v3_and_below {
        for partition in &topic.results_by_partition {
            match partition.partition_error_code {
                NONE => {}
                OPERATION_NOT_ATTEMPTED => not_attempted = true,
                code => return code,
            }
        }
    }
    if not_attempted {
        OPERATION_NOT_ATTEMPTED
    } else {
        NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::AddPartitionsToTxnResponse;
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    };
    use kafka_wire::error::{COORDINATOR_LOAD_IN_PROGRESS, INVALID_TXN_STATE, PRODUCER_FENCED};

    #[test]
    fn retry_rules_follow_the_java_transaction_manager() {
        let short = CONCURRENT_TRANSACTIONS_BACKOFF;
        assert_eq!(next_step(NONE, short), Next::Done);
        assert_eq!(next_step(NOT_COORDINATOR, short), Next::FindCoordinator);
        assert_eq!(
            next_step(COORDINATOR_NOT_AVAILABLE, short),
            Next::FindCoordinator
        );
        assert_eq!(
            next_step(CONCURRENT_TRANSACTIONS, short),
            Next::Retry(short)
        );
        assert_eq!(
            next_step(CONCURRENT_TRANSACTIONS, COORDINATOR_RETRY_BACKOFF),
            Next::Retry(COORDINATOR_RETRY_BACKOFF)
        );
        assert_eq!(
            next_step(COORDINATOR_LOAD_IN_PROGRESS, short),
            Next::Retry(COORDINATOR_RETRY_BACKOFF)
        );
        assert_eq!(next_step(PRODUCER_FENCED, short), Next::Fail);
        assert_eq!(next_step(INVALID_TXN_STATE, short), Next::Fail);
    }

    #[test]
    fn add_partitions_answer_names_the_real_error() {
        let answer = |codes: &[i16]| {
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(vec![
                AddPartitionsToTxnTopicResult::default().with_results_by_partition(
                    codes
                        .iter()
                        .enumerate()
                        .map(|(i, &code)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(i as i32)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                ),
            ])
        };
        assert_eq!(add_partitions_error(&answer(&[NONE, NONE])), NONE);
        assert_eq!(
            add_partitions_error(&answer(&[OPERATION_NOT_ATTEMPTED, CONCURRENT_TRANSACTIONS])),
            CONCURRENT_TRANSACTIONS
        );
        assert_eq!(
            add_partitions_error(&answer(&[OPERATION_NOT_ATTEMPTED])),
            OPERATION_NOT_ATTEMPTED
        );
    }
}
