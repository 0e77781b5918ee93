//! raft-rs's view of the quorum's storage: the in-memory log (raft-rs's `MemStorage`: entries
//! after the snapshot, hard state, voters) plus the latest snapshot with its data, which
//! `MemStorage` does not keep (its `snapshot()` builds an empty one at the commit index).
//!
//! Owns: answering raft-rs's `Storage` calls, and replacing the in-memory log by a snapshot
//! and the entries after it (`install`). Does not own: the files (`log_file`, `snapshot_file`;
//! the caller makes them durable before it installs what they hold).
//!
//! Invariant: `snapshot`'s metadata equals the `MemStorage`'s snapshot metadata (index, term,
//! voters), so `first_index() == snapshot index + 1` and `term(snapshot index)` answers.

use raft::eraftpb::{Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage as _, StorageError};

pub struct QuorumStorage {
    mem: MemStorage,
    /// The latest snapshot (index 0: none yet), data included: what a lagging voter is sent.
    snapshot: Snapshot,
}

impl QuorumStorage {
    pub fn new(mem: MemStorage) -> QuorumStorage {
        QuorumStorage {
            mem,
            snapshot: Snapshot::default(),
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn hard_state(&self) -> HardState {
        self.mem.rl().hard_state().clone()
    }

    /// The log's entries after `low - 1` (all of them from the first index on), for a rewrite.
    pub fn entries_from(&self, low: u64) -> Result<Vec<Entry>, raft::Error> {
        let last = self.mem.last_index()?;
        if low > last {
            return Ok(Vec::new());
        }
        self.mem
            .entries(low, last + 1, None, GetEntriesContext::empty(false))
    }

    /// Replaces the in-memory log by `snapshot` followed by `entries` (from its index + 1),
    /// with `hard_state`.
    pub fn install(
        &mut self,
        snapshot: Snapshot,
        entries: &[Entry],
        hard_state: HardState,
    ) -> Result<(), raft::Error> {
        let mut metadata_only = Snapshot::default();
        metadata_only.set_metadata(snapshot.get_metadata().clone());
        let mut core = self.mem.wl();
        core.apply_snapshot(metadata_only)?;
        core.append(entries)?;
        core.set_hardstate(hard_state);
        drop(core);
        self.snapshot = snapshot;
        Ok(())
    }

    pub fn append(&mut self, entries: &[Entry]) -> Result<(), raft::Error> {
        self.mem.wl().append(entries)
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.mem.wl().set_hardstate(hard_state);
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.mem.wl().mut_hard_state().set_commit(commit);
    }
}

impl raft::Storage for QuorumStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// The latest snapshot, data included. raft-rs asks only once entries it needs are
    /// compacted, so there is one; a request past it waits for the next compaction.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot_index();
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
