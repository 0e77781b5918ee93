//! One TCP connection to one broker, with pipelined requests.
//!
//! This is loadgen's (and any tokio user's) one Kafka client connection; the broker's
//! follower fetcher has the compio one (broker/src/replica/client.rs). Both are built on
//! kafka-wire, which encodes and decodes the frames.
//!
//! Owns: the socket's reader and writer tasks (Produce frames in segments, see
//! [`super::frame`]), correlation ids, the queue of requests awaiting a response, and the API versions
//! negotiated with this broker.
//! Invariants: Kafka answers requests on a connection strictly in order, so responses are
//! matched to the front of the pending queue and a mismatched correlation id closes the
//! connection; at most `in_flight_max` requests are outstanding (a semaphore permit travels
//! with each request until its response or write completion arrives).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_wire::codec::{
    api_key_of, decode_response, encode_request, encode_request_into, request_frame_bytes,
    request_header, write_request_frame,
};
use kafka_wire::error::UNSUPPORTED_VERSION;
use kafka_wire::frame::{request_correlation_id, response_correlation_id, response_frame_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::frame::{Frame, SegmentWriter};
use super::versions::ApiVersionTable;

/// Largest response frame we accept (a Fetch answer can be large, but not unbounded).
pub const RESPONSE_FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Requests queued for the writer task beyond those in flight.
const WRITE_QUEUE_CAPACITY: usize = 64;
/// Client id sent in every request header.
pub const CLIENT_ID: &str = "sluice-loadgen";

type ResponseSender = oneshot::Sender<Result<Bytes>>;

struct Outgoing {
    frame: Frame,
    correlation_id: i32,
    /// None for requests that get no response (Produce with acks=0): the sender, if any,
    /// is completed once the frame is written.
    respond: Option<ResponseSender>,
    expects_response: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

struct Pending {
    correlation_id: i32,
    respond: ResponseSender,
    _permit: Option<OwnedSemaphorePermit>,
}

/// A pipelined connection. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    writer: mpsc::Sender<Outgoing>,
    correlation_next: Mutex<i32>,
    in_flight: Arc<Semaphore>,
    versions: Mutex<ApiVersionTable>,
}

impl Connection {
    /// Connects, starts the reader and writer tasks and negotiates API versions.
    pub async fn connect(addr: &str, in_flight_max: usize) -> Result<Connection> {
        assert!(in_flight_max > 0);
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (read_half, write_half) = stream.into_split();
        let pending: Arc<Mutex<VecDeque<Pending>>> = Arc::default();
        let (writer, writer_rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        tokio::spawn(write_loop(write_half, writer_rx, pending.clone()));
        tokio::spawn(read_loop(read_half, pending));
        let connection = Connection {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                writer,
                correlation_next: Mutex::new(1),
                in_flight: Arc::new(Semaphore::new(in_flight_max)),
                versions: Mutex::new(ApiVersionTable::default()),
            }),
        };
        connection.negotiate_versions().await?;
        Ok(connection)
    }

    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The version to use for `api_key`: the highest both sides support.
    pub fn version_for(&self, api_key: ApiKey) -> Result<i16> {
        let table = self.inner.versions.lock().expect("versions lock");
        table.version_for(api_key).ok_or_else(|| {
            anyhow!(
                "broker {} supports no version of {api_key:?} that loadgen speaks",
                self.inner.addr
            )
        })
    }

    /// The broker's finalized level of the feature `transaction.version` (0: not finalized).
    pub fn transaction_version_finalized(&self) -> i16 {
        let table = self.inner.versions.lock().expect("versions lock");
        table.transaction_version()
    }

    /// Sends a typed request and decodes its typed response, at the negotiated version.
    pub async fn call<R: Request>(&self, request: &R, api_key: ApiKey) -> Result<R::Response> {
        let version = self.version_for(api_key)?;
        self.call_at(request, version).await
    }

    /// Sends a typed request at an explicit version and decodes the response.
    pub async fn call_at<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        let permit = self.acquire().await?;
        let frame = encode_request(request, version, self.next_correlation_id(), CLIENT_ID)?;
        let receiver = self.send_frame(frame.into(), true, permit).await?;
        let mut body = receiver
            .await
            .map_err(|_| anyhow!("connection to {} closed", self.inner.addr))??;
        Ok(decode_response::<R>(&mut body, version)?)
    }

    /// Waits for an in-flight slot. Hold the permit while preparing a request so a burst of
    /// callers cannot queue more than `in_flight_max` requests.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit> {
        self.inner
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| anyhow!("connection to {} closed", self.inner.addr))
    }

    /// An in-flight slot if one is free now.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.in_flight.clone().try_acquire_owned().ok()
    }

    pub fn next_correlation_id(&self) -> i32 {
        let mut next = self
            .inner
            .correlation_next
            .lock()
            .expect("correlation lock");
        let id = *next;
        *next = next.wrapping_add(1).max(1);
        id
    }

    /// Queues an encoded frame (kafka-wire's `encode_request`, [`encode_frame_segmented`]). The
    /// receiver yields the response body (after the header) or, when `expects_response` is
    /// false, an empty body once the frame is on the socket. The frame's segments are released
    /// as soon as they are written.
    pub async fn send_frame(
        &self,
        frame: Frame,
        expects_response: bool,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Result<Bytes>>> {
        let correlation_id = frame_correlation_id(&frame);
        let (respond, receiver) = oneshot::channel();
        self.inner
            .writer
            .send(Outgoing {
                frame,
                correlation_id,
                respond: Some(respond),
                expects_response,
                _permit: Some(permit),
            })
            .await
            .map_err(|_| anyhow!("connection to {} closed", self.inner.addr))?;
        Ok(receiver)
    }

    async fn negotiate_versions(&self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // Try the newest version we speak; a broker that does not know it answers with
        // UNSUPPORTED_VERSION in a v0 body listing what it does support.
        let mut response = self.call_at(&request, 3).await;
        if let Ok(answer) = &response
            && answer.error_code == UNSUPPORTED_VERSION
        {
            response = self.call_at(&request, 0).await;
        }
        let response: ApiVersionsResponse =
            response.with_context(|| format!("ApiVersions with {}", self.inner.addr))?;
        if response.error_code != 0 {
            bail!(
                "ApiVersions with {} failed: error code {}",
                self.inner.addr,
                response.error_code
            );
        }
        let mut table = self.inner.versions.lock().expect("versions lock");
        *table = ApiVersionTable::from_response(&response);
        Ok(())
    }
}

