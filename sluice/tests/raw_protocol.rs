//! The broker driven with raw Kafka bytes (kafka-protocol encoding, hand-built record
//! batches): ApiVersions, topics, produce and fetch, restart, idempotence, pipelining,
//! long polling and fetch sessions.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, RawClient, batches, record_batch};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_topic(c: &mut RawClient, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
    assert_eq!(resp.topics[0].num_partitions, partitions);
}

fn produce(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, version, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_req(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn fetch(
    c: &mut RawClient,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, i64, Vec<(i64, i32)>) {
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req(topic, partition, offset));
    assert_eq!(resp.error_code, 0);
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        batches(p.records.clone().unwrap_or_default()),
    )
}

#[test]
fn api_versions_lists_every_handler() {
    let broker = Broker::start();
    let mut c = broker.connect();
    for version in [0, 3, 4] {
        let resp: ApiVersionsResponse =
            c.call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default());
        assert_eq!(resp.error_code, 0);
        let produce = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .expect("Produce listed");
        assert_eq!((produce.min_version, produce.max_version), (3, 13));
        let fetch = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Fetch as i16)
            .expect("Fetch listed");
        assert!(fetch.max_version >= 12);
        // Transactions (issue 15) are claimed at Kafka 4.1's ranges.
        let end_txn = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::EndTxn as i16)
            .expect("EndTxn listed");
        assert_eq!((end_txn.min_version, end_txn.max_version), (0, 5));
        // Not implemented, so not claimed.
        assert!(
            !resp
                .api_keys
                .iter()
                .any(|k| k.api_key == ApiKey::ElectLeaders as i16)
        );
    }
    broker.stop();
}

#[test]
fn api_versions_too_new_gets_unsupported_version_in_v0_layout() {
    let broker = Broker::start();
    let mut c = broker.connect();
    // ApiVersions v99 with a flexible (v2) header: key, version, correlation id, client id,
    // empty tagged fields, then a body we do not understand.
    let mut frame = Vec::new();
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&99i16.to_be_bytes());
    frame.extend_from_slice(&42i32.to_be_bytes());
    frame.extend_from_slice(&4i16.to_be_bytes());
    frame.extend_from_slice(b"test");
    frame.push(0);
    frame.extend_from_slice(&[1, 2, 3]);
    c.send_frame(&frame);
    let mut resp = c.recv_frame().expect("an answer, not a closed connection");
    let header = kafka_protocol::protocol::Decodable::decode(&mut resp, 0);
    let header: ResponseHeader = header.expect("v0 response header");
    assert_eq!(header.correlation_id, 42);
    let body: ApiVersionsResponse =
        kafka_protocol::protocol::Decodable::decode(&mut resp, 0).expect("v0 body");
    assert_eq!(body.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(
        body.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4)
    );
    // The client then retries with a version we serve, on the same connection.
    let resp: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
    broker.stop();
}

