//! The control thread's transport: the rpc listener and one outgoing link per other voter.
//!
//! Every connection first runs the handshake of `auth.rs` (both ends prove the cluster
//! secret); a peer that fails it is closed with a log line. Then frames: `u32` big-endian
//! length of what follows, a kind byte, the payload, and the frame's MAC (`auth::FrameMacs`).
//! Kinds, link -> listener: a raft message (raft-rs protobuf bytes) or a proposal forwarded
//! to the quorum leader (a `ControlEntry`'s bytes); listener -> link: the refusal of a
//! forwarded proposal (a UTF-8 reason).
//! Boundary checks (here, on the connection's task, before anything reaches the control
//! loop): a raft message must decode and name the authenticated peer as its sender; a
//! proposal must decode as a `ControlEntry` and pass `validate_forwarded` (its proposer is
//! the peer, its node ids voters, its names legal), or it is refused with a `Reject` frame and
//! a log line and never proposed.
//! Invariants: sending never blocks the control loop (a full or broken link drops the frame;
//! raft resends and every proposer retries on its own timer); queues are bounded; a frame
//! over `RPC_FRAME_BYTES_MAX`, or one whose MAC fails, closes the connection; at most
//! `RPC_CONNECTIONS_MAX` incoming connections at once.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use replication::quorum::RaftMessage;

use super::auth::{self, ClusterSecret, MAC_BYTES, ReceiveMac, SendMac};
use super::entry::ControlEntry;

/// Largest rpc frame accepted: the largest raft message (a snapshot), its kind and MAC.
pub const RPC_FRAME_BYTES_MAX: usize = replication::quorum::MESSAGE_BYTES_MAX + 1 + MAC_BYTES;
/// Frames queued per outgoing link before new ones are dropped.
pub const LINK_QUEUE_CAPACITY: usize = 1024;
/// Frames queued from all incoming connections to the control loop.
pub const INBOUND_QUEUE_CAPACITY: usize = 4096;
/// Incoming rpc connections open at once (each voter keeps one to every other; a few more
/// cover reconnects). More are closed at accept.
pub const RPC_CONNECTIONS_MAX: usize = 64;
/// Wait between connection attempts to a voter that is down.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// Length prefix and kind byte.
const FRAME_HEADER_BYTES: usize = 5;
const _: () = assert!(FRAME_HEADER_BYTES + MAC_BYTES < RPC_FRAME_BYTES_MAX);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Raft = 1,
    Propose = 2,
    Reject = 3,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Raft),
            2 => Some(FrameKind::Propose),
            3 => Some(FrameKind::Reject),
            _ => None,
        }
    }
}

/// Who this node is on the rpc port: its id, the voters, the secret.
pub struct RpcAuth {
    pub me: i32,
    pub voters: Vec<i32>,
    pub secret: ClusterSecret,
}

/// What an authenticated peer sent, checked at the boundary.
#[derive(Debug)]
pub enum Inbound {
    /// A raft message whose sender is the peer.
    Raft(RaftMessage),
    /// A valid proposal of the peer's own, forwarded to this node as the quorum leader.
    Propose { from: i32, entry: ControlEntry },
}

/// A frame to send: its MAC is filled in by the connection that sends it (`seal`).
pub fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let len = 1 + payload.len() + MAC_BYTES;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    out.resize(4 + len, 0);
    out
}

fn seal(macs: &mut SendMac, frame: &mut [u8]) {
    let at = frame.len() - MAC_BYTES;
    let tag = macs.seal(&frame[..at]);
    frame[at..].copy_from_slice(&tag);
}

/// An outgoing link to one voter: queue frames with `send`.
#[derive(Clone)]
pub struct Link {
    tx: async_channel::Sender<Vec<u8>>,
}

impl Link {
    /// Starts the link's task on the current (control thread's) runtime.
    pub fn start(node: i32, addr: String, auth: Rc<RpcAuth>) -> Link {
        let (tx, rx) = async_channel::bounded(LINK_QUEUE_CAPACITY);
        compio::runtime::spawn(link_loop(node, addr, rx, auth)).detach();
        Link { tx }
    }

    pub fn send(&self, frame: Vec<u8>) {
        let _ = self.tx.try_send(frame);
    }
}

