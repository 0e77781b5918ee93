//! The controller: broker liveness, leader election and ISR commits, as a deterministic
//! sans-IO state machine.
//!
//! Owns: broker registrations (one broker epoch per process incarnation), fencing brokers
//! that miss heartbeats, the partition records (replicas, ISR, leader, leader epoch,
//! partition epoch), elections, and answering AlterPartition.
//! Does not own: durability or replication of its own state. In the broker every node applies
//! the metadata quorum's committed entries to its own copy (`broker/src/controller/stm.rs`),
//! so the copies agree; the simulator runs one instance behind its network. Kafka error codes:
//! refusals are `ReplicaError`s, mapped to codes by the broker, never chosen here.
//! Invariants:
//! - The leader epoch grows on every leader change (including to and from "no leader"); the
//!   partition epoch grows on every change of a partition record.
//! - A clean election picks a live member of the ISR; the ISR is never empty.
//! - A fenced broker leaves every ISR it is in unless it is the last member (then it stays, so
//!   that the partition waits for it rather than electing a replica missing committed data).
//! - A new incarnation of a broker fences the previous one first: its leaderships move and
//!   its leader epochs end, even if it comes back before its session would have expired.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ControllerConfig;
use crate::message::{Action, Message};
use crate::types::{
    Address, BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, PartitionId, PartitionState,
    ReplicaError,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerInput<P> {
    Tick,
    Message { from: Address, message: Message<P> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRecord {
    pub incarnation: u64,
    pub broker_epoch: BrokerEpoch,
    pub last_heartbeat_ms: i64,
    pub fenced: bool,
}

struct PartitionRecord {
    state: PartitionState,
    /// The newest AlterPartition seen, as (leader epoch, proposal).
    last_proposal: (LeaderEpoch, u64),
}

/// The controller's whole state, for metadata snapshots (the driver serializes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSnapshot {
    pub brokers: Vec<(NodeId, BrokerRecord)>,
    /// Each partition's record and the newest AlterPartition seen (leader epoch, proposal).
    pub partitions: Vec<(PartitionState, LeaderEpoch, u64)>,
    pub next_broker_epoch: i64,
}

pub struct Controller {
    config: ControllerConfig,
    brokers: BTreeMap<NodeId, BrokerRecord>,
    partitions: BTreeMap<PartitionId, PartitionRecord>,
    next_broker_epoch: i64,
}

impl Controller {
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            config,
            brokers: BTreeMap::new(),
            partitions: BTreeMap::new(),
            next_broker_epoch: 1,
        }
    }

    /// Creates a partition with the given assignment. Every replica starts in the ISR (all
    /// logs are empty); the leader is elected once a replica registers.
    pub fn create_partition(&mut self, partition: PartitionId, replicas: Vec<NodeId>) {
        assert!(!replicas.is_empty());
        assert!(!self.partitions.contains_key(&partition));
        let mut isr = replicas.clone();
        isr.sort();
        isr.dedup();
        assert_eq!(isr.len(), replicas.len(), "replicas must be distinct");
        let state = PartitionState {
            partition,
            replicas,
            isr,
            leader: None,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        };
        self.partitions.insert(
            partition,
            PartitionRecord {
                state,
                last_proposal: (LeaderEpoch(0), 0),
            },
        );
    }

    /// Elects a leader for `partition` if it has none and an eligible replica is alive (a
    /// partition created while its replicas are registered). Returns the state if it changed.
    pub fn elect_if_leaderless(&mut self, partition: PartitionId) -> Option<PartitionState> {
        let state = &self.partitions.get(&partition)?.state;
        if state.leader.is_some() {
            return None;
        }
        let (leader, isr) = self.elect(state, &state.isr);
        let mut changed = BTreeSet::new();
        self.change(partition, leader, isr, &mut changed);
        changed
            .contains(&partition)
            .then(|| self.partitions[&partition].state.clone())
    }

    /// Moves leadership back to each partition's preferred replica (the first in assignment
    /// order) where that replica is alive, in the ISR and not leading (Kafka's
    /// auto.leader.rebalance, per partition). Returns the states that changed.
    pub fn elect_preferred_leaders(&mut self) -> Vec<PartitionState> {
        let mut changed = BTreeSet::new();
        let ids: Vec<PartitionId> = self.partitions.keys().copied().collect();
        for id in ids {
            let state = &self.partitions[&id].state;
            let Some(&preferred) = state.replicas.first() else {
                continue;
            };
            if state.leader != Some(preferred)
                && state.isr.contains(&preferred)
                && self.alive(preferred)
            {
                let isr = state.isr.clone();
                self.change(id, Some(preferred), isr, &mut changed);
            }
        }
        changed
            .iter()
            .map(|id| self.partitions[id].state.clone())
            .collect()
    }

    /// Everything the controller knows, to rebuild it with `restore`.
    pub fn snapshot(&self) -> ControllerSnapshot {
        ControllerSnapshot {
            brokers: self.brokers.iter().map(|(n, b)| (*n, b.clone())).collect(),
            partitions: self
                .partitions
                .values()
                .map(|r| (r.state.clone(), r.last_proposal.0, r.last_proposal.1))
                .collect(),
            next_broker_epoch: self.next_broker_epoch,
        }
    }

    /// A controller in exactly the state `snapshot` was taken in.
    pub fn restore(config: ControllerConfig, snapshot: ControllerSnapshot) -> Controller {
        Controller {
            config,
            brokers: snapshot.brokers.into_iter().collect(),
            partitions: snapshot
                .partitions
                .into_iter()
                .map(|(state, epoch, proposal)| {
                    (
                        state.partition,
                        PartitionRecord {
                            state,
                            last_proposal: (epoch, proposal),
                        },
                    )
                })
                .collect(),
            next_broker_epoch: snapshot.next_broker_epoch,
        }
    }

    /// Forgets a partition (its topic was deleted). Later messages about it are answered as
    /// for an unknown partition.
    pub fn remove_partition(&mut self, partition: PartitionId) {
        self.partitions.remove(&partition);
    }

    /// Every registered broker.
    pub fn brokers(&self) -> impl Iterator<Item = (&NodeId, &BrokerRecord)> {
        self.brokers.iter()
    }

    pub fn partition(&self, partition: PartitionId) -> Option<&PartitionState> {
        self.partitions.get(&partition).map(|r| &r.state)
    }

    pub fn partitions(&self) -> impl Iterator<Item = &PartitionState> {
        self.partitions.values().map(|r| &r.state)
    }

    pub fn broker(&self, node: NodeId) -> Option<&BrokerRecord> {
        self.brokers.get(&node)
    }

    pub fn step<P: Clone>(&mut self, now_ms: i64, input: ControllerInput<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        let mut changed = BTreeSet::new();
        match input {
            ControllerInput::Tick => self.expire_sessions(now_ms, &mut changed),
            ControllerInput::Message { from, message } => {
                self.on_message(now_ms, from, message, &mut changed, &mut out);
            }
        }
        self.push_changes(&changed, &mut out);
        out
    }
}

