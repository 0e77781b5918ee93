//! ApiVersions: the ranges every handler declares (`HANDLERS`), nothing typed twice.
//! A request newer than we serve is answered as Kafka does: UNSUPPORTED_VERSION in the v0
//! layout, carrying our ranges, so the client retries with a version we know.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{HANDLERS, Reply, RequestContext, Versions};
use crate::net::frame::encode_response;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 4 };

pub async fn handle(
    _shard: &Rc<Shard>,
    _ctx: &RequestContext,
    _req: ApiVersionsRequest,
) -> ApiVersionsResponse {
    response(0)
}

/// The whole answer with `error_code`.
pub fn response(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            HANDLERS
                .iter()
                .map(|(key, v)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(v.min)
                        .with_max_version(v.max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(-1)
}

/// Kafka's answer to an ApiVersions version it does not know: v0 layout, error 35.
pub fn unsupported_version(correlation_id: i32) -> Reply {
    let body = response(ResponseError::UnsupportedVersion.code());
    match encode_response(ApiKey::ApiVersions, 0, correlation_id, &body) {
        Ok(b) => Reply::Frame(b),
        Err(e) => Reply::Close(e.to_string()),
    }
}