async fn link_loop(
    node: i32,
    addr: String,
    rx: async_channel::Receiver<Vec<u8>>,
    auth: Rc<RpcAuth>,
) {
    let mut warned = false;
    loop {
        let connected = match connect(&addr).await {
            Ok(s) => auth::connect(&s, &auth.secret, auth.me, node)
                .await
                .map(|macs| (s, macs))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (stream, macs) = match connected {
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
        let stream = Rc::new(stream);
        let mut send_mac = macs.send;
        let answers = compio::runtime::spawn(read_answers(node, Rc::clone(&stream), macs.receive));
        let mut s: &TcpStream = &stream;
        loop {
            let Ok(mut frame) = rx.recv().await else {
                return;
            };
            seal(&mut send_mac, &mut frame);
            let BufResult(result, _) = s.write_all(frame).await;
            if let Err(error) = result {
                tracing::warn!(target: "broker::controller", node, %addr, %error, "rpc link broke; reconnecting");
                warned = true;
                break;
            }
        }
        let _ = s.shutdown().await;
        drop(answers);
    }
}

/// Reads what a voter answers on our link (refused proposals) and logs it.
async fn read_answers(node: i32, stream: Rc<TcpStream>, mut macs: ReceiveMac) {
    loop {
        match read_frame(&stream, &mut macs).await {
            Ok((FrameKind::Reject, reason)) => {
                tracing::warn!(target: "broker::controller", node, reason = %String::from_utf8_lossy(&reason), "a forwarded proposal was refused");
            }
            Ok((kind, _)) => {
                tracing::warn!(target: "broker::controller", node, ?kind, "unexpected rpc frame on a link; ignored");
            }
            Err(_) => return,
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

/// Accepts rpc connections, authenticates each, and forwards its checked frames to `inbound`.
pub async fn accept_loop(
    listener: TcpListener,
    inbound: async_channel::Sender<Inbound>,
    auth: Rc<RpcAuth>,
) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if open.get() >= RPC_CONNECTIONS_MAX {
                    tracing::warn!(target: "broker::controller", %peer, open = open.get(), "too many rpc connections; closing a new one");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let inbound = inbound.clone();
                let auth = Rc::clone(&auth);
                let open = Rc::clone(&open);
                open.set(open.get() + 1);
                compio::runtime::spawn(async move {
                    match serve_peer(&stream, &inbound, &auth, peer).await {
                        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                            tracing::warn!(target: "broker::controller", %peer, %error, "bad rpc frame; connection closed");
                        }
                        Err(error) => {
                            tracing::debug!(target: "broker::controller", %peer, %error, "rpc connection closed");
                        }
                        Ok(()) => {}
                    }
                    open.set(open.get() - 1);
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

async fn serve_peer(
    stream: &TcpStream,
    inbound: &async_channel::Sender<Inbound>,
    auth: &RpcAuth,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let (peer, mut macs) = match auth::accept(stream, &auth.secret, auth.me, &auth.voters).await {
        Ok(x) => x,
        Err(error) => {
            tracing::warn!(target: "broker::controller", %addr, %error, "rpc peer failed authentication; connection closed");
            return Ok(());
        }
    };
    tracing::debug!(target: "broker::controller", %addr, peer, "rpc peer authenticated");
    loop {
        let (kind, body) = read_frame(stream, &mut macs.receive).await?;
        let checked = match kind {
            FrameKind::Raft => check_raft(peer, &body),
            FrameKind::Propose => check_proposal(peer, &body, &auth.voters),
            FrameKind::Reject => Err("a reject frame sent to the listener".to_string()),
        };
        match checked {
            Ok(item) => {
                if inbound.send(item).await.is_err() {
                    return Ok(());
                }
            }
            Err(reason) => {
                tracing::warn!(target: "broker::controller", %addr, peer, ?kind, %reason, "rpc frame refused");
                if kind == FrameKind::Propose {
                    let mut answer = frame(FrameKind::Reject, reason.as_bytes());
                    seal(&mut macs.send, &mut answer);
                    let mut s: &TcpStream = stream;
                    s.write_all(answer).await.0?;
                }
            }
        }
    }
}

fn check_raft(peer: i32, body: &[u8]) -> Result<Inbound, String> {
    let message = replication::quorum::decode_message(body).map_err(|e| e.to_string())?;
    let sender = u64::try_from(peer).map(|p| p + 1).unwrap_or(0);
    if message.from != sender {
        return Err(format!(
            "raft message from raft id {} on node {peer}'s connection",
            message.from
        ));
    }
    Ok(Inbound::Raft(message))
}

fn check_proposal(peer: i32, body: &[u8], voters: &[i32]) -> Result<Inbound, String> {
    let entry = ControlEntry::decode(body).map_err(|e| format!("undecodable entry: {e}"))?;
    entry
        .validate_forwarded(peer, voters)
        .map_err(|e| format!("invalid entry: {e}"))?;
    Ok(Inbound::Propose { from: peer, entry })
}

/// One frame: its kind and payload, after its MAC checked out.
async fn read_frame(
    stream: &TcpStream,
    macs: &mut ReceiveMac,
) -> std::io::Result<(FrameKind, Vec<u8>)> {
    let mut s: &TcpStream = stream;
    let BufResult(r, prefix) = s.read_exact(Vec::with_capacity(4).slice(0..4)).await;
    r?;
    let prefix = prefix.into_inner();
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if !(1 + MAC_BYTES..=RPC_FRAME_BYTES_MAX).contains(&len) {
        return Err(invalid(format!("bad rpc frame length {len}")));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&prefix);
    let BufResult(r, buf) = s.read_exact(buf.slice(4..4 + len)).await;
    r?;
    let mut buf = buf.into_inner();
    let at = buf.len() - MAC_BYTES;
    if !macs.open(&buf[..at], &buf[at..]) {
        return Err(invalid(
            "rpc frame failed its MAC (altered, replayed or injected)".into(),
        ));
    }
    let Some(kind) = FrameKind::from_byte(buf[4]) else {
        return Err(invalid(format!("unknown rpc frame kind {}", buf[4])));
    };
    buf.truncate(at);
    buf.drain(..FRAME_HEADER_BYTES);
    Ok((kind, buf))
}

/// A frame the peer should never have sent: closes the connection with a warning.
fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
