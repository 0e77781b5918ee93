//! KIP-848 consumer-group records of `__consumer_offsets`, in Kafka's group-coordinator
//! schemas: keys are `type:i16` (3..8) plus non-flexible strings; values are version 0 of
//! flexible schemas (compact strings and arrays, tagged-field sections, unknown tags
//! skipped). Types: 3 group epoch, 4 partition metadata (read and ignored), 5 member
//! metadata, 6 target-assignment epoch, 7 a member's target assignment, 8 a member's current
//! assignment. A null value is a tombstone.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::codec::{Reader, RecordDecodeError};
use super::types::Assignment;

pub const GROUP_EPOCH_KEY: i16 = 3;
pub const PARTITION_METADATA_KEY: i16 = 4;
pub const MEMBER_METADATA_KEY: i16 = 5;
pub const TARGET_EPOCH_KEY: i16 = 6;
pub const TARGET_MEMBER_KEY: i16 = 7;
pub const CURRENT_ASSIGNMENT_KEY: i16 = 8;
const VALUE_VERSION: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// Kafka's MemberState: 0 stable, 1 unrevoked partitions, 2 unreleased partitions.
    pub state: i8,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerRecord {
    GroupEpoch {
        group: String,
        epoch: Option<i32>,
    },
    PartitionMetadata {
        group: String,
    },
    MemberMetadata {
        group: String,
        member: String,
        value: Option<MemberMetadataValue>,
    },
    TargetEpoch {
        group: String,
        epoch: Option<i32>,
    },
    TargetMember {
        group: String,
        member: String,
        value: Option<Assignment>,
    },
    CurrentAssignment {
        group: String,
        member: String,
        value: Option<CurrentAssignmentValue>,
    },
}

pub fn key(kind: i16, group: &str, member: Option<&str>) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(kind);
    put_string(&mut buf, group);
    if let Some(member) = member {
        put_string(&mut buf, member);
    }
    buf.freeze()
}

pub fn epoch_value(epoch: i32) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VALUE_VERSION);
    buf.put_i32(epoch);
    put_uvarint(&mut buf, 0);
    buf.freeze()
}

pub fn member_metadata_value(v: &MemberMetadataValue) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VALUE_VERSION);
    put_compact_nullable(&mut buf, v.instance_id.as_deref());
    put_compact_nullable(&mut buf, v.rack_id.as_deref());
    put_compact_nullable(&mut buf, Some(&v.client_id));
    put_compact_nullable(&mut buf, Some(&v.client_host));
    put_uvarint(&mut buf, v.subscribed_topic_names.len() as u64 + 1);
    for name in &v.subscribed_topic_names {
        put_compact_nullable(&mut buf, Some(name));
    }
    put_compact_nullable(&mut buf, v.subscribed_topic_regex.as_deref());
    buf.put_i32(v.rebalance_timeout_ms);
    put_compact_nullable(&mut buf, v.server_assignor.as_deref());
    put_uvarint(&mut buf, 0);
    buf.freeze()
}

pub fn target_member_value(a: &Assignment) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VALUE_VERSION);
    put_assignment(&mut buf, a);
    put_uvarint(&mut buf, 0);
    buf.freeze()
}

pub fn current_assignment_value(v: &CurrentAssignmentValue) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VALUE_VERSION);
    buf.put_i32(v.member_epoch);
    buf.put_i32(v.previous_member_epoch);
    buf.put_i8(v.state);
    put_assignment(&mut buf, &v.assigned);
    put_assignment(&mut buf, &v.pending_revocation);
    put_uvarint(&mut buf, 0);
    buf.freeze()
}

