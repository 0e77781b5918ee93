//! The transaction coordinator driven with raw Kafka requests against a real sluice child
//! (issue 15): InitProducerId with a transactional id (epoch bumps, fencing), KIP-890 part 1
//! verification of transactional produce (a partition not added to the transaction is
//! refused with INVALID_TXN_STATE, transactional records without a transactional id with
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka answers), EndTxn moving the last stable
//! offset, Describe/ListTransactions, the broker-side abort of a timed-out transaction (its
//! producer fenced), and a restart that rebuilds the coordinator's state from
//! `__transaction_state`.
//!
//! Transaction version 2 (KIP-890 part 2) gets its own test: the feature in ApiVersions,
//! partitions added by Produce v12 and TxnOffsetCommit v5, the epoch bump of EndTxn v5,
//! and the Jepsen interleavings it closes (a delayed EndTxn or marker of one transaction
//! never ends the next).
//!
//! Real clients run the same protocol in `transactions.rs`; this file pins the answers.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::requests::{create_topic_ok, name, produce_request, str_bytes};
use common::{Broker, RawClient, txn_batch};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;

const DEADLINE: Duration = Duration::from_secs(30);
const PAUSE: Duration = Duration::from_millis(20);
const TOPIC: &str = "txn-coord";

const INVALID_TXN_STATE: i16 = 48;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const PRODUCER_FENCED: i16 = 90;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const RETRIABLE: [i16; 4] = [14, 15, 16, 51]; // load in progress, not available, not coordinator, concurrent

/// Repeats `call` while it answers a retriable coordinator error.
fn settled<R>(mut call: impl FnMut() -> R, code: impl Fn(&R) -> i16) -> R {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = call();
        if !RETRIABLE.contains(&code(&r)) || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(PAUSE);
    }
}

fn find_coordinator(c: &mut RawClient, id: &str) -> i16 {
    let req = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![str_bytes(id)]);
    settled(
        || {
            let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &req);
            r.coordinators[0].error_code
        },
        |code| *code,
    )
}

fn init(c: &mut RawClient, id: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(str_bytes(id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    settled(
        || c.call(ApiKey::InitProducerId, 4, &req),
        |r: &InitProducerIdResponse| r.error_code,
    )
}

fn add_partitions(
    c: &mut RawClient,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[i32],
) -> Vec<i16> {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(str_bytes(id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(partitions.to_vec()),
        ]);
    let r: AddPartitionsToTxnResponse = settled(
        || c.call(ApiKey::AddPartitionsToTxn, 3, &req),
        |r: &AddPartitionsToTxnResponse| {
            r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
        },
    );
    r.results_by_topic_v3_and_below[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect()
}

fn end(c: &mut RawClient, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    settled(
        || {
            let r: EndTxnResponse = c.call(ApiKey::EndTxn, 3, &req);
            r.error_code
        },
        |code| *code,
    )
}

/// Produce v9 of `records` to `partition` with the request's transactional id: (error, message).
fn produce(c: &mut RawClient, id: Option<&str>, partition: i32, records: Bytes) -> (i16, String) {
    let req = produce_request(TOPIC, partition, records, -1)
        .with_transactional_id(id.map(|t| TransactionalId(str_bytes(t))));
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let p = &r.responses[0].partition_responses[0];
    (
        p.error_code,
        p.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// ListOffsets(latest) of `partition` at `isolation_level` (0 uncommitted, 1 committed).
fn latest(c: &mut RawClient, partition: i32, isolation_level: i8) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(-1),
                ]),
        ]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{p:?}");
    p.offset
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(PAUSE);
    }
}

fn describe(c: &mut RawClient, id: &str) -> describe_transactions_response::TransactionState {
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(str_bytes(id))]);
    let r: DescribeTransactionsResponse = c.call(ApiKey::DescribeTransactions, 0, &req);
    r.transaction_states.into_iter().next().expect("one state")
}