#[test]
fn produce_fetch_list_offsets_and_restart() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "events", 3);
    for p in 0..3 {
        assert_eq!(
            produce(&mut c, 9, "events", p, record_batch(3, None), -1),
            (0, 0)
        );
        assert_eq!(
            produce(&mut c, 9, "events", p, record_batch(2, None), 1),
            (0, 3)
        );
    }
    for p in 0..3 {
        // The high watermark moves with the append before an acks=1 answer, as in Kafka
        // (issue 14; `hw_visibility.rs`): no wait for the fdatasync.
        let (err, hw, got) = fetch(&mut c, "events", p, 0);
        assert_eq!((err, hw), (0, 5));
        assert_eq!(got, vec![(0, 3), (3, 2)]);
        let (_, _, got) = fetch(&mut c, "events", p, 3);
        assert_eq!(got, vec![(3, 2)]);
    }
    let list = |c: &mut RawClient, ts: i64| -> i64 {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("events"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(1)
                            .with_timestamp(ts),
                    ]),
            ]);
        let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        p.offset
    };
    assert_eq!(list(&mut c, -1), 5);
    assert_eq!(list(&mut c, -2), 0);
    assert_eq!(list(&mut c, 0), 0);

    drop(c);
    broker.restart();
    let mut c = broker.connect();
    for p in 0..3 {
        let (err, hw, got) = fetch(&mut c, "events", p, 0);
        assert_eq!((err, hw), (0, 5), "data survives a restart");
        assert_eq!(got, vec![(0, 3), (3, 2)]);
    }
    assert_eq!(
        produce(&mut c, 9, "events", 0, record_batch(1, None), -1),
        (0, 5)
    );
    // Fetch by topic id (v13+).
    let meta: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("events"))),
        ])),
    );
    let id = meta.topics[0].topic_id;
    assert!(!id.is_nil());
    let mut req = fetch_req("", 0, 0);
    req.topics[0].topic_id = id;
    let resp: FetchResponse = c.call(ApiKey::Fetch, 16, &req);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(resp.responses[0].topic_id, id);
    assert_eq!(
        batches(p.records.clone().unwrap_or_default()),
        vec![(0, 3), (3, 2), (5, 1)]
    );
    // Produce v13 names the topic by id too; Fetch v17 reads it back.
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_topic_id(id)
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(record_batch(2, None))),
                ]),
        ]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 13, &req);
    assert_eq!(resp.responses[0].topic_id, id);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 6));
    let mut bad = req.clone();
    bad.topic_data[0].topic_id = uuid::Uuid::from_u128(7);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 13, &bad);
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 100,
        "UNKNOWN_TOPIC_ID"
    );
    let mut req = fetch_req("", 0, 6);
    req.topics[0].topic_id = id;
    let resp: FetchResponse = c.call(ApiKey::Fetch, 17, &req);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(batches(p.records.clone().unwrap_or_default()), vec![(6, 2)]);
    broker.stop();
}

#[test]
fn metadata_auto_creates_and_reports_unknown_topics() {
    let broker = Broker::start();
    let mut c = broker.connect();
    let req = |n: &str, auto: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(n))),
            ]))
            .with_allow_auto_topic_creation(auto)
    };
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req("nope", false));
    assert_eq!(resp.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req("auto", true));
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].partitions.len(), 1);
    assert_eq!(resp.brokers.len(), 1);
    let (err, _) = produce(&mut c, 9, "nope", 0, record_batch(1, None), 1);
    assert_eq!(err, 3, "produce to an unknown topic");
    let (err, _, _) = fetch(&mut c, "nope", 0, 0);
    assert_eq!(err, 3, "fetch from an unknown topic");
    broker.stop();
}

#[test]
fn idempotent_producer_sequences_and_duplicates() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "idem", 1);
    let init: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    assert_eq!(
        produce(&mut c, 9, "idem", 0, record_batch(2, Some((pid, 0, 0))), -1),
        (0, 0)
    );
    assert_eq!(
        produce(&mut c, 9, "idem", 0, record_batch(3, Some((pid, 0, 2))), -1),
        (0, 2)
    );
    // A retry of the first batch is answered with its original offset, not appended again.
    assert_eq!(
        produce(&mut c, 9, "idem", 0, record_batch(2, Some((pid, 0, 0))), -1),
        (0, 0)
    );
    // A gap.
    assert_eq!(
        produce(&mut c, 9, "idem", 0, record_batch(1, Some((pid, 0, 9))), -1).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    let (_, hw, _) = fetch(&mut c, "idem", 0, 0);
    assert_eq!(hw, 5);
    // Producer state is rebuilt from the log on restart.
    drop(c);
    broker.restart();
    let mut c = broker.connect();
    assert_eq!(
        produce(&mut c, 9, "idem", 0, record_batch(3, Some((pid, 0, 2))), -1),
        (0, 2),
        "duplicate after restart"
    );
    assert_eq!(
        produce(&mut c, 9, "idem", 0, record_batch(1, Some((pid, 1, 0))), -1),
        (0, 5),
        "new epoch"
    );
    assert_eq!(
        produce(&mut c, 9, "idem", 0, record_batch(1, Some((pid, 0, 5))), -1).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let next: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_ne!(
        next.producer_id.0, pid,
        "producer ids are not reused across restarts"
    );
    broker.stop();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "pipe", 4);
    // Five produces to partitions on different shards plus metadata in between, unread.
    let mut ids = Vec::new();
    for i in 0..10 {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name("pipe"))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(i % 4)
                            .with_records(Some(record_batch(1, None))),
                    ]),
            ]);
        ids.push((ApiKey::Produce, c.send(ApiKey::Produce, 9, &req)));
        ids.push((
            ApiKey::Metadata,
            c.send(ApiKey::Metadata, 12, &MetadataRequest::default()),
        ));
    }
    for (key, id) in ids {
        match key {
            ApiKey::Produce => {
                let r: ProduceResponse = c.recv(key, 9, id);
                assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            }
            _ => {
                let _: MetadataResponse = c.recv(key, 12, id);
            }
        }
    }
    for p in 0..4 {
        let (_, hw, got) = fetch(&mut c, "pipe", p, 0);
        assert_eq!(hw, if p < 2 { 3 } else { 2 });
        assert_eq!(
            got.iter().map(|b| b.0).collect::<Vec<_>>(),
            (0..hw).collect::<Vec<_>>()
        );
    }
    broker.stop();
}

