//! A transactional producer's conversation with its transaction coordinator
//! (`--transactional-id`), transaction protocol version 1 (KIP-98), as the Java producer's
//! `TransactionManager` has it when the cluster has not finalized `transaction.version` 2:
//! FindCoordinator (key type 1) -> InitProducerId(transactional id, timeout) once, then per
//! transaction AddPartitionsToTxn (v3 and below) before the first batch to a partition, and
//! EndTxn once every produce of the transaction is answered.
//!
//! Owns: the connection to the coordinator, the producer id and epoch it handed out, and the
//! retry rules: NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE look the coordinator up again,
//! CONCURRENT_TRANSACTIONS (the previous transaction's markers are still being written) and
//! other retriable codes wait and resend, anything else fails the run (a fenced producer,
//! INVALID_TXN_STATE: loadgen has no recovery for those).
//! Invariants: one request to the coordinator at a time (the connection allows one in flight);
//! every retry is counted ([`TransactionCoordinator::retries`]); one operation gives up after
//! [`COORDINATOR_DEADLINE`].

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
    retries: u64,
}

impl TransactionCoordinator {
    /// Finds the coordinator of `transactional_id` and gets a producer id and epoch from it
    /// (InitProducerId also fences an older producer with the same id and aborts its open
    /// transaction).
    pub async fn init(
        cluster: &Cluster,
        transactional_id: &str,
        transaction_timeout_ms: i32,
    ) -> Result<TransactionCoordinator> {
        let mut coordinator = TransactionCoordinator {
            transactional_id: TransactionalId(StrBytes::from_string(transactional_id.into())),
            connection: None,
            producer_id: -1,
            producer_epoch: -1,
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
        Ok(coordinator)
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
    /// below). `first` marks the transaction's first add, which retries CONCURRENT_TRANSACTIONS
    /// sooner.
    pub async fn add_partitions(
        &mut self,
        cluster: &Cluster,
        topic: &TopicName,
        partitions: &[i32],
        first: bool,
    ) -> Result<()> {
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
    /// logged PrepareCommit/PrepareAbort; the markers are written after the answer.
    pub async fn end(&mut self, cluster: &Cluster, commit: bool) -> Result<()> {
        let request = EndTxnRequest::default()
            .with_transactional_id(self.transactional_id.clone())
            .with_producer_id(ProducerId(self.producer_id))
            .with_producer_epoch(self.producer_epoch)
            .with_committed(commit);
        self.call(cluster, "EndTxn", COORDINATOR_RETRY_BACKOFF, |c| {
            let request = request.clone();
            async move {
                let r = c.call(&request, ApiKey::EndTxn).await?;
                Ok((r.error_code, ()))
            }
        })
        .await
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
