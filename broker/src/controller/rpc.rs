//! The control thread's transport: the rpc listener and one outgoing link per other voter.
//!
//! Frames: `u32` big-endian length of what follows, a kind byte, the payload. Kinds: a raft
//! message (raft-rs protobuf bytes) or a proposal forwarded to the quorum leader (a
//! `ControlEntry`'s bytes).
//! Invariants: sending never blocks the control loop (a full or broken link drops the frame;
//! raft resends and every proposer retries on its own timer); queues are bounded; a frame
//! over `RPC_FRAME_BYTES_MAX` closes the connection.

use std::net::SocketAddr;
use std::time::Duration;

use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};

/// Largest rpc frame accepted (raft appends carry batches of small entries).
pub const RPC_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Frames queued per outgoing link before new ones are dropped.
pub const LINK_QUEUE_CAPACITY: usize = 1024;
/// Frames queued from all incoming connections to the control loop.
pub const INBOUND_QUEUE_CAPACITY: usize = 4096;
/// Wait between connection attempts to a voter that is down.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Raft = 1,
    Propose = 2,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Raft),
            2 => Some(FrameKind::Propose),
            _ => None,
        }
    }
}

pub fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    out
}

/// An outgoing link to one voter: queue frames with `send`.
#[derive(Clone)]
pub struct Link {
    tx: async_channel::Sender<Vec<u8>>,
}

impl Link {
    /// Starts the link's task on the current (control thread's) runtime.
    pub fn start(node: i32, addr: String) -> Link {
        let (tx, rx) = async_channel::bounded(LINK_QUEUE_CAPACITY);
        compio::runtime::spawn(link_loop(node, addr, rx)).detach();
        Link { tx }
    }

    pub fn send(&self, frame: Vec<u8>) {
        let _ = self.tx.try_send(frame);
    }
}

async fn link_loop(node: i32, addr: String, rx: async_channel::Receiver<Vec<u8>>) {
    let mut warned = false;
    loop {
        let stream = match connect(&addr).await {
            Ok(s) => {
                if std::mem::take(&mut warned) {
                    tracing::info!(target: "broker::controller", node, %addr, "rpc link up");
                }
                s
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(target: "broker::controller", node, %addr, %error, "rpc link down; retrying");
                    warned = true;
                }
                // Frames queued while the voter is down are stale by the time it is back.
                while rx.try_recv().is_ok() {}
                compio::time::sleep(RECONNECT_BACKOFF).await;
                continue;
            }
        };
        let mut s = stream;
        loop {
            let Ok(frame) = rx.recv().await else {
                return;
            };
            let BufResult(result, _) = s.write_all(frame).await;
            if let Err(error) = result {
                tracing::warn!(target: "broker::controller", node, %addr, %error, "rpc link broke; reconnecting");
                warned = true;
                break;
            }
        }
    }
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            use std::net::ToSocketAddrs;
            addr.to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?
        }
    };
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Accepts rpc connections and forwards every frame to `inbound`.
pub async fn accept_loop(
    listener: TcpListener,
    inbound: async_channel::Sender<(FrameKind, Vec<u8>)>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let inbound = inbound.clone();
                compio::runtime::spawn(async move {
                    if let Err(error) = read_frames(stream, &inbound).await {
                        tracing::debug!(target: "broker::controller", %peer, %error, "rpc connection closed");
                    }
                })
                .detach();
            }
            Err(error) => {
                tracing::warn!(target: "broker::controller", %error, "rpc accept failed");
                compio::time::sleep(RECONNECT_BACKOFF).await;
            }
        }
    }
}

async fn read_frames(
    mut stream: TcpStream,
    inbound: &async_channel::Sender<(FrameKind, Vec<u8>)>,
) -> std::io::Result<()> {
    loop {
        let BufResult(r, header) = stream.read_exact(Vec::with_capacity(5).slice(0..5)).await;
        r?;
        let header = header.into_inner();
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 || len > RPC_FRAME_BYTES_MAX {
            return Err(std::io::Error::other(format!("bad rpc frame length {len}")));
        }
        let Some(kind) = FrameKind::from_byte(header[4]) else {
            return Err(std::io::Error::other(format!(
                "unknown rpc frame kind {}",
                header[4]
            )));
        };
        let body_len = len - 1;
        let body = if body_len == 0 {
            Vec::new()
        } else {
            let BufResult(r, body) = stream
                .read_exact(Vec::with_capacity(body_len).slice(0..body_len))
                .await;
            r?;
            body.into_inner()
        };
        if inbound.send((kind, body)).await.is_err() {
            return Ok(());
        }
    }
}
