//! The `__consumer_offsets` record format, byte-compatible with Apache Kafka's.
//!
//! Owns: the key and value schemas Kafka writes to its internal offsets topic (offset commit
//! key v0/v1 and value v0..v3; group metadata key v2 and value v0..v3), the v2 record batches
//! that carry them, and the group-id -> partition mapping. Does not own: when records are
//! written (the coordinator decides) or where (the engine).
//!
//! Invariants: encoders write exactly the versions Kafka writes today (offset key v1, offset
//! value v3 — or v1 when an explicit expire timestamp exists, as Kafka does — group key v2,
//! group value v3); decoders accept every older version and never panic on bad bytes.
//!
//! Schemas (all integers big-endian; `string` = i16 length + UTF-8, `nullable` uses length -1,
//! `bytes` = i32 length + data, arrays = i32 count):
//! ```text
//! key   := version:i16 body
//!   v0,v1 OffsetCommitKey   group:string topic:string partition:i32
//!   v2    GroupMetadataKey  group:string
//! OffsetCommitValue := version:i16 offset:i64 [leader_epoch:i32 (v3)] metadata:string
//!                      commit_timestamp:i64 [expire_timestamp:i64 (v1)]
//! GroupMetadataValue := version:i16 protocol_type:string generation:i32 protocol:nullable
//!                       leader:nullable [current_state_timestamp:i64 (v2+)] members:[Member]
//! Member := member_id:string [group_instance_id:nullable (v3+)] client_id:string
//!           client_host:string [rebalance_timeout:i32 (v1+)] session_timeout:i32
//!           subscription:bytes assignment:bytes
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::Reader;
pub use super::codec::RecordDecodeError;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Name of Kafka's internal offsets topic; clients and tools look for it by this name.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's default `offsets.topic.num.partitions`.
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: i32 = 50;
/// Longest string the record format can hold (i16 length prefix); longer client strings are
/// refused before they reach a record.
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;
/// Upper bound on one record batch we build; a commit with more records is split into several
/// batches appended together (the engine appends a buffer of batches atomically).
pub const OFFSETS_BATCH_BYTES_MAX: usize = 512 * 1024;

pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Kafka writes value v1 when a commit carries an explicit expire timestamp (OffsetCommit v1..v4
/// with retention_time_ms set), so the old per-offset expiry survives a reload.
pub const OFFSET_COMMIT_VALUE_VERSION_EXPIRE: i16 = 1;
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// The partition of `__consumer_offsets` that holds `group_id`, as Kafka computes it:
/// `Utils.abs(groupId.hashCode()) % partitions` with Java's UTF-16 `String.hashCode`.
pub fn partition_for_group(group_id: &str, partitions: i32) -> i32 {
    assert!(
        partitions > 0,
        "offsets topic partition count must be positive"
    );
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// -1 when unknown (values before v3 carry none).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only value v1 carries one (old per-offset retention).
    pub expire_timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (values before v2).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadataValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A decoded record of the offsets topic; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetCommitValue>,
    },
    Group {
        group: String,
        value: Option<GroupMetadataValue>,
    },
    /// A KIP-848 consumer-group record (key types 3..=8).
    Consumer(super::consumer_records::ConsumerRecord),
}

pub fn encode_offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
    buf.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

pub fn encode_group_key(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 2 + group.len());
    buf.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut buf, group);
    buf.freeze()
}

pub fn encode_offset_value(value: &OffsetCommitValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 8 + 4 + 2 + value.metadata.len() + 16);
    match value.expire_timestamp_ms {
        Some(expire) => {
            buf.put_i16(OFFSET_COMMIT_VALUE_VERSION_EXPIRE);
            buf.put_i64(value.offset);
            put_string(&mut buf, &value.metadata);
            buf.put_i64(value.commit_timestamp_ms);
            buf.put_i64(expire);
        }
        None => {
            buf.put_i16(OFFSET_COMMIT_VALUE_VERSION);
            buf.put_i64(value.offset);
            buf.put_i32(value.leader_epoch);
            put_string(&mut buf, &value.metadata);
            buf.put_i64(value.commit_timestamp_ms);
        }
    }
    buf.freeze()
}

