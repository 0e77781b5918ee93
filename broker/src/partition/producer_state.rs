//! Idempotent-producer state of one partition: per producer id, the current epoch and the
//! sequence ranges (with their offsets) of the last `BATCHES_KEPT` batches.
//!
//! Follows Kafka's ProducerStateManager: a duplicate of a cached batch is answered with the
//! original offsets; an older epoch is INVALID_PRODUCER_EPOCH; a gap is
//! OUT_OF_ORDER_SEQUENCE_NUMBER; a producer with no state left (never seen, or trimmed by
//! retention) is accepted at any sequence. Pure: no I/O, rebuilt from batch headers.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer for duplicate detection (Kafka: 5, the max in-flight).
pub const BATCHES_KEPT: usize = 5;
/// Producers tracked per partition before the oldest-written is forgotten.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// Log offset of the producer's last write, used to evict the least recent.
    last_offset: i64,
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
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
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

    /// Checks a batch from `producer_id` before it is appended.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> SequenceCheck {
        let Some(entry) = self.producers.get(&producer_id) else {
            return SequenceCheck::Append;
        };
        if epoch < entry.epoch {
            return SequenceCheck::InvalidProducerEpoch {
                current: entry.epoch,
            };
        }
        if epoch > entry.epoch {
            // A new epoch starts at sequence 0.
            if first_seq != 0 {
                return SequenceCheck::OutOfOrderSequence {
                    expected: 0,
                    got: first_seq,
                };
            }
            return SequenceCheck::Append;
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate(*b);
        }
        match entry.batches.back() {
            Some(last) if !in_sequence(last.last_seq, first_seq) => {
                SequenceCheck::OutOfOrderSequence {
                    expected: last.last_seq.wrapping_add(1),
                    got: first_seq,
                }
            }
            _ => SequenceCheck::Append,
        }
    }

    /// Records an appended batch (also used when rebuilding from the log).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta) {
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.evict_oldest();
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_offset = batch.last_offset;
    }

    /// Forgets producers whose last write is below `log_start_offset` (retention, DeleteRecords).
    pub fn trim_before(&mut self, log_start_offset: i64) {
        self.producers
            .retain(|_, e| e.last_offset >= log_start_offset);
    }

    /// Forgets batches at or above `offset`, which never reached the log (a failed append).
    /// A producer left with no batch is forgotten: its next batch is accepted at any
    /// sequence, as after retention.
    pub fn forget_from(&mut self, offset: i64) {
        self.producers.retain(|_, e| {
            while e.batches.back().is_some_and(|b| b.last_offset >= offset) {
                e.batches.pop_back();
            }
            if let Some(last) = e.batches.back() {
                e.last_offset = last.last_offset;
            }
            !e.batches.is_empty()
        });
    }

    fn evict_oldest(&mut self) {
        if let Some((&id, _)) = self.producers.iter().min_by_key(|(_, e)| e.last_offset) {
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
        assert_eq!(t.check(7, 0, 0, 4), SequenceCheck::Append);
        t.record(7, 0, meta(0, 4, 100));
        assert_eq!(t.check(7, 0, 5, 9), SequenceCheck::Append);
        t.record(7, 0, meta(5, 9, 105));
        assert_eq!(
            t.check(7, 0, 0, 4),
            SequenceCheck::Duplicate(meta(0, 4, 100))
        );
        assert_eq!(
            t.check(7, 0, 11, 12),
            SequenceCheck::OutOfOrderSequence {
                expected: 10,
                got: 11
            }
        );
        assert!(matches!(
            t.check(7, -1, 10, 12),
            SequenceCheck::InvalidProducerEpoch { .. }
        ));
        assert_eq!(
            t.check(7, 1, 3, 4),
            SequenceCheck::OutOfOrderSequence {
                expected: 0,
                got: 3
            }
        );
        assert_eq!(t.check(7, 1, 0, 4), SequenceCheck::Append);
        // Only the last five batches are remembered.
        for i in 0..6 {
            t.record(7, 0, meta(10 + i * 2, 11 + i * 2, 200 + i64::from(i) * 2));
        }
        assert_eq!(
            t.check(7, 0, 10, 11),
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
        t.record(1, 0, meta(0, 4, 10));
        t.record(1, 0, meta(5, 9, 15));
        t.record(2, 3, meta(0, 0, 20));
        t.forget_from(15);
        // Producer 1 continues after its first batch; its retry of the second is appended.
        assert_eq!(t.check(1, 0, 5, 9), SequenceCheck::Append);
        assert_eq!(
            t.check(1, 0, 0, 4),
            SequenceCheck::Duplicate(meta(0, 4, 10))
        );
        // Producer 2 has nothing left in the log.
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(2, 3, 0, 0), SequenceCheck::Append);
    }

    #[test]
    fn trimmed_producer_accepts_any_sequence() {
        let mut t = ProducerStateTable::default();
        t.record(1, 0, meta(0, 0, 5));
        t.trim_before(10);
        assert_eq!(t.check(1, 0, 42, 42), SequenceCheck::Append);
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
}
