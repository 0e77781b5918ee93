//! The persistent metadata quorum (`replication::quorum`, feature `raft-quorum`): three voters
//! on files in temp dirs and an in-memory router that carries every message in its wire form
//! (`encode_message` / `decode_message`), with nodes that stop, restart from their dirs, compact
//! their logs into snapshots, crash in the middle of it, and whose files are damaged.
//!
//! Each node's state machine is the list of (index, data) it applied; its snapshot is that list
//! encoded, so a `Restore` brings back exactly the history it stands for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;

use proptest::prelude::*;
use replication::NodeId;
use replication::quorum::{
    LOG_FILE_NAME, LOG_TMP_FILE_NAME, MESSAGE_BYTES_MAX, PROPOSAL_BYTES_MAX, QuorumAction,
    QuorumError, QuorumInput, QuorumNode, RaftMessage, RaftMessageType, SNAPSHOT_FILE_NAME,
    SNAPSHOT_TMP_FILE_NAME, TICK_MS, decode_message, encode_message, raft_id,
};
use tempfile::TempDir;

const VOTERS: [NodeId; 3] = [NodeId(0), NodeId(1), NodeId(2)];

struct Cluster {
    now_ms: i64,
    dirs: BTreeMap<NodeId, TempDir>,
    /// `None`: the node is down (dropped; messages to and from it are lost).
    nodes: BTreeMap<NodeId, Option<QuorumNode>>,
    /// Encoded messages: (to, bytes).
    in_flight: VecDeque<(NodeId, Vec<u8>)>,
    /// Each node's state machine since it was last opened: what it applied, or restored.
    applied: BTreeMap<NodeId, Vec<(u64, Vec<u8>)>>,
    /// The snapshot indexes each node was told to restore since it was last opened.
    restored: BTreeMap<NodeId, Vec<u64>>,
    /// The last index each node applied or restored (the state's index) since it was opened.
    state_index: BTreeMap<NodeId, u64>,
    leaders_by_term: BTreeMap<u64, NodeId>,
    /// Hold a message back to the next tick once in this many (0: never), drawn from `rng`.
    hold_back_one_in: u64,
    rng: u64,
    /// Drop this many of the next snapshot messages (a transport that lost them).
    drop_snapshots: usize,
    /// Snapshot messages delivered.
    snapshots_delivered: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let mut c = Cluster {
            now_ms: 1_000,
            dirs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            in_flight: VecDeque::new(),
            applied: BTreeMap::new(),
            restored: BTreeMap::new(),
            state_index: BTreeMap::new(),
            leaders_by_term: BTreeMap::new(),
            hold_back_one_in: 0,
            rng: 0,
            drop_snapshots: 0,
            snapshots_delivered: 0,
        };
        for v in VOTERS {
            c.dirs.insert(v, tempfile::tempdir().unwrap());
            c.start(v);
        }
        c
    }

    fn start(&mut self, n: NodeId) {
        self.try_start(n).unwrap();
    }

    fn try_start(&mut self, n: NodeId) -> Result<(), QuorumError> {
        assert!(self.nodes.get(&n).is_none_or(Option::is_none), "{n} runs");
        let node = QuorumNode::open(n, &VOTERS, self.dirs[&n].path(), self.now_ms)?;
        self.nodes.insert(n, Some(node));
        self.applied.insert(n, Vec::new());
        self.restored.insert(n, Vec::new());
        self.state_index.insert(n, 0);
        Ok(())
    }

    /// Snapshots node `n`'s state machine at the index it reached and compacts its log.
    fn compact(&mut self, n: NodeId) -> u64 {
        let index = self.state_index[&n];
        let snapshot = encode_state(&self.applied[&n]);
        let node = self.nodes.get_mut(&n).unwrap().as_mut().unwrap();
        node.compact(index, snapshot).unwrap();
        assert_eq!(node.snapshot_index(), index);
        index
    }

    fn path(&self, n: NodeId, name: &str) -> std::path::PathBuf {
        self.dirs[&n].path().join(name)
    }

    fn stop(&mut self, n: NodeId) {
        let node = self.nodes.get_mut(&n).unwrap().take();
        assert!(node.is_some(), "{n} was already down");
    }

    fn node(&self, n: NodeId) -> &QuorumNode {
        self.nodes[&n].as_ref().unwrap()
    }

    fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.is_some())
            .map(|(&n, _)| n)
            .collect()
    }

    fn handle(&mut self, from: NodeId, actions: Vec<QuorumAction>) {
        for action in actions {
            match action {
                QuorumAction::Send { to, message } => {
                    assert_eq!(message.from, raft_id(from));
                    assert_eq!(message.to, raft_id(to));
                    self.in_flight.push_back((to, encode_message(&message)));
                }
                QuorumAction::Applied { index, data } => {
                    let last = self.state_index[&from];
                    assert!(index > last, "{from} applied {index} after {last}");
                    self.applied.get_mut(&from).unwrap().push((index, data));
                    self.state_index.insert(from, index);
                }
                QuorumAction::Restore { index, data } => {
                    let last = self.state_index[&from];
                    assert!(index > last, "{from} restored {index} after {last}");
                    let state = decode_state(&data);
                    assert!(state.last().is_none_or(|&(i, _)| i <= index));
                    self.applied.insert(from, state);
                    self.restored.get_mut(&from).unwrap().push(index);
                    self.state_index.insert(from, index);
                }
            }
        }
    }

    fn step(&mut self, n: NodeId, input: QuorumInput) -> Result<(), QuorumError> {
        let now_ms = self.now_ms;
        let actions = self
            .nodes
            .get_mut(&n)
            .unwrap()
            .as_mut()
            .unwrap()
            .step(now_ms, input)?;
        self.handle(n, actions);
        Ok(())
    }

    /// One tick of time on every running node, then deliver until quiet.
    fn tick(&mut self) {
        self.now_ms += TICK_MS;
        for n in self.running() {
            self.step(n, QuorumInput::Tick).unwrap();
        }
        let mut held_back = VecDeque::new();
        while let Some((to, bytes)) = self.in_flight.pop_front() {
            if self.nodes[&to].is_none() {
                continue;
            }
            if self.hold_back_one_in > 0 && next_random(&mut self.rng, self.hold_back_one_in) == 0 {
                held_back.push_back((to, bytes));
                continue;
            }
            let message = decode_message(&bytes).unwrap();
            if message.get_msg_type() == RaftMessageType::MsgSnapshot {
                if self.drop_snapshots > 0 {
                    self.drop_snapshots -= 1;
                    continue;
                }
                self.snapshots_delivered += 1;
            }
            self.step(to, QuorumInput::Message(message)).unwrap();
        }
        self.in_flight = held_back;
        for n in self.running() {
            let node = self.nodes[&n].as_ref().unwrap();
            if node.is_leader() {
                let holder = *self.leaders_by_term.entry(node.term()).or_insert(n);
                assert_eq!(holder, n, "two leaders in term {}", node.term());
            }
        }
    }

    /// The one running leader, if exactly one running node leads.
    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .running()
            .into_iter()
            .filter(|&n| self.node(n).is_leader())
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn tick_until(&mut self, what: &str, mut done: impl FnMut(&Cluster) -> bool) {
        for _ in 0..300 {
            if done(self) {
                return;
            }
            self.tick();
        }
        panic!("not reached in 300 ticks: {what}");
    }

    fn elect(&mut self) -> NodeId {
        self.tick_until("a leader", |c| c.leader().is_some());
        self.leader().unwrap()
    }

    /// Proposes `data` at the leader and waits until every running node applied it.
    fn commit(&mut self, data: &[u8]) {
        let leader = self.elect();
        self.step(leader, QuorumInput::Propose(data.to_vec()))
            .unwrap();
        self.tick_until("every running node applied the proposal", |c| {
            c.running()
                .iter()
                .all(|n| c.applied[n].last().is_some_and(|(_, d)| d == data))
        });
    }

    fn data(&self, n: NodeId) -> Vec<Vec<u8>> {
        self.applied[&n].iter().map(|(_, d)| d.clone()).collect()
    }
}

