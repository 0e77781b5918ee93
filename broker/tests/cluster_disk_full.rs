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

/// acks and one ~1 MB batch to partition 0 on `node`: (error code, base offset).
fn produce(cluster: &Cluster, node: i32, acks: i16) -> Result<(i16, i64), String> {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(TOPIC))
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