pub fn encode_group_value(value: &GroupMetadataValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i16(GROUP_METADATA_VALUE_VERSION);
    put_string(&mut buf, &value.protocol_type);
    buf.put_i32(value.generation);
    put_nullable_string(&mut buf, value.protocol.as_deref());
    put_nullable_string(&mut buf, value.leader.as_deref());
    buf.put_i64(value.current_state_timestamp_ms);
    buf.put_i32(i32::try_from(value.members.len()).expect("members bounded by group limit"));
    for member in &value.members {
        put_string(&mut buf, &member.member_id);
        put_nullable_string(&mut buf, member.group_instance_id.as_deref());
        put_string(&mut buf, &member.client_id);
        put_string(&mut buf, &member.client_host);
        buf.put_i32(member.rebalance_timeout_ms);
        buf.put_i32(member.session_timeout_ms);
        put_bytes(&mut buf, &member.subscription);
        put_bytes(&mut buf, &member.assignment);
    }
    buf.freeze()
}

pub fn decode_key(bytes: &[u8]) -> Result<RecordKey, RecordDecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    let key = match version {
        0 | 1 => RecordKey::Offset {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        },
        2 => RecordKey::Group { group: r.string()? },
        other => return Err(RecordDecodeError::UnknownKeyVersion(other)),
    };
    r.finish()?;
    Ok(key)
}

pub fn decode_offset_value(bytes: &[u8]) -> Result<OffsetCommitValue, RecordDecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    let value = match version {
        0 | 2 => OffsetCommitValue {
            offset: r.i64()?,
            leader_epoch: -1,
            metadata: r.string()?,
            commit_timestamp_ms: r.i64()?,
            expire_timestamp_ms: None,
        },
        1 => OffsetCommitValue {
            offset: r.i64()?,
            leader_epoch: -1,
            metadata: r.string()?,
            commit_timestamp_ms: r.i64()?,
            expire_timestamp_ms: Some(r.i64()?),
        },
        3 => OffsetCommitValue {
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            metadata: r.string()?,
            commit_timestamp_ms: r.i64()?,
            expire_timestamp_ms: None,
        },
        other => return Err(RecordDecodeError::UnknownValueVersion(other)),
    };
    r.finish()?;
    Ok(value)
}

pub fn decode_group_value(bytes: &[u8]) -> Result<GroupMetadataValue, RecordDecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(RecordDecodeError::UnknownValueVersion(version));
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    if count < 0 {
        return Err(RecordDecodeError::InvalidLength(count));
    }
    // Each member takes at least 4 string lengths + 2 timeouts + 2 byte lengths; bound the
    // allocation by what the buffer can hold.
    let mut members = Vec::with_capacity((count as usize).min(r.remaining() / 20));
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let session_or_rebalance = r.i32()?;
        let (rebalance_timeout_ms, session_timeout_ms) = if version >= 1 {
            (session_or_rebalance, r.i32()?)
        } else {
            (session_or_rebalance, session_or_rebalance)
        };
        members.push(MemberMetadataValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    r.finish()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// Decodes one key/value pair of the offsets topic.
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Result<OffsetsRecord, RecordDecodeError> {
    if let Some(kind) = key.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]))
        && (3..=8).contains(&kind)
    {
        let record = super::consumer_records::decode(kind, &key[2..], value)?;
        return Ok(OffsetsRecord::Consumer(record));
    }
    match decode_key(key)? {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => Ok(OffsetsRecord::Offset {
            group,
            topic,
            partition,
            value: value.map(decode_offset_value).transpose()?,
        }),
        RecordKey::Group { group } => Ok(OffsetsRecord::Group {
            group,
            value: value.map(decode_group_value).transpose()?,
        }),
    }
}

