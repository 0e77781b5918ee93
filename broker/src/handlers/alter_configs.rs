//! AlterConfigs (the legacy, replace-all form) for topics. Broker configs are static.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{RequestContext, Versions, str_bytes};
use crate::controller::ConfigChange;
use crate::controller::frontend::{TopicError, on_control};
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let changes: Vec<(String, ConfigChange)> = req
        .resources
        .iter()
        .filter(|r| r.resource_type == RESOURCE_TOPIC)
        .map(|r| {
            let all: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            (r.resource_name.to_string(), ConfigChange::Replace(all))
        })
        .collect();
    let results = apply(shard, changes, req.validate_only).await;
    let mut results = results.into_iter();
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let out = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            let result = resource_result(r.resource_type, &mut results);
            match result {
                // kafka-protocol's default message is "", Kafka sends null on success.
                Ok(()) => out.with_error_message(None),
                Err(e) => out
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// The outcome for one resource of an (Incremental)AlterConfigs request: topics take the next
/// control-plane result in request order; broker configs are static; other types are invalid.
pub fn resource_result(
    resource_type: i8,
    topic_results: &mut impl Iterator<Item = Result<(), TopicError>>,
) -> Result<(), TopicError> {
    match resource_type {
        RESOURCE_TOPIC => topic_results.next().unwrap_or(Err(TopicError::new(
            ResponseError::BrokerNotAvailable,
            "shutting down",
        ))),
        RESOURCE_BROKER => Err(TopicError::new(
            ResponseError::InvalidConfig,
            "broker configs are static: set them in the config file",
        )),
        _ => Err(TopicError::new(
            ResponseError::InvalidRequest,
            "only topic resources can be altered",
        )),
    }
}

/// Sends topic config changes to the control plane.
pub async fn apply(
    shard: &Rc<Shard>,
    changes: Vec<(String, ConfigChange)>,
    validate_only: bool,
) -> Vec<Result<(), TopicError>> {
    if changes.is_empty() {
        return Vec::new();
    }
    on_control(shard, move |s| {
        Box::pin(async move { s.control().alter_configs(&s, changes, validate_only).await })
    })
    .await
    .unwrap_or_default()
}
