//! Legal but unusual topic operations that once took topics away (issue 12): boundary topic
//! configs (items 2) and the longest topic names through delete and re-create (item 4).
//! Every check runs against the real broker, then again after a restart.

mod common;

use common::requests::{
    create_topic, create_topic_ok, fetch, list_offset, name, produce, str_bytes,
};
use common::{Broker, RawClient, record_batch};
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as LegacyResource, AlterableConfig as LegacyConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;

use kafka_wire::error::{INVALID_CONFIG, MESSAGE_TOO_LARGE, UNKNOWN_TOPIC_OR_PARTITION};

/// IncrementalAlterConfigs SET of `configs` on `topic`; (error code, message).
fn alter_incremental(
    c: &mut RawClient,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes(topic))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(str_bytes(k))
                                .with_config_operation(0)
                                .with_value(Some(str_bytes(v)))
                        })
                        .collect(),
                ),
        ]);
    let resp: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &req);
    let r = &resp.responses[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// Legacy AlterConfigs (replace all overrides) on `topic`; (error code, message).
fn alter_legacy(c: &mut RawClient, topic: &str, configs: &[(&str, &str)]) -> (i16, Option<String>) {
    let req = AlterConfigsRequest::default().with_resources(vec![
        LegacyResource::default()
            .with_resource_type(2)
            .with_resource_name(str_bytes(topic))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        LegacyConfig::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(v)))
                    })
                    .collect(),
            ),
    ]);
    let resp: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, 2, &req);
    let r = &resp.responses[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// Metadata error code of each topic, in request order (no auto-creation).
fn metadata_errors(c: &mut RawClient, topics: &[&str]) -> Vec<i16> {
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect(),
        ));
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    topics
        .iter()
        .map(|t| {
            resp.topics
                .iter()
                .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == *t))
                .map_or(-1, |r| r.error_code)
        })
        .collect()
}

fn delete_topic(c: &mut RawClient, topic: &str) {
    let req = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(name(topic))),
        ])
        .with_timeout_ms(10_000);
    let resp: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &req);
    assert_eq!(
        resp.responses[0].error_code, 0,
        "{:?}",
        resp.responses[0].error_message
    );
}

/// The boundary values Kafka allows (index.interval.bytes >= 0, max.message.bytes >= 0) are
/// taken by the API and by the log alike: the topic exists, refuses every batch as too large,
/// takes writes again once the limit is raised, and neither it nor its neighbours vanish at a
/// restart. Values outside Kafka's bounds get INVALID_CONFIG on every path.
#[test]
fn boundary_configs_never_take_topics_away() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    create_topic_ok(&mut c, "bystander", &[]);
    assert_eq!(produce(&mut c, "bystander", record_batch(3, None)), (0, 0));

    let tiny = [("index.interval.bytes", "1"), ("max.message.bytes", "1")];
    let (code, message) = create_topic(&mut c, "tiny", &tiny, true);
    assert_eq!(code, 0, "validate_only: {message:?}");
    create_topic_ok(&mut c, "tiny", &tiny);
    create_topic_ok(
        &mut c,
        "zero",
        &[("index.interval.bytes", "0"), ("max.message.bytes", "0")],
    );
    for topic in ["tiny", "zero"] {
        assert_eq!(
            produce(&mut c, topic, record_batch(1, None)).0,
            MESSAGE_TOO_LARGE,
            "{topic}: every batch is larger than max.message.bytes"
        );
    }

    // An existing topic with data, altered the same way by both AlterConfigs forms.
    create_topic_ok(&mut c, "altered", &[]);
    assert_eq!(produce(&mut c, "altered", record_batch(4, None)), (0, 0));
    assert_eq!(alter_incremental(&mut c, "altered", &tiny, true).0, 0);
    let (code, message) = alter_incremental(&mut c, "altered", &tiny, false);
    assert_eq!(code, 0, "{message:?}");
    assert_eq!(
        produce(&mut c, "altered", record_batch(1, None)).0,
        MESSAGE_TOO_LARGE
    );
    let (code, message) = alter_legacy(&mut c, "altered", &[("index.interval.bytes", "0")]);
    assert_eq!(code, 0, "{message:?}");
    // max.message.bytes is back to the default: writes go in, each batch indexed (interval 0).
    for i in 0..5 {
        assert_eq!(
            produce(&mut c, "altered", record_batch(2, None)),
            (0, 4 + 2 * i)
        );
    }
    let (code, message) = alter_incremental(&mut c, "tiny", &[("max.message.bytes", "61")], false);
    assert_eq!(code, 0, "{message:?}");

    // Outside Kafka's bounds: refused on every path, nothing changes.
    for (key, value) in [
        ("index.interval.bytes", "-1"),
        ("index.interval.bytes", "4294967296"),
        ("max.message.bytes", "-1"),
        ("max.message.bytes", "2147483648"),
        ("segment.ms", "0"),
        ("retention.ms", "-2"),
        ("flush.ms", "-1"),
        ("min.insync.replicas", "0"),
        ("message.timestamp.before.max.ms", "-1"),
    ] {
        for validate_only in [true, false] {
            let (code, message) = create_topic(&mut c, "refused", &[(key, value)], validate_only);
            assert_eq!(code, INVALID_CONFIG, "create {key}={value}: {message:?}");
            let (code, message) =
                alter_incremental(&mut c, "bystander", &[(key, value)], validate_only);
            assert_eq!(code, INVALID_CONFIG, "alter {key}={value}: {message:?}");
        }
        let (code, message) = alter_legacy(&mut c, "bystander", &[(key, value)]);
        assert_eq!(
            code, INVALID_CONFIG,
            "legacy alter {key}={value}: {message:?}"
        );
    }

    let all = ["bystander", "tiny", "zero", "altered"];
    let check = |c: &mut RawClient| {
        assert_eq!(metadata_errors(c, &all), vec![0; all.len()]);
        assert_eq!(
            metadata_errors(c, &["refused"]),
            vec![UNKNOWN_TOPIC_OR_PARTITION]
        );
        let (err, hw, _, got) = fetch(c, "bystander", 0);
        assert_eq!((err, hw, got), (0, 3, vec![(0, 3)]));
        let (err, hw, _, got) = fetch(c, "altered", 6);
        assert_eq!((err, hw), (0, 14));
        assert_eq!(
            got.first(),
            Some(&(6, 2)),
            "from the batch holding offset 6"
        );
        assert_eq!(fetch(c, "tiny", 0).1, 0);
    };
    check(&mut c);
    drop(c);
    broker.restart();
    let mut c = broker.connect();
    check(&mut c);
    // Every topic is still writable and alterable after the restart.
    assert_eq!(produce(&mut c, "bystander", record_batch(1, None)), (0, 3));
    assert_eq!(
        produce(&mut c, "tiny", record_batch(1, None)).0,
        MESSAGE_TOO_LARGE
    );
    let (code, message) =
        alter_incremental(&mut c, "tiny", &[("max.message.bytes", "1048588")], false);
    assert_eq!(code, 0, "{message:?}");
    assert_eq!(produce(&mut c, "tiny", record_batch(1, None)), (0, 0));
    delete_topic(&mut c, "zero");
    assert_eq!(
        metadata_errors(&mut c, &["zero"]),
        vec![UNKNOWN_TOPIC_OR_PARTITION]
    );
    broker.stop();
}

