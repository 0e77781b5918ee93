//! Topic-level configs under Kafka's names, validated into typed values and mapped onto the
//! engine's `LogConfig`.
//!
//! Owns: the list of topic configs Sluice understands, their defaults (from the `[log]`
//! section), parsing, and which are read-only. Unknown names and unsupported values are
//! rejected (INVALID_CONFIG at the handler boundary) rather than silently ignored.
//!
//! Invariant: a config `resolve` accepts opens a log. Integer settings the engine takes are
//! checked against the engine's own `engine::config` bounds (Kafka's ranges), and `resolve`
//! ends with `LogConfig::validate` on the result, the very check a shard runs when it opens
//! or re-opens the partition; the `[log]` defaults pass the same checks at start-up
//! (`check_defaults`). So no CreateTopics or AlterConfigs can leave a shard unable to install
//! metadata (issue 12).

use std::collections::BTreeMap;

use engine::config::Bounds;

use crate::config::LogSection;

/// Every topic config name Sluice accepts, in DescribeConfigs order.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "flush.ms",
    "index.interval.bytes",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
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

/// segment.bytes as a topic override (Kafka 4: 1 MiB ..= i32::MAX); the engine takes smaller
/// segments too (the `[log]` default may use them), within `engine::config::SEGMENT_BYTES`.
pub const SEGMENT_BYTES: Bounds = Bounds {
    name: "segment.bytes",
    min: SEGMENT_BYTES_MIN as i64,
    max: i32::MAX as i64,
};
/// max.message.bytes (Kafka: an int, atLeast(0)). The engine is given at most
/// `engine::limits::MAX_BATCH_BYTES_LIMIT` (`TopicConfig::log_config`), as Kafka's
/// socket.request.max.bytes caps a batch whatever the topic says.
pub const MAX_MESSAGE_BYTES: Bounds = Bounds {
    name: "max.message.bytes",
    min: 0,
    max: i32::MAX as i64,
};
/// min.insync.replicas (Kafka: an int, atLeast(1)).
pub const MIN_INSYNC_REPLICAS: Bounds = Bounds {
    name: "min.insync.replicas",
    min: 1,
    max: i32::MAX as i64,
};
/// message.timestamp.before.max.ms (Kafka: atLeast(0)).
pub const TIMESTAMP_BEFORE_MAX_MS: Bounds = Bounds {
    name: "message.timestamp.before.max.ms",
    min: 0,
    max: i64::MAX,
};
/// delete.retention.ms (Kafka: atLeast(0); default one day).
pub const DELETE_RETENTION_MS: Bounds = Bounds {
    name: "delete.retention.ms",
    min: 0,
    max: i64::MAX,
};
pub const DELETE_RETENTION_MS_DEFAULT: i64 = 86_400_000;
/// min.compaction.lag.ms (Kafka: atLeast(0)).
pub const MIN_COMPACTION_LAG_MS: Bounds = Bounds {
    name: "min.compaction.lag.ms",
    min: 0,
    max: i64::MAX,
};
/// max.compaction.lag.ms (Kafka: atLeast(1); default Long.MAX_VALUE).
pub const MAX_COMPACTION_LAG_MS: Bounds = Bounds {
    name: "max.compaction.lag.ms",
    min: 1,
    max: i64::MAX,
};
/// Kafka's default min.cleanable.dirty.ratio.
pub const MIN_CLEANABLE_DIRTY_RATIO_DEFAULT: f64 = 0.5;

/// Kafka 4's default message.timestamp.after.max.ms: one hour.
pub const TIMESTAMP_AFTER_MAX_MS_DEFAULT: i64 = 3_600_000;

/// message.timestamp.after.max.ms (Kafka: atLeast(0)).
pub const TIMESTAMP_AFTER_MAX_MS: Bounds = Bounds {
    name: "message.timestamp.after.max.ms",
    min: 0,
    max: i64::MAX,
};

const _: () = assert!(SEGMENT_BYTES_MIN >= engine::limits::SEGMENT_BYTES_MIN);
const _: () = assert!(
    crate::config::INTERNAL_TOPIC_SEGMENT_BYTES_MIN == SEGMENT_BYTES_MIN
        && crate::config::INTERNAL_TOPIC_SEGMENT_BYTES_MAX == SEGMENT_BYTES.max as u64
);
const _: () = assert!(SEGMENT_BYTES.max <= engine::config::SEGMENT_BYTES.max);
const _: () = assert!(MAX_MESSAGE_BYTES.min >= engine::config::MAX_MESSAGE_BYTES.min);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    #[error("unknown topic config {0:?}")]
    Unknown(String),
    #[error("invalid value {value:?} for {name}: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: String,
    },
    /// The resolved config fails the engine's check (a bug in the per-key bounds above, or a
    /// `[log]` default that slipped past `check_defaults`).
    #[error("the log would refuse this config: {0}")]
    Log(#[from] engine::config::ConfigError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    /// The log cleaner works on this topic.
    pub fn compacts(self) -> bool {
        self != CleanupPolicy::Delete
    }
}

