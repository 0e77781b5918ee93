//! Cluster view: bootstrap, metadata for the topic under load, admin requests.
//!
//! Owns: the admin connection (to whichever bootstrap address answered), the broker address
//! table and the partition -> leader table of one topic, refreshed on demand.
//! Does not own: data connections (each producer and consumer opens its own).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;

use super::connection::Connection;
use super::error_codes;

/// In-flight requests on admin connections (metadata, offsets, topic creation).
const ADMIN_IN_FLIGHT_MAX: usize = 4;
/// How long to wait for a created topic to show leaders for all partitions.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
const METADATA_RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// The leader of each partition of the topic under load.
#[derive(Debug, Clone, Default)]
pub struct TopicLayout {
    /// Indexed by partition; `None` while a partition has no leader.
    pub leaders: Vec<Option<i32>>,
    /// node id -> "host:port".
    pub brokers: HashMap<i32, String>,
}

impl TopicLayout {
    pub fn partitions(&self) -> usize {
        self.leaders.len()
    }

    pub fn leader_addr(&self, partition: usize) -> Option<(i32, &str)> {
        let leader = self.leaders.get(partition).copied().flatten()?;
        self.brokers
            .get(&leader)
            .map(|addr| (leader, addr.as_str()))
    }
}

pub struct Cluster {
    bootstrap: Vec<String>,
    topic: String,
    admin: Mutex<Option<Connection>>,
    layout: RwLock<TopicLayout>,
    in_flight_max: usize,
}

