//! CreatePartitions: grows a topic; the new partitions open on their owning shards before
//! the answer. Manual assignments are refused (one node).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{RequestContext, Versions, str_bytes};
use crate::controller::frontend::on_control;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 3 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let asks: Vec<(String, i32, bool)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.count,
                t.assignments.as_ref().is_some_and(|a| !a.is_empty()),
            )
        })
        .collect();
    let validate_only = req.validate_only;
    let results = on_control(shard, move |s| {
        Box::pin(async move { s.control().create_partitions(&s, asks, validate_only).await })
    })
    .await
    .unwrap_or_default();
    let mut results = results.into_iter();
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let out = CreatePartitionsTopicResult::default().with_name(t.name);
            match results.next() {
                Some(Ok(())) => out,
                Some(Err(e)) => out
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
                None => out.with_error_code(ResponseError::BrokerNotAvailable.code()),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
