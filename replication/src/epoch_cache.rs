//! The leader epoch cache: for each leader epoch, the first offset written in it (Kafka's
//! `leader-epoch-checkpoint`, KIP-101).
//!
//! Owns: lookups for OffsetForLeaderEpoch (leader side) and for follower truncation (KIP-279),
//! and keeping the cache consistent with the log on appends and truncation.
//! Does not own: persistence. The broker rebuilds it from batch headers at start-up
//! (`engine::Log::scan_headers`); an epoch that wrote no batch is simply absent after a restart,
//! which changes no lookup result.
//! Invariants: epochs strictly increase and start offsets strictly increase along the cache.

use crate::types::LeaderEpoch;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(LeaderEpoch, i64)>,
}

impl EpochCache {
    /// Builds a cache from `(epoch, start_offset)` entries in log order (e.g. from a header
    /// scan). Entries that do not start a newer epoch are ignored.
    pub fn from_entries(entries: impl IntoIterator<Item = (LeaderEpoch, i64)>) -> Self {
        let mut cache = EpochCache::default();
        for (epoch, start_offset) in entries {
            cache.assign(epoch, start_offset);
        }
        cache
    }

    pub fn entries(&self) -> &[(LeaderEpoch, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    pub fn first_start_offset(&self) -> Option<i64> {
        self.entries.first().map(|&(_, start)| start)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest epoch.
    /// Later entries that start at or after `start_offset` wrote nothing and are dropped.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: i64) {
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return;
        }
        while self
            .entries
            .last()
            .is_some_and(|&(_, start)| start >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push((epoch, start_offset));
    }

    /// After truncating the log to `offset`: epochs that start at or above it are gone.
    pub fn truncate_from(&mut self, offset: i64) {
        while self
            .entries
            .last()
            .is_some_and(|&(_, start)| start >= offset)
        {
            self.entries.pop();
        }
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: the largest epoch <= `requested` and the
    /// offset where it ends, given this log's end offset.
    /// - `requested` is the latest epoch: (requested, log end offset).
    /// - no epoch above `requested`: undefined (`None`, -1).
    /// - no epoch at or below `requested`: (requested, start of the first epoch above).
    /// - otherwise: (the floor epoch, start of the first epoch above `requested`).
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end_offset: i64,
    ) -> (Option<LeaderEpoch>, i64) {
        if self.latest_epoch() == Some(requested) {
            return (Some(requested), log_end_offset);
        }
        let Some(&(_, higher_start)) = self.entries.iter().find(|&&(epoch, _)| epoch > requested)
        else {
            return (None, -1);
        };
        match self
            .entries
            .iter()
            .rev()
            .find(|&&(epoch, _)| epoch <= requested)
        {
            Some(&(floor, _)) => (Some(floor), higher_start),
            None => (Some(requested), higher_start),
        }
    }

    /// A follower's own end for `epoch`: the largest epoch <= `epoch` it has and where that
    /// ends in its log, or `None` if all its epochs are newer.
    pub fn floor_end_offset(
        &self,
        epoch: LeaderEpoch,
        log_end_offset: i64,
    ) -> Option<(LeaderEpoch, i64)> {
        let index = self.entries.iter().rposition(|&(e, _)| e <= epoch)?;
        let end = self
            .entries
            .get(index + 1)
            .map_or(log_end_offset, |&(_, start)| start);
        Some((self.entries[index].0, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache::from_entries(entries.iter().map(|&(e, s)| (LeaderEpoch(e), s)))
    }

    #[test]
    fn assign_ignores_old_epochs_and_drops_empty_ones() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        c.assign(LeaderEpoch(2), 20);
        assert_eq!(c.entries(), cache(&[(1, 0), (3, 10)]).entries());
        c.assign(LeaderEpoch(4), 10); // epoch 3 wrote nothing
        assert_eq!(c.entries(), cache(&[(1, 0), (4, 10)]).entries());
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(
            c.end_offset_for(LeaderEpoch(5), 30),
            (Some(LeaderEpoch(5)), 30)
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(3), 30),
            (Some(LeaderEpoch(3)), 20)
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(4), 30),
            (Some(LeaderEpoch(3)), 20)
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(0), 30),
            (Some(LeaderEpoch(0)), 0)
        );
        assert_eq!(c.end_offset_for(LeaderEpoch(6), 30), (None, -1));
    }

    #[test]
    fn floor_end_offset_and_truncation() {
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(
            c.floor_end_offset(LeaderEpoch(4), 30),
            Some((LeaderEpoch(3), 20))
        );
        assert_eq!(
            c.floor_end_offset(LeaderEpoch(9), 30),
            Some((LeaderEpoch(5), 30))
        );
        assert_eq!(c.floor_end_offset(LeaderEpoch(0), 30), None);
        c.truncate_from(15);
        assert_eq!(c.entries(), cache(&[(1, 0), (3, 10)]).entries());
        c.truncate_from(10);
        assert_eq!(c.latest_epoch(), Some(LeaderEpoch(1)));
    }
}
