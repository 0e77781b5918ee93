//! Transaction markers as control batches (Kafka's `EndTransactionMarker` /
//! `MemoryRecords.withEndTransactionMarker`): building the COMMIT/ABORT batch a partition
//! leader appends, and reading the marker back out of a stored control batch.
//!
//! Layout: a v2 batch (magic 2) with attributes transactional|control, the producer's id and
//! epoch, base_sequence -1, one record whose key is the control record key (version int16 0,
//! type int16: 0 ABORT, 1 COMMIT) and whose value is EndTxnMarker v0 (version int16 0,
//! coordinator_epoch int32). Other control types (LEADER_CHANGE, KRaft's) read as `None`.
//! Pure: no I/O; reading never trusts a length it has not bounds-checked.

use engine::batch::{ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, MAGIC_V2, batch_crc};
use engine::limits::{BATCH_CRC_START, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES};

/// Where the header's CRC32C field starts (it ends where the CRC's coverage starts).
const BATCH_CRC_OFFSET: usize = BATCH_CRC_START - 4;

/// Control record types (Kafka's ControlRecordType).
pub const CONTROL_TYPE_ABORT: i16 = 0;
pub const CONTROL_TYPE_COMMIT: i16 = 1;
/// Version of the control record key Kafka writes (CURRENT_CONTROL_RECORD_KEY_VERSION).
const CONTROL_KEY_VERSION: i16 = 0;
/// Version of the EndTxnMarker value Kafka writes (CURRENT_END_TXN_MARKER_VERSION).
const END_TXN_MARKER_VERSION: i16 = 0;
const CONTROL_KEY_BYTES: usize = 4;
const END_TXN_MARKER_VALUE_BYTES: usize = 6;
/// The one record: length varint (1), attributes, timestamp delta, offset delta (1 each),
/// key length (1), key, value length (1), value, header count (1).
const RECORD_BODY_BYTES: usize =
    1 + 1 + 1 + 1 + CONTROL_KEY_BYTES + 1 + END_TXN_MARKER_VALUE_BYTES + 1;
/// A whole marker batch.
pub const MARKER_BATCH_BYTES: usize = BATCH_HEADER_BYTES + 1 + RECORD_BODY_BYTES;

const _: () = assert!(RECORD_BODY_BYTES < 64, "one-byte zigzag varint");

