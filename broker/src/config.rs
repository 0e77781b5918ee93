//! Broker configuration: one TOML file, `SLUICE_<SECTION>_<KEY>` environment overrides, then
//! command-line flags, validated once at start-up.
//!
//! Every field has a default (`#[serde(default)]`), so an empty file (or none) gives a
//! broker that works on a laptop: data in `./data`, Kafka on `127.0.0.1:9092`, one shard per
//! available core.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default Kafka listener.
pub const KAFKA_ADDR_DEFAULT: &str = "127.0.0.1:9092";
/// Kafka's `socket.request.max.bytes` default: 100 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 100 * 1024 * 1024;
/// Smallest accepted frame limit: a request header plus a little body.
pub const FRAME_BYTES_MAX_MIN: u32 = 1024;
/// Default `queued.max.request.bytes` per node (Kafka's default is unbounded): 16 clients
/// each sending a 90 MiB frame otherwise hold 1.5 GB.
pub const QUEUED_MAX_REQUEST_BYTES_DEFAULT: u64 = 512 * 1024 * 1024;
/// Upper bound for the shard count (a sanity limit, not a tuning value).
pub const SHARDS_MAX: usize = 256;
/// Partitions a single CreateTopics/CreatePartitions may ask for.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Default free-space reserve (`log.disk_free_bytes_min`): room for what the broker writes
/// besides produced records (indexes, checkpoints, the metadata log, offset commits, a
/// restart's recovery) once producers are refused.
pub const DISK_FREE_BYTES_MIN_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Largest accepted `log.disk_free_percent_min`.
pub const DISK_FREE_PERCENT_MIN_MAX: u8 = 50;

/// Kafka's offsets.topic.segment.bytes / transaction.state.log.segment.bytes default: the
/// segments of `__consumer_offsets` and `__transaction_state`, compacted once they roll.
pub const INTERNAL_TOPIC_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;
/// The bounds of a `segment.bytes` topic override (`metadata::topic_config::SEGMENT_BYTES`,
/// asserted equal there), which an internal topic's segment size must meet.
pub const INTERNAL_TOPIC_SEGMENT_BYTES_MIN: u64 = 1024 * 1024;
pub const INTERNAL_TOPIC_SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// Environment variable prefix for overrides: `SLUICE_KAFKA_ADDR=...`.
pub const ENV_PREFIX: &str = "SLUICE_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerSection,
    pub kafka: KafkaSection,
    pub log: LogSection,
    /// Consumer-group coordinator settings (owned by `group/`).
    pub group: crate::group::GroupSection,
    /// Transaction-coordinator settings (owned by `txn/`).
    pub transaction: crate::txn::TxnSection,
    /// HTTP listener: Prometheus `/metrics` and `/v1/status`.
    pub http: HttpSection,
    /// The log cleaner (compacted topics; owned by `runtime::cleaner`).
    pub cleaner: crate::runtime::cleaner::config::CleanerSection,
    /// Multi-node cluster: metadata quorum and replication. Off unless `seeds` is set.
    pub cluster: ClusterSection,
}

/// Cluster settings (Kafka's names in the comments). A broker is in cluster mode when
/// `seeds` names the quorum; without it it is a single node, exactly as before.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Internal listener for quorum and controller traffic (`--rpc-addr`).
    pub rpc_addr: String,
    /// Quorum voters `ID@HOST:PORT,...` (`--seeds`); every voter is also a broker.
    pub seeds: String,
    /// broker.session.timeout.ms: a broker without a heartbeat this long is fenced.
    pub broker_session_timeout_ms: i64,
    /// broker.heartbeat.interval.ms.
    pub broker_heartbeat_interval_ms: i64,
    /// replica.lag.time.max.ms.
    pub replica_lag_time_max_ms: i64,
    /// replica.fetch.wait.max.ms: how long a follower's fetch may wait at the leader.
    pub replica_fetch_wait_max_ms: i32,
    /// replica.fetch.backoff.ms.
    pub replica_fetch_backoff_ms: i64,
    /// request.timeout.ms for replica fetches and controller requests.
    pub request_timeout_ms: i64,
    /// default.replication.factor; -1 = min(3, number of seeds).
    pub default_replication_factor: i16,
    /// unclean.leader.election.enable.
    pub unclean_leader_election: bool,
    /// broker.rack (rack-aware placement when every broker has one).
    pub rack: String,
    /// leader.imbalance.check.interval.seconds, in ms: how often leadership moves back to
    /// preferred replicas (auto.leader.rebalance.enable); 0 = never.
    pub leader_imbalance_check_interval_ms: i64,
    /// Applied metadata entries between quorum snapshots (the log before one is dropped).
    /// ~150 bytes per entry; an idle 3-node cluster writes ~5 entries/s.
    pub metadata_snapshot_interval_entries: u64,
    /// File holding the cluster secret rpc peers prove with HMAC-SHA256 (the same on every
    /// node; `--cluster-secret-file`, `SLUICE_CLUSTER_SECRET_FILE`); empty = none, which
    /// trusts anyone who reaches the rpc port (warned about at start-up). See
    /// docs/operations.md, "The rpc port".
    pub secret_file: PathBuf,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            rpc_addr: String::new(),
            seeds: String::new(),
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 1_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1_000,
            request_timeout_ms: 30_000,
            default_replication_factor: -1,
            unclean_leader_election: false,
            rack: String::new(),
            leader_imbalance_check_interval_ms: 300_000,
            metadata_snapshot_interval_entries: 10_000,
            secret_file: PathBuf::new(),
        }
    }
}

