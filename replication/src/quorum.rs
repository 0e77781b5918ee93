//! The metadata quorum skeleton: a sans-IO wrapper around raft-rs (`raft` 0.7) whose log holds
//! metadata records (brokers, topics, partition assignments and changes).
//!
//! Owns: turning raft-rs's `Ready` cycle into `step(now, input) -> actions`, the metadata
//! record encoding, and the metadata image that committed records build.
//! Does not own: persistence (raft's `MemStorage` for now; the plan is the engine), the
//! transport (the driver sends `QuorumAction::Send` over the rpc listener), snapshots, or
//! membership changes. Not wired into `sluice start`.
//! Invariants:
//! - Records are applied in log order, once each, only after raft commits them; so every
//!   node's image is a function of the same committed prefix.
//! - Deterministic: each node's election timeout is fixed by its position among the voters
//!   (raft-rs would otherwise draw it from a thread-local RNG), and nothing reads a clock.
//!
//! Compiled only with the `raft-quorum` feature: raft-rs and its protobuf code generation cost
//! ~40 s of CPU on a cold build (see docs/internals/replication.md), which the replication
//! core and its simulator do not need.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfState, Entry, EntryType, Message as RaftMessage};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

use crate::types::{LeaderEpoch, NodeId, PartitionEpoch};

/// One raft tick per this many milliseconds of `now_ms`.
pub const TICK_MS: i64 = 100;
/// Raft's election timeout in ticks (1 s); a node's own timeout adds `2 * its position`.
pub const ELECTION_TICKS: usize = 10;
/// Leader heartbeats every 2 ticks (200 ms).
pub const HEARTBEAT_TICKS: usize = 2;
const _: () = assert!(HEARTBEAT_TICKS < ELECTION_TICKS);

/// A metadata log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker {
        node: NodeId,
        incarnation: u64,
    },
    /// A topic and the replica assignment of each partition (index = partition number).
    CreateTopic {
        name: String,
        assignments: Vec<Vec<NodeId>>,
    },
    /// A new leader and/or ISR for one partition.
    PartitionChange {
        topic: String,
        partition: u32,
        leader: Option<NodeId>,
        leader_epoch: LeaderEpoch,
        isr: Vec<NodeId>,
        partition_epoch: PartitionEpoch,
    },
}

/// The state committed records build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    pub brokers: BTreeMap<NodeId, u64>,
    pub topics: BTreeMap<String, Vec<PartitionImage>>,
    /// Records that did not apply (e.g. a change to an unknown topic), counted, not fatal.
    pub rejected: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    pub replicas: Vec<NodeId>,
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub isr: Vec<NodeId>,
    pub partition_epoch: PartitionEpoch,
}

#[derive(Debug)]
pub enum QuorumInput {
    /// Time passed (`now_ms` in `step` says how much).
    Tick,
    Message(RaftMessage),
    Propose(MetadataRecord),
}

#[derive(Clone, Debug, PartialEq)]
pub enum QuorumAction {
    /// Send to the voter `to` (see `raft_id` / `node_of`).
    Send { to: NodeId, message: RaftMessage },
    /// A record committed and applied to the image, at this log index.
    Applied { index: u64, record: MetadataRecord },
}

#[derive(Debug)]
pub enum QuorumError {
    NotLeader { leader: Option<NodeId> },
    Raft(raft::Error),
    Corrupt { index: u64, reason: &'static str },
}

impl std::error::Error for QuorumError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QuorumError::Raft(e) => Some(e),
            _ => None,
        }
    }
}

impl std::fmt::Display for QuorumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuorumError::NotLeader { leader } => {
                write!(f, "not the quorum leader (leader: {leader:?})")
            }
            QuorumError::Raft(e) => write!(f, "raft: {e}"),
            QuorumError::Corrupt { index, reason } => {
                write!(f, "metadata entry {index} is corrupt: {reason}")
            }
        }
    }
}

/// Raft ids are non-zero u64s; node ids start at 0.
pub fn raft_id(node: NodeId) -> u64 {
    u64::try_from(node.0).expect("node ids are not negative") + 1
}

pub fn node_of(raft_id: u64) -> NodeId {
    NodeId(i32::try_from(raft_id - 1).expect("raft ids come from raft_id"))
}

pub struct QuorumNode {
    node: NodeId,
    raw: RawNode<MemStorage>,
    image: MetadataImage,
    last_tick_ms: i64,
}