#[test]
fn long_poll_wakes_on_new_data() {
    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "poll", 2);
    let mut req = fetch_req("poll", 1, 0);
    req.max_wait_ms = 20_000;
    req.min_bytes = 1;
    let started = Instant::now();
    let id = c.send(ApiKey::Fetch, 12, &req);
    let mut producer = broker.connect();
    assert_eq!(
        produce(&mut producer, 9, "poll", 1, record_batch(4, None), 1),
        (0, 0)
    );
    let resp: FetchResponse = c.recv(ApiKey::Fetch, 12, id);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(batches(p.records.clone().unwrap_or_default()), vec![(0, 4)]);
    // Woken by the produce, not by the 20 s deadline.
    assert!(started.elapsed() < Duration::from_secs(15));
    // With nothing new, max_wait_ms bounds the wait and the answer is empty.
    let mut req = fetch_req("poll", 1, 4);
    req.max_wait_ms = 200;
    req.min_bytes = 1;
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    assert_eq!(
        resp.responses[0].partitions[0]
            .records
            .as_ref()
            .map(|r| r.len()),
        Some(0)
    );
    broker.stop();
}

#[test]
fn fetch_sessions_are_incremental() {
    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "sess", 2);
    produce(&mut c, 9, "sess", 0, record_batch(2, None), -1);
    let mut req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_id(0)
        .with_session_epoch(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("sess"))
                .with_partitions(
                    (0..2)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                ),
        ]);
    let full: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    assert_eq!(full.error_code, 0);
    assert_ne!(full.session_id, 0, "a session was created");
    assert_eq!(full.responses[0].partitions.len(), 2);
    // Incremental, epoch 1, nothing changed in the request: partition 0 still has its records
    // (offset unchanged) and partition 1 has no news, so only partition 0 is in the answer.
    req.session_id = full.session_id;
    req.session_epoch = 1;
    req.topics.clear();
    let inc: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    assert_eq!(inc.error_code, 0);
    let parts: Vec<i32> = inc
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
        .collect();
    assert_eq!(parts, vec![0]);
    // Wrong epoch, unknown session.
    req.session_epoch = 7;
    let bad: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    assert_eq!(bad.error_code, 71, "INVALID_FETCH_SESSION_EPOCH");
    req.session_id = 12345;
    req.session_epoch = 1;
    let bad: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    assert_eq!(bad.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
    broker.stop();
}

#[test]
fn zero_copy_fetch_is_byte_identical_to_copying_fetch() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("copy.toml");
    std::fs::write(&cfg, "[kafka]\nzero_copy_fetch = false\n").unwrap();
    let zero_copy = Broker::start();
    let copying = Broker::start_with(&["--config", cfg.to_str().unwrap()]);
    let mut frames = Vec::new();
    for broker in [&zero_copy, &copying] {
        let mut c = broker.connect();
        create_topic(&mut c, "zc", 3);
        for p in 0..3 {
            for n in 1..4 {
                produce(&mut c, 9, "zc", p, record_batch(n * 10, None), -1);
            }
        }
        let mut per_version = Vec::new();
        for version in [4, 7, 11, 12] {
            let mut req = fetch_req("zc", 0, 0);
            req.topics[0].partitions.push(
                FetchPartition::default()
                    .with_partition(2)
                    .with_fetch_offset(10)
                    .with_partition_max_bytes(1 << 20),
            );
            let id = c.send(ApiKey::Fetch, version, &req);
            let frame = c.recv_frame().expect("fetch answer");
            assert_eq!(i32::from_be_bytes(frame[..4].try_into().unwrap()), id);
            per_version.push(frame);
        }
        frames.push(per_version);
    }
    assert!(frames[0][0].len() > 1000, "records came back");
    assert_eq!(
        frames[0], frames[1],
        "zero-copy and copying fetch answers differ"
    );
    zero_copy.stop();
    copying.stop();
}

