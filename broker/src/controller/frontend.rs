//! The topic-change frontend (`*_frontend`), on shard 0: CreateTopics, DeleteTopics,
//! CreatePartitions and AlterConfigs from any shard are checked here against the shard's
//! metadata and then proposed to the metadata quorum through the control thread
//! (`ClusterHandle::admin`; a quorum of one on a single node). The quorum answers once the
//! change is committed and every shard has opened or closed its partitions, so a client that
//! got CreateTopics' answer can produce at once on any shard. Also holds this node's
//! producer ids (`producer_ids`).
//!
//! Owns: the checks made before a proposal, and the one mapping of the controller's typed
//! errors (`AdminError`) to Kafka error codes (`admin_error`); handlers get `TopicError`s.
//! Does not own: what a change does (`stm`, applied on every node), the wire (handlers).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;

use super::catalog::Catalog;
use super::entry::{AdminOp, ConfigChange, NewTopicSpec};
use super::error::{AdminError, ConfigChangeError};
use super::producer_ids::ProducerIds;
use crate::config::PARTITIONS_PER_TOPIC_MAX;
use crate::metadata::{ShardId, TopicConfig, TopicMeta, new_topic_id, valid_topic_name};
use crate::runtime::Shard;

/// The shard that runs the frontend.
pub const CONTROL_SHARD: ShardId = ShardId(0);

pub struct ControllerFrontend {
    producer_ids: RefCell<ProducerIds>,
}

/// A topic to create, as CreateTopics or auto-creation asks.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 = broker default.
    pub partitions: i32,
    /// -1 = the cluster default (`cluster_replication_factor`); more than the live brokers
    /// fails.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Explicit replica assignment was given (not supported yet).
    pub has_assignment: bool,
}

/// An error answer for one topic: Kafka code and message.
#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: ResponseError,
    pub message: String,
}

impl TopicError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

impl ControllerFrontend {
    pub fn new(catalog: Catalog, node_id: i32) -> Self {
        ControllerFrontend {
            producer_ids: RefCell::new(ProducerIds::new(catalog, node_id)),
        }
    }

    /// Creates topics (or only validates them). One result per input, in order.
    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<Arc<TopicMeta>, TopicError>> {
        cluster_create_topics(shard, topics, validate_only).await
    }

    /// Deletes topics by name. One result per input.
    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<Result<Arc<TopicMeta>, TopicError>> {
        let metas: Vec<(String, Option<Arc<TopicMeta>>)> = names
            .iter()
            .map(|n| (n.clone(), shard.metadata().topic(n).cloned()))
            .collect();
        let op = AdminOp::DeleteTopics { names };
        match cluster_admin(shard, op).await {
            Ok(results) => results
                .into_iter()
                .zip(metas)
                .map(|(r, (topic, meta))| match (r, meta) {
                    (Ok(()), Some(meta)) => Ok(meta),
                    // Deleted, but this shard's metadata never showed it.
                    (Ok(()), None) => Err(admin_error(AdminError::UnknownTopic { topic })),
                    (Err(e), _) => Err(e),
                })
                .collect(),
            Err(e) => vec![Err(e); metas.len()],
        }
    }

    /// Grows topics to `count` partitions: (topic, count, explicit assignment given).
    pub async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        requests: Vec<(String, i32, bool)>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicError>> {
        let n = requests.len();
        if requests.iter().any(|r| r.2) {
            return vec![Err(admin_error(AdminError::ManualAssignment)); n];
        }
        let metadata = shard.metadata();
        let mut results = Vec::with_capacity(n);
        let mut changes = Vec::new();
        let mut slots = Vec::new();
        for (name, count, _) in requests {
            let check = match metadata.topic(&name) {
                None => Err(admin_error(AdminError::UnknownTopic {
                    topic: name.clone(),
                })),
                Some(t) if count <= t.partitions || count > PARTITIONS_PER_TOPIC_MAX => {
                    Err(admin_error(AdminError::NewPartitionCount {
                        topic: name.clone(),
                        have: t.partitions,
                        count,
                    }))
                }
                Some(_) => Ok(()),
            };
            if check.is_ok() && !validate_only {
                slots.push(results.len());
                changes.push((name, count));
            }
            results.push(check);
        }
        if changes.is_empty() {
            return results;
        }
        let outcome = cluster_admin(shard, AdminOp::CreatePartitions { changes }).await;
        fill_slots(&mut results, slots, outcome);
        results
    }

