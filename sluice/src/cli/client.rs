//! A small blocking Kafka client for the admin and console commands.
//!
//! Owns: one TCP connection (std::net, with timeouts), version choice (the highest both this
//! client and the broker speak) and turning failures into `anyhow` errors with context.
//! Framing, encoding, decoding and error-code names are kafka-wire's (`encode_request`,
//! `blocking::read_frame`, `decode_response`, `error_name`). Does not own: retries or
//! metadata caching; each command is a short sequence of calls.
//!
//! Why a loop of its own rather than one blocking client in kafka-wire shared with the
//! integration tests' `RawClient`: the two agree only on the bytes (which they share); this
//! one negotiates versions and reports errors, the test client panics on any failure and must
//! also write malformed frames on purpose.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::Request;
use kafka_wire::blocking::read_frame;
use kafka_wire::frame::response_correlation_id;

/// Client id in every request header.
pub const CLIENT_ID: &str = "sluice-cli";
/// Socket timeout: turns a stuck broker into an error instead of a hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response frame accepted.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The versions this client speaks, `(api, min, max)`: capped where a newer version changes
/// fields the commands do not fill (e.g. DeleteTopics v6 by id, OffsetFetch v8 batched groups).
const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // v4+ JoinGroup asks for MEMBER_ID_REQUIRED round trips (handled); LeaveGroup v3+ batches.
    (ApiKey::JoinGroup, 4, 7),
    (ApiKey::SyncGroup, 3, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 3, 4),
];

pub struct Client {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
    /// `(api_key, broker min, broker max)`.
    broker_versions: Vec<(i16, i16, i16)>,
}

impl Client {
    /// Connects to `addr` and asks for the broker's API versions.
    pub fn connect(addr: &str) -> Result<Client> {
        let sock = addr
            .to_socket_addrs()
            .with_context(|| format!("resolving {addr}"))?
            .next()
            .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&sock, IO_TIMEOUT)
            .with_context(|| format!("connecting to {addr} (is a broker running there?)"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            broker_versions: Vec::new(),
        };
        let versions: ApiVersionsResponse = client
            .call_at(&ApiVersionsRequest::default(), 0)
            .context("ApiVersions")?;
        check(versions.error_code, "ApiVersions")?;
        client.broker_versions = versions
            .api_keys
            .iter()
            .map(|a| (a.api_key, a.min_version, a.max_version))
            .collect();
        Ok(client)
    }

    /// Connects to the first reachable address of a `HOST:PORT[,HOST:PORT...]` list.
    pub fn bootstrap(list: &str) -> Result<Client> {
        let mut last = None;
        for addr in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match Client::connect(addr) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("--bootstrap is empty")))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `api` both sides speak.
    pub fn version_for(&self, api: ApiKey) -> Result<i16> {
        let &(_, client_min, client_max) = CLIENT_VERSIONS
            .iter()
            .find(|v| v.0 == api)
            .ok_or_else(|| anyhow!("the CLI does not speak {api:?}"))?;
        let &(_, broker_min, broker_max) = self
            .broker_versions
            .iter()
            .find(|v| v.0 == api as i16)
            .ok_or_else(|| anyhow!("broker {} does not support {api:?}", self.addr))?;
        let version = client_max.min(broker_max);
        if version < client_min.max(broker_min) {
            bail!(
                "no common version of {api:?}: CLI {client_min}..={client_max}, broker {broker_min}..={broker_max}"
            );
        }
        Ok(version)
    }

    /// Sends `request` at the negotiated version; returns the response and that version.
    pub fn call<R: Request>(&mut self, request: &R) -> Result<(R::Response, i16)> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        let version = self.version_for(api)?;
        let response = self
            .call_at(request, version)
            .with_context(|| format!("{api:?} v{version} to {}", self.addr))?;
        Ok((response, version))
    }

    /// Sends `request` at `version` and waits for its response.
    pub fn call_at<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = kafka_wire::encode_request(request, version, correlation_id, CLIENT_ID)?;
        self.stream.write_all(&frame).context("sending request")?;
        let mut body = read_frame(&mut self.stream, RESPONSE_BYTES_MAX)
            .context("reading response (broker closed the connection?)")?;
        let got = response_correlation_id(&body).unwrap_or_default();
        if got != correlation_id {
            bail!("response correlation id {got}, expected {correlation_id}");
        }
        Ok(kafka_wire::decode_response::<R>(&mut body, version)?)
    }
}

/// A Kafka error code by name, e.g. `TOPIC_ALREADY_EXISTS(36)`.
pub fn error_name(code: i16) -> String {
    kafka_wire::error_name(code)
}

/// Ok for code 0, else an error naming the code and `what` failed.
pub fn check(code: i16, what: &str) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        bail!("{what}: {}", error_name(code))
    }
}

/// Like [`check`], with the broker's error message when it sent one.
pub fn check_msg(code: i16, message: Option<&str>, what: &str) -> Result<()> {
    match (code, message) {
        (0, _) => Ok(()),
        (_, Some(m)) if !m.is_empty() => bail!("{what}: {} ({m})", error_name(code)),
        _ => check(code, what),
    }
}
