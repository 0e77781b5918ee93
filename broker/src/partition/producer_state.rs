//! Producer state of one partition: per producer id, the current epoch, the sequence ranges
//! (with their offsets) of the last `BATCHES_KEPT` batches, the last coordinator epoch seen in
//! a transaction marker and the first offset of its ongoing transaction; per partition the
//! ongoing transactions, the completed ones whose marker is not yet below the high watermark,
//! and the newest aborted ones (a bounded cache of the engine's per-segment `.txnindex`
//! files, plus those not yet written there).
//!
//! Follows Kafka's ProducerStateManager / ProducerAppendInfo: a duplicate of a cached batch is
//! answered with the original offsets; an older epoch is INVALID_PRODUCER_EPOCH; a gap is
//! OUT_OF_ORDER_SEQUENCE_NUMBER; a producer with no state left (never seen, or trimmed by
//! retention) is accepted at any sequence. A transactional batch starts the producer's
//! transaction (or continues it); a non-transactional batch during one is INVALID_TXN_STATE.
//! A transactional batch with base_sequence -1 (NO_SEQUENCE) comes from a coordinator (the
//! group coordinator's TxnOffsetCommit): no sequence check, no duplicate cache, but it is
//! part of the transaction. A COMMIT or ABORT marker (control batch) ends the transaction:
//! its producer epoch may not be older than the producer's (INVALID_PRODUCER_EPOCH) and its
//! coordinator epoch not older than the last seen (TRANSACTION_COORDINATOR_FENCED); a newer
//! epoch (KIP-890 transaction version 2 bumps it on every end) becomes the producer's epoch.
//!
//! Invariants: `ongoing` holds exactly the producers whose `current_txn_first_offset` is
//! set; `unreplicated` and `aborted` are in marker order (last offset ascending); a producer
//! with an ongoing transaction is never evicted or trimmed (it pins the last stable offset);
//! `aborted` holds every aborted transaction whose marker is at or above `aborted_floor`,
//! and every one at or above `aborted_unflushed_from` is in no `.txnindex` file yet (so it
//! is never dropped from memory).
//! Pure: no I/O, rebuilt from the log's batch headers and control records.

use std::collections::{BTreeMap, HashMap, VecDeque};

#[path = "producer_snapshot.rs"]
mod snapshot;
pub use snapshot::SnapshotState;

/// Batches remembered per producer for duplicate detection (Kafka: 5, the max in-flight).
pub const BATCHES_KEPT: usize = 5;
/// Producers tracked per partition before the oldest-written is forgotten (producers with an
/// ongoing transaction are never forgotten: they pin the last stable offset).
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;
/// Ongoing transactions per partition. At the limit a batch that would start one more is
/// refused (CONCURRENT_TRANSACTIONS, retriable) until one ends; the coordinator aborts
/// transactions past their `transaction.timeout.ms`, so the refusal is temporary. Batches
/// replicated from a leader or read back from the log are never refused.
pub const ONGOING_TRANSACTIONS_MAX: usize = PRODUCERS_PER_PARTITION_MAX;
/// Aborted transactions cached in memory per partition (32 bytes each, 3.2 MB at the bound).
/// Beyond it the oldest one already written to its segment's `.txnindex` leaves memory; a
/// read_committed fetch below the cache reads the files (`engine::Log::aborted_txns`).
/// Those not yet written (markers above the newest producer snapshot) always stay.
pub const ABORTED_TRANSACTIONS_CACHED: usize = 100_000;
/// base_sequence of a batch that carries none (a coordinator's append).
pub const NO_SEQUENCE: i32 = -1;
/// Producer epoch of an entry created by nothing but a marker before any data (Kafka's
/// RecordBatch.NO_PRODUCER_EPOCH).
const NO_PRODUCER_EPOCH: i16 = -1;

const _: () = assert!(ONGOING_TRANSACTIONS_MAX <= PRODUCERS_PER_PARTITION_MAX);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// A completed transaction: `first_offset` its first batch, `last_offset` its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnRange {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// An aborted transaction as Kafka's transaction index holds it: with the last stable offset
/// right after it ended, which bounds the search (`TransactionIndex.collectAbortedTxns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AbortedTxn {
    range: TxnRange,
    last_stable_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// Log offset of the producer's last write (batch or marker), used to evict the least
    /// recent and to trim below the log start.
    last_offset: i64,
    /// Of the last marker; -1 before any.
    coordinator_epoch: i32,
    current_txn_first_offset: Option<i64>,
    /// The coordinator's `txn_sequence` of the ongoing transaction, when this leader learnt
    /// it from the verification of its first batch (not in the log: unknown on followers,
    /// after a restart and after a rebuild, where no marker is refused for it).
    txn_sequence: Option<u64>,
    /// The epoch was set by a marker (transaction version 2 bumps it at every end) and no
    /// batch was written at it yet: the next batch must start at sequence 0, as Kafka's
    /// `checkSequence` requires once `maybeUpdateProducerEpoch` cleared the batches.
    fresh_epoch: bool,
    /// max_timestamp of the last batch, or the last marker's timestamp.
    last_timestamp: i64,
}

