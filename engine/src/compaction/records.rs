//! The records inside an uncompressed v2 batch, for the cleaner: a walk that yields each
//! record's offset, timestamp, key and whether its value is null, and the rewrite of a batch
//! down to the records it keeps.
//!
//! Owns: Kafka's v2 record layout (length varint | attributes i8 | timestamp delta varlong |
//! offset delta varint | key length varint | key | value length varint | value | header count
//! varint | headers), read with every length bounds-checked.
//! Does not own: which records to keep (the cleaner decides), compressed batches (the cleaner
//! keeps those whole; see docs/internals/engine.md "Compaction").
//! Invariants: a rewritten batch keeps its base offset, last offset delta, producer fields,
//! leader epoch and the retained records' bytes from the offset delta on (so offsets and
//! producer sequences are what they were); only the header's count, timestamps, attributes,
//! length and CRC and each kept record's length prefix and timestamp delta can change.

use crate::batch::{ATTR_DELETE_HORIZON, BatchHeader, batch_crc};
use crate::limits::BATCH_HEADER_BYTES;

/// One record of a batch, as [`records`] walks it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordView<'a> {
    /// The record's bytes, its length prefix included.
    pub bytes: &'a [u8],
    /// Where, in `bytes`, the offset delta starts (what follows is copied unchanged).
    pub offset_delta_at: usize,
    pub offset: i64,
    pub timestamp: i64,
    /// `None` for a record without a key.
    pub key: Option<&'a [u8]>,
    /// A tombstone: the value is null.
    pub tombstone: bool,
    /// The value (empty for a tombstone).
    #[cfg_attr(not(test), allow(dead_code))]
    pub value: &'a [u8],
}

/// A malformed record: the walk stops and the caller keeps the batch whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The records of `batch` (a whole uncompressed v2 batch, length prefix included), in order.
pub(crate) fn records<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
) -> impl Iterator<Item = Result<RecordView<'a>, Malformed>> + 'a {
    records_in(&batch[BATCH_HEADER_BYTES.min(batch.len())..], header)
}

