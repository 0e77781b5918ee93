//! The broker's memory under hostile or bursty clients (issue 12, item 8).
//!
//! `kafka.queued_max_request_bytes`: before it, request bytes in flight had no global cap (16
//! clients each holding a 90 MiB partial frame made the broker hold 1.5 GB).
//!
//! - `partial_frames_wait_for_the_budget_and_rss_stays_bounded`: two shards sharing a 32 MiB
//!   budget (16 MiB each); 16 connections each announce a 15 MiB frame and send 8 MiB of it.
//!   One per shard is granted and read; the others stop being read (the broker's /metrics
//!   shows them waiting), the broker's RSS grows by less than the budget plus slack (by 128
//!   MiB without the cap), a frame over `frame_bytes_max` is refused with a closed connection,
//!   a small request is answered meanwhile, and another client's large request waits and is
//!   answered once the stalled connections close.

//! - `rss_levels_off_over_connection_churn`: rounds of 2,000 connections, each making one
//!   request, opened and all closed again. RSS after the last round stays within 24 MiB of
//!   RSS after the first (before the fix every idle connection held a 64 KiB read buffer and
//!   RSS crept up round after round, 44 -> 323 MB over 14 rounds of 5,000).

mod common;

use common::metrics::{http_addr, scrape};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::Broker;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const MIB: usize = 1024 * 1024;
/// The node's budget, over the harness's 2 shards.
const BUDGET_BYTES: usize = 32 * MIB;
const SHARDS: usize = 2;
/// kafka.frame_bytes_max: each shard's share.
const FRAME_BYTES_MAX: usize = BUDGET_BYTES / SHARDS;
/// Each stalled client's frame, and how much of it it sends.
const FRAME_BYTES: usize = 15 * MIB;
const SENT_BYTES: usize = 8 * MIB;
const CLIENTS: usize = 16;
/// Allocator and bookkeeping slack on top of the budget for the RSS bound.
const RSS_SLACK_BYTES: usize = 32 * MIB;
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn partial_frames_wait_for_the_budget_and_rss_stays_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nframe_bytes_max = {FRAME_BYTES_MAX}\nqueued_max_request_bytes = {BUDGET_BYTES}\n"
        ),
    )
    .expect("config");
    let broker = Broker::start_with(&[
        "--config",
        config.to_str().expect("utf-8"),
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let http = http_addr(&broker);
    let rss_before = rss_bytes(broker.pid());

    // Each client: the size prefix of a large frame, then part of its body. A stalled
    // connection's writes block once the kernel's buffers are full; shutting the socket down
    // (below) ends them.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut s = TcpStream::connect(broker.addr()).expect("connect");
        let closer = s.try_clone().expect("clone");
        let writer = thread::spawn(move || {
            let mut bytes = (FRAME_BYTES as i32).to_be_bytes().to_vec();
            // A Produce v9 header prefix; the body is never complete, so never decoded.
            bytes.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, i as u8]);
            bytes.resize(4 + SENT_BYTES, 0x5a);
            let _ = s.write_all(&bytes);
        });
        clients.push((closer, writer));
    }
    let pid = broker.pid();
    let rss_bounded = || {
        let grown = rss_bytes(pid).saturating_sub(rss_before);
        assert!(
            grown < BUDGET_BYTES + RSS_SLACK_BYTES,
            "RSS grew by {} MiB with a budget of {} MiB",
            grown / MIB,
            BUDGET_BYTES / MIB
        );
        grown
    };
    wait_until(
        &http,
        "one frame per shard granted, the others waiting",
        |m| {
            // Checked while the clients send, too: without a cap the broker reads it all.
            rss_bounded();
            let queued = gauge(m, "sluice_request_bytes_queued");
            let waiting = gauge(m, "sluice_requests_waiting_for_budget");
            if queued == (SHARDS * FRAME_BYTES) as f64 && waiting == (CLIENTS - SHARDS) as f64 {
                Ok(())
            } else {
                Err(format!("queued {queued}, waiting {waiting}"))
            }
        },
    );
    let grown = rss_bounded();
    eprintln!(
        "RSS grew by {} MiB with {CLIENTS} clients holding {} MiB partial frames",
        grown / MIB,
        SENT_BYTES / MIB
    );

    // A frame over frame_bytes_max (which config validation keeps <= the budget) is refused,
    // as Kafka does.
    let mut huge = TcpStream::connect(broker.addr()).expect("connect");
    huge.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    huge.write_all(&((FRAME_BYTES_MAX + 1) as i32).to_be_bytes())
        .expect("send a size prefix");
    assert_eq!(
        huge.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "an oversized frame closes the connection"
    );

    // Small requests are not counted (a follower's fetch must never wait behind produce
    // requests that wait for it): answered while the budget is full.
    let mut small = broker.connect();
    let _: ApiVersionsResponse = small.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    // A large request from another client queues behind the stalled ones (its Produce frame is
    // over 64 KiB) and is answered once they close.
    let mut other = broker.connect();
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("budget-probe")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(common::record_batch_sized(4, 64 * 1024, None))),
                ]),
        ]);
    let correlation_id = other.send(ApiKey::Produce, 9, &produce);
    wait_until(&http, "the large request waits too", |m| {
        match gauge(m, "sluice_requests_waiting_for_budget") {
            w if w == (CLIENTS - SHARDS + 1) as f64 => Ok(()),
            w => Err(format!("waiting {w}")),
        }
    });
    for (closer, writer) in clients {
        let _ = closer.shutdown(Shutdown::Both);
        writer.join().expect("writer thread");
    }
    let answer: ProduceResponse = other.recv(ApiKey::Produce, 9, correlation_id);
    assert_eq!(answer.responses.len(), 1, "the produce is answered");
    wait_until(&http, "the budget returned", |m| {
        match gauge(m, "sluice_request_bytes_queued") {
            0.0 => Ok(()),
            q => Err(format!("queued {q}")),
        }
    });
    broker.stop();
}

