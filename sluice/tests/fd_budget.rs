//! The open-file budget (issue 12, item 3): a broker refuses CreateTopics and
//! CreatePartitions that would take its partition replicas beyond what its RLIMIT_NOFILE
//! holds, with POLICY_VIOLATION (44) and the numbers, and keeps serving after a restart.

mod common;

use common::{Broker, RawClient, record_batch};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// The child's open-file limit: (2048 - 1024 reserved) / 2 for connections = 512 fds, at
/// 5 per partition replica: 102 partition replicas (`broker::fd_budget`).
const NOFILE: u64 = 2048;
const REPLICAS_MAX: i32 = 102;
use kafka_wire::error::POLICY_VIOLATION;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_topic(c: &mut RawClient, topic: &str, partitions: i32) -> (i16, Option<String>) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    let t = &resp.topics[0];
    (
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn grow(c: &mut RawClient, topic: &str, count: i32) -> (i16, Option<String>) {
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(count),
        ]);
    let resp: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &req);
    let r = &resp.results[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn produce(c: &mut RawClient, topic: &str, partition: i32) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(record_batch(2, None))),
                ]),
        ]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    resp.responses[0].partition_responses[0].error_code
}

#[test]
fn partitions_beyond_the_open_file_budget_are_refused() {
    let mut broker = Broker::start_with_nofile(NOFILE, &[]);
    let log = broker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("open-file budget") && l.contains(&REPLICAS_MAX.to_string())),
        "start-up logs the budget:\n{log}"
    );
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "grown", 10).0, 0);
    assert_eq!(create_topic(&mut c, "other", 5).0, 0);

    // Growing past the budget: refused with the numbers, nothing created.
    let (code, message) = grow(&mut c, "grown", 200);
    assert_eq!(code, POLICY_VIOLATION, "{message:?}");
    let message = message.unwrap_or_default();
    assert!(
        message.contains("holds 15") && message.contains(&REPLICAS_MAX.to_string()),
        "{message}"
    );
    let (code, message) = create_topic(&mut c, "big", REPLICAS_MAX);
    assert_eq!(code, POLICY_VIOLATION, "{message:?}");

    // After a restart the broker serves both topics, and grows up to the budget exactly.
    broker.restart();
    let mut c = broker.connect();
    assert_eq!(produce(&mut c, "other", 4), 0);
    assert_eq!(produce(&mut c, "grown", 9), 0);
    assert_eq!(grow(&mut c, "grown", REPLICAS_MAX - 5).0, 0);
    assert_eq!(produce(&mut c, "grown", REPLICAS_MAX - 6), 0);
    assert_eq!(grow(&mut c, "grown", REPLICAS_MAX - 4).0, POLICY_VIOLATION);
    broker.restart();
    let mut c = broker.connect();
    assert_eq!(produce(&mut c, "other", 0), 0);
    assert_eq!(produce(&mut c, "grown", REPLICAS_MAX - 6), 0);

    // The limit lowered under the partitions (3 fds each would not fit in 200): the broker
    // still starts and answers connections; the partitions over its budget stay offline
    // instead of taking every descriptor.
    broker.set_nofile(200);
    broker.restart();
    let mut c = broker.connect();
    let versions: ApiVersionsResponse =
        c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
    assert_eq!(create_topic(&mut c, "late", 1).0, POLICY_VIOLATION);
    // The descriptors kept for connections are free (without the budget, opening the
    // partitions takes all 200 but the one or two a failing open gives back).
    let fds = std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
        .expect("the broker's /proc fd list")
        .count();
    assert!(fds < 100, "{fds} descriptors open of 200");
    let log = broker.log();
    assert!(
        log.contains("not opened") && log.contains("the open-file budget is 0"),
        "{log}"
    );
    broker.stop();
}
