//! Encoding and decoding whole Kafka messages with their headers, on top of kafka-protocol's
//! message codecs.
//!
//! Owns: request frames (`[size][request header][body]`, the header version chosen by
//! kafka-protocol from the API version), response frames for servers ([`encode_response`]),
//! and decoding a response frame into its typed body. Decoding from `Bytes` keeps record sets
//! as `Bytes` slices of the frame (kafka-protocol's `ByteBuf` for `Bytes`), never copies.
//! Does not own: version negotiation (each client's own table), sockets.
//! Invariants: an encoded frame's size prefix equals the bytes that follow it (asserted: a
//! disagreement between kafka-protocol's `compute_size` and `encode` is a bug, not input).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::frame::SIZE_PREFIX_BYTES;

#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} {what}: {message}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub version: i16,
    /// "request" or "response".
    pub what: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode {api_key:?} v{version} response: {message}")]
pub struct DecodeError {
    pub api_key: ApiKey,
    pub version: i16,
    pub message: String,
}

/// The API key of request type `R` (kafka-protocol's generated types all carry a known one).
pub fn api_key_of<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("kafka-protocol request types carry a known api key")
}

/// A request header for `api_key` at `version`.
pub fn request_header(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)))
}

/// Bytes of the whole request frame, size prefix included.
pub fn request_frame_bytes<R: Encodable>(
    header: &RequestHeader,
    body: &R,
) -> Result<usize, EncodeError> {
    let (api_key, version) = header_key(header)?;
    let err = encode_error(api_key, version, "request");
    let size = header
        .compute_size(api_key.request_header_version(version))
        .map_err(|e| err(e.to_string()))?
        + body.compute_size(version).map_err(|e| err(e.to_string()))?;
    i32::try_from(size).map_err(|_| err(format!("{size} bytes exceed an i32 size")))?;
    Ok(SIZE_PREFIX_BYTES + size)
}

/// Writes the request frame of `frame_bytes` bytes (from [`request_frame_bytes`]) at `buf`'s
/// offset, so any `ByteBufMut` can take it (loadgen's segmented Produce frames).
pub fn write_request_frame<B: ByteBufMut, R: Encodable>(
    buf: &mut B,
    header: &RequestHeader,
    body: &R,
    frame_bytes: usize,
) -> Result<(), EncodeError> {
    let (api_key, version) = header_key(header)?;
    let err = encode_error(api_key, version, "request");
    let start = buf.offset();
    buf.put_i32((frame_bytes - SIZE_PREFIX_BYTES) as i32);
    header
        .encode(buf, api_key.request_header_version(version))
        .map_err(|e| err(e.to_string()))?;
    body.encode(buf, version).map_err(|e| err(e.to_string()))?;
    assert_eq!(
        buf.offset() - start,
        frame_bytes,
        "compute_size disagrees with encode"
    );
    Ok(())
}

/// Encodes `[size][header][body]` into `buf` (cleared first; reuse it across calls).
/// Untyped: `body` is encoded as `api_key`'s request whatever its type (tests send bodies of
/// one API under another's key).
pub fn encode_request_into<R: Encodable>(
    buf: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    body: &R,
) -> Result<(), EncodeError> {
    let header = request_header(api_key, version, correlation_id, client_id);
    let frame_bytes = request_frame_bytes(&header, body)?;
    buf.clear();
    buf.reserve(frame_bytes);
    write_request_frame(buf, &header, body, frame_bytes)
}

/// Encodes `request` as a fresh `[size][header][body]` frame.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    encode_request_into(
        &mut buf,
        api_key_of::<R>(),
        version,
        correlation_id,
        client_id,
        request,
    )?;
    Ok(buf.freeze())
}

/// Decodes a response frame (without its size prefix, header included) as `api_key`'s
/// response at `version`: its header and body.
pub fn decode_response_as<R: Decodable>(
    api_key: ApiKey,
    version: i16,
    frame: &mut Bytes,
) -> Result<(ResponseHeader, R), DecodeError> {
    let err = |message: String| DecodeError {
        api_key,
        version,
        message,
    };
    let header = ResponseHeader::decode(frame, api_key.response_header_version(version))
        .map_err(|e| err(format!("header: {e}")))?;
    let body = R::decode(frame, version).map_err(|e| err(e.to_string()))?;
    Ok((header, body))
}

/// Decodes a response frame for request type `R` at `version` (the caller has matched the
/// correlation id).
pub fn decode_response<R: Request>(
    frame: &mut Bytes,
    version: i16,
) -> Result<R::Response, DecodeError> {
    decode_response_as::<R::Response>(api_key_of::<R>(), version, frame).map(|(_, body)| body)
}

