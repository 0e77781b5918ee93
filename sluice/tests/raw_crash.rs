//! kill -9 under acks=all load: every acknowledged record is there after the restart, and
//! nothing after the acknowledged ones is corrupt.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Broker, RawClient, batches, record_batch};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

#[test]
fn acknowledged_durable_writes_survive_kill_9() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("crash"))
            .with_num_partitions(2)
            .with_replication_factor(1),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    // Two producers (one per partition) append acks=all batches of 5 until the connection
    // dies; each records the end offset of every acknowledged batch.
    let acked: Arc<Mutex<[i64; 2]>> = Arc::new(Mutex::new([0, 0]));
    let stop = Arc::new(AtomicBool::new(false));
    let (progress_tx, progress_rx) = std::sync::mpsc::channel::<()>();
    let mut threads = Vec::new();
    for partition in 0..2 {
        let addr = broker.addr().to_string();
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        let progress = progress_tx.clone();
        threads.push(std::thread::spawn(move || {
            let mut c = RawClient::connect(&addr);
            while !stop.load(Ordering::Relaxed) {
                let req = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(10_000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(name("crash"))
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(partition)
                                    .with_records(Some(record_batch(5, None))),
                            ]),
                    ]);
                let id = c.send(ApiKey::Produce, 9, &req);
                let Some(mut frame) = c.recv_frame() else {
                    break;
                };
                let header: ResponseHeader = kafka_protocol::protocol::Decodable::decode(
                    &mut frame,
                    ApiKey::Produce.response_header_version(9),
                )
                .unwrap();
                assert_eq!(header.correlation_id, id);
                let resp: ProduceResponse =
                    kafka_protocol::protocol::Decodable::decode(&mut frame, 9).unwrap();
                let p = &resp.responses[0].partition_responses[0];
                assert_eq!(p.error_code, 0);
                acked.lock().unwrap()[partition as usize] = p.base_offset + 5;
                let _ = progress.send(());
            }
        }));
    }
    // Kill once both producers have some acknowledged writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    drop(progress_tx);
    while acked.lock().unwrap().iter().any(|a| *a < 50) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            progress_rx.recv_timeout(left).is_ok(),
            "producers made no progress"
        );
    }
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = *acked.lock().unwrap();
    broker.start_again();
    let mut c = broker.connect();
    for partition in 0..2 {
        let mut offset = 0;
        loop {
            let req = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(name("crash"))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]);
            let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.error_code, 0);
            let got = batches(p.records.clone().unwrap_or_default());
            if got.is_empty() {
                assert!(
                    p.high_watermark >= acked[partition as usize],
                    "partition {partition}: hw {} < acknowledged {}",
                    p.high_watermark,
                    acked[partition as usize]
                );
                break;
            }
            for (base, count) in got {
                assert_eq!(base, offset, "batches are contiguous");
                offset = base + i64::from(count);
            }
        }
        assert!(
            offset >= acked[partition as usize],
            "partition {partition}: read to {offset}, acknowledged {}",
            acked[partition as usize]
        );
    }
    broker.stop();
}

#[test]
fn restart_right_after_sigkill_gets_its_port_back() {
    // After SIGKILL the dead process's io_uring is torn down asynchronously and its pending
    // accept holds the old listener for a moment; start-up must wait that out.
    let mut broker = Broker::start();
    for _ in 0..5 {
        broker.kill();
        broker.start_again();
        let resp: ApiVersionsResponse =
            broker
                .connect()
                .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert_eq!(resp.error_code, 0);
    }
    broker.stop();
}
