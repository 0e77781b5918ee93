//! The shard side of the control plane, on shard 0 (the `*_frontend` role for topic changes):
//! CreateTopics, DeleteTopics, CreatePartitions and AlterConfigs are checked here and then
//! proposed to the metadata quorum (`crate::controller`, a quorum of one on a single node),
//! which answers once the change is committed and every shard has opened or closed its
//! partitions, so a client that got CreateTopics' answer can produce at once on any shard.
//! Also producer-id allocation from blocks persisted in `catalog.json`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;

use crate::config::PARTITIONS_PER_TOPIC_MAX;
use crate::controller::entry::{AdminOp, NewTopicSpec};
use crate::metadata::{Catalog, ShardId, TopicConfig, TopicMeta, new_topic_id, valid_topic_name};
use crate::runtime::Shard;

/// Producer ids of node N start at (N + 1) << this.
pub const PRODUCER_ID_NODE_SHIFT: u32 = 40;

/// The shard that runs the control plane.
pub const CONTROL_SHARD: ShardId = ShardId(0);

pub struct ControlPlane {
    /// This node's id (producer ids come from its own range).
    node_id: i32,
    catalog: RefCell<Catalog>,
    producer_ids: RefCell<Range<i64>>,
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

/// Config alteration of one topic: the new full override map.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ConfigChange {
    /// AlterConfigs: replace all overrides.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: (name, op, value) with op 0 set, 1 delete (APPEND/SUBTRACT
    /// apply to list configs; only cleanup.policy is one).
    Incremental(Vec<(String, i8, Option<String>)>),
}

impl ControlPlane {
    pub fn new(catalog: Catalog, node_id: i32) -> Self {
        ControlPlane {
            node_id,
            catalog: RefCell::new(catalog),
            producer_ids: RefCell::new(0..0),
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
        let metas: Vec<Option<Arc<TopicMeta>>> = names
            .iter()
            .map(|n| shard.metadata().topic(n).cloned())
            .collect();
        let op = AdminOp::DeleteTopics { names };
        match cluster_admin(shard, op).await {
            Ok(results) => results
                .into_iter()
                .zip(metas)
                .map(|(r, meta)| match (r, meta) {
                    (Ok(()), Some(meta)) => Ok(meta),
                    (Ok(()), None) => Err(TopicError::new(
                        ResponseError::UnknownTopicOrPartition,
                        "deleted",
                    )),
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
            return vec![
                Err(TopicError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "manual replica assignment is not supported yet",
                ));
                n
            ];
        }
        let metadata = shard.metadata();
        let mut results = Vec::with_capacity(n);
        let mut changes = Vec::new();
        let mut slots = Vec::new();
        for (name, count, _) in requests {
            let check = match metadata.topic(&name) {
                None => Err(TopicError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name}"),
                )),
                Some(t) if count <= t.partitions => Err(TopicError::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic {name} has {} partitions; the new count {count} must be larger",
                        t.partitions
                    ),
                )),
                Some(_) if count > PARTITIONS_PER_TOPIC_MAX => Err(TopicError::new(
                    ResponseError::InvalidPartitions,
                    format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"),
                )),
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

    /// A fresh producer id (epoch 0). Ids come from persisted blocks, so they are never
    /// reused across restarts.
    ///
    /// Every node hands out ids from its own range (`(node_id + 1) << 40`
    /// onwards, blocks persisted in its own catalog), so no two nodes ever give out the same
    /// id without a round trip to the controller. 2^40 ids per node; node ids < 2^22.
    pub fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        let mut range = self.producer_ids.borrow_mut();
        if range.is_empty() {
            *range = self
                .catalog
                .borrow_mut()
                .take_producer_id_block()
                .map_err(|e| TopicError::new(ResponseError::UnknownServerError, e.to_string()))?;
        }
        let id = range.start;
        range.start += 1;
        Ok(((i64::from(self.node_id) + 1) << PRODUCER_ID_NODE_SHIFT) + id)
    }
}

