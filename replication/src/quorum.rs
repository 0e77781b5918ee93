//! The metadata quorum: a sans-IO wrapper around raft-rs (`raft` 0.7) whose log holds opaque
//! entries (the broker puts its controller inputs there), persisted in a log file after a
//! snapshot of the caller's state machine.
//!
//! Owns: turning raft-rs's `Ready` cycle into `step(now_ms, input) -> actions`, persisting the
//! log and hard state (`log_file`: `dir/quorum.log`, synced before anything that depends on it
//! leaves the node), the snapshot (`snapshot_file`: `dir/quorum.snapshot`), compaction
//! (`compact`: the caller hands its state, the log is cut before it), replaying both on
//! `open`, sending a snapshot to a voter whose next entries were compacted away and
//! installing one received, and the wire encoding of raft messages.
//! Does not own: the transport (the caller sends `QuorumAction::Send` over its rpc listener and
//! feeds what arrives to `step`), the meaning of entries and snapshots (the caller's state
//! machine), when to compact (the caller), time (`now_ms` is an input), membership changes (the
//! voters are fixed by `open`'s argument; a snapshot records them and `open` refuses others).
//!
//! Invariants:
//! - Entries and hard state are written and `sync_data`'d before this step's persisted
//!   messages are returned and before raft-rs's `advance` (raft-rs's Ready rules); so a
//!   vote or an append acknowledgement never leaves the node before it is durable. A
//!   received snapshot is durable (file synced, renamed, directory synced) before the log is
//!   rewritten past it and before its acknowledgement leaves.
//! - Per `open`, the caller is given its state machine from scratch: first a `Restore` of the
//!   snapshot if there is one (its index, its data), then every committed entry after it as
//!   `Applied`, once, in log order. A snapshot received from the leader later arrives as
//!   another `Restore` (replacing the state), followed by the entries after it. Raft's own
//!   empty entries are not delivered (so indexes have gaps).
//! - On disk there is always a usable pair (snapshot at S, log continuing at some index <= S
//!   or one whose entry at S is the snapshot's): the snapshot is written before the log is cut
//!   past it, each by an atomic rename. `open` refuses (`Corrupt`) a log that starts after its
//!   snapshot, and a damaged snapshot.
//! - Deterministic: each node's election timeout is fixed by its position among the voters
//!   (raft-rs would otherwise draw it from a thread-local RNG), and nothing reads a clock.
//!
//! Back of the envelope: the broker proposes ~5 entries/s (a heartbeat per second from each
//! of 3 brokers plus a Tick each second) of ~100 bytes. On disk an entry costs ~150 bytes (148
//! measured by the tests: record header, kind, protobuf framing, and the hard-state or commit
//! record of its commit): ~750 B/s, ~65 MB a day without compaction; in memory a 104-byte
//! `Entry` plus its data. With `compact` every ~10_000 entries (~30 min at that rate) the log
//! stays under ~1.5 MB and ~2 MB of memory; a compaction writes the snapshot (~200 bytes per
//! partition: ~2 MB for 10_000 partitions) plus the entries after it, with three syncs (file,
//! log, directory twice). A voter that was away longer than that catches up from the snapshot
//! in one message (at most `SNAPSHOT_DATA_BYTES_MAX`). Syncs otherwise: one `fdatasync` per
//! Ready that carries entries or a new term/vote: ~5/s on each voter at that load.
//!
//! Compiled only with the `raft-quorum` feature: raft-rs and its protobuf code generation cost
//! ~40 s of CPU on a cold build (see docs/internals/replication.md), which the replication
//! core and its simulator do not need.

mod error;
mod log_file;
mod snapshot_file;
mod storage;

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage as _};

pub use error::QuorumError;
pub use log_file::{FORMAT_VERSION, LOG_FILE_NAME, LOG_TMP_FILE_NAME, RECORD_BYTES_MAX, Recovery};
/// raft-rs's message, re-exported so the broker needs no `raft` dependency of its own.
pub use raft::eraftpb::Message as RaftMessage;
pub use raft::eraftpb::MessageType as RaftMessageType;
pub use snapshot_file::{SNAPSHOT_DATA_BYTES_MAX, SNAPSHOT_FILE_NAME, SNAPSHOT_TMP_FILE_NAME};

