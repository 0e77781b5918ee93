//! Kafka error codes loadgen acts on, and their names for reports. The codes and names are
//! kafka-wire's (`kafka_wire::error`); this module adds loadgen's own classes.

pub use kafka_wire::error::{
    CONCURRENT_TRANSACTIONS, LEADER_NOT_AVAILABLE, NETWORK_EXCEPTION, NOT_LEADER_OR_FOLLOWER,
    REQUEST_TIMED_OUT, TOPIC_ALREADY_EXISTS, UNKNOWN_TOPIC_OR_PARTITION, UNSUPPORTED_VERSION,
};

/// Whether the Java client resends after `code`: its exception is a `RetriableException`.
/// kafka-protocol's table marks CONCURRENT_TRANSACTIONS non-retriable, but Kafka's
/// `ConcurrentTransactionsException extends RetriableException`: a transaction version 2
/// Produce gets it while the previous transaction's markers are still being written.
pub fn is_retriable(code: i16) -> bool {
    code == CONCURRENT_TRANSACTIONS || kafka_wire::error::is_retriable(code)
}

/// Client-side code for an answer loadgen could not decode or that left a partition out
/// (Kafka's UNKNOWN_SERVER_ERROR).
pub const CORRUPT_RESPONSE: i16 = kafka_wire::error::UNKNOWN_SERVER_ERROR;

/// Errors that mean the partition's leadership moved (refresh metadata before retrying).
/// NETWORK_EXCEPTION is also what loadgen records for a request that failed on the connection.
pub fn needs_metadata_refresh(code: i16) -> bool {
    matches!(
        code,
        UNKNOWN_TOPIC_OR_PARTITION
            | LEADER_NOT_AVAILABLE
            | NOT_LEADER_OR_FOLLOWER
            | NETWORK_EXCEPTION
    )
}

/// A stable name for a code, e.g. `NOT_LEADER_OR_FOLLOWER(6)`.
pub fn name(code: i16) -> String {
    kafka_wire::error_name(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_retry_classes() {
        assert_eq!(name(NOT_LEADER_OR_FOLLOWER), "NOT_LEADER_OR_FOLLOWER(6)");
        assert_eq!(
            name(UNKNOWN_TOPIC_OR_PARTITION),
            "UNKNOWN_TOPIC_OR_PARTITION(3)"
        );
        assert_eq!(CORRUPT_RESPONSE, -1);
        assert!(is_retriable(NOT_LEADER_OR_FOLLOWER));
        assert!(!is_retriable(TOPIC_ALREADY_EXISTS));
        assert!(is_retriable(CONCURRENT_TRANSACTIONS));
        assert!(is_retriable(kafka_wire::error::NOT_ENOUGH_REPLICAS));
        assert!(needs_metadata_refresh(UNKNOWN_TOPIC_OR_PARTITION));
    }
}
