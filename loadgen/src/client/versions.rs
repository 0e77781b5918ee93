//! API version negotiation: the highest version both loadgen and the broker speak.
//!
//! loadgen's own ranges are capped where a newer version changes semantics loadgen does not
//! implement (Produce v13 and Fetch v13 address topics by id only; loadgen uses names;
//! AddPartitionsToTxn v4+ is broker to broker).
//!
//! Transactions: the versions a transactional producer sends depend on the transaction
//! protocol version it follows ([`TransactionVersion`]). Version 1 (KIP-98: explicit
//! AddPartitionsToTxn) caps transactional Produce at v11 and EndTxn at v4; version 2 (KIP-890
//! part 2: Produce v12 adds the partition, EndTxn v5 bumps the epoch and answers with it)
//! needs Produce v12 and EndTxn v5. The Java producer picks version 2 when the broker's
//! ApiVersions answer finalizes the feature `transaction.version` at 2 or more
//! (`TransactionManager.maybeUpdateTransactionV2Enabled`), and otherwise caps at
//! `LAST_STABLE_VERSION_BEFORE_TRANSACTION_V2`; [`ApiVersionTable::transaction_version`] keeps
//! that finalized level.

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// The versions of each API loadgen can speak, `(api_key, min, max)`.
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::InitProducerId, 0, 4),
    // Consumer groups (--group): v4+ FindCoordinator batches keys, JoinGroup v0 lacks the
    // rebalance timeout, LeaveGroup v5 only adds a reason.
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 1, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    // Transactions (--transactional-id); see above for the caps per transaction version.
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 5),
];

/// Highest Produce version a transaction version 1 request is sent at: v12 tells a transaction
/// version 2 broker that the client follows that protocol (Kafka's
/// `ProduceRequest.LAST_STABLE_VERSION_BEFORE_TRANSACTION_V2`).
pub const PRODUCE_TRANSACTION_V1_VERSION_MAX: i16 = 11;
/// Highest EndTxn version of transaction version 1 (Kafka's
/// `EndTxnRequest.LAST_STABLE_VERSION_BEFORE_TRANSACTION_V2`).
pub const END_TXN_TRANSACTION_V1_VERSION_MAX: i16 = 4;
/// Lowest Produce version of transaction version 2: the broker adds the partition to the
/// transaction itself.
pub const PRODUCE_TRANSACTION_V2_VERSION_MIN: i16 = PRODUCE_TRANSACTION_V1_VERSION_MAX + 1;
/// Lowest EndTxn version of transaction version 2: the coordinator bumps the epoch and answers
/// with the producer id and epoch to use next.
pub const END_TXN_TRANSACTION_V2_VERSION_MIN: i16 = END_TXN_TRANSACTION_V1_VERSION_MAX + 1;
/// The feature whose finalized level is the cluster's transaction protocol version.
pub const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";

/// The transaction protocol a transactional producer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionVersion {
    /// KIP-98: AddPartitionsToTxn before a partition's first batch; one producer epoch for
    /// every transaction, sequences run on across transactions.
    V1,
    /// KIP-890 part 2: Produce v12 adds the partition; EndTxn v5 bumps the epoch (a new
    /// producer id at epoch 0 once the epoch is exhausted), sequences restart at 0.
    V2,
}

impl TransactionVersion {
    /// What the Java producer follows when the broker finalized `transaction.version` at
    /// `finalized_level` (0: not finalized).
    pub fn for_finalized_level(finalized_level: i16) -> TransactionVersion {
        if finalized_level >= 2 {
            TransactionVersion::V2
        } else {
            TransactionVersion::V1
        }
    }

    /// The number, as `--transaction-version` and Kafka's feature level write it.
    pub fn number(self) -> u8 {
        match self {
            TransactionVersion::V1 => 1,
            TransactionVersion::V2 => 2,
        }
    }

    /// The Produce version a transactional request goes at, given the negotiated one; `None`
    /// if the broker does not serve what this version needs.
    pub fn produce_version(self, negotiated: i16) -> Option<i16> {
        match self {
            TransactionVersion::V1 => Some(negotiated.min(PRODUCE_TRANSACTION_V1_VERSION_MAX)),
            TransactionVersion::V2 => {
                (negotiated >= PRODUCE_TRANSACTION_V2_VERSION_MIN).then_some(negotiated)
            }
        }
    }

    /// The EndTxn version to send, given the negotiated one; `None` if the broker does not
    /// serve what this version needs.
    pub fn end_txn_version(self, negotiated: i16) -> Option<i16> {
        match self {
            TransactionVersion::V1 => Some(negotiated.min(END_TXN_TRANSACTION_V1_VERSION_MAX)),
            TransactionVersion::V2 => {
                (negotiated >= END_TXN_TRANSACTION_V2_VERSION_MIN).then_some(negotiated)
            }
        }
    }
}

/// Negotiated versions for one broker.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    /// `(api_key, chosen version)`; absent when no common version exists.
    chosen: Vec<(i16, i16)>,
    /// The finalized level of `transaction.version` in the broker's answer (ApiVersions v3+;
    /// 0 when absent or when the answer's finalized features are not valid).
    transaction_version: i16,
}