/// Builds magic-2 record batches (no compression, no producer id) holding `records` in order,
/// each batch at most about [`OFFSETS_BATCH_BYTES_MAX`], concatenated in one buffer for a
/// single atomic engine append. Offsets are relative; the engine assigns the real ones.
pub fn encode_batches(records: &[(Bytes, Option<Bytes>)], timestamp_ms: i64) -> Bytes {
    encode_batches_as(records, timestamp_ms, None)
}

/// The producer a transactional offset commit (TxnOffsetCommit) is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Like [`encode_batches`], but transactional batches of `producer` (Kafka's
/// `TxnOffsetCommit` append): attributes bit 4 set, the producer's id and epoch, and base
/// sequence -1 (`NO_SEQUENCE`: a coordinator's write, whose sequence the partition does not
/// check). A commit that fits [`OFFSETS_BATCH_BYTES_MAX`] (every realistic one) is one batch.
pub fn encode_txn_batches(
    records: &[(Bytes, Option<Bytes>)],
    timestamp_ms: i64,
    producer: TxnProducer,
) -> Bytes {
    encode_batches_as(records, timestamp_ms, Some(producer))
}

fn encode_batches_as(
    records: &[(Bytes, Option<Bytes>)],
    timestamp_ms: i64,
    producer: Option<TxnProducer>,
) -> Bytes {
    assert!(
        !records.is_empty(),
        "an offsets append holds at least one record"
    );
    let (producer_id, producer_epoch) =
        producer.map_or((NO_PRODUCER_ID, -1), |p| (p.producer_id, p.producer_epoch));
    let mut out = BytesMut::new();
    let mut chunk: Vec<Record> = Vec::new();
    let mut chunk_bytes = 0usize;
    for (key, value) in records {
        let size = key.len() + value.as_ref().map_or(0, Bytes::len) + 32;
        if !chunk.is_empty() && chunk_bytes + size > OFFSETS_BATCH_BYTES_MAX {
            encode_one_batch(&mut out, &chunk);
            chunk.clear();
            chunk_bytes = 0;
        }
        chunk.push(Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: chunk.len() as i64,
            // kafka-protocol's encoder keeps records in one batch while offset - sequence
            // stays constant; the batch's base sequence is the first record's, so the batch
            // gets NO_SEQUENCE (-1) as its base with the records numbered on from it. Before,
            // every record of a commit of several partitions went into a batch of its own
            // (for a TxnOffsetCommit the partition side then refused the append).
            sequence: chunk.len() as i32 + NO_SEQUENCE,
            timestamp: timestamp_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        });
        chunk_bytes += size;
    }
    encode_one_batch(&mut out, &chunk);
    out.freeze()
}

/// Kafka's `RecordBatch.NO_PRODUCER_ID`.
pub const NO_PRODUCER_ID: i64 = -1;
/// Kafka's `RecordBatch.NO_SEQUENCE`.
pub const NO_SEQUENCE: i32 = -1;
/// Control record types (Kafka's `ControlRecordType`): the key is version i16 + type i16.
pub const CONTROL_TYPE_ABORT: i16 = 0;
pub const CONTROL_TYPE_COMMIT: i16 = 1;

/// One entry of the offsets log as the coordinator replays it, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A data record; `producer_id` is set when its batch is transactional (a
    /// TxnOffsetCommit), else [`NO_PRODUCER_ID`].
    Record {
        producer_id: i64,
        key: Bytes,
        value: Option<Bytes>,
    },
    /// A COMMIT (`commit`) or ABORT control record ending `producer_id`'s transaction.
    Marker { producer_id: i64, commit: bool },
}

