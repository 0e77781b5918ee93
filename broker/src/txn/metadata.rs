//! One transactional id's state and its transitions, as Kafka's `TransactionMetadata` and
//! the checks of `TransactionCoordinator`. Transaction version 1 keeps one producer epoch
//! per producer session, bumped by InitProducerId and by fencing. Transaction version 2
//! (KIP-890 part 2, EndTxn v5) bumps the epoch at every commit or abort, so every
//! transaction of a producer has its own epoch and its markers carry an epoch above every
//! data batch of it; an exhausted epoch rotates the producer id at the end of a transaction.
//! Pure: the backend persists a transition's result before it applies it.
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

/// Kafka's `transaction.version` feature level as a request uses it: EndTxn v5, Produce v12+,
/// TxnOffsetCommit v5 and the brokers' AddPartitionsToTxn v5 are version 2, older requests
/// version 0 (Kafka's `TV_0`; level 1 changes only the log format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnVersion(pub i16);

impl TxnVersion {
    pub const V0: TxnVersion = TxnVersion(0);
    pub const V2: TxnVersion = TxnVersion(2);
    /// The highest level Sluice serves.
    pub const MAX: TxnVersion = TxnVersion(2);

    /// Kafka's `supportsEpochBump`: every EndTxn bumps the producer epoch.
    pub fn bumps_epoch(self) -> bool {
        self.0 >= 2
    }
}

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
    /// The producer id a transaction version 2 end rotates to once its markers are
    /// written (the epoch was exhausted), -1 if none. Kafka's `nextProducerId`.
    pub next_producer_id: i64,
    /// The transaction version of the request that last moved the transaction (Kafka's
    /// `clientTransactionVersion`, persisted in TransactionLogValue v1).
    pub client_version: TxnVersion,
    /// Counts the transactions of this id (Sluice's own, persisted in a tagged field): the
    /// one open or ending now is the `txn_sequence`th. Partitions learn it when they verify
    /// the transaction's first batch and markers carry it, so a late copy of an earlier
    /// transaction's marker never ends this one, even at transaction version 1.
    pub txn_sequence: u64,
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
            next_producer_id: -1,
            client_version: TxnVersion::V0,
            txn_sequence: 0,
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
        version: TxnVersion,
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
            next.txn_sequence = self.txn_sequence + 1;
        }
        next.state = TxnState::Ongoing;
        next.last_update_ms = now_ms;
        next.client_version = version;
        next.partitions.extend(partitions.iter().cloned());
        Ok(Some(next))
    }

    /// True when an end of `producer_id` at `epoch` (the client's epoch, or the coordinator's
    /// fencing epoch: the current one + 1) under `version` must allocate the producer id it
    /// rotates to (`next_producer_id` of `end`): the epoch its Prepare* would carry is past
    /// the last one a producer may use. The coordinator's own abort rotates too, as Kafka's
    /// does: bumping once past a fencing epoch that is already exhausted would saturate at
    /// `i16::MAX`, a fenced producer's late abort would then pass for a retry of that end
    /// and the producer would go on at `i16::MAX`, where the strict marker check refuses its
    /// next markers (a hanging transaction; `txn::sim`, seed 113).
    pub fn end_needs_producer_id(&self, producer_id: i64, epoch: i16, version: TxnVersion) -> bool {
        version.bumps_epoch()
            && producer_id == self.producer_id
            && epoch >= EPOCH_EXHAUSTED
            && epoch >= self.producer_epoch
    }

    /// EndTxn from a client (or the coordinator's own abort of a fenced or expired
    /// transaction, `from_client == false`, with the bumped epoch). `Ok(None)`: nothing to
    /// write (a retry of a finished end). `next_producer_id` is the id an exhausted epoch
    /// rotates to under transaction version 2 (see `end_needs_producer_id`), else -1.
    #[allow(clippy::too_many_arguments)] // EndTxn's fields, plus what the backend resolved
    pub fn end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        from_client: bool,
        version: TxnVersion,
        next_producer_id: i64,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        if version.bumps_epoch() {
            return self.end_v2(
                producer_id,
                epoch,
                commit,
                from_client,
                next_producer_id,
                now_ms,
            );
        }
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
            (TxnState::Ongoing, _) => Ok(Some(self.prepare_end(commit, epoch, version, now_ms))),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// EndTxn under transaction version 2 (Kafka's `endTransaction` above TV_1). The epoch
    /// bumps at every end, so a request's epoch says which transaction it ends: the current
    /// epoch ends the open one, the epoch just below it is a retry of the end that bumped it
    /// (answered without writing), anything else is fenced. A delayed copy of an EndTxn can
    /// therefore never end a later transaction. An abort with nothing open is allowed (the
    /// producer cannot know whether a produce added a partition) and still bumps the epoch.
    fn end_v2(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        from_client: bool,
        next_producer_id: i64,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        let fence = !from_client;
        let retry_on_overflow = !fence
            && self.previous_producer_id == producer_id
            && epoch == EPOCH_EXHAUSTED
            && self.producer_epoch == 0;
        let retry_on_bump = !fence && i32::from(self.producer_epoch) == i32::from(epoch) + 1;
        let valid_epoch = if fence {
            epoch >= self.producer_epoch
        } else {
            match self.state {
                TxnState::Ongoing
                | TxnState::Empty
                | TxnState::Dead
                | TxnState::PrepareEpochFence => epoch == self.producer_epoch,
                TxnState::PrepareCommit | TxnState::PrepareAbort => retry_on_bump,
                TxnState::CompleteCommit | TxnState::CompleteAbort => {
                    retry_on_bump || retry_on_overflow || epoch == self.producer_epoch
                }
            }
        };
        if self.producer_id != producer_id && !retry_on_overflow {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if !valid_epoch {
            return Err(TxnError::ProducerFenced);
        }
        if self.pending {
            return Err(TxnError::ConcurrentTransactions);
        }
        if fence && self.state != TxnState::Ongoing {
            // The coordinator fences only an open transaction (Kafka's PrepareEpochFence);
            // one that ended meanwhile is left alone, its producer unfenced.
            return Err(TxnError::InvalidTxnState);
        }
        let retry = retry_on_bump || retry_on_overflow;
        let rotates = self.end_needs_producer_id(producer_id, epoch, TxnVersion::V2);
        let prepare = |commit: bool| {
            if rotates && next_producer_id < 0 {
                // The caller allocates the id first; without it the epoch would overflow.
                return Err(TxnError::CoordinatorNotAvailable);
            }
            let mut next = self.prepare_end(commit, epoch, TxnVersion::V2, now_ms);
            if rotates {
                next.next_producer_id = next_producer_id;
            }
            Ok(Some(next))
        };
        match (self.state, commit) {
            (TxnState::Ongoing, _) => prepare(commit),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) if retry => {
                Ok(None)
            }
            (TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Empty, false)
                if !retry =>
            {
                prepare(false)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// The Prepare{Commit,Abort} state of an end at `epoch` (the current epoch, or the
    /// coordinator's fencing epoch above it). Transaction version 2 bumps the epoch once
    /// more: the markers and the producer's next transaction use it (Kafka's
    /// `prepareAbortOrCommit`; at `i16::MAX` an abort goes through without a bump).
    fn prepare_end(
        &self,
        commit: bool,
        epoch: i16,
        version: TxnVersion,
        now_ms: i64,
    ) -> TxnMetadata {
        let mut next = self.clone();
        next.producer_epoch = if version.bumps_epoch() {
            epoch.saturating_add(1)
        } else {
            epoch
        };
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if self.state != TxnState::Ongoing {
            // Transaction version 2's abort with nothing open: no partitions, and the start
            // time is the end's.
            next.partitions.clear();
            next.start_ms = now_ms;
            next.txn_sequence = self.txn_sequence + 1;
        }
        next.client_version = version;
        next.last_update_ms = now_ms;
        next
    }

    /// The producer id and epoch the client continues with after this state: the rotated
    /// id at epoch 0 while an end that exhausted the epoch completes, else the current ones.
    pub fn client_identity(&self) -> (i64, i16) {
        if self.next_producer_id >= 0 {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
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
        if self.next_producer_id >= 0 {
            // Transaction version 2 exhausted the epoch: the markers went out under the old
            // id, the producer continues under the new one (Kafka's `prepareComplete`).
            next.previous_producer_id = self.producer_id;
            next.producer_id = self.next_producer_id;
            next.producer_epoch = 0;
            next.next_producer_id = -1;
        }
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
        let m = m
            .add_partitions(7, 0, &p, TxnVersion::V0, 2)
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.state, m.start_ms, m.partitions.len()),
            (TxnState::Ongoing, 2, 2)
        );
        assert_eq!(
            m.add_partitions(7, 0, &p[..1], TxnVersion::V0, 3),
            Ok(None),
            "already in"
        );
        assert_eq!(m.txn_sequence, 1, "the id's first transaction");
        let m = m
            .end(7, 0, true, true, TxnVersion::V0, -1, 4)
            .unwrap()
            .unwrap();
        assert_eq!(m.state, TxnState::PrepareCommit);
        assert_eq!(
            m.end(7, 0, true, true, TxnVersion::V0, -1, 5),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            m.end(7, 0, false, true, TxnVersion::V0, -1, 5),
            Err(TxnError::InvalidTxnState)
        );
        let m = m.complete(6);
        assert_eq!((m.state, m.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(
            m.end(7, 0, true, true, TxnVersion::V0, -1, 7),
            Ok(None),
            "a retried commit"
        );
        assert_eq!(
            m.end(7, 0, false, true, TxnVersion::V0, -1, 7),
            Err(TxnError::InvalidTxnState)
        );
        // The next transaction starts afresh.
        let m = m
            .add_partitions(7, 0, &p[1..], TxnVersion::V0, 8)
            .unwrap()
            .unwrap();
        assert_eq!((m.partitions.len(), m.start_ms, m.txn_sequence), (1, 8, 2));
    }

    #[test]
    fn stale_producers_are_fenced() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        let m = write(m.init_producer_id(60_000, None, 2));
        assert_eq!(m.producer_epoch, 1);
        let p = [("out".to_string(), 0)];
        assert_eq!(
            m.add_partitions(7, 0, &p, TxnVersion::V0, 3),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            m.add_partitions(8, 1, &p, TxnVersion::V0, 3),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            m.end(7, 0, true, true, TxnVersion::V0, -1, 3),
            Err(TxnError::ProducerFenced)
        );
        let mut busy = m.clone();
        busy.pending = true;
        assert_eq!(
            busy.add_partitions(7, 1, &p, TxnVersion::V0, 3),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            m.end(7, 1, true, true, TxnVersion::V0, -1, 3),
            Err(TxnError::InvalidTxnState),
            "nothing open"
        );
    }

    #[test]
    fn init_during_an_open_transaction_fences_and_aborts_it() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        let m = m
            .add_partitions(7, 0, &[("out".into(), 0)], TxnVersion::V0, 2)
            .unwrap()
            .unwrap();
        let InitTransit::FenceAndAbort(fenced) = m.init_producer_id(60_000, None, 3).unwrap()
        else {
            panic!("an open transaction is fenced first");
        };
        assert_eq!(fenced.producer_epoch, 1);
        // The coordinator aborts with the bumped epoch; the old producer is fenced.
        let aborting = fenced
            .end(7, 1, false, false, TxnVersion::V0, -1, 4)
            .unwrap()
            .unwrap();
        assert_eq!(
            (aborting.state, aborting.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert_eq!(
            m.end(7, 0, true, true, TxnVersion::V0, -1, 4).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            aborting.end(7, 0, true, true, TxnVersion::V0, -1, 4),
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
            .add_partitions(7, 0, &[("o".into(), 0)], TxnVersion::V0, 100)
            .unwrap()
            .unwrap();
        assert!(!m.timed_out(1_100));
        assert!(m.timed_out(1_101));
        assert!(
            !m.expired(1_000_000, 10),
            "an open transaction never expires"
        );
        let done = m
            .end(7, 0, true, true, TxnVersion::V0, -1, 200)
            .unwrap()
            .unwrap()
            .complete(300);
        assert!(!done.expired(310, 10));
        assert!(done.expired(311, 10));
    }

    fn v2_open(m: &TxnMetadata, now: i64) -> TxnMetadata {
        m.add_partitions(
            m.producer_id,
            m.producer_epoch,
            &[("out".into(), 0)],
            TxnVersion::V2,
            now,
        )
        .unwrap()
        .unwrap()
    }

    fn v2_end(m: &TxnMetadata, epoch: i16, commit: bool) -> Result<Option<TxnMetadata>, TxnError> {
        m.end(m.producer_id, epoch, commit, true, TxnVersion::V2, -1, 10)
    }

    /// Transaction version 2: every end bumps the epoch, so each transaction has its own
    /// and a delayed copy of an earlier EndTxn (the Jepsen interleaving) is fenced.
    #[test]
    fn v2_every_end_bumps_the_epoch_and_old_copies_are_fenced() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        let t1 = v2_open(&m, 2);
        let prepared = v2_end(&t1, 0, true).unwrap().unwrap();
        assert_eq!(
            (prepared.state, prepared.producer_epoch),
            (TxnState::PrepareCommit, 1),
            "the markers carry the bumped epoch"
        );
        assert_eq!(prepared.client_identity(), (7, 1));
        assert_eq!(prepared.client_version, TxnVersion::V2);
        assert_eq!(
            v2_end(&prepared, 0, true),
            Err(TxnError::ConcurrentTransactions),
            "a retry while the markers are written"
        );
        let done = prepared.complete(3);
        assert_eq!(
            (done.state, done.producer_epoch),
            (TxnState::CompleteCommit, 1)
        );
        assert_eq!(v2_end(&done, 0, true), Ok(None), "a retry of the commit");
        assert_eq!(v2_end(&done, 0, false), Err(TxnError::InvalidTxnState));
        // T2 runs at epoch 1: a delayed copy of T1's EndTxn (epoch 0) cannot end it.
        let t2 = v2_open(&done, 4);
        assert_eq!(v2_end(&t2, 0, true), Err(TxnError::ProducerFenced));
        assert_eq!(v2_end(&t2, 0, false), Err(TxnError::ProducerFenced));
        let aborting = v2_end(&t2, 1, false).unwrap().unwrap();
        assert_eq!(
            (aborting.state, aborting.producer_epoch),
            (TxnState::PrepareAbort, 2)
        );
        // A client's epoch above the current one is fenced too.
        assert_eq!(
            v2_end(&aborting.complete(5), 3, false),
            Err(TxnError::ProducerFenced)
        );
    }

    /// Transaction version 2 lets a producer abort with nothing open (it cannot know
    /// whether a produce added a partition): the epoch still bumps; a commit is refused.
    #[test]
    fn v2_abort_with_nothing_open_bumps() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        assert_eq!(v2_end(&m, 0, true), Err(TxnError::InvalidTxnState));
        let a = v2_end(&m, 0, false).unwrap().unwrap();
        assert_eq!(
            (a.state, a.producer_epoch, a.partitions.len()),
            (TxnState::PrepareAbort, 1, 0)
        );
        let a = a.complete(2);
        assert_eq!(v2_end(&a, 0, false), Ok(None), "a retry");
        let b = v2_end(&a, 1, false).unwrap().unwrap();
        assert_eq!(
            b.producer_epoch, 2,
            "a new abort at the current epoch bumps again"
        );
    }

    /// An end at an exhausted epoch rotates the producer id once its markers are written
    /// under the old id; a retry naming the old id is recognised.
    #[test]
    fn v2_an_exhausted_epoch_rotates_at_the_end() {
        let mut m = write(fresh().init_producer_id(60_000, None, 1));
        m.producer_epoch = EPOCH_EXHAUSTED;
        let open = v2_open(&m, 2);
        assert!(open.end_needs_producer_id(7, EPOCH_EXHAUSTED, TxnVersion::V2));
        assert!(!open.end_needs_producer_id(7, EPOCH_EXHAUSTED, TxnVersion::V0));
        assert!(
            !open.end_needs_producer_id(8, EPOCH_EXHAUSTED, TxnVersion::V2),
            "another id"
        );
        assert_eq!(
            v2_end(&open, EPOCH_EXHAUSTED, true),
            Err(TxnError::CoordinatorNotAvailable),
            "no id allocated"
        );
        let prepared = open
            .end(7, EPOCH_EXHAUSTED, true, true, TxnVersion::V2, 99, 3)
            .unwrap()
            .unwrap();
        assert_eq!(
            (prepared.producer_id, prepared.producer_epoch),
            (7, i16::MAX)
        );
        assert_eq!(prepared.client_identity(), (99, 0));
        let done = prepared.complete(4);
        assert_eq!(
            (
                done.producer_id,
                done.producer_epoch,
                done.previous_producer_id,
                done.next_producer_id
            ),
            (99, 0, 7, -1)
        );
        assert_eq!(
            done.end(7, EPOCH_EXHAUSTED, true, true, TxnVersion::V2, -1, 5),
            Ok(None),
            "a retry with the old id"
        );
        assert_eq!(
            done.end(7, 3, true, true, TxnVersion::V2, -1, 5),
            Err(TxnError::InvalidProducerIdMapping)
        );
    }

    /// The coordinator's own abort at an exhausted epoch rotates the producer id (a bump
    /// past its fencing epoch would saturate): the fenced producer's late abort is answered
    /// with the new id, its late commit refused, and nothing ever runs at `i16::MAX`.
    #[test]
    fn v2_a_coordinator_abort_at_an_exhausted_epoch_rotates() {
        for start in [EPOCH_EXHAUSTED - 1, EPOCH_EXHAUSTED] {
            let mut m = write(fresh().init_producer_id(60_000, None, 1));
            m.producer_epoch = start;
            let open = v2_open(&m, 2);
            let fence = start + 1;
            assert!(open.end_needs_producer_id(7, fence, TxnVersion::V2));
            let aborting = open
                .end(7, fence, false, false, TxnVersion::V2, 99, 3)
                .unwrap()
                .unwrap();
            assert_eq!(
                (
                    aborting.producer_id,
                    aborting.producer_epoch,
                    aborting.next_producer_id
                ),
                (7, i16::MAX, 99),
                "the markers go out under the old id, above the data's epoch"
            );
            let done = aborting.complete(4);
            assert_eq!((done.producer_id, done.producer_epoch), (99, 0));
            let late_abort = done.end(7, start, false, true, TxnVersion::V2, -1, 5);
            let late_commit = done.end(7, start, true, true, TxnVersion::V2, -1, 5);
            if start == EPOCH_EXHAUSTED {
                assert_eq!(late_abort, Ok(None), "a retry of the abort: the new id");
                assert_eq!(late_commit, Err(TxnError::InvalidTxnState));
            } else {
                assert_eq!(late_abort, Err(TxnError::InvalidProducerIdMapping));
                assert_eq!(late_commit, Err(TxnError::InvalidProducerIdMapping));
            }
        }
    }

    /// The coordinator's own abort under transaction version 2 bumps past its fencing
    /// epoch, so the fenced producer's late abort is not taken for a retry; and it never
    /// touches a transaction that ended meanwhile.
    #[test]
    fn v2_coordinator_aborts_fence_the_producer() {
        let m = write(fresh().init_producer_id(60_000, None, 1));
        let open = v2_open(&m, 2);
        let aborting = open
            .end(7, 1, false, false, TxnVersion::V2, -1, 3)
            .unwrap()
            .unwrap();
        assert_eq!(
            (aborting.state, aborting.producer_epoch),
            (TxnState::PrepareAbort, 2)
        );
        let done = aborting.complete(4);
        assert_eq!(v2_end(&done, 0, false), Err(TxnError::ProducerFenced));
        let committed = v2_end(&open, 0, true).unwrap().unwrap().complete(5);
        assert_eq!(
            committed.end(7, 1, false, false, TxnVersion::V2, -1, 6),
            Err(TxnError::InvalidTxnState),
            "ended meanwhile: left alone"
        );
    }

    #[test]
    fn state_ids_round_trip() {
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).unwrap().id(), id);
        }
        assert_eq!(TxnState::from_id(8), None);
    }
}