/// Encodes `[size][header][body]` like kafka-wire's `encode_request_into`, except that
/// wherever the encoder writes one of `batches` whole (the record sets of a Produce request, in
/// the order they appear in it) the frame refers to that `Bytes` instead of copying it. `head`
/// holds the bytes between batches; reuse it across calls.
pub fn encode_frame_segmented<R: Request>(
    head: &mut BytesMut,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    batches: &[Bytes],
) -> Result<Frame> {
    let api_key = api_key_of::<R>();
    let header = request_header(api_key, version, correlation_id, client_id);
    let size = request_frame_bytes(&header, request)?;
    let batch_bytes: usize = batches.iter().map(Bytes::len).sum();
    head.clear();
    head.reserve(size.saturating_sub(batch_bytes));
    let mut writer = SegmentWriter::new(head, batches);
    write_request_frame(&mut writer, &header, request, size)?;
    if let Some(frame) = writer.finish() {
        return Ok(frame);
    }
    // The encoder went back across a batch (kafka-protocol's message encoders do not).
    encode_request_into(head, api_key, version, correlation_id, client_id, request)?;
    Ok(Frame::from(head.split().freeze()))
}

fn frame_correlation_id(frame: &Frame) -> i32 {
    // [size i32][api_key i16][api_version i16][correlation_id i32]
    let prefix: [u8; 12] = frame
        .prefix()
        .expect("a frame's first segment holds the request header");
    request_correlation_id(&prefix).expect("12 bytes hold the correlation id")
}

async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Outgoing>,
    pending: Arc<Mutex<VecDeque<Pending>>>,
) {
    while let Some(outgoing) = queue.recv().await {
        let Outgoing {
            mut frame,
            correlation_id,
            respond,
            expects_response,
            _permit,
        } = outgoing;
        let mut after_write = None;
        if expects_response {
            // Registered before the write so the reader can never see the answer first.
            let respond = respond.expect("a request expecting a response has a sender");
            pending.lock().expect("pending lock").push_back(Pending {
                correlation_id,
                respond,
                _permit,
            });
        } else {
            after_write = respond.map(|respond| (respond, _permit));
        }
        let written = socket.write_all_buf(&mut frame).await;
        // Releases the record batches (see `BatchBuffers::recycle`) before anyone hears back.
        drop(frame);
        if let Err(error) = written {
            let message = format!("write failed: {error}");
            if let Some((respond, _)) = after_write {
                let _ = respond.send(Err(anyhow!(message.clone())));
            }
            fail_all(&pending, &message);
            return;
        }
        if let Some((respond, _permit)) = after_write {
            let _ = respond.send(Ok(Bytes::new()));
        }
    }
}

