//! One-line Kafka requests for tests about a topic's partition 0 (most reliability tests use
//! one-partition topics): each builds the request, calls it on a `RawClient` and returns the
//! fields the tests check.

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{RawClient, batches};

pub fn name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One topic of a CreateTopics request, with `configs`.
pub fn new_topic(
    topic: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(replication)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v)))
                })
                .collect(),
        )
}

/// CreateTopics (v7) for one topic of one partition with `configs`: (error code, message).
pub fn create_topic(
    c: &mut RawClient,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![new_topic(topic, 1, 1, configs)])
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    let t = &resp.topics[0];
    (
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// `create_topic` that must succeed.
pub fn create_topic_ok(c: &mut RawClient, topic: &str, configs: &[(&str, &str)]) {
    let (code, message) = create_topic(c, topic, configs, false);
    assert_eq!(code, 0, "create {topic} {configs:?}: {message:?}");
}

/// Produce (v9, acks=all) of `records` to partition 0: (error, base offset).
pub fn produce(c: &mut RawClient, topic: &str, records: Bytes) -> (i16, i64) {
    let (code, base_offset, _) = produce_answer(c, topic, records);
    (code, base_offset)
}

/// A Produce request of `records` to one partition of `topic` with `acks`.
pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
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
        ])
}

/// Produce (v9) of `records` to partition 0 with `acks`: (error, base offset, the answer's
/// error message, "" if none).
pub fn produce_acks(
    c: &mut RawClient,
    topic: &str,
    records: Bytes,
    acks: i16,
) -> (i16, i64, String) {
    let req = produce_request(topic, 0, records, acks);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    let message = p
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    (p.error_code, p.base_offset, message)
}

/// `produce_acks` with acks=all.
pub fn produce_answer(c: &mut RawClient, topic: &str, records: Bytes) -> (i16, i64, String) {
    produce_acks(c, topic, records, -1)
}

/// A Fetch request (v12 fields, no session, no wait) of partition `partition` from `offset`.
pub fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
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

/// Fetch (v12) of partition 0 from `offset`: (error, high watermark, log start, batches as
/// (base offset, record count)).
pub fn fetch(c: &mut RawClient, topic: &str, offset: i64) -> (i16, i64, i64, Vec<(i64, i32)>) {
    let req = fetch_request(topic, 0, offset);
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    assert_eq!(resp.error_code, 0);
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.log_start_offset,
        batches(p.records.clone().unwrap_or_default()),
    )
}

/// ListOffsets (v7) of partition 0 at `timestamp` (-2 earliest, -1 latest): (error, offset).
pub fn list_offset(c: &mut RawClient, topic: &str, timestamp: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// DeleteRecords (v2) of partition 0 below `before`: (error, low watermark).
pub fn delete_records(c: &mut RawClient, topic: &str, before: i64) -> (i16, i64) {
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(before),
                ]),
        ]);
    let resp: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

/// DescribeProducers v0 of `topic` partition 0.
pub fn producers_request(topic: &str) -> DescribeProducersRequest {
    DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(name(topic))
            .with_partition_indexes(vec![0]),
    ])
}

/// The active producers of a DescribeProducers answer's first partition (which must have no
/// error): (producer id, epoch, last sequence, coordinator epoch, current transaction start
/// offset), by producer id.
pub fn producer_list(resp: &DescribeProducersResponse) -> Vec<(i64, i32, i32, i32, i64)> {
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let mut out: Vec<_> = p
        .active_producers
        .iter()
        .map(|s| {
            (
                s.producer_id.0,
                s.producer_epoch,
                s.last_sequence,
                s.coordinator_epoch,
                s.current_txn_start_offset,
            )
        })
        .collect();
    out.sort();
    out
}