/// One quorum voter from `--seeds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

impl ClusterSection {
    /// Seeds were given: a quorum of several voters (or one, named explicitly).
    pub fn enabled(&self) -> bool {
        !self.seeds.trim().is_empty()
    }

    /// The quorum's voters: the seeds, or without seeds this node alone (a quorum of one,
    /// which needs no rpc listener).
    pub fn voters(&self, node_id: i32) -> Result<Vec<Seed>, String> {
        if self.enabled() {
            return self.parse_seeds();
        }
        Ok(vec![Seed {
            node_id,
            host: String::new(),
            port: 0,
        }])
    }

    /// Parses `ID@HOST:PORT,...`.
    pub fn parse_seeds(&self) -> Result<Vec<Seed>, String> {
        let mut out = Vec::new();
        for item in self
            .seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (id, addr) = item
                .split_once('@')
                .ok_or_else(|| format!("seed {item:?} is not ID@HOST:PORT"))?;
            let node_id: i32 = id
                .parse()
                .map_err(|_| format!("seed {item:?}: bad node id"))?;
            let (host, port) =
                split_host_port(addr).ok_or_else(|| format!("seed {item:?}: bad HOST:PORT"))?;
            if out.iter().any(|s: &Seed| s.node_id == node_id) {
                return Err(format!("seed node id {node_id} appears twice"));
            }
            out.push(Seed {
                node_id,
                host,
                port,
            });
        }
        Ok(out)
    }
}

/// The HTTP side (metrics, status). It runs on its own thread, never on a shard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Listener address (`--http-addr`); empty = no HTTP listener (the default).
    /// Port 0 picks a free one (printed as `sluice http: listening on ADDR`).
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSection {
    /// This node's id (Kafka `node.id`).
    pub node_id: i32,
    /// Where partition logs and the topic catalog live.
    pub data_dir: PathBuf,
    /// Number of shards (threads, one per core). 0 = one per available core.
    pub shards: usize,
    /// Pin shard threads to cores.
    pub pin_threads: bool,
    /// Seconds a clean shutdown may take before the process exits anyway.
    pub shutdown_timeout_s: u64,
    /// Log one line per host tuner setting that differs from `sluice tune`'s recommendation
    /// at start-up (checked on a side thread; never delays or fails start-up).
    pub tuning_report: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Listener address; port 0 picks a free port (printed on the `ready` line).
    pub addr: String,
    /// Address given to clients in Metadata; empty = the bound listener address.
    pub advertised_addr: String,
    /// Largest request frame accepted (Kafka `socket.request.max.bytes`).
    pub frame_bytes_max: u32,
    /// Requests one connection may have in flight before the broker stops reading it.
    pub in_flight_per_connection_max: usize,
    /// Open client connections across all shards; more are closed at accept.
    pub connections_max: usize,
    /// Kafka `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka `num.partitions`: partitions of auto-created topics.
    pub default_partitions: i32,
    /// Send fetched records from the page cache with splice/sendfile (plaintext only).
    pub zero_copy_fetch: bool,
    /// Fetch sessions (KIP-227) kept per shard.
    pub fetch_sessions_per_shard_max: usize,
    /// Kafka `queued.max.request.bytes`: request bytes read but not yet answered, per node,
    /// split evenly across shards (each shard counts its own, no shared counter). A
    /// connection whose next frame does not fit stops reading until bytes free up.
    pub queued_max_request_bytes: u64,
}