#[test]
fn admin_apis() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };

    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "adm", 1);
    // ListOffsets by timestamp answers the first record at or after it, not the batch start.
    produce(&mut c, 9, "adm", 0, record_batch(10, None), -1);
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name("adm"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(common::BATCH_BASE_TIMESTAMP + 4),
                ]),
        ]);
    let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(
        (p.error_code, p.offset, p.timestamp),
        (0, 4, common::BATCH_BASE_TIMESTAMP + 4)
    );

    // CreatePartitions: 1 -> 3; shrinking is refused.
    let req = CreatePartitionsRequest::default().with_topics(vec![
        CreatePartitionsTopic::default()
            .with_name(name("adm"))
            .with_count(3),
    ]);
    let resp: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &req);
    assert_eq!(resp.results[0].error_code, 0);
    assert_eq!(
        produce(&mut c, 9, "adm", 2, record_batch(1, None), 1),
        (0, 0),
        "new partition takes writes"
    );
    let resp: CreatePartitionsResponse = c.call(
        ApiKey::CreatePartitions,
        3,
        &req.clone().with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name("adm"))
                .with_count(2),
        ]),
    );
    assert_eq!(resp.results[0].error_code, 37, "INVALID_PARTITIONS");

    // IncrementalAlterConfigs then DescribeConfigs.
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("adm"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("3600000"))),
            ]),
    ]);
    let resp: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &req);
    assert_eq!(
        resp.responses[0].error_code, 0,
        "{:?}",
        resp.responses[0].error_message
    );
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("adm"))
            .with_configuration_keys(None),
    ]);
    let resp: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
    assert_eq!(resp.results[0].error_code, 0);
    let retention = resp.results[0]
        .configs
        .iter()
        .find(|e| e.name.as_str() == "retention.ms")
        .expect("retention.ms described");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.config_source, 1, "TOPIC_CONFIG");
    let segment = resp.results[0]
        .configs
        .iter()
        .find(|e| e.name.as_str() == "segment.bytes")
        .expect("segment.bytes");
    assert_eq!(segment.config_source, 5, "DEFAULT_CONFIG");

    // DeleteRecords moves the log start offset.
    let req = DeleteRecordsRequest::default().with_topics(vec![
        DeleteRecordsTopic::default()
            .with_name(name("adm"))
            .with_partitions(vec![
                DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(6),
            ]),
    ]);
    let resp: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 6));
    let (err, _, _) = fetch(&mut c, "adm", 0, 0);
    assert_eq!(err, 1, "OFFSET_OUT_OF_RANGE below the log start");

    // OffsetForLeaderEpoch: the topic's first leader epoch (1: the quorum's first election)
    // ends at the log end; a client still at epoch 0 is fenced.
    let epoch_request = |current: i32, wanted: i32| {
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(name("adm"))
                    .with_partitions(vec![
                        OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(current)
                            .with_leader_epoch(wanted),
                    ]),
            ])
    };
    let resp: OffsetForLeaderEpochResponse =
        c.call(ApiKey::OffsetForLeaderEpoch, 4, &epoch_request(1, 1));
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 1, 10));
    let resp: OffsetForLeaderEpochResponse =
        c.call(ApiKey::OffsetForLeaderEpoch, 4, &epoch_request(0, 1));
    assert_eq!(
        resp.topics[0].partitions[0].error_code, 74,
        "FENCED_LEADER_EPOCH"
    );

    // DescribeCluster and DescribeLogDirs.
    let resp: DescribeClusterResponse = c.call(
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    );
    assert_eq!(resp.brokers.len(), 1);
    assert!(resp.cluster_id.as_str().starts_with("sluice-"));
    let resp: DescribeLogDirsResponse = c.call(
        ApiKey::DescribeLogDirs,
        4,
        &DescribeLogDirsRequest::default().with_topics(None),
    );
    let topic = resp.results[0]
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == "adm")
        .expect("adm in log dirs");
    assert_eq!(topic.partitions.len(), 3);
    assert!(resp.results[0].total_bytes > 0 && resp.results[0].usable_bytes > 0);

    // DeleteTopics by id; the name can be re-created afterwards, empty.
    let meta: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("adm"))),
        ])),
    );
    let id = meta.topics[0].topic_id;
    let req = DeleteTopicsRequest::default().with_topics(vec![
        DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(id),
    ]);
    let resp: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &req);
    assert_eq!(resp.responses[0].error_code, 0);
    let (err, _, _) = fetch(&mut c, "adm", 0, 0);
    assert_eq!(err, 3, "deleted");
    create_topic(&mut c, "adm", 1);
    let (err, hw, _) = fetch(&mut c, "adm", 0, 0);
    assert_eq!((err, hw), (0, 0), "re-created topic starts empty");
    broker.stop();
}

