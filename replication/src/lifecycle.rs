//! A broker's lifecycle with the controller: registration (one broker epoch per process
//! incarnation), heartbeats, and which controller messages this process may act on. The
//! broker's control thread runs it (`broker/src/controller/thread.rs`) and so does the
//! simulator's node (`node`), so the simulator checks the code that ships.
//!
//! Owns: the broker epoch, the registration and heartbeat timers, and refusing controller
//! messages meant for another incarnation or broker epoch of this node.
//! Does not own: how a registration or heartbeat reaches the controller (the broker proposes
//! it to the metadata quorum; the simulator sends it over its network), what the states mean
//! (the replicas).
//! Invariants:
//! - Partition states come out (`LifecycleEvent::States`) only from answers and pushes stamped
//!   with this process's current broker epoch, so a restarted node never acts on what the
//!   controller told its previous incarnation (e.g. "you lead epoch 7", after it lost its
//!   unsynced tail).
//! - A registration answer counts only for this process's incarnation, and only while it is
//!   not registered; `incarnation` grows across restarts of the same node id (the caller
//!   supplies it).
//! - A refused heartbeat (stale broker epoch) drops the registration: nothing is acted on until
//!   the controller registers this process again.

use crate::message::Message;
use crate::types::{BrokerEpoch, NodeId, PartitionState, ReplicaError};

/// How often a broker asks for registration and heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// A registration not answered within this long is sent again.
    pub registration_retry_ms: i64,
    pub heartbeat_interval_ms: i64,
}

/// What a controller message means to this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifecycleEvent<P> {
    /// The controller registered this process under this broker epoch; a heartbeat is due now.
    Registered(BrokerEpoch),
    /// Partition states addressed to the current broker epoch: hand them to the replicas.
    States(Vec<PartitionState>),
    /// The controller refused a heartbeat: this process registers again.
    Refused(ReplicaError),
    /// Not a lifecycle message (data plane, AlterPartitionResponse): for the caller to route.
    Other(Message<P>),
    /// Meant for another incarnation or broker epoch of this node: dropped.
    Ignored,
}

pub struct BrokerLifecycle {
    node: NodeId,
    incarnation: u64,
    config: LifecycleConfig,
    broker_epoch: Option<BrokerEpoch>,
    last_registration_ms: Option<i64>,
    last_heartbeat_ms: Option<i64>,
}