use crate::types::NodeId;
use log_file::{LogFile, Replayed};
use storage::QuorumStorage;

/// One raft tick per this many milliseconds of `now_ms`. Call `step(now_ms, Tick)` at least
/// this often: missed ticks are caught up in a burst, which can start an election at once.
pub const TICK_MS: i64 = 100;
/// Raft's election timeout in ticks (1 s); a node's own timeout adds `2 * its position`.
pub const ELECTION_TICKS: usize = 10;
/// Leader heartbeats every 2 ticks (200 ms).
pub const HEARTBEAT_TICKS: usize = 2;
const _: () = assert!(HEARTBEAT_TICKS < ELECTION_TICKS);
/// At most this many missed ticks are run in one step (more than any election timeout, so a
/// stalled caller still times out elections; fewer than a clock jump of years would cost).
pub const TICKS_PER_STEP_MAX: i64 = 100;
const _: () = assert!(TICKS_PER_STEP_MAX > 4 * ELECTION_TICKS as i64);

/// `VotersChanged` unless `snapshot` records exactly `voters` (in any order).
fn check_snapshot_voters(snapshot: &Snapshot, voters: &[NodeId]) -> Result<(), QuorumError> {
    let mut recorded = snapshot
        .get_metadata()
        .get_conf_state()
        .get_voters()
        .to_vec();
    recorded.sort_unstable();
    let mut expected: Vec<u64> = voters.iter().map(|&v| raft_id(v)).collect();
    expected.sort_unstable();
    if recorded == expected {
        return Ok(());
    }
    Err(QuorumError::VotersChanged {
        snapshot: recorded
            .into_iter()
            .filter(|&id| id > 0)
            .map(node_of)
            .collect(),
        voters: voters.to_vec(),
    })
}

/// CRC32C (Castagnoli) of `bytes`: the quorum files' record checksums.
fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// The largest proposal (entry payload).
pub const PROPOSAL_BYTES_MAX: usize = 1 << 20;
/// raft-rs's `max_size_per_msg`: an append message carries entries up to this many bytes (or
/// one entry, whatever its size), so a lagging voter catches up in large steps.
pub const MESSAGE_ENTRIES_BYTES_MAX: usize = 1 << 20;
/// The largest encoded raft message `decode_message` accepts; size the transport's frames by it
/// (the broker's rpc frames allow 64 MiB). A snapshot message is the largest.
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// raft-rs's `max_uncommitted_size`: proposals are dropped while this many payload bytes wait
/// for a majority (followers away), instead of growing memory without bound.
pub const UNCOMMITTED_BYTES_MAX: usize = 64 << 20;
/// Bytes a message or record adds around its entries (header fields, protobuf framing).
const FRAMING_BYTES_MAX: usize = 64 << 10;
const _: () = assert!(
    PROPOSAL_BYTES_MAX + MESSAGE_ENTRIES_BYTES_MAX + FRAMING_BYTES_MAX <= MESSAGE_BYTES_MAX
);
const _: () = assert!(PROPOSAL_BYTES_MAX + FRAMING_BYTES_MAX <= RECORD_BYTES_MAX as usize);
const _: () = assert!(MESSAGE_ENTRIES_BYTES_MAX <= UNCOMMITTED_BYTES_MAX);
const _: () = assert!(SNAPSHOT_DATA_BYTES_MAX + FRAMING_BYTES_MAX <= MESSAGE_BYTES_MAX);