impl Controller {
    fn alive(&self, node: NodeId) -> bool {
        self.brokers.get(&node).is_some_and(|b| !b.fenced)
    }

    fn expire_sessions(&mut self, now_ms: i64, changed: &mut BTreeSet<PartitionId>) {
        let expired: Vec<NodeId> = self
            .brokers
            .iter()
            .filter(|(_, b)| {
                !b.fenced && now_ms - b.last_heartbeat_ms > self.config.broker_session_timeout_ms
            })
            .map(|(&n, _)| n)
            .collect();
        for node in expired {
            self.fence(node, changed);
        }
    }

    /// Fences `node`: out of every ISR where it is not the last member, and its leaderships
    /// move to another live ISR member (or to none).
    fn fence(&mut self, node: NodeId, changed: &mut BTreeSet<PartitionId>) {
        if let Some(b) = self.brokers.get_mut(&node) {
            b.fenced = true;
        }
        let ids: Vec<PartitionId> = self.partitions.keys().copied().collect();
        for id in ids {
            let state = &self.partitions[&id].state;
            if !state.replicas.contains(&node) {
                continue;
            }
            let mut isr = state.isr.clone();
            if isr.len() > 1 {
                isr.retain(|&m| m != node);
            }
            let leader = if state.leader == Some(node) {
                self.elect(state, &isr)
            } else {
                (state.leader, isr)
            };
            self.change(id, leader.0, leader.1, changed);
        }
    }

    fn unfence(&mut self, node: NodeId, changed: &mut BTreeSet<PartitionId>) {
        if let Some(b) = self.brokers.get_mut(&node) {
            b.fenced = false;
        }
        let ids: Vec<PartitionId> = self.partitions.keys().copied().collect();
        for id in ids {
            let state = &self.partitions[&id].state;
            if state.leader.is_none() && state.replicas.contains(&node) {
                let (leader, isr) = self.elect(state, &state.isr);
                self.change(id, leader, isr, changed);
            }
        }
    }

