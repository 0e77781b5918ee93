//! A real 3-process cluster on loopback (issue 7): the nodes are `sluice start --seeds ...`
//! children of the test (tests/common/cluster.rs), on ports picked up front, with short failure
//! detection (broker session 3 s, heartbeats 500 ms, replica lag 5 s).
//!
//! - `three_nodes_list_each_other_and_replicate_a_topic`: raw Kafka requests only. Every node's
//!   Metadata lists the 3 brokers at their listeners and a controller; a topic created with
//!   RF=3 shows, on every node, 3 replicas, a full ISR and a leader on every partition.
//! - `failover_under_idempotent_producer_and_live_group`: the "must show" of issue 7 with
//!   confluent-kafka (clients_support/cluster_scenario.py, run with SLUICE_TEST_PYTHON as the
//!   other client tests are). The script asks for `KILL n` / `RESTART n` on stdout; this test
//!   owns the processes and answers `OK <unix_ms>`. It prints the kill-to-first-acknowledged-
//!   produce times (`TIMING ...` lines, for the docs).
//!
//! A failure prints the tail of every node's log and keeps the cluster's temp dir.

mod clients_support;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::cluster::{Cluster, unix_ms};
use common::tail;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

const NODES: usize = 3;
/// How long the quorum may take to form and every broker to register (debug builds, 2 cores).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new topic may take to have a leader and full ISR on every partition.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole real-client scenario: two failovers, restarts, catch-up and a full read.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(480);
/// How often the scenario's runner checks that no node died on its own.
const ALIVE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
// NOT_CONTROLLER: CreateTopics sent to a node that does not take it; retried elsewhere.
use kafka_wire::error::NOT_CONTROLLER;

#[test]
fn three_nodes_list_each_other_and_replicate_a_topic() {
    let cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster);

    let answered = create_topic(
        &cluster,
        "replicated",
        3,
        3,
        &[("min.insync.replicas", "2")],
    );
    cluster.wait_until(
        "topic `replicated`: 3 partitions, 3 replicas, full ISR and a leader, on every node",
        TOPIC_TIMEOUT,
        |c| {
            for node in c.node_ids() {
                let md = c.try_metadata(node, Some(&["replicated"]))?;
                let [topic] = &md.topics[..] else {
                    return Err(format!("node {node}: {} topics", md.topics.len()));
                };
                if topic.error_code != 0 {
                    return Err(format!("node {node}: topic error {}", topic.error_code));
                }
                if topic.partitions.len() != 3 {
                    return Err(format!("node {node}: {} partitions", topic.partitions.len()));
                }
                for p in &topic.partitions {
                    let mut replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
                    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
                    replicas.sort_unstable();
                    isr.sort_unstable();
                    let state = format!(
                        "node {node} partition {}: error {} leader {} epoch {} replicas {replicas:?} isr {isr:?}",
                        p.partition_index, p.error_code, p.leader_id.0, p.leader_epoch
                    );
                    let ok = p.error_code == 0
                        && replicas == c.node_ids()
                        && isr == replicas
                        && replicas.contains(&p.leader_id.0)
                        && p.leader_epoch >= 0;
                    if !ok {
                        return Err(state);
                    }
                }
            }
            Ok(())
        },
    );
    if let Some(answered) = answered {
        assert_eq!(
            answered,
            (3, 3),
            "CreateTopics answered (partitions, replication factor) {answered:?}"
        );
    }
    cluster.stop();
}

#[test]
fn failover_under_idempotent_producer_and_live_group() {
    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster);
    let summary = run_scenario(&mut cluster, "failover");
    assert_eq!(
        field(&summary, "acked"),
        field(&summary, "verified"),
        "{summary}"
    );
    cluster.stop();
}