#[test]
fn topic_config_changes_apply_to_the_live_log() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("fast.toml");
    std::fs::write(&cfg, "[log]\nhousekeeping_interval_ms = 100\n").unwrap();
    let broker = Broker::start_with(&["--config", cfg.to_str().unwrap()]);
    let mut c = broker.connect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("ret"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("segment.bytes"))
                    .with_value(Some(StrBytes::from_static_str("1048576"))),
                // The test batches carry 2023 timestamps: keep them from time-based retention.
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("-1"))),
            ]),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    // ~3 MiB in 100 KiB batches: at least two full 1 MiB segments.
    for _ in 0..30 {
        assert_eq!(
            produce(
                &mut c,
                9,
                "ret",
                0,
                common::record_batch_sized(100, 1000, None),
                1
            )
            .0,
            0
        );
    }
    let earliest = |c: &mut RawClient| -> i64 {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("ret"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-2),
                    ]),
            ]);
        let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
        resp.topics[0].partitions[0].offset
    };
    assert_eq!(earliest(&mut c), 0);
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("ret"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("1"))),
            ]),
    ]);
    let resp: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &req);
    assert_eq!(resp.responses[0].error_code, 0);
    // Retention runs on the shard's housekeeping timer: wait for the log start to move.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if earliest(&mut c) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention.bytes was not applied to the live log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The partition still takes writes and serves reads after the re-open.
    let (err, next) = produce(&mut c, 9, "ret", 0, record_batch(1, None), -1);
    assert_eq!((err, next), (0, 3000));
    let (err, hw, _) = fetch(&mut c, "ret", 0, 3000);
    assert_eq!((err, hw), (0, 3001));
    broker.stop();
}

#[test]
fn sigterm_answers_in_flight_requests_then_exits_zero() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "bye", 2);
    produce(&mut c, 9, "bye", 0, record_batch(3, None), -1);
    // A produce and a 30 s long poll in one write: the broker splits both frames from the
    // same read, so once the produce is answered the fetch is in flight.
    let mut req = fetch_req("bye", 1, 0);
    req.max_wait_ms = 30_000;
    req.min_bytes = 1;
    let produce_req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("bye"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(record_batch(2, None))),
                ]),
        ]);
    let (mut both, produce_id) = c.encode(ApiKey::Produce, 9, &produce_req);
    let (fetch_frame, id) = c.encode(ApiKey::Fetch, 12, &req);
    both.extend_from_slice(&fetch_frame);
    std::io::Write::write_all(&mut c.stream, &both).unwrap();
    let produced: ProduceResponse = c.recv(ApiKey::Produce, 9, produce_id);
    assert_eq!(produced.responses[0].partition_responses[0].base_offset, 3);
    let started = Instant::now();
    broker.send_sigterm();
    let resp: FetchResponse = c.recv(ApiKey::Fetch, 12, id);
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert!(
        c.is_closed_by_peer(),
        "the connection closes after its in-flight answer"
    );
    let status = broker
        .wait_exit(Duration::from_secs(20))
        .expect("broker exits");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Everything acknowledged is there after a restart.
    broker.start_again();
    let mut c = broker.connect();
    let (err, hw, got) = fetch(&mut c, "bye", 0, 0);
    assert_eq!((err, hw, got), (0, 5, vec![(0, 3), (3, 2)]));
    broker.stop();
}