    /// Alters topic configs. One result per input.
    pub async fn alter_configs(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicError>> {
        cluster_alter_configs(shard, changes, validate_only).await
    }

    /// A fresh producer id (epoch 0), never reused across restarts (`producer_ids`).
    pub fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        self.producer_ids.borrow_mut().allocate().map_err(|e| {
            admin_error(AdminError::Internal {
                reason: e.to_string(),
            })
        })
    }
}

/// Creates an internal compacted topic (`__consumer_offsets`, `__transaction_state`) of
/// `partitions` partitions and `segment_bytes` segments as Kafka does on a coordinator's first
/// use, with
/// `replication_factor` replicas (-1: the cluster's default) and `min_insync_replicas`
/// (-1: the topic default). `None` when the control plane could not be reached;
/// `Some(Err(message))` when the creation was refused (typically: another request created it
/// first).
pub async fn create_compacted_topic(
    shard: &Rc<Shard>,
    name: &'static str,
    partitions: i32,
    replication_factor: i16,
    min_insync_replicas: i32,
    segment_bytes: u64,
) -> Option<Result<(), String>> {
    let created = on_control(shard, move |s: Rc<Shard>| {
        Box::pin(async move {
            let mut configs = std::collections::BTreeMap::from([(
                "cleanup.policy".to_string(),
                "compact".to_string(),
            )]);
            configs.insert("segment.bytes".to_string(), segment_bytes.to_string());
            if min_insync_replicas > 0 {
                configs.insert(
                    "min.insync.replicas".to_string(),
                    min_insync_replicas.to_string(),
                );
            }
            let topic = NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs,
                has_assignment: false,
            };
            let result = s.control().create_topics(&s, vec![topic], false).await;
            result
                .into_iter()
                .next()
                .map(|r| r.map(|_| ()).map_err(|e| e.message))
        })
    })
    .await;
    created.map(|r| r.unwrap_or(Ok(())))
}

/// Runs a control-plane operation on shard 0 from any shard; `f` gets shard 0 (whose
/// `control` is always present). `None` when shard 0 is gone (shutting down).
pub async fn on_control<R, F>(shard: &Rc<Shard>, f: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>) -> crate::runtime::LocalBoxFuture<R> + Send + 'static,
{
    shard
        .invoke(CONTROL_SHARD, move |s: &Rc<Shard>| f(Rc::clone(s)))
        .await
}

impl Shard {
    /// The controller frontend; only valid on `CONTROL_SHARD` (an invariant, not input).
    pub fn control(&self) -> &ControllerFrontend {
        self.control
            .as_ref()
            .expect("the controller frontend lives on shard 0")
    }
}

/// Runs an admin operation through the metadata quorum.
async fn cluster_admin(
    shard: &Rc<Shard>,
    op: AdminOp,
) -> Result<Vec<Result<(), TopicError>>, TopicError> {
    match shard.shared.cluster.admin(op).await {
        Ok(results) => Ok(results
            .into_iter()
            .map(|r| r.map_err(admin_error))
            .collect()),
        Err(e) => Err(admin_error(e)),
    }
}

/// The replication factor of a new topic (-1: the cluster default).
fn cluster_replication_factor(shard: &Shard, requested: i16) -> i16 {
    if requested != -1 {
        return requested;
    }
    let cluster = &shard.config().cluster;
    if cluster.default_replication_factor != -1 {
        return cluster.default_replication_factor;
    }
    let voters = cluster
        .voters(shard.shared.node_id())
        .map_or(1, |s| s.len().max(1));
    voters.min(3) as i16
}

