//! CreateTopics: validation (names, partitions, replication factor, configs under Kafka's
//! names) and creation through the control plane; `validate_only` checks without creating.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::controller::frontend::{NewTopic, TopicError, on_control};
use crate::metadata::TopicConfig;
use crate::metadata::topic_config::TOPIC_CONFIG_NAMES;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 2, max: 7 };

/// DescribeConfigs' config_source for a topic override and for a broker default.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut new = Vec::with_capacity(req.topics.len());
    let mut duplicates = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        if !seen.insert(name.clone()) {
            duplicates.push(name.clone());
        }
        let mut configs = BTreeMap::new();
        let mut null_config = false;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => null_config = true,
            }
        }
        new.push((
            NewTopic {
                name,
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                configs,
                has_assignment: !t.assignments.is_empty(),
            },
            null_config,
        ));
    }
    // Kafka answers INVALID_REQUEST for a name given twice; INVALID_CONFIG for null values.
    let mut results: Vec<Option<Result<_, TopicError>>> = Vec::with_capacity(new.len());
    let mut to_create = Vec::new();
    for (t, null_config) in &new {
        if duplicates.contains(&t.name) {
            results.push(Some(Err(TopicError::new(
                ResponseError::InvalidRequest,
                "topic named twice in one request",
            ))));
        } else if *null_config {
            results.push(Some(Err(TopicError::new(
                ResponseError::InvalidConfig,
                "null config value",
            ))));
        } else {
            results.push(None);
            to_create.push(t.clone());
        }
    }
    let validate_only = req.validate_only;
    let created = if to_create.is_empty() {
        Vec::new()
    } else {
        on_control(shard, move |s| {
            Box::pin(async move {
                s.control()
                    .create_topics(&s, to_create, validate_only)
                    .await
            })
        })
        .await
        .unwrap_or_default()
    };
    let mut created = created.into_iter();
    let log = &shard.config().log;
    // One result per name, as Kafka answers a name given twice (its results are keyed by name).
    let mut answered = std::collections::BTreeSet::new();
    let topics = new
        .iter()
        .zip(results)
        .filter(|((t, _), _)| answered.insert(t.name.clone()))
        .map(|((t, _), r)| {
            let r = r.or_else(|| created.next()).unwrap_or_else(|| {
                Err(TopicError::new(
                    ResponseError::BrokerNotAvailable,
                    "broker is shutting down",
                ))
            });
            let mut out = CreatableTopicResult::default().with_name(super::topic_name(&t.name));
            match r {
                Ok(meta) => {
                    // kafka-protocol's default message is "", Kafka sends null on success.
                    out = out
                        .with_error_message(None)
                        .with_topic_id(meta.id)
                        .with_num_partitions(meta.partitions)
                        .with_replication_factor(replication_factor(&meta));
                    if ctx.version >= 5
                        && let Ok(cfg) = TopicConfig::resolve(log, &meta.configs)
                    {
                        out = out.with_configs(Some(
                            TOPIC_CONFIG_NAMES
                                .iter()
                                .filter_map(|n| {
                                    cfg.value_of(n).map(|v| {
                                        CreatableTopicConfigs::default()
                                            .with_name(str_bytes(n))
                                            .with_value(Some(str_bytes(&v)))
                                            .with_config_source(if meta.configs.contains_key(*n) {
                                                SOURCE_TOPIC
                                            } else {
                                                SOURCE_DEFAULT
                                            })
                                    })
                                })
                                .collect(),
                        ));
                    }
                }
                Err(e) => {
                    out = out
                        .with_error_code(e.code.code())
                        .with_error_message(Some(str_bytes(&e.message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1);
                }
            }
            out
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Replicas per partition: one on a single node; in cluster mode, as placed.
fn replication_factor(meta: &crate::metadata::TopicMeta) -> i16 {
    meta.partition_states
        .first()
        .map_or(1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX))
}