    /// The first live replica in assignment order that is in `isr`; with unclean election
    /// enabled and none alive in the ISR, the first live replica, alone in the new ISR.
    fn elect(&self, state: &PartitionState, isr: &[NodeId]) -> (Option<NodeId>, Vec<NodeId>) {
        let clean = state
            .replicas
            .iter()
            .copied()
            .find(|&r| isr.contains(&r) && self.alive(r));
        if let Some(leader) = clean {
            return (Some(leader), isr.to_vec());
        }
        if self.config.unclean_leader_election
            && let Some(leader) = state.replicas.iter().copied().find(|&r| self.alive(r))
        {
            return (Some(leader), vec![leader]);
        }
        (None, isr.to_vec())
    }

    /// Applies a new leader and ISR, bumping the epochs if anything changed.
    fn change(
        &mut self,
        id: PartitionId,
        leader: Option<NodeId>,
        isr: Vec<NodeId>,
        changed: &mut BTreeSet<PartitionId>,
    ) {
        assert!(!isr.is_empty(), "the ISR is never empty");
        let state = &mut self.partitions.get_mut(&id).expect("known partition").state;
        if state.leader == leader && state.isr == isr {
            return;
        }
        if state.leader != leader {
            state.leader_epoch = LeaderEpoch(state.leader_epoch.0 + 1);
        }
        state.leader = leader;
        state.isr = isr;
        state.partition_epoch = PartitionEpoch(state.partition_epoch.0 + 1);
        changed.insert(id);
    }

    fn push_changes<P: Clone>(&self, changed: &BTreeSet<PartitionId>, out: &mut Vec<Action<P>>) {
        for (&node, broker) in &self.brokers {
            let states: Vec<PartitionState> = changed
                .iter()
                .map(|id| &self.partitions[id].state)
                .filter(|s| s.replicas.contains(&node))
                .cloned()
                .collect();
            if !states.is_empty() {
                out.push(Action::Send {
                    to: Address::Broker(node),
                    message: Message::PartitionUpdate {
                        broker_epoch: broker.broker_epoch,
                        states,
                    },
                });
            }
        }
    }

    fn states_of(&self, node: NodeId) -> Vec<PartitionState> {
        self.partitions
            .values()
            .map(|r| &r.state)
            .filter(|s| s.replicas.contains(&node))
            .cloned()
            .collect()
    }

    fn on_message<P: Clone>(
        &mut self,
        now_ms: i64,
        from: Address,
        message: Message<P>,
        changed: &mut BTreeSet<PartitionId>,
        out: &mut Vec<Action<P>>,
    ) {
        match message {
            Message::BrokerRegistration { node, incarnation } => {
                self.on_registration(now_ms, node, incarnation, changed, out);
            }
            Message::BrokerHeartbeat { node, broker_epoch } => {
                let current = self
                    .brokers
                    .get(&node)
                    .is_some_and(|b| b.broker_epoch == broker_epoch);
                let result = if current {
                    let b = self.brokers.get_mut(&node).expect("checked");
                    b.last_heartbeat_ms = now_ms;
                    if b.fenced {
                        self.unfence(node, changed);
                    }
                    // Changes made now are pushed too; the answer carries everything.
                    Ok(self.states_of(node))
                } else {
                    Err(ReplicaError::StaleBrokerEpoch)
                };
                out.push(Action::Send {
                    to: from,
                    message: Message::BrokerHeartbeatResponse {
                        broker_epoch,
                        result,
                    },
                });
            }
            Message::AlterPartition {
                node,
                broker_epoch,
                partition,
                leader_epoch,
                partition_epoch,
                proposal,
                new_isr,
            } => {
                let request = AlterRequest {
                    node,
                    broker_epoch,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    proposal,
                    new_isr,
                };
                if let Some(result) = self.on_alter_partition(request, changed) {
                    out.push(Action::Send {
                        to: from,
                        message: Message::AlterPartitionResponse {
                            partition,
                            leader_epoch,
                            proposal,
                            result,
                        },
                    });
                }
            }
            _ => {}
        }
    }