impl QuorumNode {
    /// A voter in a quorum of `voters` (all starting empty, at time `now_ms`).
    pub fn new(node: NodeId, voters: &[NodeId], now_ms: i64) -> Result<QuorumNode, QuorumError> {
        let position = voters
            .iter()
            .position(|&v| v == node)
            .expect("a node is one of the voters");
        let config = Config {
            id: raft_id(node),
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            min_election_tick: ELECTION_TICKS + 2 * position,
            max_election_tick: ELECTION_TICKS + 2 * position + 1,
            pre_vote: true,
            check_quorum: true,
            ..Config::default()
        };
        config.validate().map_err(QuorumError::Raft)?;
        let conf_state = ConfState::from((
            voters.iter().map(|&v| raft_id(v)).collect::<Vec<_>>(),
            vec![],
        ));
        let storage = MemStorage::new_with_conf_state(conf_state);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, storage, &logger).map_err(QuorumError::Raft)?;
        Ok(QuorumNode {
            node,
            raw,
            image: MetadataImage::default(),
            last_tick_ms: now_ms,
        })
    }

    pub fn node(&self) -> NodeId {
        self.node
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

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn step(
        &mut self,
        now_ms: i64,
        input: QuorumInput,
    ) -> Result<Vec<QuorumAction>, QuorumError> {
        while now_ms - self.last_tick_ms >= TICK_MS {
            self.last_tick_ms += TICK_MS;
            self.raw.tick();
        }
        match input {
            QuorumInput::Tick => {}
            QuorumInput::Message(message) => self.raw.step(message).map_err(QuorumError::Raft)?,
            QuorumInput::Propose(record) => {
                if !self.is_leader() {
                    return Err(QuorumError::NotLeader {
                        leader: self.leader(),
                    });
                }
                self.raw
                    .propose(vec![], encode(&record))
                    .map_err(QuorumError::Raft)?;
            }
        }
        let mut out = Vec::new();
        self.on_ready(&mut out)?;
        Ok(out)
    }
}

impl QuorumNode {
    /// raft-rs's Ready cycle: send, persist, apply, advance (order as in its examples).
    fn on_ready(&mut self, out: &mut Vec<QuorumAction>) -> Result<(), QuorumError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let store = self.raw.raft.raft_log.store.clone();
        let mut ready = self.raw.ready();
        send(out, ready.take_messages());
        if !ready.snapshot().is_empty() {
            store
                .wl()
                .apply_snapshot(ready.snapshot().clone())
                .map_err(QuorumError::Raft)?;
        }
        self.apply(ready.take_committed_entries(), out)?;
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
            store.wl().mut_hard_state().set_commit(commit);
        }
        send(out, light.take_messages());
        self.apply(light.take_committed_entries(), out)?;
        self.raw.advance_apply();
        Ok(())
    }

    fn apply(
        &mut self,
        entries: Vec<Entry>,
        out: &mut Vec<QuorumAction>,
    ) -> Result<(), QuorumError> {
        for entry in entries {
            // A new leader commits an empty entry first; configuration entries are not used yet.
            if entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
                continue;
            }
            let record = decode(&entry.data).map_err(|reason| QuorumError::Corrupt {
                index: entry.index,
                reason,
            })?;
            self.image.apply(&record);
            out.push(QuorumAction::Applied {
                index: entry.index,
                record,
            });
        }
        Ok(())
    }
}

fn send(out: &mut Vec<QuorumAction>, messages: Vec<RaftMessage>) {
    out.extend(messages.into_iter().map(|message| QuorumAction::Send {
        to: node_of(message.to),
        message,
    }));
}

impl MetadataImage {
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker { node, incarnation } => {
                self.brokers.insert(*node, *incarnation);
            }
            MetadataRecord::CreateTopic { name, assignments } => {
                if self.topics.contains_key(name) {
                    self.rejected += 1;
                    return;
                }
                let partitions = assignments
                    .iter()
                    .map(|replicas| PartitionImage {
                        replicas: replicas.clone(),
                        leader: None,
                        leader_epoch: LeaderEpoch(0),
                        isr: replicas.clone(),
                        partition_epoch: PartitionEpoch(0),
                    })
                    .collect();
                self.topics.insert(name.clone(), partitions);
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                leader,
                leader_epoch,
                isr,
                partition_epoch,
            } => {
                let target = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.get_mut(*partition as usize));
                match target {
                    Some(p) if *partition_epoch > p.partition_epoch => {
                        p.leader = *leader;
                        p.leader_epoch = *leader_epoch;
                        p.isr = isr.clone();
                        p.partition_epoch = *partition_epoch;
                    }
                    _ => self.rejected += 1,
                }
            }
        }
    }
}