async fn cluster_create_topics(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<Result<Arc<TopicMeta>, TopicError>> {
    let config = shard.config();
    let metadata = shard.metadata();
    let live = metadata.brokers.values().filter(|b| !b.fenced).count();
    let mut results: Vec<Result<Arc<TopicMeta>, TopicError>> = Vec::with_capacity(topics.len());
    let mut specs = Vec::new();
    let mut slots = Vec::new();
    for t in topics {
        let partitions = if t.partitions == -1 {
            config.kafka.default_partitions
        } else {
            t.partitions
        };
        let rf = cluster_replication_factor(shard, t.replication_factor);
        let check = if !valid_topic_name(&t.name) {
            Err(admin_error(AdminError::InvalidTopicName {
                topic: t.name.clone(),
            }))
        } else if metadata.topic(&t.name).is_some() {
            Err(admin_error(AdminError::TopicExists {
                topic: t.name.clone(),
            }))
        } else if t.has_assignment {
            Err(admin_error(AdminError::ManualAssignment))
        } else if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            Err(admin_error(AdminError::PartitionCount {
                max: PARTITIONS_PER_TOPIC_MAX,
                got: partitions,
            }))
        } else if rf < 1 || rf as usize > live {
            Err(admin_error(AdminError::ReplicationFactor {
                replication_factor: rf,
                live,
            }))
        } else {
            TopicConfig::resolve(&config.log, &t.configs)
                .map(|_| ())
                .map_err(|e| invalid_config(&t.name, e))
        };
        let meta = TopicMeta {
            name: t.name.clone(),
            id: new_topic_id(),
            partitions,
            configs: t.configs.clone(),
            leader_epoch: 0,
            partition_states: Vec::new(),
        };
        match check {
            Err(e) => results.push(Err(e)),
            Ok(()) if validate_only => results.push(Ok(Arc::new(meta))),
            Ok(()) => {
                slots.push(results.len());
                results.push(Ok(Arc::new(meta.clone())));
                specs.push(NewTopicSpec {
                    name: meta.name,
                    id: meta.id.hyphenated().to_string(),
                    partitions,
                    replication_factor: rf,
                    configs: meta.configs,
                });
            }
        }
    }
    if specs.is_empty() {
        return results;
    }
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let outcome = cluster_admin(shard, AdminOp::CreateTopics { topics: specs }).await;
    let after = shard.metadata();
    for (i, (slot, name)) in slots.into_iter().zip(names).enumerate() {
        results[slot] = match &outcome {
            Ok(r) => match r.get(i) {
                Some(Ok(())) => after.topic(&name).cloned().ok_or_else(|| {
                    admin_error(AdminError::Internal {
                        reason: "created topic missing".into(),
                    })
                }),
                Some(Err(e)) => Err(e.clone()),
                None => Err(admin_error(AdminError::Internal {
                    reason: "no answer".into(),
                })),
            },
            Err(e) => Err(e.clone()),
        };
    }
    results
}

async fn cluster_alter_configs(
    shard: &Rc<Shard>,
    changes: Vec<(String, ConfigChange)>,
    validate_only: bool,
) -> Vec<Result<(), TopicError>> {
    let config = shard.config();
    let metadata = shard.metadata();
    let mut results = Vec::with_capacity(changes.len());
    let mut ops = Vec::new();
    let mut slots = Vec::new();
    for (name, change) in changes {
        let Some(topic) = metadata.topic(&name) else {
            results.push(Err(admin_error(AdminError::UnknownTopic {
                topic: name.clone(),
            })));
            continue;
        };
        let checked = change
            .clone()
            .apply(&topic.configs)
            .map_err(config_change_error)
            .and_then(|new| {
                TopicConfig::resolve(&config.log, &new)
                    .map(|_| ())
                    .map_err(|e| invalid_config(&name, e))
            });
        match checked {
            Err(e) => results.push(Err(e)),
            Ok(()) => {
                results.push(Ok(()));
                if !validate_only {
                    slots.push(results.len() - 1);
                    ops.push((name, change));
                }
            }
        }
    }
    if ops.is_empty() {
        return results;
    }
    let outcome = cluster_admin(shard, AdminOp::AlterConfigs { changes: ops }).await;
    fill_slots(&mut results, slots, outcome);
    results
}

