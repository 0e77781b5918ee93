//! Replication and controller settings, with Kafka's names in the comments.
//!
//! Owns: the timing and safety knobs of the state machines and their validation.
//! Invariants (checked by `validate`): every interval is positive; heartbeats come several
//! times per session timeout; `min_insync_replicas >= 1`.

/// Settings of the broker side (leader and follower replicas, heartbeats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// replica.lag.time.max.ms: an ISR follower not caught up for this long is shrunk out.
    pub replica_lag_time_max_ms: i64,
    /// min.insync.replicas (topic): acks=all needs at least this many in the ISR.
    pub min_insync_replicas: usize,
    /// replica.fetch.backoff.ms: wait after an empty or failed fetch before the next one.
    pub fetch_backoff_ms: i64,
    /// Wait after a successful but empty fetch. 0 where the leader long-polls the fetch
    /// (the broker: replica.fetch.wait.max.ms already paced it); the simulator's leaders
    /// answer at once, so there it is `fetch_backoff_ms`.
    pub empty_fetch_backoff_ms: i64,
    /// request.timeout.ms for replica fetches, OffsetForLeaderEpoch, AlterPartition and
    /// registrations: an unanswered request is sent again after this long.
    pub request_timeout_ms: i64,
    /// The produce request's timeout_ms (the simulator uses one value for all produces).
    pub produce_timeout_ms: i64,
    /// broker.heartbeat.interval.ms.
    pub heartbeat_interval_ms: i64,
    /// What a follower's fetch offset and the leader's own contribution to the high
    /// watermark mean: durable (fdatasynced) data, or data in the page cache.
    pub durability: Durability,
}

/// Whether acks=all waits for fdatasync on every ISR member (design §4, like Redpanda) or only
/// for the data to be in every ISR member's page cache (Kafka's default with
/// flush.messages unset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The leader counts its own durable offset; a follower fetches the next offset only after
    /// what it appended is durable, so every fetch offset it reports is durable. Acknowledged
    /// records survive any crash of any set of brokers.
    Fsync,
    /// The leader counts its log end offset and followers fetch without waiting for a sync.
    /// Acknowledged records survive failures of up to ISR-1 brokers at once, not a
    /// simultaneous crash of the whole ISR (e.g. a power cut).
    PageCache,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            fetch_backoff_ms: 1_000,
            empty_fetch_backoff_ms: 1_000,
            request_timeout_ms: 30_000,
            produce_timeout_ms: 30_000,
            heartbeat_interval_ms: 2_000,
            durability: Durability::Fsync,
        }
    }
}

/// Settings of the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// broker.session.timeout.ms: a broker without a heartbeat for this long is fenced.
    pub broker_session_timeout_ms: i64,
    /// unclean.leader.election.enable: elect an out-of-sync replica when no ISR member is
    /// alive (loses acknowledged data; off by default as in Kafka).
    pub unclean_leader_election: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            broker_session_timeout_ms: 9_000,
            unclean_leader_election: false,
        }
    }
}

/// A configuration that breaks an invariant the state machines rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid replication config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ReplicaConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replica_lag_time_max_ms <= 0
            || self.fetch_backoff_ms <= 0
            || self.empty_fetch_backoff_ms < 0
            || self.request_timeout_ms <= 0
            || self.produce_timeout_ms <= 0
            || self.heartbeat_interval_ms <= 0
        {
            return Err(ConfigError("every interval and timeout must be positive"));
        }
        if self.min_insync_replicas == 0 {
            return Err(ConfigError("min.insync.replicas must be at least 1"));
        }
        Ok(())
    }
}

impl ControllerConfig {
    /// `heartbeat_interval_ms` is the brokers' interval: the session must outlast a few.
    pub fn validate(&self, heartbeat_interval_ms: i64) -> Result<(), ConfigError> {
        if self.broker_session_timeout_ms < 2 * heartbeat_interval_ms {
            return Err(ConfigError(
                "broker.session.timeout.ms must be at least twice broker.heartbeat.interval.ms",
            ));
        }
        Ok(())
    }
}
