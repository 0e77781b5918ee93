//! A follower whose disk fills (issue 12, item 6): its replicated appends fail, it stays up,
//! and once space returns it catches up by itself, without a restart. The follower's data dir
//! is moved onto a small tmpfs (needs root, as CI has; without it the test fails loudly).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::Cluster;
use common::record_batch_sized;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TIMEOUT: Duration = Duration::from_secs(90);
const TOPIC: &str = "follower-full";

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed (this test needs root, as CI has): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts the tmpfs at `dir` when dropped (lazily if a process still holds it).
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.0).status();
        if !matches!(ok, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

/// One ~1 MB batch to partition 0 of `TOPIC` on `node`: (error code, base offset).
fn produce(cluster: &Cluster, node: i32, acks: i16) -> Result<(i16, i64), String> {
    produce_to(cluster, TOPIC, node, acks)
}

fn produce_to(cluster: &Cluster, topic: &str, node: i32, acks: i16) -> Result<(i16, i64), String> {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(record_batch_sized(15, 64 * 1024, None))),
                ]),
        ]);
    let resp: ProduceResponse = cluster.try_call(node, ApiKey::Produce, 9, &req)?;
    let p = &resp.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

#[test]
fn a_follower_whose_disk_fills_catches_up_once_space_returns() {
    let mut cluster = Cluster::start(3);
    // Topic with every replica required for acks=all, retention off (the test batches carry
    // 2023 timestamps).
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(TOPIC))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(
                    [("min.insync.replicas", "3"), ("retention.ms", "-1")]
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_static_str(k))
                                .with_value(Some(StrBytes::from_static_str(v)))
                        })
                        .collect(),
                ),
        ])
        .with_timeout_ms(30_000);
    let mut leader = -1;
    cluster.wait_until("topic created with a leader", TIMEOUT, |c| {
        let controller = c.try_metadata(0, Some(&[]))?.controller_id.0;
        if controller < 0 {
            return Err("no controller yet".into());
        }
        let resp: CreateTopicsResponse = c.try_call(controller, ApiKey::CreateTopics, 7, &req)?;
        let code = resp.topics[0].error_code;
        if code != 0 && code != 36 {
            return Err(format!("CreateTopics: {code}"));
        }
        let md = c.try_metadata(controller, Some(&[TOPIC]))?;
        let p = md.topics[0].partitions.first().ok_or("no partition yet")?;
        if p.leader_id.0 < 0 || p.isr_nodes.len() != 3 {
            return Err(format!("leader {} isr {:?}", p.leader_id.0, p.isr_nodes));
        }
        leader = p.leader_id.0;
        Ok(())
    });
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("a follower");

    // Move the follower's data dir onto a 32 MiB tmpfs, then leave it ~3 MiB.
    cluster.stop_node(follower);
    let data_dir = cluster.data_dir(follower).to_path_buf();
    let backup = tempfile::tempdir().expect("backup dir");
    run(Command::new("cp")
        .arg("-a")
        .arg(data_dir.join("."))
        .arg(backup.path()));
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&data_dir));
    let mounted = Mounted(&data_dir);
    run(Command::new("cp")
        .arg("-a")
        .arg(backup.path().join("."))
        .arg(&data_dir));
    let filler = data_dir.join("filler");
    std::fs::write(&filler, vec![0x5au8; 29 << 20]).expect("filler");
    cluster.restart(follower);

    // The leader takes ~10 MB with acks=1; the follower cannot write it.
    for _ in 0..10 {
        let (code, _) = produce(&cluster, leader, 1).expect("produce acks=1");
        assert_eq!(code, 0, "acks=1 produce on the leader");
    }
    cluster.wait_until(
        "the follower's append fails for lack of space",
        TIMEOUT,
        |c| {
            if c.log(follower).contains("replicated append failed") {
                Ok(())
            } else {
                Err("no failure logged yet".into())
            }
        },
    );
    cluster
        .check_alive()
        .expect("every node up with a full follower disk");

    // Space back: the follower catches up without a restart; acks=all with
    // min.insync.replicas=3 succeeds only once it has everything.
    std::fs::remove_file(&filler).expect("remove filler");
    cluster.wait_until(
        "acks=all succeeds with all three replicas",
        TIMEOUT,
        |c| match produce(c, leader, -1)? {
            (0, _) => Ok(()),
            (code, _) => Err(format!("acks=all: error {code}")),
        },
    );
    cluster
        .check_alive()
        .expect("every node up after the follower caught up");
    cluster.stop_node(follower);
    drop(mounted);
    cluster.stop();
}