impl ProducerEntry {
    fn new() -> ProducerEntry {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
            last_offset: -1,
            coordinator_epoch: -1,
            current_txn_first_offset: None,
            txn_sequence: None,
            fresh_epoch: false,
            last_timestamp: -1,
        }
    }

    /// Kafka's `maybeUpdateProducerEpoch`: a new epoch drops the cached batches.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// -1 when no transaction is ongoing.
    pub current_txn_start_offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended: answer with these offsets.
    Duplicate(BatchMeta),
    InvalidProducerEpoch {
        current: i16,
    },
    OutOfOrderSequence {
        expected: i32,
        got: i32,
    },
    /// A non-transactional batch while the producer's transaction is ongoing.
    InvalidTxnState,
    /// It would start a transaction beyond `ONGOING_TRANSACTIONS_MAX`.
    TooManyTransactions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerCheck {
    Append,
    /// The marker's producer epoch is older than the producer's.
    InvalidProducerEpoch {
        current: i16,
    },
    /// The marker names another transaction than the producer's ongoing one here (a late
    /// copy of an earlier transaction's marker).
    StaleTransaction {
        ongoing: u64,
        marker: u64,
    },
    /// The marker's coordinator epoch is older than the last one seen (a zombie coordinator).
    CoordinatorFenced {
        current: i32,
    },
}

/// A COMMIT or ABORT marker to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    /// The control batch's offset.
    pub offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// First offset -> producer id of every ongoing transaction.
    ongoing: BTreeMap<i64, i64>,
    /// Completed transactions whose marker is not yet below the high watermark: they still
    /// hold the last stable offset back (Kafka's `unreplicatedTxns`).
    unreplicated: VecDeque<TxnRange>,
    aborted: VecDeque<AbortedTxn>,
    /// `aborted` holds every aborted transaction whose marker is at or above this; those
    /// below are in the `.txnindex` files only.
    aborted_floor: i64,
    /// Aborted transactions with a marker at or above this are in no `.txnindex` file yet.
    aborted_unflushed_from: i64,
}

