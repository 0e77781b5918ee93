//! Group coordinator errors: the outcomes a client can see, one variant per Kafka error code
//! the coordinator produces. Handlers turn them into wire codes with [`GroupError::code`], the
//! one place where group errors become numbers.

use kafka_protocol::ResponseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("this node does not coordinate the group's offsets partition")]
    NotCoordinator,
    #[error("the group's offsets partition is still loading")]
    CoordinatorLoadInProgress,
    #[error("the coordinator cannot serve the group now")]
    CoordinatorNotAvailable,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("session timeout outside the broker's bounds")]
    InvalidSessionTimeout,
    #[error("member id required (KIP-394)")]
    MemberIdRequired,
    #[error("static member fenced by a newer instance (KIP-345)")]
    FencedInstanceId,
    #[error("group has reached its maximum size")]
    GroupMaxSizeReached,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("offset commit in flight for the partition")]
    UnstableOffsetCommit,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unexpected server error")]
    UnknownServerError,
    #[error("invalid request")]
    InvalidRequest,
    #[error("member epoch fenced (KIP-848)")]
    FencedMemberEpoch,
    #[error("instance id still used by another member (KIP-848)")]
    UnreleasedInstanceId,
    #[error("unsupported server assignor")]
    UnsupportedAssignor,
    #[error("stale member epoch (KIP-848)")]
    StaleMemberEpoch,
    #[error("invalid regular expression")]
    InvalidRegularExpression,
    #[error("producer epoch is not the current one (fenced)")]
    InvalidProducerEpoch,
}

impl GroupError {
    /// The Kafka error code for this outcome.
    pub fn code(self) -> i16 {
        let error = match self {
            Self::NotCoordinator => ResponseError::NotCoordinator,
            Self::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
            Self::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            Self::InvalidGroupId => ResponseError::InvalidGroupId,
            Self::UnknownMemberId => ResponseError::UnknownMemberId,
            Self::IllegalGeneration => ResponseError::IllegalGeneration,
            Self::RebalanceInProgress => ResponseError::RebalanceInProgress,
            Self::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
            Self::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
            Self::MemberIdRequired => ResponseError::MemberIdRequired,
            Self::FencedInstanceId => ResponseError::FencedInstanceId,
            Self::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
            Self::GroupIdNotFound => ResponseError::GroupIdNotFound,
            Self::NonEmptyGroup => ResponseError::NonEmptyGroup,
            Self::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
            Self::UnstableOffsetCommit => ResponseError::UnstableOffsetCommit,
            Self::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
            Self::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            Self::UnknownServerError => ResponseError::UnknownServerError,
            Self::InvalidRequest => ResponseError::InvalidRequest,
            Self::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
            Self::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
            Self::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
            Self::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
            Self::InvalidRegularExpression => ResponseError::InvalidRegularExpression,
            Self::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        };
        error.code()
    }
}

/// `error_code` for an optional error: 0 when there is none.
pub fn code_of(error: Option<GroupError>) -> i16 {
    error.map_or(0, GroupError::code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(GroupError::NotCoordinator.code(), 16);
        assert_eq!(GroupError::CoordinatorLoadInProgress.code(), 14);
        assert_eq!(GroupError::UnknownMemberId.code(), 25);
        assert_eq!(GroupError::IllegalGeneration.code(), 22);
        assert_eq!(GroupError::RebalanceInProgress.code(), 27);
        assert_eq!(GroupError::MemberIdRequired.code(), 79);
        assert_eq!(GroupError::FencedInstanceId.code(), 82);
        assert_eq!(GroupError::NonEmptyGroup.code(), 68);
        assert_eq!(code_of(None), 0);
    }
}
