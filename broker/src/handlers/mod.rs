//! Kafka API handlers, one file per API. Each declares the version range it serves
//! (`VERSIONS`); one table (`handler_table!` below) generates both `HANDLERS`, from which
//! ApiVersions is answered, and the dispatch, so a version is never claimed without a
//! handler behind it and no handler runs unadvertised.
//!
//! This module is the boundary where Kafka error codes are chosen. Bad input never panics:
//! an undecodable request, an unknown API key, or an unsupported version (other than
//! ApiVersions, which gets Kafka's UNSUPPORTED_VERSION answer) closes the connection with a
//! log line, as Kafka does.

/// Generates `HANDLERS` (what ApiVersions advertises) and `start` (the dispatch) from one
/// list of `kind Key => module` entries; see the list below.
macro_rules! handler_table {
    ($($kind:ident $key:ident => $module:ident),* $(,)?) => {
        /// Every API we serve, with its handler's declared range, in table order.
        pub const HANDLERS: &[(ApiKey, Versions)] = &[$((ApiKey::$key, $module::VERSIONS)),*];

        /// Starts the handler of `ctx.api_key`: returns the rest of its work, or `None` for
        /// an API not in the table.
        async fn start(
            shard: &Rc<Shard>,
            ctx: RequestContext,
            body: Bytes,
        ) -> Option<LocalBoxFuture<Reply>> {
            match ctx.api_key {
                $(ApiKey::$key => Some(start_handler!($kind, $module, shard, ctx, body)),)*
                _ => None,
            }
        }
    };
}

/// One `handler_table` entry's start (see the kinds there).
macro_rules! start_handler {
    (ordered, $module:ident, $shard:ident, $ctx:ident, $body:ident) => {
        $module::submit($shard, $ctx, $body).await
    };
    (replied, $module:ident, $shard:ident, $ctx:ident, $body:ident) => {{
        let shard = Rc::clone($shard);
        Box::pin(async move {
            match decode($body, $ctx.version) {
                Ok(req) => $module::handle(&shard, &$ctx, req).await,
                Err(e) => Reply::Close(format!(
                    "malformed {:?} v{}: {e}",
                    $ctx.api_key, $ctx.version
                )),
            }
        })
    }};
    (encoded, $module:ident, $shard:ident, $ctx:ident, $body:ident) => {{
        let shard = Rc::clone($shard);
        Box::pin(async move { run(&$ctx, $body, |req| $module::handle(&shard, &$ctx, req)).await })
    }};
}

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::net::frame::{self, encode_response};
use crate::net::sendfile::OutChunk;
use crate::runtime::{LocalBoxFuture, Shard};

/// What the writer sends for one request.
pub enum Reply {
    /// A complete response frame.
    Frame(Bytes),
    /// A response made of memory and file pieces (zero-copy fetch).
    Chunks(Vec<OutChunk>),
    /// No response (Produce with acks=0).
    None,
    /// Close the connection, with the reason for the log.
    Close(String),
}

/// A version range a handler serves, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub min: i16,
    pub max: i16,
}

