//! DeleteTopics: by name (all versions) or by topic id (v6+), through the control plane,
//! which closes the partitions on their shards and removes their files before answering.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{RequestContext, Versions, str_bytes, topic_name};
use crate::controller::frontend::on_control;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 1, max: 6 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let metadata = shard.metadata();
    // (requested name, requested id, resolved name or error)
    let mut asked: Vec<(Option<String>, uuid::Uuid, Result<String, ResponseError>)> = Vec::new();
    if ctx.version >= 6 {
        for t in &req.topics {
            match (&t.name, t.topic_id.is_nil()) {
                (Some(n), _) => {
                    asked.push((Some(n.0.to_string()), t.topic_id, Ok(n.0.to_string())))
                }
                (None, false) => match metadata.topic_by_id(&t.topic_id) {
                    Some(m) => asked.push((None, t.topic_id, Ok(m.name.clone()))),
                    None => asked.push((None, t.topic_id, Err(ResponseError::UnknownTopicId))),
                },
                (None, true) => asked.push((None, t.topic_id, Err(ResponseError::InvalidRequest))),
            }
        }
    } else {
        for n in &req.topic_names {
            asked.push((
                Some(n.0.to_string()),
                uuid::Uuid::nil(),
                Ok(n.0.to_string()),
            ));
        }
    }
    let names: Vec<String> = asked
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok().cloned())
        .collect();
    let results = if names.is_empty() {
        Vec::new()
    } else {
        on_control(shard, move |s| {
            Box::pin(async move { s.control().delete_topics(&s, names).await })
        })
        .await
        .unwrap_or_default()
    };
    let mut results = results.into_iter();
    let responses = asked
        .into_iter()
        .map(|(name, id, resolved)| {
            let mut out = DeletableTopicResult::default().with_topic_id(id);
            let r = match resolved {
                Ok(n) => {
                    out = out.with_name(Some(topic_name(&n)));
                    results
                        .next()
                        .map(|r| r.map(|m| m.id).map_err(|e| (e.code, Some(e.message))))
                }
                Err(code) => {
                    out = out.with_name(name.as_deref().map(topic_name));
                    Some(Err((code, None)))
                }
            };
            match r.unwrap_or(Err((ResponseError::BrokerNotAvailable, None))) {
                Ok(id) => {
                    if ctx.version >= 6 {
                        out = out.with_topic_id(id);
                    }
                    out
                }
                Err((code, msg)) => {
                    out = out.with_error_code(code.code());
                    if ctx.version >= 5 {
                        out = out.with_error_message(msg.as_deref().map(str_bytes));
                    }
                    out
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
