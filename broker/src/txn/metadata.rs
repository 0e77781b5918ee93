//! One transactional id's state and its transitions, as Kafka's `TransactionMetadata` and
//! the checks of `TransactionCoordinator` (transaction version 1: one producer epoch per
//! producer session, bumped by InitProducerId and by fencing). Pure: the backend persists
//! a transition's result before it applies it.
//!
//! Invariants: a transition is computed from the current state and applied only after its
//! record is in `__transaction_state` (acks=-1); while one is being written (`pending`),
//! every other request for the id gets CONCURRENT_TRANSACTIONS; `partitions` is empty
//! unless the state is Ongoing or Prepare*.

use std::collections::{BTreeMap, BTreeSet};

/// Kafka's `TransactionState`, with its ids in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            Self::Empty => 0,
            Self::Ongoing => 1,
            Self::PrepareCommit => 2,
            Self::PrepareAbort => 3,
            Self::CompleteCommit => 4,
            Self::CompleteAbort => 5,
            Self::Dead => 6,
            Self::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            6 => Self::Dead,
            7 => Self::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
            Self::Dead => "Dead",
            Self::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn is_prepare(self) -> bool {
        matches!(self, Self::PrepareCommit | Self::PrepareAbort)
    }
}

/// Kafka's `Short.MaxValue - 1`: an epoch at this value is exhausted and the next bump
/// rotates the producer id.
pub const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// Why a request is refused (mapped to Kafka codes at the handler boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnError {
    ConcurrentTransactions,
    ProducerFenced,
    InvalidProducerIdMapping,
    InvalidTxnState,
    NotCoordinator,
    CoordinatorLoadInProgress,
    CoordinatorNotAvailable,
    InvalidTransactionTimeout,
    InvalidRequest,
    TransactionalIdNotFound,
}

impl TxnError {
    pub fn code(self) -> i16 {
        use kafka_protocol::ResponseError as E;
        match self {
            Self::ConcurrentTransactions => E::ConcurrentTransactions,
            Self::ProducerFenced => E::ProducerFenced,
            Self::InvalidProducerIdMapping => E::InvalidProducerIdMapping,
            Self::InvalidTxnState => E::InvalidTxnState,
            Self::NotCoordinator => E::NotCoordinator,
            Self::CoordinatorLoadInProgress => E::CoordinatorLoadInProgress,
            Self::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
            Self::InvalidTransactionTimeout => E::InvalidTransactionTimeout,
            Self::InvalidRequest => E::InvalidRequest,
            Self::TransactionalIdNotFound => E::TransactionalIdNotFound,
        }
        .code()
    }

    /// PRODUCER_FENCED (90) is newer than some request versions: those get
    /// INVALID_PRODUCER_EPOCH (47), as Kafka's KafkaApis maps it.
    pub fn code_for(self, producer_fenced_supported: bool) -> i16 {
        if self == Self::ProducerFenced && !producer_fenced_supported {
            kafka_protocol::ResponseError::InvalidProducerEpoch.code()
        } else {
            self.code()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The producer id before the last rotation (KIP-360 retries), -1 if none.
    pub previous_producer_id: i64,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A transition is being written to the log.
    pub pending: bool,
    /// The `__transaction_state` partition holding the id (not stored; set by the backend).
    pub state_partition: i32,
}

/// What InitProducerId does with an id's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitTransit {
    /// Write this state, then answer with its producer id and epoch.
    Write(TxnMetadata),
    /// A producer id must be allocated first (epoch exhausted): then `rotate`.
    Rotate,
    /// An open transaction must be aborted first under this fenced state; the client gets
    /// CONCURRENT_TRANSACTIONS and retries.
    FenceAndAbort(TxnMetadata),
}

impl TxnMetadata {
    /// A new id: producer id allocated, epoch -1 until the first InitProducerId bumps it.
    pub fn new(transactional_id: String, producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        Self {
            transactional_id,
            producer_id,
            producer_epoch: -1,
            previous_producer_id: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            pending: false,
            state_partition: -1,
        }
    }