    fn on_registration<P: Clone>(
        &mut self,
        now_ms: i64,
        node: NodeId,
        incarnation: u64,
        changed: &mut BTreeSet<PartitionId>,
        out: &mut Vec<Action<P>>,
    ) {
        let broker_epoch = match self.brokers.get(&node) {
            Some(b) if incarnation < b.incarnation => return,
            Some(b) if incarnation == b.incarnation => b.broker_epoch,
            previous => {
                if previous.is_some() {
                    self.fence(node, changed);
                }
                let broker_epoch = BrokerEpoch(self.next_broker_epoch);
                self.next_broker_epoch += 1;
                let record = BrokerRecord {
                    incarnation,
                    broker_epoch,
                    last_heartbeat_ms: now_ms,
                    fenced: true,
                };
                self.brokers.insert(node, record);
                self.unfence(node, changed);
                broker_epoch
            }
        };
        out.push(Action::Send {
            to: Address::Broker(node),
            message: Message::BrokerRegistrationResponse {
                incarnation,
                broker_epoch,
            },
        });
    }

    /// `None`: a proposal not newer than one already seen; it gets no answer.
    fn on_alter_partition(
        &mut self,
        request: AlterRequest,
        changed: &mut BTreeSet<PartitionId>,
    ) -> Option<Result<PartitionState, ReplicaError>> {
        let registered = self
            .brokers
            .get(&request.node)
            .is_some_and(|b| b.broker_epoch == request.broker_epoch);
        if !registered {
            return Some(Err(ReplicaError::StaleBrokerEpoch));
        }
        let alive = |n: &NodeId| self.alive(*n);
        let Some(record) = self.partitions.get(&request.partition) else {
            return Some(Err(ReplicaError::InvalidRequest));
        };
        let state = &record.state;
        if request.leader_epoch < state.leader_epoch {
            return Some(Err(ReplicaError::FencedLeaderEpoch));
        }
        if request.leader_epoch > state.leader_epoch || state.leader != Some(request.node) {
            return Some(Err(ReplicaError::NotLeaderOrFollower));
        }
        if (request.leader_epoch, request.proposal) <= record.last_proposal {
            return None;
        }
        // A leader may leave the ISR (its log cannot take writes: disk full), only by removing
        // itself: leadership then goes to a live member, which has everything committed.
        let leaves = !request.new_isr.contains(&request.node);
        let valid_shape = !request.new_isr.is_empty()
            && request.new_isr.windows(2).all(|w| w[0] < w[1])
            && request.new_isr.iter().all(|m| state.replicas.contains(m))
            && (!leaves || request.new_isr.iter().all(|m| state.isr.contains(m)));
        let (leader, new_isr) = if leaves {
            // A clean election only, whatever unclean.leader.election says.
            let clean = state
                .replicas
                .iter()
                .copied()
                .find(|r| request.new_isr.contains(r) && self.alive(*r));
            (clean, request.new_isr.clone())
        } else {
            (state.leader, request.new_isr.clone())
        };
        let added_alive = request
            .new_isr
            .iter()
            .filter(|m| !state.isr.contains(m))
            .all(alive);
        let result = if request.new_isr == state.isr {
            Ok(())
        } else if request.partition_epoch != state.partition_epoch {
            Err(ReplicaError::InvalidUpdateVersion)
        } else if !valid_shape {
            Err(ReplicaError::InvalidRequest)
        } else if !added_alive || leader.is_none() {
            Err(ReplicaError::IneligibleReplica)
        } else {
            Ok(())
        };
        let record = self
            .partitions
            .get_mut(&request.partition)
            .expect("checked");
        record.last_proposal = (request.leader_epoch, request.proposal);
        if let Err(error) = result {
            return Some(Err(error));
        }
        self.change(request.partition, leader, new_isr, changed);
        Some(Ok(self.partitions[&request.partition].state.clone()))
    }
}

struct AlterRequest {
    node: NodeId,
    broker_epoch: BrokerEpoch,
    partition: PartitionId,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    proposal: u64,
    new_isr: Vec<NodeId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId(0);

    fn controller(unclean: bool) -> (Controller, Vec<BrokerEpoch>) {
        let config = ControllerConfig {
            broker_session_timeout_ms: 100,
            unclean_leader_election: unclean,
        };
        let mut c = Controller::new(config);
        c.create_partition(P, vec![NodeId(0), NodeId(1), NodeId(2)]);
        let epochs = (0..3).map(|n| register(&mut c, 0, n, 1)).collect();
        (c, epochs)
    }