pub fn apply_change(
    current: &BTreeMap<String, String>,
    change: ConfigChange,
) -> Result<BTreeMap<String, String>, TopicError> {
    match change {
        ConfigChange::Replace(all) => Ok(all),
        ConfigChange::Incremental(ops) => {
            let mut new = current.clone();
            for (name, op, value) in ops {
                match (op, value) {
                    (0, Some(v)) => {
                        new.insert(name, v);
                    }
                    (1, _) => {
                        new.remove(&name);
                    }
                    (2 | 3, Some(v)) if name == "cleanup.policy" => {
                        let mut items: Vec<String> = new
                            .get(&name)
                            .map(|s| {
                                s.split(',')
                                    .map(|x| x.trim().to_string())
                                    .filter(|x| !x.is_empty())
                                    .collect()
                            })
                            .unwrap_or_else(|| vec!["delete".to_string()]);
                        for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                            if op == 2 {
                                if !items.iter().any(|i| i == item) {
                                    items.push(item.to_string());
                                }
                            } else {
                                items.retain(|i| i != item);
                            }
                        }
                        new.insert(name, items.join(","));
                    }
                    (2 | 3, _) => {
                        return Err(TopicError::new(
                            ResponseError::InvalidConfig,
                            format!("{name} is not a list config"),
                        ));
                    }
                    _ => {
                        return Err(TopicError::new(
                            ResponseError::InvalidRequest,
                            format!("bad operation {op} for {name}"),
                        ));
                    }
                }
            }
            Ok(new)
        }
    }
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
    /// The control plane; only valid on `CONTROL_SHARD` (an invariant, not input).
    pub fn control(&self) -> &ControlPlane {
        self.control
            .as_ref()
            .expect("control plane lives on shard 0")
    }
}

/// Runs an admin operation through the metadata quorum.
async fn cluster_admin(
    shard: &Rc<Shard>,
    op: AdminOp,
) -> Result<Vec<Result<(), TopicError>>, TopicError> {
    let handle = &shard.shared.cluster;
    let code =
        |c: i16| ResponseError::try_from_code(c).unwrap_or(ResponseError::UnknownServerError);
    match handle.admin(op).await {
        Ok(results) => Ok(results
            .into_iter()
            .map(|r| r.map_err(|e| TopicError::new(code(e.code), e.message)))
            .collect()),
        Err(e) => Err(TopicError::new(code(e.code), e.message)),
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
            Err(TopicError::new(
                ResponseError::InvalidTopicException,
                format!("invalid topic name {:?}", t.name),
            ))
        } else if metadata.topic(&t.name).is_some() {
            Err(TopicError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {} already exists", t.name),
            ))
        } else if t.has_assignment {
            Err(TopicError::new(
                ResponseError::InvalidReplicaAssignment,
                "manual replica assignment is not supported yet",
            ))
        } else if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            Err(TopicError::new(
                ResponseError::InvalidPartitions,
                format!("partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}, got {partitions}"),
            ))
        } else if rf < 1 || rf as usize > live {
            Err(TopicError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {rf} is larger than the {live} available brokers"),
            ))
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
                    TopicError::new(ResponseError::UnknownServerError, "created topic missing")
                }),
                Some(Err(e)) => Err(e.clone()),
                None => Err(TopicError::new(
                    ResponseError::UnknownServerError,
                    "no answer",
                )),
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
            results.push(Err(TopicError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic {name}"),
            )));
            continue;
        };
        let checked = apply_change(&topic.configs, change.clone()).and_then(|new| {
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

/// INVALID_CONFIG for configs `TopicConfig::resolve` refused, with a log line: the same
/// check a shard runs before it opens the log, so what passes here always opens.
fn invalid_config(topic: &str, error: crate::metadata::TopicConfigError) -> TopicError {
    tracing::info!(target: "broker::controller", topic, %error, "topic config refused");
    TopicError::new(ResponseError::InvalidConfig, error.to_string())
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