// Every API we serve: how its handler runs, its key, its module (which declares `VERSIONS`).
// The ApiVersions answer (`HANDLERS`) and the dispatch (`start`) are both generated from this
// one list, so no API is dispatched without being advertised, nor advertised without a
// handler. How a handler runs:
// - `encoded`: `handle(shard, ctx, request) -> response`, decoded and encoded here;
// - `replied`: `handle(shard, ctx, request) -> Reply` (Fetch frames its own answer);
// - `ordered`: `submit(shard, ctx, body)` runs before the connection reads its next request
//   (Produce takes its append tickets there) and returns the rest of the work.
handler_table! {
    ordered Produce => produce,
    replied Fetch => fetch,
    encoded ListOffsets => list_offsets,
    encoded Metadata => metadata,
    encoded ApiVersions => api_versions,
    encoded CreateTopics => create_topics,
    encoded DeleteTopics => delete_topics,
    encoded DeleteRecords => delete_records,
    encoded InitProducerId => init_producer_id,
    encoded OffsetCommit => offset_commit,
    encoded OffsetFetch => offset_fetch,
    encoded FindCoordinator => find_coordinator,
    encoded JoinGroup => join_group,
    encoded Heartbeat => heartbeat,
    encoded LeaveGroup => leave_group,
    encoded SyncGroup => sync_group,
    encoded DescribeGroups => describe_groups,
    encoded ListGroups => list_groups,
    encoded DeleteGroups => delete_groups,
    encoded OffsetDelete => offset_delete,
    encoded TxnOffsetCommit => txn_offset_commit,
    encoded ConsumerGroupHeartbeat => consumer_group_heartbeat,
    encoded ConsumerGroupDescribe => consumer_group_describe,
    encoded OffsetForLeaderEpoch => offset_for_leader_epoch,
    encoded DescribeConfigs => describe_configs,
    encoded AlterConfigs => alter_configs,
    encoded DescribeLogDirs => describe_log_dirs,
    encoded CreatePartitions => create_partitions,
    encoded IncrementalAlterConfigs => incremental_alter_configs,
    encoded DescribeCluster => describe_cluster,
    // Transactions (coordinator side: `crate::txn`).
    encoded AddPartitionsToTxn => add_partitions_to_txn,
    encoded AddOffsetsToTxn => add_offsets_to_txn,
    encoded EndTxn => end_txn,
    encoded DescribeTransactions => describe_transactions,
    encoded ListTransactions => list_transactions,
    encoded WriteTxnMarkers => write_txn_markers,
    encoded DescribeProducers => describe_producers,
}

/// The range we serve for `key`, if any.
pub fn versions_of(key: ApiKey) -> Option<Versions> {
    HANDLERS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// What every handler knows about its request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub peer: SocketAddr,
}

impl RequestContext {
    /// Encodes `body` as this request's response frame.
    pub fn reply<R: Encodable>(&self, body: &R) -> Reply {
        match encode_response(self.api_key, self.version, self.correlation_id, body) {
            Ok(bytes) => Reply::Frame(bytes),
            Err(e) => Reply::Close(e.to_string()),
        }
    }
}

/// Decodes a request body; a decoder error or panic is reported, never propagated.
pub fn decode<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| T::decode(&mut body, version))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("decoder panicked".to_string()),
    }
}

/// A request frame whose header decoded, for an API and version we serve.
#[derive(Debug)]
pub struct ParsedRequest {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    /// The request body: the frame after its header.
    pub body: Bytes,
}

/// Why a request frame goes no further than its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16 },
    #[error("API {api_key:?} not supported")]
    UnsupportedApi { api_key: ApiKey },
    /// ApiVersions at a version we do not serve is answered (`unsupported_version`); any
    /// other API closes the connection.
    #[error("{api_key:?} v{version} not supported")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{version} request header")]
    MalformedHeader { api_key: ApiKey, version: i16 },
}

/// Splits a request frame into its API, version, header and body, as `dispatch` does before
/// it starts a handler. Pure (public for the `request_decode` fuzz target, fuzz/); bad input
/// is a `RequestRefusal`, never a panic.
pub fn parse_request(frame: Bytes) -> Result<ParsedRequest, RequestRefusal> {
    let prefix = frame::header_prefix(&frame);
    let Ok(api_key) = ApiKey::try_from(prefix.api_key) else {
        return Err(RequestRefusal::UnknownApiKey {
            api_key: prefix.api_key,
        });
    };
    let Some(versions) = versions_of(api_key) else {
        return Err(RequestRefusal::UnsupportedApi { api_key });
    };
    let version = prefix.api_version;
    if version < versions.min || version > versions.max {
        return Err(RequestRefusal::UnsupportedVersion {
            api_key,
            version,
            correlation_id: prefix.correlation_id,
        });
    }
    let mut body = frame;
    let header_version = api_key.request_header_version(version);
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        RequestHeader::decode(&mut body, header_version)
    })) {
        Ok(Ok(header)) => Ok(ParsedRequest {
            api_key,
            version,
            header,
            body,
        }),
        _ => Err(RequestRefusal::MalformedHeader { api_key, version }),
    }
}

