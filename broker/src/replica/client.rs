//! A follower's Kafka connection to a leader broker: one compio `TcpStream`, one request at a
//! time (the fetcher sends its next request only after the previous answer).
//!
//! This is the broker's one Kafka client connection (the compio one); the tokio one is
//! loadgen's (`loadgen::client::connection`). Both are built on kafka-wire.
//!
//! Owns: connecting with a deadline, sending request frames (kafka-wire's
//! `encode_request_into`, the header version chosen by kafka-protocol from the API version),
//! reading one size-prefixed response frame into a buffer from the shard's `FramePool` (large
//! fetch answers reuse mapped pages, runtime/frame_pool.rs), matching its correlation id and
//! decoding it (kafka-wire's `decode_response`; record bytes stay `Bytes` slices of the frame).
//! Does not own: what is sent (fetcher.rs), retries and reconnects (fetcher.rs), version
//! negotiation: every node of a cluster runs this build, which serves Fetch v12 and
//! OffsetForLeaderEpoch v4 (handlers/fetch.rs, handlers/offset_for_leader_epoch.rs).
//! Invariants: after any error the connection is unusable (a response may be half read or
//! still coming) and the caller drops it; every wait has a deadline.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use kafka_protocol::protocol::Request;
use kafka_wire::codec::{api_key_of, decode_response, encode_request_into};
use kafka_wire::frame::{SIZE_PREFIX_BYTES, response_correlation_id, response_frame_bytes};

use crate::runtime::frame_pool::{FramePool, POOLED_FRAME_BYTES_MIN};

/// Client id in every request header (leaders' logs name the follower's connection by it).
pub const CLIENT_ID: &str = "sluice-replica-fetcher";
/// Largest response frame accepted. A fetch answer is bounded by the request's max_bytes, except
/// that Kafka always returns the first batch whole (KIP-74), and a batch is bounded by the
/// engine's batch limit.
pub const RESPONSE_BYTES_MAX: usize = 128 * 1024 * 1024;

const _: () = assert!(RESPONSE_BYTES_MAX >= 2 * engine::limits::MAX_BATCH_BYTES_LIMIT as usize);

/// Why a call failed. Any of them ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: no answer within {timeout_ms} ms")]
    ConnectTimeout { addr: String, timeout_ms: u64 },
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("connection to the leader: {0}")]
    Io(#[source] std::io::Error),
    #[error("the leader closed the connection")]
    Closed,
    #[error("response frame of {size} bytes (limit {RESPONSE_BYTES_MAX})")]
    FrameSize { size: i64 },
    #[error("response correlation id {got}, expected {expected}")]
    CorrelationMismatch { expected: i32, got: i32 },
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("cannot decode the response: {0}")]
    Decode(String),
}

/// One connection to a leader's Kafka listener.
pub struct LeaderConnection {
    stream: TcpStream,
    addr: String,
    correlation_id: i32,
    /// Reused encode buffer (requests are small; this only grows to the largest one).
    encode_buf: BytesMut,
    pool: FramePool,
}

impl LeaderConnection {
    /// Connects to `addr` ("host:port") within `timeout`.
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        pool: FramePool,
    ) -> Result<LeaderConnection, ClientError> {
        let connect = TcpStream::connect(addr.to_string());
        let stream = match compio::time::timeout(timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    source,
                });
            }
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    addr: addr.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
        };
        stream.set_nodelay(true).map_err(ClientError::Io)?;
        Ok(LeaderConnection {
            stream,
            addr: addr.to_string(),
            correlation_id: 0,
            encode_buf: BytesMut::new(),
            pool,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` at `version` and decodes its answer, all within `timeout`.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        match compio::time::timeout(timeout, self.call_inner(request, version)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    async fn call_inner<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let mut buf = std::mem::take(&mut self.encode_buf);
        encode_request_into(
            &mut buf,
            api_key_of::<R>(),
            version,
            correlation_id,
            CLIENT_ID,
            request,
        )
        .map_err(|e| ClientError::Encode(e.to_string()))?;
        let mut s: &TcpStream = &self.stream;
        let BufResult(written, buf) = s.write_all(buf).await;
        self.encode_buf = buf;
        written.map_err(ClientError::Io)?;
        let mut body = self.read_frame().await?;
        let got = response_correlation_id(&body).expect("check_frame_size keeps the header");
        if got != correlation_id {
            return Err(ClientError::CorrelationMismatch {
                expected: correlation_id,
                got,
            });
        }
        decode_response::<R>(&mut body, version).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Reads one response frame (without its size prefix).
    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut s: &TcpStream = &self.stream;
        let BufResult(r, size) = s.read_exact([0u8; SIZE_PREFIX_BYTES]).await;
        r.map_err(read_error)?;
        let size = i32::from_be_bytes(size);
        let size = check_frame_size(size)?;
        let pooled = size >= POOLED_FRAME_BYTES_MIN;
        let buf = if pooled {
            self.pool.take(size)
        } else {
            Vec::with_capacity(size)
        };
        let BufResult(r, buf) = s.read_exact(buf.slice(0..size)).await;
        r.map_err(read_error)?;
        let buf = buf.into_inner();
        debug_assert_eq!(buf.len(), size);
        Ok(if pooled {
            self.pool.freeze(buf)
        } else {
            Bytes::from(buf)
        })
    }
}

/// End of stream mid-read is the peer closing, not an I/O failure.
fn read_error(e: std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ClientError::Closed
    } else {
        ClientError::Io(e)
    }
}

/// The frame size from a response's size prefix, if acceptable.
fn check_frame_size(size: i32) -> Result<usize, ClientError> {
    response_frame_bytes(size, RESPONSE_BYTES_MAX).map_err(|_| ClientError::FrameSize {
        size: i64::from(size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_are_bounded() {
        assert!(check_frame_size(-1).is_err());
        assert!(check_frame_size(3).is_err());
        assert_eq!(check_frame_size(4).unwrap(), 4);
        assert_eq!(
            check_frame_size(RESPONSE_BYTES_MAX as i32).unwrap(),
            RESPONSE_BYTES_MAX
        );
        assert!(check_frame_size(RESPONSE_BYTES_MAX as i32 + 1).is_err());
    }
}
