//! A semantic fuzzer (issue 12): hostile but well-formed requests against a real broker, the
//! kind that once took topics away, with restarts in between.
//!
//! Where the byte-level tests (raw_bad_input.rs) mutate frames, this one sends requests that
//! decode fine and lie or sit on a boundary: record batches, plain or compressed, whose count
//! or last offset delta lies (with a valid CRC), topic configs at and beyond every bound, partition counts from
//! negative to i32::MAX, topic names up to and past 249 characters, replication factors the
//! node cannot meet, DeleteRecords at -1, 0, the high watermark, past it and i64::MAX,
//! retention and segment times of a millisecond, deletes and re-creates of the same name.
//!
//! What must hold, checked throughout and after every clean restart and SIGKILL:
//! - the broker never dies and never logs a panic;
//! - a topic whose CreateTopics answered 0 is usable (Metadata names a leader for each of its
//!   partitions) and survives restarts; a deleted topic stays deleted, and a re-created one
//!   starts empty (no record of its predecessor at offset 0);
//! - a lying batch is refused and moves no log end;
//! - the bystander topic, written only with honest batches, keeps every record.
//!
//! Short in CI (SLUICE_FUZZ_OPS, default 240 operations, restarts every 80). The long run:
//! `SLUICE_FUZZ_OPS=20000 SLUICE_FUZZ_SEED=<n> cargo test --release -p sluice --test
//! semantic_fuzz -- --nocapture`. Every run prints its seed; a failure names it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::cluster::try_call;
use common::{Broker, batches, compressed_batch, record_batch};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const OPS_DEFAULT: usize = 240;
const RESTART_EVERY: usize = 80;
/// How long an accepted topic may take to show a leader on every partition.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(60);
const BYSTANDER: &str = "bystander";

/// A config name Kafka does not know, drawn beside the broker's own list.
const UNKNOWN_CONFIG: &str = "no.such.config";

const CONFIG_VALUES: &[&str] = &[
    "-9223372036854775808",
    "-2",
    "-1",
    "0",
    "1",
    "13",
    "14",
    "63",
    "64",
    "1000",
    "1048576",
    "2147483647",
    "2147483648",
    "9223372036854775807",
    "abc",
    "",
    "true",
    "false",
    "delete",
    "compact",
    "compact,delete",
    "CreateTime",
    "LogAppendTime",
    "producer",
    "gzip",
];

/// Topic names: a small pool (so creates, deletes and re-creates collide), names around the
/// 249-character limit, and names with characters Kafka refuses.
fn topic_name(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0..=5 => format!("t{}", rng.random_range(0..6)),
        6..=8 => {
            let len = *[200, 213, 214, 230, 248, 249, 250, 255, 300]
                .get(rng.random_range(0..9))
                .expect("in range");
            let c = ['a', 'Z', '.', '_', '-'][rng.random_range(0..5)];
            format!(
                "L{}{}",
                rng.random_range(0..3),
                c.to_string().repeat(len - 2)
            )
        }
        _ => ["", ".", "..", "bad name", "bad/name", "ünïcode"][rng.random_range(0..6)].to_string(),
    }
}

fn partition_count(rng: &mut StdRng) -> i32 {
    match rng.random_range(0..10) {
        0 => *[-1, 0, 100_000, i32::MAX]
            .get(rng.random_range(0..4))
            .expect("in range"),
        _ => rng.random_range(1..=4),
    }
}

fn config_pairs(rng: &mut StdRng) -> Vec<(String, String)> {
    (0..rng.random_range(0..3))
        .map(|_| {
            let names = broker::metadata::topic_config::TOPIC_CONFIG_NAMES;
            let i = rng.random_range(0..=names.len());
            (
                names.get(i).copied().unwrap_or(UNKNOWN_CONFIG).to_string(),
                CONFIG_VALUES[rng.random_range(0..CONFIG_VALUES.len())].to_string(),
            )
        })
        .collect()
}