#[test]
fn transactions_are_verified_ended_fenced_expired_and_reloaded() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    // Timed-out transactions are looked for every 200 ms instead of Kafka's 10 s.
    writeln!(
        config,
        "[transaction]\nabort_timed_out_transaction_cleanup_interval_ms = 200"
    )
    .unwrap();
    let config_path = config.path().to_str().unwrap().to_string();
    let mut broker = Broker::start_with(&["--config", &config_path]);
    let mut c = broker.connect();
    create_topic_ok(&mut c, TOPIC, &[]);
    assert_eq!(find_coordinator(&mut c, "app"), 0);
    let first = init(&mut c, "app", 60_000);
    assert_eq!(
        (first.error_code, first.producer_epoch),
        (0, 0),
        "{first:?}"
    );
    let pid = first.producer_id.0;

    // KIP-890 part 1: not added to the transaction yet, so refused and nothing appended.
    let (code, message) = produce(&mut c, Some("app"), 0, txn_batch(5, pid, 0, 0));
    assert_eq!(code, INVALID_TXN_STATE, "{message}");
    assert!(
        message.contains("not added to the transaction"),
        "{message}"
    );
    let (code, _) = produce(&mut c, None, 0, txn_batch(5, pid, 0, 0));
    assert_eq!(code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    assert_eq!(latest(&mut c, 0, 0), 0, "refused batches left no trace");

    // Added: the data goes in; read_committed stops before it (LSO) until the commit.
    assert_eq!(add_partitions(&mut c, "app", pid, 0, &[0]), vec![0]);
    assert_eq!(
        produce(&mut c, Some("app"), 0, txn_batch(5, pid, 0, 0)).0,
        0
    );
    assert_eq!(
        produce(&mut c, Some("app"), 0, txn_batch(3, pid, 0, 5)).0,
        0
    );
    assert_eq!((latest(&mut c, 0, 0), latest(&mut c, 0, 1)), (8, 0));
    let open = describe(&mut c, "app");
    assert_eq!(
        (open.error_code, open.transaction_state.as_str()),
        (0, "Ongoing")
    );
    assert_eq!(open.topics[0].partitions, vec![0]);
    assert_eq!(end(&mut c, "app", pid, 0, true), 0);
    // The marker follows EndTxn's answer: 8 records + 1 control batch, all stable.
    wait_for("the commit marker", || latest(&mut c, 0, 1) == 9);
    wait_for("CompleteCommit", || {
        describe(&mut c, "app").transaction_state.as_str() == "CompleteCommit"
    });
    assert_eq!(
        end(&mut c, "app", pid, 0, true),
        0,
        "a retried commit is answered NONE"
    );
    assert_eq!(end(&mut c, "app", pid, 0, false), INVALID_TXN_STATE);

    // A second producer of the same id fences the first one.
    let second = init(&mut c, "app", 60_000);
    assert_eq!((second.producer_id.0, second.producer_epoch), (pid, 1));
    assert_eq!(
        add_partitions(&mut c, "app", pid, 0, &[0]),
        vec![PRODUCER_FENCED]
    );
    let (code, _) = produce(&mut c, Some("app"), 0, txn_batch(1, pid, 0, 8));
    assert_eq!(
        code, INVALID_PRODUCER_EPOCH,
        "the old epoch's produce is fenced"
    );

    // A transaction past its timeout is aborted by the coordinator, fencing its producer.
    let t = init(&mut c, "slow", 1_000);
    let (tpid, tepoch) = (t.producer_id.0, t.producer_epoch);
    assert_eq!(add_partitions(&mut c, "slow", tpid, tepoch, &[0]), vec![0]);
    assert_eq!(
        produce(&mut c, Some("slow"), 0, txn_batch(2, tpid, tepoch, 0)).0,
        0
    );
    assert_eq!(
        latest(&mut c, 0, 1),
        9,
        "the open transaction holds the LSO"
    );
    wait_for("the timed-out transaction's abort", || {
        describe(&mut c, "slow").transaction_state.as_str() == "CompleteAbort"
    });
    let aborted = describe(&mut c, "slow");
    // The coordinator fences with epoch + 1; at the cluster's transaction version 2 (the
    // default) its abort bumps once more, as Kafka's does.
    assert_eq!(
        aborted.producer_epoch,
        tepoch + 2,
        "aborted under a bumped epoch"
    );
    assert_eq!(
        latest(&mut c, 0, 1),
        latest(&mut c, 0, 0),
        "the LSO moved past the abort"
    );
    assert_eq!(end(&mut c, "slow", tpid, tepoch, true), PRODUCER_FENCED);

    // ListTransactions sees both ids; the state filter works.
    let r: ListTransactionsResponse = c.call(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default().with_duration_filter(-1),
    );
    let mut ids: Vec<String> = r
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.0.to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["app", "slow"]);
    let r: ListTransactionsResponse = c.call(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default()
            .with_state_filters(vec![str_bytes("CompleteAbort"), str_bytes("Bogus")])
            .with_duration_filter(-1),
    );
    assert_eq!(r.transaction_states.len(), 1);
    assert_eq!(r.unknown_state_filters, vec![str_bytes("Bogus")]);
    // v2 (KIP-1152): the whole id must match the pattern; a bad pattern is refused.
    let by_pattern = |c: &mut RawClient, pattern: &str| -> ListTransactionsResponse {
        c.call(
            ApiKey::ListTransactions,
            2,
            &ListTransactionsRequest::default()
                .with_duration_filter(-1)
                .with_transactional_id_pattern(Some(str_bytes(pattern))),
        )
    };
    let r = by_pattern(&mut c, "ap+");
    let ids: Vec<String> = r
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.0.to_string())
        .collect();
    assert_eq!(ids, vec!["app"]);
    assert!(
        by_pattern(&mut c, "sl").transaction_states.is_empty(),
        "a prefix is not a match"
    );
    assert_eq!(
        by_pattern(&mut c, "(").error_code,
        128,
        "INVALID_REGULAR_EXPRESSION"
    );

    // A restart rebuilds every id from __transaction_state: the next epochs follow on.
    drop(c);
    broker.restart();
    let mut c = broker.connect();
    let again = init(&mut c, "app", 60_000);
    assert_eq!(
        (again.producer_id.0, again.producer_epoch),
        (pid, 2),
        "{again:?}"
    );
    let slow = describe(&mut c, "slow");
    assert_eq!(
        (slow.transaction_state.as_str(), slow.producer_epoch),
        ("CompleteAbort", tepoch + 2)
    );
    assert_eq!(latest(&mut c, 0, 1), latest(&mut c, 0, 0));
}

