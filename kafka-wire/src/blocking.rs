//! Reading one response frame from a blocking `std::io::Read` (a `std::net::TcpStream`): the
//! one piece of socket code the blocking users (the `sluice` CLI's client, the integration
//! tests' raw client) share. No runtime: std::io only.
//!
//! Owns: reading the size prefix, bounding it, reading the body into `Bytes`.
//! Does not own: connecting, timeouts, writing (a `write_all` of an encoded frame), retries.
//! Each caller keeps its own loop: the CLI turns every failure into an `anyhow` error with
//! context, the test client panics and must also send malformed bytes on purpose.

use std::io::Read;

use bytes::Bytes;

use crate::frame::{ResponseSizeError, SIZE_PREFIX_BYTES, response_frame_bytes};

#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    #[error("reading a response: {0}")]
    Io(#[source] std::io::Error),
    #[error(transparent)]
    Size(#[from] ResponseSizeError),
}

/// Reads one response frame (without its size prefix) of at most `max` bytes.
pub fn read_frame<R: Read>(reader: &mut R, max: usize) -> Result<Bytes, ReadFrameError> {
    let mut size = [0u8; SIZE_PREFIX_BYTES];
    reader.read_exact(&mut size).map_err(ReadFrameError::Io)?;
    let size = response_frame_bytes(i32::from_be_bytes(size), max)?;
    let mut body = vec![0u8; size];
    reader.read_exact(&mut body).map_err(ReadFrameError::Io)?;
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_frame_and_bounds_its_size() {
        let mut wire: &[u8] = &[0, 0, 0, 5, 0, 0, 0, 1, 9, 0xff];
        assert_eq!(&read_frame(&mut wire, 16).unwrap()[..], &[0, 0, 0, 1, 9]);
        assert_eq!(wire, &[0xff]);
        let mut big: &[u8] = &[0, 0, 0, 17];
        assert!(matches!(
            read_frame(&mut big, 16),
            Err(ReadFrameError::Size(_))
        ));
        let mut cut: &[u8] = &[0, 0, 0, 5, 0];
        assert!(matches!(
            read_frame(&mut cut, 16),
            Err(ReadFrameError::Io(_))
        ));
    }
}