impl ApiVersionTable {
    pub fn from_response(response: &ApiVersionsResponse) -> ApiVersionTable {
        let broker: Vec<(i16, i16, i16)> = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, api.min_version, api.max_version))
            .collect();
        let mut table = ApiVersionTable::from_ranges(&broker);
        // "The information is valid only if FinalizedFeaturesEpoch >= 0."
        if response.finalized_features_epoch >= 0 {
            table.transaction_version = response
                .finalized_features
                .iter()
                .find(|f| f.name.as_str() == TRANSACTION_VERSION_FEATURE)
                .map_or(0, |f| f.max_version_level);
        }
        table
    }

    /// The finalized level of `transaction.version` (0: not finalized).
    pub fn transaction_version(&self) -> i16 {
        self.transaction_version
    }

    /// `broker` holds `(api_key, min, max)` as the broker advertised them.
    pub fn from_ranges(broker: &[(i16, i16, i16)]) -> ApiVersionTable {
        let mut chosen = Vec::new();
        for &(key, client_min, client_max) in CLIENT_VERSIONS {
            let key = key as i16;
            if let Some(&(_, broker_min, broker_max)) = broker.iter().find(|b| b.0 == key) {
                let version = client_max.min(broker_max);
                if version >= client_min.max(broker_min) {
                    chosen.push((key, version));
                }
            }
        }
        ApiVersionTable {
            chosen,
            transaction_version: 0,
        }
    }

    pub fn version_for(&self, api_key: ApiKey) -> Option<i16> {
        let key = api_key as i16;
        self.chosen.iter().find(|c| c.0 == key).map(|c| c.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn picks_highest_common_version() {
        let table = ApiVersionTable::from_ranges(&[
            (ApiKey::Produce as i16, 0, 9),
            (ApiKey::Fetch as i16, 0, 17),
            (ApiKey::Metadata as i16, 13, 13),
        ]);
        assert_eq!(table.version_for(ApiKey::Produce), Some(9));
        assert_eq!(table.version_for(ApiKey::Fetch), Some(12));
        // No overlap: loadgen speaks Metadata up to 12, the broker only 13.
        assert_eq!(table.version_for(ApiKey::Metadata), None);
        assert_eq!(table.version_for(ApiKey::ListOffsets), None);
    }

    #[test]
    fn transaction_versions_cap_produce_and_end_txn() {
        // Kafka 4.x advertises AddPartitionsToTxn 0-5, EndTxn 0-5 and Produce 3-13.
        let table = ApiVersionTable::from_ranges(&[
            (ApiKey::AddPartitionsToTxn as i16, 0, 5),
            (ApiKey::EndTxn as i16, 0, 5),
            (ApiKey::Produce as i16, 3, 13),
        ]);
        assert_eq!(table.version_for(ApiKey::AddPartitionsToTxn), Some(3));
        let end_txn = table.version_for(ApiKey::EndTxn).unwrap();
        let produce = table.version_for(ApiKey::Produce).unwrap();
        assert_eq!((end_txn, produce), (5, 12));
        let v1 = TransactionVersion::V1;
        assert_eq!(v1.end_txn_version(end_txn), Some(4));
        assert_eq!(v1.produce_version(produce), Some(11));
        let v2 = TransactionVersion::V2;
        assert_eq!(v2.end_txn_version(end_txn), Some(5));
        assert_eq!(v2.produce_version(produce), Some(12));
        // A broker without version 2's requests cannot serve a version 2 producer.
        assert_eq!(v2.end_txn_version(4), None);
        assert_eq!(v2.produce_version(11), None);
        assert_eq!(v1.produce_version(9), Some(9));
    }

    #[test]
    fn finalized_transaction_version_picks_the_protocol() {
        use kafka_protocol::messages::api_versions_response::FinalizedFeatureKey;
        let feature = |name: &'static str, level: i16| {
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(name))
                .with_max_version_level(level)
                .with_min_version_level(level)
        };
        let answer = |epoch: i64, features: Vec<FinalizedFeatureKey>| {
            ApiVersionTable::from_response(
                &ApiVersionsResponse::default()
                    .with_finalized_features_epoch(epoch)
                    .with_finalized_features(features),
            )
            .transaction_version()
        };
        let both = || {
            vec![
                feature("metadata.version", 27),
                feature(TRANSACTION_VERSION_FEATURE, 2),
            ]
        };
        assert_eq!(answer(5, both()), 2);
        // Not valid without a finalized features epoch.
        assert_eq!(answer(-1, both()), 0);
        assert_eq!(answer(5, vec![feature("metadata.version", 27)]), 0);
        assert_eq!(
            TransactionVersion::for_finalized_level(2),
            TransactionVersion::V2
        );
        assert_eq!(
            TransactionVersion::for_finalized_level(1),
            TransactionVersion::V1
        );
        assert_eq!(
            TransactionVersion::for_finalized_level(0),
            TransactionVersion::V1
        );
    }
}
