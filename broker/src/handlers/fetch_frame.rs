//! Hand-framed FetchResponse for zero-copy: the response is written as
//! `[header bytes][file range]...[suffix bytes]` so record batches go from the page cache to
//! the socket without passing through user space.
//!
//! Byte identity with kafka-protocol's encoding is the invariant (tested for every version we
//! serve): the skeleton (header, arrays, topic names/ids) is encoded here; each partition's
//! fixed fields and tagged fields come from kafka-protocol itself, split around the records
//! field. The split point is found by encoding the partition twice (records = null and
//! records = empty): the first differing byte is the records length field. For flexible
//! versions (v12+) that field is an unsigned varint (len + 1) and the tagged-field count
//! follows the records blob; before v12 it is an i32 length.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::net::sendfile::{FileRange, OutChunk};

/// First flexible (compact, tagged) Fetch version.
const FLEXIBLE_VERSION: i16 = 12;
/// First version naming topics by id.
const TOPIC_ID_VERSION: i16 = 13;

/// A partition's records: in memory or as file ranges.
#[derive(Debug)]
pub enum Records {
    Mem(Bytes),
    Files(Vec<FileRange>),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Mem(b) => b.len(),
            Records::Files(f) => f.iter().map(|r| r.len as usize).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot frame Fetch v{version}: {message}")]
pub struct FrameError {
    version: i16,
    message: String,
}

/// Frames `resp` (whose partitions' `records` are ignored) with `records`, one per partition
/// in response order, as a size-prefixed response frame.
pub fn frame_fetch_response(
    version: i16,
    correlation_id: i32,
    resp: &FetchResponse,
    records: Vec<Records>,
) -> Result<Vec<OutChunk>, FrameError> {
    let err = |m: String| FrameError {
        version,
        message: m,
    };
    let flexible = version >= FLEXIBLE_VERSION;
    let mut out = Chunks::default();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Fetch.response_header_version(version))
        .map_err(|e| err(e.to_string()))?;
    buf.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(resp.error_code);
        buf.put_i32(resp.session_id);
    }
    put_array_len(&mut buf, resp.responses.len(), flexible);
    out.bytes(buf.split().freeze());
    let mut records = records.into_iter();
    for topic in &resp.responses {
        if version >= TOPIC_ID_VERSION {
            buf.put_slice(topic.topic_id.as_bytes());
        } else {
            let name = topic.topic.0.as_bytes();
            if flexible {
                put_uvarint(&mut buf, name.len() as u64 + 1);
            } else {
                buf.put_i16(name.len() as i16);
            }
            buf.put_slice(name);
        }
        put_array_len(&mut buf, topic.partitions.len(), flexible);
        for p in &topic.partitions {
            let r = records
                .next()
                .ok_or_else(|| err("fewer record sets than partitions".into()))?;
            let (prefix, suffix) = split_partition(p, version).map_err(err)?;
            buf.put_slice(&prefix);
            let len = r.len();
            if flexible {
                put_uvarint(&mut buf, len as u64 + 1);
            } else {
                buf.put_i32(len as i32);
            }
            out.bytes(buf.split().freeze());
            match r {
                Records::Mem(b) => out.bytes(b),
                Records::Files(files) => {
                    for f in files {
                        out.file(f);
                    }
                }
            }
            buf.put_slice(&suffix);
        }
        if flexible {
            put_uvarint(&mut buf, topic.unknown_tagged_fields.len() as u64);
            if !topic.unknown_tagged_fields.is_empty() {
                return Err(err("unknown tagged fields in a topic".into()));
            }
        }
    }
    if flexible {
        if !resp.node_endpoints.is_empty() || !resp.unknown_tagged_fields.is_empty() {
            return Err(err("top-level tagged fields are not framed by hand".into()));
        }
        buf.put_u8(0);
    }
    out.bytes(buf.split().freeze());
    Ok(out.finish())
}

