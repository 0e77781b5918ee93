//! The simulator's broker node (feature `sim`): a `BrokerLifecycle` (registration,
//! heartbeats, broker-epoch fencing: the code the broker's control thread runs) and the
//! replicas the node hosts, with messages routed to them.
//!
//! Owns: routing messages to replicas, creating a replica for a partition state that names
//! this node. The broker does this routing on its shards (`broker/src/replica/`), so this file
//! is the simulator's stand-in for that wiring, not shipped code.
//! Does not own: registration and fencing (`lifecycle`), replication logic (`replica`), the
//! log (the simulator's disk model).
//! Invariants: those of `lifecycle` (partition states only for the current broker epoch).

use std::collections::BTreeMap;

use crate::config::ReplicaConfig;
use crate::lifecycle::{BrokerLifecycle, LifecycleConfig, LifecycleEvent};
use crate::message::{Action, Message};
use crate::replica::{Ctx, FetchRequest, ProduceRequest, RecoveredLog, Replica};
use crate::types::{Address, BrokerEpoch, NodeId, PartitionId, PartitionState, ReplicaError};

/// Inputs to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeInput<P> {
    /// Time passed; call at least every few milliseconds of the smallest configured interval.
    Tick,
    Message {
        from: Address,
        message: Message<P>,
    },
    /// The log of `partition` is durable below `offset` (the log's durable offset now).
    Durable {
        partition: PartitionId,
        offset: i64,
    },
}

pub struct Node {
    id: NodeId,
    config: ReplicaConfig,
    lifecycle: BrokerLifecycle,
    replicas: BTreeMap<PartitionId, Replica>,
}

impl Node {
    /// A node process starting with the logs it recovered.
    pub fn new(
        id: NodeId,
        incarnation: u64,
        config: ReplicaConfig,
        recovered: impl IntoIterator<Item = (PartitionId, RecoveredLog)>,
    ) -> Node {
        config
            .validate()
            .expect("replica config validated at start-up");
        let lifecycle = LifecycleConfig {
            registration_retry_ms: config.request_timeout_ms,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
        };
        let mut node = Node {
            id,
            config,
            lifecycle: BrokerLifecycle::new(id, incarnation, lifecycle),
            replicas: BTreeMap::new(),
        };
        for (partition, log) in recovered {
            let replica = Replica::new(id, partition, config, log, node.request_id_base());
            node.replicas.insert(partition, replica);
        }
        node
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn incarnation(&self) -> u64 {
        self.lifecycle.incarnation()
    }

    pub fn broker_epoch(&self) -> Option<BrokerEpoch> {
        self.lifecycle.broker_epoch()
    }

    pub fn replica(&self, partition: PartitionId) -> Option<&Replica> {
        self.replicas.get(&partition)
    }

    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values()
    }

    pub fn step<P: Clone>(&mut self, now_ms: i64, input: NodeInput<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        match input {
            NodeInput::Tick => self.tick(now_ms, &mut out),
            NodeInput::Durable { partition, offset } => {
                let ctx = self.ctx(now_ms);
                if let Some(replica) = self.replicas.get_mut(&partition) {
                    replica.on_durable(ctx, offset, &mut out);
                }
            }
            NodeInput::Message { from, message } => {
                self.on_message(now_ms, from, message, &mut out)
            }
        }
        out
    }
}

impl Node {
    fn ctx(&self, now_ms: i64) -> Ctx {
        Ctx {
            now_ms,
            broker_epoch: self.lifecycle.broker_epoch(),
        }
    }

    fn request_id_base(&self) -> u64 {
        (self.lifecycle.incarnation() << 40) | (u64::from(self.replicas.len() as u32) << 24)
    }

    fn tick<P: Clone>(&mut self, now_ms: i64, out: &mut Vec<Action<P>>) {
        if let Some(message) = self.lifecycle.poll(now_ms) {
            out.push(Action::Send {
                to: Address::Controller,
                message,
            });
        }
        let ctx = self.ctx(now_ms);
        for replica in self.replicas.values_mut() {
            replica.tick(ctx, out);
        }
    }

