//! Per-log configuration, with Kafka's topic-config names.

use crate::limits::{
    INDEX_INTERVAL_BYTES_DEFAULT, INDEX_INTERVAL_BYTES_MIN, MAX_BATCH_BYTES_DEFAULT,
    MAX_BATCH_BYTES_LIMIT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
    SEGMENT_MS_DEFAULT,
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

impl LogConfig {
    /// Checks every field against engine::limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            "segment.bytes",
            self.segment_bytes as i64,
            SEGMENT_BYTES_MIN as i64,
            SEGMENT_BYTES_MAX as i64,
        )?;
        check("segment.ms", self.segment_ms, 1, i64::MAX)?;
        check(
            "index.interval.bytes",
            i64::from(self.index_interval_bytes),
            i64::from(INDEX_INTERVAL_BYTES_MIN),
            i64::from(u32::MAX),
        )?;
        check("retention.ms", self.retention_ms, -1, i64::MAX)?;
        check("retention.bytes", self.retention_bytes, -1, i64::MAX)?;
        check(
            "max.message.bytes",
            i64::from(self.max_batch_bytes),
            61,
            i64::from(MAX_BATCH_BYTES_LIMIT),
        )?;
        if let FlushPolicy::Interval { ms, bytes } = self.flush {
            check("flush.ms", ms, 0, i64::MAX)?;
            check("flush.bytes", bytes as i64, 0, i64::MAX)?;
        }
        Ok(())
    }
}

fn check(name: &'static str, value: i64, min: i64, max: i64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError {
            name,
            value,
            min,
            max,
        });
    }
    Ok(())
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
}
