//! Per-log configuration, with Kafka's topic-config names.
//!
//! Owns: the bounds of every integer setting the engine takes (`SEGMENT_BYTES`, …, one
//! `Bounds` each, under its Kafka name). `LogConfig::validate` checks against them, and the
//! broker checks client-supplied topic configs and its `[log]` defaults against the same
//! constants, so a config the API accepted can never fail to open a log.
//! Invariants: each bound is at least as wide as Kafka's for the same key where the engine can
//! honour the value (a tiny `index.interval.bytes` only means an entry per batch; a tiny
//! `max.message.bytes` only means every batch is refused as too large).

use crate::limits::{
    INDEX_INTERVAL_BYTES_DEFAULT, MAX_BATCH_BYTES_DEFAULT, MAX_BATCH_BYTES_LIMIT,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_MS_DEFAULT,
};

/// When data reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// The broker calls `wait_durable` before acknowledging acks=all (group commit).
    EveryAppend,
    /// `flush_tick` fdatasyncs once `ms` have passed or `bytes` were appended since the last
    /// flush (Kafka's flush.ms / flush.messages style; durability comes from replication).
    Interval { ms: i64, bytes: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// segment.bytes
    pub segment_bytes: u64,
    /// segment.ms
    pub segment_ms: i64,
    /// index.interval.bytes
    pub index_interval_bytes: u32,
    /// retention.ms (-1 = infinite)
    pub retention_ms: i64,
    /// retention.bytes (-1 = infinite)
    pub retention_bytes: i64,
    pub flush: FlushPolicy,
    /// max.message.bytes
    pub max_batch_bytes: u32,
    /// preallocate: fallocate each segment to segment.bytes when it is created.
    pub preallocate: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            retention_ms: -1,
            retention_bytes: -1,
            flush: FlushPolicy::EveryAppend,
            max_batch_bytes: MAX_BATCH_BYTES_DEFAULT,
            preallocate: false,
        }
    }
}

/// A config value outside its bounds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name} = {value} is outside [{min}, {max}]")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: i64,
    pub min: i64,
    pub max: i64,
}

/// Inclusive bounds of one integer setting, under its Kafka topic-config name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub name: &'static str,
    pub min: i64,
    pub max: i64,
}

impl Bounds {
    pub fn check(&self, value: i64) -> Result<(), ConfigError> {
        if value < self.min || value > self.max {
            return Err(ConfigError {
                name: self.name,
                value,
                min: self.min,
                max: self.max,
            });
        }
        Ok(())
    }
}

/// segment.bytes (Kafka: 14 ..= i32::MAX; we want room for one batch header, and index
/// positions are u32).
pub const SEGMENT_BYTES: Bounds = Bounds {
    name: "segment.bytes",
    min: SEGMENT_BYTES_MIN as i64,
    max: SEGMENT_BYTES_MAX as i64,
};
/// segment.ms (Kafka: atLeast(1)).
pub const SEGMENT_MS: Bounds = Bounds {
    name: "segment.ms",
    min: 1,
    max: i64::MAX,
};
/// index.interval.bytes (Kafka: an int, atLeast(0)). Below the smallest batch (61 bytes)
/// every batch gets an index entry, which is what Kafka does too: memory per entry is fixed,
/// so the cost is bounded by batches per segment, not by this value (engine.md). Up to
/// u32::MAX rather than Kafka's i32::MAX: earlier versions took those values, and topics
/// stored with them must keep opening (any value above a segment means no entries).
pub const INDEX_INTERVAL_BYTES: Bounds = Bounds {
    name: "index.interval.bytes",
    min: 0,
    max: u32::MAX as i64,
};
/// retention.ms (Kafka: atLeast(-1); -1 keeps everything).
pub const RETENTION_MS: Bounds = Bounds {
    name: "retention.ms",
    min: -1,
    max: i64::MAX,
};
/// retention.bytes (Kafka: any long; a negative value keeps everything).
pub const RETENTION_BYTES: Bounds = Bounds {
    name: "retention.bytes",
    min: i64::MIN,
    max: i64::MAX,
};
/// max.message.bytes as the engine takes it (Kafka: an int, atLeast(0)). Below the smallest
/// batch (61 bytes) every produced batch is refused as too large. Above `MAX_BATCH_BYTES_LIMIT`
/// the broker passes the limit instead (as Kafka's socket.request.max.bytes caps it).
pub const MAX_MESSAGE_BYTES: Bounds = Bounds {
    name: "max.message.bytes",
    min: 0,
    max: MAX_BATCH_BYTES_LIMIT as i64,
};
/// flush.ms (Kafka: atLeast(0)).
pub const FLUSH_MS: Bounds = Bounds {
    name: "flush.ms",
    min: 0,
    max: i64::MAX,
};
/// Bytes appended between two flushes of the interval policy.
pub const FLUSH_BYTES: Bounds = Bounds {
    name: "flush.bytes",
    min: 0,
    max: i64::MAX,
};

impl LogConfig {
    /// Checks every field against its `Bounds`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        SEGMENT_BYTES.check(i64::try_from(self.segment_bytes).unwrap_or(i64::MAX))?;
        SEGMENT_MS.check(self.segment_ms)?;
        INDEX_INTERVAL_BYTES.check(i64::from(self.index_interval_bytes))?;
        RETENTION_MS.check(self.retention_ms)?;
        RETENTION_BYTES.check(self.retention_bytes)?;
        MAX_MESSAGE_BYTES.check(i64::from(self.max_batch_bytes))?;
        if let FlushPolicy::Interval { ms, bytes } = self.flush {
            FLUSH_MS.check(ms)?;
            FLUSH_BYTES.check(i64::try_from(bytes).unwrap_or(i64::MAX))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bounds_are_checked() {
        assert!(LogConfig::default().validate().is_ok());
        let c = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().name, "segment.bytes");
        let c = LogConfig {
            max_batch_bytes: u32::MAX,
            ..LogConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().name, "max.message.bytes");
    }

    /// Kafka's smallest legal values open a log (issue 12: the broker accepted them and the
    /// engine refused them, and the shard dropped its metadata).
    #[test]
    fn kafka_lower_bounds_are_valid() {
        let c = LogConfig {
            index_interval_bytes: 0,
            max_batch_bytes: 0,
            retention_ms: -1,
            retention_bytes: -5,
            flush: FlushPolicy::Interval { ms: 0, bytes: 0 },
            ..LogConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
        for b in [
            SEGMENT_BYTES,
            SEGMENT_MS,
            INDEX_INTERVAL_BYTES,
            RETENTION_MS,
            RETENTION_BYTES,
            MAX_MESSAGE_BYTES,
            FLUSH_MS,
        ] {
            assert!(b.check(b.min).is_ok() && b.check(b.max).is_ok(), "{b:?}");
            assert!(b.min == i64::MIN || b.check(b.min - 1).is_err(), "{b:?}");
        }
    }
}