/// Encodes `[size][response header][body]` for `body` at `version`.
pub fn encode_response<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, EncodeError> {
    let err = encode_error(api_key, version, "response");
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .map_err(|e| err(e.to_string()))?
        + body.compute_size(version).map_err(|e| err(e.to_string()))?;
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + size);
    out.put_i32(size as i32);
    header
        .encode(&mut out, header_version)
        .map_err(|e| err(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| err(e.to_string()))?;
    debug_assert_eq!(out.len(), SIZE_PREFIX_BYTES + size);
    Ok(out.freeze())
}

fn encode_error(
    api_key: ApiKey,
    version: i16,
    what: &'static str,
) -> impl Fn(String) -> EncodeError {
    move |message| EncodeError {
        api_key,
        version,
        what,
        message,
    }
}

fn header_key(header: &RequestHeader) -> Result<(ApiKey, i16), EncodeError> {
    let version = header.request_api_version;
    ApiKey::try_from(header.request_api_key)
        .map(|key| (key, version))
        .map_err(|_| EncodeError {
            api_key: ApiKey::ApiVersions,
            version,
            what: "request",
            message: format!("unknown api key {}", header.request_api_key),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::request_correlation_id;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, MetadataRequest, TopicName};
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use proptest::prelude::*;

    #[test]
    fn request_frames_round_trip_through_the_request_decoder() {
        let request = MetadataRequest::default();
        let frame = encode_request(&request, 12, 77, "test").unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size + 4, frame.len());
        assert_eq!(request_correlation_id(&frame), Some(77));
        let mut body = frame.slice(4..);
        let header = decode_request_header_from_buffer(&mut body).unwrap();
        assert_eq!(header.correlation_id, 77);
        assert_eq!(header.request_api_key, ApiKey::Metadata as i16);
        assert_eq!(header.client_id.as_deref(), Some("test"));
        assert_eq!(MetadataRequest::decode(&mut body, 12).unwrap(), request);
    }

    #[test]
    fn decoded_records_are_slices_of_the_frame() {
        let records = Bytes::from(vec![5u8; 300]);
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    PartitionData::default().with_records(Some(records.clone())),
                ]),
        ]);
        for version in [4, 11, 12] {
            let encoded = encode_response(ApiKey::Fetch, version, 9, &response).unwrap();
            let mut frame = encoded.slice(SIZE_PREFIX_BYTES..);
            let range = frame.as_ptr_range();
            let (header, decoded) =
                decode_response_as::<FetchResponse>(ApiKey::Fetch, version, &mut frame).unwrap();
            assert_eq!(header.correlation_id, 9);
            let got = decoded.responses[0].partitions[0].records.clone().unwrap();
            assert_eq!(got, records);
            assert!(
                range.contains(&got.as_ptr()),
                "v{version}: records were copied"
            );
        }
    }

    #[test]
    fn typed_decode_skips_the_header() {
        let response = FetchResponse::default().with_session_id(3);
        let encoded = encode_response(ApiKey::Fetch, 12, 1, &response).unwrap();
        let mut frame = encoded.slice(SIZE_PREFIX_BYTES..);
        let decoded = decode_response::<FetchRequest>(&mut frame, 12).unwrap();
        assert_eq!(decoded, response);
        let mut short = Bytes::from_static(&[0, 0]);
        let error = decode_response::<FetchRequest>(&mut short, 12).unwrap_err();
        assert!(error.to_string().contains("Fetch v12"), "{error}");
    }

    proptest! {
        /// Every Fetch request version encodes into a frame whose header the broker's request
        /// decoder reads back, and whose body decodes to the same request.
        #[test]
        fn fetch_requests_round_trip(version in 4i16..=12, correlation_id in any::<i32>(), max_wait_ms in any::<i32>()) {
            let request = FetchRequest::default().with_max_wait_ms(max_wait_ms).with_min_bytes(1);
            let mut buf = BytesMut::new();
            encode_request_into(&mut buf, ApiKey::Fetch, version, correlation_id, "p", &request).unwrap();
            let mut body = buf.freeze().slice(4..);
            let header = decode_request_header_from_buffer(&mut body).unwrap();
            prop_assert_eq!(header.correlation_id, correlation_id);
            prop_assert_eq!(header.request_api_version, version);
            prop_assert_eq!(FetchRequest::decode(&mut body, version).unwrap(), request);
        }

    }
}