impl Cluster {
    /// `bootstrap` is a comma-separated list of `host:port`.
    pub async fn connect(bootstrap: &str, topic: &str, in_flight_max: usize) -> Result<Cluster> {
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if bootstrap.is_empty() {
            bail!("--bootstrap names no broker");
        }
        let cluster = Cluster {
            bootstrap,
            topic: topic.to_string(),
            admin: Mutex::new(None),
            layout: RwLock::new(TopicLayout::default()),
            in_flight_max,
        };
        cluster.admin().await?;
        Ok(cluster)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn in_flight_max(&self) -> usize {
        self.in_flight_max
    }

    /// A copy of the current layout.
    pub fn layout(&self) -> TopicLayout {
        self.layout.read().expect("layout lock").clone()
    }

    /// The admin connection, reconnecting through the bootstrap list if it broke.
    pub async fn admin(&self) -> Result<Connection> {
        let mut admin = self.admin.lock().await;
        if let Some(connection) = admin.as_ref() {
            return Ok(connection.clone());
        }
        let mut last_error = None;
        for addr in &self.bootstrap {
            match Connection::connect(addr, ADMIN_IN_FLIGHT_MAX).await {
                Ok(connection) => {
                    *admin = Some(connection.clone());
                    return Ok(connection);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no bootstrap address")))
            .context("no bootstrap broker reachable")
    }

    async fn drop_admin(&self) {
        *self.admin.lock().await = None;
    }

    /// Fetches metadata for the topic; returns `Ok(false)` if the topic does not exist.
    pub async fn refresh(&self) -> Result<bool> {
        self.refresh_with(false).await
    }

    async fn refresh_with(&self, allow_auto_topic_creation: bool) -> Result<bool> {
        let admin = self.admin().await?;
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(&self.topic))),
            ]))
            .with_allow_auto_topic_creation(allow_auto_topic_creation);
        let response = match admin.call(&request, ApiKey::Metadata).await {
            Ok(response) => response,
            Err(error) => {
                self.drop_admin().await;
                return Err(error.context("Metadata request"));
            }
        };
        let brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let Some(topic) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(self.topic.as_str()))
        else {
            return Ok(false);
        };
        if topic.error_code == error_codes::UNKNOWN_TOPIC_OR_PARTITION {
            return Ok(false);
        }
        if topic.error_code != 0 && topic.partitions.is_empty() {
            bail!(
                "Metadata for topic {}: {}",
                self.topic,
                error_codes::name(topic.error_code)
            );
        }
        let count = topic
            .partitions
            .iter()
            .map(|p| p.partition_index as usize + 1)
            .max()
            .unwrap_or(0);
        let mut leaders = vec![None; count];
        for partition in &topic.partitions {
            if partition.leader_id.0 >= 0 {
                leaders[partition.partition_index as usize] = Some(partition.leader_id.0);
            }
        }
        *self.layout.write().expect("layout lock") = TopicLayout { leaders, brokers };
        Ok(true)
    }

    /// Creates the topic (tolerating TOPIC_ALREADY_EXISTS) and waits until every partition
    /// has a leader. Returns true if loadgen created it.
    pub async fn ensure_topic(
        &self,
        partitions: Option<i32>,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<bool> {
        let exists = self.refresh().await?;
        let mut created = false;
        if !exists {
            let partitions = partitions.unwrap_or(1);
            created = self
                .create_topic(partitions, replication_factor, configs)
                .await?;
        }
        let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
        loop {
            if self.refresh().await? {
                let layout = self.layout();
                let ready = layout.partitions() > 0
                    && (0..layout.partitions()).all(|p| layout.leader_addr(p).is_some());
                if ready {
                    return Ok(created);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "topic {} has no leader for every partition after {:?}",
                    self.topic,
                    TOPIC_READY_TIMEOUT
                );
            }
            tokio::time::sleep(METADATA_RETRY_BACKOFF).await;
        }
    }

    async fn create_topic(
        &self,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<bool> {
        let admin = self.admin().await?;
        if admin.version_for(ApiKey::CreateTopics).is_err() {
            // Brokers without CreateTopics (e.g. librdkafka's mock cluster) may still create
            // topics on a metadata request, with their default partition count.
            eprintln!(
                "loadgen: broker has no CreateTopics; asking for auto-creation of {}",
                self.topic
            );
            self.refresh_with(true).await?;
            return Ok(true);
        }
        let request = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(&self.topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(name, value)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(name.clone()))
                                    .with_value(Some(StrBytes::from_string(value.clone())))
                            })
                            .collect(),
                    ),
            ])
            .with_timeout_ms(30_000);
        let response = admin
            .call(&request, ApiKey::CreateTopics)
            .await
            .context("CreateTopics request")?;
        let Some(result) = response.topics.first() else {
            bail!("CreateTopics answer does not mention topic {}", self.topic);
        };
        match result.error_code {
            0 => Ok(true),
            error_codes::TOPIC_ALREADY_EXISTS => Ok(false),
            code => bail!(
                "creating topic {}: {} {}",
                self.topic,
                error_codes::name(code),
                result
                    .error_message
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("")
            ),
        }
    }

    /// The latest offset (log end) of each partition, asked of each partition's leader.
    /// Retries retriable errors (a partition still loading, a leader moving) with a metadata
    /// refresh, up to `TOPIC_READY_TIMEOUT`.
    pub async fn end_offsets(&self) -> Result<Vec<i64>> {
        let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
        loop {
            match self.end_offsets_once().await {
                Ok(offsets) => return Ok(offsets),
                Err(error) if Instant::now() < deadline && is_retriable_error(&error) => {
                    tokio::time::sleep(METADATA_RETRY_BACKOFF).await;
                    self.refresh().await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn end_offsets_once(&self) -> Result<Vec<i64>> {
        let layout = self.layout();
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for partition in 0..layout.partitions() {
            let (leader, _) = layout.leader_addr(partition).ok_or_else(|| {
                anyhow::Error::new(KafkaError(error_codes::LEADER_NOT_AVAILABLE))
                    .context(format!("partition {partition} has no leader"))
            })?;
            by_leader.entry(leader).or_default().push(partition as i32);
        }
        let mut offsets = vec![0; layout.partitions()];
        for (leader, partitions) in by_leader {
            let addr = &layout.brokers[&leader];
            let connection = Connection::connect(addr, ADMIN_IN_FLIGHT_MAX).await?;
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(topic_name(&self.topic))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|&p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_current_leader_epoch(-1)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        ),
                ]);
            let response = connection
                .call(&request, ApiKey::ListOffsets)
                .await
                .context("ListOffsets request")?;
            for topic in &response.topics {
                for partition in &topic.partitions {
                    if partition.error_code != 0 {
                        return Err(
                            anyhow::Error::new(KafkaError(partition.error_code)).context(format!(
                                "ListOffsets partition {}",
                                partition.partition_index
                            )),
                        );
                    }
                    if let Some(slot) = offsets.get_mut(partition.partition_index as usize) {
                        *slot = partition.offset;
                    }
                }
            }
        }
        Ok(offsets)
    }

    /// Asks for an idempotent producer id and epoch, retrying retriable answers (a fresh
    /// Kafka answers COORDINATOR_LOAD_IN_PROGRESS until its broker has a block of producer ids
    /// from the controller) for up to `TOPIC_READY_TIMEOUT`.
    pub async fn init_producer_id(&self) -> Result<(i64, i16)> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(-1)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
        loop {
            let admin = self.admin().await?;
            let response = admin
                .call(&request, ApiKey::InitProducerId)
                .await
                .context("InitProducerId request")?;
            match response.error_code {
                0 => return Ok((response.producer_id.0, response.producer_epoch)),
                code if error_codes::is_retriable(code) && Instant::now() < deadline => {
                    tokio::time::sleep(METADATA_RETRY_BACKOFF).await;
                }
                code => bail!("InitProducerId: {}", error_codes::name(code)),
            }
        }
    }
}

/// A Kafka error code carried in an `anyhow::Error`, so callers can tell retriable ones.
#[derive(Debug, Clone, Copy)]
pub struct KafkaError(pub i16);

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&error_codes::name(self.0))
    }
}

impl std::error::Error for KafkaError {}

fn is_retriable_error(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<KafkaError>()
        .is_some_and(|e| error_codes::is_retriable(e.0))
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}
