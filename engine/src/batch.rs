//! Kafka v2 record batch headers: zero-copy views, validation, and the in-place patch.
//!
//! Owns: the 61-byte v2 header layout (big-endian), attribute bits, CRC32C checks.
//! Does not own: records inside a batch (they stay opaque, possibly compressed).
//! Invariants: a header is only trusted after [`validate_batch`] (append) or the recovery
//! scan checked length, magic and CRC; the CRC covers bytes 21.. so patching base_offset
//! and partition_leader_epoch never needs a recompute.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::{BATCH_CRC_START, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES};

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
}

/// CRC32C over bytes 21.. of a whole batch.
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32c(&batch[BATCH_CRC_START..])
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
    Ok((header, total))
}

/// Writes base_offset and partition_leader_epoch into the first 16 bytes of a batch.
pub fn patch_header(prefix: &mut [u8], base_offset: i64, leader_epoch: i32) {
    prefix[0..8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Builds a valid v2 batch with `records` dummy records of `record_bytes` payload each.
/// The records are opaque filler (not Kafka record encoding); the engine never looks inside.
/// Meant for tests and benches.
pub fn build_test_batch(
    records: i32,
    payload_bytes: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    fill: u8,
) -> Vec<u8> {
    assert!(records >= 1);
    let total = BATCH_HEADER_BYTES + payload_bytes;
    let mut buf = vec![fill; total];
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
mod tests {
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

    #[test]
    fn attribute_bits() {
        let mut b = build_test_batch(1, 0, 0, 0, 0);
        b[21..23].copy_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL | 2).to_be_bytes());
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_transactional() && h.is_control());
        assert_eq!(h.compression(), 2);
    }
}
