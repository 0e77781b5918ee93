//! The `[transaction]` section of the broker config: Kafka's transaction-coordinator
//! settings under their Kafka names (dots as underscores, the `transaction.` prefix dropped).
//! `SLUICE_TRANSACTION_<KEY>` environment variables override it like any section.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TxnSection {
    /// transaction.state.log.num.partitions (used when `__transaction_state` is created).
    pub state_log_num_partitions: i32,
    /// transaction.state.log.replication.factor: -1 (the default) takes the cluster's default
    /// replication, as `__consumer_offsets` does, so a single node works out of the box
    /// (Kafka's default is 3, which a smaller cluster must lower).
    pub state_log_replication_factor: i16,
    /// transaction.state.log.min.isr: -1 (the default) takes the topic default
    /// `min.insync.replicas` (Kafka's default is 2).
    pub state_log_min_isr: i32,
    /// transaction.state.log.segment.bytes (Kafka's default 100 MiB): segments of
    /// `__transaction_state`, which the log cleaner compacts once they roll.
    pub state_log_segment_bytes: u64,
    /// transaction.max.timeout.ms: InitProducerId with a longer timeout gets
    /// INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout_ms: i32,
    /// transactional.id.expiration.ms: a finished id unused this long is removed.
    pub id_expiration_ms: i64,
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms.
    pub abort_timed_out_transaction_cleanup_interval_ms: i64,
    /// transaction.remove.expired.transaction.cleanup.interval.ms.
    pub remove_expired_transaction_cleanup_interval_ms: i64,
    /// transaction.partition.verification.enable (KIP-890 part 1): partition leaders check
    /// with the coordinator before appending a transaction's first batch. On by default, as
    /// in Kafka; off only for tests of the partition side alone.
    pub partition_verification_enable: bool,
    /// The finalized `transaction.version` feature (Kafka's `kafka-features --feature
    /// transaction.version=N`), advertised in ApiVersions: 2 (the default, as in Kafka 4.x)
    /// lets clients use KIP-890 part 2 (an epoch bump at every commit and abort, partitions
    /// added by Produce v12+ and TxnOffsetCommit v5); 0 or 1 keeps them on the older
    /// protocol. It is also the version of the coordinator's own aborts.
    pub version: i16,
}

impl Default for TxnSection {
    fn default() -> Self {
        Self {
            state_log_num_partitions: 50,
            state_log_replication_factor: -1,
            state_log_min_isr: -1,
            state_log_segment_bytes: crate::config::INTERNAL_TOPIC_SEGMENT_BYTES,
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            remove_expired_transaction_cleanup_interval_ms: 3_600_000,
            partition_verification_enable: true,
            version: super::TxnVersion::MAX.0,
        }
    }
}

impl TxnSection {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=super::STATE_PARTITIONS_MAX).contains(&self.state_log_num_partitions) {
            return Err(format!(
                "state_log_num_partitions must be in 1..={}",
                super::STATE_PARTITIONS_MAX
            ));
        }
        if !(0..=super::TxnVersion::MAX.0).contains(&self.version) {
            return Err(format!(
                "version (transaction.version) must be in 0..={}",
                super::TxnVersion::MAX.0
            ));
        }
        if self.state_log_replication_factor == 0 || self.state_log_replication_factor < -1 {
            return Err(
                "state_log_replication_factor must be -1 (the cluster default) or >= 1".into(),
            );
        }
        if self.state_log_min_isr == 0 || self.state_log_min_isr < -1 {
            return Err("state_log_min_isr must be -1 (the topic default) or >= 1".into());
        }
        if self.max_timeout_ms < 1 {
            return Err("max_timeout_ms must be >= 1".into());
        }
        if self.id_expiration_ms < 1
            || self.abort_timed_out_transaction_cleanup_interval_ms < 1
            || self.remove_expired_transaction_cleanup_interval_ms < 1
        {
            return Err("expiration and cleanup intervals must be >= 1 ms".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let s = TxnSection::default();
        assert_eq!(
            (s.state_log_num_partitions, s.max_timeout_ms),
            (50, 900_000)
        );
        assert_eq!(s.id_expiration_ms, 7 * 24 * 3_600_000);
        assert!(s.validate().is_ok());
        let bad = TxnSection {
            max_timeout_ms: 0,
            ..s
        };
        assert!(bad.validate().is_err());
    }
}