    fn apply_states<P: Clone>(
        &mut self,
        now_ms: i64,
        states: Vec<PartitionState>,
        out: &mut Vec<Action<P>>,
    ) {
        let ctx = self.ctx(now_ms);
        for state in states {
            if !state.replicas.contains(&self.id) {
                continue;
            }
            let base = self.request_id_base();
            let replica = self.replicas.entry(state.partition).or_insert_with(|| {
                Replica::new(
                    self.id,
                    state.partition,
                    self.config,
                    RecoveredLog::default(),
                    base,
                )
            });
            replica.on_partition_state(ctx, state, out);
        }
    }

    fn on_message<P: Clone>(
        &mut self,
        now_ms: i64,
        from: Address,
        message: Message<P>,
        out: &mut Vec<Action<P>>,
    ) {
        let message = match self.lifecycle.on_message(message) {
            LifecycleEvent::Other(message) => message,
            LifecycleEvent::Registered(_) => return self.tick(now_ms, out),
            LifecycleEvent::States(states) => return self.apply_states(now_ms, states, out),
            LifecycleEvent::Refused(_) | LifecycleEvent::Ignored => return,
        };
        let ctx = self.ctx(now_ms);
        match message {
            Message::Produce {
                request_id,
                partition,
                acks,
                record_count,
                payload,
            } => match self.replicas.get_mut(&partition) {
                Some(replica) => {
                    let request = ProduceRequest {
                        client: from,
                        request_id,
                        acks,
                        record_count,
                        payload,
                    };
                    replica.on_produce(ctx, request, out)
                }
                None => out.push(Action::Send {
                    to: from,
                    message: Message::ProduceResponse {
                        request_id,
                        partition,
                        result: Err(ReplicaError::NotLeaderOrFollower),
                    },
                }),
            },
            Message::Fetch {
                request_id,
                partition,
                replica,
                current_leader_epoch,
                fetch_offset,
            } => match self.replicas.get_mut(&partition) {
                Some(r) => {
                    let request = FetchRequest {
                        from,
                        request_id,
                        replica,
                        current_leader_epoch,
                        fetch_offset,
                    };
                    r.on_fetch(ctx, request, out)
                }
                None => out.push(Action::Send {
                    to: from,
                    message: Message::FetchResponse {
                        request_id,
                        partition,
                        result: Err(ReplicaError::NotLeaderOrFollower),
                    },
                }),
            },
            Message::FetchResponse {
                request_id,
                partition,
                result,
            } => {
                if let Some(r) = self.replicas.get_mut(&partition) {
                    r.on_fetch_response(ctx, request_id, result, out);
                }
            }
            Message::OffsetForLeaderEpoch {
                request_id,
                partition,
                current_leader_epoch,
                leader_epoch,
            } => match self.replicas.get_mut(&partition) {
                Some(r) => r.on_offset_for_leader_epoch(
                    from,
                    request_id,
                    current_leader_epoch,
                    leader_epoch,
                    out,
                ),
                None => out.push(Action::Send {
                    to: from,
                    message: Message::OffsetForLeaderEpochResponse {
                        request_id,
                        partition,
                        result: Err(ReplicaError::NotLeaderOrFollower),
                    },
                }),
            },
            Message::OffsetForLeaderEpochResponse {
                request_id,
                partition,
                result,
            } => {
                if let Some(r) = self.replicas.get_mut(&partition) {
                    r.on_offset_for_leader_epoch_response(ctx, request_id, result, out);
                }
            }
            Message::AlterPartitionResponse {
                partition,
                leader_epoch,
                proposal,
                result,
            } => {
                if let Some(r) = self.replicas.get_mut(&partition) {
                    r.on_alter_partition_response(ctx, leader_epoch, proposal, result, out);
                }
            }
            Message::ProduceResponse { .. }
            | Message::BrokerRegistrationResponse { .. }
            | Message::BrokerHeartbeatResponse { .. }
            | Message::PartitionUpdate { .. }
            | Message::BrokerRegistration { .. }
            | Message::BrokerHeartbeat { .. }
            | Message::AlterPartition { .. } => {}
        }
    }
}