/// EndTxn v5: (error, producer id, epoch).
fn end_v5(c: &mut RawClient, id: &str, pid: i64, epoch: i16, commit: bool) -> (i16, i64, i16) {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let r: EndTxnResponse = settled(
        || c.call(ApiKey::EndTxn, 5, &req),
        |r: &EndTxnResponse| r.error_code,
    );
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// Produce v12 (transaction version 2: the partition is added by the produce itself).
fn produce_v12(c: &mut RawClient, id: &str, partition: i32, records: Bytes) -> i16 {
    let req = produce_request(TOPIC, partition, records, -1)
        .with_transactional_id(Some(TransactionalId(str_bytes(id))));
    settled(
        || {
            let r: ProduceResponse = c.call(ApiKey::Produce, 12, &req);
            r.responses[0].partition_responses[0].error_code
        },
        |code| *code,
    )
}

/// WriteTxnMarkers v1 to `partition` as a Sluice coordinator sends it: a transaction version 2
/// marker carries the version tag (10000), every marker its transaction's sequence (10001)
/// when given. The partition's error code.
fn marker(
    c: &mut RawClient,
    (pid, epoch): (i64, i16),
    commit: bool,
    partition: i32,
    version_2: bool,
    sequence: Option<u64>,
) -> i16 {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    let mut m = WritableTxnMarker::default()
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_coordinator_epoch(i32::MAX)
        .with_topics(vec![
            WritableTxnMarkerTopic::default()
                .with_name(name(TOPIC))
                .with_partition_indexes(vec![partition]),
        ]);
    if version_2 {
        m.unknown_tagged_fields
            .insert(10_000, Bytes::from_static(&[2]));
    }
    if let Some(sequence) = sequence {
        m.unknown_tagged_fields
            .insert(10_001, Bytes::copy_from_slice(&sequence.to_be_bytes()));
    }
    let r: WriteTxnMarkersResponse = c.call(
        ApiKey::WriteTxnMarkers,
        1,
        &WriteTxnMarkersRequest::default().with_markers(vec![m]),
    );
    r.markers[0].topics[0].partitions[0].error_code
}

#[test]
fn transaction_version_2_bumps_every_end_and_closes_the_jepsen_interleavings() {
    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic_ok(&mut c, TOPIC, &[]);

    // The feature, as Kafka 4 clients read it to pick transaction version 2.
    let v: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default());
    let supported = v
        .supported_features
        .iter()
        .find(|f| f.name.as_str() == "transaction.version")
        .expect("transaction.version supported");
    assert_eq!((supported.min_version, supported.max_version), (0, 2));
    let finalized = v
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "transaction.version")
        .expect("transaction.version finalized");
    assert_eq!(
        (finalized.min_version_level, finalized.max_version_level),
        (2, 2)
    );
    assert!(v.finalized_features_epoch >= 0, "clients ignore epoch -1");
    // Below v4 a supported feature with minimum 0 is not listed (Kafka's alterFeatureLevel0).
    let v3: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(
        v3.supported_features.is_empty(),
        "{:?}",
        v3.supported_features
    );
    assert_eq!(v3.finalized_features, v.finalized_features);

    assert_eq!(find_coordinator(&mut c, "v2"), 0);
    let first = init(&mut c, "v2", 60_000);
    let (pid, e0) = (first.producer_id.0, first.producer_epoch);

    // T1: Produce v12 adds the partition itself (no AddPartitionsToTxn); the LSO holds.
    assert_eq!(produce_v12(&mut c, "v2", 0, txn_batch(4, pid, e0, 0)), 0);
    assert_eq!((latest(&mut c, 0, 0), latest(&mut c, 0, 1)), (4, 0));
    assert_eq!(describe(&mut c, "v2").topics[0].partitions, vec![0]);
    // EndTxn v5 bumps the epoch and says so; the commit marker carries the new epoch.
    let (code, id, e1) = end_v5(&mut c, "v2", pid, e0, true);
    assert_eq!((code, id, e1), (0, pid, e0 + 1));
    wait_for("T1's marker", || latest(&mut c, 0, 1) == 5);
    // A retry of T1's EndTxn is answered with the same identity, nothing written.
    assert_eq!(end_v5(&mut c, "v2", pid, e0, true), (0, pid, e1));
    assert_eq!(latest(&mut c, 0, 0), 5);

    // T2 at the bumped epoch.
    assert_eq!(produce_v12(&mut c, "v2", 0, txn_batch(2, pid, e1, 0)), 0);
    assert_eq!(latest(&mut c, 0, 1), 5, "T2 holds the LSO");
    // Jepsen: a delayed copy of T1's EndTxn arrives now. Under transaction version 1 it
    // would commit T2; here its epoch names T1, so it is fenced and T2 stays open.
    assert_eq!(end_v5(&mut c, "v2", pid, e0, true).0, PRODUCER_FENCED);
    assert_eq!(describe(&mut c, "v2").transaction_state.as_str(), "Ongoing");
    // Jepsen: a delayed copy of T1's marker (epoch e1) reaches the partition: refused,
    // so T2's records are neither committed by it nor cut off from their own marker.
    assert_eq!(
        marker(&mut c, (pid, e1), true, 0, true, None),
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(latest(&mut c, 0, 1), 5, "T2 still open");
    // T2 aborts: read_committed moves past it, its records are never committed.
    let (code, _, e2) = end_v5(&mut c, "v2", pid, e1, false);
    assert_eq!((code, e2), (0, e1 + 1));
    wait_for("T2's abort marker", || latest(&mut c, 0, 1) == 8);

    // An abort with nothing open still bumps (the producer cannot know whether a produce
    // added a partition); a commit with nothing open is refused.
    assert_eq!(end_v5(&mut c, "v2", pid, e2, true).0, INVALID_TXN_STATE);
    let (code, _, e3) = end_v5(&mut c, "v2", pid, e2, false);
    assert_eq!((code, e3), (0, e2 + 1));

    // TxnOffsetCommit v5 adds the group's offsets partition itself (no AddOffsetsToTxn).
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(str_bytes("v2")))
        .with_group_id(GroupId(str_bytes("v2-group")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(e3)
        .with_generation_id(-1)
        .with_member_id(str_bytes(""))
        .with_topics(vec![
            txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5),
                ]),
        ]);
    let r: TxnOffsetCommitResponse = settled(
        || c.call(ApiKey::TxnOffsetCommit, 5, &commit),
        |r: &TxnOffsetCommitResponse| r.topics[0].partitions[0].error_code,
    );
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let open = describe(&mut c, "v2");
    assert_eq!(open.transaction_state.as_str(), "Ongoing");
    assert_eq!(open.topics[0].topic.0.as_str(), "__consumer_offsets");
    assert_eq!(end_v5(&mut c, "v2", pid, e3, true).0, 0);
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes("v2-group")))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partition_indexes(vec![0]),
        ]))
        .with_require_stable(true);
    wait_for("the committed group offset", || {
        let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &fetch);
        r.topics[0].partitions[0].committed_offset == 5
    });
}

