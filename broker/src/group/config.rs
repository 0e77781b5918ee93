//! The `[group]` section of the broker config (Kafka's group-coordinator settings, under
//! their Kafka names with dots as underscores), and its conversion to the coordinator's
//! [`GroupConfig`]. `SLUICE_GROUP_<KEY>` environment variables override it like any section.

use serde::{Deserialize, Serialize};

use super::coordinator::{GroupConfig, GroupConfigError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSection {
    /// offsets.topic.num.partitions (used when `__consumer_offsets` is created).
    pub offsets_topic_num_partitions: i32,
    /// offsets.topic.segment.bytes (Kafka's default 100 MiB): segments of
    /// `__consumer_offsets`, which the log cleaner compacts once they roll.
    pub offsets_topic_segment_bytes: u64,
    /// offsets.retention.minutes
    pub offsets_retention_minutes: i64,
    /// offsets.retention.check.interval.ms
    pub offsets_retention_check_interval_ms: i64,
    /// offset.metadata.max.bytes
    pub offset_metadata_max_bytes: usize,
    /// group.min.session.timeout.ms
    pub min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    pub max_session_timeout_ms: i32,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay_ms: i64,
    /// group.max.size (at most `limits::MEMBERS_PER_GROUP_MAX`)
    pub max_size: usize,
    /// group.consumer.session.timeout.ms (KIP-848 groups)
    pub consumer_session_timeout_ms: i32,
    /// group.consumer.heartbeat.interval.ms (KIP-848 groups)
    pub consumer_heartbeat_interval_ms: i32,
}

impl Default for GroupSection {
    fn default() -> Self {
        let c = GroupConfig::default();
        Self {
            offsets_topic_num_partitions: c.offsets_topic_partitions,
            offsets_topic_segment_bytes: crate::config::INTERNAL_TOPIC_SEGMENT_BYTES,
            offsets_retention_minutes: c.offsets_retention_ms / 60_000,
            offsets_retention_check_interval_ms: c.offsets_retention_check_interval_ms,
            offset_metadata_max_bytes: c.offset_metadata_max_bytes,
            min_session_timeout_ms: c.min_session_timeout_ms,
            max_session_timeout_ms: c.max_session_timeout_ms,
            initial_rebalance_delay_ms: c.initial_rebalance_delay_ms,
            max_size: c.max_size,
            consumer_session_timeout_ms: c.consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: c.consumer_heartbeat_interval_ms,
        }
    }
}

impl GroupSection {
    /// The coordinator's settings; checked once at start-up by `validate`.
    pub fn to_config(&self) -> GroupConfig {
        GroupConfig {
            offsets_topic_partitions: self.offsets_topic_num_partitions,
            min_session_timeout_ms: self.min_session_timeout_ms,
            max_session_timeout_ms: self.max_session_timeout_ms,
            initial_rebalance_delay_ms: self.initial_rebalance_delay_ms,
            max_size: self.max_size,
            offsets_retention_ms: self.offsets_retention_minutes.saturating_mul(60_000),
            offsets_retention_check_interval_ms: self.offsets_retention_check_interval_ms,
            offset_metadata_max_bytes: self.offset_metadata_max_bytes,
            consumer_session_timeout_ms: self.consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: self.consumer_heartbeat_interval_ms,
        }
    }

    pub fn validate(&self) -> Result<(), GroupConfigError> {
        self.to_config().validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let s = GroupSection::default();
        assert_eq!(s.offsets_topic_num_partitions, 50);
        assert_eq!(s.offsets_retention_minutes, 7 * 24 * 60);
        assert_eq!(s.initial_rebalance_delay_ms, 3_000);
        assert_eq!(s.to_config().offsets_retention_ms, 7 * 24 * 60 * 60 * 1000);
        assert!(s.validate().is_ok());
        let bad = GroupSection {
            min_session_timeout_ms: 0,
            ..s.clone()
        };
        assert!(bad.validate().is_err());
        let spin = GroupSection {
            offsets_retention_check_interval_ms: 0,
            ..s
        };
        assert!(spin.validate().is_err());
    }

    #[test]
    fn parses_from_toml() {
        let s: GroupSection = toml::from_str("initial_rebalance_delay_ms = 0").unwrap();
        assert_eq!(s.initial_rebalance_delay_ms, 0);
        assert!(toml::from_str::<GroupSection>("nope = 1").is_err());
    }
}