fn encode_state(state: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, data) in state {
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn decode_state(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let index = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        out.push((index, bytes[12..12 + len].to_vec()));
        bytes = &bytes[12 + len..];
    }
    out
}

fn payload(i: usize) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

fn payloads(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

#[test]
fn three_voters_elect_a_leader_and_apply_the_same_entries_in_order() {
    let mut c = Cluster::new();
    let leader = c.elect();
    let follower = *VOTERS.iter().find(|&&n| n != leader).unwrap();
    let refused = c.step(follower, QuorumInput::Propose(payload(99)));
    assert!(
        matches!(refused, Err(QuorumError::NotLeader { leader: Some(l) }) if l == leader),
        "{refused:?}"
    );
    assert!(matches!(
        c.step(leader, QuorumInput::Propose(Vec::new())),
        Err(QuorumError::EmptyProposal)
    ));
    assert!(matches!(
        c.step(
            leader,
            QuorumInput::Propose(vec![0; PROPOSAL_BYTES_MAX + 1])
        ),
        Err(QuorumError::ProposalTooLarge { .. })
    ));
    // Several proposals in one go, then one at a time.
    for i in 0..5 {
        c.step(leader, QuorumInput::Propose(payload(i))).unwrap();
    }
    for i in 5..10 {
        c.commit(&payload(i));
    }
    for n in VOTERS {
        assert_eq!(c.data(n), payloads(0..10), "{n}");
        assert_eq!(c.applied[&n], c.applied[&leader]);
    }
}

#[test]
fn a_restarted_node_redelivers_every_committed_entry_and_rejoins() {
    let mut c = Cluster::new();
    for i in 0..5 {
        c.commit(&payload(i));
    }
    let leader = c.elect();
    let follower = *VOTERS.iter().find(|&&n| n != leader).unwrap();
    let term = c.node(follower).term();
    c.stop(follower);
    for i in 5..8 {
        c.commit(&payload(i));
    }
    c.start(follower);
    assert_eq!(c.node(follower).term(), term, "the hard state was replayed");
    assert_eq!(c.node(follower).recovery().bytes_cut, 0);
    // The first step delivers what was committed before the stop, from the start.
    c.step(follower, QuorumInput::Tick).unwrap();
    assert_eq!(c.data(follower), payloads(0..5));
    c.tick_until("the restarted node caught up", |c| {
        c.applied[&follower].len() == 8
    });
    c.commit(&payload(8));
    for n in VOTERS {
        assert_eq!(c.applied[&n], c.applied[&leader], "{n}");
    }
    assert_eq!(c.data(follower), payloads(0..9));
}

/// All three stop at once: nothing is left in memory, so everything comes from the files.
#[test]
fn a_whole_cluster_restart_keeps_every_committed_entry_and_term() {
    let mut c = Cluster::new();
    for i in 0..6 {
        c.commit(&payload(i));
    }
    let before = c.applied[&VOTERS[0]].clone();
    let terms: Vec<u64> = VOTERS.iter().map(|&n| c.node(n).term()).collect();
    for n in VOTERS {
        c.stop(n);
    }
    c.in_flight.clear();
    for n in VOTERS {
        c.start(n);
    }
    for (n, &term) in VOTERS.iter().zip(&terms) {
        let n = *n;
        assert_eq!(c.node(n).term(), term);
        c.step(n, QuorumInput::Tick).unwrap();
        assert_eq!(
            c.applied[&n], before,
            "{n} re-delivered its committed entries"
        );
    }
    c.commit(&payload(6));
    let leader = c.elect();
    assert!(c.node(leader).term() > terms.into_iter().max().unwrap());
    for n in VOTERS {
        assert_eq!(c.data(n), payloads(0..7));
    }
}

#[test]
fn a_killed_leader_is_replaced_and_catches_up_after_restart() {
    let mut c = Cluster::new();
    c.commit(&payload(0));
    let old = c.elect();
    let old_term = c.node(old).term();
    // Proposed but never sent: the old leader dies with it in its unsynced-elsewhere log.
    c.step(old, QuorumInput::Propose(b"lost".to_vec())).unwrap();
    c.in_flight.clear();
    c.stop(old);
    let new = c.elect();
    assert_ne!(new, old);
    assert!(c.node(new).term() > old_term);
    c.commit(&payload(1));
    c.commit(&payload(2));
    c.start(old);
    c.tick_until("the old leader caught up", |c| c.applied[&old].len() == 3);
    for n in VOTERS {
        assert_eq!(
            c.data(n),
            payloads(0..3),
            "{n}: the lost proposal was overwritten"
        );
    }
    // And it survives another restart without the overwritten entry coming back.
    c.stop(old);
    c.start(old);
    c.step(old, QuorumInput::Tick).unwrap();
    assert_eq!(c.data(old), payloads(0..3));
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_is_kept() {
    let mut c = Cluster::new();
    for i in 0..6 {
        c.commit(&payload(i));
    }
    let leader = c.elect();
    let follower = *VOTERS.iter().find(|&&n| n != leader).unwrap();
    c.stop(follower);
    let path = c.dirs[&follower].path().join(LOG_FILE_NAME);

    // A record half written by a crash: a header claiming 100 bytes, then only 7.
    let len = std::fs::metadata(&path).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&100u32.to_le_bytes()).unwrap();
    file.write_all(&[0xab; 11]).unwrap();
    drop(file);
    c.start(follower);
    let recovery = c.node(follower).recovery().clone();
    assert_eq!((recovery.bytes_kept, recovery.bytes_cut), (len, 15));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "the file was cut"
    );
    c.step(follower, QuorumInput::Tick).unwrap();
    assert_eq!(
        c.data(follower),
        payloads(0..6),
        "nothing before the damage was lost"
    );

    // The last few bytes of the last record gone: the records before it survive, the node
    // re-delivers a prefix, then rejoins and catches up.
    c.stop(follower);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 3).unwrap();
    drop(file);
    c.start(follower);
    let recovery = c.node(follower).recovery().clone();
    assert!(
        recovery.bytes_cut > 0 && recovery.bytes_cut < 100,
        "{recovery:?}"
    );
    assert_eq!(recovery.bytes_kept + recovery.bytes_cut, len - 3);
    assert!(recovery.cut_reason.is_some());
    c.step(follower, QuorumInput::Tick).unwrap();
    let kept = c.data(follower);
    assert!(
        kept.len() >= 4,
        "at most the last entry or commit was lost: {kept:?}"
    );
    assert_eq!(kept[..], payloads(0..6)[..kept.len()]);
    c.commit(&payload(6));
    assert_eq!(c.data(follower), payloads(0..7));
}