#[derive(Debug)]
pub enum QuorumInput {
    /// Time passed (`now_ms` in `step` says how much).
    Tick,
    /// A message from another voter (see `decode_message`).
    Message(RaftMessage),
    /// Append these bytes to the log (leader only; 1..=PROPOSAL_BYTES_MAX bytes).
    Propose(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum QuorumAction {
    /// Send to the voter `to` (see `encode_message`). Dropping it is allowed: raft retries.
    Send { to: NodeId, message: RaftMessage },
    /// An entry committed, at this log index: apply it to the state machine.
    Applied { index: u64, data: Vec<u8> },
    /// Replace the state machine with `data`, the state after applying everything through
    /// `index` (from this node's own snapshot at open, or one received from the leader).
    /// Entries after it follow as Applied.
    Restore { index: u64, data: Vec<u8> },
}

/// Raft ids are non-zero u64s; node ids start at 0.
pub fn raft_id(node: NodeId) -> u64 {
    u64::try_from(node.0).expect("node ids are not negative") + 1
}

pub fn node_of(raft_id: u64) -> NodeId {
    assert!(raft_id > 0, "raft id 0 is raft-rs's 'none'");
    NodeId(i32::try_from(raft_id - 1).expect("raft ids come from raft_id"))
}

/// A raft message's wire form (protobuf, as raft-rs defines it).
pub fn encode_message(message: &RaftMessage) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("proto3 messages have no required fields to miss")
}

/// The inverse of `encode_message`; an error, never a panic, on any bytes.
pub fn decode_message(bytes: &[u8]) -> Result<RaftMessage, QuorumError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(QuorumError::MessageTooLarge {
            bytes: bytes.len(),
            max: MESSAGE_BYTES_MAX,
        });
    }
    RaftMessage::parse_from_bytes(bytes).map_err(QuorumError::Decode)
}

pub struct QuorumNode {
    node: NodeId,
    voters: Vec<NodeId>,
    dir: PathBuf,
    raw: RawNode<QuorumStorage>,
    log: LogFile,
    recovery: Recovery,
    /// The snapshot found by `open`, delivered as `Restore` by the first `step`.
    restore_at_open: Option<(u64, Vec<u8>)>,
    last_tick_ms: i64,
    /// A write or sync failed: what is on disk is unknown, so nothing more may happen.
    failed: bool,
}

impl QuorumNode {
    /// Opens (or creates) the quorum's files in `dir`, replaying the snapshot, the persisted
    /// log and hard state. The first `step` delivers `QuorumAction::Restore` of the snapshot
    /// (if there is one), then it and the following steps deliver every committed entry after
    /// it (including ones committed before a restart) as `QuorumAction::Applied`, in order, so
    /// the caller rebuilds its state machine from scratch on each start. A torn log tail is cut
    /// (see `recovery`); a damaged snapshot fails with `Corrupt`. `voters` must be the same, in
    /// the same order, on every node and every start (the order fixes the election timeouts).
    pub fn open(
        node: NodeId,
        voters: &[NodeId],
        dir: &Path,
        now_ms: i64,
    ) -> Result<QuorumNode, QuorumError> {
        let position =
            voters
                .iter()
                .position(|&v| v == node)
                .ok_or_else(|| QuorumError::NotAVoter {
                    node,
                    voters: voters.to_vec(),
                })?;
        let (log, mut replayed) = LogFile::open(dir)?;
        let snapshot = snapshot_file::load(dir)?;
        let voter_ids: Vec<u64> = voters.iter().map(|&v| raft_id(v)).collect();
        if let Some(snapshot) = &snapshot {
            check_snapshot_voters(snapshot, voters)?;
        }
        continue_snapshot(log.path(), snapshot.as_ref(), &mut replayed)?;
        let entries = std::mem::take(&mut replayed.entries);
        let hard_state = replayed.hard_state.clone();
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        let config = Config {
            id: raft_id(node),
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            min_election_tick: ELECTION_TICKS + 2 * position,
            max_election_tick: ELECTION_TICKS + 2 * position + 1,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: MESSAGE_ENTRIES_BYTES_MAX as u64,
            max_uncommitted_size: UNCOMMITTED_BYTES_MAX as u64,
            applied: snapshot_index,
            ..Config::default()
        };
        config.validate().map_err(QuorumError::Raft)?;
        let conf_state = ConfState::from((voter_ids, []));
        let mut storage = QuorumStorage::new(MemStorage::new_with_conf_state(conf_state));
        let restore_at_open = match snapshot {
            Some(snapshot) => {
                let data = snapshot.data.to_vec();
                storage
                    .install(snapshot, &entries, hard_state)
                    .map_err(QuorumError::Raft)?;
                Some((snapshot_index, data))
            }
            None => {
                storage.append(&entries).map_err(QuorumError::Raft)?;
                storage.set_hard_state(hard_state);
                None
            }
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&config, storage, &logger).map_err(QuorumError::Raft)?;
        if voters.len() == 1 {
            // A quorum of one has nobody to wait for: lead now instead of after an
            // election timeout (the broker's start-up waits for its registration).
            raw.campaign().map_err(QuorumError::Raft)?;
        }
        Ok(QuorumNode {
            node,
            voters: voters.to_vec(),
            dir: dir.to_path_buf(),
            raw,
            log,
            recovery: replayed.recovery,
            restore_at_open,
            last_tick_ms: now_ms,
            failed: false,
        })
    }

