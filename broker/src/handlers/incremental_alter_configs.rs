//! IncrementalAlterConfigs for topics: SET (0), DELETE (1), APPEND (2) and SUBTRACT (3) on
//! list configs (cleanup.policy). Broker configs are static.

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::RESOURCE_TOPIC;
use super::{RequestContext, Versions, str_bytes};
use crate::controller::ConfigChange;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 1 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let changes: Vec<(String, ConfigChange)> = req
        .resources
        .iter()
        .filter(|r| r.resource_type == RESOURCE_TOPIC)
        .map(|r| {
            let ops = r
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            (r.resource_name.to_string(), ConfigChange::Incremental(ops))
        })
        .collect();
    let results = super::alter_configs::apply(shard, changes, req.validate_only).await;
    let mut results = results.into_iter();
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let out = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            let result = super::alter_configs::resource_result(r.resource_type, &mut results);
            match result {
                // kafka-protocol's default message is "", Kafka sends null on success.
                Ok(()) => out.with_error_message(None),
                Err(e) => out
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
