//! Kafka framing: `[i32 size][request header][body]` in, `[i32 size][response header][body]`
//! out. Splitting frames is pure (no I/O) so it can be tested and fuzzed alone.
//!
//! Owns: the size prefix, splitting a request frame off a read buffer ([`split_frame`]), the
//! fixed request-header prefix ([`header_prefix`]), bounds on a response frame's size and its
//! correlation id ([`response_frame_bytes`], [`response_correlation_id`]).
//! Does not own: reading sockets (each runtime's connection does; `blocking::read_frame` for
//! std::io), limits (callers pass theirs: the broker's `kafka.frame_bytes_max`, a client's
//! largest answer).
//! Invariants: an incomplete frame is not an error; a negative or oversized size, or a frame
//! too short for its fixed prefix, is ([`FrameError`], a small `Copy` enum) and closes the
//! connection.

use bytes::{Buf, Bytes, BytesMut};

/// Size prefix of every frame.
pub const SIZE_PREFIX_BYTES: usize = 4;
/// api_key (2) + api_version (2) + correlation_id (4): present in every request header.
pub const HEADER_PREFIX_BYTES: usize = 8;
/// correlation_id (4): present in every response header.
pub const RESPONSE_HEADER_PREFIX_BYTES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is negative")]
    NegativeSize { size: i32 },
    #[error("frame of {size} bytes exceeds the limit of {max} (kafka.frame_bytes_max)")]
    TooLarge { size: u32, max: u32 },
    #[error("frame of {size} bytes is shorter than a request header")]
    TooShort { size: u32 },
}

/// A response size prefix out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("response frame of {size} bytes (accepted: {RESPONSE_HEADER_PREFIX_BYTES}..={max})")]
pub struct ResponseSizeError {
    pub size: i32,
    pub max: usize,
}

/// The fixed prefix of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Takes one complete frame (without its size prefix) off the front of `buf`.
/// `Ok(None)`: more bytes needed; `need` is set to the total bytes the frame requires.
pub fn split_frame(
    buf: &mut BytesMut,
    max: u32,
    need: &mut usize,
) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < SIZE_PREFIX_BYTES {
        *need = SIZE_PREFIX_BYTES;
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(FrameError::NegativeSize { size });
    }
    let size = size as u32;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if (size as usize) < HEADER_PREFIX_BYTES {
        return Err(FrameError::TooShort { size });
    }
    let total = SIZE_PREFIX_BYTES + size as usize;
    if buf.len() < total {
        *need = total;
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(SIZE_PREFIX_BYTES);
    Ok(Some(frame.freeze()))
}

/// Reads the fixed header prefix (the frame is at least `HEADER_PREFIX_BYTES` long).
pub fn header_prefix(frame: &[u8]) -> HeaderPrefix {
    assert!(frame.len() >= HEADER_PREFIX_BYTES);
    HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    }
}

/// The body length a response's size prefix announces, if it is at least a response header
/// and at most `max`.
pub fn response_frame_bytes(size: i32, max: usize) -> Result<usize, ResponseSizeError> {
    match usize::try_from(size) {
        Ok(s) if (RESPONSE_HEADER_PREFIX_BYTES..=max).contains(&s) => Ok(s),
        _ => Err(ResponseSizeError { size, max }),
    }
}

/// The correlation id of a response frame (without its size prefix); `None` if too short.
pub fn response_correlation_id(frame: &[u8]) -> Option<i32> {
    let prefix: [u8; 4] = frame.get(..RESPONSE_HEADER_PREFIX_BYTES)?.try_into().ok()?;
    Some(i32::from_be_bytes(prefix))
}

/// The correlation id of an encoded request frame (size prefix included); `None` if too short.
pub fn request_correlation_id(frame: &[u8]) -> Option<i32> {
    let at = SIZE_PREFIX_BYTES + 4;
    let prefix: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
    Some(i32::from_be_bytes(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use proptest::prelude::*;

    #[test]
    fn splits_complete_frames_only() {
        let mut buf = BytesMut::new();
        let mut need = 0;
        assert_eq!(split_frame(&mut buf, 100, &mut need), Ok(None));
        assert_eq!(need, 4);
        buf.put_i32(8);
        buf.put_slice(&[0, 18, 0, 3, 0, 0]);
        assert_eq!(split_frame(&mut buf, 100, &mut need), Ok(None));
        assert_eq!(need, 12);
        buf.put_slice(&[0, 7, 1]);
        let frame = split_frame(&mut buf, 100, &mut need).unwrap().unwrap();
        assert_eq!(
            header_prefix(&frame),
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            }
        );
        assert_eq!(buf.as_ref(), &[1]);
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut need = 0;
        let mut b = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut b, 100, &mut need),
            Err(FrameError::NegativeSize { .. })
        ));
        let mut b = BytesMut::from(&101i32.to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut b, 100, &mut need),
            Err(FrameError::TooLarge { .. })
        ));
        let mut b = BytesMut::from(&3i32.to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut b, 100, &mut need),
            Err(FrameError::TooShort { .. })
        ));
    }

    #[test]
    fn response_sizes_are_bounded() {
        assert!(response_frame_bytes(-1, 100).is_err());
        assert!(response_frame_bytes(3, 100).is_err());
        assert_eq!(response_frame_bytes(4, 100), Ok(4));
        assert_eq!(response_frame_bytes(100, 100), Ok(100));
        assert!(response_frame_bytes(101, 100).is_err());
        assert_eq!(response_correlation_id(&[0, 0, 1, 2, 9]), Some(258));
        assert_eq!(response_correlation_id(&[0, 0, 1]), None);
        assert_eq!(
            request_correlation_id(&[0, 0, 0, 8, 0, 3, 0, 1, 0, 0, 0, 7]),
            Some(7)
        );
        assert_eq!(request_correlation_id(&[0, 0, 0, 8, 0, 3, 0, 1, 0]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Framing random bytes never panics and never yields a frame shorter than a header.
        #[test]
        fn framing(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 8u32..1024) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut need = 0;
            while let Ok(Some(frame)) = split_frame(&mut buf, max, &mut need) {
                prop_assert!(frame.len() >= 8 && frame.len() <= max as usize);
                let _ = header_prefix(&frame);
            }
        }

        /// Frames written back to back split into the same frames, however they arrive.
        #[test]
        fn split_frames_round_trip(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 8..40), 1..5),
            cut in 0usize..200,
        ) {
            let mut wire = Vec::new();
            for body in &bodies {
                wire.extend_from_slice(&(body.len() as i32).to_be_bytes());
                wire.extend_from_slice(body);
            }
            let cut = cut.min(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            let mut need = 0;
            while let Some(frame) = split_frame(&mut buf, 64, &mut need).unwrap() {
                got.push(frame.to_vec());
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(frame) = split_frame(&mut buf, 64, &mut need).unwrap() {
                got.push(frame.to_vec());
            }
            prop_assert_eq!(got, bodies);
            prop_assert!(buf.is_empty());
        }
    }
}
