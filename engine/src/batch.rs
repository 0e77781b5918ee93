//! Kafka v2 record batch headers: zero-copy views, validation, and the in-place patch.
//!
//! Owns: the 61-byte v2 header layout (big-endian), attribute bits, CRC32C checks, and the
//! count of an uncompressed batch's records (their varint length prefixes, nothing inside).
//! Does not own: the contents of records (keys, values, headers stay opaque; compressed
//! batches are not decompressed).
//! Invariants: a header is only trusted after [`validate_batch`] / [`ValidatedBatch::new`]
//! (append) or the recovery scan checked length, magic and CRC; the CRC covers bytes 21.. so
//! patching base_offset and partition_leader_epoch never needs a recompute. A producer batch
//! that passed validation spans exactly `records_count` offsets, and when uncompressed holds
//! exactly that many records filling it to the last byte. A [`ValidatedBatch`] exists only
//! once its CRC32C was checked, so the log appends it without checking again; the
//! LogAppendTime stamp is applied to a 61-byte copy of its header, whose new CRC32C comes
//! from the one pass over the records (CRC combination), not a second pass.

use std::cell::Cell;

use bytes::Bytes;
use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::{
    BATCH_CRC_START, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, RECORD_BODY_BYTES_MIN,
    VARINT32_BYTES_MAX,
};

/// The only record batch format the engine stores.
pub const MAGIC_V2: i8 = 2;
/// attributes bits 0..=2: compression codec.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// attributes bit 3: timestamp type (0 = CreateTime, 1 = LogAppendTime).
pub const ATTR_TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
/// attributes bit 4: part of a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// attributes bit 5: control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;
/// attributes bit 6: delete horizon set (compaction).
pub const ATTR_DELETE_HORIZON: i16 = 0x40;
/// producer_id of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;

/// The 61-byte v2 record batch header, as on the wire and on disk.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64,
    /// Bytes after this field (the whole batch is `batch_length + 12` bytes).
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    /// CRC32C of bytes 21.. (attributes to the end of the batch).
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub records_count: I32,
}

const _: () = assert!(size_of::<BatchHeader>() == BATCH_HEADER_BYTES);

impl BatchHeader {
    /// Views the first 61 bytes of `bytes` as a header; `None` if there are fewer.
    pub fn parse(bytes: &[u8]) -> Option<&BatchHeader> {
        BatchHeader::ref_from_prefix(bytes).ok().map(|(h, _)| h)
    }
    pub fn base_offset(&self) -> i64 {
        self.base_offset.get()
    }
    /// Offset of the last record: base_offset + last_offset_delta.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.get() + i64::from(self.last_offset_delta.get())
    }
    /// Whole batch size on disk, including the 12-byte prefix. Negative lengths give 0.
    pub fn total_bytes(&self) -> u64 {
        let len = self.batch_length.get();
        if len < 0 {
            0
        } else {
            len as u64 + BATCH_LENGTH_PREFIX_BYTES as u64
        }
    }
    pub fn leader_epoch(&self) -> i32 {
        self.partition_leader_epoch.get()
    }
    pub fn attributes(&self) -> i16 {
        self.attributes.get()
    }
    pub fn compression(&self) -> i16 {
        self.attributes.get() & ATTR_COMPRESSION_MASK
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes.get() & ATTR_CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes.get() & ATTR_TIMESTAMP_TYPE_LOG_APPEND != 0
    }
    pub fn producer_id(&self) -> i64 {
        self.producer_id.get()
    }
    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch.get()
    }
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence.get()
    }
    pub fn last_offset_delta(&self) -> i32 {
        self.last_offset_delta.get()
    }
    pub fn records_count(&self) -> i32 {
        self.records_count.get()
    }
    pub fn base_timestamp(&self) -> i64 {
        self.base_timestamp.get()
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.get()
    }
    pub fn crc(&self) -> u32 {
        self.crc.get()
    }
}