/// A corrupted (not torn) byte inside the last record: its checksum fails, so it is cut.
#[test]
fn a_corrupt_last_record_is_cut() {
    let mut c = Cluster::new();
    for i in 0..3 {
        c.commit(&payload(i));
    }
    let leader = c.elect();
    c.stop(leader);
    let path = c.dirs[&leader].path().join(LOG_FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    c.start(leader);
    let recovery = c.node(leader).recovery().clone();
    assert_eq!(recovery.cut_reason, Some("record checksum mismatch"));
    assert!(recovery.bytes_kept < bytes.len() as u64);
    c.tick_until("the damaged node caught up", |c| {
        c.applied[&leader].len() == 3
    });
    c.commit(&payload(3));
    for n in VOTERS {
        assert_eq!(c.data(n), payloads(0..4));
    }
}

#[test]
fn misaddressed_messages_are_refused_without_panicking() {
    let mut c = Cluster::new();
    let leader = c.elect();
    let mut stray = RaftMessage::default();
    stray.set_msg_type(RaftMessageType::MsgHeartbeat);
    stray.from = raft_id(NodeId(7));
    stray.to = raft_id(leader);
    assert!(matches!(
        c.step(leader, QuorumInput::Message(stray.clone())),
        Err(QuorumError::Misaddressed { .. })
    ));
    let follower = VOTERS.into_iter().find(|&n| n != leader).unwrap();
    stray.from = raft_id(follower);
    stray.to = 0;
    assert!(matches!(
        c.step(leader, QuorumInput::Message(stray.clone())),
        Err(QuorumError::Misaddressed { .. })
    ));
    // A snapshot naming other voters would be persisted as this node's own: refused.
    stray.set_msg_type(RaftMessageType::MsgSnapshot);
    stray.to = raft_id(follower);
    stray.from = raft_id(leader);
    stray.term = c.node(leader).term();
    let metadata = stray.mut_snapshot().mut_metadata();
    metadata.index = 100;
    metadata.term = 1;
    metadata.mut_conf_state().voters = vec![raft_id(leader), raft_id(follower)];
    let refused = c.step(follower, QuorumInput::Message(stray));
    assert!(
        matches!(refused, Err(QuorumError::VotersChanged { .. })),
        "{refused:?}"
    );
    assert_eq!(c.node(follower).snapshot_index(), 0);
    c.commit(&payload(0));
}

#[test]
fn open_refuses_a_node_that_is_not_a_voter() {
    let dir = tempfile::tempdir().unwrap();
    let opened = QuorumNode::open(NodeId(5), &VOTERS, dir.path(), 0);
    assert!(matches!(
        opened,
        Err(QuorumError::NotAVoter {
            node: NodeId(5),
            ..
        })
    ));
    assert!(!dir.path().join(LOG_FILE_NAME).exists());
}

/// SplitMix64: the seeded draws of the random test.
fn next_random(state: &mut u64, below: u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % below
}

/// Seeded rounds of stopping and restarting voters (from their files), lost in-flight
/// messages, compactions on any voter, and proposals at whoever leads: one leader per term (checked every tick, across
/// restarts), what every node delivers since its last open is a prefix of one history, and
/// after all run again every node delivered that whole history.
#[test]
fn random_restarts_keep_one_history() {
    for seed in 0..12 {
        let mut rng = seed;
        let mut c = Cluster::new();
        c.rng = seed ^ 0x5EED;
        c.hold_back_one_in = 3;
        let mut history: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut proposed = 0;
        let mut compactions = 0;
        for _ in 0..250 {
            match next_random(&mut rng, 12) {
                0 if c.running().len() == 3 => {
                    c.stop(VOTERS[next_random(&mut rng, 3) as usize]);
                }
                1 | 2 => {
                    let down: Vec<NodeId> = VOTERS
                        .into_iter()
                        .filter(|n| c.nodes[n].is_none())
                        .collect();
                    if let Some(&n) = down.first() {
                        c.start(n);
                    }
                }
                3 => c.in_flight.clear(),
                4 => {
                    let running = c.running();
                    let n = running[next_random(&mut rng, running.len() as u64) as usize];
                    if c.state_index[&n] > 0 {
                        c.compact(n);
                        compactions += 1;
                    }
                }
                _ => {}
            }
            if let Some(leader) = c.leader() {
                proposed += 1;
                // Refusals (e.g. a leader that just lost its quorum) are fine here.
                let _ = c.step(leader, QuorumInput::Propose(payload(proposed)));
            }
            c.tick();
            for n in c.running() {
                let mine = &c.applied[&n];
                if mine.len() > history.len() {
                    assert_eq!(mine[..history.len()], history[..], "seed {seed}: {n}");
                    history = mine.clone();
                } else {
                    assert_eq!(mine[..], history[..mine.len()], "seed {seed}: {n}");
                }
            }
        }
        for n in VOTERS {
            if c.nodes[&n].is_none() {
                c.start(n);
            }
        }
        c.hold_back_one_in = 0;
        c.commit(b"final");
        let everything = c.applied[&VOTERS[0]].clone();
        assert_eq!(everything[..history.len()], history[..], "seed {seed}");
        for n in VOTERS {
            assert_eq!(c.applied[&n], everything, "seed {seed}: {n}");
        }
        assert!(
            history.len() > 20 && compactions > 5,
            "seed {seed}: too little committed ({}) or compacted ({compactions}) to mean anything",
            history.len()
        );
    }
}

fn real_messages() -> Vec<Vec<u8>> {
    // Capture every message of an election and a few commits, in wire form.
    let mut c = Cluster::new();
    for i in 0..3 {
        c.commit(&payload(i));
    }
    let mut seen = BTreeSet::new();
    let leader = c.elect();
    c.step(leader, QuorumInput::Propose(payload(3))).unwrap();
    for (_, bytes) in &c.in_flight {
        seen.insert(bytes.clone());
    }
    seen.into_iter().collect()
}

#[test]
fn messages_round_trip_and_every_prefix_decodes_or_fails_cleanly() {
    let messages = real_messages();
    assert!(!messages.is_empty());
    for bytes in &messages {
        let message = decode_message(bytes).unwrap();
        assert_eq!(&encode_message(&message), bytes);
        for cut in 0..bytes.len() {
            let _ = decode_message(&bytes[..cut]);
        }
    }
    assert!(matches!(
        decode_message(&vec![0; MESSAGE_BYTES_MAX + 1]),
        Err(QuorumError::MessageTooLarge { .. })
    ));
}

proptest! {
    #[test]
    fn decode_message_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_message(&bytes);
    }

    #[test]
    fn decode_message_never_panics_on_mutated_messages(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        which in any::<usize>(),
    ) {
        thread_local!(static MESSAGES: Vec<Vec<u8>> = real_messages());
        let mut bytes = MESSAGES.with(|m| m[which % m.len()].clone());
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] ^= value;
        }
        if let Ok(message) = decode_message(&bytes) {
            let again = encode_message(&message);
            prop_assert_eq!(decode_message(&again).unwrap(), message);
        }
    }
}

