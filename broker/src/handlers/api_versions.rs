//! ApiVersions: the ranges every handler declares (`HANDLERS`), nothing typed twice, and
//! the features (v3+): `transaction.version` supported 0..2 and finalized at the
//! `[transaction] version` setting, which is how Kafka 4 clients decide to use transaction
//! version 2 (KIP-890 part 2). The finalized-features epoch is the broker's start time in
//! milliseconds, so a restart with another setting is newer to clients that cached the old.
//! A request newer than we serve is answered as Kafka does: UNSUPPORTED_VERSION in the v0
//! layout, carrying our ranges, so the client retries with a version we know.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{HANDLERS, Reply, RequestContext, Versions};
use crate::net::frame::encode_response;
use crate::runtime::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 4 };

/// Kafka's feature name for the transaction protocol version.
pub const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";

/// Below this version a supported feature whose minimum is 0 is not listed: older clients
/// took a zero minimum for "not supported" (Kafka's `alterFeatureLevel0`).
const ZERO_MINIMUM_LISTED_FROM: i16 = 4;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    _req: ApiVersionsRequest,
) -> ApiVersionsResponse {
    with_features(
        response(0),
        shard.config().transaction.version,
        ctx.version >= ZERO_MINIMUM_LISTED_FROM,
    )
}

/// The whole answer with `error_code`, without features.
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

/// `response` with the supported and finalized features (a feature finalized at level 0
/// is not listed, as in Kafka; nor, unless `zero_minimum_listed`, a supported one whose
/// minimum is 0).
fn with_features(
    response: ApiVersionsResponse,
    transaction_version: i16,
    zero_minimum_listed: bool,
) -> ApiVersionsResponse {
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(crate::partition::now_ms);
    let name = || StrBytes::from_static_str(TRANSACTION_VERSION_FEATURE);
    let finalized = (transaction_version > 0)
        .then(|| {
            FinalizedFeatureKey::default()
                .with_name(name())
                .with_min_version_level(transaction_version)
                .with_max_version_level(transaction_version)
        })
        .into_iter()
        .collect();
    let supported = [SupportedFeatureKey::default()
        .with_name(name())
        .with_min_version(0)
        .with_max_version(crate::txn::TxnVersion::MAX.0)]
    .into_iter()
    .filter(|f| zero_minimum_listed || f.min_version > 0)
    .collect();
    response
        .with_supported_features(supported)
        .with_finalized_features(finalized)
        .with_finalized_features_epoch(epoch)
}

/// Kafka's answer to an ApiVersions version it does not know: v0 layout, error 35.
pub fn unsupported_version(correlation_id: i32) -> Reply {
    let body = response(ResponseError::UnsupportedVersion.code());
    match encode_response(ApiKey::ApiVersions, 0, correlation_id, &body) {
        Ok(b) => Reply::Frame(b),
        Err(e) => Reply::Close(e.to_string()),
    }
}
