//! Topic-level configs under Kafka's names, validated into typed values and mapped onto the
//! engine's `LogConfig`.
//!
//! Owns: the list of topic configs Sluice understands, their defaults (from the `[log]`
//! section), parsing, and which are read-only. Unknown names and unsupported values are
//! rejected (INVALID_CONFIG at the handler boundary) rather than silently ignored.

use std::collections::BTreeMap;

use crate::config::LogSection;

/// Every topic config name Sluice accepts, in DescribeConfigs order.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "min.insync.replicas",
    "preallocate",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Kafka's floor for `segment.bytes` (LogConfig: 1 MiB; 14 bytes in tests only).
pub const SEGMENT_BYTES_MIN: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    #[error("unknown topic config {0:?}")]
    Unknown(String),
    #[error("invalid value {value:?} for {name}: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

/// A topic's effective configuration (defaults overlaid with its overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub cleanup_policy: CleanupPolicy,
    pub flush_ms: i64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: u32,
    pub min_insync_replicas: i32,
    /// message.timestamp.type = LogAppendTime: the broker stamps each batch on append.
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub preallocate: bool,
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub unclean_leader_election: bool,
}

impl TopicConfig {
    pub fn defaults(log: &LogSection) -> Self {
        TopicConfig {
            cleanup_policy: CleanupPolicy::Delete,
            flush_ms: if log.flush_interval_ms > 0 {
                log.flush_interval_ms
            } else {
                i64::MAX
            },
            index_interval_bytes: log.index_interval_bytes,
            max_message_bytes: log.max_message_bytes,
            min_insync_replicas: 1,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            preallocate: log.preallocate,
            retention_bytes: log.retention_bytes,
            retention_ms: log.retention_ms,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            unclean_leader_election: false,
        }
    }

