//! Kafka framing: `[i32 size][request header][body]` in, `[i32 size][response header][body]`
//! out. Splitting frames is pure (no I/O) so it can be tested and fuzzed alone.
//!
//! An incomplete frame is not an error; a negative or oversized size, or a frame too short
//! for the fixed header prefix (api key, version, correlation id), is (`FrameError`, a small
//! `Copy` enum) and closes the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

/// Size prefix of every frame.
pub const SIZE_PREFIX_BYTES: usize = 4;
/// api_key (2) + api_version (2) + correlation_id (4): present in every request header.
pub const HEADER_PREFIX_BYTES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is negative")]
    NegativeSize { size: i32 },
    #[error("frame of {size} bytes exceeds the limit of {max} (kafka.frame_bytes_max)")]
    TooLarge { size: u32, max: u32 },
    #[error("frame of {size} bytes is shorter than a request header")]
    TooShort { size: u32 },
}

/// The fixed prefix of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Takes one complete frame (without its size prefix) off the front of `buf`.
/// `Ok(None)`: more bytes needed; `need` is set to the total bytes the frame requires.
pub fn split_frame(
    buf: &mut BytesMut,
    max: u32,
    need: &mut usize,
) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < SIZE_PREFIX_BYTES {
        *need = SIZE_PREFIX_BYTES;
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(FrameError::NegativeSize { size });
    }
    let size = size as u32;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if (size as usize) < HEADER_PREFIX_BYTES {
        return Err(FrameError::TooShort { size });
    }
    let total = SIZE_PREFIX_BYTES + size as usize;
    if buf.len() < total {
        *need = total;
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(SIZE_PREFIX_BYTES);
    Ok(Some(frame.freeze()))
}

/// Reads the fixed header prefix (the frame is at least `HEADER_PREFIX_BYTES` long).
pub fn header_prefix(frame: &[u8]) -> HeaderPrefix {
    assert!(frame.len() >= HEADER_PREFIX_BYTES);
    HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} response: {message}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub version: i16,
    pub message: String,
}

/// Encodes `[size][response header][body]` for `body` at `version`.
pub fn encode_response<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, EncodeError> {
    let err = |e: anyhow::Error| EncodeError {
        api_key,
        version,
        message: e.to_string(),
    };
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(err)?
        + body.compute_size(version).map_err(err)?;
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + size);
    out.put_i32(size as i32);
    header.encode(&mut out, header_version).map_err(err)?;
    body.encode(&mut out, version).map_err(err)?;
    debug_assert_eq!(out.len(), SIZE_PREFIX_BYTES + size);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_frames_only() {
        let mut buf = BytesMut::new();
        let mut need = 0;
        assert_eq!(split_frame(&mut buf, 100, &mut need), Ok(None));
        assert_eq!(need, 4);
        buf.put_i32(8);
        buf.put_slice(&[0, 18, 0, 3, 0, 0]);
        assert_eq!(split_frame(&mut buf, 100, &mut need), Ok(None));
        assert_eq!(need, 12);
        buf.put_slice(&[0, 7, 1]);
        let frame = split_frame(&mut buf, 100, &mut need).unwrap().unwrap();
        assert_eq!(
            header_prefix(&frame),
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            }
        );
        assert_eq!(buf.as_ref(), &[1]);
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut need = 0;
        let mut b = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut b, 100, &mut need),
            Err(FrameError::NegativeSize { .. })
        ));
        let mut b = BytesMut::from(&101i32.to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut b, 100, &mut need),
            Err(FrameError::TooLarge { .. })
        ));
        let mut b = BytesMut::from(&3i32.to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut b, 100, &mut need),
            Err(FrameError::TooShort { .. })
        ));
    }

    mod decode_never_panics {
        use bytes::Bytes;
        use kafka_protocol::messages::*;
        use proptest::prelude::*;

        use crate::handlers::{HANDLERS, decode};
        use crate::net::frame::{header_prefix, split_frame};

        /// Decodes `body` as the request type of `key`; the error text when it fails.
        fn decode_as(key: ApiKey, version: i16, body: Bytes) -> Result<(), String> {
            macro_rules! try_types {
                ($($k:ident => $t:ty),* $(,)?) => {
                    match key {
                        $(ApiKey::$k => decode::<$t>(body, version).map(|_| ()),)*
                        _ => Ok(()),
                    }
                };
            }
            try_types! {
                Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
                Metadata => MetadataRequest, ApiVersions => ApiVersionsRequest,
                CreateTopics => CreateTopicsRequest, DeleteTopics => DeleteTopicsRequest,
                DeleteRecords => DeleteRecordsRequest, InitProducerId => InitProducerIdRequest,
                OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
                DescribeConfigs => DescribeConfigsRequest, AlterConfigs => AlterConfigsRequest,
                DescribeLogDirs => DescribeLogDirsRequest, CreatePartitions => CreatePartitionsRequest,
                IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
                DescribeCluster => DescribeClusterRequest,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Random bytes after a valid (key, version): the decoder returns an error or a
            /// value, never panics (a panic would be caught, but is a bug to report upstream).
            #[test]
            fn request_bodies(which in 0usize..64, version_pick in 0i16..64, body in proptest::collection::vec(any::<u8>(), 0..300)) {
                let (key, v) = HANDLERS[which % HANDLERS.len()];
                let version = v.min + version_pick % (v.max - v.min + 1);
                let r = decode_as(key, version, Bytes::from(body));
                prop_assert!(r.as_ref().err().is_none_or(|e| e != "decoder panicked"), "{key:?} v{version}: {r:?}");
            }

            /// Framing random bytes never panics and never yields a frame shorter than a header.
            #[test]
            fn framing(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 8u32..1024) {
                let mut buf = bytes::BytesMut::from(&bytes[..]);
                let mut need = 0;
                while let Ok(Some(frame)) = split_frame(&mut buf, max, &mut need) {
                    prop_assert!(frame.len() >= 8 && frame.len() <= max as usize);
                    let _ = header_prefix(&frame);
                }
            }
        }
    }
}
