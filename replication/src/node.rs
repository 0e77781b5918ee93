//! A broker node: registration and heartbeats with the controller, and the replicas it hosts.
//!
//! Owns: the node's registration (`broker_epoch`), the heartbeat timer, routing messages to
//! replicas, and refusing controller messages meant for another incarnation of this node.
//! Does not own: replication logic (`replica`), the log (the driver).
//! Invariants:
//! - A node applies partition states only from answers and pushes stamped with its own
//!   current broker epoch, so a restarted node never acts on what the controller told its
//!   previous incarnation (e.g. "you lead epoch 7", after it lost its unsynced tail).
//! - `incarnation` grows across restarts of the same node id (the driver supplies it).

use std::collections::BTreeMap;

use crate::config::ReplicaConfig;
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
    incarnation: u64,
    config: ReplicaConfig,
    broker_epoch: Option<BrokerEpoch>,
    last_registration_ms: Option<i64>,
    last_heartbeat_ms: Option<i64>,
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
        let mut node = Node {
            id,
            incarnation,
            config,
            broker_epoch: None,
            last_registration_ms: None,
            last_heartbeat_ms: None,
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
        self.incarnation
    }

    pub fn broker_epoch(&self) -> Option<BrokerEpoch> {
        self.broker_epoch
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
            broker_epoch: self.broker_epoch,
        }
    }

    fn request_id_base(&self) -> u64 {
        (self.incarnation << 40) | (u64::from(self.replicas.len() as u32) << 24)
    }

    fn tick<P: Clone>(&mut self, now_ms: i64, out: &mut Vec<Action<P>>) {
        match self.broker_epoch {
            None => {
                let due = self
                    .last_registration_ms
                    .is_none_or(|at| now_ms - at >= self.config.request_timeout_ms);
                if due {
                    self.last_registration_ms = Some(now_ms);
                    out.push(Action::Send {
                        to: Address::Controller,
                        message: Message::BrokerRegistration {
                            node: self.id,
                            incarnation: self.incarnation,
                        },
                    });
                }
            }
            Some(broker_epoch) => {
                let due = self
                    .last_heartbeat_ms
                    .is_none_or(|at| now_ms - at >= self.config.heartbeat_interval_ms);
                if due {
                    self.last_heartbeat_ms = Some(now_ms);
                    out.push(Action::Send {
                        to: Address::Controller,
                        message: Message::BrokerHeartbeat {
                            node: self.id,
                            broker_epoch,
                        },
                    });
                }
            }
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
            Message::BrokerRegistrationResponse {
                incarnation,
                broker_epoch,
            } => {
                if incarnation == self.incarnation && self.broker_epoch.is_none() {
                    self.broker_epoch = Some(broker_epoch);
                    self.last_heartbeat_ms = None;
                    self.tick(now_ms, out);
                }
            }
            Message::BrokerHeartbeatResponse {
                broker_epoch,
                result,
            } => {
                if Some(broker_epoch) != self.broker_epoch {
                    return;
                }
                match result {
                    Ok(states) => self.apply_states(now_ms, states, out),
                    Err(_) => {
                        self.broker_epoch = None;
                        self.last_registration_ms = None;
                    }
                }
            }
            Message::PartitionUpdate {
                broker_epoch,
                states,
            } => {
                if Some(broker_epoch) == self.broker_epoch {
                    self.apply_states(now_ms, states, out);
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
            | Message::BrokerRegistration { .. }
            | Message::BrokerHeartbeat { .. }
            | Message::AlterPartition { .. } => {}
        }
    }
}