/// An end-of-transaction marker read from, or to write as, a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The marker batch for `producer_id`/`producer_epoch` at base offset 0 (the replication
/// core assigns the real one), stamped `timestamp_ms`, with its CRC32C.
pub fn build_marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MARKER_BATCH_BYTES);
    // The 61-byte header, field by field (big-endian, as `BatchHeader`); CRC patched below.
    buf.extend_from_slice(&0i64.to_be_bytes()); // base_offset
    buf.extend_from_slice(&((MARKER_BATCH_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32).to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes()); // partition_leader_epoch
    buf.push(MAGIC_V2 as u8);
    buf.extend_from_slice(&0u32.to_be_bytes()); // crc
    buf.extend_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes()); // last_offset_delta
    buf.extend_from_slice(&timestamp_ms.to_be_bytes()); // base_timestamp
    buf.extend_from_slice(&timestamp_ms.to_be_bytes()); // max_timestamp
    buf.extend_from_slice(&producer_id.to_be_bytes());
    buf.extend_from_slice(&producer_epoch.to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // base_sequence
    buf.extend_from_slice(&1i32.to_be_bytes()); // records_count
    assert_eq!(buf.len(), BATCH_HEADER_BYTES);
    buf.push(zigzag(RECORD_BODY_BYTES as i8));
    buf.push(0); // attributes
    buf.push(0); // timestamp delta
    buf.push(0); // offset delta
    buf.push(zigzag(CONTROL_KEY_BYTES as i8));
    buf.extend_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
    let control_type = if marker.commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    buf.extend_from_slice(&control_type.to_be_bytes());
    buf.push(zigzag(END_TXN_MARKER_VALUE_BYTES as i8));
    buf.extend_from_slice(&END_TXN_MARKER_VERSION.to_be_bytes());
    buf.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    buf.push(0); // no headers
    assert_eq!(buf.len(), MARKER_BATCH_BYTES);
    let crc = batch_crc(&buf);
    buf[BATCH_CRC_OFFSET..BATCH_CRC_START].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// The end-of-transaction marker of a whole control batch (length prefix included), or
/// `None` if it is not one (not a control batch, compressed, empty, another control type,
/// or malformed). As Kafka's `EndTransactionMarker.deserialize`: a value version above 0 is
/// read as version 0.
pub fn read_marker(batch: &[u8]) -> Option<EndTxnMarker> {
    let h = BatchHeader::parse(batch)?;
    if !h.is_control() || h.compression() != 0 || h.records_count() < 1 {
        return None;
    }
    let end = usize::try_from(h.total_bytes()).ok()?.min(batch.len());
    let mut r = Reader {
        bytes: batch.get(BATCH_HEADER_BYTES..end)?,
    };
    let _length = r.varint()?;
    let _attributes = r.take(1)?;
    let _timestamp_delta = r.varint()?;
    let _offset_delta = r.varint()?;
    let key_len = usize::try_from(r.varint()?).ok()?;
    let key = r.take(key_len)?;
    if key.len() < CONTROL_KEY_BYTES || i16::from_be_bytes([key[0], key[1]]) < 0 {
        return None;
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_TYPE_ABORT => false,
        CONTROL_TYPE_COMMIT => true,
        _ => return None,
    };
    let value_len = usize::try_from(r.varint()?).ok()?;
    let value = r.take(value_len)?;
    if value.len() < END_TXN_MARKER_VALUE_BYTES || i16::from_be_bytes([value[0], value[1]]) < 0 {
        return None;
    }
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Some(EndTxnMarker {
        commit,
        coordinator_epoch,
    })
}

fn zigzag(v: i8) -> u8 {
    ((v << 1) ^ (v >> 7)) as u8
}

/// Bounds-checked reads over a record.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    /// A zigzag varint of at most 10 bytes (varlong), decoded.
    fn varint(&mut self) -> Option<i64> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn marker_batches_decode_as_kafka_protocol_does_and_read_back() {
        for (commit, coordinator_epoch) in [(true, 7), (false, 0), (false, i32::MAX)] {
            let marker = EndTxnMarker {
                commit,
                coordinator_epoch,
            };
            let batch = build_marker_batch(42, 3, marker, 1_700_000_000_000);
            let (h, total) = engine::batch::validate_batch(&batch, 1 << 20, true).unwrap();
            assert_eq!(total, batch.len());
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(read_marker(&batch), Some(marker));
            // kafka-protocol's decoder (the Rust port of Kafka's) reads the same control
            // record: key version 0 + type, value version 0 + coordinator epoch.
            let mut bytes = Bytes::from(batch.clone());
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            let r = &set.records[0];
            assert!(r.control && r.transactional);
            assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (42, 3, -1));
            let kind: u8 = if commit { 1 } else { 0 };
            assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, kind][..]));
            let mut value = vec![0u8, 0];
            value.extend_from_slice(&coordinator_epoch.to_be_bytes());
            assert_eq!(r.value.as_deref(), Some(&value[..]));
        }
    }

    #[test]
    fn other_or_malformed_batches_are_not_markers() {
        let data = engine::batch::build_test_batch(2, 64, 1, 1, 9);
        assert_eq!(read_marker(&data), None);
        let mut batch = build_marker_batch(
            1,
            0,
            EndTxnMarker {
                commit: true,
                coordinator_epoch: 1,
            },
            5,
        );
        // LEADER_CHANGE (type 2).
        batch[BATCH_HEADER_BYTES + 8] = 2;
        assert_eq!(read_marker(&batch), None);
        // Every truncation reads as none, never a panic.
        let good = build_marker_batch(
            1,
            0,
            EndTxnMarker {
                commit: false,
                coordinator_epoch: 1,
            },
            5,
        );
        for len in 0..good.len() {
            let _ = read_marker(&good[..len]);
        }
    }
}
