//! API version negotiation: the highest version both loadgen and the broker speak.
//!
//! loadgen's own ranges are capped where a newer version changes semantics loadgen does not
//! implement (Produce v13 and Fetch v13 address topics by id only; loadgen uses names), and
//! where it follows transaction protocol version 1 (KIP-98's explicit AddPartitionsToTxn):
//! AddPartitionsToTxn v4+ is broker to broker, EndTxn v5 and transactional Produce v12 are
//! transaction version 2 (KIP-890), whose coordinator bumps the epoch at every commit and adds
//! partitions implicitly. The Java producer caps the same way when the cluster has not
//! finalized `transaction.version` 2 (`LAST_STABLE_VERSION_BEFORE_TRANSACTION_V2`).

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
    // Transactions (--transactional-id), transaction version 1 (see above).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 4),
];

/// Highest Produce version a transactional request is sent at: v12 tells a transaction
/// version 2 broker that the client follows that protocol (Kafka's
/// `ProduceRequest.LAST_STABLE_VERSION_BEFORE_TRANSACTION_V2`).
pub const PRODUCE_TRANSACTION_V1_VERSION_MAX: i16 = 11;

/// Negotiated versions for one broker.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    /// `(api_key, chosen version)`; absent when no common version exists.
    chosen: Vec<(i16, i16)>,
}

impl ApiVersionTable {
    pub fn from_response(response: &ApiVersionsResponse) -> ApiVersionTable {
        let broker: Vec<(i16, i16, i16)> = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, api.min_version, api.max_version))
            .collect();
        ApiVersionTable::from_ranges(&broker)
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
        ApiVersionTable { chosen }
    }

    pub fn version_for(&self, api_key: ApiKey) -> Option<i16> {
        let key = api_key as i16;
        self.chosen.iter().find(|c| c.0 == key).map(|c| c.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn transactions_stay_on_protocol_version_1() {
        // Kafka 4.x advertises AddPartitionsToTxn 0-5 and EndTxn 0-5.
        let table = ApiVersionTable::from_ranges(&[
            (ApiKey::AddPartitionsToTxn as i16, 0, 5),
            (ApiKey::EndTxn as i16, 0, 5),
        ]);
        assert_eq!(table.version_for(ApiKey::AddPartitionsToTxn), Some(3));
        assert_eq!(table.version_for(ApiKey::EndTxn), Some(4));
    }
}