    /// The caller's state after applying everything through `applied_index` (an index it was
    /// given by `Applied`/`Restore`) is `snapshot`. Persists it (`quorum.snapshot`: tmp file,
    /// `sync_data`, rename, directory sync), then drops the log's entries <= `applied_index`
    /// from memory and from `quorum.log` (rewritten atomically: only the entries after it).
    /// A call at or below the current snapshot index does nothing. Costs one write of
    /// `snapshot` and of the entries after `applied_index`, and three syncs.
    pub fn compact(&mut self, applied_index: u64, snapshot: Vec<u8>) -> Result<(), QuorumError> {
        if self.failed {
            return Err(QuorumError::Failed);
        }
        if applied_index <= self.snapshot_index() {
            return Ok(());
        }
        let applied = self.raw.raft.raft_log.applied;
        if applied_index > applied {
            return Err(QuorumError::CompactPastApplied {
                index: applied_index,
                applied,
            });
        }
        if snapshot.len() > SNAPSHOT_DATA_BYTES_MAX {
            return Err(QuorumError::SnapshotTooLarge {
                bytes: snapshot.len(),
                max: SNAPSHOT_DATA_BYTES_MAX,
            });
        }
        let store = self.raw.store();
        let term = store.term(applied_index).map_err(QuorumError::Raft)?;
        let entries = store
            .entries_from(applied_index + 1)
            .map_err(QuorumError::Raft)?;
        let hard_state = store.hard_state();
        let mut new = Snapshot::default();
        let metadata = new.mut_metadata();
        metadata.index = applied_index;
        metadata.term = term;
        metadata.set_conf_state(store.initial_state().map_err(QuorumError::Raft)?.conf_state);
        new.data = snapshot.into();
        if let Err(e) = self.persist_snapshot(&new, &hard_state, &entries) {
            self.failed = true;
            return Err(e);
        }
        self.raw
            .mut_store()
            .install(new, &entries, hard_state)
            .map_err(QuorumError::Raft)
    }

    /// The index of the latest snapshot (own or received; 0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }
    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(node_of(id)),
        }
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The highest index known committed (delivery of `Applied` may trail it until the next
    /// `step`).
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// What `open` found in the file (records replayed, a torn tail cut).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    pub fn step(
        &mut self,
        now_ms: i64,
        input: QuorumInput,
    ) -> Result<Vec<QuorumAction>, QuorumError> {
        if self.failed {
            return Err(QuorumError::Failed);
        }
        let behind = (now_ms - self.last_tick_ms).max(0) / TICK_MS;
        for _ in 0..behind.min(TICKS_PER_STEP_MAX) {
            self.raw.tick();
        }
        // A long stall (or a clock jump) is not replayed tick by tick beyond the cap.
        self.last_tick_ms += behind * TICK_MS;
        // A refused input changed nothing durable; what the ticks above produced stays in
        // raft-rs's Ready and is returned by the next step.
        match input {
            QuorumInput::Tick => {}
            QuorumInput::Message(message) => self.receive(message)?,
            QuorumInput::Propose(data) => self.propose(data)?,
        }
        let mut out = Vec::new();
        if let Some((index, data)) = self.restore_at_open.take() {
            out.push(QuorumAction::Restore { index, data });
        }
        if let Err(e) = self.on_ready(&mut out) {
            self.failed = true;
            return Err(e);
        }
        Ok(out)
    }
}