/// `[transaction] state_log_replication_factor` and `state_log_min_isr` (Kafka's
/// `transaction.state.log.replication.factor` / `.min.isr`) shape `__transaction_state` when
/// the first transactional FindCoordinator creates it: more replicas than live brokers leaves
/// it uncreated (COORDINATOR_NOT_AVAILABLE, as Kafka answers), and the min ISR is the topic's.
#[test]
fn the_state_topic_takes_its_replication_settings() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    writeln!(config, "[transaction]\nstate_log_replication_factor = 2").unwrap();
    let path = config.path().to_str().unwrap().to_string();
    let broker = Broker::start_with(&["--config", &path]);
    let mut c = broker.connect();
    let req = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![str_bytes("rf")]);
    let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &req);
    assert_eq!(r.coordinators[0].error_code, 15, "{r:?}");
    drop(c);
    drop(broker);

    let mut config = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        config,
        "[transaction]\nstate_log_num_partitions = 3\nstate_log_min_isr = 1\nstate_log_replication_factor = 1"
    )
    .unwrap();
    let path = config.path().to_str().unwrap().to_string();
    let broker = Broker::start_with(&["--config", &path]);
    let mut c = broker.connect();
    assert_eq!(find_coordinator(&mut c, "rf"), 0);
    let describe = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(str_bytes("__transaction_state"))
            .with_configuration_keys(Some(vec![
                str_bytes("min.insync.replicas"),
                str_bytes("cleanup.policy"),
            ])),
    ]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &describe);
    let values: Vec<(String, Option<String>)> = r.results[0]
        .configs
        .iter()
        .map(|e| (e.name.to_string(), e.value.as_ref().map(|v| v.to_string())))
        .collect();
    assert!(
        values.contains(&("min.insync.replicas".into(), Some("1".into())))
            && values.contains(&("cleanup.policy".into(), Some("compact".into()))),
        "{values:?}"
    );
    let md: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(name("__transaction_state"))),
        ])),
    );
    assert_eq!(md.topics[0].partitions.len(), 3);
}