    fn register(c: &mut Controller, now_ms: i64, node: i32, incarnation: u64) -> BrokerEpoch {
        let message = Message::BrokerRegistration {
            node: NodeId(node),
            incarnation,
        };
        let out: Vec<Action<()>> = c.step(
            now_ms,
            ControllerInput::Message {
                from: Address::Broker(NodeId(node)),
                message,
            },
        );
        out.iter()
            .find_map(|a| match a {
                Action::Send {
                    message: Message::BrokerRegistrationResponse { broker_epoch, .. },
                    ..
                } => Some(*broker_epoch),
                _ => None,
            })
            .expect("registration answered")
    }

    fn heartbeat(c: &mut Controller, now_ms: i64, node: i32, broker_epoch: BrokerEpoch) {
        let message = Message::BrokerHeartbeat {
            node: NodeId(node),
            broker_epoch,
        };
        let _: Vec<Action<()>> = c.step(
            now_ms,
            ControllerInput::Message {
                from: Address::Broker(NodeId(node)),
                message,
            },
        );
    }

    fn tick(c: &mut Controller, now_ms: i64) {
        let _: Vec<Action<()>> = c.step(now_ms, ControllerInput::Tick);
    }

    fn alter(
        c: &mut Controller,
        epoch: BrokerEpoch,
        proposal: u64,
        new_isr: &[i32],
    ) -> Option<Result<PartitionState, ReplicaError>> {
        let s = c.partition(P).expect("created").clone();
        let message = Message::AlterPartition {
            node: s.leader.expect("has a leader"),
            broker_epoch: epoch,
            partition: P,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            proposal,
            new_isr: new_isr.iter().map(|&n| NodeId(n)).collect(),
        };
        let out: Vec<Action<()>> = c.step(
            1,
            ControllerInput::Message {
                from: Address::Broker(NodeId(0)),
                message,
            },
        );
        out.into_iter().find_map(|a| match a {
            Action::Send {
                message: Message::AlterPartitionResponse { result, .. },
                ..
            } => Some(result),
            _ => None,
        })
    }

    #[test]
    fn fencing_the_leader_elects_the_next_isr_member() {
        let (mut c, epochs) = controller(false);
        let s = c.partition(P).unwrap().clone();
        assert_eq!(s.leader, Some(NodeId(0)));
        heartbeat(&mut c, 90, 1, epochs[1]);
        heartbeat(&mut c, 90, 2, epochs[2]);
        tick(&mut c, 101);
        let after = c.partition(P).unwrap();
        assert_eq!(after.leader, Some(NodeId(1)));
        assert_eq!(after.isr, vec![NodeId(1), NodeId(2)]);
        assert!(after.leader_epoch > s.leader_epoch && after.partition_epoch > s.partition_epoch);
    }