/// Why a batch was rejected. Small and `Copy`: this is a hot-path decode error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{available} bytes left, fewer than a batch header")]
    ShortHeader { available: usize },
    #[error("batch_length {batch_length} is out of range")]
    BadLength { batch_length: i32 },
    #[error("batch of {needed} bytes but only {available} present")]
    Truncated { needed: u64, available: u64 },
    #[error("magic {magic}, only v2 is stored")]
    BadMagic { magic: i8 },
    #[error("crc32c mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
    #[error("records_count {records_count} does not match last_offset_delta {last_offset_delta}")]
    BadRecordCount {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("batch of {bytes} bytes exceeds the limit of {max}")]
    TooLarge { bytes: u64, max: u32 },
    /// An uncompressed batch's records do not frame: record number `record` (0-based) has a
    /// malformed or too small length prefix, or runs past the batch end (Kafka: "Incorrect
    /// declared batch size, premature EOF reached").
    #[error(
        "record {record} at byte {position} of the records has a bad length or overruns the batch"
    )]
    BadRecordLength { record: u32, position: u32 },
    /// An uncompressed batch holds a different number of records than records_count says
    /// (Kafka: "Incorrect declared batch size").
    #[error("records_count {records_count} but the batch holds {found} records")]
    RecordCountMismatch { records_count: i32, found: u32 },
}

/// CRC32C over bytes 21.. of a whole batch.
pub fn batch_crc(batch: &[u8]) -> u32 {
    count_crc_pass();
    crc32c(&batch[BATCH_CRC_START..])
}

thread_local! {
    /// Passes of CRC32C over a batch's records made on this thread (see `batch_crc_passes`).
    static BATCH_CRC_PASSES: Cell<u64> = const { Cell::new(0) };
}

fn count_crc_pass() {
    BATCH_CRC_PASSES.with(|c| c.set(c.get() + 1));
}

/// How many times this thread ran CRC32C over a record batch's records (validation,
/// LogAppendTime stamping, recovery). A shard is one thread, so tests and benchmarks read it
/// before and after an append path to count the passes it made (one per produced batch).
pub fn batch_crc_passes() -> u64 {
    BATCH_CRC_PASSES.with(Cell::get)
}

/// What one validation pass checks, beyond framing, magic and CRC32C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Largest batch accepted (`BatchError::TooLarge` above it).
    pub max_batch_bytes: u32,
    /// A producer's batch: the count rules of [`validate_batch`]'s `strict_count`.
    pub strict_count: bool,
    /// LogAppendTime: stamp the batch with this time (attributes bit 3, max_timestamp), as
    /// Kafka's LogValidator does.
    pub log_append_time_ms: Option<i64>,
}

/// The fields a LogAppendTime stamp replaces in a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LogAppendStamp {
    attributes: i16,
    max_timestamp: i64,
    crc: u32,
}

/// One record batch that passed validation: framing, magic, CRC32C and the record count
/// (see [`ValidateOptions`]). Only [`ValidatedBatch::new`] makes one, so holding one proves
/// the checks ran; the log appends it without repeating them. The bytes are a zero-copy
/// slice of the request; a LogAppendTime stamp lives beside them and is applied to the copy
/// of the header written to disk ([`ValidatedBatch::head`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedBatch {
    bytes: Bytes,
    stamp: Option<LogAppendStamp>,
}

