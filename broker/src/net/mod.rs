//! Networking: the Kafka listener, handing connections to shards, and per-connection I/O.
//!
//! One acceptor (on shard 0) takes every connection and hands it to the shard with the
//! fewest open connections (docs/decisions/0003-connection-placement.md). The socket moves
//! as an owned fd; from then on the connection lives on that shard only.

pub mod connection;
pub mod frame;
pub mod sendfile;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures_util::future::{Either, select};

use crate::runtime::Shard;

/// Listen backlog.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS, ...), doubled per consecutive
/// failure up to the max: out of descriptors, the pending connection stays in the backlog and
/// accept fails again at once, so retrying without a pause would spin a core.
pub const ACCEPT_BACKOFF_MIN_MS: u64 = 10;
pub const ACCEPT_BACKOFF_MAX_MS: u64 = 1_000;
/// In a run of failed accepts, one log line per this many (the first is always logged).
pub const ACCEPT_FAILURES_PER_LOG_LINE: u64 = 100;

const _: () = assert!(ACCEPT_BACKOFF_MIN_MS >= 1 && ACCEPT_BACKOFF_MIN_MS <= ACCEPT_BACKOFF_MAX_MS);

/// How long start-up retries a bind that fails with "address in use".
pub const BIND_RETRY_MS: u64 = 3000;

/// Binds the listener, retrying EADDRINUSE for `BIND_RETRY_MS`: after a SIGKILL the kernel
/// tears the dead process's io_uring down asynchronously, and its pending accept keeps the old
/// listener bound for a few tens of milliseconds after the process is reaped. A supervisor
/// restarting at once would otherwise fail half the time (tests/clients/FINDINGS.md 4). A
/// port really taken by another process still fails, after the retry window.
pub fn bind_with_retry(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(BIND_RETRY_MS);
    let mut logged = false;
    loop {
        match bind_listener(addr) {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !logged {
                    tracing::info!(target: "broker::net", %addr, "address in use; retrying for up to {BIND_RETRY_MS} ms");
                    logged = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Binds the Kafka listener (before the shards start, so a taken port fails start-up).
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts until the shard stops; each connection goes to the least-loaded shard.
pub async fn run_acceptor(shard: Rc<Shard>, listener: std::net::TcpListener) {
    let listener = match compio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(target: "broker::net", error = %e, "cannot register the listener");
            return;
        }
    };
    let mut failures = 0u64;
    loop {
        if shard.is_stopping() {
            break;
        }
        let stop = shard.stop_notify.notified();
        let accepted = match select(Box::pin(listener.accept()), stop).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have, back off, and
                // say so without flooding the log.
                failures += 1;
                if failures % ACCEPT_FAILURES_PER_LOG_LINE == 1 {
                    tracing::warn!(target: "broker::net", error = %e, failures, "accept failed; backing off (out of file descriptors? see docs/operations.md, \"Open files\")");
                }
                let shift = (failures - 1).min(16) as u32;
                let pause_ms = (ACCEPT_BACKOFF_MIN_MS << shift).min(ACCEPT_BACKOFF_MAX_MS);
                let pause = compio::time::sleep(std::time::Duration::from_millis(pause_ms));
                let stop = shard.stop_notify.notified();
                if let Either::Right(_) = select(Box::pin(pause), stop).await {
                    break;
                }
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(target: "broker::net", failures, "accepting again");
            failures = 0;
        }
        let open: usize = shard
            .shared
            .connections
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        if open >= shard.config().kafka.connections_max {
            tracing::warn!(target: "broker::net", %peer, open, "kafka.connections_max reached, closing new connection");
            drop(stream);
            continue;
        }
        let target = shard.shared.least_loaded_shard();
        shard.shared.connections[target.0].fetch_add(1, Ordering::Relaxed);
        if target == shard.id {
            spawn_connection(&shard, stream, peer);
            continue;
        }
        // Move the socket as an owned fd (dup), then drop our registration of it.
        let owned = match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => std::net::TcpStream::from(fd),
            Err(e) => {
                tracing::warn!(target: "broker::net", error = %e, "cannot hand off connection");
                shard.shared.connections[target.0].fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        drop(stream);
        let sent = shard
            .invoke_ordered(target, move |s: &Rc<Shard>| {
                match compio::net::TcpStream::from_std(owned) {
                    Ok(stream) => spawn_connection(s, stream, peer),
                    Err(e) => {
                        tracing::warn!(target: "broker::net", error = %e, "cannot adopt connection");
                        s.shared.connections[s.id.0].fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Box::pin(async {})
            })
            .await;
        drop(sent);
    }
    tracing::info!(target: "broker::net", "listener closed");
}

/// Starts serving `stream` on this shard (connection count already incremented).
pub fn spawn_connection(shard: &Rc<Shard>, stream: compio::net::TcpStream, peer: SocketAddr) {
    let shard = Rc::clone(shard);
    shard.open_connections.set(shard.open_connections.get() + 1);
    compio::runtime::spawn(async move {
        connection::serve(Rc::clone(&shard), stream, peer).await;
        shard.open_connections.set(shard.open_connections.get() - 1);
        shard.shared.connections[shard.id.0].fetch_sub(1, Ordering::Relaxed);
        shard.connection_closed.notify_all();
    })
    .detach();
}