/// The partition's encoding before and after its records length field.
fn split_partition(p: &PartitionData, version: i16) -> Result<(Bytes, Bytes), String> {
    let mut with_null = p.clone();
    with_null.records = None;
    let mut with_empty = p.clone();
    with_empty.records = Some(Bytes::new());
    let mut a = BytesMut::new();
    with_null
        .encode(&mut a, version)
        .map_err(|e| e.to_string())?;
    let mut b = BytesMut::new();
    with_empty
        .encode(&mut b, version)
        .map_err(|e| e.to_string())?;
    let at = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .ok_or("records field not found")?;
    let field = if version >= FLEXIBLE_VERSION { 1 } else { 4 };
    let b = b.freeze();
    Ok((b.slice(..at), b.slice(at + field..)))
}

fn put_array_len(buf: &mut BytesMut, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, n as u64 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Collects chunks, merging adjacent memory pieces, and prefixes the total size.
#[derive(Default)]
struct Chunks {
    chunks: Vec<OutChunk>,
    pending: BytesMut,
    total: usize,
}

impl Chunks {
    fn bytes(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.total += b.len();
        if b.len() >= 4096 {
            self.flush();
            self.chunks.push(OutChunk::Bytes(b));
        } else {
            self.pending.put_slice(&b);
        }
    }

    fn file(&mut self, f: FileRange) {
        if f.len == 0 {
            return;
        }
        self.flush();
        self.total += f.len as usize;
        self.chunks.push(OutChunk::File(f));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.chunks
                .push(OutChunk::Bytes(self.pending.split().freeze()));
        }
    }

    fn finish(mut self) -> Vec<OutChunk> {
        self.flush();
        let mut size = BytesMut::with_capacity(4);
        size.put_i32(self.total as i32);
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        out.push(OutChunk::Bytes(size.freeze()));
        out.extend(self.chunks);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::frame::encode_response;
    use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn response(records: &[Bytes], version: i16) -> FetchResponse {
        let mut i = 0;
        let topics = ["alpha", "b"]
            .iter()
            .enumerate()
            .map(|(t, name)| {
                let partitions = (0..2)
                    .map(|p| {
                        let r = records[i].clone();
                        i += 1;
                        PartitionData::default()
                            .with_partition_index(p)
                            .with_error_code(if p == 1 { 1 } else { 0 })
                            .with_high_watermark(100 + p as i64)
                            .with_last_stable_offset(90)
                            .with_log_start_offset(if version >= 5 { 3 } else { -1 })
                            .with_aborted_transactions(if t == 0 { Some(vec![]) } else { None })
                            .with_preferred_read_replica(BrokerId(-1))
                            .with_records(Some(r))
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                    .with_topic_id(uuid::Uuid::from_u128(
                        0x1234_5678_9abc_def0_1234_5678_9abc_def0 + t as u128,
                    ))
                    .with_partitions(partitions)
            })
            .collect();
        FetchResponse::default()
            .with_throttle_time_ms(7)
            .with_session_id(if version >= 7 { 42 } else { 0 })
            .with_responses(topics)
    }

    #[test]
    fn hand_framed_fetch_is_byte_identical_for_every_version() {
        let records = vec![
            Bytes::from(vec![7u8; 200]),
            Bytes::new(),
            Bytes::from(vec![9u8; 5000]),
            Bytes::from_static(b"x"),
        ];
        for version in super::super::fetch::VERSIONS.min..=super::super::fetch::VERSIONS.max {
            let resp = response(&records, version);
            let expected = encode_response(ApiKey::Fetch, version, 99, &resp).unwrap();
            let chunks = frame_fetch_response(
                version,
                99,
                &resp,
                records.iter().cloned().map(Records::Mem).collect(),
            )
            .unwrap();
            let mut got = Vec::new();
            for c in chunks {
                match c {
                    OutChunk::Bytes(b) => got.extend_from_slice(&b),
                    OutChunk::File(_) => unreachable!(),
                }
            }
            assert_eq!(got, expected.to_vec(), "Fetch v{version}");
        }
    }
}