impl BrokerLifecycle {
    /// A process of `node` that has not registered yet; its registration is due at once.
    pub fn new(node: NodeId, incarnation: u64, config: LifecycleConfig) -> BrokerLifecycle {
        assert!(config.registration_retry_ms > 0 && config.heartbeat_interval_ms > 0);
        BrokerLifecycle {
            node,
            incarnation,
            config,
            broker_epoch: None,
            last_registration_ms: None,
            last_heartbeat_ms: None,
        }
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The current registration; `None` before the controller answered, and after it refused
    /// a heartbeat until it answers the next registration.
    pub fn broker_epoch(&self) -> Option<BrokerEpoch> {
        self.broker_epoch
    }

    /// The `BrokerRegistration` or `BrokerHeartbeat` due at `now_ms`, if any, for the
    /// controller.
    pub fn poll<P>(&mut self, now_ms: i64) -> Option<Message<P>> {
        let due = |last: Option<i64>, interval: i64| last.is_none_or(|at| now_ms - at >= interval);
        match self.broker_epoch {
            None if due(self.last_registration_ms, self.config.registration_retry_ms) => {
                self.last_registration_ms = Some(now_ms);
                Some(Message::BrokerRegistration {
                    node: self.node,
                    incarnation: self.incarnation,
                })
            }
            Some(broker_epoch)
                if due(self.last_heartbeat_ms, self.config.heartbeat_interval_ms) =>
            {
                self.last_heartbeat_ms = Some(now_ms);
                Some(Message::BrokerHeartbeat {
                    node: self.node,
                    broker_epoch,
                })
            }
            _ => None,
        }
    }

    /// Sorts a message from the controller (or anyone) for this process.
    pub fn on_message<P>(&mut self, message: Message<P>) -> LifecycleEvent<P> {
        match message {
            Message::BrokerRegistrationResponse {
                incarnation,
                broker_epoch,
            } => {
                if incarnation != self.incarnation || self.broker_epoch.is_some() {
                    return LifecycleEvent::Ignored;
                }
                self.broker_epoch = Some(broker_epoch);
                self.last_heartbeat_ms = None;
                LifecycleEvent::Registered(broker_epoch)
            }
            Message::BrokerHeartbeatResponse {
                broker_epoch,
                result,
            } => {
                if Some(broker_epoch) != self.broker_epoch {
                    return LifecycleEvent::Ignored;
                }
                match result {
                    Ok(states) => LifecycleEvent::States(states),
                    Err(error) => {
                        self.broker_epoch = None;
                        self.last_registration_ms = None;
                        LifecycleEvent::Refused(error)
                    }
                }
            }
            Message::PartitionUpdate {
                broker_epoch,
                states,
            } => {
                if Some(broker_epoch) == self.broker_epoch {
                    LifecycleEvent::States(states)
                } else {
                    LifecycleEvent::Ignored
                }
            }
            other => LifecycleEvent::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LeaderEpoch, PartitionEpoch, PartitionId};

    const CONFIG: LifecycleConfig = LifecycleConfig {
        registration_retry_ms: 1_000,
        heartbeat_interval_ms: 500,
    };

    fn state() -> PartitionState {
        PartitionState {
            partition: PartitionId(0),
            replicas: vec![NodeId(1)],
            isr: vec![NodeId(1)],
            leader: Some(NodeId(1)),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: PartitionEpoch(1),
        }
    }

    #[test]
    fn registers_then_heartbeats_and_drops_other_epochs() {
        let mut l = BrokerLifecycle::new(NodeId(1), 7, CONFIG);
        assert!(matches!(
            l.poll::<()>(0),
            Some(Message::BrokerRegistration { incarnation: 7, .. })
        ));
        assert_eq!(l.poll::<()>(999), None);
        assert!(l.poll::<()>(1_000).is_some());
        // An earlier incarnation's answer, replayed: not ours.
        let old = Message::<()>::BrokerRegistrationResponse {
            incarnation: 6,
            broker_epoch: BrokerEpoch(3),
        };
        assert_eq!(l.on_message(old), LifecycleEvent::Ignored);
        let ours = Message::<()>::BrokerRegistrationResponse {
            incarnation: 7,
            broker_epoch: BrokerEpoch(4),
        };
        assert_eq!(
            l.on_message(ours.clone()),
            LifecycleEvent::Registered(BrokerEpoch(4))
        );
        assert_eq!(l.on_message(ours), LifecycleEvent::Ignored);
        assert!(matches!(
            l.poll::<()>(1_001),
            Some(Message::BrokerHeartbeat {
                broker_epoch: BrokerEpoch(4),
                ..
            })
        ));
        assert_eq!(l.poll::<()>(1_500), None);
        assert!(l.poll::<()>(1_501).is_some());
        let stale = Message::<()>::PartitionUpdate {
            broker_epoch: BrokerEpoch(3),
            states: vec![state()],
        };
        assert_eq!(l.on_message(stale), LifecycleEvent::Ignored);
        let current = Message::<()>::PartitionUpdate {
            broker_epoch: BrokerEpoch(4),
            states: vec![state()],
        };
        assert_eq!(l.on_message(current), LifecycleEvent::States(vec![state()]));
    }

    #[test]
    fn a_refused_heartbeat_registers_again_at_once() {
        let mut l = BrokerLifecycle::new(NodeId(1), 7, CONFIG);
        l.poll::<()>(0);
        l.on_message(Message::<()>::BrokerRegistrationResponse {
            incarnation: 7,
            broker_epoch: BrokerEpoch(4),
        });
        let refused = Message::<()>::BrokerHeartbeatResponse {
            broker_epoch: BrokerEpoch(4),
            result: Err(ReplicaError::StaleBrokerEpoch),
        };
        assert_eq!(
            l.on_message(refused),
            LifecycleEvent::Refused(ReplicaError::StaleBrokerEpoch)
        );
        assert_eq!(l.broker_epoch(), None);
        assert!(matches!(
            l.poll::<()>(10),
            Some(Message::BrokerRegistration { .. })
        ));
        let late = Message::<()>::PartitionUpdate {
            broker_epoch: BrokerEpoch(4),
            states: vec![state()],
        };
        assert_eq!(l.on_message(late), LifecycleEvent::Ignored);
    }
}
