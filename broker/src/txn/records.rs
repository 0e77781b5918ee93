//! The `__transaction_state` record format, as Kafka's `TransactionLog` writes it: key =
//! version (int16 0) + TransactionLogKey v0 (transactional id); value = version (int16 1) +
//! TransactionLogValue v1 (producer id, epoch, timeout, state, partitions, timestamps, and
//! the tagged PreviousProducerId (0), NextProducerId (1) and ClientTransactionVersion (2)
//! of KIP-890), or a tombstone when a transactional id expires. Which partition holds an id
//! is Kafka's `abs(hashCode) % partitions`, the same rule as groups.
//!
//! Version 1 (flexible) is what Kafka writes from transaction version 1 on; a tagged field
//! at its default is not written. Version 0 values (what Kafka and earlier Sluice wrote) are
//! read too, with the tagged fields at their defaults.
//!
//! Pure: bytes in, values out; bad bytes are a `RecordDecodeError`, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::metadata::{TxnMetadata, TxnState, TxnVersion};

/// Kafka's name for the transaction log topic.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";
/// Record key version (TransactionLogKey v0).
const KEY_VERSION: i16 = 0;
/// Record value version written (TransactionLogValue v1).
const VALUE_VERSION: i16 = 1;
/// TransactionLogValue v1's tags.
const TAG_PREVIOUS_PRODUCER_ID: u64 = 0;
const TAG_NEXT_PRODUCER_ID: u64 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u64 = 2;
/// Sluice's own tag: the id's transaction count (`TxnMetadata::txn_sequence`). Kafka's loader
/// skips unknown tags.
const TAG_SLUICE_TXN_SEQUENCE: u64 = 10_000;
/// Partitions one stored transaction may list (Kafka has no limit; this bounds a record).
pub const PARTITIONS_PER_RECORD_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("transaction log record truncated")]
    Truncated,
    #[error("transaction log record version {0} unknown")]
    UnknownVersion(i16),
    #[error("transaction log record field invalid: {0}")]
    Invalid(&'static str),
}

/// The `__transaction_state` partition holding `transactional_id` (Java's `String.hashCode`,
/// `Utils.abs`, modulo the partition count).
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    crate::group::records::partition_for_group(transactional_id, partitions)
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + transactional_id.len());
    out.put_i16(KEY_VERSION);
    put_string(&mut out, transactional_id);
    out.freeze()
}

pub fn decode_key(mut bytes: &[u8]) -> Result<String, RecordDecodeError> {
    let version = get_i16(&mut bytes)?;
    if version != KEY_VERSION {
        return Err(RecordDecodeError::UnknownVersion(version));
    }
    get_string(&mut bytes)
}

/// The stored value of `m` (its partitions only while a transaction is open or ending, as
/// Kafka stores them).
pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(VALUE_VERSION);
    out.put_i64(m.producer_id);
    out.put_i16(m.producer_epoch);
    out.put_i32(m.timeout_ms);
    out.put_i8(m.state.id());
    if m.state == TxnState::Empty {
        // Kafka writes a null partition list for an Empty transaction.
        put_uvarint(&mut out, 0);
    } else {
        let topics = m.partitions_by_topic();
        put_uvarint(&mut out, topics.len() as u64 + 1);
        for (topic, partitions) in topics {
            put_uvarint(&mut out, topic.len() as u64 + 1);
            out.put_slice(topic.as_bytes());
            put_uvarint(&mut out, partitions.len() as u64 + 1);
            for p in partitions {
                out.put_i32(p);
            }
            put_uvarint(&mut out, 0); // the topic entry's tagged fields
        }
    }
    out.put_i64(m.last_update_ms);
    out.put_i64(m.start_ms);
    let mut tagged: Vec<(u64, Vec<u8>)> = Vec::with_capacity(3);
    if m.previous_producer_id != -1 {
        tagged.push((
            TAG_PREVIOUS_PRODUCER_ID,
            m.previous_producer_id.to_be_bytes().into(),
        ));
    }
    if m.next_producer_id != -1 {
        tagged.push((
            TAG_NEXT_PRODUCER_ID,
            m.next_producer_id.to_be_bytes().into(),
        ));
    }
    if m.client_version != TxnVersion::V0 {
        tagged.push((
            TAG_CLIENT_TRANSACTION_VERSION,
            m.client_version.0.to_be_bytes().into(),
        ));
    }
    if m.txn_sequence != 0 {
        tagged.push((TAG_SLUICE_TXN_SEQUENCE, m.txn_sequence.to_be_bytes().into()));
    }
    put_uvarint(&mut out, tagged.len() as u64);
    for (tag, data) in tagged {
        put_uvarint(&mut out, tag);
        put_uvarint(&mut out, data.len() as u64);
        out.put_slice(&data);
    }
    out.freeze()
}

