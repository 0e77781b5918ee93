//! The rpc port of a 3-node cluster against hostile peers (issue 12, item 7): before the fix
//! anyone who could connect had any proposal committed (~3,600 garbage entries replicated into
//! every node's metadata log).
//!
//! - `rpc_port_without_the_secret_changes_nothing`: a raw TCP client sends well-formed
//!   proposals (a CreateTopics, a registration of a node that does not exist) and garbage in
//!   the rpc framing to every node, and tries the handshake with a wrong secret. Nothing of it
//!   reaches the cluster's metadata (Kafka Metadata from every node), the nodes log the refusal,
//!   and the cluster keeps working (a topic created afterwards appears everywhere).
//! - `rpc_proposals_with_the_secret_are_checked_before_the_log`: a client holding the secret
//!   (it authenticates as a voter) forwards garbage and malformed entries to every node; each
//!   is answered with a Reject frame, none changes the metadata, no node dies.
//!
//! The handshake and frame MACs are written here again from the protocol description in
//! broker/src/controller/auth.rs (not by calling the broker's code), so the two sides check
//! each other.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::Cluster;
use hmac::{Hmac, Mac};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long the cluster may take to form, or a topic to appear everywhere (debug, 2 cores).
const TIMEOUT: Duration = Duration::from_secs(90);
/// How long a raw rpc read waits for an answer (or the close) before the test fails.
const RPC_READ_TIMEOUT: Duration = Duration::from_secs(20);
use kafka_wire::error::TOPIC_ALREADY_EXISTS;
const FRAME_RAFT: u8 = 1;
const FRAME_PROPOSE: u8 = 2;
const FRAME_REJECT: u8 = 3;

/// A proposal of a new topic, as `ControlEntry::Admin` encodes it (JSON).
fn create_topic_entry(proposer: i32, name: &str) -> String {
    format!(
        r#"{{"kind":"admin","request":{{"node":{proposer},"incarnation":1,"id":7}},"op":{{"op":"create_topics","topics":[{{"name":"{name}","id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","partitions":1,"replication_factor":1,"configs":{{}}}}]}}}}"#
    )
}

/// A registration of broker `node`, as `ControlEntry::Register` encodes it.
fn register_entry(node: i32) -> String {
    format!(
        r#"{{"kind":"register","node":{node},"incarnation":1,"host":"127.0.0.1","port":1,"rack":null,"cluster_id":"x","now_ms":1}}"#
    )
}

#[test]
fn rpc_port_without_the_secret_changes_nothing() {
    let mut cluster = Cluster::start(3);
    wait_for_brokers(&cluster);
    let mut attacks = Vec::new();
    for node in cluster.node_ids() {
        // The rpc framing before authentication existed: [u32 len][kind][payload].
        let mut attack = Vec::new();
        for payload in [
            create_topic_entry(node, "intruder"),
            register_entry(7),
            "\u{1}garbage{".to_string(),
        ] {
            attack.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
            attack.push(FRAME_PROPOSE);
            attack.extend_from_slice(payload.as_bytes());
        }
        let mut s = rpc_connect(&cluster, node);
        // Write errors (the server closing first) are fine.
        let _ = s.write_all(&attack);
        attacks.push((node, s));
    }
    fence_and_check_untouched(&mut cluster, "after-unauthenticated");
    for (node, mut s) in attacks {
        assert!(
            closed_without_accept(&mut s),
            "node {node} kept an unauthenticated rpc connection open"
        );
        // The handshake with a wrong secret.
        let mut s = rpc_connect(&cluster, node);
        let peer = (node + 1) % 3;
        let hello = read_exact(&mut s, 45).expect("HELLO");
        let proof = proof(b"not the cluster secret at all", &hello, peer, node);
        let _ = s.write_all(&proof.0);
        assert!(
            closed_without_accept(&mut s),
            "node {node} accepted a wrong secret"
        );
    }
    for node in cluster.node_ids() {
        let log = cluster.log(node);
        assert!(
            log.contains("rpc peer failed authentication"),
            "node {node} did not log the refused peer\n{}",
            common::tail(&log, 4000)
        );
    }
    cluster.stop();
}