impl QuorumNode {
    fn receive(&mut self, message: RaftMessage) -> Result<(), QuorumError> {
        let is_voter = |id: u64| id != 0 && self.voters.iter().any(|&v| raft_id(v) == id);
        if message.to != raft_id(self.node) || !is_voter(message.from) {
            return Err(QuorumError::Misaddressed {
                from: message.from,
                to: message.to,
            });
        }
        if message.get_msg_type() == MessageType::MsgSnapshot {
            self.check_snapshot(message.get_snapshot())?;
        }
        self.raw.step(message).map_err(QuorumError::Raft)
    }

    /// A snapshot from a leader must fit the snapshot file and name this quorum's voters (it
    /// is persisted as this node's own, and `open` refuses other voters).
    fn check_snapshot(&self, snapshot: &Snapshot) -> Result<(), QuorumError> {
        if snapshot.data.len() > SNAPSHOT_DATA_BYTES_MAX {
            return Err(QuorumError::SnapshotTooLarge {
                bytes: snapshot.data.len(),
                max: SNAPSHOT_DATA_BYTES_MAX,
            });
        }
        check_snapshot_voters(snapshot, &self.voters)
    }

    fn propose(&mut self, data: Vec<u8>) -> Result<(), QuorumError> {
        if data.is_empty() {
            return Err(QuorumError::EmptyProposal);
        }
        if data.len() > PROPOSAL_BYTES_MAX {
            return Err(QuorumError::ProposalTooLarge {
                bytes: data.len(),
                max: PROPOSAL_BYTES_MAX,
            });
        }
        if !self.is_leader() {
            return Err(QuorumError::NotLeader {
                leader: self.leader(),
            });
        }
        match self.raw.propose(vec![], data) {
            Ok(()) => Ok(()),
            Err(raft::Error::ProposalDropped) => Err(QuorumError::ProposalDropped {
                leader: self.leader(),
            }),
            Err(e) => Err(QuorumError::Raft(e)),
        }
    }