/// Kafka's longest legal topic name (249 characters): its delete rename must fit a 255-byte
/// file name, so a re-created topic never serves the deleted records, now or after a restart.
#[test]
fn longest_topic_name_is_deleted_for_good() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    let long = format!("{}-long", "t".repeat(244));
    assert_eq!(long.len(), 249);
    create_topic_ok(&mut c, &long, &[]);
    create_topic_ok(&mut c, "neighbour", &[]);
    assert_eq!(produce(&mut c, &long, record_batch(5, None)), (0, 0));
    assert_eq!(produce(&mut c, "neighbour", record_batch(2, None)), (0, 0));
    delete_topic(&mut c, &long);
    create_topic_ok(&mut c, &long, &[]);

    let check = |c: &mut RawClient| {
        let (err, hw, log_start, got) = fetch(c, &long, 0);
        assert_eq!(
            (err, hw, log_start),
            (0, 0, 0),
            "re-created topic starts empty"
        );
        assert!(got.is_empty(), "deleted records served again: {got:?}");
        assert_eq!(list_offset(c, &long, -2), (0, 0));
        assert_eq!(list_offset(c, &long, -1), (0, 0));
        let (err, hw, _, _) = fetch(c, "neighbour", 0);
        assert_eq!((err, hw), (0, 2));
    };
    check(&mut c);
    let leftovers: Vec<String> = std::fs::read_dir(broker.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with("-delete"))
        .collect();
    assert!(leftovers.is_empty(), "not removed: {leftovers:?}");
    drop(c);
    broker.restart();
    let mut c = broker.connect();
    check(&mut c);
    broker.stop();
}

/// The start-up sweep moves aside partition directories the catalog does not know, including
/// one whose name leaves no room for the `.<id>-stray` suffix, removes truncated `-delete`
/// directories, and goes on past any entry it cannot handle.
#[test]
fn start_up_sweep_handles_the_longest_names() {
    let mut broker = Broker::start();
    let mut c = broker.connect();
    create_topic_ok(&mut c, "kept", &[]);
    assert_eq!(produce(&mut c, "kept", record_batch(5, None)), (0, 0));
    drop(c);
    broker.kill();
    let data = broker.data_dir().to_path_buf();
    let long = "g".repeat(249);
    let ghosts = [format!("{long}-0"), "ghost-0".to_string()];
    for ghost in &ghosts {
        std::fs::create_dir_all(data.join(ghost)).unwrap();
        std::fs::copy(
            data.join("kept-0/00000000000000000000.log"),
            data.join(ghost).join("00000000000000000000.log"),
        )
        .unwrap();
    }
    // A deleted topic's directory under a truncated name, its removal interrupted.
    let truncated = format!("{}-0.{}-delete", &long[..213], "0".repeat(32));
    assert_eq!(truncated.len(), 255);
    std::fs::create_dir_all(data.join(&truncated)).unwrap();
    broker.start_again();
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    for ghost in &ghosts {
        assert!(!names.contains(ghost), "{ghost} not moved aside: {names:?}");
    }
    assert!(
        !names.contains(&truncated),
        "-delete directory left: {names:?}"
    );
    let strays = names.iter().filter(|n| n.ends_with("-stray")).count();
    assert_eq!(strays, 2, "strays kept aside, not deleted: {names:?}");
    let mut c = broker.connect();
    for ghost in [long.as_str(), "ghost"] {
        create_topic_ok(&mut c, ghost, &[]);
        let (err, hw, _, got) = fetch(&mut c, ghost, 0);
        assert_eq!((err, hw, got.len()), (0, 0, 0), "{ghost} starts empty");
    }
    let (err, hw, _, _) = fetch(&mut c, "kept", 0);
    assert_eq!((err, hw), (0, 5));
    broker.stop();
}