// The record encoding: a tag byte, then fixed-width little-endian integers; strings and lists
// are prefixed by a u32 length. Small, versionable by tag, and decoded with bounds checks
// (rkyv is the candidate once records and snapshots grow).

const TAG_REGISTER_BROKER: u8 = 1;
const TAG_CREATE_TOPIC: u8 = 2;
const TAG_PARTITION_CHANGE: u8 = 3;
/// No list or string in a record may claim more elements than this.
const RECORD_LIST_LEN_MAX: u32 = 1 << 20;

pub fn encode(record: &MetadataRecord) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let nodes = |buf: &mut Vec<u8>, nodes: &[NodeId]| {
        buf.extend_from_slice(&(nodes.len() as u32).to_le_bytes());
        for n in nodes {
            buf.extend_from_slice(&n.0.to_le_bytes());
        }
    };
    let string = |buf: &mut Vec<u8>, s: &str| {
        buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    };
    match record {
        MetadataRecord::RegisterBroker { node, incarnation } => {
            buf.push(TAG_REGISTER_BROKER);
            buf.extend_from_slice(&node.0.to_le_bytes());
            buf.extend_from_slice(&incarnation.to_le_bytes());
        }
        MetadataRecord::CreateTopic { name, assignments } => {
            buf.push(TAG_CREATE_TOPIC);
            string(&mut buf, name);
            buf.extend_from_slice(&(assignments.len() as u32).to_le_bytes());
            for replicas in assignments {
                nodes(&mut buf, replicas);
            }
        }
        MetadataRecord::PartitionChange {
            topic,
            partition,
            leader,
            leader_epoch,
            isr,
            partition_epoch,
        } => {
            buf.push(TAG_PARTITION_CHANGE);
            string(&mut buf, topic);
            buf.extend_from_slice(&partition.to_le_bytes());
            buf.extend_from_slice(&leader.map_or(-1, |l| l.0).to_le_bytes());
            buf.extend_from_slice(&leader_epoch.0.to_le_bytes());
            nodes(&mut buf, isr);
            buf.extend_from_slice(&partition_epoch.0.to_le_bytes());
        }
    }
    buf
}

pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, &'static str> {
    let mut r = Reader(bytes);
    let record = match r.u8()? {
        TAG_REGISTER_BROKER => MetadataRecord::RegisterBroker {
            node: NodeId(r.i32()?),
            incarnation: r.u64()?,
        },
        TAG_CREATE_TOPIC => {
            let name = r.string()?;
            let count = r.len()?;
            let assignments = (0..count).map(|_| r.nodes()).collect::<Result<_, _>>()?;
            MetadataRecord::CreateTopic { name, assignments }
        }
        TAG_PARTITION_CHANGE => MetadataRecord::PartitionChange {
            topic: r.string()?,
            partition: r.u32()?,
            leader: match r.i32()? {
                -1 => None,
                l => Some(NodeId(l)),
            },
            leader_epoch: LeaderEpoch(r.i32()?),
            isr: r.nodes()?,
            partition_epoch: PartitionEpoch(r.i32()?),
        },
        _ => return Err("unknown record tag"),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(record)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("truncated")?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn len(&mut self) -> Result<u32, &'static str> {
        let len = self.u32()?;
        if len > RECORD_LIST_LEN_MAX {
            return Err("length over RECORD_LIST_LEN_MAX");
        }
        Ok(len)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = self.len()? as usize;
        if self.0.len() < len {
            return Err("truncated");
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8")
    }

    fn nodes(&mut self) -> Result<Vec<NodeId>, &'static str> {
        let len = self.len()?;
        (0..len).map(|_| self.i32().map(NodeId)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};

    use super::*;

    /// Three voters on an in-memory transport that can cut nodes off.
    struct Cluster {
        now_ms: i64,
        nodes: BTreeMap<NodeId, QuorumNode>,
        in_flight: VecDeque<(NodeId, RaftMessage)>,
        cut_off: BTreeSet<NodeId>,
        applied: BTreeMap<NodeId, Vec<(u64, MetadataRecord)>>,
        leaders_by_term: BTreeMap<u64, NodeId>,
        /// Drop one message in this many (0: none), drawn from `rng` (SplitMix64 state).
        drop_one_in: u64,
        rng: u64,
    }

    impl Cluster {
        fn new() -> Cluster {
            let voters = [NodeId(0), NodeId(1), NodeId(2)];
            let nodes = voters
                .iter()
                .map(|&v| (v, QuorumNode::new(v, &voters, 0).unwrap()))
                .collect();
            Cluster {
                now_ms: 0,
                nodes,
                in_flight: VecDeque::new(),
                cut_off: BTreeSet::new(),
                applied: BTreeMap::new(),
                leaders_by_term: BTreeMap::new(),
                drop_one_in: 0,
                rng: 0,
            }
        }

        fn random(&mut self, below: u64) -> u64 {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % below
        }

        fn handle(&mut self, from: NodeId, actions: Vec<QuorumAction>) {
            for action in actions {
                match action {
                    QuorumAction::Send { to, message } => {
                        let dropped = self.drop_one_in > 0 && self.random(self.drop_one_in) == 0;
                        if !dropped && !self.cut_off.contains(&from) && !self.cut_off.contains(&to)
                        {
                            self.in_flight.push_back((to, message));
                        }
                    }
                    QuorumAction::Applied { index, record } => {
                        self.applied.entry(from).or_default().push((index, record));
                    }
                }
            }
        }

        /// One tick of time, then deliver until quiet.
        fn tick(&mut self) {
            self.now_ms += TICK_MS;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let actions = self
                    .nodes
                    .get_mut(&id)
                    .unwrap()
                    .step(self.now_ms, QuorumInput::Tick)
                    .unwrap();
                self.handle(id, actions);
            }
            while let Some((to, message)) = self.in_flight.pop_front() {
                let actions = self
                    .nodes
                    .get_mut(&to)
                    .unwrap()
                    .step(self.now_ms, QuorumInput::Message(message))
                    .unwrap();
                self.handle(to, actions);
            }
            for node in self.nodes.values() {
                if node.is_leader() {
                    let holder = *self
                        .leaders_by_term
                        .entry(node.term())
                        .or_insert(node.node());
                    assert_eq!(holder, node.node(), "two leaders in term {}", node.term());
                }
            }
        }

        fn leader_among(&self, candidates: &[NodeId]) -> Option<NodeId> {
            let leaders: Vec<NodeId> = candidates
                .iter()
                .copied()
                .filter(|c| self.nodes[c].is_leader())
                .collect();
            (leaders.len() == 1).then(|| leaders[0])
        }

        fn tick_until(&mut self, what: &str, mut done: impl FnMut(&Cluster) -> bool) {
            for _ in 0..200 {
                if done(self) {
                    return;
                }
                self.tick();
            }
            panic!("not reached in 200 ticks: {what}");
        }

        fn propose(&mut self, at: NodeId, record: MetadataRecord) {
            let actions = self
                .nodes
                .get_mut(&at)
                .unwrap()
                .step(self.now_ms, QuorumInput::Propose(record))
                .unwrap();
            self.handle(at, actions);
        }
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.to_owned(),
            assignments: vec![
                vec![NodeId(0), NodeId(1), NodeId(2)],
                vec![NodeId(1), NodeId(2), NodeId(0)],
            ],
        }
    }

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let records = [
            MetadataRecord::RegisterBroker {
                node: NodeId(2),
                incarnation: 7,
            },
            topic("orders"),
            MetadataRecord::PartitionChange {
                topic: "orders".to_owned(),
                partition: 1,
                leader: None,
                leader_epoch: LeaderEpoch(3),
                isr: vec![NodeId(1)],
                partition_epoch: PartitionEpoch(5),
            },
        ];
        for record in records {
            let bytes = encode(&record);
            assert_eq!(decode(&bytes), Ok(record));
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err());
            }
        }
        assert_eq!(decode(&[9]), Err("unknown record tag"));
        assert_eq!(
            decode(&[2, 0xff, 0xff, 0xff, 0xff]),
            Err("length over RECORD_LIST_LEN_MAX")
        );
    }

    #[test]
    fn three_voters_elect_a_leader_and_replicate_metadata() {
        let mut c = Cluster::new();
        let all = [NodeId(0), NodeId(1), NodeId(2)];
        c.tick_until("a leader", |c| c.leader_among(&all).is_some());
        let leader = c.leader_among(&all).unwrap();
        // The follower's proposal is refused with the leader's id, as a client would be.
        let follower = *all.iter().find(|&&n| n != leader).unwrap();
        let refused = c
            .nodes
            .get_mut(&follower)
            .unwrap()
            .step(c.now_ms, QuorumInput::Propose(topic("x")));
        assert!(matches!(refused, Err(QuorumError::NotLeader { leader: Some(l) }) if l == leader));
        for n in 0..3 {
            c.propose(
                leader,
                MetadataRecord::RegisterBroker {
                    node: NodeId(n),
                    incarnation: 1,
                },
            );
        }
        c.propose(leader, topic("orders"));
        c.tick_until("every voter applied 4 records", |c| {
            all.iter()
                .all(|n| c.applied.get(n).is_some_and(|a| a.len() == 4))
        });
        let image = c.nodes[&leader].image().clone();
        assert_eq!(image.brokers.len(), 3);
        assert_eq!(image.topics["orders"].len(), 2);
        for n in &all {
            assert_eq!(c.nodes[n].image(), &image);
            assert_eq!(c.applied[n], c.applied[&leader]);
        }
    }

    #[test]
    fn a_cut_off_leader_is_replaced_and_catches_up_after_healing() {
        let mut c = Cluster::new();
        let all = [NodeId(0), NodeId(1), NodeId(2)];
        c.tick_until("a leader", |c| c.leader_among(&all).is_some());
        let old = c.leader_among(&all).unwrap();
        c.propose(old, topic("before"));
        c.tick_until("applied everywhere", |c| {
            all.iter()
                .all(|n| c.applied.get(n).is_some_and(|a| a.len() == 1))
        });

        c.cut_off.insert(old);
        let rest: Vec<NodeId> = all.iter().copied().filter(|&n| n != old).collect();
        c.tick_until("a new leader among the others", |c| {
            c.leader_among(&rest).is_some()
        });
        let new = c.leader_among(&rest).unwrap();
        assert!(c.nodes[&new].term() > c.nodes[&old].term() || !c.nodes[&old].is_leader());
        // The old leader cannot commit alone (check_quorum makes it step down).
        let _ = c
            .nodes
            .get_mut(&old)
            .unwrap()
            .step(c.now_ms, QuorumInput::Propose(topic("lost")));
        c.propose(new, topic("after"));
        c.tick_until("the majority applied it", |c| {
            rest.iter().all(|n| c.applied[n].len() == 2)
        });
        assert_eq!(c.applied[&old].len(), 1);

        c.cut_off.clear();
        c.tick_until("the old leader caught up", |c| c.applied[&old].len() == 2);
        let image = c.nodes[&new].image().clone();
        assert!(image.topics.contains_key("after") && !image.topics.contains_key("lost"));
        for n in &all {
            assert_eq!(c.nodes[n].image(), &image);
        }
    }

    /// Seeded rounds of cut-off voters, drops and proposals at whoever leads: one leader per
    /// term (checked every tick), every voter's applied records a prefix of the longest, and
    /// after healing all voters applied the same records.
    #[test]
    fn random_cuts_and_drops_keep_the_applied_logs_consistent() {
        let all = [NodeId(0), NodeId(1), NodeId(2)];
        for seed in 0..16 {
            let mut c = Cluster::new();
            c.rng = seed;
            let mut incarnation = 0;
            for _ in 0..300 {
                match c.random(20) {
                    0 => c.cut_off = BTreeSet::from([all[c.random(3) as usize]]),
                    1 => c.cut_off.clear(),
                    2 => c.drop_one_in = [0, 2, 5, 20][c.random(4) as usize],
                    _ => {}
                }
                if let Some(leader) = c.leader_among(&all) {
                    incarnation += 1;
                    let record = MetadataRecord::RegisterBroker {
                        node: NodeId(0),
                        incarnation,
                    };
                    if let Ok(actions) = c
                        .nodes
                        .get_mut(&leader)
                        .unwrap()
                        .step(c.now_ms, QuorumInput::Propose(record))
                    {
                        c.handle(leader, actions);
                    }
                }
                c.tick();
                let longest = all
                    .iter()
                    .map(|n| c.applied.get(n).cloned().unwrap_or_default())
                    .max_by_key(Vec::len)
                    .unwrap();
                for n in &all {
                    let mine = c.applied.get(n).cloned().unwrap_or_default();
                    assert_eq!(
                        mine[..],
                        longest[..mine.len()],
                        "seed {seed}: {n} applied a different history"
                    );
                }
            }
            c.cut_off.clear();
            c.drop_one_in = 0;
            c.tick_until("a leader after healing", |c| c.leader_among(&all).is_some());
            let leader = c.leader_among(&all).unwrap();
            c.propose(leader, topic("final"));
            c.tick_until("every voter applied everything", |c| {
                let lens: BTreeSet<usize> = all
                    .iter()
                    .map(|n| c.applied.get(n).map_or(0, Vec::len))
                    .collect();
                lens.len() == 1 && c.nodes[&all[0]].image().topics.contains_key("final")
            });
            assert!(
                c.applied[&leader].len() > 10,
                "seed {seed}: too little committed to mean anything"
            );
        }
    }
}