#[test]
fn rpc_proposals_with_the_secret_are_checked_before_the_log() {
    let mut cluster = Cluster::start(3);
    wait_for_brokers(&cluster);
    let secret = std::fs::read(cluster.secret_path()).expect("read the secret");
    let secret = secret.trim_ascii_end();
    for node in cluster.node_ids() {
        let peer = (node + 1) % 3;
        let other = (node + 2) % 3;
        let mut conn = SecretClient::connect(&cluster, node, peer, secret);
        let refused = [
            "\u{1}garbage{".to_string(),
            r#"{"kind":"admin"}"#.to_string(),
            create_topic_entry(peer, "../intruder"),
            create_topic_entry(peer, "a/b"),
            register_entry(7),
            register_entry(other),
            format!(r#"{{"kind":"heartbeat","node":{other},"broker_epoch":1,"now_ms":1}}"#),
            r#"{"kind":"tick","now_ms":1}"#.to_string(),
        ];
        for payload in refused {
            conn.send(FRAME_PROPOSE, payload.as_bytes());
            let (kind, reason) = conn
                .recv()
                .unwrap_or_else(|e| panic!("node {node}: no answer to {payload}: {e}"));
            assert_eq!(
                kind, FRAME_REJECT,
                "node {node} answered {payload} with {kind}"
            );
            eprintln!(
                "node {node} refused {payload}: {}",
                String::from_utf8_lossy(&reason)
            );
        }
        // A raft message that does not decode is dropped with a log line, not answered;
        // the connection stays usable (the next proposal is still answered).
        conn.send(FRAME_RAFT, b"\xff\xff\xff not protobuf");
        conn.send(FRAME_PROPOSE, b"{}");
        assert_eq!(
            conn.recv().expect("answer after a bad raft frame").0,
            FRAME_REJECT
        );
    }
    fence_and_check_untouched(&mut cluster, "after-authenticated");
    cluster.stop();
}

/// Creates a topic through Kafka and waits until every node lists it (so everything sent
/// before was processed), then checks that nothing the attacker sent shows anywhere.
fn fence_and_check_untouched(cluster: &mut Cluster, topic: &str) {
    create_topic(cluster, topic);
    cluster.wait_until(&format!("{topic} listed by every node"), TIMEOUT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, None)?;
            let names: Vec<String> = md
                .topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect();
            if !names.iter().any(|n| n == topic) {
                return Err(format!("node {node} lists {names:?}"));
            }
            assert!(
                !names.iter().any(|n| n.contains("intruder")),
                "node {node} lists an intruder's topic: {names:?}"
            );
            let mut brokers: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
            brokers.sort_unstable();
            assert_eq!(
                brokers,
                vec![0, 1, 2],
                "node {node} lists brokers {brokers:?}"
            );
        }
        Ok(())
    });
    cluster.check_alive().expect("no node died");
}

fn wait_for_brokers(cluster: &Cluster) {
    cluster.wait_until("every node lists 3 brokers", TIMEOUT, |c| {
        for node in c.node_ids() {
            let md = c.try_metadata(node, None)?;
            if md.brokers.len() != 3 || md.controller_id.0 < 0 {
                return Err(format!(
                    "node {node}: {} brokers, controller {}",
                    md.brokers.len(),
                    md.controller_id.0
                ));
            }
        }
        Ok(())
    });
}

fn create_topic(cluster: &Cluster, topic: &str) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(1)
                .with_replication_factor(3),
        ])
        .with_timeout_ms(30_000);
    cluster.wait_until(&format!("CreateTopics {topic}"), TIMEOUT, |c| {
        let mut last = String::new();
        for node in c.node_ids() {
            let resp: CreateTopicsResponse = c.try_call(node, ApiKey::CreateTopics, 7, &req)?;
            match resp.topics[0].error_code {
                0 | TOPIC_ALREADY_EXISTS => return Ok(()),
                code => last = format!("node {node}: error {code}"),
            }
        }
        Err(last)
    });
}