/// Stops `node`, moves its data dir onto a tmpfs of `bytes`, and starts it again.
fn move_onto_tmpfs<'a>(
    cluster: &mut Cluster,
    node: i32,
    data_dir: &'a Path,
    bytes: u64,
) -> Mounted<'a> {
    cluster.stop_node(node);
    let backup = tempfile::tempdir().expect("backup dir");
    run(Command::new("cp")
        .arg("-a")
        .arg(data_dir.join("."))
        .arg(backup.path()));
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(data_dir));
    let mounted = Mounted(data_dir);
    run(Command::new("cp")
        .arg("-a")
        .arg(backup.path().join("."))
        .arg(data_dir));
    // The default free-space reserve (1 GiB) is larger than this whole filesystem: off, so
    // that the appends themselves run out of space. Only this node restarts with it.
    let config = cluster.dir().join("cluster.toml"); // written by Cluster::start
    let mut toml = std::fs::read_to_string(&config).expect("read cluster.toml");
    toml.push_str("[log]\ndisk_free_bytes_min = 0\ndisk_check_interval_ms = 100\n");
    std::fs::write(&config, toml).expect("write cluster.toml");
    cluster.restart(node);
    mounted
}

/// Creates `topic` (1 partition, RF 3, retention off) and returns its leader.
fn create_topic(cluster: &Cluster, topic: &str) -> i32 {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("-1"))),
                ]),
        ])
        .with_timeout_ms(30_000);
    let mut leader = -1;
    cluster.wait_until(&format!("{topic} created with a leader"), TIMEOUT, |c| {
        let controller = c.try_metadata(0, Some(&[]))?.controller_id.0;
        if controller < 0 {
            return Err("no controller yet".into());
        }
        let resp: CreateTopicsResponse = c.try_call(controller, ApiKey::CreateTopics, 7, &req)?;
        let code = resp.topics[0].error_code;
        if code != 0 && code != 36 {
            return Err(format!("CreateTopics: {code}"));
        }
        let md = c.try_metadata(controller, Some(&[topic]))?;
        let p = md.topics[0].partitions.first().ok_or("no partition yet")?;
        if p.leader_id.0 < 0 || p.isr_nodes.len() != 3 {
            return Err(format!("leader {} isr {:?}", p.leader_id.0, p.isr_nodes));
        }
        leader = p.leader_id.0;
        Ok(())
    });
    leader
}

/// A leader whose disk fills answers KAFKA_STORAGE_ERROR, not NOT_LEADER_OR_FOLLOWER, and hands
/// leadership to another in-sync replica, which takes the writes at the next offset; once
/// space returns the old leader catches up and is back in the ISR, without a restart.
#[test]
fn a_leader_whose_disk_fills_answers_storage_error_and_hands_over() {
    let mut cluster = Cluster::start(3);
    let full_node = 0;
    let data_dir = cluster.data_dir(full_node).to_path_buf();
    let mounted = move_onto_tmpfs(&mut cluster, full_node, &data_dir, 32 << 20);
    // Leaders are spread over the nodes: one of a few topics is led by the full node.
    let topic = (0..12)
        .map(|i| format!("leader-full-{i}"))
        .find(|t| create_topic(&cluster, t) == full_node)
        .expect("a topic led by node 0");
    let filler = data_dir.join("filler");
    std::fs::write(&filler, vec![0x5au8; 16 << 20]).expect("filler");
    let mut next = 0;
    let mut refused = None;
    for _ in 0..40 {
        match produce_to(&cluster, &topic, full_node, -1).expect("produce") {
            (0, base) => {
                assert_eq!(base, next);
                next += 15;
            }
            (code, _) => {
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(56),
        "KAFKA_STORAGE_ERROR, not NOT_LEADER_OR_FOLLOWER (6)"
    );
    let mut new_leader = -1;
    cluster.wait_until("leadership moves to an in-sync replica", TIMEOUT, |c| {
        let md = c.try_metadata(1, Some(&[topic.as_str()]))?;
        let p = &md.topics[0].partitions[0];
        if p.leader_id.0 < 0 || p.leader_id.0 == full_node {
            return Err(format!("leader {}", p.leader_id.0));
        }
        new_leader = p.leader_id.0;
        Ok(())
    });
    cluster.wait_until(
        "the new leader takes the next offset",
        TIMEOUT,
        |c| match produce_to(c, &topic, new_leader, -1)? {
            (0, base) if base == next => Ok(()),
            (0, base) => panic!("new leader wrote at {base}, want {next}"),
            (code, _) => Err(format!("produce: error {code}")),
        },
    );
    std::fs::remove_file(&filler).expect("remove filler");
    cluster.wait_until("the old leader is back in the ISR", TIMEOUT, |c| {
        let md = c.try_metadata(new_leader, Some(&[topic.as_str()]))?;
        let isr: Vec<i32> = md.topics[0].partitions[0]
            .isr_nodes
            .iter()
            .map(|b| b.0)
            .collect();
        if isr.contains(&full_node) {
            Ok(())
        } else {
            Err(format!("isr {isr:?}"))
        }
    });
    cluster.check_alive().expect("every node up");
    cluster.stop_node(full_node);
    drop(mounted);
    cluster.stop();
}