/// DeleteRecords on the leader reaches the followers (they follow the leader's log start
/// offset from its fetch answers), so after the leader dies the new leader's earliest offset
/// is where the records were deleted, not 0.
#[test]
fn followers_follow_the_leaders_log_start() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest,
        ListOffsetsResponse, ProduceRequest, ProduceResponse,
    };
    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster);
    create_topic(&cluster, "trimmed", 1, 3, &[]);
    let name = || TopicName(StrBytes::from_static_str("trimmed"));
    let leader = |c: &Cluster, not: Option<i32>| -> Result<i32, String> {
        let live: Vec<i32> = c
            .node_ids()
            .into_iter()
            .filter(|n| Some(*n) != not)
            .collect();
        let md = c.try_metadata(live[0], Some(&["trimmed"]))?;
        let p = md
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or("no partition")?;
        let leader = p.leader_id.0;
        if p.error_code != 0 || !live.contains(&leader) || p.isr_nodes.len() != live.len() {
            return Err(format!(
                "leader {leader}, isr {:?}, error {}",
                p.isr_nodes, p.error_code
            ));
        }
        Ok(leader)
    };
    let mut first = -1;
    cluster.wait_until("a leader and a full ISR", TOPIC_TIMEOUT, |c| {
        first = leader(c, None)?;
        Ok(())
    });
    // The leader may learn it leads a moment after Metadata says so: retry until it appends.
    let mut appended = 0;
    cluster.wait_until("two acks=all produces on the leader", TOPIC_TIMEOUT, |c| {
        while appended < 2 {
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(name())
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(common::record_batch(5, None))),
                        ]),
                ]);
            let resp: ProduceResponse = c.try_call(first, ApiKey::Produce, 9, &req)?;
            match resp.responses[0].partition_responses[0].error_code {
                0 => appended += 1,
                code => return Err(format!("produce error {code}")),
            }
        }
        Ok(())
    });
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(7),
                ]),
        ]);
    let resp: DeleteRecordsResponse = cluster
        .try_call(first, ApiKey::DeleteRecords, 2, &req)
        .unwrap();
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 7));
    // Followers learn the log start from their next fetch (within replica_fetch_wait_max_ms);
    // give them a few rounds, then kill the leader.
    thread::sleep(Duration::from_secs(2));
    cluster.kill(first);
    let mut second = -1;
    cluster.wait_until("a new leader", TOPIC_TIMEOUT, |c| {
        second = leader(c, Some(first))?;
        Ok(())
    });
    let earliest = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-2),
                ]),
        ]);
    cluster.wait_until(
        "the new leader's earliest offset is 7",
        TOPIC_TIMEOUT,
        |c| {
            let resp: ListOffsetsResponse =
                c.try_call(second, ApiKey::ListOffsets, 7, &earliest)?;
            let p = &resp.topics[0].partitions[0];
            match (p.error_code, p.offset) {
                (0, 7) => Ok(()),
                other => Err(format!("node {second}: (error, earliest) = {other:?}")),
            }
        },
    );
    cluster.stop();
}

/// Issue 12: a partition emptied by DeleteRecords used to panic every node at the next start
/// (an empty leader-epoch cache with a log end above 0), and a topic nobody touched vanished
/// cluster-wide. After SIGKILL of every node and a restart of all, both topics serve.
#[test]
fn a_partition_emptied_by_delete_records_survives_a_full_cluster_restart() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster);
    create_topic(&cluster, "purged", 1, 3, &[]);
    create_topic(&cluster, "untouched", 1, 3, &[]);
    let (leader, base) = produce_on_leader(&cluster, "purged", 5);
    assert_eq!(base, 0);
    assert_eq!(produce_on_leader(&cluster, "untouched", 3).1, 0);
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("purged")))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(5),
                ]),
        ]);
    let resp: DeleteRecordsResponse = cluster
        .try_call(leader, ApiKey::DeleteRecords, 2, &req)
        .unwrap();
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 5));
    // Every replica's checkpoint has the log start at its end (followers learn it from their
    // next fetch): all three logs are empty at offset 5.
    cluster.wait_until("every replica's log starts at 5", TOPIC_TIMEOUT, |c| {
        for node in c.node_ids() {
            let checkpoint = c.data_dir(node).join("purged-0").join("sluice.checkpoint");
            let bytes = std::fs::read(&checkpoint).map_err(|e| format!("node {node}: {e}"))?;
            let log_start = bytes
                .get(14..22)
                .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")));
            if log_start != Some(5) {
                return Err(format!("node {node}: log start {log_start:?}"));
            }
        }
        Ok(())
    });
    for node in cluster.node_ids() {
        cluster.kill(node);
    }
    for node in cluster.node_ids() {
        cluster.restart(node);
    }
    wait_for_brokers(&cluster);
    let (_, base) = produce_on_leader(&cluster, "purged", 2);
    assert_eq!(base, 5, "the emptied partition continues at its end");
    let (_, base) = produce_on_leader(&cluster, "untouched", 1);
    assert_eq!(base, 3, "the untouched topic kept its records");
    for node in cluster.node_ids() {
        let log = cluster.log(node);
        assert!(
            !log.contains("panicked"),
            "node {node}:\n{}",
            tail(&log, 8000)
        );
    }
    cluster.stop();
}

