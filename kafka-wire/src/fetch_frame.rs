//! Hand-framed FetchResponse for zero-copy: the response is written as
//! `[header bytes][file range]...[suffix bytes]` so record batches go from the page cache to
//! the socket without passing through user space.
//!
//! Owns: the frame's layout. Does not own: what a file range is or how it reaches the socket
//! (the broker's `net/sendfile.rs`: a descriptor, an offset and a length, spliced); here a file
//! range is any `F: FileSpan`, so this crate stays pure bytes.
//!
//! Byte identity with kafka-protocol's encoding is the invariant (tested for every version
//! kafka-protocol knows): the skeleton (header, arrays, topic names/ids) is encoded here; each
//! partition's fixed fields and tagged fields come from kafka-protocol itself, split around the
//! records field. The split point is found by encoding the partition twice (records = null and
//! records = empty): the first differing byte is the records length field. For flexible
//! versions (v12+) that field is an unsigned varint (len + 1) and the tagged-field count
//! follows the records blob; before v12 it is an i32 length.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::varint::put_uvarint;

/// First flexible (compact, tagged) Fetch version.
const FLEXIBLE_VERSION: i16 = 12;
/// First version naming topics by id.
const TOPIC_ID_VERSION: i16 = 13;
/// Memory pieces at least this long become chunks of their own; shorter ones are merged.
const CHUNK_BYTES_MIN: usize = 4096;

/// A byte range of a file that a connection writes to its socket by itself.
pub trait FileSpan {
    /// Bytes in the range.
    fn span_bytes(&self) -> u32;
}

/// A partition's records: in memory or as file ranges.
#[derive(Debug)]
pub enum Records<F> {
    Mem(Bytes),
    Files(Vec<F>),
}

impl<F: FileSpan> Records<F> {
    pub fn len(&self) -> usize {
        match self {
            Records::Mem(b) => b.len(),
            Records::Files(f) => f.iter().map(|r| r.span_bytes() as usize).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A piece of an outgoing response: bytes, or a file range.
#[derive(Debug)]
pub enum Chunk<F> {
    Bytes(Bytes),
    File(F),
}

impl<F: FileSpan> Chunk<F> {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(f) => f.span_bytes() as usize,
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
pub fn frame_fetch_response<F: FileSpan>(
    version: i16,
    correlation_id: i32,
    resp: &FetchResponse,
    records: Vec<Records<F>>,
) -> Result<Vec<Chunk<F>>, FrameError> {
    let err = |m: String| FrameError {
        version,
        message: m,
    };
    let flexible = version >= FLEXIBLE_VERSION;
    let mut out = Chunks::new();
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

/// Collects chunks, merging adjacent memory pieces, and prefixes the total size.
struct Chunks<F> {
    chunks: Vec<Chunk<F>>,
    pending: BytesMut,
    total: usize,
}

impl<F: FileSpan> Chunks<F> {
    fn new() -> Chunks<F> {
        Chunks {
            chunks: Vec::new(),
            pending: BytesMut::new(),
            total: 0,
        }
    }

    fn bytes(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.total += b.len();
        if b.len() >= CHUNK_BYTES_MIN {
            self.flush();
            self.chunks.push(Chunk::Bytes(b));
        } else {
            self.pending.put_slice(&b);
        }
    }

    fn file(&mut self, f: F) {
        if f.span_bytes() == 0 {
            return;
        }
        self.flush();
        self.total += f.span_bytes() as usize;
        self.chunks.push(Chunk::File(f));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.chunks
                .push(Chunk::Bytes(self.pending.split().freeze()));
        }
    }

    fn finish(mut self) -> Vec<Chunk<F>> {
        self.flush();
        let mut size = BytesMut::with_capacity(4);
        size.put_i32(self.total as i32);
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        out.push(Chunk::Bytes(size.freeze()));
        out.extend(self.chunks);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_response;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::Message;
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
                            // read_committed answers: an empty list, aborted transactions
                            // (issue 15), or null for read_uncommitted.
                            .with_aborted_transactions(match (t, p) {
                                (0, 0) => Some(vec![]),
                                (0, _) => Some(vec![
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(4_000))
                                        .with_first_offset(17),
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(i64::MAX))
                                        .with_first_offset(0),
                                ]),
                                _ => None,
                            })
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

    /// A stand-in file range: bytes the test writes where the file's would go.
    #[derive(Debug)]
    struct FakeFile(Bytes);

    impl FileSpan for FakeFile {
        fn span_bytes(&self) -> u32 {
            self.0.len() as u32
        }
    }

    fn flatten(chunks: Vec<Chunk<FakeFile>>) -> Vec<u8> {
        let mut got = Vec::new();
        for c in chunks {
            match c {
                Chunk::Bytes(b) => got.extend_from_slice(&b),
                Chunk::File(f) => got.extend_from_slice(&f.0),
            }
        }
        got
    }

    fn records() -> Vec<Bytes> {
        vec![
            Bytes::from(vec![7u8; 200]),
            Bytes::new(),
            Bytes::from(vec![9u8; 5000]),
            Bytes::from_static(b"x"),
        ]
    }

    #[test]
    fn hand_framed_fetch_is_byte_identical_for_every_version() {
        let records = records();
        let versions = <FetchResponse as Message>::VERSIONS;
        for version in versions.min..=versions.max {
            let resp = response(&records, version);
            let expected = encode_response(ApiKey::Fetch, version, 99, &resp).unwrap();
            let chunks = frame_fetch_response::<FakeFile>(
                version,
                99,
                &resp,
                records.iter().cloned().map(Records::Mem).collect(),
            )
            .unwrap();
            assert!(chunks.iter().all(|c| matches!(c, Chunk::Bytes(_))));
            assert_eq!(flatten(chunks), expected.to_vec(), "Fetch v{version}");
        }
    }

    #[test]
    fn file_ranges_sit_where_their_bytes_would() {
        let records = records();
        for version in [4, 11, 12, 13, 16] {
            let resp = response(&records, version);
            let expected = encode_response(ApiKey::Fetch, version, 5, &resp).unwrap();
            let as_files = records
                .iter()
                .map(|r| {
                    // Each record set split into two file ranges (one of them maybe empty).
                    let half = r.len() / 2;
                    Records::Files(vec![FakeFile(r.slice(..half)), FakeFile(r.slice(half..))])
                })
                .collect();
            let chunks = frame_fetch_response(version, 5, &resp, as_files).unwrap();
            let files = chunks
                .iter()
                .filter(|c| matches!(c, Chunk::File(_)))
                .count();
            assert_eq!(files, 5, "v{version}: non-empty ranges become file chunks");
            assert!(chunks.iter().all(|c| !c.is_empty()));
            assert_eq!(flatten(chunks), expected.to_vec(), "Fetch v{version}");
        }
    }

    #[test]
    fn fewer_record_sets_than_partitions_is_an_error() {
        let resp = response(&records(), 12);
        let error = frame_fetch_response::<FakeFile>(12, 1, &resp, vec![]).unwrap_err();
        assert!(error.to_string().contains("fewer record sets"), "{error}");
    }
}
