//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition (on a single node, a quorum of one, that is this node). For consumer groups the
//! topic is created first (as Kafka does on first use), so the group requests that follow
//! find their partition. Batched keys from v4 (KIP-699), each answered on its own.
//! A transactional id's coordinator is the leader of its `__transaction_state` partition;
//! the topic is created on the first transactional lookup, as Kafka does (`crate::txn`).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, Versions, str_bytes};
use crate::group::frontend::{coordinator_broker, ensure_offsets_topic};
use crate::metadata::{ClusterMetadata, TopicMeta};
use crate::runtime::Shard;
use crate::txn::frontend::ensure_state_topic;

pub const VERSIONS: Versions = Versions { min: 0, max: 6 };

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let answers: Vec<(StrBytes, Answer)> = match req.key_type {
        KEY_TYPE_GROUP => match ensure_offsets_topic(shard).await {
            Ok(topic) => {
                let metadata = shard.metadata();
                keys.into_iter()
                    .map(|key| {
                        let answer = group_coordinator(&metadata, &topic, &key);
                        (key, answer)
                    })
                    .collect()
            }
            Err(error) => with_each(keys, Answer::error(error.code(), &error.to_string())),
        },
        KEY_TYPE_TRANSACTION => match ensure_state_topic(shard).await {
            Ok(topic) => {
                let metadata = shard.metadata();
                keys.into_iter()
                    .map(|key| {
                        let answer = txn_coordinator(&metadata, &topic, &key);
                        (key, answer)
                    })
                    .collect()
            }
            Err(error) => with_each(
                keys,
                Answer::error(error.code(), "transaction coordinator not available"),
            ),
        },
        // Share groups (v6, KIP-932) and anything else.
        _ => with_each(
            keys,
            Answer::error(
                ResponseError::InvalidRequest.code(),
                "unsupported coordinator key type",
            ),
        ),
    };
    if ctx.version >= 4 {
        let coordinators = answers
            .into_iter()
            .map(|(key, a)| {
                Coordinator::default()
                    .with_key(key)
                    .with_error_message(a.message())
                    .with_node_id(BrokerId(a.node_id))
                    .with_host(a.host)
                    .with_port(a.port)
                    .with_error_code(a.code)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (_, a) = answers.into_iter().next().expect("one key before v4");
    FindCoordinatorResponse::default()
        .with_error_message(a.message())
        .with_error_code(a.code)
        .with_node_id(BrokerId(a.node_id))
        .with_host(a.host)
        .with_port(a.port)
}

/// One key's coordinator, or its error.
#[derive(Clone)]
struct Answer {
    code: i16,
    node_id: i32,
    host: StrBytes,
    port: i32,
    /// Null on success, as Kafka sends it.
    message: Option<StrBytes>,
}

impl Answer {
    fn error(code: i16, message: &str) -> Self {
        Self {
            code,
            node_id: -1,
            host: StrBytes::default(),
            port: -1,
            message: Some(str_bytes(message)),
        }
    }

    fn message(&self) -> Option<StrBytes> {
        self.message.clone()
    }
}

fn with_each(keys: Vec<StrBytes>, answer: Answer) -> Vec<(StrBytes, Answer)> {
    keys.into_iter().map(|k| (k, answer.clone())).collect()
}

/// The leader of the group's offsets partition (COORDINATOR_NOT_AVAILABLE while it has none).
fn group_coordinator(metadata: &ClusterMetadata, topic: &TopicMeta, group_id: &str) -> Answer {
    match coordinator_broker(metadata, topic, group_id) {
        Ok(broker) => Answer {
            code: 0,
            node_id: broker.node_id,
            host: str_bytes(&broker.host),
            port: i32::from(broker.port),
            message: None,
        },
        Err(error) => Answer::error(error.code(), &error.to_string()),
    }
}

/// The leader of the transactional id's state partition (COORDINATOR_NOT_AVAILABLE while it
/// has none); an empty id is INVALID_REQUEST, as Kafka answers it.
fn txn_coordinator(
    metadata: &ClusterMetadata,
    topic: &TopicMeta,
    transactional_id: &str,
) -> Answer {
    if transactional_id.is_empty() {
        return Answer::error(
            ResponseError::InvalidRequest.code(),
            "empty transactional id",
        );
    }
    match crate::txn::frontend::coordinator_broker(metadata, topic, transactional_id) {
        Ok(broker) => Answer {
            code: 0,
            node_id: broker.node_id,
            host: str_bytes(&broker.host),
            port: i32::from(broker.port),
            message: None,
        },
        Err(error) => Answer::error(error.code(), "transaction coordinator not available"),
    }
}