/// Decodes a consumer-group record whose key type is `kind` (3..=8); `key_rest` follows the
/// key's type field.
pub fn decode(
    kind: i16,
    key_rest: &[u8],
    value: Option<&[u8]>,
) -> Result<ConsumerRecord, RecordDecodeError> {
    let mut k = Reader::new(key_rest);
    let group = k.string()?;
    let with_member = matches!(
        kind,
        MEMBER_METADATA_KEY | TARGET_MEMBER_KEY | CURRENT_ASSIGNMENT_KEY
    );
    let member = if with_member { Some(k.string()?) } else { None };
    k.finish()?;
    let member = || member.clone().unwrap_or_default();
    Ok(match kind {
        GROUP_EPOCH_KEY => ConsumerRecord::GroupEpoch {
            group,
            epoch: value.map(decode_epoch).transpose()?,
        },
        PARTITION_METADATA_KEY => ConsumerRecord::PartitionMetadata { group },
        MEMBER_METADATA_KEY => ConsumerRecord::MemberMetadata {
            group,
            member: member(),
            value: value.map(decode_member_metadata).transpose()?,
        },
        TARGET_EPOCH_KEY => ConsumerRecord::TargetEpoch {
            group,
            epoch: value.map(decode_epoch).transpose()?,
        },
        TARGET_MEMBER_KEY => ConsumerRecord::TargetMember {
            group,
            member: member(),
            value: value.map(decode_target_member).transpose()?,
        },
        CURRENT_ASSIGNMENT_KEY => ConsumerRecord::CurrentAssignment {
            group,
            member: member(),
            value: value.map(decode_current_assignment).transpose()?,
        },
        other => return Err(RecordDecodeError::UnknownKeyVersion(other)),
    })
}

fn value_reader(bytes: &[u8]) -> Result<Reader<'_>, RecordDecodeError> {
    let mut r = Reader::new(bytes);
    match r.i16()? {
        VALUE_VERSION => Ok(r),
        other => Err(RecordDecodeError::UnknownValueVersion(other)),
    }
}

fn decode_epoch(bytes: &[u8]) -> Result<i32, RecordDecodeError> {
    let mut r = value_reader(bytes)?;
    let epoch = r.i32()?;
    r.skip_tags()?;
    r.finish()?;
    Ok(epoch)
}

fn decode_member_metadata(bytes: &[u8]) -> Result<MemberMetadataValue, RecordDecodeError> {
    let mut r = value_reader(bytes)?;
    let instance_id = r.compact_nullable()?;
    let rack_id = r.compact_nullable()?;
    let client_id = r.compact_nullable()?.unwrap_or_default();
    let client_host = r.compact_nullable()?.unwrap_or_default();
    let count = r.compact_len()?;
    let mut subscribed_topic_names = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        subscribed_topic_names.push(r.compact_nullable()?.unwrap_or_default());
    }
    let subscribed_topic_regex = r.compact_nullable()?;
    let rebalance_timeout_ms = r.i32()?;
    let server_assignor = r.compact_nullable()?;
    r.skip_tags()?;
    r.finish()?;
    Ok(MemberMetadataValue {
        instance_id,
        rack_id,
        client_id,
        client_host,
        subscribed_topic_names,
        subscribed_topic_regex,
        rebalance_timeout_ms,
        server_assignor,
    })
}

fn decode_target_member(bytes: &[u8]) -> Result<Assignment, RecordDecodeError> {
    let mut r = value_reader(bytes)?;
    let a = r.assignment()?;
    r.skip_tags()?;
    r.finish()?;
    Ok(a)
}

fn decode_current_assignment(bytes: &[u8]) -> Result<CurrentAssignmentValue, RecordDecodeError> {
    let mut r = value_reader(bytes)?;
    let member_epoch = r.i32()?;
    let previous_member_epoch = r.i32()?;
    let state = r.take(1)?[0] as i8;
    let assigned = r.assignment()?;
    let pending_revocation = r.assignment()?;
    r.skip_tags()?;
    r.finish()?;
    Ok(CurrentAssignmentValue {
        member_epoch,
        previous_member_epoch,
        state,
        assigned,
        pending_revocation,
    })
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).expect("group and member ids fit an i16 length");
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_compact_nullable(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(buf, 0),
        Some(s) => {
            put_uvarint(buf, s.len() as u64 + 1);
            buf.put_slice(s.as_bytes());
        }
    }
}

/// `[]TopicPartitions {TopicId uuid, Partitions []int32, tags}`.
fn put_assignment(buf: &mut BytesMut, a: &Assignment) {
    put_uvarint(buf, a.len() as u64 + 1);
    for (topic, partitions) in a {
        buf.put_slice(topic.as_bytes());
        put_uvarint(buf, partitions.len() as u64 + 1);
        for p in partitions {
            buf.put_i32(*p);
        }
        put_uvarint(buf, 0);
    }
}