/// Decodes every record of the (magic 2) batches in `batches` in log order: data records
/// with their transactional producer, control records as transaction markers (a control
/// record of another type, e.g. a KRaft one, is skipped, as Kafka's loader skips it).
pub fn decode_log(batches: Bytes) -> Result<Vec<LogEntry>, RecordDecodeError> {
    let mut buf = batches;
    let sets =
        RecordBatchDecoder::decode_all(&mut buf).map_err(|_| RecordDecodeError::InvalidBatch)?;
    let mut out = Vec::new();
    for set in sets {
        for record in set.records {
            if record.control {
                let key = record.key.ok_or(RecordDecodeError::MissingKey)?;
                let mut r = Reader::new(&key);
                let _version = r.i16()?;
                let commit = match r.i16()? {
                    CONTROL_TYPE_COMMIT => true,
                    CONTROL_TYPE_ABORT => false,
                    _ => continue,
                };
                out.push(LogEntry::Marker {
                    producer_id: record.producer_id,
                    commit,
                });
                continue;
            }
            let key = record.key.ok_or(RecordDecodeError::MissingKey)?;
            let producer_id = if record.transactional {
                record.producer_id
            } else {
                NO_PRODUCER_ID
            };
            out.push(LogEntry::Record {
                producer_id,
                key,
                value: record.value,
            });
        }
    }
    Ok(out)
}

/// Decodes every data record of the (magic 2) batches in `batches`, skipping control
/// records. Returns key/value pairs in log order.
pub fn decode_batches(batches: Bytes) -> Result<Vec<(Bytes, Option<Bytes>)>, RecordDecodeError> {
    Ok(decode_log(batches)?
        .into_iter()
        .filter_map(|entry| match entry {
            LogEntry::Record { key, value, .. } => Some((key, value)),
            LogEntry::Marker { .. } => None,
        })
        .collect())
}

/// A COMMIT or ABORT control batch of `producer` as a partition leader writes it for
/// WriteTxnMarkers (value: version 0 + coordinator epoch), for replay tests.
#[cfg(test)]
pub(crate) fn encode_marker_batch(producer: TxnProducer, commit: bool, timestamp_ms: i64) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(if commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(0);
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: producer.producer_id,
        producer_epoch: producer.producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: NO_SEQUENCE,
        timestamp: timestamp_ms,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut out = BytesMut::new();
    encode_one_batch(&mut out, std::slice::from_ref(&record));
    out.freeze()
}

