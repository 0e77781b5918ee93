//! Kafka error codes by name: one `i16` constant per code kafka-protocol knows, with the
//! number taken from `kafka_protocol::ResponseError` (never retyped here), plus a stable name
//! for logs and reports.
//!
//! Owns: the names (`NOT_LEADER_OR_FOLLOWER`) as `i16` constants usable in `match` patterns,
//! [`error_name`] (`NOT_LEADER_OR_FOLLOWER(6)`), [`is_retriable`] (Kafka's own classification).
//! Does not own: which code a handler answers with (the broker's handler boundary) or how a
//! client reacts to one (loadgen, the CLI).
//! Invariants: each constant's name is the screaming-snake form of its `ResponseError`
//! variant, so `error_name(X)` starts with the constant's own name (a unit test checks every
//! one); code 0 is `NONE`.

pub use kafka_protocol::ResponseError;

/// No error.
pub const NONE: i16 = 0;

/// `pub const NAME: i16 = ResponseError::Variant.code();` for each pair, and the table of all
/// of them for the tests.
macro_rules! error_codes {
    ($($name:ident = $variant:ident,)*) => {
        $(
            #[doc = concat!("`ResponseError::", stringify!($variant), "`.")]
            pub const $name: i16 = ResponseError::$variant.code();
        )*

        /// Every named code with its name, in kafka-protocol's order.
        pub const ALL: &[(&str, i16)] = &[$((stringify!($name), $name),)*];
    };
}