    pub fn partitions_by_topic(&self) -> BTreeMap<&str, Vec<i32>> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, p) in &self.partitions {
            topics.entry(topic.as_str()).or_default().push(*p);
        }
        topics
    }

    /// InitProducerId (Kafka's `prepareInitProducerIdTransit`); `expected` is the KIP-360
    /// (producer id, epoch) a recovering producer sends.
    pub fn init_producer_id(
        &self,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now_ms: i64,
    ) -> Result<InitTransit, TxnError> {
        if self.pending {
            return Err(TxnError::ConcurrentTransactions);
        }
        let valid_expected = |(pid, epoch): (i64, i16)| {
            self.producer_epoch == -1
                || pid == self.producer_id
                || (pid == self.previous_producer_id && epoch >= EPOCH_EXHAUSTED)
        };
        if !expected.is_none_or(valid_expected) {
            return Err(TxnError::ProducerFenced);
        }
        match self.state {
            TxnState::PrepareAbort | TxnState::PrepareCommit => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Empty | TxnState::CompleteAbort | TxnState::CompleteCommit => {
                if self.producer_epoch >= EPOCH_EXHAUSTED
                    && expected.is_none_or(|(_, e)| e == self.producer_epoch)
                {
                    return Ok(InitTransit::Rotate);
                }
                // A retry of a rotation whose answer was lost (KIP-360): the current id and
                // epoch again, without a bump.
                if expected.is_some_and(|(pid, _)| pid != self.producer_id) {
                    let mut next = self.completed(now_ms);
                    next.timeout_ms = timeout_ms;
                    return Ok(InitTransit::Write(next));
                }
                // A recovering producer's epoch must be the current one.
                if let Some((_, epoch)) = expected
                    && self.producer_epoch != -1
                    && epoch != -1
                    && epoch != self.producer_epoch
                {
                    return Err(TxnError::ProducerFenced);
                }
                let mut next = self.completed(now_ms);
                next.producer_epoch = self.producer_epoch + 1;
                next.timeout_ms = timeout_ms;
                next.state = TxnState::Empty;
                Ok(InitTransit::Write(next))
            }
            TxnState::Ongoing => {
                let mut next = self.clone();
                next.producer_epoch = self.producer_epoch.saturating_add(1);
                next.last_update_ms = now_ms;
                Ok(InitTransit::FenceAndAbort(next))
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Err(TxnError::ConcurrentTransactions),
        }
    }

    /// InitProducerId with an exhausted epoch: a new producer id at epoch 0.
    pub fn rotate(&self, new_producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        let mut next = self.completed(now_ms);
        next.previous_producer_id = self.producer_id;
        next.producer_id = new_producer_id;
        next.producer_epoch = 0;
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next
    }

    /// Checks a client's producer id and epoch against the current ones.
    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if self.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if self.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        if self.pending {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: `None` when every partition is in the open
    /// transaction already (nothing to write), else the Ongoing state to write.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, epoch)?;
        if self.state.is_prepare() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if matches!(self.state, TxnState::Dead | TxnState::PrepareEpochFence) {
            return Err(TxnError::ConcurrentTransactions);
        }
        if self.state == TxnState::Ongoing && partitions.iter().all(|p| self.partitions.contains(p))
        {
            return Ok(None);
        }
        let mut next = self.clone();
        if self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.state = TxnState::Ongoing;
        next.last_update_ms = now_ms;
        next.partitions.extend(partitions.iter().cloned());
        Ok(Some(next))
    }

    /// EndTxn from a client (or the coordinator's own abort of a fenced or expired
    /// transaction, `from_client == false`, with the bumped epoch). `Ok(None)`: nothing to
    /// write (a retry of a finished end).
    pub fn end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        from_client: bool,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        if self.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        // Kafka (transaction version < 2): a client's epoch must be the current one; the
        // coordinator's own abort carries an epoch at least the current one.
        let valid_epoch =
            (!from_client || epoch == self.producer_epoch) && epoch >= self.producer_epoch;
        if !valid_epoch {
            return Err(TxnError::ProducerFenced);
        }
        if self.pending {
            return Err(TxnError::ConcurrentTransactions);
        }
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = self.clone();
                next.producer_epoch = epoch;
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_ms = now_ms;
                Ok(Some(next))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// Every marker of a Prepare* transaction is written: Complete*, no partitions.
    pub fn complete(&self, now_ms: i64) -> TxnMetadata {
        assert!(self.state.is_prepare(), "complete from {:?}", self.state);
        let mut next = self.completed(now_ms);
        next.state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next
    }

    /// A copy with the transaction's partitions cleared and the time updated.
    fn completed(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.partitions.clear();
        next.last_update_ms = now_ms;
        next.pending = false;
        next
    }

    /// An open transaction past its timeout (Kafka's `abortTimedOutTransactions`).
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && !self.pending
            && self.start_ms.saturating_add(i64::from(self.timeout_ms)) < now_ms
    }

    /// A finished id unused for `expiration_ms` (Kafka's `transactional.id.expiration.ms`).
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) && !self.pending
            && self.last_update_ms.saturating_add(expiration_ms) < now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> TxnMetadata {
        TxnMetadata::new("t".into(), 7, 60_000, 0)
    }

    fn write(t: Result<InitTransit, TxnError>) -> TxnMetadata {
        match t {
            Ok(InitTransit::Write(m)) => m,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn a_commit_runs_through_every_state() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (7, 0, TxnState::Empty)
        );
        let p = [("out".to_string(), 0), ("out".to_string(), 1)];
        let m = m.add_partitions(7, 0, &p, 2).unwrap().unwrap();
        assert_eq!(
            (m.state, m.start_ms, m.partitions.len()),
            (TxnState::Ongoing, 2, 2)
        );
        assert_eq!(m.add_partitions(7, 0, &p[..1], 3), Ok(None), "already in");
        let m = m.end(7, 0, true, true, 4).unwrap().unwrap();
        assert_eq!(m.state, TxnState::PrepareCommit);
        assert_eq!(
            m.end(7, 0, true, true, 5),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(m.end(7, 0, false, true, 5), Err(TxnError::InvalidTxnState));
        let m = m.complete(6);
        assert_eq!((m.state, m.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(m.end(7, 0, true, true, 7), Ok(None), "a retried commit");
        assert_eq!(m.end(7, 0, false, true, 7), Err(TxnError::InvalidTxnState));
        // The next transaction starts afresh.
        let m = m.add_partitions(7, 0, &p[1..], 8).unwrap().unwrap();
        assert_eq!((m.partitions.len(), m.start_ms), (1, 8));
    }

    #[test]
    fn stale_producers_are_fenced() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        let m = write(m.init_producer_id(60_000, None, 2));
        assert_eq!(m.producer_epoch, 1);
        let p = [("out".to_string(), 0)];
        assert_eq!(m.add_partitions(7, 0, &p, 3), Err(TxnError::ProducerFenced));
        assert_eq!(
            m.add_partitions(8, 1, &p, 3),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(m.end(7, 0, true, true, 3), Err(TxnError::ProducerFenced));
        let mut busy = m.clone();
        busy.pending = true;
        assert_eq!(
            busy.add_partitions(7, 1, &p, 3),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            m.end(7, 1, true, true, 3),
            Err(TxnError::InvalidTxnState),
            "nothing open"
        );
    }

    #[test]
    fn init_during_an_open_transaction_fences_and_aborts_it() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        let m = m
            .add_partitions(7, 0, &[("out".into(), 0)], 2)
            .unwrap()
            .unwrap();
        let InitTransit::FenceAndAbort(fenced) = m.init_producer_id(60_000, None, 3).unwrap()
        else {
            panic!("an open transaction is fenced first");
        };
        assert_eq!(fenced.producer_epoch, 1);
        // The coordinator aborts with the bumped epoch; the old producer is fenced.
        let aborting = fenced.end(7, 1, false, false, 4).unwrap().unwrap();
        assert_eq!(
            (aborting.state, aborting.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert_eq!(m.end(7, 0, true, true, 4).map(|_| ()), Ok(()));
        assert_eq!(
            aborting.end(7, 0, true, true, 4),
            Err(TxnError::ProducerFenced)
        );
        let done = aborting.complete(5);
        let again = write(done.init_producer_id(60_000, None, 6));
        assert_eq!(again.producer_epoch, 2);
    }

    #[test]
    fn an_exhausted_epoch_rotates_the_producer_id() {
        let mut m = fresh();
        m.producer_epoch = EPOCH_EXHAUSTED;
        assert_eq!(m.init_producer_id(60_000, None, 1), Ok(InitTransit::Rotate));
        let r = m.rotate(99, 60_000, 1);
        assert_eq!(
            (r.producer_id, r.producer_epoch, r.previous_producer_id),
            (99, 0, 7)
        );
        // KIP-360: a producer retrying with the old id and exhausted epoch is recognised.
        assert!(matches!(
            r.init_producer_id(60_000, Some((7, EPOCH_EXHAUSTED)), 2),
            Ok(InitTransit::Write(_))
        ));
        assert_eq!(
            r.init_producer_id(60_000, Some((5, 0)), 2),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn timeouts_and_expiry() {
        let m = write(fresh().init_producer_id(1_000, None, 0));
        assert!(!m.timed_out(10_000), "nothing open");
        let m = m
            .add_partitions(7, 0, &[("o".into(), 0)], 100)
            .unwrap()
            .unwrap();
        assert!(!m.timed_out(1_100));
        assert!(m.timed_out(1_101));
        assert!(
            !m.expired(1_000_000, 10),
            "an open transaction never expires"
        );
        let done = m.end(7, 0, true, true, 200).unwrap().unwrap().complete(300);
        assert!(!done.expired(310, 10));
        assert!(done.expired(311, 10));
    }

    #[test]
    fn state_ids_round_trip() {
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).unwrap().id(), id);
        }
        assert_eq!(TxnState::from_id(8), None);
    }
}