#[test]
fn log_append_time_topics_stamp_batches() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let broker = Broker::start();
    let mut c = broker.connect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("lat"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("message.timestamp.type"))
                    .with_value(Some(StrBytes::from_static_str("LogAppendTime"))),
            ]),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    // acks=all: consumers see only what is durable, and the fetch below does not wait.
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("lat"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(record_batch(3, None))),
                ]),
        ]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    let append_time = p.log_append_time_ms;
    assert!(
        append_time > common::BATCH_BASE_TIMESTAMP,
        "log_append_time_ms = {append_time}"
    );
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("lat", 0, 0));
    let records = resp.responses[0].partitions[0].records.clone().unwrap();
    let attributes = i16::from_be_bytes([records[21], records[22]]);
    assert_ne!(attributes & 0x08, 0, "timestamp type bit");
    assert_eq!(
        i64::from_be_bytes(records[35..43].try_into().unwrap()),
        append_time
    );
    let crc = u32::from_be_bytes(records[17..21].try_into().unwrap());
    assert_eq!(crc, common::crc32c(&records[21..]), "CRC recomputed");
    // A corrupt batch is still refused, not re-blessed with a fresh CRC.
    let mut bad = record_batch(2, None).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let (err, _) = produce(&mut c, 9, "lat", 0, bad.into(), 1);
    assert_eq!(err, 2, "CORRUPT_MESSAGE");
    broker.stop();
}

/// A data dir written before the metadata quorum existed (topics only in `catalog.json`, no
/// `__quorum`) keeps its topics: a new quorum of one takes them over with their ids, and their
/// records stay readable.
#[test]
fn a_pre_quorum_data_dir_keeps_its_topics() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "legacy", 1);
    produce(&mut c, 9, "legacy", 0, record_batch(5, None), -1);
    drop(c);
    broker.kill();
    let data = broker.data_dir().to_path_buf();
    std::fs::remove_dir_all(data.join("__quorum")).unwrap();
    let id = "6f1c3c57-3c1e-4c44-9a3e-5b8f2b0d0a11";
    let catalog_path = data.join("catalog.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog_path).unwrap()).unwrap();
    json["topics"] = serde_json::json!([
        {"name": "legacy", "id": id, "partitions": 1, "configs": {}, "leader_epoch": 0}
    ]);
    std::fs::write(&catalog_path, serde_json::to_vec(&json).unwrap()).unwrap();
    broker.start_again();
    let mut c = broker.connect();
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("legacy"))),
    ]));
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].topic_id.to_string(), id);
    let (err, hw, got) = fetch(&mut c, "legacy", 0, 0);
    assert_eq!((err, hw, got.len()), (0, 5, 1), "records kept");
    assert!(data.join("legacy-0").exists(), "not moved aside as stray");
    broker.stop();
}

#[test]
fn restart_sweeps_directories_the_catalog_does_not_know() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    create_topic(&mut c, "kept", 1);
    produce(&mut c, 9, "kept", 0, record_batch(5, None), -1);
    drop(c);
    // A partition directory the metadata quorum does not know (e.g. left by a crash between
    // a DeleteTopics and the rename of its directory, or copied in by hand), and a deleted
    // topic's directory whose removal was interrupted.
    broker.kill();
    let ghost = broker.data_dir().join("ghost-0");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::copy(
        broker.data_dir().join("kept-0/00000000000000000000.log"),
        ghost.join("00000000000000000000.log"),
    )
    .unwrap();
    std::fs::create_dir_all(broker.data_dir().join("old-0.0123-delete")).unwrap();
    broker.start_again();
    assert!(!broker.data_dir().join("ghost-0").exists());
    assert!(!broker.data_dir().join("old-0.0123-delete").exists());
    let aside = std::fs::read_dir(broker.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name().to_string_lossy().starts_with("ghost-0.")
                && e.file_name().to_string_lossy().ends_with("-stray")
        });
    assert!(aside, "stray directory kept aside, not deleted");
    // Re-creating the name starts empty.
    let mut c = broker.connect();
    create_topic(&mut c, "ghost", 1);
    let (err, hw, _) = fetch(&mut c, "ghost", 0, 0);
    assert_eq!((err, hw), (0, 0));
    // The known topic kept its data.
    let (err, hw, _) = fetch(&mut c, "kept", 0, 0);
    assert_eq!((err, hw), (0, 5));
    broker.stop();
}