error_codes! {
    UNKNOWN_SERVER_ERROR = UnknownServerError,
    OFFSET_OUT_OF_RANGE = OffsetOutOfRange,
    CORRUPT_MESSAGE = CorruptMessage,
    UNKNOWN_TOPIC_OR_PARTITION = UnknownTopicOrPartition,
    INVALID_FETCH_SIZE = InvalidFetchSize,
    LEADER_NOT_AVAILABLE = LeaderNotAvailable,
    NOT_LEADER_OR_FOLLOWER = NotLeaderOrFollower,
    REQUEST_TIMED_OUT = RequestTimedOut,
    BROKER_NOT_AVAILABLE = BrokerNotAvailable,
    REPLICA_NOT_AVAILABLE = ReplicaNotAvailable,
    MESSAGE_TOO_LARGE = MessageTooLarge,
    STALE_CONTROLLER_EPOCH = StaleControllerEpoch,
    OFFSET_METADATA_TOO_LARGE = OffsetMetadataTooLarge,
    NETWORK_EXCEPTION = NetworkException,
    COORDINATOR_LOAD_IN_PROGRESS = CoordinatorLoadInProgress,
    COORDINATOR_NOT_AVAILABLE = CoordinatorNotAvailable,
    NOT_COORDINATOR = NotCoordinator,
    INVALID_TOPIC_EXCEPTION = InvalidTopicException,
    RECORD_LIST_TOO_LARGE = RecordListTooLarge,
    NOT_ENOUGH_REPLICAS = NotEnoughReplicas,
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = NotEnoughReplicasAfterAppend,
    INVALID_REQUIRED_ACKS = InvalidRequiredAcks,
    ILLEGAL_GENERATION = IllegalGeneration,
    INCONSISTENT_GROUP_PROTOCOL = InconsistentGroupProtocol,
    INVALID_GROUP_ID = InvalidGroupId,
    UNKNOWN_MEMBER_ID = UnknownMemberId,
    INVALID_SESSION_TIMEOUT = InvalidSessionTimeout,
    REBALANCE_IN_PROGRESS = RebalanceInProgress,
    INVALID_COMMIT_OFFSET_SIZE = InvalidCommitOffsetSize,
    TOPIC_AUTHORIZATION_FAILED = TopicAuthorizationFailed,
    GROUP_AUTHORIZATION_FAILED = GroupAuthorizationFailed,
    CLUSTER_AUTHORIZATION_FAILED = ClusterAuthorizationFailed,
    INVALID_TIMESTAMP = InvalidTimestamp,
    UNSUPPORTED_SASL_MECHANISM = UnsupportedSaslMechanism,
    ILLEGAL_SASL_STATE = IllegalSaslState,
    UNSUPPORTED_VERSION = UnsupportedVersion,
    TOPIC_ALREADY_EXISTS = TopicAlreadyExists,
    INVALID_PARTITIONS = InvalidPartitions,
    INVALID_REPLICATION_FACTOR = InvalidReplicationFactor,
    INVALID_REPLICA_ASSIGNMENT = InvalidReplicaAssignment,
    INVALID_CONFIG = InvalidConfig,
    NOT_CONTROLLER = NotController,
    INVALID_REQUEST = InvalidRequest,
    UNSUPPORTED_FOR_MESSAGE_FORMAT = UnsupportedForMessageFormat,
    POLICY_VIOLATION = PolicyViolation,
    OUT_OF_ORDER_SEQUENCE_NUMBER = OutOfOrderSequenceNumber,
    DUPLICATE_SEQUENCE_NUMBER = DuplicateSequenceNumber,
    INVALID_PRODUCER_EPOCH = InvalidProducerEpoch,
    INVALID_TXN_STATE = InvalidTxnState,
    INVALID_PRODUCER_ID_MAPPING = InvalidProducerIdMapping,
    INVALID_TRANSACTION_TIMEOUT = InvalidTransactionTimeout,
    CONCURRENT_TRANSACTIONS = ConcurrentTransactions,
    TRANSACTION_COORDINATOR_FENCED = TransactionCoordinatorFenced,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = TransactionalIdAuthorizationFailed,
    SECURITY_DISABLED = SecurityDisabled,
    OPERATION_NOT_ATTEMPTED = OperationNotAttempted,
    KAFKA_STORAGE_ERROR = KafkaStorageError,
    LOG_DIR_NOT_FOUND = LogDirNotFound,
    SASL_AUTHENTICATION_FAILED = SaslAuthenticationFailed,
    UNKNOWN_PRODUCER_ID = UnknownProducerId,
    REASSIGNMENT_IN_PROGRESS = ReassignmentInProgress,
    DELEGATION_TOKEN_AUTH_DISABLED = DelegationTokenAuthDisabled,
    DELEGATION_TOKEN_NOT_FOUND = DelegationTokenNotFound,
    DELEGATION_TOKEN_OWNER_MISMATCH = DelegationTokenOwnerMismatch,
    DELEGATION_TOKEN_REQUEST_NOT_ALLOWED = DelegationTokenRequestNotAllowed,
    DELEGATION_TOKEN_AUTHORIZATION_FAILED = DelegationTokenAuthorizationFailed,
    DELEGATION_TOKEN_EXPIRED = DelegationTokenExpired,
    INVALID_PRINCIPAL_TYPE = InvalidPrincipalType,
    NON_EMPTY_GROUP = NonEmptyGroup,
    GROUP_ID_NOT_FOUND = GroupIdNotFound,
    FETCH_SESSION_ID_NOT_FOUND = FetchSessionIdNotFound,
    INVALID_FETCH_SESSION_EPOCH = InvalidFetchSessionEpoch,
    LISTENER_NOT_FOUND = ListenerNotFound,
    TOPIC_DELETION_DISABLED = TopicDeletionDisabled,
    FENCED_LEADER_EPOCH = FencedLeaderEpoch,
    UNKNOWN_LEADER_EPOCH = UnknownLeaderEpoch,
    UNSUPPORTED_COMPRESSION_TYPE = UnsupportedCompressionType,
    STALE_BROKER_EPOCH = StaleBrokerEpoch,
    OFFSET_NOT_AVAILABLE = OffsetNotAvailable,
    MEMBER_ID_REQUIRED = MemberIdRequired,
    PREFERRED_LEADER_NOT_AVAILABLE = PreferredLeaderNotAvailable,
    GROUP_MAX_SIZE_REACHED = GroupMaxSizeReached,
    FENCED_INSTANCE_ID = FencedInstanceId,
    ELIGIBLE_LEADERS_NOT_AVAILABLE = EligibleLeadersNotAvailable,
    ELECTION_NOT_NEEDED = ElectionNotNeeded,
    NO_REASSIGNMENT_IN_PROGRESS = NoReassignmentInProgress,
    GROUP_SUBSCRIBED_TO_TOPIC = GroupSubscribedToTopic,
    INVALID_RECORD = InvalidRecord,
    UNSTABLE_OFFSET_COMMIT = UnstableOffsetCommit,
    THROTTLING_QUOTA_EXCEEDED = ThrottlingQuotaExceeded,
    PRODUCER_FENCED = ProducerFenced,
    RESOURCE_NOT_FOUND = ResourceNotFound,
    DUPLICATE_RESOURCE = DuplicateResource,
    UNACCEPTABLE_CREDENTIAL = UnacceptableCredential,
    INCONSISTENT_VOTER_SET = InconsistentVoterSet,
    INVALID_UPDATE_VERSION = InvalidUpdateVersion,
    FEATURE_UPDATE_FAILED = FeatureUpdateFailed,
    PRINCIPAL_DESERIALIZATION_FAILURE = PrincipalDeserializationFailure,
    SNAPSHOT_NOT_FOUND = SnapshotNotFound,
    POSITION_OUT_OF_RANGE = PositionOutOfRange,
    UNKNOWN_TOPIC_ID = UnknownTopicId,
    DUPLICATE_BROKER_REGISTRATION = DuplicateBrokerRegistration,
    BROKER_ID_NOT_REGISTERED = BrokerIdNotRegistered,
    INCONSISTENT_TOPIC_ID = InconsistentTopicId,
    INCONSISTENT_CLUSTER_ID = InconsistentClusterId,
    TRANSACTIONAL_ID_NOT_FOUND = TransactionalIdNotFound,
    FETCH_SESSION_TOPIC_ID_ERROR = FetchSessionTopicIdError,
    INELIGIBLE_REPLICA = IneligibleReplica,
    NEW_LEADER_ELECTED = NewLeaderElected,
    OFFSET_MOVED_TO_TIERED_STORAGE = OffsetMovedToTieredStorage,
    FENCED_MEMBER_EPOCH = FencedMemberEpoch,
    UNRELEASED_INSTANCE_ID = UnreleasedInstanceId,
    UNSUPPORTED_ASSIGNOR = UnsupportedAssignor,
    STALE_MEMBER_EPOCH = StaleMemberEpoch,
    MISMATCHED_ENDPOINT_TYPE = MismatchedEndpointType,
    UNSUPPORTED_ENDPOINT_TYPE = UnsupportedEndpointType,
    UNKNOWN_CONTROLLER_ID = UnknownControllerId,
    UNKNOWN_SUBSCRIPTION_ID = UnknownSubscriptionId,
    TELEMETRY_TOO_LARGE = TelemetryTooLarge,
    INVALID_REGISTRATION = InvalidRegistration,
    TRANSACTION_ABORTABLE = TransactionAbortable,
    INVALID_RECORD_STATE = InvalidRecordState,
    SHARE_SESSION_NOT_FOUND = ShareSessionNotFound,
    INVALID_SHARE_SESSION_EPOCH = InvalidShareSessionEpoch,
    FENCED_STATE_EPOCH = FencedStateEpoch,
    INVALID_VOTER_KEY = InvalidVoterKey,
    DUPLICATE_VOTER = DuplicateVoter,
    VOTER_NOT_FOUND = VoterNotFound,
    INVALID_REGULAR_EXPRESSION = InvalidRegularExpression,
    REBOOTSTRAP_REQUIRED = RebootstrapRequired,
    STREAMS_INVALID_TOPOLOGY = StreamsInvalidTopology,
    STREAMS_INVALID_TOPOLOGY_EPOCH = StreamsInvalidTopologyEpoch,
    STREAMS_TOPOLOGY_FENCED = StreamsTopologyFenced,
    SHARE_SESSION_LIMIT_REACHED = ShareSessionLimitReached,
}