    /// A leader whose log cannot take writes leaves the ISR: another live member leads.
    #[test]
    fn a_leader_leaving_the_isr_hands_leadership_to_a_live_member() {
        let (mut c, epochs) = controller(true);
        let s = c.partition(P).unwrap().clone();
        assert_eq!(s.leader, Some(NodeId(0)));
        assert_eq!(
            alter(&mut c, epochs[0], 1, &[1]).unwrap().unwrap().isr,
            vec![NodeId(1)]
        );
        let after = c.partition(P).unwrap().clone();
        assert_eq!(after.leader, Some(NodeId(1)));
        assert!(after.leader_epoch > s.leader_epoch);
        // Node 1 leads now; leaving for a member outside the ISR is refused, even with
        // unclean election on.
        let alter_from = |c: &mut Controller, node: i32, proposal: u64, new_isr: &[i32]| {
            let s = c.partition(P).expect("created").clone();
            let message = Message::AlterPartition {
                node: NodeId(node),
                broker_epoch: epochs[node as usize],
                partition: P,
                leader_epoch: s.leader_epoch,
                partition_epoch: s.partition_epoch,
                proposal,
                new_isr: new_isr.iter().map(|&n| NodeId(n)).collect(),
            };
            let out: Vec<Action<()>> = c.step(
                1,
                ControllerInput::Message {
                    from: Address::Broker(NodeId(node)),
                    message,
                },
            );
            out.into_iter().find_map(|a| match a {
                Action::Send {
                    message: Message::AlterPartitionResponse { result, .. },
                    ..
                } => Some(result),
                _ => None,
            })
        };
        assert_eq!(
            alter_from(&mut c, 1, 1, &[2]),
            Some(Err(ReplicaError::InvalidRequest))
        );
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(1)));
    }

    #[test]
    fn the_last_isr_member_stays_and_the_partition_waits_unless_unclean() {
        for unclean in [false, true] {
            let (mut c, epochs) = controller(unclean);
            assert_eq!(
                alter(&mut c, epochs[0], 1, &[0]).unwrap().unwrap().isr,
                vec![NodeId(0)]
            );
            heartbeat(&mut c, 90, 1, epochs[1]);
            heartbeat(&mut c, 90, 2, epochs[2]);
            tick(&mut c, 101);
            let s = c.partition(P).unwrap();
            if unclean {
                assert_eq!(
                    (s.leader, s.isr.clone()),
                    (Some(NodeId(1)), vec![NodeId(1)])
                );
            } else {
                assert_eq!((s.leader, s.isr.clone()), (None, vec![NodeId(0)]));
                let before = s.leader_epoch;
                let epoch = register(&mut c, 150, 0, 2);
                assert!(epoch > epochs[2]);
                let s = c.partition(P).unwrap();
                assert_eq!(s.leader, Some(NodeId(0)));
                assert!(s.leader_epoch > before);
            }
        }
    }

    #[test]
    fn a_new_incarnation_ends_the_old_leader_epoch() {
        let (mut c, _) = controller(false);
        let before = c.partition(P).unwrap().leader_epoch;
        register(&mut c, 10, 0, 2);
        let s = c.partition(P).unwrap();
        assert_ne!(s.leader, Some(NodeId(0)), "moved to another ISR member");
        assert!(s.leader_epoch > before);
        // A delayed registration of the older incarnation changes nothing and gets no answer.
        let message = Message::BrokerRegistration {
            node: NodeId(0),
            incarnation: 1,
        };
        let out: Vec<Action<()>> = c.step(
            20,
            ControllerInput::Message {
                from: Address::Broker(NodeId(0)),
                message,
            },
        );
        assert!(out.is_empty());
    }

    #[test]
    fn alter_partition_checks_versions_and_orders_proposals() {
        let (mut c, epochs) = controller(false);
        assert!(alter(&mut c, epochs[0], 2, &[0, 1]).unwrap().is_ok());
        assert_eq!(
            alter(&mut c, epochs[0], 1, &[0, 2]),
            None,
            "older proposal ignored"
        );
        assert_eq!(
            alter(&mut c, epochs[1], 3, &[0]),
            Some(Err(ReplicaError::StaleBrokerEpoch))
        );
        // Adding a fenced broker is refused.
        heartbeat(&mut c, 90, 0, epochs[0]);
        heartbeat(&mut c, 90, 1, epochs[1]);
        tick(&mut c, 101);
        assert_eq!(
            alter(&mut c, epochs[0], 4, &[0, 1, 2]),
            Some(Err(ReplicaError::IneligibleReplica))
        );
    }

    #[test]
    fn preferred_leader_returns_once_back_in_the_isr() {
        let (mut c, epochs) = controller(false);
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(0)));
        // Node 0 goes silent: fenced, leadership moves to 1, 0 leaves the ISR.
        heartbeat(&mut c, 90, 1, epochs[1]);
        heartbeat(&mut c, 90, 2, epochs[2]);
        tick(&mut c, 150);
        let s = c.partition(P).unwrap().clone();
        assert_eq!(s.leader, Some(NodeId(1)));
        assert!(!s.isr.contains(&NodeId(0)));
        // Nothing to do while the preferred replica is out of the ISR.
        assert!(c.elect_preferred_leaders().is_empty());
        let new_epoch = register(&mut c, 160, 0, 2);
        assert!(c.elect_preferred_leaders().is_empty());
        alter(&mut c, epochs[1], 1, &[0, 1, 2]).unwrap().unwrap();
        let changed = c.elect_preferred_leaders();
        assert_eq!(changed.len(), 1);
        let s = c.partition(P).unwrap();
        assert_eq!(s.leader, Some(NodeId(0)));
        assert_eq!(s.leader_epoch.0, changed[0].leader_epoch.0);
        assert!(s.leader_epoch > LeaderEpoch(2));
        assert!(c.elect_preferred_leaders().is_empty());
        let _ = new_epoch;
    }

    #[test]
    fn snapshot_restores_the_same_state() {
        let (mut c, epochs) = controller(false);
        heartbeat(&mut c, 90, 1, epochs[1]);
        tick(&mut c, 150);
        let snap = c.snapshot();
        let mut restored = Controller::restore(c.config, snap.clone());
        assert_eq!(restored.snapshot(), snap);
        // Both go on identically.
        tick(&mut c, 400);
        tick(&mut restored, 400);
        assert_eq!(restored.snapshot(), c.snapshot());
    }
}