fn rpc_connect(cluster: &Cluster, node: i32) -> TcpStream {
    let s = TcpStream::connect(cluster.rpc_addr(node)).expect("connect to the rpc port");
    s.set_read_timeout(Some(RPC_READ_TIMEOUT)).expect("timeout");
    s
}

/// True when the server closed the connection without sending an ACCEPT (it may have sent
/// its HELLO first). A read timeout (the server kept the connection open) is false.
fn closed_without_accept(s: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got.len() <= 45,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got.len() <= 45,
            Err(_) => return false,
        }
    }
}

fn read_exact(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m
}

/// The PROOF bytes for `hello`, and the client nonce.
fn proof(secret: &[u8], hello: &[u8], me: i32, server: i32) -> (Vec<u8>, [u8; 32]) {
    assert_eq!(&hello[..9], b"SLUICERP\x01", "magic and version");
    assert_eq!(&hello[9..13], &server.to_be_bytes(), "server id");
    let server_nonce = &hello[13..45];
    let mut client_nonce = [0u8; 32];
    client_nonce[..4].copy_from_slice(&me.to_be_bytes());
    client_nonce[4..20].copy_from_slice(&std::process::id().to_be_bytes().repeat(4));
    let mac = hmac(
        secret,
        &[
            b"sluice-rpc-v1 client",
            server_nonce,
            &client_nonce,
            &me.to_be_bytes(),
            &server.to_be_bytes(),
        ],
    )
    .finalize()
    .into_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&me.to_be_bytes());
    out.extend_from_slice(&client_nonce);
    out.extend_from_slice(&mac);
    (out, client_nonce)
}

/// An authenticated rpc connection, as voter `me`, to `node`.
struct SecretClient {
    stream: TcpStream,
    send_key: Vec<u8>,
    receive_key: Vec<u8>,
    sent: u64,
    received: u64,
}

impl SecretClient {
    fn connect(cluster: &Cluster, node: i32, me: i32, secret: &[u8]) -> SecretClient {
        let mut stream = rpc_connect(cluster, node);
        let hello = read_exact(&mut stream, 45).expect("HELLO");
        let (proof, client_nonce) = proof(secret, &hello, me, node);
        stream.write_all(&proof).expect("send PROOF");
        let accept = read_exact(&mut stream, 32).expect("ACCEPT");
        let server_nonce = &hello[13..45];
        hmac(
            secret,
            &[
                b"sluice-rpc-v1 server",
                &client_nonce,
                server_nonce,
                &node.to_be_bytes(),
                &me.to_be_bytes(),
            ],
        )
        .verify_slice(&accept)
        .expect("the server proves the secret");
        let key = |label: &[u8]| {
            hmac(secret, &[label, server_nonce, &client_nonce])
                .finalize()
                .into_bytes()
                .to_vec()
        };
        SecretClient {
            stream,
            send_key: key(b"sluice-rpc-v1 c2s"),
            receive_key: key(b"sluice-rpc-v1 s2c"),
            sent: 0,
            received: 0,
        }
    }

    fn send(&mut self, kind: u8, payload: &[u8]) {
        let mut frame = Vec::new();
        frame.extend_from_slice(&(1 + payload.len() as u32 + 32).to_be_bytes());
        frame.push(kind);
        frame.extend_from_slice(payload);
        let mac = hmac(&self.send_key, &[&self.sent.to_be_bytes(), &frame])
            .finalize()
            .into_bytes();
        self.sent += 1;
        frame.extend_from_slice(&mac);
        self.stream.write_all(&frame).expect("send a frame");
    }

    fn recv(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let prefix = read_exact(&mut self.stream, 4)?;
        let len = u32::from_be_bytes(prefix[..4].try_into().unwrap()) as usize;
        assert!((33..1 << 20).contains(&len), "answer frame length {len}");
        let body = read_exact(&mut self.stream, len)?;
        let mut framed = prefix;
        framed.extend_from_slice(&body[..len - 32]);
        hmac(&self.receive_key, &[&self.received.to_be_bytes(), &framed])
            .verify_slice(&body[len - 32..])
            .expect("the answer's MAC");
        self.received += 1;
        Ok((body[0], body[1..len - 32].to_vec()))
    }
}