/// A stable name for a code, e.g. `NOT_LEADER_OR_FOLLOWER(6)`; `NONE(0)`, `UNKNOWN(n)` for a
/// code this build of kafka-protocol does not know.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE(0)".to_string(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN({code})"),
        Some(error) => format!("{}({code})", screaming_snake(&format!("{error:?}"))),
    }
}

/// Whether Kafka classes `code` as retriable (`false` for 0 and unknown codes).
pub fn is_retriable(code: i16) -> bool {
    ResponseError::try_from_code(code).is_some_and(|error| error.is_retriable())
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
    fn every_constant_is_named_after_its_code() {
        assert!(ALL.len() > 100, "the table covers kafka-protocol's codes");
        for &(name, code) in ALL {
            assert_eq!(error_name(code), format!("{name}({code})"));
        }
        let mut codes: Vec<i16> = ALL.iter().map(|&(_, code)| code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len(), "two names for one code");
    }

    #[test]
    fn names_and_retry_classes() {
        assert_eq!(NOT_LEADER_OR_FOLLOWER, 6);
        assert_eq!(UNKNOWN_SERVER_ERROR, -1);
        assert_eq!(error_name(NONE), "NONE(0)");
        assert_eq!(error_name(TOPIC_ALREADY_EXISTS), "TOPIC_ALREADY_EXISTS(36)");
        assert_eq!(error_name(30_000), "UNKNOWN(30000)");
        assert!(is_retriable(NOT_LEADER_OR_FOLLOWER));
        assert!(!is_retriable(TOPIC_ALREADY_EXISTS));
        assert!(!is_retriable(NONE));
        assert!(!is_retriable(30_000));
    }
}
