//! DescribeConfigs: topic configs under Kafka's names (overrides and defaults, with their
//! source and type), and the broker's static settings that clients commonly read.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::metadata::TopicConfig;
use crate::metadata::topic_config::TOPIC_CONFIG_NAMES;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 1, max: 4 };

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
/// Kafka's ConfigType values.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" => TYPE_LIST,
        "compression.type" | "message.timestamp.type" => TYPE_STRING,
        "preallocate" | "unclean.leader.election.enable" => TYPE_BOOLEAN,
        "min.cleanable.dirty.ratio" => TYPE_DOUBLE,
        "index.interval.bytes" | "max.message.bytes" | "min.insync.replicas" | "segment.bytes" => {
            TYPE_INT
        }
        _ => TYPE_LONG,
    }
}

/// The broker setting a topic key defaults to, where Kafka lists it as a synonym: keys whose
/// broker default needs a unit conversion (`retention.ms` from `log.retention.hours`,
/// `segment.ms` from `log.roll.hours`) or has none (`flush.ms`) list none.
fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    Some(match topic_key {
        "cleanup.policy" => "log.cleanup.policy",
        "compression.type" => "compression.type",
        "delete.retention.ms" => "log.cleaner.delete.retention.ms",
        "max.compaction.lag.ms" => "log.cleaner.max.compaction.lag.ms",
        "min.cleanable.dirty.ratio" => "log.cleaner.min.cleanable.ratio",
        "min.compaction.lag.ms" => "log.cleaner.min.compaction.lag.ms",
        "index.interval.bytes" => "log.index.interval.bytes",
        "max.message.bytes" => "message.max.bytes",
        "message.timestamp.after.max.ms" => "log.message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms" => "log.message.timestamp.before.max.ms",
        "message.timestamp.type" => "log.message.timestamp.type",
        "min.insync.replicas" => "min.insync.replicas",
        "preallocate" => "log.preallocate",
        "retention.bytes" => "log.retention.bytes",
        "segment.bytes" => "log.segment.bytes",
        "unclean.leader.election.enable" => "unclean.leader.election.enable",
        _ => return None,
    })
}

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let metadata = shard.metadata();
    let config = shard.config();
    // The broker-level values topic keys fall back to (their synonyms).
    let topic_defaults = TopicConfig::resolve(&config.log, &Default::default()).ok();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let wanted = |key: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            // A success carries error_message "" (kafka-protocol's default), as Kafka's does
            // (differential test); CreateTopics and AlterConfigs send null.
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            // Synonyms as Kafka lists them (differential test): the entry itself when it is
            // set (a topic override, a static broker setting), then the broker-level default
            // a topic key falls back to, under the broker's name for it.
            let entry = |key: &str, value: String, source: i8, read_only: bool, ty: i8| {
                let mut e = DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(key))
                    .with_value(Some(str_bytes(&value)))
                    .with_read_only(read_only)
                    .with_config_source(source)
                    .with_documentation(None);
                if req.include_synonyms {
                    let mut synonyms = Vec::new();
                    if source != SOURCE_DEFAULT {
                        synonyms.push(
                            DescribeConfigsSynonym::default()
                                .with_name(str_bytes(key))
                                .with_value(Some(str_bytes(&value)))
                                .with_source(source),
                        );
                    }
                    if r.resource_type == RESOURCE_TOPIC
                        && let Some(broker_key) = broker_synonym(key)
                        && let Some(default) = topic_defaults.as_ref().and_then(|d| d.value_of(key))
                    {
                        synonyms.push(
                            DescribeConfigsSynonym::default()
                                .with_name(str_bytes(broker_key))
                                .with_value(Some(str_bytes(&default)))
                                .with_source(SOURCE_DEFAULT),
                        );
                    }
                    e = e.with_synonyms(synonyms);
                }
                if ctx.version >= 3 {
                    e = e.with_config_type(ty);
                }
                e
            };
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = metadata.topic(&name) else {
                        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let cfg = match TopicConfig::resolve(&config.log, &topic.configs) {
                        Ok(c) => c,
                        Err(e) => {
                            return out
                                .with_error_code(ResponseError::InvalidConfig.code())
                                .with_error_message(Some(str_bytes(&e.to_string())));
                        }
                    };
                    let configs = TOPIC_CONFIG_NAMES
                        .iter()
                        .filter(|k| wanted(k))
                        .filter_map(|k| {
                            let source = if topic.configs.contains_key(*k) {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            cfg.value_of(k)
                                .map(|v| entry(k, v, source, false, config_type(k)))
                        })
                        .collect();
                    out.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    if !name.is_empty() && name != shard.shared.node_id().to_string() {
                        return out
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(str_bytes("unknown broker id")));
                    }
                    let statics: Vec<(&str, String, i8)> = vec![
                        ("broker.id", shard.shared.node_id().to_string(), TYPE_INT),
                        ("node.id", shard.shared.node_id().to_string(), TYPE_INT),
                        (
                            "auto.create.topics.enable",
                            config.kafka.auto_create_topics.to_string(),
                            TYPE_BOOLEAN,
                        ),
                        (
                            "num.partitions",
                            config.kafka.default_partitions.to_string(),
                            TYPE_INT,
                        ),
                        ("default.replication.factor", "1".into(), TYPE_INT),
                        (
                            "message.max.bytes",
                            config.log.max_message_bytes.to_string(),
                            TYPE_INT,
                        ),
                        (
                            "log.segment.bytes",
                            config.log.segment_bytes.to_string(),
                            TYPE_INT,
                        ),
                        (
                            "log.retention.ms",
                            config.log.retention_ms.to_string(),
                            TYPE_LONG,
                        ),
                        (
                            "log.retention.bytes",
                            config.log.retention_bytes.to_string(),
                            TYPE_LONG,
                        ),
                        (
                            "log.dirs",
                            config.broker.data_dir.display().to_string(),
                            TYPE_LIST,
                        ),
                        (
                            "socket.request.max.bytes",
                            config.kafka.frame_bytes_max.to_string(),
                            TYPE_INT,
                        ),
                        ("min.insync.replicas", "1".into(), TYPE_INT),
                    ];
                    let configs = statics
                        .into_iter()
                        .filter(|(k, _, _)| wanted(k))
                        .map(|(k, v, ty)| entry(k, v, SOURCE_STATIC_BROKER, true, ty))
                        .collect();
                    out.with_configs(configs)
                }
                _ => out
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(
                        "only topic and broker resources are supported",
                    ))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
