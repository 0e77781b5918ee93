//! Kafka API handlers, one file per API. Each declares the version range it serves
//! (`VERSIONS`); `HANDLERS` lists them and ApiVersions is answered from that list, so a
//! version is never claimed without a handler behind it.
//!
//! This module is the boundary where Kafka error codes are chosen. Bad input never panics:
//! an undecodable request, an unknown API key, or an unsupported version (other than
//! ApiVersions, which gets Kafka's UNSUPPORTED_VERSION answer) closes the connection with a
//! log line, as Kafka does.

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
pub mod fetch;
pub mod fetch_frame;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::net::frame::{self, encode_response};
use crate::net::sendfile::OutChunk;
use crate::shard::{LocalBoxFuture, Shard};

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

/// Every API we serve, with its handler's declared range.
pub const HANDLERS: &[(ApiKey, Versions)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::DeleteRecords, delete_records::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
    (
        ApiKey::ConsumerGroupHeartbeat,
        consumer_group_heartbeat::VERSIONS,
    ),
    (
        ApiKey::ConsumerGroupDescribe,
        consumer_group_describe::VERSIONS,
    ),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
    ),
    (ApiKey::DescribeConfigs, describe_configs::VERSIONS),
    (ApiKey::AlterConfigs, alter_configs::VERSIONS),
    (ApiKey::DescribeLogDirs, describe_log_dirs::VERSIONS),
    (ApiKey::CreatePartitions, create_partitions::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        incremental_alter_configs::VERSIONS,
    ),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
];

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
    let fut: LocalBoxFuture<Reply> = if api_key == ApiKey::Produce {
        produce::submit(shard, ctx, body).await
    } else {
        Box::pin(handle(Rc::clone(shard), ctx, body))
    };
    Some(compio::runtime::spawn(fut))
}

async fn handle(shard: Rc<Shard>, ctx: RequestContext, body: Bytes) -> Reply {
    let s = &shard;
    let c = &ctx;
    match ctx.api_key {
        ApiKey::ApiVersions => run(c, body, |r| api_versions::handle(s, c, r)).await,
        ApiKey::Metadata => run(c, body, |r| metadata::handle(s, c, r)).await,
        ApiKey::CreateTopics => run(c, body, |r| create_topics::handle(s, c, r)).await,
        ApiKey::DeleteTopics => run(c, body, |r| delete_topics::handle(s, c, r)).await,
        ApiKey::CreatePartitions => run(c, body, |r| create_partitions::handle(s, c, r)).await,
        ApiKey::InitProducerId => run(c, body, |r| init_producer_id::handle(s, c, r)).await,
        ApiKey::FindCoordinator => run(c, body, |r| find_coordinator::handle(s, c, r)).await,
        ApiKey::JoinGroup => run(c, body, |r| join_group::handle(s, c, r)).await,
        ApiKey::SyncGroup => run(c, body, |r| sync_group::handle(s, c, r)).await,
        ApiKey::Heartbeat => run(c, body, |r| heartbeat::handle(s, c, r)).await,
        ApiKey::LeaveGroup => run(c, body, |r| leave_group::handle(s, c, r)).await,
        ApiKey::ListGroups => run(c, body, |r| list_groups::handle(s, c, r)).await,
        ApiKey::DescribeGroups => run(c, body, |r| describe_groups::handle(s, c, r)).await,
        ApiKey::DeleteGroups => run(c, body, |r| delete_groups::handle(s, c, r)).await,
        ApiKey::OffsetCommit => run(c, body, |r| offset_commit::handle(s, c, r)).await,
        ApiKey::OffsetFetch => run(c, body, |r| offset_fetch::handle(s, c, r)).await,
        ApiKey::OffsetDelete => run(c, body, |r| offset_delete::handle(s, c, r)).await,
        ApiKey::ConsumerGroupHeartbeat => {
            run(c, body, |r| consumer_group_heartbeat::handle(s, c, r)).await
        }
        ApiKey::ConsumerGroupDescribe => {
            run(c, body, |r| consumer_group_describe::handle(s, c, r)).await
        }
        ApiKey::ListOffsets => run(c, body, |r| list_offsets::handle(s, c, r)).await,
        ApiKey::Fetch => match decode(body, c.version) {
            Ok(r) => fetch::handle(s, c, r).await,
            Err(e) => Reply::Close(format!("malformed Fetch v{}: {e}", c.version)),
        },
        ApiKey::DescribeConfigs => run(c, body, |r| describe_configs::handle(s, c, r)).await,
        ApiKey::AlterConfigs => run(c, body, |r| alter_configs::handle(s, c, r)).await,
        ApiKey::IncrementalAlterConfigs => {
            run(c, body, |r| incremental_alter_configs::handle(s, c, r)).await
        }
        ApiKey::DescribeCluster => run(c, body, |r| describe_cluster::handle(s, c, r)).await,
        ApiKey::DeleteRecords => run(c, body, |r| delete_records::handle(s, c, r)).await,
        ApiKey::OffsetForLeaderEpoch => {
            run(c, body, |r| offset_for_leader_epoch::handle(s, c, r)).await
        }
        ApiKey::DescribeLogDirs => run(c, body, |r| describe_log_dirs::handle(s, c, r)).await,
        other => Reply::Close(format!("no handler for {other:?}")),
    }
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