    /// raft-rs's Ready cycle: send what may go at once, deliver committed entries, persist
    /// (write, then sync if raft-rs says so), send what needed persisting, advance.
    fn on_ready(&mut self, out: &mut Vec<QuorumAction>) -> Result<(), QuorumError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let sent_before = out.len();
        let mut ready = self.raw.ready();
        send(out, ready.take_messages());
        if ready.snapshot().is_empty() {
            deliver(out, ready.take_committed_entries());
            for entry in ready.entries() {
                self.log.push_entry(entry);
            }
            if let Some(hard_state) = ready.hs() {
                self.log.push_hard_state(hard_state);
            }
            self.log.flush(ready.must_sync())?;
            let store = self.raw.mut_store();
            store.append(ready.entries()).map_err(QuorumError::Raft)?;
            if let Some(hard_state) = ready.hs() {
                store.set_hard_state(hard_state.clone());
            }
        } else {
            // From the leader: this node's log lacked what the leader compacted away. raft-rs
            // gives no committed entries with it; the ones after it come in later Readies.
            let snapshot = ready.snapshot().clone();
            let metadata = snapshot.get_metadata();
            let (index, term) = (metadata.index, metadata.term);
            let mut hard_state = ready
                .hs()
                .cloned()
                .unwrap_or_else(|| self.raw.store().hard_state());
            hard_state.commit = hard_state.commit.max(index);
            hard_state.term = hard_state.term.max(term);
            self.persist_snapshot(&snapshot, &hard_state, ready.entries())?;
            out.push(QuorumAction::Restore {
                index,
                data: snapshot.data.to_vec(),
            });
            let entries = ready.entries().to_vec();
            self.raw
                .mut_store()
                .install(snapshot, &entries, hard_state)
                .map_err(QuorumError::Raft)?;
            deliver(out, ready.take_committed_entries());
        }
        send(out, ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            // raft-rs: the commit index need not be durable; the next sync carries it.
            self.log.push_commit(commit);
            self.log.flush(false)?;
            self.raw.mut_store().set_commit(commit);
        }
        send(out, light.take_messages());
        deliver(out, light.take_committed_entries());
        self.raw.advance_apply();
        self.report_snapshots_sent(&out[sent_before..]);
        Ok(())
    }

    /// Makes `snapshot` this node's (durable), then the log continue it with `entries` and
    /// `hard_state`: the snapshot first, so every crash point leaves a usable pair.
    fn persist_snapshot(
        &mut self,
        snapshot: &Snapshot,
        hard_state: &HardState,
        entries: &[Entry],
    ) -> Result<(), QuorumError> {
        let metadata = snapshot.get_metadata();
        snapshot_file::write(&self.dir, snapshot)?;
        self.log = LogFile::rewrite(
            &self.dir,
            metadata.index,
            metadata.term,
            hard_state,
            entries,
        )?;
        Ok(())
    }

    /// A snapshot handed to the transport counts as sent: raft-rs then probes the voter
    /// with the entries after it. Had the message been lost, the voter refuses the probe and
    /// raft-rs sends the snapshot again; without this report it would wait forever.
    fn report_snapshots_sent(&mut self, sent: &[QuorumAction]) {
        let targets: Vec<u64> = sent
            .iter()
            .filter_map(|action| match action {
                QuorumAction::Send { message, .. }
                    if message.get_msg_type() == MessageType::MsgSnapshot =>
                {
                    Some(message.to)
                }
                _ => None,
            })
            .collect();
        for to in targets {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
    }
}

/// Fits the replayed log to the snapshot: entries up to the snapshot's index are dropped, and
/// entries after it are kept only if the log's entry at that index is the snapshot's (else they
/// came from another history, before a snapshot from the leader replaced this node's log, and
/// raft-rs would have discarded them too). The hard state is raised to the snapshot.
fn continue_snapshot(
    log_path: &Path,
    snapshot: Option<&Snapshot>,
    replayed: &mut Replayed,
) -> Result<(), QuorumError> {
    let (index, term) =
        snapshot.map_or((0, 0), |s| (s.get_metadata().index, s.get_metadata().term));
    if replayed.start_index > index {
        // The log was cut past a snapshot that is not here: its prefix is lost.
        return Err(QuorumError::Corrupt {
            path: log_path.to_path_buf(),
            offset: 0,
            reason: "the log starts after its snapshot (snapshot missing or older)",
        });
    }
    if index == 0 {
        return Ok(());
    }
    let term_at_index = if replayed.start_index == index {
        Some(replayed.start_term)
    } else {
        replayed
            .entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    };
    if term_at_index == Some(term) {
        replayed.entries.retain(|e| e.index > index);
    } else {
        replayed.entries.clear();
    }
    let hard_state = &mut replayed.hard_state;
    if hard_state.term < term {
        // No vote was persisted in the snapshot's term (it would have raised the term).
        hard_state.term = term;
        hard_state.vote = 0;
    }
    let last = replayed.entries.last().map_or(index, |e| e.index);
    hard_state.commit = hard_state.commit.clamp(index, last);
    Ok(())
}

fn send(out: &mut Vec<QuorumAction>, messages: Vec<RaftMessage>) {
    out.extend(messages.into_iter().map(|message| QuorumAction::Send {
        to: node_of(message.to),
        message,
    }));
}

fn deliver(out: &mut Vec<QuorumAction>, entries: Vec<Entry>) {
    for entry in entries {
        // A new leader commits an empty entry first; configuration entries are not used.
        if entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
            continue;
        }
        out.push(QuorumAction::Applied {
            index: entry.index,
            data: entry.data.to_vec(),
        });
    }
}
