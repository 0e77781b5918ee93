//! Metadata: the registered brokers, topics with their partitions (leaders, epochs, replicas,
//! ISR from the metadata quorum), and auto-creation of requested topics when
//! `kafka.auto_create_topics` is on and the client allows it.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{RequestContext, Versions, str_bytes, topic_name};
use crate::controller::frontend::{NewTopic, on_control};
use crate::metadata::{ClusterMetadata, TopicMeta, valid_topic_name};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 13 };

/// Authorized-operations value meaning "not requested" (Kafka's INT32_MIN).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Without an authorizer everything is allowed: one bit per AclOperation code. Topic: READ 3,
/// WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11.
pub const TOPIC_OPERATIONS_ALL: i32 = 0x0df8;
/// Cluster (Kafka's AclEntry.supportedOperations): CREATE 5, ALTER 7, DESCRIBE 8,
/// CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
/// (CREATE_TOKENS/DESCRIBE_TOKENS belong to the USER resource, not the cluster.)
pub const CLUSTER_OPERATIONS_ALL: i32 = 0x1fa0;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: MetadataRequest,
) -> MetadataResponse {
    let mut metadata = shard.metadata();
    let topic_ops = if req.include_topic_authorized_operations {
        TOPIC_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let cluster_ops = if req.include_cluster_authorized_operations && ctx.version <= 10 {
        CLUSTER_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && ctx.version == 0,
    };
    let mut topics = Vec::new();
    if all {
        for t in metadata.topics.values() {
            topics.push(topic_entry(&metadata, t, topic_ops));
        }
    } else {
        let requested = req.topics.unwrap_or_default();
        let allow_create = shard.config().kafka.auto_create_topics
            && (ctx.version < 4 || req.allow_auto_topic_creation);
        // Auto-create the missing ones in one control-plane call.
        let missing: Vec<String> = requested
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| metadata.topic(n).is_none() && valid_topic_name(n))
            .collect();
        let mut created_errors: BTreeMap<String, ResponseError> = BTreeMap::new();
        if allow_create && !missing.is_empty() {
            let new: Vec<NewTopic> = missing
                .iter()
                .map(|n| NewTopic {
                    name: n.clone(),
                    partitions: -1,
                    replication_factor: -1,
                    configs: BTreeMap::new(),
                    has_assignment: false,
                })
                .collect();
            let results = on_control(shard, move |s| {
                Box::pin(async move { s.control().create_topics(&s, new, false).await })
            })
            .await;
            for (name, r) in missing.iter().zip(results.unwrap_or_default()) {
                if let Err(e) = r
                    && e.code != ResponseError::TopicAlreadyExists
                {
                    created_errors.insert(name.clone(), e.code);
                }
            }
            metadata = shard.metadata();
        }
        for t in requested {
            let entry = match (&t.name, t.topic_id.is_nil()) {
                (Some(name), _) => {
                    let name = name.0.to_string();
                    match metadata.topic(&name) {
                        Some(meta) => topic_entry(&metadata, meta, topic_ops),
                        None => {
                            let code = if !valid_topic_name(&name) {
                                ResponseError::InvalidTopicException
                            } else if let Some(e) = created_errors.get(&name) {
                                *e
                            } else if allow_create {
                                ResponseError::LeaderNotAvailable
                            } else {
                                ResponseError::UnknownTopicOrPartition
                            };
                            error_entry(Some(&name), t.topic_id, code)
                        }
                    }
                }
                (None, false) => match metadata.topic_by_id(&t.topic_id) {
                    Some(meta) => topic_entry(&metadata, meta, topic_ops),
                    None => error_entry(None, t.topic_id, ResponseError::UnknownTopicId),
                },
                (None, true) => error_entry(None, t.topic_id, ResponseError::InvalidRequest),
            };
            topics.push(entry);
        }
    }
    let (brokers, controller) = cluster_brokers(shard, &metadata);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&metadata.cluster_id)))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}

/// The live (unfenced) brokers, always including this one (the client is
/// talking to it), and the active controller (-1 while the quorum has no leader).
pub fn cluster_brokers(
    shard: &Shard,
    metadata: &ClusterMetadata,
) -> (Vec<MetadataResponseBroker>, i32) {
    let me = shard.shared.node_id();
    let brokers = metadata
        .brokers
        .values()
        .filter(|b| !b.fenced || b.node_id == me)
        .map(|b| {
            let mut entry = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port));
            if let Some(rack) = &b.rack {
                entry = entry.with_rack(Some(str_bytes(rack)));
            }
            entry
        })
        .collect();
    (brokers, metadata.controller_id.unwrap_or(-1))
}

/// Leaders, replicas, ISR and offline (fenced) replicas as the metadata quorum committed them.
fn topic_entry(
    metadata: &ClusterMetadata,
    t: &Arc<TopicMeta>,
    operations: i32,
) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    let offline = |v: &[i32]| {
        v.iter()
            .filter(|n| metadata.brokers.get(n).is_none_or(|b| b.fenced))
            .map(|&n| BrokerId(n))
            .collect::<Vec<_>>()
    };
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.id)
        .with_is_internal(t.name == crate::group::records::OFFSETS_TOPIC)
        .with_topic_authorized_operations(operations)
        .with_partitions(
            t.partition_states
                .iter()
                .enumerate()
                .map(|(p, s)| {
                    let entry = MetadataResponsePartition::default()
                        .with_partition_index(p as i32)
                        .with_leader_id(BrokerId(s.leader.unwrap_or(-1)))
                        .with_leader_epoch(s.leader_epoch)
                        .with_replica_nodes(ids(&s.replicas))
                        .with_isr_nodes(ids(&s.isr))
                        .with_offline_replicas(offline(&s.replicas));
                    if s.leader.is_none() {
                        entry.with_error_code(ResponseError::LeaderNotAvailable.code())
                    } else {
                        entry
                    }
                })
                .collect(),
        )
}

fn error_entry(name: Option<&str>, id: uuid::Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_error_code(code.code())
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
