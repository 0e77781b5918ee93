//! The `[cleaner]` section of the broker config (Kafka's `log.cleaner.*` settings). No
//! imports beyond serde: `crate::config` names it, and the cleaner task depends on the rest.

use serde::{Deserialize, Serialize};

/// Smallest offset map a shard gets, whatever the split of `dedupe_buffer_bytes`.
pub const DEDUPE_BUFFER_BYTES_PER_SHARD_MIN: u64 = 1024 * 1024;

/// `[cleaner]` (Kafka's `log.cleaner.*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanerSection {
    /// log.cleaner.enable.
    pub enabled: bool,
    /// log.cleaner.dedupe.buffer.size: offset-map memory for the whole broker, split evenly
    /// across shards (each map holds `bytes / engine::compaction::OFFSET_MAP_ENTRY_BYTES`
    /// keys per round; a dirty range with more keys is cleaned over several rounds).
    pub dedupe_buffer_bytes: u64,
    /// log.cleaner.io.max.bytes.per.second: read plus write bytes per second for the whole
    /// broker, split across shards (0 = unlimited, Kafka's default).
    pub io_max_bytes_per_second: u64,
    /// log.cleaner.backoff.ms: pause between passes when nothing is due.
    pub backoff_ms: u64,
}

impl Default for CleanerSection {
    fn default() -> Self {
        CleanerSection {
            enabled: true,
            dedupe_buffer_bytes: 128 * 1024 * 1024,
            io_max_bytes_per_second: 0,
            backoff_ms: 15_000,
        }
    }
}

impl CleanerSection {
    pub fn validate(&self) -> Result<(), String> {
        if self.backoff_ms == 0 {
            return Err("backoff_ms must be >= 1".into());
        }
        if self.dedupe_buffer_bytes < DEDUPE_BUFFER_BYTES_PER_SHARD_MIN {
            return Err(format!(
                "dedupe_buffer_bytes must be >= {DEDUPE_BUFFER_BYTES_PER_SHARD_MIN}"
            ));
        }
        Ok(())
    }
}