/// A batch (uncompressed, or compressed with one of the four codecs) whose header lies: the
/// record count, the last offset delta, or both, with a valid CRC.
fn lying_batch(rng: &mut StdRng) -> Bytes {
    let actual = rng.random_range(1..=4);
    let honest = match rng.random_range(0..6) {
        0 => compressed_batch(Compression::Gzip, i64::from(actual)),
        1 => compressed_batch(Compression::Snappy, i64::from(actual)),
        2 => compressed_batch(Compression::Lz4, i64::from(actual)),
        3 => compressed_batch(Compression::Zstd, i64::from(actual)),
        _ => record_batch(actual, None),
    };
    let mut b = BytesMut::from(&honest[..]);
    let lie = |rng: &mut StdRng| -> i32 {
        let mut v = *[0, 1, 2, 5, 1000, i32::MAX, -1, i32::MIN]
            .get(rng.random_range(0..8))
            .expect("in range");
        if v == actual {
            v += 1;
        }
        v
    };
    match rng.random_range(0..3) {
        0 => b[57..61].copy_from_slice(&lie(rng).to_be_bytes()),
        1 => b[23..27].copy_from_slice(&(lie(rng).wrapping_sub(1)).to_be_bytes()),
        _ => {
            let v = lie(rng);
            b[57..61].copy_from_slice(&v.to_be_bytes());
            b[23..27].copy_from_slice(&v.wrapping_sub(1).to_be_bytes());
        }
    }
    let crc = common::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

struct Fuzz {
    rng: StdRng,
    seed: u64,
    broker: Broker,
    /// Topics the broker accepted and did not delete: name -> partition count.
    topics: BTreeMap<String, i32>,
    /// Records the bystander acknowledged, in order.
    bystander_records: i64,
}

impl Fuzz {
    fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Option<Resp> {
        match try_call(self.broker.addr(), api, version, req) {
            Ok(resp) => Some(resp),
            Err(e) => {
                // A refused request may close the connection; a dead broker may not.
                assert!(
                    self.broker.is_running(),
                    "seed {}: the broker died ({api:?}: {e})\n{}",
                    self.seed,
                    common::tail(&self.broker.log(), 12_000)
                );
                None
            }
        }
    }

    fn create_topic(&mut self) {
        let topic = topic_name(&mut self.rng);
        let partitions = partition_count(&mut self.rng);
        let rf = *[1i16, 1, 1, -1, 0, 3, i16::MAX]
            .get(self.rng.random_range(0..7))
            .expect("in range");
        let configs = config_pairs(&mut self.rng);
        let req = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(&topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(str_bytes(k))
                                    .with_value(Some(str_bytes(v)))
                            })
                            .collect(),
                    ),
            ])
            .with_timeout_ms(10_000);
        let Some(resp) = self.call::<_, CreateTopicsResponse>(ApiKey::CreateTopics, 7, &req) else {
            return;
        };
        let t = &resp.topics[0];
        if t.error_code != 0 {
            return;
        }
        let legal = topic.len() <= 249
            && topic != "."
            && topic != ".."
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        assert!(
            legal && !self.topics.contains_key(&topic),
            "seed {}: CreateTopics accepted {topic:?} (len {})",
            self.seed,
            topic.len()
        );
        // Accepted means usable, whatever the configs were.
        let count = if partitions == -1 {
            t.num_partitions
        } else {
            partitions
        };
        self.topics.insert(topic.clone(), count);
        self.wait_usable(&topic, &format!("created with {configs:?}"));
        // A new topic starts empty, even where a deleted one of the same name lived.
        let latest = self.list_offset(&topic, 0, -1);
        assert_eq!(
            latest,
            Some((0, 0)),
            "seed {}: re-created {topic:?} is not empty",
            self.seed
        );
    }

    fn alter_configs(&mut self) {
        let Some(topic) = self.some_topic() else {
            return;
        };
        let configs = config_pairs(&mut self.rng);
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes(&topic))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(str_bytes(k))
                                .with_config_operation(self.rng.random_range(0..2))
                                .with_value(Some(str_bytes(v)))
                        })
                        .collect(),
                ),
        ]);
        let resp: Option<IncrementalAlterConfigsResponse> =
            self.call(ApiKey::IncrementalAlterConfigs, 1, &req);
        if resp.is_some_and(|r| r.responses[0].error_code == 0) {
            self.wait_usable(&topic, &format!("altered with {configs:?}"));
        }
    }

    fn create_partitions(&mut self) {
        let Some(topic) = self.some_topic() else {
            return;
        };
        let current = self.topics[&topic];
        let count = match self.rng.random_range(0..4) {
            0 => partition_count(&mut self.rng),
            1 => current,
            _ => current + self.rng.random_range(1..=3),
        };
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(name(&topic))
                    .with_count(count),
            ]);
        let resp: Option<CreatePartitionsResponse> = self.call(ApiKey::CreatePartitions, 3, &req);
        if resp.is_some_and(|r| r.results[0].error_code == 0) {
            assert!(
                count > current && count <= 64,
                "seed {}: CreatePartitions {topic} {current} -> {count} accepted",
                self.seed
            );
            self.topics.insert(topic.clone(), count);
            self.wait_usable(&topic, &format!("grown to {count}"));
        }
    }

    fn produce(&mut self, topic: &str, partition: i32, records: Bytes) -> Option<(i16, i64)> {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name(topic))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records)),
                    ]),
            ]);
        let resp: ProduceResponse = self.call(ApiKey::Produce, 9, &req)?;
        let p = &resp.responses[0].partition_responses[0];
        Some((p.error_code, p.base_offset))
    }

    fn produce_honest(&mut self) {
        let topic = match self.some_topic() {
            Some(topic) if self.rng.random_bool(0.7) => topic,
            _ => BYSTANDER.to_string(),
        };
        let partition = self.rng.random_range(0..self.topics[&topic]);
        let count = self.rng.random_range(1..=5);
        let answer = self.produce(&topic, partition, record_batch(count, None));
        if topic == BYSTANDER && partition == 0 {
            let (error, base) = answer.expect("the bystander is answered");
            assert_eq!(
                (error, base),
                (0, self.bystander_records),
                "seed {}: bystander produce",
                self.seed
            );
            self.bystander_records += i64::from(count);
        }
    }

    fn produce_lying(&mut self) {
        let topic = self.some_topic().unwrap_or_else(|| BYSTANDER.to_string());
        let batch = lying_batch(&mut self.rng);
        let before = self.list_offset(&topic, 0, -1);
        let Some((error, _)) = self.produce(&topic, 0, batch.clone()) else {
            return;
        };
        assert_ne!(
            error,
            0,
            "seed {}: a lying batch was accepted by {topic}: header {:02x?}",
            self.seed,
            &batch[..61]
        );
        let after = self.list_offset(&topic, 0, -1);
        if before.is_some() && after.is_some() {
            assert_eq!(
                before, after,
                "seed {}: a refused batch moved {topic}'s log end",
                self.seed
            );
        }
    }

    fn delete_records(&mut self) {
        let Some(topic) = self.some_topic() else {
            return;
        };
        let Some((_, hw)) = self.list_offset(&topic, 0, -1) else {
            return;
        };
        let offset = *[-1, 0, hw, hw, hw + 1, i64::MAX, i64::MIN]
            .get(self.rng.random_range(0..7))
            .expect("in range");
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(name(&topic))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(offset),
                    ]),
            ]);
        let resp: Option<DeleteRecordsResponse> = self.call(ApiKey::DeleteRecords, 2, &req);
        if let Some(resp) = resp {
            let p = &resp.topics[0].partitions[0];
            if p.error_code == 0 {
                assert!(
                    p.low_watermark <= hw,
                    "seed {}: DeleteRecords {topic} to {offset}: low watermark {} above hw {hw}",
                    self.seed,
                    p.low_watermark
                );
            }
        }
    }

    fn delete_topic(&mut self) {
        let Some(topic) = self.some_topic() else {
            return;
        };
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![name(&topic)])
            .with_timeout_ms(10_000);
        let resp: Option<DeleteTopicsResponse> = self.call(ApiKey::DeleteTopics, 4, &req);
        if resp.is_some_and(|r| r.responses[0].error_code == 0) {
            self.topics.remove(&topic);
        }
    }

    /// A fuzzed topic (never the bystander), if any exists.
    fn some_topic(&mut self) -> Option<String> {
        let names: Vec<&String> = self.topics.keys().filter(|t| *t != BYSTANDER).collect();
        if names.is_empty() {
            return None;
        }
        Some(names[self.rng.random_range(0..names.len())].clone())
    }

    fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> Option<(i16, i64)> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(timestamp),
                    ]),
            ]);
        let resp: ListOffsetsResponse = self.call(ApiKey::ListOffsets, 7, &req)?;
        let p = &resp.topics[0].partitions[0];
        (p.error_code == 0).then_some((p.error_code, p.offset))
    }

    /// Waits until Metadata shows `topic` with a leader on each of its partitions.
    fn wait_usable(&mut self, topic: &str, what: &str) {
        let want = self.topics[topic];
        let deadline = Instant::now() + TOPIC_TIMEOUT;
        loop {
            let req = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name(topic))),
                ]))
                .with_allow_auto_topic_creation(false);
            let last = match self.call::<_, MetadataResponse>(ApiKey::Metadata, 12, &req) {
                Some(resp) => {
                    let t = &resp.topics[0];
                    let led = t.partitions.iter().filter(|p| p.leader_id.0 >= 0).count();
                    if t.error_code == 0 && led == want as usize && t.partitions.len() == led {
                        return;
                    }
                    format!("error {}, {led} of {want} partitions led", t.error_code)
                }
                None => "no answer".to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "seed {}: topic {topic:?} ({what}) not usable: {last}\n{}",
                self.seed,
                common::tail(&self.broker.log(), 12_000)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every accepted topic is there, the bystander holds every record, nothing panicked.
    fn check(&mut self, when: &str) {
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for topic in names {
            self.wait_usable(&topic, when);
        }
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name(BYSTANDER))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(64 << 20),
                    ]),
            ]);
        let resp: FetchResponse = self
            .call(ApiKey::Fetch, 12, &req)
            .expect("the bystander is fetched");
        let p = &resp.responses[0].partitions[0];
        let got = batches(p.records.clone().unwrap_or_default());
        let mut next = 0;
        for (base, count) in got {
            assert_eq!(base, next, "seed {}: bystander gap ({when})", self.seed);
            next = base + i64::from(count);
        }
        assert_eq!(
            (p.error_code, next),
            (0, self.bystander_records),
            "seed {}: bystander records ({when})",
            self.seed
        );
        let log = self.broker.log();
        assert!(
            !log.contains("panicked"),
            "seed {}: the broker panicked ({when})\n{}",
            self.seed,
            common::tail(&log, 12_000)
        );
    }
}

