//! Regressions for operations that used to take topics away (issue 12): a partition whose
//! records were all removed, by DeleteRecords or by retention, must come back after a clean
//! restart and after SIGKILL, and so must every other topic on its shard.

mod common;

use std::time::{Duration, Instant};

use common::requests::{create_topic_ok, delete_records, fetch, list_offset, name, produce};
use common::{Broker, record_batch};
use kafka_protocol::messages::*;

/// How long retention may take to empty a partition (housekeeping every 200 ms, segment.ms
/// and retention.ms of 1 s; generous for a loaded debug build).
const RETENTION_TIMEOUT: Duration = Duration::from_secs(60);

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
    create_topic_ok(&mut c, "purged", &[]);
    create_topic_ok(&mut c, "bystander", &[]);
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
    create_topic_ok(
        &mut c,
        "expiring",
        &[("retention.ms", "1000"), ("segment.ms", "1000")],
    );
    // The test batches carry old timestamps: the bystander keeps them forever.
    create_topic_ok(&mut c, "bystander", &[("retention.ms", "-1")]);
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
    create_topic_ok(&mut c, "broken", &[]);
    create_topic_ok(&mut c, "bystander", &[]);
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
