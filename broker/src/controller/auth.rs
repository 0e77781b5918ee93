//! Rpc peer authentication: every rpc connection opens with a handshake in which both ends
//! prove they hold the cluster secret (HMAC-SHA256 over fresh nonces; the secret never
//! crosses the wire), and every frame after it carries a MAC under a per-connection key, so a
//! process that can reach the rpc port but lacks the secret can neither join the quorum nor
//! inject a raft message or a proposal into an authenticated connection.
//!
//! Handshake (fixed sizes, before any frame; `HANDSHAKE_TIMEOUT` for the whole of it):
//! 1. server -> client `HELLO`: magic, version, the server's node id, a 32-byte nonce `ns`.
//! 2. client -> server `PROOF`: the client's node id, a 32-byte nonce `nc`, and
//!    `HMAC(secret, "client" | ns | nc | client id | server id)`. The server checks the MAC
//!    (in constant time) and that the client is another voter; otherwise it closes.
//! 3. server -> client `ACCEPT`: `HMAC(secret, "server" | nc | ns | server id | client id)`.
//!    The client checks it (and that the server is the voter it dialled) or closes.
//!
//! Then each direction has its own key, `HMAC(secret, "c2s"|"s2c" | ns | nc)`, and each frame
//! carries `HMAC(key, sequence number | frame)`: a replayed, reordered, altered or injected
//! frame fails the check and closes the connection.
//!
//! Owns: the secret (loaded once, never logged), the handshake, frame MACs.
//! Does not own: confidentiality (the traffic is not encrypted) or identity beyond "holds the
//! cluster secret"; both come with mTLS (issue 17).
//! Without a configured secret the same handshake runs with an empty key: it authenticates
//! nothing (the broker warns at start-up in cluster mode) but keeps one protocol, and a node
//! with a secret refuses one without.
//!
//! Cost: two HMACs per frame (~1 µs for a heartbeat-sized frame; ~2 ms per MiB of raft
//! append), on the control thread only, at ~5 frames/s on an idle cluster.

use std::path::Path;
use std::time::Duration;

use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted: 128 bits (e.g. `openssl rand -hex 32 > secret`).
pub const SECRET_BYTES_MIN: usize = 16;
/// Longest secret file read (a secret, not a document).
pub const SECRET_BYTES_MAX: usize = 4096;
/// Nonce length: 256 bits from the OS CSPRNG.
pub const NONCE_BYTES: usize = 32;
/// HMAC-SHA256 output.
pub const MAC_BYTES: usize = 32;
/// The whole handshake must finish within this long, or the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const MAGIC: [u8; 8] = *b"SLUICERP";
const VERSION: u8 = 1;
/// magic, version, server node id, server nonce.
pub const HELLO_BYTES: usize = MAGIC.len() + 1 + 4 + NONCE_BYTES;
/// client node id, client nonce, client MAC.
pub const PROOF_BYTES: usize = 4 + NONCE_BYTES + MAC_BYTES;
/// server MAC.
pub const ACCEPT_BYTES: usize = MAC_BYTES;

/// The cluster secret. Its `Debug` never prints the bytes.
#[derive(Clone, Default)]
pub struct ClusterSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.key.len())
    }
}

impl ClusterSecret {
    /// No secret: the handshake runs with an empty key (authenticates nothing).
    pub fn none() -> ClusterSecret {
        ClusterSecret::default()
    }

    pub fn is_set(&self) -> bool {
        !self.key.is_empty()
    }