/// Defaults for topic configs (Kafka's `log.*` broker settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    /// `message.max.bytes`.
    pub max_message_bytes: u32,
    /// acks=all answers after fdatasync (Redpanda's default). false = Kafka's page-cache ack.
    pub acks_all_durable: bool,
    /// Flush interval for the relaxed mode (0 = flush on every append).
    pub flush_interval_ms: i64,
    /// Kafka's `log.preallocate` (default false): fallocate whole segments up front. Off by
    /// default because every partition would hold a full segment (1 GiB) of disk at once.
    pub preallocate: bool,
    /// Milliseconds between retention / segment.ms checks on each shard.
    pub housekeeping_interval_ms: u64,
    /// Free-space reserve: while the data dir's filesystem has less free space than the
    /// larger of this and `disk_free_percent_min`, Produce is refused with
    /// KAFKA_STORAGE_ERROR (replication, offset commits and the broker's own files go on).
    /// 0 turns the bytes part off.
    pub disk_free_bytes_min: u64,
    /// The reserve as a percentage of the filesystem's size (0 = off).
    pub disk_free_percent_min: u8,
    /// Milliseconds between free-space checks (statvfs) on each shard; also how soon writes
    /// resume after space returns.
    pub disk_check_interval_ms: u64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            node_id: 0,
            data_dir: PathBuf::from("./data"),
            shards: 0,
            pin_threads: true,
            shutdown_timeout_s: 30,
            tuning_report: true,
        }
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            addr: KAFKA_ADDR_DEFAULT.to_string(),
            advertised_addr: String::new(),
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            in_flight_per_connection_max: 32,
            connections_max: 10_000,
            auto_create_topics: true,
            default_partitions: 1,
            zero_copy_fetch: true,
            fetch_sessions_per_shard_max: 1000,
            queued_max_request_bytes: QUEUED_MAX_REQUEST_BYTES_DEFAULT,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            acks_all_durable: true,
            flush_interval_ms: 0,
            preallocate: false,
            housekeeping_interval_ms: 10_000,
            disk_free_bytes_min: DISK_FREE_BYTES_MIN_DEFAULT,
            disk_free_percent_min: 0,
            disk_check_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Command-line overrides (the flags of `sluice start`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub kafka_addr: Option<String>,
    pub advertised_kafka_addr: Option<String>,
    pub node_id: Option<i32>,
    pub shards: Option<usize>,
    pub http_addr: Option<String>,
    pub rpc_addr: Option<String>,
    pub seeds: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
}