/// The module doc's back of the envelope: ~100-byte entries committed one at a time (the
/// broker's pattern) cost under 200 bytes (148 measured) of file each on every voter.
#[test]
fn a_committed_100_byte_entry_costs_under_200_file_bytes() {
    let mut c = Cluster::new();
    c.commit(&[7; 100]);
    let before: Vec<u64> = VOTERS.iter().map(|n| file_len(&c, *n)).collect();
    let count = 50;
    for i in 0..count {
        c.commit(&[i as u8; 100]);
    }
    for (n, before) in VOTERS.iter().zip(before) {
        let per_entry = (file_len(&c, *n) - before) / count;
        assert!(per_entry < 200, "{n}: {per_entry} bytes per entry");
    }
}

fn file_len(c: &Cluster, n: NodeId) -> u64 {
    std::fs::metadata(c.dirs[&n].path().join(LOG_FILE_NAME))
        .unwrap()
        .len()
}

/// A caller that stalls or whose clock jumps by years neither hangs nor loses the cluster.
#[test]
fn a_huge_time_jump_is_capped_and_the_cluster_recovers() {
    let mut c = Cluster::new();
    c.commit(&payload(0));
    c.now_ms += 10 * 365 * 24 * 3_600_000;
    c.tick(); // every node runs its capped burst of ticks
    c.commit(&payload(1));
    for n in VOTERS {
        assert_eq!(c.data(n), payloads(0..2));
    }
}