    /// The secret in `path`: its bytes, without trailing whitespace (a final newline), at
    /// least `SECRET_BYTES_MIN` of them.
    pub fn load(path: &Path) -> Result<ClusterSecret, String> {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "reading the cluster secret file {}: {e} (create one with `openssl rand -hex 32 > {}` and give every node the same file)",
                path.display(),
                path.display()
            )
        })?;
        if bytes.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "the cluster secret file {} holds {} bytes; a secret is {SECRET_BYTES_MIN}..={SECRET_BYTES_MAX} bytes",
                path.display(),
                bytes.len()
            ));
        }
        let secret = ClusterSecret::from_bytes(bytes.trim_ascii_end())
            .map_err(|e| format!("the cluster secret file {}: {e}", path.display()))?;
        warn_if_readable_by_others(path);
        Ok(secret)
    }

    /// A secret from its bytes (tests, and `load`).
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterSecret, String> {
        if bytes.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "a cluster secret needs at least {SECRET_BYTES_MIN} bytes, got {} (create one with `openssl rand -hex 32`)",
                bytes.len()
            ));
        }
        Ok(ClusterSecret {
            key: bytes.to_vec(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("rpc handshake i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("rpc handshake not finished within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("not a sluice rpc peer (bad magic or version {version})")]
    Protocol { version: u8 },
    #[error("the peer's proof is wrong: it does not hold this node's cluster secret")]
    BadProof,
    #[error("node {node} is not another voter of this quorum")]
    NotAVoter { node: i32 },
    #[error("dialled node {expected} but node {got} answered")]
    WrongNode { expected: i32, got: i32 },
}

/// Server side: runs the handshake on an accepted connection. Ok: the peer's node id (another
/// voter) and the connection's frame MACs.
pub async fn accept(
    stream: &TcpStream,
    secret: &ClusterSecret,
    me: i32,
    voters: &[i32],
) -> Result<(i32, FrameMacs), AuthError> {
    let run = async {
        let server_nonce = nonce()?;
        let mut hello = Vec::with_capacity(HELLO_BYTES);
        hello.extend_from_slice(&MAGIC);
        hello.push(VERSION);
        hello.extend_from_slice(&me.to_be_bytes());
        hello.extend_from_slice(&server_nonce);
        write(stream, hello).await?;
        let proof = read(stream, PROOF_BYTES).await?;
        let peer = i32::from_be_bytes(proof[..4].try_into().expect("4 bytes"));
        let client_nonce: [u8; NONCE_BYTES] =
            proof[4..4 + NONCE_BYTES].try_into().expect("nonce bytes");
        let expected = client_proof(secret, &server_nonce, &client_nonce, peer, me);
        if expected.verify_slice(&proof[4 + NONCE_BYTES..]).is_err() {
            return Err(AuthError::BadProof);
        }
        if peer == me || !voters.contains(&peer) {
            return Err(AuthError::NotAVoter { node: peer });
        }
        let accept = server_proof(secret, &server_nonce, &client_nonce, me, peer);
        write(stream, accept.finalize().into_bytes().to_vec()).await?;
        Ok((
            peer,
            FrameMacs::new(secret, &server_nonce, &client_nonce, Side::Server),
        ))
    };
    compio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| AuthError::Timeout)?
}

/// Client side: runs the handshake on a connection to voter `peer`.
pub async fn connect(
    stream: &TcpStream,
    secret: &ClusterSecret,
    me: i32,
    peer: i32,
) -> Result<FrameMacs, AuthError> {
    let run = async {
        let hello = read(stream, HELLO_BYTES).await?;
        if hello[..MAGIC.len()] != MAGIC || hello[MAGIC.len()] != VERSION {
            return Err(AuthError::Protocol {
                version: hello[MAGIC.len()],
            });
        }
        let at = MAGIC.len() + 1;
        let server = i32::from_be_bytes(hello[at..at + 4].try_into().expect("4 bytes"));
        let server_nonce: [u8; NONCE_BYTES] = hello[at + 4..].try_into().expect("nonce bytes");
        if server != peer {
            return Err(AuthError::WrongNode {
                expected: peer,
                got: server,
            });
        }
        let client_nonce = nonce()?;
        let mut proof = Vec::with_capacity(PROOF_BYTES);
        proof.extend_from_slice(&me.to_be_bytes());
        proof.extend_from_slice(&client_nonce);
        proof.extend_from_slice(
            &client_proof(secret, &server_nonce, &client_nonce, me, server)
                .finalize()
                .into_bytes(),
        );
        write(stream, proof).await?;
        let accept = read(stream, ACCEPT_BYTES).await?;
        let expected = server_proof(secret, &server_nonce, &client_nonce, server, me);
        if expected.verify_slice(&accept).is_err() {
            return Err(AuthError::BadProof);
        }
        Ok(FrameMacs::new(
            secret,
            &server_nonce,
            &client_nonce,
            Side::Client,
        ))
    };
    compio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| AuthError::Timeout)?
}