/// Produces `count` records (acks=all) to partition 0 of `topic` on its leader, retrying
/// while leadership settles; returns (leader, base offset).
fn produce_on_leader(cluster: &Cluster, topic: &str, count: i32) -> (i32, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(common::record_batch(count, None))),
                ]),
        ]);
    let mut acked = None;
    cluster.wait_until(
        &format!("an acks=all produce to {topic}"),
        TOPIC_TIMEOUT,
        |c| {
            let md = c.try_metadata(c.node_ids()[0], Some(&[topic]))?;
            let leader = md
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .map(|p| p.leader_id.0)
                .filter(|&l| l >= 0)
                .ok_or("no leader yet")?;
            let resp: ProduceResponse = c.try_call(leader, ApiKey::Produce, 9, &req)?;
            let p = &resp.responses[0].partition_responses[0];
            match p.error_code {
                0 => {
                    acked = Some((leader, p.base_offset));
                    Ok(())
                }
                code => Err(format!("node {leader}: produce error {code}")),
            }
        },
    );
    acked.expect("acknowledged")
}

/// Every node's Metadata lists all nodes at their Kafka listeners, and names a controller.
fn wait_for_brokers(cluster: &Cluster) {
    let took = cluster.wait_until(
        "every node lists every broker and a controller",
        FORM_TIMEOUT,
        |c| {
            let want: Vec<(i32, String)> = c
                .node_ids()
                .into_iter()
                .map(|id| (id, c.kafka_addr(id).to_string()))
                .collect();
            for node in c.node_ids() {
                let md = c.try_metadata(node, None)?;
                let mut brokers: Vec<(i32, String)> = md
                    .brokers
                    .iter()
                    .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
                    .collect();
                brokers.sort();
                if brokers != want {
                    return Err(format!("node {node} lists {brokers:?}, want {want:?}"));
                }
                if !c.node_ids().contains(&md.controller_id.0) {
                    return Err(format!("node {node}: controller id {}", md.controller_id.0));
                }
            }
            Ok(())
        },
    );
    eprintln!("cluster formed: every node lists {NODES} brokers after {took:?}");
}