impl Config {
    /// File (if any), then `SLUICE_*` environment, then flags; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: file.map(Path::to_path_buf).unwrap_or_default(),
                    message: e.to_string(),
                })?;
        if let Some(v) = &overrides.data_dir {
            config.broker.data_dir = v.clone();
        }
        if let Some(v) = &overrides.kafka_addr {
            config.kafka.addr = v.clone();
        }
        if let Some(v) = &overrides.advertised_kafka_addr {
            config.kafka.advertised_addr = v.clone();
        }
        if let Some(v) = overrides.node_id {
            config.broker.node_id = v;
        }
        if let Some(v) = overrides.shards {
            config.broker.shards = v;
        }
        if let Some(v) = &overrides.http_addr {
            config.http.addr = v.clone();
        }
        if let Some(v) = &overrides.rpc_addr {
            config.cluster.rpc_addr = v.clone();
        }
        if let Some(v) = &overrides.seeds {
            config.cluster.seeds = v.clone();
        }
        if let Some(v) = &overrides.cluster_secret_file {
            config.cluster.secret_file = v.clone();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Err(e) = self.group.validate() {
            return invalid(format!("group: {e}"));
        }
        if let Err(e) = self.transaction.validate() {
            return invalid(format!("transaction: {e}"));
        }
        let internal = INTERNAL_TOPIC_SEGMENT_BYTES_MIN..=INTERNAL_TOPIC_SEGMENT_BYTES_MAX;
        for (key, bytes) in [
            (
                "group.offsets_topic_segment_bytes",
                self.group.offsets_topic_segment_bytes,
            ),
            (
                "transaction.state_log_segment_bytes",
                self.transaction.state_log_segment_bytes,
            ),
        ] {
            if !internal.contains(&bytes) {
                return invalid(format!(
                    "{key} must be in {INTERNAL_TOPIC_SEGMENT_BYTES_MIN}..={INTERNAL_TOPIC_SEGMENT_BYTES_MAX}"
                ));
            }
        }
        if let Err(e) = self.cleaner.validate() {
            return invalid(format!("cleaner: {e}"));
        }
        if self.broker.node_id < 0 {
            return invalid(format!(
                "broker.node_id must be >= 0, got {}",
                self.broker.node_id
            ));
        }
        if self.broker.shards > SHARDS_MAX {
            return invalid(format!("broker.shards must be <= {SHARDS_MAX}"));
        }
        if self.kafka.addr.parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "kafka.addr must be HOST:PORT with a numeric host, got {:?}",
                self.kafka.addr
            ));
        }
        if !self.kafka.advertised_addr.is_empty()
            && split_host_port(&self.kafka.advertised_addr).is_none()
        {
            return invalid(format!(
                "kafka.advertised_addr must be HOST:PORT, got {:?}",
                self.kafka.advertised_addr
            ));
        }
        if !self.http.addr.is_empty() && self.http.addr.parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "http.addr must be HOST:PORT with a numeric host (or empty for none), got {:?}",
                self.http.addr
            ));
        }
        if self.kafka.frame_bytes_max < FRAME_BYTES_MAX_MIN {
            return invalid(format!(
                "kafka.frame_bytes_max must be >= {FRAME_BYTES_MAX_MIN}"
            ));
        }
        if self.kafka.queued_max_request_bytes < u64::from(self.kafka.frame_bytes_max) {
            // As Kafka: a frame the budget can never hold would wait forever.
            return invalid(format!(
                "kafka.queued_max_request_bytes ({}) must be >= kafka.frame_bytes_max ({})",
                self.kafka.queued_max_request_bytes, self.kafka.frame_bytes_max
            ));
        }
        if self.kafka.connections_max == 0 {
            return invalid("kafka.connections_max must be >= 1".into());
        }
        if self.kafka.in_flight_per_connection_max == 0 {
            return invalid("kafka.in_flight_per_connection_max must be >= 1".into());
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&self.kafka.default_partitions) {
            return invalid(format!(
                "kafka.default_partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}"
            ));
        }
        // The same bounds as topic overrides, so a topic without overrides always opens.
        if let Err(e) = crate::metadata::TopicConfig::check_defaults(&self.log) {
            return invalid(e);
        }
        if self.log.disk_free_percent_min > DISK_FREE_PERCENT_MIN_MAX {
            return invalid(format!(
                "log.disk_free_percent_min must be <= {DISK_FREE_PERCENT_MIN_MAX}"
            ));
        }
        if self.log.disk_check_interval_ms == 0 {
            return invalid("log.disk_check_interval_ms must be >= 1".into());
        }
        if self.cluster.enabled() {
            let seeds = match self.cluster.parse_seeds() {
                Ok(s) => s,
                Err(e) => return invalid(format!("cluster.seeds: {e}")),
            };
            if !seeds.iter().any(|s| s.node_id == self.broker.node_id) {
                return invalid(format!(
                    "cluster.seeds must name this node (node_id {}): every voter is a broker",
                    self.broker.node_id
                ));
            }
            if self.cluster.rpc_addr.parse::<SocketAddr>().is_err() {
                return invalid(format!(
                    "cluster.rpc_addr must be HOST:PORT with a numeric host, got {:?}",
                    self.cluster.rpc_addr
                ));
            }
            if self.cluster.broker_heartbeat_interval_ms <= 0
                || self.cluster.broker_session_timeout_ms
                    < 2 * self.cluster.broker_heartbeat_interval_ms
            {
                return invalid(
                    "cluster.broker_session_timeout_ms must be at least twice a positive broker_heartbeat_interval_ms".into(),
                );
            }
            if self.cluster.metadata_snapshot_interval_entries == 0 {
                return invalid("cluster.metadata_snapshot_interval_entries must be >= 1".into());
            }
            if self.cluster.replica_lag_time_max_ms <= 0
                || self.cluster.request_timeout_ms <= 0
                || self.cluster.replica_fetch_backoff_ms <= 0
                || self.cluster.replica_fetch_wait_max_ms < 0
            {
                return invalid("cluster intervals must be positive".into());
            }
        }
        Ok(())
    }

    /// Shards to run: the configured count or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.broker.shards > 0 {
            self.broker.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

/// `SLUICE_KAFKA_ADDR=x` sets `[kafka] addr = "x"`. Values parse as TOML scalars
/// (integers, floats, booleans), anything else is a string.
fn apply_env(
    table: &mut toml::Table,
    env: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    const SECTIONS: [&str; 8] = [
        "broker",
        "kafka",
        "log",
        "group",
        "transaction",
        "http",
        "cleaner",
        "cluster",
    ];
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let parsed = parse_scalar(&value);
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), parsed);
            }
            _ => {
                return Err(ConfigError::Env {
                    var,
                    message: format!("[{section}] in the config file is not a table"),
                });
            }
        }
    }
    Ok(())
}