async fn read_loop(socket: OwnedReadHalf, pending: Arc<Mutex<VecDeque<Pending>>>) {
    let mut socket = BufReader::with_capacity(256 * 1024, socket);
    let error = loop {
        let size = match socket.read_i32().await {
            Ok(size) => size,
            Err(error) => break format!("connection closed: {error}"),
        };
        let size = match response_frame_bytes(size, RESPONSE_FRAME_BYTES_MAX) {
            Ok(size) => size,
            Err(error) => break error.to_string(),
        };
        let mut body = BytesMut::zeroed(size);
        if let Err(error) = socket.read_exact(&mut body).await {
            break format!("connection closed mid-response: {error}");
        }
        let body = body.freeze();
        let correlation_id =
            response_correlation_id(&body).expect("response_frame_bytes keeps the header");
        let Some(front) = pending.lock().expect("pending lock").pop_front() else {
            break format!("unsolicited response with correlation id {correlation_id}");
        };
        if front.correlation_id != correlation_id {
            let message = format!(
                "response out of order: expected correlation id {}, got {correlation_id}",
                front.correlation_id
            );
            let _ = front.respond.send(Err(anyhow!(message.clone())));
            break message;
        }
        let _ = front.respond.send(Ok(body));
    };
    fail_all(&pending, &error);
}

fn fail_all(pending: &Mutex<VecDeque<Pending>>, message: &str) {
    let mut pending = pending.lock().expect("pending lock");
    for waiter in pending.drain(..) {
        let _ = waiter.respond.send(Err(anyhow!(message.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Decodable, decode_request_header_from_buffer};

    fn produce_request(batches: &[Bytes]) -> ProduceRequest {
        let partitions = batches
            .iter()
            .enumerate()
            .map(|(index, batch)| {
                PartitionProduceData::default()
                    .with_index(index as i32 * 3)
                    .with_records(Some(batch.clone()))
            })
            .collect();
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("topic")))
                    .with_partition_data(partitions),
            ])
    }

    #[test]
    fn segmented_produce_frames_match_plain_ones_without_copying_batches() {
        // Batches of several sizes, one of them the same bytes as another (matched by address,
        // not content) and one empty (copied, which is nothing).
        let big = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let batches = vec![
            big.clone(),
            Bytes::from_static(b"small batch"),
            big.slice(100..300),
            Bytes::new(),
            Bytes::from(vec![7u8; 70_000]),
        ];
        let request = produce_request(&batches);
        let mut plain = BytesMut::new();
        let mut head = BytesMut::new();
        // v3..=v8 non-flexible, v9..=v12 flexible (compact lengths, tagged fields).
        for version in 3..=12 {
            encode_request_into(&mut plain, ApiKey::Produce, version, 5, CLIENT_ID, &request)
                .unwrap();
            let frame =
                encode_frame_segmented(&mut head, &request, version, 5, CLIENT_ID, &batches)
                    .unwrap();
            assert_eq!(frame.to_bytes(), plain, "v{version}");
            assert_eq!(frame.remaining(), plain.len());
            assert_eq!(frame_correlation_id(&frame), 5);
            for batch in batches.iter().filter(|b| !b.is_empty()) {
                let shared = frame
                    .segments()
                    .iter()
                    .any(|s| s.as_ptr() == batch.as_ptr() && s.len() == batch.len());
                assert!(
                    shared,
                    "v{version}: a batch of {} bytes was copied",
                    batch.len()
                );
            }
            let mut body = frame.to_bytes().slice(4..);
            let header = decode_request_header_from_buffer(&mut body).unwrap();
            assert_eq!(header.request_api_version, version);
            assert_eq!(ProduceRequest::decode(&mut body, version).unwrap(), request);
        }
    }

    #[test]
    fn segmented_frames_copy_batches_the_request_does_not_hold() {
        let batch = Bytes::from(vec![1u8; 1000]);
        let request = produce_request(std::slice::from_ref(&batch));
        let other = Bytes::from(vec![1u8; 1000]);
        let mut plain = BytesMut::new();
        let mut head = BytesMut::new();
        encode_request_into(&mut plain, ApiKey::Produce, 9, 1, CLIENT_ID, &request).unwrap();
        let frame = encode_frame_segmented(&mut head, &request, 9, 1, CLIENT_ID, &[other]).unwrap();
        assert_eq!(frame.segments().len(), 1);
        assert_eq!(frame.to_bytes(), plain);
    }

    #[test]
    fn frame_round_trips_through_the_request_decoder() {
        let request = MetadataRequest::default();
        let frame = encode_request(&request, 12, 77, CLIENT_ID).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size + 4, frame.len());
        assert_eq!(frame_correlation_id(&Frame::from(frame.clone())), 77);
        let mut body = frame.slice(4..);
        let header = decode_request_header_from_buffer(&mut body).unwrap();
        assert_eq!(header.correlation_id, 77);
        assert_eq!(header.request_api_key, ApiKey::Metadata as i16);
        let decoded = MetadataRequest::decode(&mut body, 12).unwrap();
        assert_eq!(decoded, request);
    }
}
