//! Kafka error codes loadgen acts on, and their names for reports.

use kafka_protocol::ResponseError;

pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Client-side code for an answer loadgen could not decode or that left a partition out.
pub const CORRUPT_RESPONSE: i16 = -1;
/// Client-side code for a request that failed on the connection (no Kafka code).
pub const NETWORK_EXCEPTION: i16 = 13;

/// Errors after which loadgen refreshes metadata and resends the batch.
pub fn is_retriable(code: i16) -> bool {
    match ResponseError::try_from_code(code) {
        None => false,
        Some(error) => error.is_retriable(),
    }
}

/// Errors that mean the partition's leadership moved (refresh metadata before retrying).
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
    match ResponseError::try_from_code(code) {
        None => "NONE(0)".to_string(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN({code})"),
        Some(error) => format!("{}({code})", screaming_snake(&format!("{error:?}"))),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
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
        assert!(is_retriable(NOT_LEADER_OR_FOLLOWER));
        assert!(!is_retriable(TOPIC_ALREADY_EXISTS));
        assert!(needs_metadata_refresh(UNKNOWN_TOPIC_OR_PARTITION));
    }
}