fn parse_scalar(value: &str) -> toml::Value {
    if let Ok(v) = value.parse::<i64>() {
        return toml::Value::Integer(v);
    }
    if let Ok(v) = value.parse::<bool>() {
        return toml::Value::Boolean(v);
    }
    if let Ok(v) = value.parse::<f64>()
        && value.contains('.')
    {
        return toml::Value::Float(v);
    }
    toml::Value::String(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Config::load(None, std::iter::empty(), &Overrides::default()).unwrap();
        assert_eq!(c.kafka.addr, KAFKA_ADDR_DEFAULT);
        assert_eq!(c.broker.data_dir, PathBuf::from("./data"));
        assert!(c.shard_count() >= 1);
    }

    #[test]
    fn env_then_flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "[kafka]\naddr = \"127.0.0.1:1\"\ndefault_partitions = 3\n",
        )
        .unwrap();
        let env = vec![
            ("SLUICE_KAFKA_ADDR".to_string(), "127.0.0.1:2".to_string()),
            (
                "SLUICE_LOG_ACKS_ALL_DURABLE".to_string(),
                "false".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let overrides = Overrides {
            shards: Some(3),
            ..Default::default()
        };
        let c = Config::load(Some(&path), env.into_iter(), &overrides).unwrap();
        assert_eq!(c.kafka.addr, "127.0.0.1:2");
        assert_eq!(c.kafka.default_partitions, 3);
        assert!(!c.log.acks_all_durable);
        assert_eq!(c.broker.shards, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let env = vec![("SLUICE_KAFKA_NOPE".to_string(), "1".to_string())];
        assert!(Config::load(None, env.into_iter(), &Overrides::default()).is_err());
        let env = vec![(
            "SLUICE_KAFKA_DEFAULT_PARTITIONS".to_string(),
            "0".to_string(),
        )];
        assert!(Config::load(None, env.into_iter(), &Overrides::default()).is_err());
    }

    /// Issue 12 item 2: `[log]` defaults get the topic-config bounds at start-up, Kafka's
    /// lower bounds included, so a topic without overrides always opens.
    #[test]
    fn log_defaults_get_the_topic_config_bounds() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let e = Config::load(
            None,
            env(&[("SLUICE_LOG_SEGMENT_MS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("log.segment_ms"), "{e}");
        let c = Config::load(
            None,
            env(&[
                ("SLUICE_LOG_INDEX_INTERVAL_BYTES", "1"),
                ("SLUICE_LOG_MAX_MESSAGE_BYTES", "0"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.log.index_interval_bytes, 1);
    }

    #[test]
    fn every_section_takes_environment_overrides() {
        let env = vec![
            (
                "SLUICE_CLUSTER_BROKER_SESSION_TIMEOUT_MS".to_string(),
                "3000".to_string(),
            ),
            ("SLUICE_HTTP_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ];
        let c = Config::load(None, env.into_iter(), &Overrides::default()).unwrap();
        assert_eq!(c.cluster.broker_session_timeout_ms, 3000);
        assert_eq!(c.http.addr, "127.0.0.1:0");
    }

    #[test]
    fn request_budget_must_hold_the_largest_frame() {
        let env = |budget: u64| {
            vec![
                (
                    "SLUICE_KAFKA_FRAME_BYTES_MAX".to_string(),
                    "2048".to_string(),
                ),
                (
                    "SLUICE_KAFKA_QUEUED_MAX_REQUEST_BYTES".to_string(),
                    budget.to_string(),
                ),
            ]
        };
        assert!(Config::load(None, env(2047).into_iter(), &Overrides::default()).is_err());
        let c = Config::load(None, env(2048).into_iter(), &Overrides::default()).unwrap();
        assert_eq!(c.kafka.queued_max_request_bytes, 2048);
    }

    #[test]
    fn cluster_mode_needs_this_node_among_the_seeds() {
        let overrides = Overrides {
            node_id: Some(5),
            rpc_addr: Some("127.0.0.1:9093".into()),
            seeds: Some("0@127.0.0.1:9093,1@127.0.0.1:9094".into()),
            ..Default::default()
        };
        assert!(Config::load(None, std::iter::empty(), &overrides).is_err());
        let overrides = Overrides {
            node_id: Some(1),
            ..overrides
        };
        let c = Config::load(None, std::iter::empty(), &overrides).unwrap();
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.parse_seeds().unwrap()[1].port, 9094);
        let bad = Overrides {
            seeds: Some("0@nohost".into()),
            ..Default::default()
        };
        assert!(Config::load(None, std::iter::empty(), &bad).is_err());
    }
}