    /// Defaults overlaid with `overrides`; fails on the first unknown or invalid entry.
    pub fn resolve(
        log: &LogSection,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, TopicConfigError> {
        let mut c = TopicConfig::defaults(log);
        for (name, value) in overrides {
            c.set(name, value)?;
        }
        Ok(c)
    }

    /// Applies one `name = value`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), TopicConfigError> {
        let bad = |reason: &'static str| TopicConfigError::InvalidValue {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        };
        let int = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("not an integer"))
        };
        match name {
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                self.cleanup_policy = match parts.as_slice() {
                    ["delete"] => CleanupPolicy::Delete,
                    ["compact"] => CleanupPolicy::Compact,
                    ["compact", "delete"] => CleanupPolicy::CompactDelete,
                    _ => return Err(bad("expected delete, compact or compact,delete")),
                }
            }
            // Records are stored as the producer compressed them; Sluice never recompresses.
            "compression.type" => {
                if value != "producer" {
                    return Err(bad(
                        "only `producer` (keep the producer's compression) is supported",
                    ));
                }
            }
            "flush.ms" => self.flush_ms = nonneg(int()?).ok_or_else(|| bad("must be >= 0"))?,
            "index.interval.bytes" => {
                self.index_interval_bytes =
                    u32::try_from(int()?).map_err(|_| bad("must be in 0..2^32"))?
            }
            "max.message.bytes" => {
                self.max_message_bytes = u32::try_from(int()?)
                    .ok()
                    .filter(|v| *v > 0 && *v <= i32::MAX as u32)
                    .ok_or_else(|| bad("must be in 1..=2147483647"))?
            }
            "message.timestamp.type" => {
                self.log_append_time = match value {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(bad("expected CreateTime or LogAppendTime")),
                }
            }
            "message.timestamp.before.max.ms" => {
                self.timestamp_before_max_ms = nonneg(int()?).ok_or_else(|| bad("must be >= 0"))?
            }
            "message.timestamp.after.max.ms" => {
                self.timestamp_after_max_ms = nonneg(int()?).ok_or_else(|| bad("must be >= 0"))?
            }
            "min.insync.replicas" => {
                let v = int()?;
                if !(1..=i64::from(i32::MAX)).contains(&v) {
                    return Err(bad("must be >= 1"));
                }
                self.min_insync_replicas = v as i32;
            }
            "preallocate" => {
                self.preallocate = parse_bool(value).ok_or_else(|| bad("expected true or false"))?
            }
            "retention.bytes" => {
                self.retention_bytes =
                    at_least_minus_one(int()?).ok_or_else(|| bad("must be >= -1"))?
            }
            "retention.ms" => {
                self.retention_ms =
                    at_least_minus_one(int()?).ok_or_else(|| bad("must be >= -1"))?
            }
            "segment.bytes" => {
                let v = int()?;
                if v < SEGMENT_BYTES_MIN as i64 || v > i64::from(i32::MAX) {
                    return Err(bad("must be in 1048576..=2147483647"));
                }
                self.segment_bytes = v as u64;
            }
            "segment.ms" => {
                let v = int()?;
                if v < 1 {
                    return Err(bad("must be >= 1"));
                }
                self.segment_ms = v;
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election =
                    parse_bool(value).ok_or_else(|| bad("expected true or false"))?
            }
            _ => return Err(TopicConfigError::Unknown(name.to_string())),
        }
        Ok(())
    }

    /// The value DescribeConfigs reports for `name`.
    pub fn value_of(&self, name: &str) -> Option<String> {
        Some(match name {
            "cleanup.policy" => match self.cleanup_policy {
                CleanupPolicy::Delete => "delete".into(),
                CleanupPolicy::Compact => "compact".into(),
                CleanupPolicy::CompactDelete => "compact,delete".into(),
            },
            "compression.type" => "producer".into(),
            "flush.ms" => self.flush_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => {
                if self.log_append_time {
                    "LogAppendTime".into()
                } else {
                    "CreateTime".into()
                }
            }
            "message.timestamp.before.max.ms" => self.timestamp_before_max_ms.to_string(),
            "message.timestamp.after.max.ms" => self.timestamp_after_max_ms.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "preallocate" => self.preallocate.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election.to_string(),
            _ => return None,
        })
    }

    /// The engine's view of this topic's log.
    pub fn log_config(&self, log: &LogSection) -> engine::LogConfig {
        let flush = if self.flush_ms == i64::MAX && log.acks_all_durable {
            engine::FlushPolicy::EveryAppend
        } else {
            let ms = if self.flush_ms == i64::MAX {
                log.flush_interval_ms.max(1000)
            } else {
                self.flush_ms
            };
            engine::FlushPolicy::Interval {
                ms,
                bytes: i64::MAX as u64,
            }
        };
        engine::LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            index_interval_bytes: self.index_interval_bytes,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            flush,
            max_batch_bytes: self.max_message_bytes,
            preallocate: self.preallocate,
        }
    }
}

fn nonneg(v: i64) -> Option<i64> {
    (v >= 0).then_some(v)
}

fn at_least_minus_one(v: i64) -> Option<i64> {
    (v >= -1).then_some(v)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_parse_and_describe() {
        let log = LogSection::default();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "60000".to_string());
        o.insert("cleanup.policy".to_string(), "delete,compact".to_string());
        let c = TopicConfig::resolve(&log, &o).unwrap();
        assert_eq!(c.retention_ms, 60000);
        assert_eq!(c.value_of("cleanup.policy").unwrap(), "compact,delete");
        for name in TOPIC_CONFIG_NAMES {
            assert!(c.value_of(name).is_some(), "{name}");
        }
    }

    #[test]
    fn rejects_unknown_and_invalid() {
        let log = LogSection::default();
        let mut c = TopicConfig::defaults(&log);
        assert!(matches!(
            c.set("nope", "1"),
            Err(TopicConfigError::Unknown(_))
        ));
        assert!(c.set("retention.ms", "-2").is_err());
        assert!(c.set("segment.bytes", "10").is_err());
        assert!(c.set("compression.type", "gzip").is_err());
        assert!(c.set("min.insync.replicas", "0").is_err());
    }
}
