//! Bad input: each case gets Kafka's error code or a closed connection, and the broker keeps
//! serving other connections afterwards.

mod common;

use common::{Broker, RawClient, record_batch};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Another connection still gets answers.
fn still_serving(broker: &Broker) {
    let mut c = broker.connect();
    let resp: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
}

fn produce_one(c: &mut RawClient, topic: &str, records: bytes::Bytes) -> ProducePartitionResult {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    ProducePartitionResult {
        error_code: p.error_code,
    }
}

struct ProducePartitionResult {
    error_code: i16,
}

#[test]
fn bad_frames_close_only_their_connection() {
    let broker = Broker::start();

    // Oversized: a size prefix over the 100 MiB default limit closes at once.
    let mut c = broker.connect();
    std::io::Write::write_all(&mut c.stream, &(200 * 1024 * 1024i32).to_be_bytes()).unwrap();
    assert!(c.is_closed_by_peer(), "oversized frame");
    still_serving(&broker);

    // Negative size.
    let mut c = broker.connect();
    std::io::Write::write_all(&mut c.stream, &(-5i32).to_be_bytes()).unwrap();
    assert!(c.is_closed_by_peer(), "negative size");
    still_serving(&broker);

    // Too short for a header.
    let mut c = broker.connect();
    c.send_frame(&[0, 3]);
    assert!(c.is_closed_by_peer(), "short frame");
    still_serving(&broker);

    // Unknown API key.
    let mut c = broker.connect();
    let mut frame = Vec::new();
    frame.extend_from_slice(&999i16.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    c.send_frame(&frame);
    assert!(c.is_closed_by_peer(), "unknown api key");
    still_serving(&broker);

    // A known key at an unsupported version (Produce v1 is below Kafka 4's minimum).
    let mut c = broker.connect();
    let mut frame = Vec::new();
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&1i16.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    c.send_frame(&frame);
    assert!(c.is_closed_by_peer(), "unsupported version");
    still_serving(&broker);

    // Malformed body: a Metadata v12 header followed by a truncated topic array.
    let mut c = broker.connect();
    let mut frame = Vec::new();
    frame.extend_from_slice(&3i16.to_be_bytes());
    frame.extend_from_slice(&12i16.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.push(0); // header tagged fields
    frame.push(0x7f); // compact array of 126 topics... and nothing after
    c.send_frame(&frame);
    assert!(c.is_closed_by_peer(), "malformed body");
    still_serving(&broker);

    // A Produce v9 whose topic array claims ~2^31 entries: the decoder sizes its Vec from that
    // count before reading anything (hundreds of GiB); the broker must survive it.
    let mut c = broker.connect();
    let mut frame = Vec::new();
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&9i16.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.push(0); // header tagged fields
    frame.push(0); // transactional_id: null
    frame.extend_from_slice(&1i16.to_be_bytes()); // acks
    frame.extend_from_slice(&1000i32.to_be_bytes()); // timeout
    frame.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x07]); // compact array length
    c.send_frame(&frame);
    assert!(c.is_closed_by_peer(), "huge array count");
    still_serving(&broker);

    // Garbage bytes.
    let mut c = broker.connect();
    c.send_frame(&[
        0x00, 0x12, 0x00, 0x03, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0x01,
    ]);
    assert!(c.is_closed_by_peer(), "garbage");
    still_serving(&broker);

    broker.stop();
}

#[test]
fn corrupt_batches_get_error_codes() {
    let broker = Broker::start();
    let mut c = broker.connect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("bad"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);

    // CRC mismatch -> CORRUPT_MESSAGE.
    let mut batch = record_batch(3, None).to_vec();
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    assert_eq!(produce_one(&mut c, "bad", batch.into()).error_code, 2);

    // Truncated batch -> CORRUPT_MESSAGE.
    let batch = record_batch(3, None);
    assert_eq!(
        produce_one(&mut c, "bad", batch.slice(..batch.len() - 4)).error_code,
        2
    );

    // Wrong magic -> an error code (INVALID_RECORD or CORRUPT_MESSAGE), never a crash.
    let mut batch = record_batch(1, None).to_vec();
    batch[16] = 1;
    let code = produce_one(&mut c, "bad", batch.into()).error_code;
    assert!(code == 87 || code == 2, "wrong magic gave {code}");

    // Internal topics take no client writes -> INVALID_TOPIC_EXCEPTION.
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("__transaction_state"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(
        produce_one(&mut c, "__transaction_state", record_batch(1, None)).error_code,
        17
    );

    // Unknown topic -> UNKNOWN_TOPIC_OR_PARTITION.
    assert_eq!(
        produce_one(&mut c, "missing", record_batch(1, None)).error_code,
        3
    );

    // The connection itself still works, and nothing bad was appended.
    assert_eq!(
        produce_one(&mut c, "bad", record_batch(2, None)).error_code,
        0
    );
    still_serving(&broker);

    // Creating it again, a bad name, bad partition and replication counts.
    let topics = vec![
        CreatableTopic::default()
            .with_name(name("bad"))
            .with_num_partitions(1)
            .with_replication_factor(1),
        CreatableTopic::default()
            .with_name(name("a/b"))
            .with_num_partitions(1)
            .with_replication_factor(1),
        CreatableTopic::default()
            .with_name(name("zero"))
            .with_num_partitions(0)
            .with_replication_factor(1),
        CreatableTopic::default()
            .with_name(name("rf3"))
            .with_num_partitions(1)
            .with_replication_factor(3),
        CreatableTopic::default()
            .with_name(name("cfg"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("soon"))),
            ]),
    ];
    let resp: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(topics),
    );
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![36, 17, 37, 38, 40]);
    broker.stop();
}

#[test]
fn topic_limits_are_enforced() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let broker = Broker::start();
    let mut c = broker.connect();
    let cfg = |k: &'static str, v: &'static str| {
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str(k))
            .with_value(Some(StrBytes::from_static_str(v)))
    };
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("isr2"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![cfg("min.insync.replicas", "2")]),
        CreatableTopic::default()
            .with_name(name("small"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![cfg("max.message.bytes", "200")]),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert!(resp.topics.iter().all(|t| t.error_code == 0));
    let produce = |c: &mut RawClient, topic: &str, acks: i16, n: i32| -> i16 {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name(topic))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(record_batch(n, None))),
                    ]),
            ]);
        let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
        resp.responses[0].partition_responses[0].error_code
    };
    assert_eq!(produce(&mut c, "isr2", -1, 1), 19, "NOT_ENOUGH_REPLICAS");
    assert_eq!(
        produce(&mut c, "isr2", 1, 1),
        0,
        "acks=1 does not need the ISR"
    );
    assert_eq!(produce(&mut c, "small", 1, 50), 10, "MESSAGE_TOO_LARGE");
    assert_eq!(produce(&mut c, "small", 1, 1), 0);
    broker.stop();
}