/// `base_sequence + last_offset_delta` with Kafka's wrap-around at i32::MAX.
/// Wrapping arithmetic, as Java's ints in Kafka's `incrementSequence`: `producer_batch` reads
/// the header before the engine validates it, and a negative delta overflowed here, which
/// panicked a debug build (found by the request_decode fuzz target). Valid values give the
/// same results as before; the batch with a bad delta is refused afterwards.
pub fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
    if base_sequence > i32::MAX.wrapping_sub(last_offset_delta) {
        last_offset_delta
            .wrapping_sub(i32::MAX.wrapping_sub(base_sequence))
            .wrapping_sub(1)
    } else {
        base_sequence.wrapping_add(last_offset_delta)
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn ongoing_transactions(&self) -> usize {
        self.ongoing.len()
    }

    /// True when `producer_id` at `epoch` has a transaction ongoing on this partition (its
    /// next transactional batch needs no coordinator verification, KIP-890 part 1).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == epoch && e.current_txn_first_offset.is_some())
    }

    /// Checks a batch from `producer_id` before it is appended, in Kafka's order: duplicate,
    /// epoch, sequence, transaction state.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
        transactional: bool,
    ) -> SequenceCheck {
        let Some(entry) = self.producers.get(&producer_id) else {
            return self.admit_transaction(transactional, false);
        };
        // A coordinator's batch (NO_SEQUENCE) carries no sequence to check.
        let sequenced = !(transactional && first_seq == NO_SEQUENCE);
        if sequenced
            && epoch == entry.epoch
            && let Some(b) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate(*b);
        }
        if epoch < entry.epoch {
            return SequenceCheck::InvalidProducerEpoch {
                current: entry.epoch,
            };
        }
        if sequenced {
            if epoch > entry.epoch {
                // A new epoch starts at sequence 0.
                if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
                    return SequenceCheck::OutOfOrderSequence {
                        expected: 0,
                        got: first_seq,
                    };
                }
            } else if let Some(last) = entry.batches.back()
                && !in_sequence(last.last_seq, first_seq)
            {
                return SequenceCheck::OutOfOrderSequence {
                    expected: last.last_seq.wrapping_add(1),
                    got: first_seq,
                };
            } else if entry.fresh_epoch && entry.batches.is_empty() && first_seq != 0 {
                // A later batch of the epoch while its first is still being retried (e.g.
                // its verification answered NOT_ENOUGH_REPLICAS): refused, so the first
                // goes in first.
                return SequenceCheck::OutOfOrderSequence {
                    expected: 0,
                    got: first_seq,
                };
            }
        }
        let in_txn = entry.current_txn_first_offset.is_some();
        if !transactional && in_txn {
            return SequenceCheck::InvalidTxnState;
        }
        self.admit_transaction(transactional, in_txn)
    }

    fn admit_transaction(&self, transactional: bool, in_txn: bool) -> SequenceCheck {
        if transactional && !in_txn && self.ongoing.len() >= ONGOING_TRANSACTIONS_MAX {
            SequenceCheck::TooManyTransactions
        } else {
            SequenceCheck::Append
        }
    }

    /// Records an appended data batch (also used when rebuilding from the log and on
    /// followers). A transactional batch starts the producer's transaction if none is
    /// ongoing.
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta, transactional: bool) {
        let entry = self.entry(producer_id);
        entry.set_epoch(epoch);
        // A coordinator's batch has no sequence: nothing to dedupe against.
        if !(transactional && batch.first_seq == NO_SEQUENCE) {
            if entry.batches.len() == BATCHES_KEPT {
                entry.batches.pop_front();
            }
            entry.batches.push_back(batch);
            entry.fresh_epoch = false;
        }
        entry.last_offset = batch.last_offset;
        entry.last_timestamp = batch.max_timestamp;
        if transactional && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(batch.first_offset);
            self.ongoing.insert(batch.first_offset, producer_id);
        }
    }

    /// Checks a COMMIT/ABORT marker before it is appended (Kafka's `appendEndTxnMarker`:
    /// producer epoch, then coordinator epoch).
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> MarkerCheck {
        let Some(entry) = self.producers.get(&producer_id) else {
            return MarkerCheck::Append;
        };
        if producer_epoch < entry.epoch {
            return MarkerCheck::InvalidProducerEpoch {
                current: entry.epoch,
            };
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return MarkerCheck::CoordinatorFenced {
                current: entry.coordinator_epoch,
            };
        }
        MarkerCheck::Append
    }

    /// `check_marker` for a transaction version 2 marker (`strict`, KIP-1228): its epoch is
    /// the one its end bumped to, above every data batch of its transaction, so a marker at
    /// or below the producer's epoch here is a duplicate or a delayed copy of an earlier
    /// transaction's marker and is refused; it never ends a later transaction. At any version,
    /// a marker naming a `sequence` (`txn::TXN_SEQUENCE_TAG`) other than the one this leader
    /// learnt for the ongoing transaction is a late copy of an earlier one and is refused.
    pub fn check_marker_strict(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        strict: bool,
        sequence: Option<u64>,
    ) -> MarkerCheck {
        if strict
            && let Some(entry) = self.producers.get(&producer_id)
            && producer_epoch <= entry.epoch
        {
            return MarkerCheck::InvalidProducerEpoch {
                current: entry.epoch,
            };
        }
        if let (Some(marker), Some(entry)) = (sequence, self.producers.get(&producer_id))
            && entry.current_txn_first_offset.is_some()
            && let Some(ongoing) = entry.txn_sequence
            && ongoing != marker
        {
            return MarkerCheck::StaleTransaction { ongoing, marker };
        }
        self.check_marker(producer_id, producer_epoch, coordinator_epoch)
    }

    /// Notes the coordinator's `txn_sequence` for `producer_id`'s ongoing transaction (its
    /// first batch here was just verified or added); kept until the transaction ends.
    pub fn note_txn_sequence(&mut self, producer_id: i64, sequence: u64) {
        if let Some(entry) = self.producers.get_mut(&producer_id)
            && entry.current_txn_first_offset.is_some()
            && entry.txn_sequence.is_none()
        {
            entry.txn_sequence = Some(sequence);
        }
    }

    /// Records an appended marker: ends the producer's transaction (if one is ongoing: a
    /// marker of an empty transaction changes nothing but the epochs) and returns it.
    pub fn record_marker(&mut self, m: Marker) -> Option<TxnRange> {
        let entry = self.entry(m.producer_id);
        if m.producer_epoch != entry.epoch {
            entry.fresh_epoch = true;
        }
        entry.set_epoch(m.producer_epoch);
        entry.coordinator_epoch = m.coordinator_epoch;
        entry.last_timestamp = m.timestamp;
        entry.last_offset = m.offset;
        entry.txn_sequence = None;
        let first_offset = entry.current_txn_first_offset.take()?;
        self.ongoing.remove(&first_offset);
        let range = TxnRange {
            producer_id: m.producer_id,
            first_offset,
            last_offset: m.offset,
        };
        self.unreplicated.push_back(range);
        if !m.commit {
            let last_stable_offset = self
                .ongoing
                .keys()
                .next()
                .copied()
                .unwrap_or(m.offset + 1)
                .min(m.offset + 1);
            self.aborted.push_back(AbortedTxn {
                range,
                last_stable_offset,
            });
            self.bound_aborted_cache();
        }
        Some(range)
    }

    /// Every aborted transaction whose marker is at or above this is in memory; below it a
    /// fetch reads the `.txnindex` files.
    pub fn aborted_floor(&self) -> i64 {
        self.aborted_floor
    }

    /// After a load from a snapshot at `offset` (or a full scan from the log start, with
    /// the files cut there): the aborted transactions below `offset` are in the files, those
    /// at or above it (the scan's) in memory only.
    pub fn set_aborted_flushed(&mut self, offset: i64) {
        self.aborted_floor = offset;
        self.aborted_unflushed_from = offset;
    }

    /// The aborted transactions with a marker below `offset` not yet in a `.txnindex` file,
    /// as the engine stores them (for a snapshot at `offset`).
    pub fn unflushed_aborted(&self, offset: i64) -> Vec<engine::AbortedTxn> {
        let from = self
            .aborted
            .partition_point(|a| a.range.last_offset < self.aborted_unflushed_from);
        self.aborted
            .range(from..)
            .take_while(|a| a.range.last_offset < offset)
            .map(|a| engine::AbortedTxn {
                producer_id: a.range.producer_id,
                first_offset: a.range.first_offset,
                last_offset: a.range.last_offset,
                last_stable_offset: a.last_stable_offset,
            })
            .collect()
    }

    /// How many aborted transactions are in no `.txnindex` file yet.
    pub fn unflushed_aborted_count(&self) -> usize {
        let from = self
            .aborted
            .partition_point(|a| a.range.last_offset < self.aborted_unflushed_from);
        self.aborted.len() - from
    }

    /// The aborted transactions below `offset` are now in the files (a snapshot at `offset`
    /// was written): the cache may let the oldest go.
    pub fn aborted_flushed_below(&mut self, offset: i64) {
        self.aborted_unflushed_from = self.aborted_unflushed_from.max(offset);
        self.bound_aborted_cache();
    }

    /// Drops the oldest cached aborted transactions beyond `ABORTED_TRANSACTIONS_CACHED`
    /// that are in the files.
    fn bound_aborted_cache(&mut self) {
        while self.aborted.len() > ABORTED_TRANSACTIONS_CACHED
            && let Some(oldest) = self.aborted.front()
            && oldest.range.last_offset < self.aborted_unflushed_from
        {
            self.aborted_floor = oldest.range.last_offset + 1;
            self.aborted.pop_front();
        }
    }

    /// Drops the completed transactions whose marker is below `high_watermark` (replicated:
    /// they no longer hold the last stable offset back). Kafka's `onHighWatermarkUpdated`.
    pub fn note_high_watermark(&mut self, high_watermark: i64) {
        while self
            .unreplicated
            .front()
            .is_some_and(|t| t.last_offset < high_watermark)
        {
            self.unreplicated.pop_front();
        }
    }

    /// The first offset of the earliest transaction that is ongoing or whose marker is not
    /// yet replicated (Kafka's `firstUnstableOffset`), given the high watermark.
    pub fn first_unstable_offset(&mut self, high_watermark: i64) -> Option<i64> {
        self.note_high_watermark(high_watermark);
        let ongoing = self.ongoing.keys().next().copied();
        let completed = self.unreplicated.iter().map(|t| t.first_offset).min();
        match (ongoing, completed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Appends to `out` (producer id, first offset) of each aborted transaction that overlaps
    /// `[fetch_offset, upper_bound_offset)` (Kafka's `collectAbortedTxns`: last offset at or
    /// above the fetch offset, first offset below the upper bound), in marker order.
    pub fn aborted_between(
        &self,
        fetch_offset: i64,
        upper_bound_offset: i64,
        out: &mut Vec<(i64, i64)>,
    ) {
        let from = self
            .aborted
            .partition_point(|a| a.range.last_offset < fetch_offset);
        for a in self.aborted.range(from..) {
            if a.range.first_offset < upper_bound_offset {
                out.push((a.range.producer_id, a.range.first_offset));
            }
            // Every later transaction starts at or above this one's last stable offset.
            if a.last_stable_offset >= upper_bound_offset {
                return;
            }
        }
    }

    /// Whether the cleaner must keep `header`'s batch for this producer's state (Kafka's
    /// `lastRecordsOfActiveProducers`): the batch holding its last data offset (its last
    /// sequence), or, with no data batch of its epoch left, its marker of that epoch.
    pub fn is_last_write(&self, header: &engine::batch::BatchHeader) -> bool {
        let Some(e) = self.producers.get(&header.producer_id()) else {
            return false;
        };
        match e.batches.back() {
            Some(b) => !header.is_control() && b.last_offset == header.last_offset(),
            None => header.is_control() && header.producer_epoch() == e.epoch,
        }
    }

    /// The producers, for DescribeProducers.
    pub fn producers(&self) -> impl Iterator<Item = ProducerView> + '_ {
        self.producers.iter().map(|(&id, e)| ProducerView {
            producer_id: id,
            producer_epoch: e.epoch,
            last_sequence: e.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq),
            last_timestamp: e.last_timestamp,
            coordinator_epoch: e.coordinator_epoch,
            current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
        })
    }

    /// Forgets producers whose last write is below `log_start_offset` (retention,
    /// DeleteRecords), unless their transaction is ongoing, and aborted transactions that end
    /// below it.
    pub fn trim_before(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, e| {
            e.last_offset >= log_start_offset || e.current_txn_first_offset.is_some()
        });
        while self
            .aborted
            .front()
            .is_some_and(|a| a.range.last_offset < log_start_offset)
        {
            self.aborted.pop_front();
        }
    }

    /// Whether transaction state was derived from offsets at or above `offset` (then a failed
    /// append needs a rebuild from the log, not `forget_from`).
    pub fn has_transactions_from(&self, offset: i64) -> bool {
        self.ongoing.range(offset..).next().is_some()
            || self
                .unreplicated
                .back()
                .is_some_and(|t| t.last_offset >= offset)
            || self
                .aborted
                .back()
                .is_some_and(|a| a.range.last_offset >= offset)
    }

    /// Forgets batches at or above `offset`, which never reached the log (a failed append).
    /// A producer left with no batch is forgotten: its next batch is accepted at any
    /// sequence, as after retention. Transaction state is not touched: see
    /// `has_transactions_from`.
    pub fn forget_from(&mut self, offset: i64) {
        self.producers.retain(|_, e| {
            while e.batches.back().is_some_and(|b| b.last_offset >= offset) {
                e.batches.pop_back();
            }
            if let Some(last) = e.batches.back() {
                e.last_offset = last.last_offset;
            }
            !e.batches.is_empty() || e.current_txn_first_offset.is_some()
        });
    }

    /// The entry of `producer_id`, made room for if new.
    fn entry(&mut self, producer_id: i64) -> &mut ProducerEntry {
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.evict_oldest();
        }
        self.producers
            .entry(producer_id)
            .or_insert_with(ProducerEntry::new)
    }

    /// Forgets the least recently written producer without an ongoing transaction (if all
    /// have one, none: the table then exceeds the limit by at most ONGOING_TRANSACTIONS_MAX
    /// entries that the coordinator's timeouts end).
    fn evict_oldest(&mut self) {
        if let Some((&id, _)) = self
            .producers
            .iter()
            .filter(|(_, e)| e.current_txn_first_offset.is_none())
            .min_by_key(|(_, e)| e.last_offset)
        {
            self.producers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMeta {
        BatchMeta {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq - first_seq),
            max_timestamp: 0,
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check(7, 0, 0, 4, false), SequenceCheck::Append);
        t.record(7, 0, meta(0, 4, 100), false);
        assert_eq!(t.check(7, 0, 5, 9, false), SequenceCheck::Append);
        t.record(7, 0, meta(5, 9, 105), false);
        assert_eq!(
            t.check(7, 0, 0, 4, false),
            SequenceCheck::Duplicate(meta(0, 4, 100))
        );
        assert_eq!(
            t.check(7, 0, 11, 12, false),
            SequenceCheck::OutOfOrderSequence {
                expected: 10,
                got: 11
            }
        );
        assert!(matches!(
            t.check(7, -1, 10, 12, false),
            SequenceCheck::InvalidProducerEpoch { .. }
        ));
        assert_eq!(
            t.check(7, 1, 3, 4, false),
            SequenceCheck::OutOfOrderSequence {
                expected: 0,
                got: 3
            }
        );
        assert_eq!(t.check(7, 1, 0, 4, false), SequenceCheck::Append);
        // Only the last five batches are remembered.
        for i in 0..6 {
            t.record(
                7,
                0,
                meta(10 + i * 2, 11 + i * 2, 200 + i64::from(i) * 2),
                false,
            );
        }
        assert_eq!(
            t.check(7, 0, 10, 11, false),
            SequenceCheck::OutOfOrderSequence {
                expected: 22,
                got: 10
            }
        );
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
    }

    #[test]
    fn batches_that_never_reached_the_log_are_forgotten() {
        let mut t = ProducerStateTable::default();
        t.record(1, 0, meta(0, 4, 10), false);
        t.record(1, 0, meta(5, 9, 15), false);
        t.record(2, 3, meta(0, 0, 20), false);
        t.forget_from(15);
        // Producer 1 continues after its first batch; its retry of the second is appended.
        assert_eq!(t.check(1, 0, 5, 9, false), SequenceCheck::Append);
        assert_eq!(
            t.check(1, 0, 0, 4, false),
            SequenceCheck::Duplicate(meta(0, 4, 10))
        );
        // Producer 2 has nothing left in the log.
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(2, 3, 0, 0, false), SequenceCheck::Append);
    }

    #[test]
    fn trimmed_producer_accepts_any_sequence() {
        let mut t = ProducerStateTable::default();
        t.record(1, 0, meta(0, 0, 5), false);
        t.trim_before(10);
        assert_eq!(t.check(1, 0, 42, 42, false), SequenceCheck::Append);
    }

    /// The fields of a header not validated yet (any delta, even negative) give a value,
    /// never an overflow panic (request_decode fuzz target,
    /// fuzz/regressions/request_decode/negative-delta-sequence-overflow-*).
    #[test]
    fn last_sequence_of_an_unvalidated_header_does_not_overflow() {
        for base in [i32::MIN, -1, 0, 5, i32::MAX] {
            for delta in [i32::MIN, -5, -1] {
                let _ = last_sequence(base, delta);
            }
        }
        assert_eq!(last_sequence(10, 4), 14);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
    }

    fn txn_batch(first_offset: i64, last_offset: i64) -> BatchMeta {
        BatchMeta {
            first_seq: 0,
            last_seq: (last_offset - first_offset) as i32,
            first_offset,
            last_offset,
            max_timestamp: 0,
        }
    }

    fn marker(
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
        offset: i64,
    ) -> Marker {
        Marker {
            producer_id,
            producer_epoch: epoch,
            coordinator_epoch,
            commit,
            offset,
            timestamp: 0,
        }
    }

    /// Two producers' transactions hold the first unstable offset back until their markers
    /// are below the high watermark; the aborted one is listed, the committed one not.
    #[test]
    fn ongoing_committed_and_aborted_transactions() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check(1, 0, 0, 2, true), SequenceCheck::Append);
        t.record(1, 0, txn_batch(0, 2), true);
        t.record(2, 0, txn_batch(3, 4), true);
        // Producer 1's second batch continues its transaction.
        t.record(
            1,
            0,
            BatchMeta {
                first_seq: 3,
                last_seq: 3,
                ..txn_batch(5, 5)
            },
            true,
        );
        assert_eq!(t.ongoing_transactions(), 2);
        assert_eq!(t.first_unstable_offset(6), Some(0));
        assert_eq!(t.check_marker(1, 0, 0), MarkerCheck::Append);
        let committed = t.record_marker(marker(1, 0, 0, true, 6));
        assert_eq!(
            committed,
            Some(TxnRange {
                producer_id: 1,
                first_offset: 0,
                last_offset: 6
            })
        );
        // The commit marker is not replicated yet: still unstable from 0.
        assert_eq!(t.first_unstable_offset(6), Some(0));
        assert_eq!(t.first_unstable_offset(7), Some(3));
        t.record_marker(marker(2, 0, 0, false, 7));
        assert_eq!(t.first_unstable_offset(7), Some(3));
        assert_eq!(t.first_unstable_offset(8), None);
        assert_eq!(t.ongoing_transactions(), 0);
        let mut out = Vec::new();
        t.aborted_between(0, 8, &mut out);
        assert_eq!(out, vec![(2, 3)]);
        out.clear();
        t.aborted_between(8, 20, &mut out);
        assert!(out.is_empty(), "ends before the fetch offset");
        t.aborted_between(0, 3, &mut out);
        assert!(out.is_empty(), "starts at the upper bound");
        t.aborted_between(7, 8, &mut out);
        assert_eq!(out, vec![(2, 3)], "the marker itself is in range");
        // A marker of an empty transaction completes nothing.
        assert_eq!(t.record_marker(marker(1, 0, 0, false, 8)), None);
        // DescribeProducers' view.
        let mut views: Vec<_> = t.producers().collect();
        views.sort_by_key(|v| v.producer_id);
        assert_eq!(views[0].current_txn_start_offset, -1);
        assert_eq!(views[0].last_sequence, 3);
        assert_eq!(views[1].coordinator_epoch, 0);
    }

    /// Kafka's appendEndTxnMarker: an older producer epoch is refused, then an older
    /// coordinator epoch; a newer producer epoch (KIP-890 bumps it in the marker) becomes
    /// the producer's, fencing its older data.
    /// Transaction version 2: after a marker bumped the epoch, the epoch's first batch must
    /// be sequence 0 (a later in-flight batch waits for it, as in Kafka); a marker naming
    /// another transaction than the ongoing one (its sequence) is refused.
    #[test]
    fn a_bumped_epoch_starts_at_sequence_0_and_stale_markers_are_refused() {
        let mut t = ProducerStateTable::default();
        t.record(5, 3, txn_batch(0, 0), true);
        t.note_txn_sequence(5, 7);
        assert_eq!(
            t.check_marker_strict(5, 4, 0, true, Some(6)),
            MarkerCheck::StaleTransaction {
                ongoing: 7,
                marker: 6
            }
        );
        assert_eq!(
            t.check_marker_strict(5, 4, 0, true, Some(7)),
            MarkerCheck::Append
        );
        assert_eq!(
            t.check_marker_strict(5, 4, 0, true, None),
            MarkerCheck::Append
        );
        t.record_marker(marker(5, 4, 0, true, 1));
        assert!(matches!(
            t.check(5, 4, 5, 9, true),
            SequenceCheck::OutOfOrderSequence {
                expected: 0,
                got: 5
            }
        ));
        assert_eq!(t.check(5, 4, 0, 4, true), SequenceCheck::Append);
        t.record(
            5,
            4,
            BatchMeta {
                first_seq: 0,
                last_seq: 4,
                ..txn_batch(2, 6)
            },
            true,
        );
        assert_eq!(t.check(5, 4, 5, 9, true), SequenceCheck::Append);
        // The next transaction's sequence is noted afresh; with none noted nothing is refused.
        assert_eq!(
            t.check_marker_strict(5, 5, 0, true, Some(6)),
            MarkerCheck::Append
        );
    }

    #[test]
    fn marker_epochs_fence_zombies() {
        let mut t = ProducerStateTable::default();
        t.record(5, 3, txn_batch(0, 0), true);
        assert_eq!(
            t.check_marker(5, 2, 0),
            MarkerCheck::InvalidProducerEpoch { current: 3 }
        );
        t.record_marker(marker(5, 3, 4, false, 1));
        assert_eq!(
            t.check_marker(5, 3, 3),
            MarkerCheck::CoordinatorFenced { current: 4 }
        );
        assert_eq!(t.check_marker(5, 3, 4), MarkerCheck::Append);
        // Transaction version 2: the marker carries epoch 4.
        t.record(
            5,
            3,
            BatchMeta {
                first_seq: 1,
                last_seq: 1,
                ..txn_batch(2, 2)
            },
            true,
        );
        assert_eq!(t.check_marker(5, 4, 4), MarkerCheck::Append);
        t.record_marker(marker(5, 4, 4, true, 3));
        assert!(matches!(
            t.check(5, 3, 2, 2, true),
            SequenceCheck::InvalidProducerEpoch { current: 4 }
        ));
        assert_eq!(t.check(5, 4, 0, 0, true), SequenceCheck::Append);
    }

    #[test]
    fn transaction_state_rules() {
        let mut t = ProducerStateTable::default();
        t.record(1, 0, txn_batch(0, 0), true);
        // Non-transactional data during the transaction (Kafka: InvalidTxnStateException).
        assert_eq!(t.check(1, 0, 1, 1, false), SequenceCheck::InvalidTxnState);
        assert_eq!(t.check(1, 0, 1, 1, true), SequenceCheck::Append);
        // A coordinator's batch (NO_SEQUENCE) skips the sequence checks and the duplicate
        // cache, but is part of the producer's transaction.
        assert_eq!(
            t.check(9, 0, NO_SEQUENCE, NO_SEQUENCE, true),
            SequenceCheck::Append
        );
        let coordinator = BatchMeta {
            first_seq: NO_SEQUENCE,
            last_seq: NO_SEQUENCE,
            ..txn_batch(4, 4)
        };
        t.record(9, 0, coordinator, true);
        assert_eq!(
            t.check(9, 0, NO_SEQUENCE, NO_SEQUENCE, true),
            SequenceCheck::Append
        );
        t.record(
            9,
            0,
            BatchMeta {
                first_offset: 5,
                last_offset: 5,
                ..coordinator
            },
            true,
        );
        assert_eq!(t.first_unstable_offset(10), Some(0));
        t.record_marker(marker(1, 0, 0, true, 6));
        // A failed append of the marker needs a rebuild (`forget_from` keeps no markers).
        assert!(t.has_transactions_from(6));
        assert!(!t.has_transactions_from(7));
        assert_eq!(t.first_unstable_offset(10), Some(4));
        assert!(matches!(
            t.check(9, -1, NO_SEQUENCE, NO_SEQUENCE, true),
            SequenceCheck::InvalidProducerEpoch { .. }
        ));
    }

    #[test]
    fn ongoing_transactions_are_bounded_and_never_evicted() {
        let mut t = ProducerStateTable::default();
        for id in 0..ONGOING_TRANSACTIONS_MAX as i64 {
            t.record(id, 0, txn_batch(id, id), true);
        }
        let next = ONGOING_TRANSACTIONS_MAX as i64;
        assert_eq!(
            t.check(next, 0, 0, 0, true),
            SequenceCheck::TooManyTransactions
        );
        // Continuing one is fine, and so is non-transactional data from a new producer...
        assert_eq!(t.check(0, 0, 1, 1, true), SequenceCheck::Append);
        assert_eq!(t.check(next, 0, 0, 0, false), SequenceCheck::Append);
        // ...which finds no producer to evict: all are in a transaction.
        t.record(next, 0, txn_batch(next, next), false);
        assert_eq!(t.len(), ONGOING_TRANSACTIONS_MAX + 1);
        assert_eq!(t.first_unstable_offset(i64::MAX), Some(0));
        // Retention does not forget them either.
        t.trim_before(next);
        assert_eq!(t.ongoing_transactions(), ONGOING_TRANSACTIONS_MAX);
        t.record_marker(marker(0, 0, 0, true, next + 1));
        assert_eq!(t.check(next + 1, 0, 0, 0, true), SequenceCheck::Append);
    }

    #[test]
    fn aborted_cache_keeps_unwritten_ones_and_drops_only_written_ones() {
        let mut t = ProducerStateTable::default();
        let total = ABORTED_TRANSACTIONS_CACHED as i64 + 10;
        for i in 0..total {
            t.record(
                1,
                0,
                BatchMeta {
                    first_seq: i as i32,
                    last_seq: i as i32,
                    ..txn_batch(2 * i, 2 * i)
                },
                true,
            );
            t.record_marker(marker(1, 0, 0, false, 2 * i + 1));
            t.note_high_watermark(2 * i + 2);
        }
        // None is in a file yet: all stay, the cache reaches below everything.
        let mut out = Vec::new();
        t.aborted_between(0, i64::MAX, &mut out);
        assert_eq!(out.len() as i64, total);
        assert_eq!(t.aborted_floor(), 0);
        // The first 30 written to the files (a snapshot at 60): ten of them may go.
        let unwritten = t.unflushed_aborted(60);
        assert_eq!(unwritten.len(), 30);
        assert_eq!(
            unwritten[29],
            engine::AbortedTxn {
                producer_id: 1,
                first_offset: 58,
                last_offset: 59,
                last_stable_offset: 60
            }
        );
        t.aborted_flushed_below(60);
        assert_eq!(t.unflushed_aborted(i64::MAX).len() as i64, total - 30);
        out.clear();
        t.aborted_between(0, i64::MAX, &mut out);
        assert_eq!(out.len(), ABORTED_TRANSACTIONS_CACHED);
        assert_eq!(
            out[0],
            (1, 20),
            "the ten oldest left memory (they are in the files)"
        );
        assert_eq!(t.aborted_floor(), 20, "below it a fetch reads the files");
        t.trim_before(2 * total - 3);
        out.clear();
        t.aborted_between(0, i64::MAX, &mut out);
        assert_eq!(out, vec![(1, 2 * total - 4), (1, 2 * total - 2)]);
        assert_eq!(t.first_unstable_offset(2 * total), None);
    }
}