/// Parses the frame's header and starts its handler as a task on this shard. Returns the
/// task's handle, or `None` when the connection must close. Produce takes its append tickets
/// here, before the next request is read.
pub async fn dispatch(
    shard: &Rc<Shard>,
    frame: Bytes,
    peer: SocketAddr,
) -> Option<compio::runtime::JoinHandle<Reply>> {
    let (raw_api_key, frame_bytes) = (frame::header_prefix(&frame).api_key, frame.len());
    let request = parse_request(frame);
    // Requests for APIs we serve are counted, whatever their version or header.
    if !matches!(
        request,
        Err(RequestRefusal::UnknownApiKey { .. } | RequestRefusal::UnsupportedApi { .. })
    ) {
        shard.shared.metrics[shard.id.0].on_request(raw_api_key, frame_bytes);
    }
    let ParsedRequest {
        api_key,
        version,
        header,
        body,
    } = match request {
        Ok(request) => request,
        Err(RequestRefusal::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            correlation_id,
            ..
        }) => {
            let reply = api_versions::unsupported_version(correlation_id);
            return Some(compio::runtime::spawn(async move { reply }));
        }
        Err(refusal) => {
            tracing::warn!(target: "broker::protocol", %peer, %refusal, "closing connection");
            return None;
        }
    };
    let ctx = RequestContext {
        api_key,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        peer,
    };
    let Some(fut) = start(shard, ctx, body).await else {
        tracing::warn!(target: "broker::protocol", %peer, ?api_key, "no handler, closing connection");
        return None;
    };
    Some(compio::runtime::spawn(fut))
}

/// Decode, handle, encode.
async fn run<Req, Resp, Fut>(ctx: &RequestContext, body: Bytes, f: impl FnOnce(Req) -> Fut) -> Reply
where
    Req: Decodable,
    Resp: Encodable,
    Fut: Future<Output = Resp>,
{
    match decode::<Req>(body, ctx.version) {
        Ok(req) => {
            let resp = f(req).await;
            ctx.reply(&resp)
        }
        Err(e) => Reply::Close(format!("malformed {:?} v{}: {e}", ctx.api_key, ctx.version)),
    }
}

/// Topic name as kafka-protocol carries it.
pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        s.to_string(),
    ))
}

pub fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ctx(api_key: ApiKey, version: i16) -> RequestContext {
        RequestContext {
            api_key,
            version,
            correlation_id: 1,
            client_id: None,
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }

    /// ApiVersions advertises exactly the table: every API once, with its module's range.
    #[test]
    fn api_versions_answers_the_handler_table() {
        let advertised = api_versions::response(0).api_keys;
        assert_eq!(advertised.len(), HANDLERS.len());
        let mut seen = HashSet::new();
        for (a, (key, versions)) in advertised.iter().zip(HANDLERS) {
            assert!(seen.insert(a.api_key), "{key:?} listed twice");
            assert_eq!(a.api_key, *key as i16);
            assert_eq!((a.min_version, a.max_version), (versions.min, versions.max));
            assert!(versions.min <= versions.max, "{key:?}");
        }
        assert_eq!(versions_of(ApiKey::Produce), Some(produce::VERSIONS));
        assert_eq!(versions_of(ApiKey::Fetch), Some(fetch::VERSIONS));
    }

    /// Every advertised API has a handler and nothing else is dispatched.
    #[test]
    fn dispatch_serves_exactly_the_advertised_apis() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (shard, _threads) = crate::runtime::test_support::shards(1);
            let mut dispatched = 0;
            for key in (0..=i16::MAX).filter_map(|k| ApiKey::try_from(k).ok()) {
                let version = versions_of(key).map_or(0, |v| v.max);
                let started = start(&shard, ctx(key, version), Bytes::new()).await;
                assert_eq!(
                    started.is_some(),
                    versions_of(key).is_some(),
                    "{key:?}: dispatched and advertised must agree"
                );
                dispatched += usize::from(started.is_some());
            }
            assert_eq!(dispatched, HANDLERS.len());
        });
    }
}