impl Reader<'_> {
    pub(super) fn assignment(&mut self) -> Result<Assignment, RecordDecodeError> {
        let topics = self.compact_len()?;
        let mut a = Assignment::new();
        for _ in 0..topics {
            let id = Uuid::from_bytes(self.take(16)?.try_into().expect("16 bytes"));
            let count = self.compact_len()?;
            let parts = a.entry(id).or_default();
            for _ in 0..count {
                parts.insert(self.i32()?);
            }
            self.skip_tags()?;
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment() -> Assignment {
        Assignment::from([
            (Uuid::from_bytes([9; 16]), [0, 2, 5].into()),
            (Uuid::from_bytes([1; 16]), [1].into()),
        ])
    }

    fn split(key: &Bytes) -> (i16, &[u8]) {
        (i16::from_be_bytes([key[0], key[1]]), &key[2..])
    }

    #[test]
    fn round_trips() {
        let meta = MemberMetadataValue {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            subscribed_topic_names: vec!["a".into(), "b".into()],
            subscribed_topic_regex: None,
            rebalance_timeout_ms: 300_000,
            server_assignor: Some("uniform".into()),
        };
        let k = key(MEMBER_METADATA_KEY, "g", Some("m"));
        let (kind, rest) = split(&k);
        let v = member_metadata_value(&meta);
        assert_eq!(
            decode(kind, rest, Some(&v)).unwrap(),
            ConsumerRecord::MemberMetadata {
                group: "g".into(),
                member: "m".into(),
                value: Some(meta)
            }
        );
        let current = CurrentAssignmentValue {
            member_epoch: 7,
            previous_member_epoch: 6,
            state: 1,
            assigned: assignment(),
            pending_revocation: Assignment::new(),
        };
        let k = key(CURRENT_ASSIGNMENT_KEY, "g", Some("m"));
        let (kind, rest) = split(&k);
        let v = current_assignment_value(&current);
        assert_eq!(
            decode(kind, rest, Some(&v)).unwrap(),
            ConsumerRecord::CurrentAssignment {
                group: "g".into(),
                member: "m".into(),
                value: Some(current)
            }
        );
        let k = key(TARGET_MEMBER_KEY, "g", Some("m"));
        let (kind, rest) = split(&k);
        let v = target_member_value(&assignment());
        assert_eq!(
            decode(kind, rest, Some(&v)).unwrap(),
            ConsumerRecord::TargetMember {
                group: "g".into(),
                member: "m".into(),
                value: Some(assignment())
            }
        );
        let k = key(GROUP_EPOCH_KEY, "g", None);
        let (kind, rest) = split(&k);
        assert_eq!(
            decode(kind, rest, Some(&epoch_value(4))).unwrap(),
            ConsumerRecord::GroupEpoch {
                group: "g".into(),
                epoch: Some(4)
            }
        );
        assert_eq!(
            decode(kind, rest, None).unwrap(),
            ConsumerRecord::GroupEpoch {
                group: "g".into(),
                epoch: None
            }
        );
    }

    #[test]
    fn epoch_value_bytes_and_unknown_tags() {
        // version 0, epoch 5, no tagged fields.
        assert_eq!(&epoch_value(5)[..], &[0, 0, 0, 0, 0, 5, 0]);
        // A newer writer's tagged MetadataHash (tag 0, 8 bytes) is skipped.
        let mut v = vec![0, 0, 0, 0, 0, 5, 1, 0, 8];
        v.extend_from_slice(&42i64.to_be_bytes());
        assert_eq!(decode_epoch(&v).unwrap(), 5);
    }

    #[test]
    fn garbage_never_panics() {
        let good = current_assignment_value(&CurrentAssignmentValue {
            assigned: assignment(),
            ..Default::default()
        });
        for cut in 0..good.len() {
            assert!(decode_current_assignment(&good[..cut]).is_err());
        }
        assert!(
            decode_member_metadata(&[
                0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ])
            .is_err()
        );
    }
}