const CHURN_CONNECTIONS: usize = 2_000;
const CHURN_ROUNDS: usize = 6;
/// How much RSS may still grow between the first round and the last.
const CHURN_GROWTH_BYTES_MAX: usize = 24 * MIB;

#[test]
fn rss_levels_off_over_connection_churn() {
    let broker = Broker::start_with(&["--http-addr", "127.0.0.1:0"]);
    let http = http_addr(&broker);
    let api_versions = [0u8, 18, 0, 0, 0, 0, 0, 7, 0, 4, b't', b'e', b's', b't'];
    let mut frame = (api_versions.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&api_versions);
    let mut after_round = Vec::new();
    for _ in 0..CHURN_ROUNDS {
        let mut conns = Vec::with_capacity(CHURN_CONNECTIONS);
        for _ in 0..CHURN_CONNECTIONS {
            let mut s = TcpStream::connect(broker.addr()).expect("connect");
            s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            s.write_all(&frame).expect("send ApiVersions");
            conns.push(s);
        }
        for s in &mut conns {
            let mut size = [0u8; 4];
            s.read_exact(&mut size).expect("ApiVersions answer");
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            s.read_exact(&mut body).expect("ApiVersions body");
        }
        drop(conns);
        wait_until(&http, "every connection closed", |m| {
            match gauge(m, "sluice_connections") {
                0.0 => Ok(()),
                n => Err(format!("{n} open")),
            }
        });
        after_round.push(rss_bytes(broker.pid()));
    }
    let mib: Vec<usize> = after_round.iter().map(|b| b / MIB).collect();
    eprintln!("RSS after each round of {CHURN_CONNECTIONS} connections (MiB): {mib:?}");
    let grown = after_round[CHURN_ROUNDS - 1].saturating_sub(after_round[0]);
    assert!(
        grown < CHURN_GROWTH_BYTES_MAX,
        "RSS kept growing over connection churn (MiB after each round: {mib:?})"
    );
    broker.stop();
}

fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// The sum of a gauge over shards; NaN when the broker does not export it.
fn gauge(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    let mut found = samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, v)| *v)
        .peekable();
    if found.peek().is_none() {
        return f64::NAN;
    }
    found.sum()
}

fn wait_until(
    http: &str,
    what: &str,
    mut check: impl FnMut(&BTreeMap<String, f64>) -> Result<(), String>,
) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last = match check(&scrape(http)) {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {TIMEOUT:?}; last: {last}"
        );
        thread::sleep(Duration::from_millis(50)); // polling a condition with a deadline
    }
}