/// Compaction on every voter, then a whole-cluster restart: each node restores its snapshot
/// first, then applies only the committed entries after it, and the cluster goes on.
#[test]
fn compacted_voters_restart_from_their_snapshots_and_apply_later_entries() {
    let mut c = Cluster::new();
    for i in 0..30 {
        c.commit(&payload(i));
    }
    let before: Vec<u64> = VOTERS.iter().map(|&n| file_len(&c, n)).collect();
    let mut snapshot_at = BTreeMap::new();
    for n in VOTERS {
        snapshot_at.insert(n, c.compact(n));
        assert!(c.path(n, SNAPSHOT_FILE_NAME).exists());
    }
    for (n, before) in VOTERS.iter().zip(before) {
        let after = file_len(&c, *n);
        assert!(after * 4 < before, "{n}: log {before} -> {after} bytes");
    }
    // Compacting again at the same index is a no-op; past what was applied is refused.
    let n0 = VOTERS[0];
    let node = c.nodes.get_mut(&n0).unwrap().as_mut().unwrap();
    node.compact(snapshot_at[&n0], b"ignored".to_vec()).unwrap();
    assert!(matches!(
        node.compact(snapshot_at[&n0] + 100, Vec::new()),
        Err(QuorumError::CompactPastApplied { .. })
    ));
    for i in 30..35 {
        c.commit(&payload(i));
    }
    for n in VOTERS {
        c.stop(n);
    }
    c.in_flight.clear();
    for n in VOTERS {
        c.start(n);
        assert_eq!(c.node(n).snapshot_index(), snapshot_at[&n]);
        c.step(n, QuorumInput::Tick).unwrap();
        assert_eq!(
            c.restored[&n],
            [snapshot_at[&n]],
            "{n} restored its snapshot"
        );
        assert_eq!(c.data(n), payloads(0..35), "{n}: snapshot + later entries");
    }
    c.commit(&payload(35));
    for n in VOTERS {
        assert_eq!(c.data(n), payloads(0..36), "{n}");
        assert_eq!(c.applied[&n], c.applied[&VOTERS[0]], "{n}");
    }
}

