//! The metadata quorum: a sans-IO wrapper around raft-rs (`raft` 0.7) whose log holds opaque
//! entries (the broker puts its controller inputs there), persisted in one append-only file.
//!
//! Owns: turning raft-rs's `Ready` cycle into `step(now_ms, input) -> actions`, persisting the
//! log and hard state (`log_file`: `dir/quorum.log`, synced before anything that depends on it
//! leaves the node), replaying it on `open`, and the wire encoding of raft messages.
//! Does not own: the transport (the caller sends `QuorumAction::Send` over its rpc listener and
//! feeds what arrives to `step`), the meaning of entries (the caller's state machine), time
//! (`now_ms` is an input), snapshots and log compaction, membership changes (the voters are
//! fixed by `open`'s argument; the configuration is not persisted).
//!
//! Invariants:
//! - Entries and hard state are written and `sync_data`'d before this step's persisted
//!   messages are returned and before raft-rs's `advance` (raft-rs's Ready rules); so a
//!   vote or an append acknowledgement never leaves the node before it is durable.
//! - Every committed entry is delivered as `Applied`, once per `open`, in log order, from
//!   index 1 (raft-rs's `Config::applied` is 0): the caller rebuilds its state machine from
//!   scratch on each start. Raft's own empty entries are not delivered (so indexes have gaps).
//! - Deterministic: each node's election timeout is fixed by its position among the voters
//!   (raft-rs would otherwise draw it from a thread-local RNG), and nothing reads a clock.
//!
//! Back of the envelope, and why there must be snapshots before long-lived clusters: the
//! broker proposes ~5 entries/s (a heartbeat per second from each of 3 brokers plus a Tick
//! each second) of ~100 bytes. On disk an entry costs ~150 bytes (148 measured by the tests:
//! record header, kind, protobuf framing, and the hard-state or commit record of its commit):
//! ~750 B/s, ~65 MB a day, ~23 GB a year, one file that only grows. `MemStorage` holds every
//! entry in memory too (104-byte `Entry` plus its data: ~90 MB a day), `open` reads the whole
//! file (~0.2 s a day's worth) and re-delivers every entry to the caller. Fine for tests and
//! days-long runs; a snapshot of the caller's state machine plus compaction (raft-rs
//! `MemStorage::compact`, and rewriting the file from the snapshot) is the fix. Syncs: one `fdatasync` per Ready that carries
//! entries or a new term/vote: ~5/s on each voter at that load.
//!
//! Compiled only with the `raft-quorum` feature: raft-rs and its protobuf code generation cost
//! ~40 s of CPU on a cold build (see docs/internals/replication.md), which the replication
//! core and its simulator do not need.

mod error;
mod log_file;

use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, MessageType};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

pub use error::QuorumError;
pub use log_file::{FORMAT_VERSION, LOG_FILE_NAME, RECORD_BYTES_MAX, Recovery};
/// raft-rs's message, re-exported so the broker needs no `raft` dependency of its own.
pub use raft::eraftpb::Message as RaftMessage;
pub use raft::eraftpb::MessageType as RaftMessageType;

use crate::types::NodeId;
use log_file::LogFile;

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

/// The largest proposal (entry payload).
pub const PROPOSAL_BYTES_MAX: usize = 1 << 20;
/// raft-rs's `max_size_per_msg`: an append message carries entries up to this many bytes (or
/// one entry, whatever its size), so a lagging voter catches up in large steps.
pub const MESSAGE_ENTRIES_BYTES_MAX: usize = 1 << 20;
/// The largest encoded raft message `decode_message` accepts; size the transport's frames by it.
pub const MESSAGE_BYTES_MAX: usize = 4 << 20;
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
    raw: RawNode<MemStorage>,
    log: LogFile,
    recovery: Recovery,
    last_tick_ms: i64,
    /// A write or sync failed: what is on disk is unknown, so nothing more may happen.
    failed: bool,
}

impl QuorumNode {
    /// Opens (or creates) the quorum's files in `dir`, replaying the persisted log and hard
    /// state. Every committed entry (including ones committed before a restart) is delivered
    /// again, in order from index 1, as `QuorumAction::Applied` by the following `step` calls
    /// (raft-rs `Config::applied` = 0), so the caller rebuilds its state machine from scratch
    /// on each start. A torn tail is cut (see `recovery`). `voters` must be the same, in the
    /// same order, on every node and every start (the order fixes the election timeouts).
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
            applied: 0,
            ..Config::default()
        };
        config.validate().map_err(QuorumError::Raft)?;
        let (log, replayed) = LogFile::open(dir)?;
        let conf_state = ConfState::from((voters.iter().map(|&v| raft_id(v)), []));
        let storage = MemStorage::new_with_conf_state(conf_state);
        {
            let mut core = storage.wl();
            core.append(&replayed.entries).map_err(QuorumError::Raft)?;
            core.set_hardstate(replayed.hard_state);
        }
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, storage, &logger).map_err(QuorumError::Raft)?;
        Ok(QuorumNode {
            node,
            voters: voters.to_vec(),
            raw,
            log,
            recovery: replayed.recovery,
            last_tick_ms: now_ms,
            failed: false,
        })
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
            return Err(QuorumError::SnapshotUnsupported);
        }
        self.raw.step(message).map_err(QuorumError::Raft)
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
        let store = self.raw.raft.raft_log.store.clone();
        let mut ready = self.raw.ready();
        // Snapshots are refused at `receive`, and no log is ever compacted.
        assert!(
            ready.snapshot().is_empty(),
            "no snapshots without compaction"
        );
        send(out, ready.take_messages());
        deliver(out, ready.take_committed_entries());
        for entry in ready.entries() {
            self.log.push_entry(entry);
        }
        if let Some(hard_state) = ready.hs() {
            self.log.push_hard_state(hard_state);
        }
        self.log.flush(ready.must_sync())?;
        if !ready.entries().is_empty() {
            store
                .wl()
                .append(ready.entries())
                .map_err(QuorumError::Raft)?;
        }
        if let Some(hard_state) = ready.hs() {
            store.wl().set_hardstate(hard_state.clone());
        }
        send(out, ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            // raft-rs: the commit index need not be durable; the next sync carries it.
            self.log.push_commit(commit);
            self.log.flush(false)?;
            store.wl().mut_hard_state().set_commit(commit);
        }
        send(out, light.take_messages());
        deliver(out, light.take_committed_entries());
        self.raw.advance_apply();
        Ok(())
    }
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