/// CreateTopics through the controller named in Metadata, then any node that takes it.
/// Returns the (partitions, replication factor) the answer gave (CreateTopics v5+), None when
/// the topic turned out to exist after a lost answer.
fn create_topic(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> Option<(i32, i16)> {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
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
        .with_timeout_ms(30_000);
    cluster.create_topic(&req, TOPIC_TIMEOUT)
}

/// Runs cluster_scenario.py against the cluster, serving its KILL/RESTART requests; returns
/// its SUMMARY line after printing its TIMING lines. Any failure panics with its output (and
/// the cluster's Drop prints the node logs).
fn run_scenario(cluster: &mut Cluster, topic: &str) -> String {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients_support/cluster_scenario.py");
    let mut child = ChildGuard(
        Command::new(clients_support::python())
            .arg(&script)
            .args(["--bootstrap", &cluster.bootstrap(), "--topic", topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", script.display())),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    let stdout = child.0.stdout.take().expect("stdout");
    let stderr = child.0.stderr.take().expect("stderr");
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let stdout_reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let mut stderr = stderr;
        let _ = stderr.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });

    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    let mut out = String::new();
    let mut failure = None;
    loop {
        if let Err(dead) = cluster.check_alive() {
            failure = Some(dead);
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match line_rx.recv_timeout(left.min(ALIVE_CHECK_INTERVAL)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if left > ALIVE_CHECK_INTERVAL => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                failure = Some(format!("did not finish within {SCENARIO_TIMEOUT:?}"));
                break;
            }
        };
        out.push_str(&line);
        out.push('\n');
        let answer_ms = if let Some(node) = line.strip_prefix("KILL ") {
            let node = parse_node(cluster, node);
            eprintln!("scenario: SIGKILL node {node}");
            unix_ms(cluster.kill(node))
        } else if let Some(node) = line.strip_prefix("RESTART ") {
            let node = parse_node(cluster, node);
            eprintln!("scenario: restart node {node}");
            cluster.restart(node);
            unix_ms(SystemTime::now())
        } else {
            continue;
        };
        if let Err(e) = writeln!(stdin, "OK {answer_ms}").and_then(|()| stdin.flush()) {
            failure = Some(format!("cannot answer `{line}`: {e}"));
            break;
        }
    }
    drop(stdin);
    let status = if failure.is_none() {
        wait_exit(&mut child.0, deadline)
    } else {
        None
    };
    child.kill();
    let _ = stdout_reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    let summary = out
        .lines()
        .rev()
        .find(|l| l.starts_with("SUMMARY ") && l.ends_with(" OK"))
        .map(str::to_string);
    match (failure, status, summary) {
        (None, Some(s), Some(summary)) if s.success() => {
            // Its progress lines (not librdkafka's), shown with --nocapture.
            for line in stderr.lines().filter(|l| l.starts_with('[')) {
                eprintln!("{line}");
            }
            for line in out.lines().filter(|l| l.starts_with("TIMING ")) {
                eprintln!("{line}");
            }
            eprintln!("{summary}");
            summary
        }
        (failure, status, _) => panic!(
            "cluster_scenario.py: {} (exit status {status:?})\n--- its stderr ---\n{}\n--- its stdout ---\n{}",
            failure.unwrap_or_else(|| "failed".to_string()),
            tail(&stderr, 20_000),
            tail(&out, 4_000),
        ),
    }
}

fn parse_node(cluster: &Cluster, word: &str) -> i32 {
    let node: i32 = word
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("scenario asked for node {word:?}"));
    assert!(
        cluster.node_ids().contains(&node),
        "scenario asked for node {node}, not in the cluster"
    );
    node
}

/// The value of `key=value` in a summary line.
fn field(summary: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {summary}"))
        .to_string()
}

fn wait_exit(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the scenario process when the test ends early (a panic while serving it).
struct ChildGuard(Child);

impl ChildGuard {
    fn kill(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Issue 12 item 2 on the cluster path: Kafka's boundary topic configs
/// (index.interval.bytes=1, max.message.bytes=1), given at creation and by
/// IncrementalAlterConfigs, open on every node and survive a restart of every node with the
/// untouched topic beside them; a value outside Kafka's range gets INVALID_CONFIG from any
/// node before anything is proposed.
#[test]
fn boundary_topic_configs_open_on_every_node() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    use kafka_wire::error::INVALID_CONFIG;

    let mut cluster = Cluster::start(NODES);
    wait_for_brokers(&cluster);
    let tiny = [("index.interval.bytes", "1"), ("max.message.bytes", "1")];
    create_topic(&cluster, "tiny", 2, 3, &tiny);
    create_topic(&cluster, "plain", 2, 3, &[]);
    for node in cluster.node_ids() {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("refused")))
                    .with_num_partitions(1)
                    .with_replication_factor(3)
                    .with_configs(vec![
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("index.interval.bytes"))
                            .with_value(Some(StrBytes::from_static_str("-1"))),
                    ]),
            ])
            .with_timeout_ms(30_000);
        let resp: CreateTopicsResponse = cluster.connect(node).call(ApiKey::CreateTopics, 7, &req);
        assert_eq!(resp.topics[0].error_code, INVALID_CONFIG, "node {node}");
    }
    // The untouched topic altered the same way, through whichever node takes it.
    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("plain"))
            .with_configs(
                tiny.iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_static_str(k))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_static_str(v)))
                    })
                    .collect(),
            ),
    ]);
    cluster.wait_until("IncrementalAlterConfigs plain", TOPIC_TIMEOUT, |c| {
        let mut last = String::new();
        for node in c.node_ids() {
            let resp: IncrementalAlterConfigsResponse =
                c.try_call(node, ApiKey::IncrementalAlterConfigs, 1, &alter)?;
            match resp.responses[0].error_code {
                0 => return Ok(()),
                NOT_CONTROLLER => last = format!("node {node}: NOT_CONTROLLER"),
                code => panic!(
                    "IncrementalAlterConfigs on node {node}: error {code} {:?}",
                    resp.responses[0].error_message
                ),
            }
        }
        Err(last)
    });
    create_topic(&cluster, "after", 1, 3, &[]);
    let topics = ["tiny", "plain", "after"];
    wait_fully_replicated(&cluster, &topics);
    for node in cluster.node_ids() {
        cluster.restart(node);
    }
    wait_for_brokers(&cluster);
    wait_fully_replicated(&cluster, &topics);
    cluster.stop();
}

/// Waits until every node reports each of `topics` with a leader and the full ISR on every
/// partition.
fn wait_fully_replicated(cluster: &Cluster, topics: &[&str]) {
    cluster.wait_until(
        &format!("{topics:?}: a leader and the full ISR on every node"),
        TOPIC_TIMEOUT,
        |c| {
            for node in c.node_ids() {
                let md = c.try_metadata(node, Some(topics))?;
                if md.topics.len() != topics.len() {
                    return Err(format!("node {node}: {} topics", md.topics.len()));
                }
                for t in &md.topics {
                    let name = t.name.as_ref().map(|n| n.0.to_string());
                    if t.error_code != 0 || t.partitions.is_empty() {
                        return Err(format!("node {node}: {name:?} error {}", t.error_code));
                    }
                    for p in &t.partitions {
                        let ok = p.error_code == 0
                            && p.isr_nodes.len() == c.len()
                            && p.isr_nodes.contains(&p.leader_id);
                        if !ok {
                            return Err(format!(
                                "node {node}: {name:?}-{} error {} leader {} isr {:?}",
                                p.partition_index, p.error_code, p.leader_id.0, p.isr_nodes
                            ));
                        }
                    }
                }
            }
            Ok(())
        },
    );
}
