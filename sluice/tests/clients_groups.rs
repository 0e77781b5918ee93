//! Consumer groups with real clients (issue 4): tests/clients/group_scenario.py drives
//! confluent-kafka and kafka-python members, kafkajs_client.js --mode group drives kafkajs.
//!
//! These were `#[ignore]`d until the group coordinator landed (issue 4, 2dc1948); they run by
//! default now. Each starts its own broker and takes 5-20 s (members join, rebalance, and one
//! waits out a 6 s session timeout).

mod clients_support;
mod common;

use clients_support::{Broker, Client, run_client};

fn scenario(broker: &Broker, name: &str, topic: &str, extra: &[&str]) -> clients_support::Summary {
    run_client(
        Client::GroupScenario,
        broker,
        &[&["--scenario", name, "--topic", topic][..], extra].concat(),
    )
}

/// Three members (2 librdkafka, 1 kafka-python) share 6 partitions; a 4th joins, one leaves, one
/// is killed without leaving; every record is consumed exactly once.
#[test]
fn group_members_share_partitions_through_rebalances() {
    let broker = Broker::start();
    let summary = scenario(&broker, "share", "group-share", &[]);
    assert_eq!(
        summary.field("produced"),
        summary.field("consumed"),
        "{}",
        summary.line
    );
    broker.stop();
}

/// Committed offsets survive a broker restart; the group resumes with nothing skipped or re-read.
#[test]
fn group_resumes_from_committed_offsets_after_restart() {
    let mut broker = Broker::start();
    let state_dir = tempfile::tempdir().expect("temp dir");
    let state = state_dir.path().join("group-restart.json");
    let state = state.to_str().expect("utf-8 path").to_string();
    scenario(&broker, "restart-1", "group-restart", &["--state", &state]);
    broker.restart();
    let summary = scenario(&broker, "restart-2", "group-restart", &["--state", &state]);
    assert!(
        summary.line.contains("resumed_from=3000"),
        "{}",
        summary.line
    );
    broker.stop();
}

/// A static member (group.instance.id) restarted within its session timeout gets its partitions
/// back without a rebalance.
#[test]
fn group_static_member_restart_without_rebalance() {
    let broker = Broker::start();
    scenario(&broker, "static", "group-static", &[]);
    broker.stop();
}

/// librdkafka with group.protocol=consumer (KIP-848, broker-side assignment).
#[test]
fn group_kip848_consumer_protocol() {
    let broker = Broker::start();
    scenario(&broker, "kip848", "group-kip848", &[]);
    broker.stop();
}

/// Two kafkajs consumers of one group read every record once; one leaves, the other takes over
/// its partitions and reads a second batch; the committed offsets end at the high watermarks.
#[test]
fn group_kafkajs_consumers() {
    let broker = Broker::start();
    let summary = run_client(
        Client::Kafkajs,
        &broker,
        &[
            "--mode",
            "group",
            "--topic",
            "group-kafkajs",
            "--partitions",
            "6",
            "--records",
            "3000",
        ],
    );
    summary.assert_counts(6000, 6000);
    broker.stop();
}

/// Incremental (cooperative-sticky, KIP-429) rebalances with librdkafka: a join and a leave
/// move only the partitions that change owner.
#[test]
fn group_cooperative_sticky_rebalances() {
    let broker = Broker::start();
    scenario(&broker, "cooperative", "group-coop", &[]);
    broker.stop();
}

/// Two aiokafka members of one group split the partitions and read every record once with
/// explicit commits; a third member of the group then reads only what was added since.
#[test]
fn group_aiokafka_members() {
    let broker = Broker::start();
    let args = [
        "--mode",
        "group",
        "--topic",
        "group-aiokafka",
        "--partitions",
        "6",
        "--records",
        "3000",
    ];
    run_client(Client::Aiokafka, &broker, &args).assert_counts(3006, 3006);
    broker.stop();
}

/// kcat's balanced consumer (-G, librdkafka 2.0: older group API versions): reads everything,
/// then nothing (resumed at the committed end), then exactly the records added since.
#[test]
fn group_kcat_balanced_consumer() {
    let broker = Broker::start();
    let args = [
        "--mode",
        "group",
        "--topic",
        "group-kcat",
        "--partitions",
        "3",
        "--records",
        "3000",
    ];
    run_client(Client::Kcat, &broker, &args).assert_counts(3030, 3030);
    broker.stop();
}

/// The admin views of a group (ListGroups with a state filter, DescribeGroups, lag from
/// OffsetFetch + ListOffsets, DeleteGroups) through librdkafka's AdminClient, live and Empty.
#[test]
fn group_admin_views() {
    let broker = Broker::start();
    scenario(&broker, "admin", "group-admin", &[]);
    broker.stop();
}

/// The same views through kafka-python's KafkaAdminClient, which always asks DescribeGroups v3
/// for authorized operations.
#[test]
fn group_admin_views_kafka_python() {
    let broker = Broker::start();
    scenario(
        &broker,
        "admin",
        "group-admin-kp",
        &["--kafka-python-admin"],
    );
    broker.stop();
}
