//! One client connection on its shard: a reader that splits frames and dispatches requests,
//! and a writer that sends responses strictly in request order.
//!
//! Requests are handled concurrently (a client pipelines up to max.in.flight), each as a
//! task whose handle goes into a bounded FIFO; the writer awaits the handles in order. When
//! the FIFO is full the reader stops reading (back-pressure). Produce requests take their
//! per-partition append tickets before the next request is read, so appends keep the order
//! the client sent them in.
//! Every large frame (`POOLED_FRAME_BYTES_MIN` or more) holds a grant of its size from the
//! shard's request budget (`request_budget.rs`, `kafka.queued_max_request_bytes`) from before
//! its body is read (and its buffer allocated) until its answer is ready; while no grant is
//! given the reader does not read. Smaller frames are not counted: they are cut from the
//! connection's read buffer (at most `READ_CHUNK_BYTES` plus one frame per read) and bounded
//! by the in-flight FIFO, and exempting them means a replica's fetch (small) is never stuck
//! behind acks=all produce requests that wait for that very fetch.
//! Closing: on EOF, a bad frame, a write error or broker shutdown the reader stops; the
//! writer then finishes the responses already queued (in-flight requests complete) and the
//! socket is closed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use engine::sync::{Notified, Notify};
use futures_util::future::{Either, select};

use crate::handlers::{self, Reply};
use crate::net::frame::{self, split_frame};
use crate::runtime::Shard;
use crate::runtime::frame_pool::POOLED_FRAME_BYTES_MIN;
use crate::runtime::request_budget::Grant;

/// Largest read issued for small frames: a busy connection's reads grow to this.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A new connection's read buffer, and its first reads. An idle connection keeps a read
/// pending with its buffer, so this is most of what an idle connection costs: with 64 KiB,
/// 5,000 connections held 320 MB of heap, and after they closed glibc kept most of it
/// (docs/internals/broker.md, "Memory per connection").
pub const READ_CHUNK_BYTES_MIN: usize = 4 * 1024;
const _: () = assert!(READ_CHUNK_BYTES_MIN <= READ_CHUNK_BYTES);

type Pending = compio::runtime::JoinHandle<Reply>;

/// Serves `stream` until the client leaves, misbehaves, or the broker stops.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(target: "broker::net", %peer, error = %e, "set_nodelay failed");
    }
    shard.shared.metrics[shard.id.0]
        .connections_accepted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stream = Rc::new(stream);
    let state = Rc::new(ConnState {
        closed: Cell::new(false),
        closed_notify: Rc::new(Notify::new()),
    });
    let (tx, rx) = async_channel::bounded::<(Pending, Option<Grant>)>(
        shard.config().kafka.in_flight_per_connection_max,
    );
    let writer = compio::runtime::spawn(write_loop(
        Rc::clone(&shard),
        Rc::clone(&stream),
        rx,
        Rc::clone(&state),
        peer,
    ));
    read_loop(&shard, &stream, tx, &state, peer).await;
    // The sender is gone: the writer drains what is queued and returns.
    let _ = writer.await;
    tracing::debug!(target: "broker::net", %peer, shard = shard.id.0, "connection closed");
}

struct ConnState {
    closed: Cell<bool>,
    closed_notify: Rc<Notify>,
}

impl ConnState {
    fn close(&self) {
        self.closed.set(true);
        self.closed_notify.notify_all();
    }
}