/// Transaction version 1 (what librdkafka, kafkajs and sarama speak): a late copy of an
/// earlier transaction's marker carries the same producer id, epoch and coordinator epoch as
/// the next transaction's; it names its transaction by the coordinator's sequence
/// (`txn::TXN_SEQUENCE_TAG`), which the partition learnt when it verified the next
/// transaction's first batch, so it is refused and cannot end that transaction (Jepsen's
/// interleaving; Kafka applies the copy).
#[test]
fn a_late_marker_copy_never_ends_the_next_transaction_at_version_1() {
    let broker = Broker::start();
    let mut c = broker.connect();
    create_topic_ok(&mut c, TOPIC, &[]);
    assert_eq!(find_coordinator(&mut c, "v1"), 0);
    let first = init(&mut c, "v1", 60_000);
    let (pid, e) = (first.producer_id.0, first.producer_epoch);
    // T1 (the id's first transaction, sequence 1) commits.
    assert_eq!(add_partitions(&mut c, "v1", pid, e, &[0]), vec![0]);
    assert_eq!(produce(&mut c, Some("v1"), 0, txn_batch(2, pid, e, 0)).0, 0);
    assert_eq!(end(&mut c, "v1", pid, e, true), 0);
    wait_for("T1's marker", || latest(&mut c, 0, 1) == 3);
    // T2 (sequence 2) at the same epoch, open on the partition.
    assert_eq!(add_partitions(&mut c, "v1", pid, e, &[0]), vec![0]);
    assert_eq!(produce(&mut c, Some("v1"), 0, txn_batch(2, pid, e, 2)).0, 0);
    assert_eq!(latest(&mut c, 0, 1), 3, "T2 holds the LSO");
    // The late copy of T1's COMMIT marker: refused, T2 still open.
    assert_eq!(
        marker(&mut c, (pid, e), true, 0, false, Some(1)),
        INVALID_TXN_STATE
    );
    assert_eq!(latest(&mut c, 0, 1), 3, "T2 still open");
    assert_eq!(latest(&mut c, 0, 0), 5, "nothing appended");
    // T2 ends by its own abort; read_committed moves past it.
    assert_eq!(end(&mut c, "v1", pid, e, false), 0);
    wait_for("T2's abort marker", || latest(&mut c, 0, 1) == 6);
}