/// The records of a records section (`header`'s batch after its header, inflated if the
/// batch is compressed), in order.
pub(crate) fn records_in<'a>(
    section: &'a [u8],
    header: &BatchHeader,
) -> impl Iterator<Item = Result<RecordView<'a>, Malformed>> + 'a {
    let batch = section;
    let base_offset = header.base_offset();
    let base_timestamp = header.base_timestamp();
    let mut at = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= batch.len() {
            return None;
        }
        let record = parse_record(&batch[at..], base_offset, base_timestamp);
        match record {
            Ok(r) => {
                at += r.bytes.len();
                Some(Ok(r))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

fn parse_record(
    bytes: &[u8],
    base_offset: i64,
    base_timestamp: i64,
) -> Result<RecordView<'_>, Malformed> {
    let (length, prefix) = read_varlong(bytes).ok_or(Malformed)?;
    let length = usize::try_from(length).map_err(|_| Malformed)?;
    let end = prefix
        .checked_add(length)
        .filter(|&e| e <= bytes.len())
        .ok_or(Malformed)?;
    let body = &bytes[..end];
    let mut at = prefix + 1; // attributes
    let (timestamp_delta, n) = read_varlong(body.get(at..).ok_or(Malformed)?).ok_or(Malformed)?;
    at += n;
    let offset_delta_at = at;
    let (offset_delta, n) = read_varlong(body.get(at..).ok_or(Malformed)?).ok_or(Malformed)?;
    at += n;
    let (key_len, n) = read_varlong(body.get(at..).ok_or(Malformed)?).ok_or(Malformed)?;
    at += n;
    let key = if key_len < 0 {
        None
    } else {
        let len = usize::try_from(key_len).map_err(|_| Malformed)?;
        let key = body
            .get(at..at.checked_add(len).ok_or(Malformed)?)
            .ok_or(Malformed)?;
        at += len;
        Some(key)
    };
    let (value_len, n) = read_varlong(body.get(at..).ok_or(Malformed)?).ok_or(Malformed)?;
    at += n;
    let value = match usize::try_from(value_len) {
        Ok(len) => body
            .get(at..at.checked_add(len).ok_or(Malformed)?)
            .ok_or(Malformed)?,
        Err(_) => &[],
    };
    Ok(RecordView {
        bytes: body,
        offset_delta_at,
        offset: base_offset.wrapping_add(offset_delta),
        timestamp: base_timestamp.wrapping_add(timestamp_delta),
        key,
        tombstone: value_len < 0,
        value,
    })
}

/// The key of a control batch's record: version i16 | type i16 (0 ABORT, 1 COMMIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlType {
    Abort,
    Commit,
    Other,
}

/// The marker type of a control batch (its first record's key), `None` if it has no record.
pub(crate) fn control_type(batch: &[u8], header: &BatchHeader) -> Option<ControlType> {
    let record = records(batch, header).next()?.ok()?;
    Some(match record.key {
        Some([_, _, 0, 0, ..]) => ControlType::Abort,
        Some([_, _, 0, 1, ..]) => ControlType::Commit,
        _ => ControlType::Other,
    })
}

/// Builds `header`'s batch again with only `kept` of its records (all from that batch, in
/// order, at least one), into `out`. With `delete_horizon_ms` the batch carries it in its
/// base timestamp (attribute bit 6, KIP-534) and each record's timestamp delta is re-encoded
/// against it; otherwise the base timestamp stays. The max timestamp is recomputed from the
/// kept records (CreateTime), as Kafka's rebuilt batches do, or kept (LogAppendTime).
/// A compressed batch's records section is deflated again with the batch's codec.
pub(crate) fn rebuild(
    header: &BatchHeader,
    kept: &[RecordView<'_>],
    delete_horizon_ms: Option<i64>,
    out: &mut Vec<u8>,
) {
    let codec = header.compression();
    assert!(!kept.is_empty(), "a rebuilt batch keeps a record");
    let start = out.len();
    let mut h = *header;
    let base_timestamp = delete_horizon_ms.unwrap_or(header.base_timestamp());
    if delete_horizon_ms.is_some() {
        h.attributes = (header.attributes() | ATTR_DELETE_HORIZON).into();
    }
    h.base_timestamp = base_timestamp.into();
    h.records_count = (kept.len() as i32).into();
    if !header.is_log_append_time() {
        let max = kept.iter().map(|r| r.timestamp).max().expect("non-empty");
        h.max_timestamp = max.into();
    }
    out.extend_from_slice(zerocopy::IntoBytes::as_bytes(&h));
    let mut plain = Vec::new();
    let section: &mut Vec<u8> = if codec != 0 { &mut plain } else { out };
    let mut body = Vec::new();
    for r in kept {
        if base_timestamp == header.base_timestamp() {
            section.extend_from_slice(r.bytes);
            continue;
        }
        // attributes | new timestamp delta | the rest as it was
        body.clear();
        body.push(r.bytes[varlong_len(r.bytes)]);
        put_varlong(&mut body, r.timestamp.wrapping_sub(base_timestamp));
        body.extend_from_slice(&r.bytes[r.offset_delta_at..]);
        put_varlong(section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    if codec != 0 {
        out.extend_from_slice(&super::codec::deflate(codec, &plain));
    }
    let total = out.len() - start;
    let batch_length = (total - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = batch_crc(&out[start..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

/// Length in bytes of the varint at the start of `bytes` (which the walk already checked).
fn varlong_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| b & 0x80 == 0)
        .map_or(bytes.len(), |i| i + 1)
}

/// Decodes a zigzag varlong of at most 10 bytes; `None` if truncated or longer.
fn read_varlong(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((raw >> 1) as i64 ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw & 0x7f) as u8 | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::{BatchHeader, MAGIC_V2, validate_batch};

    /// An uncompressed v2 batch at `base_offset` of keyed records `(key, value)` (`None`
    /// value: a tombstone), timestamps `base_timestamp + i`.
    pub(crate) fn keyed_batch(
        base_offset: i64,
        base_timestamp: i64,
        records: &[(&[u8], Option<&[u8]>)],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (key, value)) in records.iter().enumerate() {
            let mut r = Vec::new();
            r.push(0); // attributes
            put_varlong(&mut r, i as i64); // timestamp delta
            put_varlong(&mut r, i as i64); // offset delta
            put_varlong(&mut r, key.len() as i64);
            r.extend_from_slice(key);
            match value {
                Some(v) => {
                    put_varlong(&mut r, v.len() as i64);
                    r.extend_from_slice(v);
                }
                None => put_varlong(&mut r, -1),
            }
            put_varlong(&mut r, 0); // headers
            put_varlong(&mut body, r.len() as i64);
            body.extend_from_slice(&r);
        }
        let n = records.len() as i32;
        let h = BatchHeader {
            base_offset: base_offset.into(),
            batch_length: ((BATCH_HEADER_BYTES - 12 + body.len()) as i32).into(),
            partition_leader_epoch: 0.into(),
            magic: MAGIC_V2,
            crc: 0.into(),
            attributes: 0.into(),
            last_offset_delta: (n - 1).into(),
            base_timestamp: base_timestamp.into(),
            max_timestamp: (base_timestamp + i64::from(n) - 1).into(),
            producer_id: (-1).into(),
            producer_epoch: (-1).into(),
            base_sequence: (-1).into(),
            records_count: n.into(),
        };
        let mut out = zerocopy::IntoBytes::as_bytes(&h).to_vec();
        out.extend_from_slice(&body);
        let crc = batch_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn walk_and_rebuild_keep_offsets_and_timestamps() {
        let batch = keyed_batch(
            100,
            5_000,
            &[(b"a", Some(b"1")), (b"b", None), (b"c", Some(b"3"))],
        );
        let header = *BatchHeader::parse(&batch).unwrap();
        let all: Vec<_> = records(&batch, &header).map(Result::unwrap).collect();
        assert_eq!(
            all.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [100, 101, 102]
        );
        assert_eq!(all[1].key, Some(&b"b"[..]));
        assert!(all[1].tombstone && !all[0].tombstone);
        assert_eq!(all[2].timestamp, 5_002);

        for horizon in [None, Some(9_999_999)] {
            let mut out = Vec::new();
            rebuild(&header, &[all[1], all[2]], horizon, &mut out);
            let (h, len) = validate_batch(&out, u32::MAX, false).expect("valid batch");
            assert_eq!(len, out.len());
            assert_eq!(
                (h.base_offset(), h.last_offset(), h.records_count()),
                (100, 102, 2)
            );
            assert_eq!(h.max_timestamp(), 5_002);
            assert_eq!(h.attributes() & ATTR_DELETE_HORIZON != 0, horizon.is_some());
            let again: Vec<_> = records(&out, h).map(Result::unwrap).collect();
            assert_eq!(
                again
                    .iter()
                    .map(|r| (r.offset, r.timestamp))
                    .collect::<Vec<_>>(),
                [(101, 5_001), (102, 5_002)]
            );
            assert!(again[0].tombstone);
            assert_eq!(again[1].key, Some(&b"c"[..]));
        }
    }

    #[test]
    fn malformed_records_stop_the_walk() {
        let mut batch = keyed_batch(0, 0, &[(b"a", Some(b"1"))]);
        let n = batch.len();
        batch[BATCH_HEADER_BYTES] = 0x7e; // length 63 > what follows
        let header = *BatchHeader::parse(&batch[..n]).unwrap();
        let got: Vec<_> = records(&batch, &header).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }
}
