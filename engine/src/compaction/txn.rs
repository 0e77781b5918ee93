//! Transactions as the cleaner meets them (Kafka's `CleanedTransactionMetadata`): which data
//! batches belong to aborted transactions (removed), which markers may go, and the aborted
//! transactions the cleaned segment's `.txnindex` must list.
//!
//! Owns: the walk-order bookkeeping. Fed the aborted transactions of the cleaned range (from
//! the `.txnindex` files, complete below the newest producer snapshot, which bounds the
//! cleaning) and every batch header in offset order, across the groups of one round.
//! Invariants (Kafka's): an ABORT marker stays while any batch of its transaction was seen
//! in this round (and its entry is then written to the cleaned index); a COMMIT marker stays
//! while any batch of its transaction was seen; a marker that may go is still kept until its
//! batch's delete horizon passes (the caller's tombstone rule).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::txn_index::AbortedTxn;

use super::records::ControlType;

#[derive(Default)]
pub(crate) struct CleanedTxns {
    /// Aborted transactions not yet reached, by first offset.
    pending: BTreeMap<(i64, i64), AbortedTxn>,
    /// Producers inside an aborted transaction: the transaction, and whether a batch of it
    /// was seen.
    aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers inside a committed (not aborted) transaction with a batch seen.
    committed: HashSet<i64>,
}

impl CleanedTxns {
    pub(crate) fn new(aborted: &[AbortedTxn]) -> CleanedTxns {
        CleanedTxns {
            pending: aborted
                .iter()
                .map(|t| ((t.first_offset, t.producer_id), *t))
                .collect(),
            ..CleanedTxns::default()
        }
    }

    fn reach(&mut self, offset: i64) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > offset {
                break;
            }
            let t = entry.remove();
            self.aborted.entry(t.producer_id).or_insert((t, false));
        }
    }

    /// The bookkeeping of any batch when only the data side matters (the map pass): true if
    /// it is a data batch of an aborted transaction.
    pub(crate) fn on_batch(&mut self, batch: &[u8], header: &crate::batch::BatchHeader) -> bool {
        if header.is_control() {
            let control = super::records::control_type(batch, header);
            self.on_control_batch(
                header.producer_id(),
                control,
                header.last_offset(),
                &mut Vec::new(),
            );
            return false;
        }
        self.on_data_batch(
            header.producer_id(),
            header.is_transactional(),
            header.last_offset(),
        )
    }

    /// A data batch: true if it belongs to an aborted transaction (its records may go).
    pub(crate) fn on_data_batch(
        &mut self,
        producer_id: i64,
        transactional: bool,
        last_offset: i64,
    ) -> bool {
        self.reach(last_offset);
        if !transactional {
            return false;
        }
        match self.aborted.get_mut(&producer_id) {
            Some((_, seen)) => {
                *seen = true;
                true
            }
            None => {
                self.committed.insert(producer_id);
                false
            }
        }
    }

    /// A control batch: true if the marker may go (no batch of its transaction is left).
    /// `retained_abort` receives the aborted transaction of an ABORT marker that stays.
    pub(crate) fn on_control_batch(
        &mut self,
        producer_id: i64,
        control: Option<ControlType>,
        last_offset: i64,
        retained_abort: &mut Vec<AbortedTxn>,
    ) -> bool {
        self.reach(last_offset);
        match control {
            Some(ControlType::Abort) => match self.aborted.remove(&producer_id) {
                Some((t, true)) => {
                    retained_abort.push(t);
                    false
                }
                _ => true,
            },
            Some(ControlType::Commit) => !self.committed.remove(&producer_id),
            Some(ControlType::Other) => false,
            // An empty control batch was cleaned before: it may go.
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aborted(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn aborted_data_goes_markers_follow_their_data() {
        let mut t = CleanedTxns::new(&[aborted(7, 10, 12)]);
        let mut kept = Vec::new();
        // Committed transaction of producer 8: data then COMMIT; the marker stays.
        assert!(!t.on_data_batch(8, true, 5));
        assert!(!t.on_control_batch(8, Some(ControlType::Commit), 6, &mut kept));
        // Aborted transaction of producer 7: its data may go, its marker stays this round.
        assert!(t.on_data_batch(7, true, 11));
        assert!(!t.on_control_batch(7, Some(ControlType::Abort), 12, &mut kept));
        assert_eq!(kept, [aborted(7, 10, 12)]);

        // Next round: the data is gone, so both markers may go.
        let mut t = CleanedTxns::new(&[aborted(7, 10, 12)]);
        kept.clear();
        assert!(t.on_control_batch(8, Some(ControlType::Commit), 6, &mut kept));
        assert!(t.on_control_batch(7, Some(ControlType::Abort), 12, &mut kept));
        assert!(kept.is_empty());
    }
}
