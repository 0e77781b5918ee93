//! Wire primitives of `__consumer_offsets` records, shared by the classic (`records.rs`) and
//! the KIP-848 (`consumer_records.rs`) decoders: a bounds-checked reader over Kafka's
//! primitive types and the decode error. Pure; depends on nothing else in `group`.
//!
//! Invariants: every read checks the bytes present first; bad input is an error, never a
//! panic.

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("record truncated")]
    Truncated,
    #[error("record has no key")]
    MissingKey,
    #[error("unknown key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unknown value version {0}")]
    UnknownValueVersion(i16),
    #[error("invalid length {0}")]
    InvalidLength(i32),
    #[error("string is not UTF-8")]
    InvalidUtf8,
    #[error("trailing bytes after value")]
    TrailingBytes,
    #[error("record batch does not decode")]
    InvalidBatch,
}

/// A bounds-checked cursor over Kafka's wire primitives, shared by the classic and the
/// KIP-848 record decoders.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], RecordDecodeError> {
        if self.bytes.len() < n {
            return Err(RecordDecodeError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn i16(&mut self) -> Result<i16, RecordDecodeError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(super) fn i32(&mut self) -> Result<i32, RecordDecodeError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(super) fn i64(&mut self) -> Result<i64, RecordDecodeError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(super) fn string(&mut self) -> Result<String, RecordDecodeError> {
        self.nullable_string()?
            .ok_or(RecordDecodeError::InvalidLength(-1))
    }

    pub(super) fn nullable_string(&mut self) -> Result<Option<String>, RecordDecodeError> {
        let len = self.i16()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(RecordDecodeError::InvalidLength(i32::from(len)));
        }
        let raw = self.take(len as usize)?;
        let s = std::str::from_utf8(raw).map_err(|_| RecordDecodeError::InvalidUtf8)?;
        Ok(Some(s.to_owned()))
    }

    pub(super) fn bytes(&mut self) -> Result<Bytes, RecordDecodeError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(Bytes::new());
        }
        if len < 0 {
            return Err(RecordDecodeError::InvalidLength(len));
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }

    pub(super) fn finish(&self) -> Result<(), RecordDecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(RecordDecodeError::TrailingBytes)
        }
    }

    pub(super) fn uvarint(&mut self) -> Result<u64, RecordDecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordDecodeError::InvalidLength(-1))
    }

    /// A compact array's element count (0 encodes null, read as empty).
    pub(super) fn compact_len(&mut self) -> Result<usize, RecordDecodeError> {
        let n = self.uvarint()?;
        let n = usize::try_from(n.saturating_sub(1))
            .map_err(|_| RecordDecodeError::InvalidLength(-1))?;
        if n > self.bytes.len() {
            return Err(RecordDecodeError::Truncated);
        }
        Ok(n)
    }

    pub(super) fn compact_nullable(&mut self) -> Result<Option<String>, RecordDecodeError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let len = usize::try_from(n - 1).map_err(|_| RecordDecodeError::InvalidLength(-1))?;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| RecordDecodeError::InvalidUtf8)
    }

    /// A tagged-field section: fields this version does not know are skipped.
    pub(super) fn skip_tags(&mut self) -> Result<(), RecordDecodeError> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?)
                .map_err(|_| RecordDecodeError::InvalidLength(-1))?;
            self.take(size)?;
        }
        Ok(())
    }
}