/// One connection's frame MACs: a key and a sequence number per direction.
pub struct FrameMacs {
    pub send: SendMac,
    pub receive: ReceiveMac,
}

/// MACs of the frames this end sends.
pub struct SendMac {
    key: [u8; MAC_BYTES],
    next: u64,
}

/// Checks the MACs of the frames this end receives.
pub struct ReceiveMac {
    key: [u8; MAC_BYTES],
    next: u64,
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

impl FrameMacs {
    fn new(
        secret: &ClusterSecret,
        server_nonce: &[u8; NONCE_BYTES],
        client_nonce: &[u8; NONCE_BYTES],
        side: Side,
    ) -> FrameMacs {
        let key = |label: &[u8]| -> [u8; MAC_BYTES] {
            keyed(&secret.key, &[label, server_nonce, client_nonce])
                .finalize()
                .into_bytes()
                .into()
        };
        let (c2s, s2c) = (key(b"sluice-rpc-v1 c2s"), key(b"sluice-rpc-v1 s2c"));
        let (send, receive) = match side {
            Side::Client => (c2s, s2c),
            Side::Server => (s2c, c2s),
        };
        FrameMacs {
            send: SendMac { key: send, next: 0 },
            receive: ReceiveMac {
                key: receive,
                next: 0,
            },
        }
    }
}

impl SendMac {
    /// The MAC of the next frame sent (`frame`: everything before the MAC).
    pub fn seal(&mut self, frame: &[u8]) -> [u8; MAC_BYTES] {
        let tag = keyed(&self.key, &[&self.next.to_be_bytes(), frame]);
        self.next += 1;
        tag.finalize().into_bytes().into()
    }
}

impl ReceiveMac {
    /// Whether `tag` is the MAC of the next frame received.
    pub fn open(&mut self, frame: &[u8], tag: &[u8]) -> bool {
        let expected = keyed(&self.key, &[&self.next.to_be_bytes(), frame]);
        self.next += 1;
        expected.verify_slice(tag).is_ok()
    }
}

fn client_proof(
    secret: &ClusterSecret,
    server_nonce: &[u8; NONCE_BYTES],
    client_nonce: &[u8; NONCE_BYTES],
    client: i32,
    server: i32,
) -> HmacSha256 {
    keyed(
        &secret.key,
        &[
            b"sluice-rpc-v1 client",
            server_nonce,
            client_nonce,
            &client.to_be_bytes(),
            &server.to_be_bytes(),
        ],
    )
}

fn server_proof(
    secret: &ClusterSecret,
    server_nonce: &[u8; NONCE_BYTES],
    client_nonce: &[u8; NONCE_BYTES],
    server: i32,
    client: i32,
) -> HmacSha256 {
    keyed(
        &secret.key,
        &[
            b"sluice-rpc-v1 server",
            client_nonce,
            server_nonce,
            &server.to_be_bytes(),
            &client.to_be_bytes(),
        ],
    )
}

/// HMAC-SHA256 keyed with `key` over `parts`: `finalize` to send it, `verify_slice` (constant
/// time) to check one received.
fn keyed(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m
}

fn nonce() -> std::io::Result<[u8; NONCE_BYTES]> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(std::io::Error::other)?;
    Ok(n)
}

async fn read(stream: &TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut s: &TcpStream = stream;
    let BufResult(r, buf) = s.read_exact(Vec::with_capacity(n).slice(0..n)).await;
    r?;
    Ok(buf.into_inner())
}