/// A voter down while the others compact far past it cannot be sent the entries it misses:
/// the leader sends its snapshot (again when the first ones are lost), the voter restores it,
/// applies what follows, and keeps it; a crash while it installs the snapshot (snapshot file
/// written, log not yet rewritten) leaves it usable.
#[test]
fn a_voter_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut c = Cluster::new();
    for i in 0..5 {
        c.commit(&payload(i));
    }
    let leader = c.elect();
    let behind = *VOTERS.iter().find(|&&n| n != leader).unwrap();
    c.stop(behind);
    let log_before = std::fs::read(c.path(behind, LOG_FILE_NAME)).unwrap();
    let mut leader_snapshot = 0;
    for round in 0..3 {
        for i in 5 + round * 10..15 + round * 10 {
            c.commit(&payload(i));
        }
        for n in c.running() {
            let at = c.compact(n);
            if n == c.elect() {
                leader_snapshot = at;
            }
        }
    }
    c.drop_snapshots = 2;
    c.start(behind);
    c.tick_until("the voter caught up", |c| c.data(behind) == payloads(0..35));
    assert_eq!(c.drop_snapshots, 0);
    assert_eq!(c.snapshots_delivered, 1);
    let restored = c.restored[&behind].clone();
    assert!(
        restored.len() == 1 && restored[0] >= leader_snapshot,
        "restored {restored:?}, leader snapshot {leader_snapshot}"
    );
    assert_eq!(c.node(behind).snapshot_index(), restored[0]);
    for i in 35..40 {
        c.commit(&payload(i));
    }
    assert_eq!(c.data(behind), payloads(0..40));
    // The received snapshot is the voter's own now: a restart starts from it.
    c.stop(behind);
    c.start(behind);
    c.step(behind, QuorumInput::Tick).unwrap();
    assert_eq!(c.restored[&behind], restored);
    c.tick_until("the restarted voter caught up", |c| {
        c.data(behind) == payloads(0..40)
    });
    c.commit(&payload(40));
    // The crash point of installing it: the received snapshot, the log from before.
    c.stop(behind);
    std::fs::write(c.path(behind, LOG_FILE_NAME), &log_before).unwrap();
    c.start(behind);
    c.step(behind, QuorumInput::Tick).unwrap();
    assert_eq!(c.restored[&behind], restored);
    c.commit(&payload(41));
    for n in VOTERS {
        assert_eq!(c.data(n), payloads(0..42), "{n}");
        assert_eq!(c.applied[&n], c.applied[&leader], "{n}");
    }
}