/// The Kafka error for a controller error: the one place control-plane errors get codes.
pub fn admin_error(error: AdminError) -> TopicError {
    let code = match &error {
        AdminError::UnknownTopic { .. } => ResponseError::UnknownTopicOrPartition,
        AdminError::TopicExists { .. } => ResponseError::TopicAlreadyExists,
        AdminError::BadTopicId { .. } => ResponseError::InvalidConfig,
        AdminError::PartitionCount { .. } | AdminError::NewPartitionCount { .. } => {
            ResponseError::InvalidPartitions
        }
        AdminError::ReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        AdminError::ReplicaBudget { .. } => ResponseError::PolicyViolation,
        AdminError::Config(e) => return config_change_error(e.clone()),
        AdminError::InvalidEntry(_) => ResponseError::InvalidRequest,
        AdminError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        AdminError::ManualAssignment => ResponseError::InvalidReplicaAssignment,
        AdminError::TopicConfig { .. } => ResponseError::InvalidConfig,
        AdminError::Internal { .. } => ResponseError::UnknownServerError,
        AdminError::TimedOut | AdminError::Stopped => ResponseError::RequestTimedOut,
        AdminError::Busy => ResponseError::NotController,
    };
    TopicError::new(code, error.to_string())
}

fn config_change_error(error: ConfigChangeError) -> TopicError {
    let code = match &error {
        ConfigChangeError::NotAList { .. } => ResponseError::InvalidConfig,
        ConfigChangeError::BadOperation { .. } => ResponseError::InvalidRequest,
    };
    TopicError::new(code, error.to_string())
}

/// INVALID_CONFIG for configs `TopicConfig::resolve` refused, with a log line: the same
/// check a shard runs before it opens the log, so what passes here always opens.
fn invalid_config(topic: &str, error: crate::metadata::TopicConfigError) -> TopicError {
    tracing::info!(target: "broker::controller", topic, %error, "topic config refused");
    admin_error(AdminError::TopicConfig {
        topic: topic.to_string(),
        reason: error.to_string(),
    })
}

/// Puts the quorum's answers to the items that were proposed into their request slots.
fn fill_slots(
    results: &mut [Result<(), TopicError>],
    slots: Vec<usize>,
    outcome: Result<Vec<Result<(), TopicError>>, TopicError>,
) {
    match outcome {
        Ok(answers) => {
            for (slot, r) in slots.into_iter().zip(answers) {
                results[slot] = r;
            }
        }
        Err(e) => {
            for slot in slots {
                results[slot] = Err(e.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_error_gets_the_kafka_code_clients_expect() {
        let cases = [
            (
                AdminError::UnknownTopic { topic: "t".into() },
                ResponseError::UnknownTopicOrPartition,
            ),
            (
                AdminError::TopicExists { topic: "t".into() },
                ResponseError::TopicAlreadyExists,
            ),
            (
                AdminError::PartitionCount { max: 1, got: 2 },
                ResponseError::InvalidPartitions,
            ),
            (
                AdminError::NewPartitionCount {
                    topic: "t".into(),
                    have: 2,
                    count: 1,
                },
                ResponseError::InvalidPartitions,
            ),
            (
                AdminError::ReplicationFactor {
                    replication_factor: 3,
                    live: 1,
                },
                ResponseError::InvalidReplicationFactor,
            ),
            (
                AdminError::ReplicaBudget {
                    node: 0,
                    held: 1,
                    would_hold: 2,
                    max: 1,
                },
                ResponseError::PolicyViolation,
            ),
            (
                AdminError::Config(ConfigChangeError::NotAList { name: "x".into() }),
                ResponseError::InvalidConfig,
            ),
            (
                AdminError::Config(ConfigChangeError::BadOperation {
                    name: "x".into(),
                    op: 9,
                }),
                ResponseError::InvalidRequest,
            ),
            (AdminError::TimedOut, ResponseError::RequestTimedOut),
            (AdminError::Stopped, ResponseError::RequestTimedOut),
            (AdminError::Busy, ResponseError::NotController),
            (
                AdminError::InvalidTopicName { topic: "..".into() },
                ResponseError::InvalidTopicException,
            ),
            (
                AdminError::ManualAssignment,
                ResponseError::InvalidReplicaAssignment,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let answer = admin_error(error);
            assert_eq!(answer.code, code, "{message}");
            assert_eq!(answer.message, message);
        }
    }
}
