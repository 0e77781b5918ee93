//! Kafka's variable-length integers: unsigned LEB128 varints (compact lengths, tagged-field
//! counts) and zigzag varints (the record fields of a v2 batch: Kafka's `varint` and
//! `varlong` encode any `i32` value to the same bytes, so one `i64` form serves both).
//!
//! Owns: encoding, decoding and sizing them. Does not own: the engine's hot-path record
//! walker (engine/src/batch.rs keeps its own fixed-width 32-bit reader: engine does not depend
//! on this crate).
//! Invariants: decoding never reads past the slice and never panics; an encoding longer than
//! ten bytes is an error, a truncated one too ([`VarintError`], a small `Copy` enum).

use bytes::BufMut;

/// Longest varint of a `u64` (ceil(64 / 7)).
pub const VARINT_BYTES_MAX: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    #[error("truncated varint")]
    Truncated,
    #[error("varint longer than {VARINT_BYTES_MAX} bytes")]
    TooLong,
}

/// Appends `value` as an unsigned varint.
pub fn put_uvarint<B: BufMut>(buf: &mut B, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Bytes of `value`'s unsigned varint.
pub const fn uvarint_bytes(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    if bits == 0 { 1 } else { bits.div_ceil(7) }
}

/// Takes an unsigned varint off the front of `buf`.
pub fn get_uvarint(buf: &mut &[u8]) -> Result<u64, VarintError> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().take(VARINT_BYTES_MAX).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    if buf.len() >= VARINT_BYTES_MAX {
        Err(VarintError::TooLong)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Zigzag form: small magnitudes, positive or negative, become small unsigned values.
pub const fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub const fn unzigzag(raw: u64) -> i64 {
    (raw >> 1) as i64 ^ -((raw & 1) as i64)
}

/// Appends `value` as a zigzag varint.
pub fn put_varint<B: BufMut>(buf: &mut B, value: i64) {
    put_uvarint(buf, zigzag(value));
}

/// Bytes of `value`'s zigzag varint.
pub const fn varint_bytes(value: i64) -> usize {
    uvarint_bytes(zigzag(value))
}

/// Takes a zigzag varint off the front of `buf`.
pub fn get_varint(buf: &mut &[u8]) -> Result<i64, VarintError> {
    get_uvarint(buf).map(unzigzag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 1]),
            (300, &[0xd8, 4]),
        ];
        for &(value, bytes) in cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf, bytes, "{value}");
            assert_eq!(varint_bytes(value), bytes.len());
        }
        assert_eq!(uvarint_bytes(0), 1);
        assert_eq!(uvarint_bytes(u64::MAX), VARINT_BYTES_MAX);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(get_uvarint(&mut &[][..]), Err(VarintError::Truncated));
        assert_eq!(
            get_uvarint(&mut &[0x80, 0x80][..]),
            Err(VarintError::Truncated)
        );
        assert_eq!(get_uvarint(&mut &[0xff; 11][..]), Err(VarintError::TooLong));
    }

    proptest! {
        #[test]
        fn uvarints_round_trip(value in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, value);
            prop_assert_eq!(buf.len(), uvarint_bytes(value));
            buf.extend_from_slice(&tail);
            let mut slice = &buf[..];
            prop_assert_eq!(get_uvarint(&mut slice), Ok(value));
            prop_assert_eq!(slice, &tail[..]);
        }

        #[test]
        fn varints_round_trip(value in any::<i64>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            prop_assert_eq!(buf.len(), varint_bytes(value));
            prop_assert_eq!(get_varint(&mut &buf[..]), Ok(value));
        }

        /// i32 values encode the same as Kafka's 32-bit zigzag varint.
        #[test]
        fn i32_values_match_the_32_bit_zigzag(value in any::<i32>()) {
            let zigzag32 = ((value << 1) ^ (value >> 31)) as u32;
            prop_assert_eq!(zigzag(i64::from(value)), u64::from(zigzag32));
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut slice = &bytes[..];
            let before = slice.len();
            if get_uvarint(&mut slice).is_ok() {
                prop_assert!(slice.len() < before);
            }
        }
    }
}