/// The crash points of `compact`, simulated by putting back the files a crash would leave:
/// before the snapshot's rename (the new one only as a tmp file: the old pair), between the
/// two renames (new snapshot, old log), and after (new pair, a tmp log left over). Each opens
/// with the whole history.
#[test]
fn a_crash_at_any_point_of_compaction_leaves_a_usable_pair() {
    let mut c = Cluster::new();
    for i in 0..10 {
        c.commit(&payload(i));
    }
    let n = c.elect();
    let first = c.compact(n);
    for i in 10..20 {
        c.commit(&payload(i));
    }
    let old_log = std::fs::read(c.path(n, LOG_FILE_NAME)).unwrap();
    let old_snapshot = std::fs::read(c.path(n, SNAPSHOT_FILE_NAME)).unwrap();
    let second = c.compact(n);
    assert!(second > first);
    let new_log = std::fs::read(c.path(n, LOG_FILE_NAME)).unwrap();
    let new_snapshot = std::fs::read(c.path(n, SNAPSHOT_FILE_NAME)).unwrap();
    c.stop(n);
    type Files<'a> = [(&'a str, Option<&'a [u8]>); 4];
    let crashes: [(&str, Files, u64); 4] = [
        (
            "new snapshot half written",
            [
                (SNAPSHOT_FILE_NAME, Some(&old_snapshot)),
                (
                    SNAPSHOT_TMP_FILE_NAME,
                    Some(&new_snapshot[..new_snapshot.len() / 2]),
                ),
                (LOG_FILE_NAME, Some(&old_log)),
                (LOG_TMP_FILE_NAME, None),
            ],
            first,
        ),
        (
            "new snapshot synced, not renamed",
            [
                (SNAPSHOT_FILE_NAME, Some(&old_snapshot)),
                (SNAPSHOT_TMP_FILE_NAME, Some(&new_snapshot)),
                (LOG_FILE_NAME, Some(&old_log)),
                (LOG_TMP_FILE_NAME, None),
            ],
            first,
        ),
        (
            "snapshot renamed, log rewrite half written",
            [
                (SNAPSHOT_FILE_NAME, Some(&new_snapshot)),
                (SNAPSHOT_TMP_FILE_NAME, None),
                (LOG_FILE_NAME, Some(&old_log)),
                (LOG_TMP_FILE_NAME, Some(&new_log[..new_log.len() - 5])),
            ],
            second,
        ),
        (
            "both renamed",
            [
                (SNAPSHOT_FILE_NAME, Some(&new_snapshot)),
                (SNAPSHOT_TMP_FILE_NAME, None),
                (LOG_FILE_NAME, Some(&new_log)),
                (LOG_TMP_FILE_NAME, None),
            ],
            second,
        ),
    ];
    for (name, files, restored_at) in crashes {
        for (file, bytes) in files {
            let path = c.path(n, file);
            match bytes {
                Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        c.start(n);
        c.step(n, QuorumInput::Tick).unwrap();
        assert_eq!(c.restored[&n], [restored_at], "{name}");
        assert_eq!(c.data(n), payloads(0..20), "{name}");
        assert!(!c.path(n, SNAPSHOT_TMP_FILE_NAME).exists(), "{name}");
        assert!(!c.path(n, LOG_TMP_FILE_NAME).exists(), "{name}");
        c.stop(n);
    }
    // From the last crash point the node rejoins, compacts again and restarts.
    c.start(n);
    c.commit(&payload(20));
    c.compact(n);
    c.commit(&payload(21));
    c.stop(n);
    c.start(n);
    c.tick_until("rejoined", |c| c.data(n) == payloads(0..22));
}

/// What no crash can leave is refused instead of starting empty or with a hole: a damaged
/// snapshot, a log compacted past a snapshot that is missing or older.
#[test]
fn a_damaged_snapshot_or_a_log_past_its_snapshot_fails_open() {
    let mut c = Cluster::new();
    for i in 0..10 {
        c.commit(&payload(i));
    }
    let n = c.elect();
    c.compact(n);
    let old_snapshot = std::fs::read(c.path(n, SNAPSHOT_FILE_NAME)).unwrap();
    c.commit(&payload(10));
    c.compact(n);
    let good = std::fs::read(c.path(n, SNAPSHOT_FILE_NAME)).unwrap();
    c.stop(n);
    let corrupt = |c: &mut Cluster, what: &str| {
        let opened = c.try_start(n);
        assert!(
            matches!(opened, Err(QuorumError::Corrupt { .. })),
            "{what}: {opened:?}"
        );
    };
    let mut flipped = good.clone();
    flipped[good.len() - 3] ^= 1;
    std::fs::write(c.path(n, SNAPSHOT_FILE_NAME), &flipped).unwrap();
    corrupt(&mut c, "a flipped byte in the snapshot");
    std::fs::write(c.path(n, SNAPSHOT_FILE_NAME), &good[..good.len() - 1]).unwrap();
    corrupt(&mut c, "a truncated snapshot");
    std::fs::write(c.path(n, SNAPSHOT_FILE_NAME), &old_snapshot).unwrap();
    corrupt(&mut c, "an older snapshot than the log starts at");
    std::fs::remove_file(c.path(n, SNAPSHOT_FILE_NAME)).unwrap();
    corrupt(&mut c, "no snapshot for a compacted log");
    std::fs::write(c.path(n, SNAPSHOT_FILE_NAME), &good).unwrap();
    c.start(n);
    c.tick_until("the node is back", |c| c.data(n) == payloads(0..11));
}
