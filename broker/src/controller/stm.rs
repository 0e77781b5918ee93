//! The controller state machine every node replicates (`*_stm`): committed `ControlEntry`s
//! applied in log order to a `replication::Controller` (brokers, fencing, elections, ISR
//! commits) plus the topic catalog (names, ids, configs, partition ids and assignments).
//!
//! Owns: deterministic application of entries, replica placement, the metadata snapshot
//! built from the committed state.
//! Invariants: applying the same entries in the same order gives the same state on every node
//! (no clock reads: time comes from the entries, kept monotonic; no random numbers: ids come
//! from the entries or from counters in this state).

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::ResponseError;
use replication::{
    Address, BrokerEpoch, BrokerRecord, Controller, ControllerConfig, ControllerInput,
    ControllerSnapshot, LeaderEpoch, Message, NodeId, PartitionEpoch, PartitionId, PartitionState,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entry::{AdminError, AdminOp, AdminResults, ControlEntry, NewTopicSpec, RequestTag};
use crate::config::PARTITIONS_PER_TOPIC_MAX;
use crate::metadata::{BrokerInfo, ClusterMetadata, PartitionInfo, TopicMeta};

/// The state machine as a metadata snapshot (JSON): everything `apply` reads.
#[derive(Debug, Serialize, Deserialize)]
struct StmSnapshot {
    format_version: u32,
    cluster_id: String,
    next_partition_id: u32,
    last_now_ms: i64,
    endpoints: Vec<(i32, String, u16, Option<String>)>,
    topics: Vec<SnapshotTopic>,
    brokers: Vec<SnapshotBroker>,
    next_broker_epoch: i64,
    /// (node, partition replicas its open-file budget holds); absent in older snapshots.
    #[serde(default)]
    replica_budgets: Vec<(i32, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotTopic {
    name: String,
    id: String,
    configs: BTreeMap<String, String>,
    partitions: Vec<SnapshotPartition>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPartition {
    #[serde(flatten)]
    record: PartitionInfo,
    last_proposal_epoch: i32,
    last_proposal: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBroker {
    node: i32,
    incarnation: u64,
    broker_epoch: i64,
    last_heartbeat_ms: i64,
    fenced: bool,
}

const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// A broker's advertised listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

#[derive(Debug, Clone)]
struct StmTopic {
    id: Uuid,
    configs: BTreeMap<String, String>,
    /// The replication core's id of each partition (index = partition number).
    partition_ids: Vec<PartitionId>,
}

/// What applying one entry means for this node.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// Controller messages addressed to this node (answers and pushes).
    pub to_me: Vec<Message<()>>,
    /// Partitions created (or elected) by an admin operation: their new states.
    pub new_states: Vec<PartitionState>,
    /// The admin operation applied, with one result per item.
    pub admin: Option<(RequestTag, AdminResults)>,
    /// Something the Metadata answer shows changed (topics, brokers, leaders, ISRs).
    pub metadata_changed: bool,
}

pub struct ControllerStm {
    me: NodeId,
    controller: Controller,
    cluster_id: String,
    topics: BTreeMap<String, StmTopic>,
    by_id: HashMap<PartitionId, (String, i32)>,
    next_partition_id: u32,
    endpoints: BTreeMap<i32, Endpoint>,
    last_now_ms: i64,
    /// Partition replicas each node's open-file budget holds, as it stated when it last
    /// registered (`crate::fd_budget`). Nodes without an entry are not limited.
    replica_budgets: BTreeMap<i32, u32>,
}

impl ControllerStm {
    pub fn new(me: NodeId, config: ControllerConfig) -> ControllerStm {
        ControllerStm {
            me,
            controller: Controller::new(config),
            cluster_id: String::new(),
            topics: BTreeMap::new(),
            by_id: HashMap::new(),
            next_partition_id: 0,
            endpoints: BTreeMap::new(),
            last_now_ms: i64::MIN,
            replica_budgets: BTreeMap::new(),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The topic and partition number of a partition id.
    pub fn locate(&self, partition: PartitionId) -> Option<(&str, i32)> {
        self.by_id.get(&partition).map(|(t, i)| (t.as_str(), *i))
    }

    pub fn partition_state(&self, partition: PartitionId) -> Option<&PartitionState> {
        self.controller.partition(partition)
    }

    /// Live (unfenced) brokers, by node id.
    pub fn live_brokers(&self) -> usize {
        self.controller.brokers().filter(|(_, b)| !b.fenced).count()
    }

    pub fn apply(&mut self, entry: ControlEntry) -> ApplyOutcome {
        let fenced_before = self.fenced_set();
        let mut outcome = ApplyOutcome::default();
        let actions = match entry {
            ControlEntry::Register {
                node,
                incarnation,
                host,
                port,
                rack,
                cluster_id,
                now_ms,
                partition_replicas_max,
            } => {
                match partition_replicas_max {
                    Some(max) => self.replica_budgets.insert(node, max),
                    None => self.replica_budgets.remove(&node),
                };
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id;
                }
                let endpoint = Endpoint { host, port, rack };
                if self.endpoints.get(&node) != Some(&endpoint) {
                    self.endpoints.insert(node, endpoint);
                    outcome.metadata_changed = true;
                }
                let now = self.now(now_ms);
                self.step_message(
                    now,
                    node,
                    Message::BrokerRegistration {
                        node: NodeId(node),
                        incarnation,
                    },
                )
            }
            ControlEntry::Heartbeat {
                node,
                broker_epoch,
                now_ms,
            } => {
                let now = self.now(now_ms);
                self.step_message(
                    now,
                    node,
                    Message::BrokerHeartbeat {
                        node: NodeId(node),
                        broker_epoch: BrokerEpoch(broker_epoch),
                    },
                )
            }
            ControlEntry::AlterPartition {
                node,
                broker_epoch,
                partition,
                leader_epoch,
                partition_epoch,
                proposal,
                new_isr,
                now_ms,
            } => {
                let now = self.now(now_ms);
                self.step_message(
                    now,
                    node,
                    Message::AlterPartition {
                        node: NodeId(node),
                        broker_epoch: BrokerEpoch(broker_epoch),
                        partition: PartitionId(partition),
                        leader_epoch: LeaderEpoch(leader_epoch),
                        partition_epoch: PartitionEpoch(partition_epoch),
                        proposal,
                        new_isr: new_isr.into_iter().map(NodeId).collect(),
                    },
                )
            }
            ControlEntry::Tick { now_ms } => {
                let now = self.now(now_ms);
                self.controller.step::<()>(now, ControllerInput::Tick)
            }
            ControlEntry::PreferredLeaders { now_ms } => {
                self.now(now_ms);
                let moved = self.controller.elect_preferred_leaders();
                outcome.metadata_changed |= !moved.is_empty();
                outcome.new_states.extend(moved);
                Vec::new()
            }
            ControlEntry::Admin { request, op } => {
                let results = self.apply_admin(op, &mut outcome);
                outcome.admin = Some((request, results));
                outcome.metadata_changed = true;
                Vec::new()
            }
        };
        for action in actions {
            if let replication::Action::Send { to, message } = action {
                if matches!(message, Message::PartitionUpdate { .. }) {
                    outcome.metadata_changed = true;
                }
                if to == Address::Broker(self.me) {
                    outcome.to_me.push(message);
                }
            }
        }
        if self.fenced_set() != fenced_before {
            outcome.metadata_changed = true;
        }
        outcome
    }

    /// The metadata every shard serves from, built from the committed state.
    pub fn snapshot(&self, revision: u64, controller_id: Option<i32>) -> ClusterMetadata {
        let topics = self.topics.iter().map(|(name, t)| {
            let partition_states: Vec<PartitionInfo> = t
                .partition_ids
                .iter()
                .map(|id| {
                    partition_info(
                        self.controller
                            .partition(*id)
                            .expect("every topic partition is in the controller"),
                    )
                })
                .collect();
            TopicMeta {
                name: name.clone(),
                id: t.id,
                partitions: t.partition_ids.len() as i32,
                configs: t.configs.clone(),
                leader_epoch: 0,
                partition_states,
            }
        });
        let mut metadata = ClusterMetadata::new(self.cluster_id.clone(), revision, topics);
        for (node, endpoint) in &self.endpoints {
            let fenced = self
                .controller
                .broker(NodeId(*node))
                .is_none_or(|b| b.fenced);
            metadata.brokers.insert(
                *node,
                BrokerInfo {
                    node_id: *node,
                    host: endpoint.host.clone(),
                    port: endpoint.port,
                    rack: endpoint.rack.clone(),
                    fenced,
                },
            );
        }
        metadata.controller_id = controller_id;
        metadata
    }

    /// The whole state, for a quorum snapshot.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let controller = self.controller.snapshot();
        let mut by_id: HashMap<PartitionId, (PartitionState, LeaderEpoch, u64)> = controller
            .partitions
            .into_iter()
            .map(|p| (p.0.partition, p))
            .collect();
        let topics = self
            .topics
            .iter()
            .map(|(name, t)| SnapshotTopic {
                name: name.clone(),
                id: t.id.hyphenated().to_string(),
                configs: t.configs.clone(),
                partitions: t
                    .partition_ids
                    .iter()
                    .map(|id| {
                        let (s, epoch, proposal) = by_id
                            .remove(id)
                            .expect("every topic partition is in the controller");
                        SnapshotPartition {
                            record: partition_info(&s),
                            last_proposal_epoch: epoch.0,
                            last_proposal: proposal,
                        }
                    })
                    .collect(),
            })
            .collect();
        let snapshot = StmSnapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            cluster_id: self.cluster_id.clone(),
            next_partition_id: self.next_partition_id,
            last_now_ms: self.last_now_ms,
            endpoints: self
                .endpoints
                .iter()
                .map(|(n, e)| (*n, e.host.clone(), e.port, e.rack.clone()))
                .collect(),
            topics,
            brokers: controller
                .brokers
                .into_iter()
                .map(|(n, b)| SnapshotBroker {
                    node: n.0,
                    incarnation: b.incarnation,
                    broker_epoch: b.broker_epoch.0,
                    last_heartbeat_ms: b.last_heartbeat_ms,
                    fenced: b.fenced,
                })
                .collect(),
            next_broker_epoch: controller.next_broker_epoch,
            replica_budgets: self.replica_budgets.iter().map(|(n, m)| (*n, *m)).collect(),
        };
        serde_json::to_vec(&snapshot).expect("snapshots always serialize")
    }

    /// The state machine a snapshot from `to_snapshot` describes.
    pub fn from_snapshot(
        me: NodeId,
        config: ControllerConfig,
        bytes: &[u8],
    ) -> Result<ControllerStm, String> {
        let s: StmSnapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(format!("unknown snapshot format {}", s.format_version));
        }
        let mut topics = BTreeMap::new();
        let mut by_id = HashMap::new();
        let mut partitions = Vec::new();
        for t in s.topics {
            let id = Uuid::parse_str(&t.id).map_err(|e| format!("topic {}: {e}", t.name))?;
            let mut partition_ids = Vec::new();
            for (index, p) in t.partitions.into_iter().enumerate() {
                let r = p.record;
                let pid = PartitionId(r.partition_id);
                partition_ids.push(pid);
                by_id.insert(pid, (t.name.clone(), index as i32));
                partitions.push((
                    PartitionState {
                        partition: pid,
                        replicas: r.replicas.into_iter().map(NodeId).collect(),
                        isr: r.isr.into_iter().map(NodeId).collect(),
                        leader: r.leader.map(NodeId),
                        leader_epoch: LeaderEpoch(r.leader_epoch),
                        partition_epoch: PartitionEpoch(r.partition_epoch),
                    },
                    LeaderEpoch(p.last_proposal_epoch),
                    p.last_proposal,
                ));
            }
            topics.insert(
                t.name,
                StmTopic {
                    id,
                    configs: t.configs,
                    partition_ids,
                },
            );
        }
        let controller = Controller::restore(
            config,
            ControllerSnapshot {
                brokers: s
                    .brokers
                    .into_iter()
                    .map(|b| {
                        (
                            NodeId(b.node),
                            BrokerRecord {
                                incarnation: b.incarnation,
                                broker_epoch: BrokerEpoch(b.broker_epoch),
                                last_heartbeat_ms: b.last_heartbeat_ms,
                                fenced: b.fenced,
                            },
                        )
                    })
                    .collect(),
                partitions,
                next_broker_epoch: s.next_broker_epoch,
            },
        );
        Ok(ControllerStm {
            me,
            controller,
            cluster_id: s.cluster_id,
            topics,
            by_id,
            next_partition_id: s.next_partition_id,
            endpoints: s
                .endpoints
                .into_iter()
                .map(|(n, host, port, rack)| (n, Endpoint { host, port, rack }))
                .collect(),
            last_now_ms: s.last_now_ms,
            replica_budgets: s.replica_budgets.into_iter().collect(),
        })
    }

    /// Every partition this node replicates, with its committed state.
    pub fn states_of_me(&self) -> Vec<PartitionState> {
        self.controller
            .partitions()
            .filter(|s| s.replicas.contains(&self.me))
            .cloned()
            .collect()
    }
}

impl ControllerStm {
    /// Entry time, never going backwards (a new quorum leader's clock may lag the old one's).
    fn now(&mut self, now_ms: i64) -> i64 {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        self.last_now_ms
    }

    fn step_message(
        &mut self,
        now_ms: i64,
        from: i32,
        message: Message<()>,
    ) -> Vec<replication::Action<()>> {
        self.controller.step(
            now_ms,
            ControllerInput::Message {
                from: Address::Broker(NodeId(from)),
                message,
            },
        )
    }

    fn fenced_set(&self) -> Vec<(i32, bool)> {
        self.controller
            .brokers()
            .map(|(n, b)| (n.0, b.fenced))
            .collect()
    }

    fn apply_admin(&mut self, op: AdminOp, outcome: &mut ApplyOutcome) -> AdminResults {
        match op {
            AdminOp::CreateTopics { topics } => topics
                .into_iter()
                .map(|t| self.create_topic(t, outcome))
                .collect(),
            AdminOp::DeleteTopics { names } => {
                names.into_iter().map(|n| self.delete_topic(&n)).collect()
            }
            AdminOp::CreatePartitions { changes } => changes
                .into_iter()
                .map(|(name, count)| self.create_partitions(&name, count, outcome))
                .collect(),
            AdminOp::AlterConfigs { changes } => changes
                .into_iter()
                .map(|(name, change)| {
                    let topic = self.topics.get_mut(&name).ok_or_else(|| AdminError {
                        code: ResponseError::UnknownTopicOrPartition.code(),
                        message: format!("unknown topic {name}"),
                    })?;
                    let new = crate::runtime::control::apply_change(&topic.configs, change)
                        .map_err(|e| AdminError {
                            code: e.code.code(),
                            message: e.message,
                        })?;
                    topic.configs = new;
                    Ok(())
                })
                .collect(),
        }
    }

    fn create_topic(
        &mut self,
        spec: NewTopicSpec,
        outcome: &mut ApplyOutcome,
    ) -> Result<(), AdminError> {
        if self.topics.contains_key(&spec.name) {
            return Err(AdminError {
                code: ResponseError::TopicAlreadyExists.code(),
                message: format!("topic {} already exists", spec.name),
            });
        }
        let id = Uuid::parse_str(&spec.id).map_err(|e| AdminError {
            code: ResponseError::InvalidConfig.code(),
            message: format!("bad topic id: {e}"),
        })?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&spec.partitions) {
            return Err(AdminError {
                code: ResponseError::InvalidPartitions.code(),
                message: format!("partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}"),
            });
        }
        let assignments = self.place(&spec.name, 0, spec.partitions, spec.replication_factor)?;
        self.check_replica_budgets(&assignments)?;
        let mut topic = StmTopic {
            id,
            configs: spec.configs,
            partition_ids: Vec::new(),
        };
        for (index, replicas) in assignments.into_iter().enumerate() {
            let id = self.add_partition(&spec.name, index as i32, replicas, outcome);
            topic.partition_ids.push(id);
        }
        self.topics.insert(spec.name, topic);
        Ok(())
    }

    fn delete_topic(&mut self, name: &str) -> Result<(), AdminError> {
        let topic = self.topics.remove(name).ok_or_else(|| AdminError {
            code: ResponseError::UnknownTopicOrPartition.code(),
            message: format!("unknown topic {name}"),
        })?;
        for id in topic.partition_ids {
            self.controller.remove_partition(id);
            self.by_id.remove(&id);
        }
        Ok(())
    }

    fn create_partitions(
        &mut self,
        name: &str,
        count: i32,
        outcome: &mut ApplyOutcome,
    ) -> Result<(), AdminError> {
        let Some(topic) = self.topics.get(name) else {
            return Err(AdminError {
                code: ResponseError::UnknownTopicOrPartition.code(),
                message: format!("unknown topic {name}"),
            });
        };
        let have = topic.partition_ids.len() as i32;
        if count <= have || count > PARTITIONS_PER_TOPIC_MAX {
            return Err(AdminError {
                code: ResponseError::InvalidPartitions.code(),
                message: format!(
                    "topic {name} has {have} partitions; {count} is not a valid new count"
                ),
            });
        }
        let rf = topic
            .partition_ids
            .first()
            .and_then(|id| self.controller.partition(*id))
            .map_or(1, |s| s.replicas.len() as i16);
        let assignments = self.place(name, have, count - have, rf)?;
        self.check_replica_budgets(&assignments)?;
        let mut ids = Vec::new();
        for (i, replicas) in assignments.into_iter().enumerate() {
            ids.push(self.add_partition(name, have + i as i32, replicas, outcome));
        }
        if let Some(topic) = self.topics.get_mut(name) {
            topic.partition_ids.extend(ids);
        }
        Ok(())
    }

    fn add_partition(
        &mut self,
        topic: &str,
        index: i32,
        replicas: Vec<NodeId>,
        outcome: &mut ApplyOutcome,
    ) -> PartitionId {
        let id = PartitionId(self.next_partition_id);
        self.next_partition_id += 1;
        self.controller.create_partition(id, replicas);
        self.controller.elect_if_leaderless(id);
        self.by_id.insert(id, (topic.to_string(), index));
        if let Some(state) = self.controller.partition(id) {
            outcome.new_states.push(state.clone());
        }
        id
    }

    /// Refuses `new` replicas that would take a node beyond the partition replicas its
    /// open-file budget holds (POLICY_VIOLATION, naming the node and the numbers). Counts
    /// every partition's replicas: O(partitions), on the control plane only.
    fn check_replica_budgets(&self, new: &[Vec<NodeId>]) -> Result<(), AdminError> {
        if self.replica_budgets.is_empty() {
            return Ok(());
        }
        let mut adding: BTreeMap<i32, u64> = BTreeMap::new();
        for node in new.iter().flatten() {
            *adding.entry(node.0).or_default() += 1;
        }
        for (&node, &added) in &adding {
            let Some(&max) = self.replica_budgets.get(&node) else {
                continue;
            };
            let held = self
                .controller
                .partitions()
                .filter(|s| s.replicas.contains(&NodeId(node)))
                .count() as u64;
            if held + added > u64::from(max) {
                return Err(AdminError {
                    code: ResponseError::PolicyViolation.code(),
                    message: format!(
                        "node {node} holds {held} partition replicas and would hold {}, over the \
                         {max} its open-file limit allows (RLIMIT_NOFILE; see docs/operations.md, \
                         \"Open files\")",
                        held + added
                    ),
                });
            }
        }
        Ok(())
    }

    /// Replica placement for partitions `first..first+count` of `topic`: round robin over the
    /// live brokers from a topic-dependent start (Kafka's, without its random start), racks
    /// alternating when every live broker has one; the first replica is the preferred leader.
    fn place(
        &self,
        topic: &str,
        first: i32,
        count: i32,
        replication_factor: i16,
    ) -> Result<Vec<Vec<NodeId>>, AdminError> {
        let live: Vec<(i32, Option<String>)> = self
            .controller
            .brokers()
            .filter(|(_, b)| !b.fenced)
            .map(|(n, _)| (n.0, self.endpoints.get(&n.0).and_then(|e| e.rack.clone())))
            .collect();
        let rf = usize::try_from(replication_factor).unwrap_or(0);
        if rf == 0 || rf > live.len() {
            return Err(AdminError {
                code: ResponseError::InvalidReplicationFactor.code(),
                message: format!(
                    "replication factor {replication_factor} is invalid with {} live brokers",
                    live.len()
                ),
            });
        }
        let order = rack_alternating(live);
        let start = topic_hash(topic) as usize % order.len();
        Ok((first..first + count)
            .map(|p| {
                (0..rf)
                    .map(|r| NodeId(order[(start + p as usize + r) % order.len()]))
                    .collect()
            })
            .collect())
    }
}

/// The Metadata (and snapshot) view of a controller partition record.
fn partition_info(s: &PartitionState) -> PartitionInfo {
    PartitionInfo {
        partition_id: s.partition.0,
        replicas: s.replicas.iter().map(|n| n.0).collect(),
        isr: s.isr.iter().map(|n| n.0).collect(),
        leader: s.leader.map(|n| n.0),
        leader_epoch: s.leader_epoch.0,
        partition_epoch: s.partition_epoch.0,
    }
}

/// Brokers ordered so that consecutive ones are in different racks when every broker has a
/// rack (Kafka's rack-alternated list); by node id otherwise.
fn rack_alternating(mut live: Vec<(i32, Option<String>)>) -> Vec<i32> {
    live.sort();
    if live.iter().any(|(_, r)| r.is_none()) {
        return live.into_iter().map(|(n, _)| n).collect();
    }
    let mut racks: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (n, r) in live {
        racks.entry(r.unwrap_or_default()).or_default().push(n);
    }
    let mut out = Vec::new();
    let depth = racks.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..depth {
        for nodes in racks.values() {
            if let Some(n) = nodes.get(i) {
                out.push(*n);
            }
        }
    }
    out
}

/// FNV-1a: stable across processes and builds (unlike std's hasher).
fn topic_hash(topic: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(stm: &mut ControllerStm, node: i32, now_ms: i64) -> ApplyOutcome {
        stm.apply(ControlEntry::Register {
            node,
            incarnation: 1,
            host: "127.0.0.1".into(),
            port: 9000 + node as u16,
            rack: None,
            cluster_id: format!("c{node}"),
            now_ms,
            partition_replicas_max: None,
        })
    }

    fn create(stm: &mut ControllerStm, name: &str, partitions: i32, rf: i16) -> AdminResults {
        let out = stm.apply(ControlEntry::Admin {
            request: RequestTag {
                node: 0,
                incarnation: 1,
                id: 1,
            },
            op: AdminOp::CreateTopics {
                topics: vec![NewTopicSpec {
                    name: name.into(),
                    id: crate::metadata::new_topic_id().to_string(),
                    partitions,
                    replication_factor: rf,
                    configs: BTreeMap::new(),
                }],
            },
        });
        out.admin.unwrap().1
    }

    #[test]
    fn replicas_apply_the_same_log_to_the_same_state() {
        let log = {
            let mut stm = ControllerStm::new(NodeId(0), ControllerConfig::default());
            let mut log = Vec::new();
            for n in 0..3 {
                let e = ControlEntry::Register {
                    node: n,
                    incarnation: 1,
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    cluster_id: "c".into(),
                    now_ms: 10,
                    partition_replicas_max: None,
                };
                stm.apply(e.clone());
                log.push(e);
            }
            log.push(ControlEntry::Admin {
                request: RequestTag {
                    node: 0,
                    incarnation: 1,
                    id: 1,
                },
                op: AdminOp::CreateTopics {
                    topics: vec![NewTopicSpec {
                        name: "t".into(),
                        id: "6f1c3c57-3c1e-4c44-9a3e-5b8f2b0d0a11".into(),
                        partitions: 3,
                        replication_factor: 3,
                        configs: BTreeMap::new(),
                    }],
                },
            });
            log.push(ControlEntry::Tick { now_ms: 20_000 });
            log
        };
        let snapshots: Vec<_> = (0..3)
            .map(|me| {
                let mut stm = ControllerStm::new(NodeId(me), ControllerConfig::default());
                for e in &log {
                    stm.apply(e.clone());
                }
                format!("{:?}", stm.snapshot(1, None))
            })
            .collect();
        assert_eq!(snapshots[0], snapshots[1]);
        assert_eq!(snapshots[1], snapshots[2]);
    }

    #[test]
    fn create_places_replicas_on_live_brokers_and_elects() {
        let mut stm = ControllerStm::new(NodeId(1), ControllerConfig::default());
        for n in 0..3 {
            let out = register(&mut stm, n, 0);
            if n == 1 {
                assert!(matches!(
                    out.to_me[0],
                    Message::BrokerRegistrationResponse { .. }
                ));
            }
        }
        assert_eq!(stm.cluster_id(), "c0");
        assert_eq!(create(&mut stm, "t", 6, 3), vec![Ok(()); 1]);
        let m = stm.snapshot(1, Some(0));
        let t = m.topic("t").unwrap();
        assert_eq!(t.partition_states.len(), 6);
        let mut leaders = BTreeMap::new();
        for p in &t.partition_states {
            let mut r = p.replicas.clone();
            r.sort();
            assert_eq!(r, vec![0, 1, 2]);
            assert_eq!(p.leader, Some(p.replicas[0]));
            assert_eq!(p.leader_epoch, 1);
            *leaders.entry(p.leader.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(
            create(&mut stm, "t", 1, 1)[0].as_ref().unwrap_err().code,
            ResponseError::TopicAlreadyExists.code()
        );
        assert_eq!(
            create(&mut stm, "u", 1, 4)[0].as_ref().unwrap_err().code,
            ResponseError::InvalidReplicationFactor.code()
        );
    }

    #[test]
    fn a_silent_leader_is_fenced_and_replaced_from_the_isr() {
        let mut stm = ControllerStm::new(NodeId(1), ControllerConfig::default());
        for n in 0..3 {
            register(&mut stm, n, 0);
        }
        create(&mut stm, "t", 1, 3);
        let before = stm.snapshot(1, None).topic("t").unwrap().partition_states[0].clone();
        let old_leader = before.leader.unwrap();
        for n in (0..3).filter(|&n| n != old_leader) {
            stm.apply(ControlEntry::Heartbeat {
                node: n,
                broker_epoch: i64::from(n) + 1,
                now_ms: 8_000,
            });
        }
        let out = stm.apply(ControlEntry::Tick { now_ms: 10_000 });
        assert!(out.metadata_changed);
        let m = stm.snapshot(2, None);
        let after = &m.topic("t").unwrap().partition_states[0];
        assert_ne!(after.leader, Some(old_leader));
        assert!(after.leader.is_some());
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert!(!after.isr.contains(&old_leader));
        assert!(m.brokers[&old_leader].fenced);
    }

    #[test]
    fn placements_beyond_a_nodes_replica_budget_are_refused() {
        let mut stm = ControllerStm::new(NodeId(0), ControllerConfig::default());
        for node in 0..2 {
            stm.apply(ControlEntry::Register {
                node,
                incarnation: 1,
                host: "h".into(),
                port: 1,
                rack: None,
                cluster_id: "c".into(),
                now_ms: 0,
                // Node 1 registered by an older build: no budget.
                partition_replicas_max: (node == 0).then_some(10),
            });
        }
        // rf 2: every partition has a replica on node 0.
        assert!(create(&mut stm, "a", 6, 2)[0].is_ok());
        let refused = create(&mut stm, "b", 5, 2);
        let e = refused[0].as_ref().unwrap_err();
        assert_eq!(e.code, ResponseError::PolicyViolation.code());
        assert!(
            e.message.contains("node 0 holds 6") && e.message.contains("11"),
            "{e:?}"
        );
        assert!(stm.snapshot(1, None).topic("b").is_none());
        let grow = |stm: &mut ControllerStm, count| {
            stm.apply(ControlEntry::Admin {
                request: RequestTag {
                    node: 0,
                    incarnation: 1,
                    id: 2,
                },
                op: AdminOp::CreatePartitions {
                    changes: vec![("a".into(), count)],
                },
            })
            .admin
            .unwrap()
            .1
        };
        let refused = grow(&mut stm, 11);
        assert_eq!(
            refused[0].as_ref().unwrap_err().code,
            ResponseError::PolicyViolation.code()
        );
        assert!(grow(&mut stm, 10)[0].is_ok());
        // The budget survives a snapshot; a full node refuses even one more.
        let restored = ControllerStm::from_snapshot(
            NodeId(0),
            ControllerConfig::default(),
            &stm.to_snapshot(),
        )
        .unwrap();
        let mut stm = restored;
        // rf 2 puts a replica on node 0, which is full.
        assert_eq!(
            create(&mut stm, "c", 1, 2)[0].as_ref().unwrap_err().code,
            ResponseError::PolicyViolation.code()
        );
    }

    #[test]
    fn delete_and_grow() {
        let mut stm = ControllerStm::new(NodeId(0), ControllerConfig::default());
        register(&mut stm, 0, 0);
        create(&mut stm, "t", 1, 1);
        let out = stm.apply(ControlEntry::Admin {
            request: RequestTag {
                node: 0,
                incarnation: 1,
                id: 2,
            },
            op: AdminOp::CreatePartitions {
                changes: vec![("t".into(), 3), ("t".into(), 2), ("x".into(), 2)],
            },
        });
        let results = out.admin.unwrap().1;
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().code,
            ResponseError::InvalidPartitions.code()
        );
        assert_eq!(
            results[2].as_ref().unwrap_err().code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(stm.snapshot(1, None).topic("t").unwrap().partitions, 3);
        let out = stm.apply(ControlEntry::Admin {
            request: RequestTag {
                node: 0,
                incarnation: 1,
                id: 3,
            },
            op: AdminOp::DeleteTopics {
                names: vec!["t".into()],
            },
        });
        assert!(out.admin.unwrap().1[0].is_ok());
        assert!(stm.snapshot(1, None).topic("t").is_none());
        assert!(stm.locate(PartitionId(0)).is_none());
    }

    #[test]
    fn preferred_leaders_entry_moves_leadership_back() {
        let mut stm = ControllerStm::new(NodeId(0), ControllerConfig::default());
        for n in 0..3 {
            register(&mut stm, n, 0);
        }
        create(&mut stm, "t", 3, 3);
        // Leaders are preferred already: nothing moves.
        let out = stm.apply(ControlEntry::PreferredLeaders { now_ms: 1 });
        assert!(out.new_states.is_empty());
        assert!(!out.metadata_changed);
    }

    #[test]
    fn snapshot_round_trip_continues_identically() {
        let mut stm = ControllerStm::new(NodeId(1), ControllerConfig::default());
        for n in 0..3 {
            register(&mut stm, n, 0);
        }
        create(&mut stm, "t", 4, 3);
        create(&mut stm, "u", 1, 2);
        let bytes = stm.to_snapshot();
        let mut restored =
            ControllerStm::from_snapshot(NodeId(1), ControllerConfig::default(), &bytes).unwrap();
        assert_eq!(restored.to_snapshot(), bytes);
        let tail = [
            ControlEntry::Heartbeat {
                node: 1,
                broker_epoch: 2,
                now_ms: 8_000,
            },
            ControlEntry::Tick { now_ms: 10_000 },
        ];
        for e in tail {
            stm.apply(e.clone());
            restored.apply(e);
        }
        assert_eq!(
            format!("{:?}", stm.snapshot(5, None)),
            format!("{:?}", restored.snapshot(5, None))
        );
        assert!(
            ControllerStm::from_snapshot(NodeId(1), ControllerConfig::default(), b"{}").is_err()
        );
    }
}