/// Decodes a stored value for `transactional_id`.
pub fn decode_value(
    transactional_id: &str,
    mut bytes: &[u8],
) -> Result<TxnMetadata, RecordDecodeError> {
    let version = get_i16(&mut bytes)?;
    let flexible = match version {
        0 => false,
        1 => true,
        v => return Err(RecordDecodeError::UnknownVersion(v)),
    };
    let producer_id = get_i64(&mut bytes)?;
    let producer_epoch = get_i16(&mut bytes)?;
    let timeout_ms = get_i32(&mut bytes)?;
    let state =
        TxnState::from_id(get_i8(&mut bytes)?).ok_or(RecordDecodeError::Invalid("state"))?;
    let mut m = TxnMetadata::new(transactional_id.to_string(), producer_id, timeout_ms, 0);
    m.producer_epoch = producer_epoch;
    m.state = state;
    let topics = get_len(&mut bytes, flexible)?;
    for _ in 0..topics.unwrap_or(0) {
        let topic = if flexible {
            get_compact_string(&mut bytes)?
        } else {
            get_string(&mut bytes)?
        };
        let count = get_len(&mut bytes, flexible)?.unwrap_or(0);
        for _ in 0..count {
            if m.partitions.len() >= PARTITIONS_PER_RECORD_MAX {
                return Err(RecordDecodeError::Invalid("too many partitions"));
            }
            m.partitions.insert((topic.clone(), get_i32(&mut bytes)?));
        }
        if flexible {
            skip_tagged_fields(&mut bytes)?;
        }
    }
    m.last_update_ms = get_i64(&mut bytes)?;
    m.start_ms = get_i64(&mut bytes)?;
    if flexible {
        let count = get_uvarint(&mut bytes)?;
        for _ in 0..count {
            let tag = get_uvarint(&mut bytes)?;
            let size = usize::try_from(get_uvarint(&mut bytes)?)
                .map_err(|_| RecordDecodeError::Truncated)?;
            need(bytes, size)?;
            let mut field = &bytes[..size];
            match tag {
                TAG_PREVIOUS_PRODUCER_ID => m.previous_producer_id = get_i64(&mut field)?,
                TAG_NEXT_PRODUCER_ID => m.next_producer_id = get_i64(&mut field)?,
                TAG_CLIENT_TRANSACTION_VERSION => {
                    m.client_version = TxnVersion(get_i16(&mut field)?);
                }
                TAG_SLUICE_TXN_SEQUENCE => m.txn_sequence = get_i64(&mut field)? as u64,
                _ => {}
            }
            bytes.advance(size);
        }
    }
    Ok(m)
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn need(bytes: &[u8], n: usize) -> Result<(), RecordDecodeError> {
    if bytes.len() < n {
        Err(RecordDecodeError::Truncated)
    } else {
        Ok(())
    }
}

fn get_i8(b: &mut &[u8]) -> Result<i8, RecordDecodeError> {
    need(b, 1)?;
    Ok(b.get_i8())
}

fn get_i16(b: &mut &[u8]) -> Result<i16, RecordDecodeError> {
    need(b, 2)?;
    Ok(b.get_i16())
}

fn get_i32(b: &mut &[u8]) -> Result<i32, RecordDecodeError> {
    need(b, 4)?;
    Ok(b.get_i32())
}

fn get_i64(b: &mut &[u8]) -> Result<i64, RecordDecodeError> {
    need(b, 8)?;
    Ok(b.get_i64())
}

fn take_utf8(b: &mut &[u8], len: usize) -> Result<String, RecordDecodeError> {
    need(b, len)?;
    let s = std::str::from_utf8(&b[..len])
        .map_err(|_| RecordDecodeError::Invalid("string not UTF-8"))?
        .to_string();
    b.advance(len);
    Ok(s)
}

fn get_string(b: &mut &[u8]) -> Result<String, RecordDecodeError> {
    let len = get_i16(b)?;
    let len = usize::try_from(len).map_err(|_| RecordDecodeError::Invalid("null string"))?;
    take_utf8(b, len)
}

fn get_uvarint(b: &mut &[u8]) -> Result<u64, RecordDecodeError> {
    kafka_wire::varint::get_uvarint(b).map_err(|_| RecordDecodeError::Truncated)
}

fn get_compact_string(b: &mut &[u8]) -> Result<String, RecordDecodeError> {
    let len = get_uvarint(b)?;
    let len = usize::try_from(
        len.checked_sub(1)
            .ok_or(RecordDecodeError::Invalid("null string"))?,
    )
    .map_err(|_| RecordDecodeError::Truncated)?;
    take_utf8(b, len)
}

/// An array length (`None` for a null array), bounded by the bytes left (each element
/// takes at least one byte), so a hostile length cannot drive a long loop.
fn get_len(b: &mut &[u8], flexible: bool) -> Result<Option<usize>, RecordDecodeError> {
    let len: i64 = if flexible {
        get_uvarint(b)? as i64 - 1
    } else {
        i64::from(get_i32(b)?)
    };
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if len > b.len() {
        return Err(RecordDecodeError::Truncated);
    }
    Ok(Some(len))
}

fn skip_tagged_fields(b: &mut &[u8]) -> Result<(), RecordDecodeError> {
    let count = get_uvarint(b)?;
    for _ in 0..count {
        let _tag = get_uvarint(b)?;
        let size = usize::try_from(get_uvarint(b)?).map_err(|_| RecordDecodeError::Truncated)?;
        need(b, size)?;
        b.advance(size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut m = TxnMetadata::new("app-1".into(), 42, 60_000, 1_000);
        m.producer_epoch = 3;
        m.state = TxnState::PrepareCommit;
        m.start_ms = 900;
        m.partitions.insert(("out".into(), 2));
        m.partitions.insert(("out".into(), 0));
        m.partitions.insert(("__consumer_offsets".into(), 17));
        m.previous_producer_id = 41;
        m.next_producer_id = 43;
        m.client_version = TxnVersion::V2;
        m.txn_sequence = 12;
        let value = encode_value(&m);
        let back = decode_value("app-1", &value).unwrap();
        assert_eq!(
            (
                back.previous_producer_id,
                back.next_producer_id,
                back.client_version
            ),
            (41, 43, TxnVersion::V2)
        );
        assert_eq!(back.txn_sequence, 12);
        assert_eq!(back.producer_id, 42);
        assert_eq!(back.producer_epoch, 3);
        assert_eq!(back.state, TxnState::PrepareCommit);
        assert_eq!(back.partitions, m.partitions);
        assert_eq!(
            (back.start_ms, back.last_update_ms, back.timeout_ms),
            (900, 1_000, 60_000)
        );
        assert_eq!(decode_key(&encode_key("app-1")).unwrap(), "app-1");
    }

    #[test]
    fn empty_transactions_store_a_null_partition_list() {
        let m = TxnMetadata::new("a".into(), 1, 10, 5);
        let value = encode_value(&m);
        // version, pid, epoch, timeout, state, then the null compact array.
        assert_eq!(value[2 + 8 + 2 + 4 + 1], 0);
        let back = decode_value("a", &value).unwrap();
        assert!(back.partitions.is_empty());
        assert_eq!(
            (
                back.previous_producer_id,
                back.next_producer_id,
                back.client_version
            ),
            (-1, -1, TxnVersion::V0),
            "defaults are not written"
        );
        assert_eq!(value.len(), 2 + 8 + 2 + 4 + 1 + 1 + 8 + 8 + 1);
    }

    /// A version 0 value (Kafka below transaction version 1, earlier Sluice) still loads.
    #[test]
    fn version_0_values_load() {
        let mut v0 = BytesMut::new();
        v0.put_i16(0);
        v0.put_i64(9);
        v0.put_i16(4);
        v0.put_i32(60_000);
        v0.put_i8(TxnState::Ongoing.id());
        v0.put_i32(1);
        put_string(&mut v0, "out");
        v0.put_i32(1);
        v0.put_i32(3);
        v0.put_i64(20);
        v0.put_i64(10);
        let m = decode_value("x", &v0).unwrap();
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (9, 4, TxnState::Ongoing)
        );
        assert_eq!(m.partitions.len(), 1);
        assert_eq!(
            (m.last_update_ms, m.start_ms, m.next_producer_id),
            (20, 10, -1)
        );
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let value = encode_value(&TxnMetadata::new("a".into(), 1, 10, 5));
        for cut in 0..value.len() {
            assert!(decode_value("a", &value[..cut]).is_err(), "cut at {cut}");
        }
        let mut hostile = value.to_vec();
        // A partition count far past the bytes left (uvarint 0x7fffffff).
        hostile.splice(17..18, [0xff, 0xff, 0xff, 0xff, 0x07]);
        assert!(decode_value("a", &hostile).is_err());
        assert!(decode_key(&[0, 7]).is_err());
        assert_eq!(
            decode_key(&[0, 9, 0, 0]),
            Err(RecordDecodeError::UnknownVersion(9))
        );
    }

    /// The same partition Kafka picks (Java's "txn".hashCode() = 115_306).
    #[test]
    fn partition_is_javas_hash_modulo_the_count() {
        assert_eq!(partition_for("txn", 50), 115_306 % 50);
    }
}