impl ValidatedBatch {
    /// Validates the batch starting at `records[at]` in one pass: framing, magic, size,
    /// CRC32C (once, over bytes 21..), the record count, and with `log_append_time_ms` the
    /// stamp (its CRC32C combined from the header's bytes and the records' CRC, so the
    /// records are read once). Trailing bytes after the batch are not looked at.
    pub fn new(
        records: &Bytes,
        at: usize,
        options: ValidateOptions,
    ) -> Result<ValidatedBatch, BatchError> {
        let rest = records.get(at..).unwrap_or_default();
        let (header, total) = frame_batch(rest, options.max_batch_bytes)?;
        let batch = &rest[..total];
        let (actual, stamp) = match options.log_append_time_ms {
            None => (batch_crc(batch), None),
            Some(now_ms) => {
                // CRC(a ++ b) = combine(CRC(a), CRC(b), |b|): the records' CRC, taken once,
                // checks the received header and yields the stamped header's CRC.
                count_crc_pass();
                let body = &batch[BATCH_HEADER_BYTES..];
                let body_crc = crc32c(body);
                let head = &batch[BATCH_CRC_START..BATCH_HEADER_BYTES];
                let actual = crc32c_combine(crc32c(head), body_crc, body.len());
                let attributes = header.attributes() | ATTR_TIMESTAMP_TYPE_LOG_APPEND;
                let mut stamped = [0u8; BATCH_HEADER_BYTES];
                stamped.copy_from_slice(&batch[..BATCH_HEADER_BYTES]);
                let view = BatchHeader::mut_from_bytes(&mut stamped).expect("61 bytes");
                view.attributes = attributes.into();
                view.max_timestamp = now_ms.into();
                let crc = crc32c_combine(crc32c(&stamped[BATCH_CRC_START..]), body_crc, body.len());
                let stamp = LogAppendStamp {
                    attributes,
                    max_timestamp: now_ms,
                    crc,
                };
                (actual, Some(stamp))
            }
        };
        if actual != header.crc() {
            return Err(BatchError::BadCrc {
                expected: header.crc(),
                actual,
            });
        }
        check_count(header, batch, options.strict_count)?;
        Ok(ValidatedBatch {
            bytes: records.slice(at..at + total),
            stamp,
        })
    }

    /// The header as received (before any LogAppendTime stamp; see `max_timestamp`).
    pub fn header(&self) -> &BatchHeader {
        BatchHeader::parse(&self.bytes).expect("validated batch")
    }
    /// Whole batch size, length prefix included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Never true: a batch has at least a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The batch as received (a LogAppendTime stamp is not in these bytes).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn records_count(&self) -> i32 {
        self.header().records_count()
    }
    pub fn last_offset_delta(&self) -> i32 {
        self.header().last_offset_delta()
    }
    /// The max_timestamp stored: the stamp's under LogAppendTime.
    pub fn max_timestamp(&self) -> i64 {
        self.stamp
            .map_or_else(|| self.header().max_timestamp(), |s| s.max_timestamp)
    }
    pub fn is_log_append_time(&self) -> bool {
        self.stamp.is_some()
    }
    /// The 61-byte header to write: base offset and leader epoch patched (outside the CRC),
    /// and the LogAppendTime stamp with its CRC. The records follow as [`Self::body`].
    pub fn head(&self, base_offset: i64, leader_epoch: i32) -> [u8; BATCH_HEADER_BYTES] {
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&self.bytes[..BATCH_HEADER_BYTES]);
        let view = BatchHeader::mut_from_bytes(&mut head).expect("61 bytes");
        view.base_offset = base_offset.into();
        view.partition_leader_epoch = leader_epoch.into();
        if let Some(stamp) = self.stamp {
            view.attributes = stamp.attributes.into();
            view.max_timestamp = stamp.max_timestamp.into();
            view.crc = stamp.crc.into();
        }
        head
    }
    /// The bytes after the header (a zero-copy slice).
    pub fn body(&self) -> Bytes {
        self.bytes.slice(BATCH_HEADER_BYTES..)
    }
    /// The batch as stored at `base_offset` in `leader_epoch` (a copy; tests and tools).
    pub fn to_stored(&self, base_offset: i64, leader_epoch: i32) -> Vec<u8> {
        let mut out = self.head(base_offset, leader_epoch).to_vec();
        out.extend_from_slice(&self.bytes[BATCH_HEADER_BYTES..]);
        out
    }
}

/// CRC32C of `a ++ b` from CRC32C(a), CRC32C(b) and the length of `b` (no pass over the
/// bytes; O(log len)).
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    crc_fast::checksum_combine(
        crc_fast::CrcAlgorithm::Crc32Iscsi,
        u64::from(crc_a),
        u64::from(crc_b),
        len_b as u64,
    ) as u32
}