/// Transaction version 2: one Produce v12 to four partitions of a new transaction adds all
/// four at once, every partition answered NONE at the first try (each add that meets
/// another's write of the transaction waits for it rather than answering
/// CONCURRENT_TRANSACTIONS, which reached the producer as NOT_ENOUGH_REPLICAS and cost a
/// resend round per partition). And a partition leader's verification (AddPartitionsToTxn
/// v4 `verify_only`, what another broker sends) carries the transaction's sequence in
/// `txn::TXN_SEQUENCE_TAG`, from which remote leaders learn it.
#[test]
fn one_produce_adds_all_its_partitions_and_verification_names_the_transaction() {
    const SPREAD: &str = "txn-spread";
    const PARTITIONS: i32 = 4;
    let broker = Broker::start();
    let mut c = broker.connect();
    let created: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![common::requests::new_topic(
                SPREAD,
                PARTITIONS,
                1,
                &[],
            )])
            .with_timeout_ms(10_000),
    );
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(find_coordinator(&mut c, "spread"), 0);
    let first = init(&mut c, "spread", 60_000);
    let (pid, e) = (first.producer_id.0, first.producer_epoch);
    let mut req = produce_request(SPREAD, 0, txn_batch(1, pid, e, 0), -1)
        .with_transactional_id(Some(TransactionalId(str_bytes("spread"))));
    for p in 1..PARTITIONS {
        req.topic_data[0].partition_data.push(
            produce_request::PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(txn_batch(1, pid, e, 0))),
        );
    }
    let r: ProduceResponse = c.call(ApiKey::Produce, 12, &req);
    let codes: Vec<i16> = r.responses[0]
        .partition_responses
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0; PARTITIONS as usize], "{r:?}");
    let open = describe(&mut c, "spread");
    assert_eq!(open.topics[0].partitions.len(), PARTITIONS as usize);

    let verify = AddPartitionsToTxnRequest::default().with_transactions(vec![
        add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(str_bytes("spread")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(e)
            .with_verify_only(true)
            .with_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(name(SPREAD))
                    .with_partitions(vec![2]),
            ]),
    ]);
    let r: AddPartitionsToTxnResponse = c.call(ApiKey::AddPartitionsToTxn, 4, &verify);
    let t = &r.results_by_transaction[0];
    assert_eq!(
        t.topic_results[0].results_by_partition[0].partition_error_code,
        0
    );
    let sequence = t
        .unknown_tagged_fields
        .get(&10_001)
        .map(|b| u64::from_be_bytes(b.as_ref().try_into().expect("8 bytes")));
    assert_eq!(sequence, Some(1), "the id's first transaction");
}
