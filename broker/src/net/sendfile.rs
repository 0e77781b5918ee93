//! Writing a response made of memory chunks and file ranges. File ranges go from the page
//! cache to the socket without passing through user space: io_uring splice from the segment
//! file into a per-connection pipe, then from the pipe into the socket.
//!
//! A file range carries its own descriptor (a dup of the segment's, taken on the shard that
//! owns the partition), so the range stays readable even if the segment is deleted meanwhile.
//! A range that ends early (the file was truncated) cannot be patched in a frame whose size
//! is already on the wire: the connection is closed and the client retries.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use compio::fs::pipe::{Receiver, Sender, splice};
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use kafka_wire::fetch_frame::{Chunk, FileSpan};

/// Pipe size asked for (the kernel default is 64 KiB; fewer round trips per range).
pub const PIPE_BYTES: usize = 1024 * 1024;
/// splice(2) flag: more data follows (lets TCP coalesce segments).
const SPLICE_F_MORE: u32 = 4;

/// A byte range of a file, with its own descriptor.
#[derive(Debug)]
pub struct FileRange {
    pub fd: OwnedFd,
    pub position: u64,
    pub len: u32,
}

impl FileSpan for FileRange {
    fn span_bytes(&self) -> u32 {
        self.len
    }
}

/// A piece of an outgoing response (kafka-wire's fetch-frame builder makes them).
pub type OutChunk = Chunk<FileRange>;
/// A partition's records for the fetch-frame builder: in memory or as file ranges.
pub type Records = kafka_wire::fetch_frame::Records<FileRange>;

/// Per-connection splice state (the pipe is created on first use).
#[derive(Default)]
pub struct Splicer {
    pipe: Option<(Receiver, Sender, usize)>,
}

impl Splicer {
    /// Writes `chunks` in order.
    pub async fn write_chunks(
        &mut self,
        stream: &TcpStream,
        chunks: Vec<OutChunk>,
    ) -> io::Result<()> {
        let mut s: &TcpStream = stream;
        for chunk in chunks {
            match chunk {
                OutChunk::Bytes(b) => s.write_all(b).await.0?,
                OutChunk::File(range) => self.splice_range(stream, range).await?,
            }
        }
        Ok(())
    }

    async fn splice_range(&mut self, stream: &TcpStream, range: FileRange) -> io::Result<()> {
        if self.pipe.is_none() {
            let (rx, tx) = compio::fs::pipe::anonymous().await?;
            let size = crate::sys::set_pipe_size(tx.as_fd(), PIPE_BYTES).unwrap_or(64 * 1024);
            self.pipe = Some((rx, tx, size));
        }
        let Some((rx, tx, pipe_bytes)) = &self.pipe else {
            unreachable!()
        };
        let file = crate::sys::compio_file_from_owned(range.fd);
        let mut position = range.position;
        let mut left = range.len as usize;
        while left > 0 {
            let n = splice(&file, tx, left.min(*pipe_bytes))
                .offset_in(position as i64)
                .await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file ended before the fetched range",
                ));
            }
            let mut in_pipe = n;
            while in_pipe > 0 {
                let flags = if left > n { SPLICE_F_MORE } else { 0 };
                let k = splice(rx, stream, in_pipe).flags(flags).await?;
                if k == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                in_pipe -= k;
            }
            position += n as u64;
            left -= n;
        }
        Ok(())
    }
}