#[test]
fn hostile_well_formed_requests_never_take_topics_away() {
    let seed = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let ops: usize = std::env::var("SLUICE_FUZZ_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(OPS_DEFAULT);
    eprintln!("semantic fuzz: seed {seed}, {ops} operations (SLUICE_FUZZ_SEED replays)");
    let config = tempfile::NamedTempFile::new().expect("config file");
    // Housekeeping often, so 1 ms retention and segment times act within the run.
    std::fs::write(config.path(), "[log]\nhousekeeping_interval_ms = 200\n").expect("write");
    let broker = Broker::start_with(&["--config", config.path().to_str().expect("utf-8")]);
    let mut fuzz = Fuzz {
        rng: StdRng::seed_from_u64(seed),
        seed,
        broker,
        topics: BTreeMap::new(),
        bystander_records: 0,
    };
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(BYSTANDER))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(str_bytes("retention.ms"))
                        .with_value(Some(str_bytes("-1"))),
                ]),
        ])
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = fuzz
        .call(ApiKey::CreateTopics, 7, &req)
        .expect("bystander created");
    assert_eq!(resp.topics[0].error_code, 0);
    fuzz.topics.insert(BYSTANDER.to_string(), 1);
    fuzz.wait_usable(BYSTANDER, "created");

    let mut counts = [0usize; 8];
    for op in 1..=ops {
        let kind = fuzz.rng.random_range(0..counts.len());
        counts[kind] += 1;
        match kind {
            0 => fuzz.create_topic(),
            1 => fuzz.alter_configs(),
            2 => fuzz.create_partitions(),
            3 | 4 => fuzz.produce_honest(),
            5 => fuzz.produce_lying(),
            6 => fuzz.delete_records(),
            _ => fuzz.delete_topic(),
        }
        if op % RESTART_EVERY == 0 {
            fuzz.check(&format!("before restart at op {op}"));
            if fuzz.rng.random_bool(0.5) {
                fuzz.broker.restart();
            } else {
                fuzz.broker.kill();
                fuzz.broker.start_again();
            }
            fuzz.check(&format!("after restart at op {op}"));
        }
    }
    fuzz.check("at the end");
    eprintln!(
        "semantic fuzz: seed {seed}: {ops} operations (create {}, alter {}, grow {}, produce {}, \
         lying {}, delete-records {}, delete-topic {}), {} topics left, bystander {} records",
        counts[0],
        counts[1],
        counts[2],
        counts[3] + counts[4],
        counts[5],
        counts[6],
        counts[7],
        fuzz.topics.len(),
        fuzz.bystander_records
    );
    fuzz.broker.stop();
}