/// A topic's effective configuration (defaults overlaid with its overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub cleanup_policy: CleanupPolicy,
    /// delete.retention.ms: how long the cleaner keeps tombstones (and markers of emptied
    /// transactions) after it first kept them.
    pub delete_retention_ms: i64,
    /// min.compaction.lag.ms / max.compaction.lag.ms.
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    /// min.cleanable.dirty.ratio, in [0, 1].
    pub min_cleanable_dirty_ratio: f64,
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
            delete_retention_ms: DELETE_RETENTION_MS_DEFAULT,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: MIN_CLEANABLE_DIRTY_RATIO_DEFAULT,
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
            // Kafka 4's default (LOG_MESSAGE_TIMESTAMP_AFTER_MAX_MS_DEFAULT, 1 hour): a
            // CreateTime more than an hour ahead of the broker's clock is INVALID_TIMESTAMP.
            timestamp_after_max_ms: TIMESTAMP_AFTER_MAX_MS_DEFAULT,
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
        if c.min_compaction_lag_ms > c.max_compaction_lag_ms {
            // Kafka's LogConfig.validate refuses the same pair.
            return Err(TopicConfigError::InvalidValue {
                name: "min.compaction.lag.ms".into(),
                value: c.min_compaction_lag_ms.to_string(),
                reason: format!(
                    "must not exceed max.compaction.lag.ms ({})",
                    c.max_compaction_lag_ms
                ),
            });
        }
        c.log_config(log).validate()?;
        Ok(c)
    }

    /// Start-up check of the `[log]` section: every default within the bounds a topic
    /// override must meet (engine bounds for the log's own settings), so topics without
    /// overrides open too. Errors name the `[log]` key.
    pub fn check_defaults(log: &LogSection) -> Result<(), String> {
        let checks = [
            (
                "segment_bytes",
                engine::config::SEGMENT_BYTES,
                i64::try_from(log.segment_bytes).unwrap_or(i64::MAX),
            ),
            ("segment_ms", engine::config::SEGMENT_MS, log.segment_ms),
            (
                "retention_ms",
                engine::config::RETENTION_MS,
                log.retention_ms,
            ),
            (
                "retention_bytes",
                engine::config::RETENTION_BYTES,
                log.retention_bytes,
            ),
            (
                "index_interval_bytes",
                engine::config::INDEX_INTERVAL_BYTES,
                i64::from(log.index_interval_bytes),
            ),
            (
                "max_message_bytes",
                MAX_MESSAGE_BYTES,
                i64::from(log.max_message_bytes),
            ),
            // Not `flush_interval_ms`: it is not flush.ms (0 there means every append) and
            // any value maps to a valid policy (`log_config`), so none is refused.
        ];
        for (key, bounds, value) in checks {
            bounds
                .check(value)
                .map_err(|_| format!("log.{key} = {value}: {}", describe(&bounds)))?;
        }
        TopicConfig::defaults(log)
            .log_config(log)
            .validate()
            .map_err(|e| e.to_string())
    }

    /// Applies one `name = value`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), TopicConfigError> {
        let bad = |reason: &str| TopicConfigError::InvalidValue {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let int = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("not an integer"))
        };
        // An integer within `bounds` (Kafka's range for the key).
        let within = |bounds: Bounds| {
            let v = int()?;
            bounds.check(v).map_err(|_| bad(&describe(&bounds)))?;
            Ok::<i64, TopicConfigError>(v)
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
            "delete.retention.ms" => self.delete_retention_ms = within(DELETE_RETENTION_MS)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = within(MIN_COMPACTION_LAG_MS)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = within(MAX_COMPACTION_LAG_MS)?,
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value.trim().parse().map_err(|_| bad("not a number"))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(bad("must be in 0.0..=1.0"));
                }
                self.min_cleanable_dirty_ratio = v;
            }
            "flush.ms" => self.flush_ms = within(engine::config::FLUSH_MS)?,
            "index.interval.bytes" => {
                let v = within(engine::config::INDEX_INTERVAL_BYTES)?;
                self.index_interval_bytes = u32::try_from(v).map_err(|_| bad("out of range"))?
            }
            "max.message.bytes" => {
                let v = within(MAX_MESSAGE_BYTES)?;
                self.max_message_bytes = u32::try_from(v).map_err(|_| bad("out of range"))?
            }
            "message.timestamp.type" => {
                self.log_append_time = match value {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(bad("expected CreateTime or LogAppendTime")),
                }
            }
            "message.timestamp.before.max.ms" => {
                self.timestamp_before_max_ms = within(TIMESTAMP_BEFORE_MAX_MS)?
            }
            "message.timestamp.after.max.ms" => {
                self.timestamp_after_max_ms = within(TIMESTAMP_AFTER_MAX_MS)?
            }
            "min.insync.replicas" => {
                let v = within(MIN_INSYNC_REPLICAS)?;
                self.min_insync_replicas = i32::try_from(v).map_err(|_| bad("out of range"))?
            }
            "preallocate" => {
                self.preallocate = parse_bool(value).ok_or_else(|| bad("expected true or false"))?
            }
            "retention.bytes" => self.retention_bytes = within(engine::config::RETENTION_BYTES)?,
            "retention.ms" => self.retention_ms = within(engine::config::RETENTION_MS)?,
            "segment.bytes" => {
                within(engine::config::SEGMENT_BYTES)?;
                let v = within(SEGMENT_BYTES)?;
                self.segment_bytes = u64::try_from(v).map_err(|_| bad("out of range"))?
            }
            "segment.ms" => self.segment_ms = within(engine::config::SEGMENT_MS)?,
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
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
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
        // Kafka deletes by time and size only under `delete` (`compact` alone keeps every
        // segment; the cleaner bounds it).
        let deletes = self.cleanup_policy != CleanupPolicy::Compact;
        engine::LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            index_interval_bytes: self.index_interval_bytes,
            retention_ms: if deletes { self.retention_ms } else { -1 },
            retention_bytes: if deletes { self.retention_bytes } else { -1 },
            flush,
            max_batch_bytes: self
                .max_message_bytes
                .min(engine::limits::MAX_BATCH_BYTES_LIMIT),
            preallocate: self.preallocate,
        }
    }
}