async fn write(stream: &TcpStream, bytes: Vec<u8>) -> std::io::Result<()> {
    let mut s: &TcpStream = stream;
    s.write_all(bytes).await.0
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(target: "broker::controller", path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the cluster secret file is readable by group or others; chmod 600 it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::from_bytes(s.as_bytes()).unwrap()
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_the_bytes() {
        assert!(ClusterSecret::from_bytes(b"short").is_err());
        let s = secret("0123456789abcdef0123");
        assert_eq!(format!("{s:?}"), "ClusterSecret(20 bytes)");
    }

    #[test]
    fn secret_file_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let loaded = ClusterSecret::load(&path).unwrap();
        assert_eq!(loaded.key, b"0123456789abcdef0123");
        std::fs::write(&path, "tiny\n").unwrap();
        assert!(ClusterSecret::load(&path).unwrap_err().contains("at least"));
        assert!(ClusterSecret::load(&dir.path().join("missing")).is_err());
    }

    fn handshake(
        server_secret: ClusterSecret,
        client_secret: ClusterSecret,
        client_id: i32,
    ) -> (Result<i32, AuthError>, Result<(), AuthError>) {
        compio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let server = compio::runtime::spawn(async move {
                    let (stream, _) = listener.accept().await.unwrap();
                    let r = accept(&stream, &server_secret, 0, &[0, 1, 2]).await;
                    r.map(|(peer, mut macs)| {
                        // Frame MACs agree with the client's (checked below).
                        let tag = macs.send.seal(b"to the client");
                        (peer, tag)
                    })
                });
                let stream = TcpStream::connect(addr).await.unwrap();
                let client = connect(&stream, &client_secret, client_id, 0).await;
                drop(stream);
                let server = server.await.unwrap();
                match (server, client) {
                    (Ok((peer, tag)), Ok(mut macs)) => {
                        assert!(macs.receive.open(b"to the client", &tag));
                        (Ok(peer), Ok(()))
                    }
                    (s, c) => (s.map(|(p, _)| p), c.map(|_| ())),
                }
            })
    }

    #[test]
    fn same_secret_authenticates_both_sides() {
        let (server, client) = handshake(
            secret("the cluster secret"),
            secret("the cluster secret"),
            2,
        );
        assert_eq!(server.unwrap(), 2);
        client.unwrap();
    }

    #[test]
    fn wrong_or_missing_secret_is_refused() {
        let (server, client) = handshake(
            secret("the cluster secret"),
            secret("another cluster secret"),
            1,
        );
        assert!(matches!(server, Err(AuthError::BadProof)), "{server:?}");
        assert!(client.is_err());
        let (server, _) = handshake(secret("the cluster secret"), ClusterSecret::none(), 1);
        assert!(matches!(server, Err(AuthError::BadProof)), "{server:?}");
    }

    #[test]
    fn non_voters_are_refused() {
        let s = || secret("the cluster secret");
        let (server, _) = handshake(s(), s(), 7);
        assert!(matches!(server, Err(AuthError::NotAVoter { node: 7 })));
        let (server, _) = handshake(s(), s(), 0);
        assert!(matches!(server, Err(AuthError::NotAVoter { node: 0 })));
    }

    #[test]
    fn frame_macs_refuse_replayed_altered_and_reordered_frames() {
        let s = secret("the cluster secret");
        let (ns, nc) = ([1u8; NONCE_BYTES], [2u8; NONCE_BYTES]);
        let mut client = FrameMacs::new(&s, &ns, &nc, Side::Client);
        let server = || FrameMacs::new(&s, &ns, &nc, Side::Server).receive;
        let first = client.send.seal(b"one");
        let second = client.send.seal(b"two");
        let mut receive = server();
        assert!(receive.open(b"one", &first));
        assert!(!receive.open(b"one", &first), "a replay fails");
        assert!(!server().open(b"two", &second), "out of order fails");
        assert!(!server().open(b"onE", &first), "an altered frame fails");
        // A client's own MACs do not verify as the server's (per-direction keys).
        let mut other = FrameMacs::new(&s, &ns, &nc, Side::Client).receive;
        assert!(!other.open(b"one", &first));
    }
}