fn encode_one_batch(out: &mut BytesMut, records: &[Record]) {
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    // Encoding uncompressed records into memory cannot fail.
    RecordBatchEncoder::encode(out, records.iter(), &options)
        .expect("uncompressed v2 batch encodes");
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).expect("strings are bounded by their request field (i16)");
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    let len = i32::try_from(b.len()).expect("bytes are bounded by the request frame");
    buf.put_i32(len);
    buf.put_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offset commit of several partitions is one batch, as Kafka writes it, with base
    /// sequence -1 (the partition side takes one batch per producer append).
    #[test]
    fn a_plain_commit_is_one_batch() {
        let records: Vec<(Bytes, Option<Bytes>)> = (0..3)
            .map(|i| (Bytes::from(vec![i]), Some(Bytes::from_static(b"v"))))
            .collect();
        let bytes = encode_batches(&records, 1);
        let h = engine::batch::BatchHeader::parse(&bytes).expect("a header");
        assert_eq!(h.total_bytes() as usize, bytes.len(), "one batch");
        assert_eq!((h.records_count(), h.base_sequence()), (3, NO_SEQUENCE));
        assert_eq!(h.producer_id(), NO_PRODUCER_ID);
        assert!(!h.is_transactional());
    }

    #[test]
    fn a_transactional_commit_is_one_batch() {
        let records: Vec<(Bytes, Option<Bytes>)> = (0..3)
            .map(|i| (Bytes::from(vec![i]), Some(Bytes::from_static(b"v"))))
            .collect();
        let producer = TxnProducer {
            producer_id: 9,
            producer_epoch: 2,
        };
        let bytes = encode_txn_batches(&records, 1, producer);
        let h = engine::batch::BatchHeader::parse(&bytes).expect("a header");
        assert_eq!(h.total_bytes() as usize, bytes.len(), "one batch");
        assert_eq!((h.records_count(), h.base_sequence()), (3, NO_SEQUENCE));
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!((h.producer_id(), h.producer_epoch()), (9, 2));
    }

    #[test]
    fn partition_matches_java_string_hash_code() {
        // "group".hashCode() == 98629247 in Java; 98629247 % 50 == 47.
        assert_eq!(partition_for_group("group", 50), 47);
        // "".hashCode() == 0.
        assert_eq!(partition_for_group("", 50), 0);
        // "my-group".hashCode() == -1906497762 (Java) -> abs % 50 == 12.
        assert_eq!(partition_for_group("my-group", 50), 12);
        // Non-ASCII goes through UTF-16 code units: "é".hashCode() == 233.
        assert_eq!(partition_for_group("é", 50), 233 % 50);
        for id in ["a", "consumer-group-1", "zzzzzzzzzzzzzzzzzzzzzz"] {
            let p = partition_for_group(id, 50);
            assert!((0..50).contains(&p));
        }
    }

    #[test]
    fn offset_key_bytes_are_kafkas() {
        let key = encode_offset_key("g", "t", 3);
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3
            }
        );
    }

    #[test]
    fn group_key_bytes_are_kafkas() {
        let key = encode_group_key("g");
        assert_eq!(&key[..], &[0, 2, 0, 1, b'g']);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::Group { group: "g".into() }
        );
    }

    #[test]
    fn offset_value_v3_round_trip_and_layout() {
        let value = OffsetCommitValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: None,
        };
        let bytes = encode_offset_value(&value);
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&42i64.to_be_bytes());
        expected.extend_from_slice(&7i32.to_be_bytes());
        expected.extend_from_slice(&[0, 1, b'm']);
        expected.extend_from_slice(&1000i64.to_be_bytes());
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(decode_offset_value(&bytes).unwrap(), value);
    }

    #[test]
    fn offset_value_with_expiry_is_v1() {
        let value = OffsetCommitValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 5,
            expire_timestamp_ms: Some(9),
        };
        let bytes = encode_offset_value(&value);
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(decode_offset_value(&bytes).unwrap(), value);
    }

    #[test]
    fn old_offset_values_decode() {
        let mut v0 = vec![0, 0];
        v0.extend_from_slice(&5i64.to_be_bytes());
        v0.extend_from_slice(&[0, 0]);
        v0.extend_from_slice(&77i64.to_be_bytes());
        let value = decode_offset_value(&v0).unwrap();
        assert_eq!(
            (value.offset, value.leader_epoch, value.commit_timestamp_ms),
            (5, -1, 77)
        );
    }

    fn sample_group() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 123,
            members: vec![
                MemberMetadataValue {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                },
                MemberMetadataValue {
                    member_id: "m2".into(),
                    group_instance_id: None,
                    client_id: "c2".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 1,
                    session_timeout_ms: 2,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn group_value_v3_round_trip() {
        let value = sample_group();
        let bytes = encode_group_value(&value);
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(decode_group_value(&bytes).unwrap(), value);
    }

    #[test]
    fn empty_group_value_round_trip() {
        let value = GroupMetadataValue {
            protocol_type: String::new(),
            generation: 1,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 9,
            members: vec![],
        };
        assert_eq!(
            decode_group_value(&encode_group_value(&value)).unwrap(),
            value
        );
    }

    #[test]
    fn group_value_v0_decodes_with_session_as_rebalance_timeout() {
        let mut b = BytesMut::new();
        b.put_i16(0);
        put_string(&mut b, "consumer");
        b.put_i32(1);
        put_nullable_string(&mut b, Some("range"));
        put_nullable_string(&mut b, Some("m"));
        b.put_i32(1);
        put_string(&mut b, "m");
        put_string(&mut b, "c");
        put_string(&mut b, "h");
        b.put_i32(10_000);
        put_bytes(&mut b, b"s");
        put_bytes(&mut b, b"a");
        let value = decode_group_value(&b).unwrap();
        assert_eq!(value.members[0].rebalance_timeout_ms, 10_000);
        assert_eq!(value.members[0].session_timeout_ms, 10_000);
        assert_eq!(value.current_state_timestamp_ms, -1);
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let full = encode_group_value(&sample_group());
        for cut in 0..full.len() {
            assert!(decode_group_value(&full[..cut]).is_err());
        }
        let key = encode_offset_key("group", "topic", 1);
        for cut in 0..key.len() {
            assert!(decode_key(&key[..cut]).is_err());
        }
        assert_eq!(
            decode_key(&[0, 9, 0, 0]),
            Err(RecordDecodeError::UnknownKeyVersion(9))
        );
        assert!(decode_group_value(&[0, 3, 0xff, 0xfe]).is_err());
        let mut huge = vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_group_value(&huge).is_err());
    }

    #[test]
    fn batches_round_trip_including_tombstones() {
        let records = vec![
            (
                encode_offset_key("g", "t", 0),
                Some(encode_offset_value(&OffsetCommitValue {
                    offset: 10,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: 1,
                    expire_timestamp_ms: None,
                })),
            ),
            (encode_group_key("g"), None),
        ];
        let batch = encode_batches(&records, 1);
        assert_eq!(batch[16], 2, "magic byte");
        let decoded = decode_batches(batch).unwrap();
        assert_eq!(decoded, records);
        let record = decode_record(&decoded[1].0, decoded[1].1.as_deref()).unwrap();
        assert_eq!(
            record,
            OffsetsRecord::Group {
                group: "g".into(),
                value: None
            }
        );
    }

    #[test]
    fn large_appends_split_into_several_batches() {
        let metadata = "x".repeat(4000);
        let records: Vec<_> = (0..300)
            .map(|p| {
                let value = OffsetCommitValue {
                    offset: p,
                    leader_epoch: -1,
                    metadata: metadata.clone(),
                    commit_timestamp_ms: 1,
                    expire_timestamp_ms: None,
                };
                (
                    encode_offset_key("g", "t", p as i32),
                    Some(encode_offset_value(&value)),
                )
            })
            .collect();
        let buf = encode_batches(&records, 1);
        let sets = RecordBatchDecoder::decode_all(&mut buf.clone()).unwrap();
        assert!(sets.len() >= 2);
        assert_eq!(decode_batches(buf).unwrap(), records);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Random and mutated inputs never panic the decoders (a poor man's proptest: seeded,
    /// deterministic, no extra dependency).
    #[test]
    fn decoders_never_panic() {
        let valid: Vec<Vec<u8>> = vec![
            encode_offset_key("group", "topic", 3).to_vec(),
            encode_group_key("group").to_vec(),
            encode_offset_value(&OffsetCommitValue {
                offset: 1,
                leader_epoch: 2,
                metadata: "m".into(),
                commit_timestamp_ms: 3,
                expire_timestamp_ms: None,
            })
            .to_vec(),
        ];
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..20_000 {
            let mut bytes = if next() % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                let mut v = valid[(next() % valid.len() as u64) as usize].clone();
                let flips = 1 + next() % 4;
                for _ in 0..flips {
                    if v.is_empty() {
                        break;
                    }
                    let i = (next() as usize) % v.len();
                    v[i] = next() as u8;
                }
                v
            };
            if next() % 4 == 0 {
                bytes.truncate((next() as usize) % (bytes.len() + 1));
            }
            let _ = decode_key(&bytes);
            let _ = decode_offset_value(&bytes);
            let _ = decode_group_value(&bytes);
            let _ = decode_record(&bytes, Some(&bytes));
            let _ = decode_batches(Bytes::from(bytes));
        }
    }
}