/// "must be >= 0", "must be in 1..=2147483647": Kafka's wording of a range, for the client.
fn describe(bounds: &Bounds) -> String {
    match (bounds.min, bounds.max) {
        (i64::MIN, i64::MAX) => "must be an integer".to_string(),
        (min, i64::MAX) => format!("must be >= {min}"),
        (min, max) => format!("must be in {min}..={max}"),
    }
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

    /// Kafka's range for every integer config: the ends are accepted and resolve to a config
    /// the engine opens; one past either end is refused (issue 12: index.interval.bytes 1..63
    /// and max.message.bytes 1..60 were accepted here and refused by the engine).
    #[test]
    fn integer_configs_take_kafkas_range_and_the_engine_agrees() {
        let log = LogSection::default();
        let cases: &[(&str, i64, i64)] = &[
            ("flush.ms", 0, i64::MAX),
            ("index.interval.bytes", 0, i64::from(u32::MAX)),
            ("max.message.bytes", 0, i64::from(i32::MAX)),
            ("message.timestamp.before.max.ms", 0, i64::MAX),
            ("message.timestamp.after.max.ms", 0, i64::MAX),
            ("min.insync.replicas", 1, i64::from(i32::MAX)),
            ("retention.bytes", i64::MIN, i64::MAX),
            ("retention.ms", -1, i64::MAX),
            ("segment.bytes", 1024 * 1024, i64::from(i32::MAX)),
            ("segment.ms", 1, i64::MAX),
        ];
        for &(name, min, max) in cases {
            for v in [min, min.saturating_add(1), 1, 63, 64, max] {
                if v < min {
                    continue;
                }
                let o = BTreeMap::from([(name.to_string(), v.to_string())]);
                let c = TopicConfig::resolve(&log, &o)
                    .unwrap_or_else(|e| panic!("{name}={v} refused: {e}"));
                assert_eq!(c.value_of(name), Some(v.to_string()), "{name}");
                assert_eq!(c.log_config(&log).validate(), Ok(()), "{name}={v}");
            }
            for v in [min.checked_sub(1), max.checked_add(1)]
                .into_iter()
                .flatten()
            {
                let o = BTreeMap::from([(name.to_string(), v.to_string())]);
                assert!(
                    matches!(
                        TopicConfig::resolve(&log, &o),
                        Err(TopicConfigError::InvalidValue { .. })
                    ),
                    "{name}={v} accepted"
                );
            }
        }
        // Above the engine's batch limit the engine gets the limit.
        let o = BTreeMap::from([("max.message.bytes".to_string(), i32::MAX.to_string())]);
        let c = TopicConfig::resolve(&log, &o).unwrap();
        assert_eq!(
            c.log_config(&log).max_batch_bytes,
            engine::limits::MAX_BATCH_BYTES_LIMIT
        );
    }

    #[test]
    fn log_defaults_are_checked_with_the_same_bounds() {
        assert_eq!(TopicConfig::check_defaults(&LogSection::default()), Ok(()));
        let tiny = LogSection {
            index_interval_bytes: 1,
            max_message_bytes: 0,
            segment_bytes: engine::limits::SEGMENT_BYTES_MIN,
            ..LogSection::default()
        };
        assert_eq!(TopicConfig::check_defaults(&tiny), Ok(()));
        for bad in [
            LogSection {
                segment_bytes: 10,
                ..LogSection::default()
            },
            LogSection {
                segment_ms: 0,
                ..LogSection::default()
            },
            LogSection {
                retention_ms: -2,
                ..LogSection::default()
            },
            LogSection {
                max_message_bytes: u32::MAX,
                ..LogSection::default()
            },
        ] {
            let e = TopicConfig::check_defaults(&bad).unwrap_err();
            assert!(e.starts_with("log."), "{e}");
        }
    }
}