/// CRC32C (Castagnoli, the checksum of Kafka v2 batches) of `bytes`, with the fastest
/// instructions the CPU has (crc-fast picks AVX-512 VPCLMULQDQ, PCLMULQDQ or SSE4.2 at run
/// time).
pub fn crc32c(bytes: &[u8]) -> u32 {
    // CRC-32/ISCSI is CRC32C; crc-fast returns every width as u64.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Frames the batch starting at `bytes[0]`: checks header presence, length bounds and magic.
/// Returns the header and the batch's total size. Does not check the CRC.
pub fn frame_batch(
    bytes: &[u8],
    max_batch_bytes: u32,
) -> Result<(&BatchHeader, usize), BatchError> {
    let header = BatchHeader::parse(bytes).ok_or(BatchError::ShortHeader {
        available: bytes.len(),
    })?;
    let batch_length = header.batch_length.get();
    let min_length = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32;
    if batch_length < min_length {
        return Err(BatchError::BadLength { batch_length });
    }
    let total = header.total_bytes();
    if total > u64::from(max_batch_bytes) {
        return Err(BatchError::TooLarge {
            bytes: total,
            max: max_batch_bytes,
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic {
            magic: header.magic,
        });
    }
    if total > bytes.len() as u64 {
        return Err(BatchError::Truncated {
            needed: total,
            available: bytes.len() as u64,
        });
    }
    Ok((header, total as usize))
}

/// Full validation of one batch as received from a producer or a leader: framing, magic,
/// CRC32C, and that records_count agrees with last_offset_delta.
///
/// `strict_count` (a producer's batch, Kafka's LogValidator rules): records_count >= 1 and
/// records_count == last_offset_delta + 1; for an uncompressed batch also that its records'
/// length prefixes frame exactly records_count records ending at the batch's last byte (one
/// walk over the prefixes, no allocation). A compressed batch's records are not counted (that
/// would need decompression; see docs/status.md). Without `strict_count` (a leader's batch,
/// copied as the leader stored it) only non-negative count and delta are required.
pub fn validate_batch(
    bytes: &[u8],
    max_batch_bytes: u32,
    strict_count: bool,
) -> Result<(&BatchHeader, usize), BatchError> {
    let (header, total) = frame_batch(bytes, max_batch_bytes)?;
    let actual = batch_crc(&bytes[..total]);
    if actual != header.crc() {
        return Err(BatchError::BadCrc {
            expected: header.crc(),
            actual,
        });
    }
    check_count(header, &bytes[..total], strict_count)?;
    Ok((header, total))
}

/// The count rules of [`validate_batch`] for one framed batch (`batch` is exactly it).
fn check_count(header: &BatchHeader, batch: &[u8], strict_count: bool) -> Result<(), BatchError> {
    let count = header.records_count();
    let delta = header.last_offset_delta();
    let count_ok = if strict_count {
        count >= 1 && i64::from(count) == i64::from(delta) + 1
    } else {
        count >= 0 && delta >= 0
    };
    if !count_ok {
        return Err(BatchError::BadRecordCount {
            records_count: count,
            last_offset_delta: delta,
        });
    }
    if strict_count && header.compression() == 0 {
        let found = count_records(&batch[BATCH_HEADER_BYTES..])?;
        if i64::from(found) != i64::from(count) {
            return Err(BatchError::RecordCountMismatch {
                records_count: count,
                found,
            });
        }
    }
    Ok(())
}

/// Counts the records of an uncompressed batch (the bytes after its header) by their varint
/// length prefixes, checking that each is well formed, at least [`RECORD_BODY_BYTES_MIN`],
/// and that the records end exactly at the end of `records`.
pub fn count_records(records: &[u8]) -> Result<u32, BatchError> {
    let mut at = 0usize;
    let mut found = 0u32;
    while at < records.len() {
        let end = read_varint32(&records[at..]).and_then(|(length, prefix)| {
            let end = at + prefix + usize::try_from(length).ok()?;
            (length >= RECORD_BODY_BYTES_MIN as i32 && end <= records.len()).then_some(end)
        });
        let Some(end) = end else {
            return Err(BatchError::BadRecordLength {
                record: found,
                position: at as u32,
            });
        };
        at = end;
        found += 1;
    }
    Ok(found)
}

/// Decodes a zigzag varint of at most 5 bytes (Kafka's `readVarint`); `None` if truncated
/// or longer. Returns the value and the bytes it took. One- and two-byte values (records
/// up to 8 KiB) take the short paths.
#[inline]
fn read_varint32(bytes: &[u8]) -> Option<(i32, usize)> {
    let unzigzag = |raw: u32| (raw >> 1) as i32 ^ -((raw & 1) as i32);
    match *bytes {
        [b0, ..] if b0 < 0x80 => return Some((unzigzag(u32::from(b0)), 1)),
        [b0, b1, ..] if b1 < 0x80 => {
            return Some((unzigzag(u32::from(b0 & 0x7f) | (u32::from(b1) << 7)), 2));
        }
        _ => {}
    }
    let mut raw = 0u32;
    for (i, &b) in bytes.iter().take(VARINT32_BYTES_MAX).enumerate() {
        raw |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let value = (raw >> 1) as i32 ^ -((raw & 1) as i32);
            return Some((value, i + 1));
        }
    }
    None
}

/// Writes `value` zigzag-encoded as a varint of exactly `width` bytes (non-minimal encodings
/// are legal in Kafka's format). `value`'s zigzag form must fit in `7 * width` bits.
fn put_varint32(out: &mut Vec<u8>, value: i32, width: usize) {
    let mut raw = ((value << 1) ^ (value >> 31)) as u32;
    for _ in 1..width {
        out.push((raw & 0x7f) as u8 | 0x80);
        raw >>= 7;
    }
    assert!(raw < 0x80, "varint of {value} does not fit {width} bytes");
    out.push(raw as u8);
}

/// Bytes of `value`'s shortest zigzag varint.
fn varint32_bytes(value: i32) -> usize {
    let raw = ((value << 1) ^ (value >> 31)) as u32;
    (32 - raw.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Smallest record with offset delta `offset_delta` (null key, empty value, no headers).
fn record_bytes_min(offset_delta: i32) -> usize {
    1 + RECORD_BODY_BYTES_MIN - 1 + varint32_bytes(offset_delta)
}

/// Appends one v2 record of exactly `bytes` bytes (length prefix included): null key, no
/// headers, a value of `fill` bytes padding it out. `bytes >= record_bytes_min(offset_delta)`.
fn put_test_record(out: &mut Vec<u8>, bytes: usize, offset_delta: i32, fill: u8) {
    // attributes, timestamp delta, offset delta, key length -1, header count.
    let fixed = 4 + varint32_bytes(offset_delta);
    // Length prefix and value length share one width; the smallest that fits wins.
    let (width, value) = (1..=VARINT32_BYTES_MAX)
        .find_map(|w| {
            let value = bytes.checked_sub(fixed + 2 * w)?;
            let fits = |v: usize| v < (1usize << (7 * w - 1));
            (fits(value) && fits(fixed + w + value)).then_some((w, value))
        })
        .expect("record size out of range");
    put_varint32(out, (fixed + width + value) as i32, width);
    out.push(0); // attributes
    put_varint32(out, 0, 1); // timestamp delta
    put_varint32(out, offset_delta, varint32_bytes(offset_delta));
    put_varint32(out, -1, 1); // null key
    put_varint32(out, value as i32, width);
    out.resize(out.len() + value, fill);
    put_varint32(out, 0, 1); // no headers
}

/// Writes base_offset and partition_leader_epoch into the first 16 bytes of a batch.
pub fn patch_header(prefix: &mut [u8], base_offset: i64, leader_epoch: i32) {
    prefix[0..8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Builds a valid uncompressed v2 batch of `records` records whose encoding takes
/// `payload_bytes` after the header, split evenly (null keys, values of `fill` bytes, no
/// headers). `payload_bytes` is raised to the smallest the records fit in (7 bytes each for
/// fewer than 64 records), so tiny sizes still give a valid batch. Meant for tests and
/// benches.
pub fn build_test_batch(
    records: i32,
    payload_bytes: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    fill: u8,
) -> Vec<u8> {
    assert!(records >= 1);
    let count = records as usize;
    let floor: usize = (0..records).map(record_bytes_min).sum();
    let payload_bytes = payload_bytes.max(floor);
    let total = BATCH_HEADER_BYTES + payload_bytes;
    let mut buf = Vec::with_capacity(total);
    buf.resize(BATCH_HEADER_BYTES, 0);
    // Even shares, the remainder to the first records; a share below a record's minimum
    // takes the minimum and the last record gives the difference back.
    let mut left = payload_bytes;
    let mut remaining_min = floor;
    for i in 0..records {
        remaining_min -= record_bytes_min(i);
        let share = payload_bytes / count + usize::from((i as usize) < payload_bytes % count);
        let bytes = if i == records - 1 {
            left
        } else {
            share.max(record_bytes_min(i)).min(left - remaining_min)
        };
        put_test_record(&mut buf, bytes, i, fill);
        left -= bytes;
    }
    assert_eq!(buf.len(), total);
    let header = BatchHeader {
        base_offset: 0.into(),
        batch_length: ((total - BATCH_LENGTH_PREFIX_BYTES) as i32).into(),
        partition_leader_epoch: 0.into(),
        magic: MAGIC_V2,
        crc: 0.into(),
        attributes: 0.into(),
        last_offset_delta: (records - 1).into(),
        base_timestamp: base_timestamp.into(),
        max_timestamp: max_timestamp.into(),
        producer_id: NO_PRODUCER_ID.into(),
        producer_epoch: (-1).into(),
        base_sequence: (-1).into(),
        records_count: records.into(),
    };
    buf[..BATCH_HEADER_BYTES].copy_from_slice(header.as_bytes());
    let crc = batch_crc(&buf);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_values() {
        // The catalogue check value of CRC-32/ISCSI, and RFC 3720's 32 bytes of zeros.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b""), 0);
        // Every length up to a few folding blocks, against a bitwise reference.
        let data: Vec<u8> = (0..1100u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in (0..data.len()).step_by(7) {
            assert_eq!(
                crc32c(&data[..len]),
                crc32c_bitwise(&data[..len]),
                "length {len}"
            );
        }
    }

    fn crc32c_bitwise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn header_fields_round_trip() {
        let b = build_test_batch(5, 100, 1_000, 1_004, 0xAB);
        let (h, total) = validate_batch(&b, 1 << 20, true).unwrap();
        assert_eq!(total, b.len());
        assert_eq!(h.records_count(), 5);
        assert_eq!(h.last_offset_delta(), 4);
        assert_eq!(h.base_timestamp(), 1_000);
        assert_eq!(h.max_timestamp(), 1_004);
        assert_eq!(h.producer_id(), -1);
        assert!(!h.is_transactional() && !h.is_control());
    }

    #[test]
    fn patch_keeps_crc_valid() {
        let mut b = build_test_batch(3, 10, 0, 0, 1);
        patch_header(&mut b, 42, 7);
        let (h, _) = validate_batch(&b, 1 << 20, true).unwrap();
        assert_eq!(h.base_offset(), 42);
        assert_eq!(h.leader_epoch(), 7);
        assert_eq!(h.last_offset(), 44);
    }

    #[test]
    fn rejects_flipped_bit_bad_magic_and_short_input() {
        let b = build_test_batch(1, 50, 0, 0, 9);
        let mut flipped = b.clone();
        flipped[70] ^= 0x10;
        assert!(matches!(
            validate_batch(&flipped, 1 << 20, true),
            Err(BatchError::BadCrc { .. })
        ));
        let mut magic = b.clone();
        magic[16] = 1;
        assert!(matches!(
            validate_batch(&magic, 1 << 20, true),
            Err(BatchError::BadMagic { magic: 1 })
        ));
        assert!(matches!(
            validate_batch(&b[..30], 1 << 20, true),
            Err(BatchError::ShortHeader { .. })
        ));
        assert!(matches!(
            validate_batch(&b[..80], 1 << 20, true),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate_batch(&b, 64, true),
            Err(BatchError::TooLarge { .. })
        ));
    }

    /// `batch` with records_count and last_offset_delta rewritten (consistently with each
    /// other) and its CRC fixed up: a well-formed batch whose count lies.
    pub(crate) fn with_claimed_count(mut batch: Vec<u8>, claimed: i32) -> Vec<u8> {
        batch[23..27].copy_from_slice(&(claimed - 1).to_be_bytes());
        batch[57..61].copy_from_slice(&claimed.to_be_bytes());
        let crc = batch_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    fn with_compression(mut batch: Vec<u8>, codec: i16) -> Vec<u8> {
        batch[21..23].copy_from_slice(&codec.to_be_bytes());
        let crc = batch_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn test_batches_hold_exactly_their_records() {
        for records in [1, 2, 3, 63, 64, 65, 200, 9000] {
            for payload in [0, 1, 7, 100, 127, 128, 129, 8191, 8192, 70_000] {
                let b = build_test_batch(records, payload, 0, 0, 0xFF);
                assert_eq!(
                    count_records(&b[BATCH_HEADER_BYTES..]),
                    Ok(records as u32),
                    "{records} records in {payload} bytes"
                );
                assert!(b.len() >= BATCH_HEADER_BYTES + payload);
                validate_batch(&b, u32::MAX >> 4, true).unwrap();
            }
        }
        // Exact size whenever the records fit.
        assert_eq!(build_test_batch(3, 100, 0, 0, 1).len(), 161);
        assert_eq!(build_test_batch(1, 1 << 20, 0, 0, 1).len(), 61 + (1 << 20));
    }

    #[test]
    fn rejects_a_count_above_the_records() {
        // The first batch: claims 2^31-1 records, holds one (header consistent).
        let b = with_claimed_count(build_test_batch(1, 50, 0, 0, 1), i32::MAX);
        assert_eq!(
            validate_batch(&b, 1 << 20, true).unwrap_err(),
            BatchError::RecordCountMismatch {
                records_count: i32::MAX,
                found: 1
            }
        );
        // A leader's copy is taken as stored.
        assert!(validate_batch(&b, 1 << 20, false).is_ok());
    }

    #[test]
    fn rejects_a_count_below_the_records() {
        // The second batch: claims 1 record, holds 3.
        let b = with_claimed_count(build_test_batch(3, 60, 0, 0, 1), 1);
        assert_eq!(
            validate_batch(&b, 1 << 20, true).unwrap_err(),
            BatchError::RecordCountMismatch {
                records_count: 1,
                found: 3
            }
        );
        assert!(validate_batch(&b, 1 << 20, false).is_ok());
    }

    #[test]
    fn rejects_records_that_do_not_fill_the_batch() {
        let good = build_test_batch(2, 40, 0, 0, 1);
        // The first record's length prefix grown by one: the second runs past the end.
        let mut overrun = good.clone();
        overrun[BATCH_HEADER_BYTES] += 2;
        let crc = batch_crc(&overrun);
        overrun[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batch(&overrun, 1 << 20, true),
            Err(BatchError::BadRecordLength { record: 1, .. })
        ));
        // A negative length, a length below the smallest record, an unterminated varint.
        for prefix in [[0x01u8, 0, 0, 0, 0], [0x02, 0, 0, 0, 0], [0xff; 5]] {
            let mut bad = good.clone();
            bad[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + 5].copy_from_slice(&prefix);
            let crc = batch_crc(&bad);
            bad[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(
                matches!(
                    validate_batch(&bad, 1 << 20, true),
                    Err(BatchError::BadRecordLength { record: 0, .. })
                ),
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn compressed_batches_are_checked_by_header_only() {
        // The records of a compressed batch are not decompressed: a header that is
        // consistent passes whatever the payload, an inconsistent one does not.
        let filler = with_compression(build_test_batch(1, 50, 0, 0, 1), 4);
        assert!(validate_batch(&with_claimed_count(filler.clone(), 1000), 1 << 20, true).is_ok());
        let mut inconsistent = filler;
        inconsistent[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = batch_crc(&inconsistent);
        inconsistent[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_batch(&inconsistent, 1 << 20, true).unwrap_err(),
            BatchError::BadRecordCount {
                records_count: 5,
                last_offset_delta: 0
            }
        );
        let zero = with_claimed_count(build_test_batch(1, 10, 0, 0, 1), 0);
        assert!(matches!(
            validate_batch(&zero, 1 << 20, true),
            Err(BatchError::BadRecordCount { .. })
        ));
    }

    fn producer_options(log_append_time_ms: Option<i64>) -> ValidateOptions {
        ValidateOptions {
            max_batch_bytes: 1 << 20,
            strict_count: true,
            log_append_time_ms,
        }
    }

    #[test]
    fn crc32c_combine_matches_one_pass() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0, 1, 40, 61, 1024, 2999, 3000] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_combine(crc32c(a), crc32c(b), b.len()), crc32c(&data));
        }
    }

    #[test]
    fn validated_batch_refuses_a_bad_crc_in_its_one_pass() {
        let good = Bytes::from(build_test_batch(3, 200, 5, 7, 1));
        for stamp in [None, Some(1_000)] {
            let before = batch_crc_passes();
            let v = ValidatedBatch::new(&good, 0, producer_options(stamp)).unwrap();
            assert_eq!(batch_crc_passes() - before, 1, "one CRC pass per batch");
            assert_eq!((v.len(), v.records_count()), (good.len(), 3));
            let mut flipped = good.to_vec();
            flipped[100] ^= 0x01;
            let flipped = Bytes::from(flipped);
            assert!(matches!(
                ValidatedBatch::new(&flipped, 0, producer_options(stamp)),
                Err(BatchError::BadCrc { .. })
            ));
        }
        // The batch at an offset of a longer record set; a lying count is refused too.
        let two = Bytes::from([good.to_vec(), good.to_vec()].concat());
        let second = ValidatedBatch::new(&two, good.len(), producer_options(None)).unwrap();
        assert_eq!(second.bytes(), &good);
        let lying = Bytes::from(with_claimed_count(good.to_vec(), 9));
        assert!(matches!(
            ValidatedBatch::new(&lying, 0, producer_options(None)),
            Err(BatchError::RecordCountMismatch { .. })
        ));
    }

    #[test]
    fn log_append_time_stamp_has_a_valid_crc_and_the_append_time() {
        let received = Bytes::from(build_test_batch(4, 300, 100, 103, 2));
        let v = ValidatedBatch::new(&received, 0, producer_options(Some(9_999))).unwrap();
        assert!(v.is_log_append_time());
        assert_eq!(v.max_timestamp(), 9_999);
        // The request's bytes are untouched; the stored copy carries the stamp.
        assert_eq!(v.bytes(), &received);
        let stored = v.to_stored(40, 3);
        let (h, total) = validate_batch(&stored, 1 << 20, true).unwrap();
        assert_eq!(total, received.len());
        assert!(h.is_log_append_time());
        assert_eq!((h.base_timestamp(), h.max_timestamp()), (100, 9_999));
        assert_eq!((h.base_offset(), h.leader_epoch()), (40, 3));
        assert_eq!(h.crc(), batch_crc(&stored));
        assert_eq!(
            &stored[BATCH_HEADER_BYTES..],
            &received[BATCH_HEADER_BYTES..]
        );
        // Other attribute bits survive the stamp.
        let compressed = Bytes::from(with_compression(build_test_batch(1, 50, 0, 0, 1), 2));
        let v = ValidatedBatch::new(&compressed, 0, producer_options(Some(1))).unwrap();
        let stored = v.to_stored(0, 0);
        let (h, _) = validate_batch(&stored, 1 << 20, true).unwrap();
        assert_eq!(h.compression(), 2);
        assert!(h.is_log_append_time());
    }

    #[test]
    fn attribute_bits() {
        let mut b = build_test_batch(1, 0, 0, 0, 0);
        b[21..23].copy_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL | 2).to_be_bytes());
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_transactional() && h.is_control());
        assert_eq!(h.compression(), 2);
    }
}