async fn read_loop(
    shard: &Rc<Shard>,
    stream: &Rc<TcpStream>,
    tx: async_channel::Sender<(Pending, Option<Grant>)>,
    state: &Rc<ConnState>,
    peer: SocketAddr,
) {
    let max = shard.config().kafka.frame_bytes_max;
    let mut buf = BytesMut::new();
    // Doubles each time a read fills it, up to READ_CHUNK_BYTES.
    let mut chunk = READ_CHUNK_BYTES_MIN;
    let mut need = frame::SIZE_PREFIX_BYTES;
    // Registered once per connection (not per read): each registration is a waker in a list
    // shared by every connection of the shard.
    let mut stopping = shard.stop_notify.notified();
    let mut closed = state.closed_notify.notified();
    loop {
        loop {
            match split_frame(&mut buf, max, &mut need) {
                Ok(Some(frame)) => {
                    if !deliver(shard, frame, None, peer, &tx).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(target: "broker::net", %peer, error = %e, "bad frame, closing connection");
                    return;
                }
            }
        }
        if shard.is_stopping() || state.closed.get() {
            return;
        }
        if need >= frame::SIZE_PREFIX_BYTES + POOLED_FRAME_BYTES_MIN {
            // A large frame (its size is known and checked): read the rest of it straight
            // into a reused buffer, whose pages are already mapped (frame_pool.rs).
            let frame_bytes = need - frame::SIZE_PREFIX_BYTES;
            // The budget first: a frame waits here, unread and unallocated, for its bytes.
            let Some(grant) = acquire(shard, frame_bytes, &mut stopping, &mut closed).await else {
                return;
            };
            let mut frame_buf = shard.frame_pool.take(frame_bytes);
            frame_buf.extend_from_slice(&buf[frame::SIZE_PREFIX_BYTES..]);
            buf.clear();
            need = frame::SIZE_PREFIX_BYTES;
            let have = frame_buf.len();
            let stop = select(&mut stopping, &mut closed);
            let read = Box::pin(async {
                let mut s: &TcpStream = stream;
                s.read_exact(frame_buf.slice(have..frame_bytes)).await
            });
            match select(read, stop).await {
                Either::Left((BufResult(Ok(()), b), _)) => frame_buf = b.into_inner(),
                Either::Left((BufResult(Err(e), _), _)) => {
                    tracing::debug!(target: "broker::net", %peer, error = %e, "read failed");
                    return;
                }
                Either::Right(_) => return,
            }
            debug_assert_eq!(frame_buf.len(), frame_bytes);
            if !deliver(
                shard,
                shard.frame_pool.freeze(frame_buf),
                Some(grant),
                peer,
                &tx,
            )
            .await
            {
                return;
            }
            continue;
        }
        let want = need.saturating_sub(buf.len()).max(chunk);
        buf.reserve(want);
        let stop = select(&mut stopping, &mut closed);
        let read = Box::pin(async {
            let mut s: &TcpStream = stream;
            s.append(buf).await
        });
        match select(read, stop).await {
            Either::Left((BufResult(Ok(0), _), _)) => return,
            Either::Left((BufResult(Ok(n), b), _)) => {
                if n >= chunk {
                    chunk = (chunk * 2).min(READ_CHUNK_BYTES);
                }
                buf = b;
            }
            Either::Left((BufResult(Err(e), _), _)) => {
                tracing::debug!(target: "broker::net", %peer, error = %e, "read failed");
                return;
            }
            Either::Right(_) => return,
        }
    }
}

/// A grant of `bytes` from the shard's request budget; None when the broker stops or the
/// connection is closed while waiting.
async fn acquire(
    shard: &Rc<Shard>,
    bytes: usize,
    stopping: &mut Notified,
    closed: &mut Notified,
) -> Option<Grant> {
    let budget = &shard.request_budget;
    let ask = budget.acquire(bytes);
    match select(ask, select(stopping, closed)).await {
        Either::Left((grant, _)) => Some(grant),
        Either::Right(_) => None,
    }
}

/// Dispatches one request frame and queues its reply (with the frame's grant, returned once
/// the reply is ready); false when the connection must close.
async fn deliver(
    shard: &Rc<Shard>,
    frame: Bytes,
    grant: Option<Grant>,
    peer: SocketAddr,
    tx: &async_channel::Sender<(Pending, Option<Grant>)>,
) -> bool {
    match handlers::dispatch(shard, frame, peer).await {
        Some(pending) => tx.send((pending, grant)).await.is_ok(),
        None => false,
    }
}

fn chunk_len(chunk: &crate::net::sendfile::OutChunk) -> usize {
    match chunk {
        crate::net::sendfile::OutChunk::Bytes(b) => b.len(),
        crate::net::sendfile::OutChunk::File(f) => f.len as usize,
    }
}

async fn write_loop(
    shard: Rc<Shard>,
    stream: Rc<TcpStream>,
    rx: async_channel::Receiver<(Pending, Option<Grant>)>,
    state: Rc<ConnState>,
    peer: SocketAddr,
) {
    let mut s: &TcpStream = &stream;
    let mut splicer = crate::net::sendfile::Splicer::default();
    let metrics = &shard.shared.metrics[shard.id.0];
    while let Ok((pending, grant)) = rx.recv().await {
        let reply = pending.await;
        // The request is handled: its bytes leave the budget (its reply is not counted, as
        // in Kafka).
        drop(grant);
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(target: "broker::net", %peer, error = %e, "request task failed, closing connection");
                break;
            }
        };
        if state.closed.get() {
            // Still await the rest so in-flight work completes, but send nothing.
            continue;
        }
        let result = match reply {
            Reply::None => Ok(()),
            Reply::Close(reason) => {
                tracing::warn!(target: "broker::net", %peer, %reason, "closing connection");
                state.close();
                continue;
            }
            Reply::Frame(bytes) => {
                metrics.on_response(bytes.len());
                s.write_all(bytes).await.0
            }
            Reply::Chunks(chunks) => {
                metrics.on_response(chunks.iter().map(chunk_len).sum());
                splicer.write_chunks(&stream, chunks).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(target: "broker::net", %peer, error = %e, "write failed");
            state.close();
        }
    }
    state.close();
    let _ = s.shutdown().await;
}
