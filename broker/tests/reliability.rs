//! Regressions for operations that used to take topics away (issue 12): a partition whose
//! records were all removed, by DeleteRecords or by retention, must come back after a clean
//! restart and after SIGKILL, and so must every other topic on its shard.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, RawClient, batches, record_batch};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// How long retention may take to empty a partition (housekeeping every 200 ms, segment.ms
/// and retention.ms of 1 s; generous for a loaded debug build).
const RETENTION_TIMEOUT: Duration = Duration::from_secs(60);

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_topic(c: &mut RawClient, topic: &str, configs: &[(&str, &str)]) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                ),
        ])
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0, "create {topic}: {:?}", t.error_message);
}

/// Produces `records` to partition 0; returns (error, base offset).
fn produce(c: &mut RawClient, topic: &str, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
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
    (p.error_code, p.base_offset)
}

/// Fetches partition 0 from `offset`: (error, high watermark, log start, batches).
fn fetch(c: &mut RawClient, topic: &str, offset: i64) -> (i16, i64, i64, Vec<(i64, i32)>) {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
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

/// ListOffsets of partition 0 at `timestamp` (-2 earliest, -1 latest): (error, offset).
fn list_offset(c: &mut RawClient, topic: &str, timestamp: i64) -> (i16, i64) {
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

fn delete_records(c: &mut RawClient, topic: &str, before: i64) -> (i16, i64) {
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

/// Waits until `topic`'s Metadata answer has no error and names a leader.
fn wait_for_topic(broker: &Broker, topic: &str) {
    let deadline = Instant::now() + common::READY_TIMEOUT;
    loop {
        let mut c = broker.connect();
        let req = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]));
        let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
        let t = &resp.topics[0];
        if t.error_code == 0 && t.partitions.first().is_some_and(|p| p.leader_id.0 >= 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} not back: error {}\n{}",
            t.error_code,
            common::tail(&broker.log(), 8000)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a restart: the emptied topic starts at `end` and takes a new record there; the
/// bystander on the same shard still serves its records.
fn check_after_restart(broker: &Broker, emptied: &str, end: i64, bystander: &str) {
    wait_for_topic(broker, bystander);
    wait_for_topic(broker, emptied);
    let mut c = broker.connect();
    let (error, hw, _, got) = fetch(&mut c, bystander, 0);
    assert_eq!((error, hw), (0, 3), "bystander");
    assert_eq!(got, vec![(0, 3)]);
    assert_eq!(list_offset(&mut c, emptied, -2), (0, end));
    assert_eq!(list_offset(&mut c, emptied, -1), (0, end));
    let (error, _, log_start, got) = fetch(&mut c, emptied, end);
    assert_eq!((error, log_start), (0, end));
    assert!(
        got.is_empty(),
        "nothing below the log start comes back: {got:?}"
    );
    assert!(
        !broker.log().contains("panicked"),
        "{}",
        common::tail(&broker.log(), 8000)
    );
}

#[test]
fn a_partition_emptied_by_delete_records_survives_restart_and_kill() {
    // One shard: the bystander topic lives on the same shard as the emptied one.
    let mut broker = Broker::start_with(&["--shards", "1"]);
    let mut c = broker.connect();
    create_topic(&mut c, "purged", &[]);
    create_topic(&mut c, "bystander", &[]);
    assert_eq!(produce(&mut c, "purged", record_batch(5, None)), (0, 0));
    assert_eq!(produce(&mut c, "bystander", record_batch(3, None)), (0, 0));
    // DeleteRecords to the log end, as Kafka Streams purges repartition topics.
    assert_eq!(delete_records(&mut c, "purged", 5), (0, 5));
    drop(c);

    broker.restart();
    check_after_restart(&broker, "purged", 5, "bystander");

    // Again after SIGKILL, with one more record appended and deleted in between.
    let mut c = broker.connect();
    assert_eq!(produce(&mut c, "purged", record_batch(1, None)), (0, 5));
    assert_eq!(delete_records(&mut c, "purged", 6), (0, 6));
    drop(c);
    broker.kill();
    broker.start_again();
    check_after_restart(&broker, "purged", 6, "bystander");
    let mut c = broker.connect();
    assert_eq!(produce(&mut c, "purged", record_batch(2, None)), (0, 6));
    let (error, hw, _, got) = fetch(&mut c, "purged", 6);
    assert_eq!((error, hw, got), (0, 8, vec![(6, 2)]));
    drop(c);
    broker.stop();
}

#[test]
fn a_partition_emptied_by_retention_survives_restart_and_kill() {
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(config.path(), "[log]\nhousekeeping_interval_ms = 200\n").expect("write");
    let config_path = config.path().to_str().expect("utf-8 path");
    let mut broker = Broker::start_with(&["--shards", "1", "--config", config_path]);
    let mut c = broker.connect();
    create_topic(
        &mut c,
        "expiring",
        &[("retention.ms", "1000"), ("segment.ms", "1000")],
    );
    // The test batches carry old timestamps: the bystander keeps them forever.
    create_topic(&mut c, "bystander", &[("retention.ms", "-1")]);
    assert_eq!(produce(&mut c, "expiring", record_batch(4, None)), (0, 0));
    assert_eq!(produce(&mut c, "bystander", record_batch(3, None)), (0, 0));
    // segment.ms rolls the segment, retention.ms deletes it: the log start reaches the end.
    let deadline = Instant::now() + RETENTION_TIMEOUT;
    while list_offset(&mut c, "expiring", -2) != (0, 4) {
        assert!(
            Instant::now() < deadline,
            "retention never emptied the partition\n{}",
            common::tail(&broker.log(), 8000)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);

    broker.restart();
    check_after_restart(&broker, "expiring", 4, "bystander");
    broker.kill();
    broker.start_again();
    check_after_restart(&broker, "expiring", 4, "bystander");
    broker.stop();
}

#[test]
fn a_partition_that_cannot_be_opened_is_offline_alone() {
    let mut broker = Broker::start_with(&["--shards", "1"]);
    let mut c = broker.connect();
    create_topic(&mut c, "broken", &[]);
    create_topic(&mut c, "bystander", &[]);
    assert_eq!(produce(&mut c, "broken", record_batch(2, None)), (0, 0));
    assert_eq!(produce(&mut c, "bystander", record_batch(3, None)), (0, 0));
    drop(c);
    broker.send_sigterm();
    let status = broker.wait_exit(common::STOP_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}"
    );
    // The partition's directory becomes a plain file: its log cannot be opened.
    let dir = broker.data_dir().join("broken-0");
    std::fs::remove_dir_all(&dir).expect("remove the partition directory");
    std::fs::write(&dir, b"not a directory").expect("write a file in its place");
    broker.start_again();
    wait_for_topic(&broker, "bystander");
    let mut c = broker.connect();
    let (error, hw, _, got) = fetch(&mut c, "bystander", 0);
    assert_eq!((error, hw, got), (0, 3, vec![(0, 3)]), "bystander");
    assert_eq!(produce(&mut c, "bystander", record_batch(1, None)), (0, 3));
    // KAFKA_STORAGE_ERROR (56) for the partition that did not open, as Kafka answers for a
    // failed log directory.
    assert_eq!(produce(&mut c, "broken", record_batch(1, None)).0, 56);
    assert_eq!(fetch(&mut c, "broken", 0).0, 56);
    assert!(
        broker.log().contains("partition offline"),
        "{}",
        common::tail(&broker.log(), 8000)
    );
    drop(c);
    broker.stop();
}
