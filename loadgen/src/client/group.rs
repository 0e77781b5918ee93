//! Classic consumer-group membership (`--group G`): FindCoordinator, JoinGroup, SyncGroup
//! with a range assignment computed by the leader, Heartbeat, LeaveGroup.
//!
//! Owns: one member's coordinator connection, member id, generation and assignment.
//! Does not own: fetch positions (loadgen's consumers start at the log end taken before the
//! run and share positions, so committed offsets are neither read nor written).
//! Invariants: the assignment is only replaced by a completed SyncGroup; any heartbeat error
//! that means "rebalance" or "you are not who you think" leads to a fresh join.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest,
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_wire::error::{
    COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, ILLEGAL_GENERATION,
    MEMBER_ID_REQUIRED, NOT_COORDINATOR, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};

use super::cluster::topic_name;
use super::connection::Connection;

/// Session timeout asked for; heartbeats go out every `HEARTBEAT_INTERVAL`.
const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long to keep retrying while the coordinator is loading or moving.
const COORDINATOR_RETRY_TIMEOUT: Duration = Duration::from_secs(30);
const COORDINATOR_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// The consumer protocol's assignor name.
const ASSIGNOR_RANGE: &str = "range";

/// One member of a consumer group reading `topic`.
pub struct GroupMember {
    bootstrap: Connection,
    group_id: GroupId,
    topic: String,
    partitions: usize,
    coordinator: Option<Connection>,
    member_id: StrBytes,
    generation_id: i32,
    assignment: Vec<usize>,
    heartbeat_at: Instant,
}

impl GroupMember {
    /// Joins `group_id` and waits for a first assignment. `bootstrap` answers FindCoordinator.
    pub async fn join(
        bootstrap: Connection,
        group_id: &str,
        topic: &str,
        partitions: usize,
    ) -> Result<GroupMember> {
        let mut member = GroupMember {
            bootstrap,
            group_id: GroupId(StrBytes::from_string(group_id.to_string())),
            topic: topic.to_string(),
            partitions,
            coordinator: None,
            member_id: StrBytes::default(),
            generation_id: -1,
            assignment: Vec::new(),
            heartbeat_at: Instant::now(),
        };
        member.rejoin().await?;
        Ok(member)
    }

    pub fn assignment(&self) -> &[usize] {
        &self.assignment
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// Sends a heartbeat if one is due; rejoins on a rebalance. Returns true if the
    /// assignment may have changed.
    pub async fn heartbeat_if_due(&mut self) -> Result<bool> {
        if Instant::now() < self.heartbeat_at + HEARTBEAT_INTERVAL {
            return Ok(false);
        }
        self.heartbeat_at = Instant::now();
        let coordinator = self.coordinator().await?;
        let request = HeartbeatRequest::default()
            .with_group_id(self.group_id.clone())
            .with_generation_id(self.generation_id)
            .with_member_id(self.member_id.clone());
        let code = match coordinator.call(&request, ApiKey::Heartbeat).await {
            Ok(response) => response.error_code,
            Err(_) => NOT_COORDINATOR,
        };
        match code {
            0 => Ok(false),
            REBALANCE_IN_PROGRESS
            | ILLEGAL_GENERATION
            | UNKNOWN_MEMBER_ID
            | NOT_COORDINATOR
            | COORDINATOR_NOT_AVAILABLE => {
                if code == UNKNOWN_MEMBER_ID {
                    self.member_id = StrBytes::default();
                }
                if code == NOT_COORDINATOR || code == COORDINATOR_NOT_AVAILABLE {
                    self.coordinator = None;
                }
                self.rejoin().await?;
                Ok(true)
            }
            other => bail!(
                "Heartbeat for group {}: error {other}",
                self.group_id.0.as_str()
            ),
        }
    }

    /// Leaves the group (best effort; the session would expire anyway).
    pub async fn leave(&mut self) {
        let Ok(coordinator) = self.coordinator().await else {
            return;
        };
        let Ok(version) = coordinator.version_for(ApiKey::LeaveGroup) else {
            return;
        };
        let mut request = LeaveGroupRequest::default().with_group_id(self.group_id.clone());
        if version >= 3 {
            request = request.with_members(vec![
                MemberIdentity::default().with_member_id(self.member_id.clone()),
            ]);
        } else {
            request = request.with_member_id(self.member_id.clone());
        }
        let _ = coordinator.call_at(&request, version).await;
    }

    async fn coordinator(&mut self) -> Result<Connection> {
        if let Some(connection) = &self.coordinator {
            return Ok(connection.clone());
        }
        let deadline = Instant::now() + COORDINATOR_RETRY_TIMEOUT;
        loop {
            let request = FindCoordinatorRequest::default()
                .with_key(self.group_id.0.clone())
                .with_key_type(0);
            let response = self
                .bootstrap
                .call(&request, ApiKey::FindCoordinator)
                .await
                .context("FindCoordinator")?;
            if response.error_code == 0 {
                let addr = format!("{}:{}", response.host.as_str(), response.port);
                let connection = Connection::connect(&addr, 1).await?;
                self.coordinator = Some(connection.clone());
                return Ok(connection);
            }
            if Instant::now() > deadline {
                bail!(
                    "FindCoordinator for group {}: error {}",
                    self.group_id.0.as_str(),
                    response.error_code
                );
            }
            tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
        }
    }

    /// JoinGroup then SyncGroup, retrying the errors that mean "try again".
    async fn rejoin(&mut self) -> Result<()> {
        let deadline = Instant::now() + COORDINATOR_RETRY_TIMEOUT;
        loop {
            match self.join_and_sync().await {
                Ok(()) => {
                    self.heartbeat_at = Instant::now();
                    return Ok(());
                }
                Err(JoinError::Retry(code)) => {
                    if matches!(code, NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE) {
                        self.coordinator = None;
                    }
                    if code == UNKNOWN_MEMBER_ID {
                        self.member_id = StrBytes::default();
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "joining group {}: still error {code}",
                            self.group_id.0.as_str()
                        );
                    }
                    if code != MEMBER_ID_REQUIRED && code != REBALANCE_IN_PROGRESS {
                        tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                    }
                }
                Err(JoinError::Fatal(error)) => return Err(error),
            }
        }
    }

    async fn join_and_sync(&mut self) -> Result<(), JoinError> {
        let coordinator = self.coordinator().await.map_err(JoinError::Fatal)?;
        let join = JoinGroupRequest::default()
            .with_group_id(self.group_id.clone())
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(self.member_id.clone())
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(ASSIGNOR_RANGE))
                    .with_metadata(subscription_bytes(&self.topic)),
            ]);
        let joined = coordinator
            .call(&join, ApiKey::JoinGroup)
            .await
            .map_err(|_| JoinError::Retry(NOT_COORDINATOR))?;
        if joined.error_code == MEMBER_ID_REQUIRED {
            self.member_id = joined.member_id.clone();
            return Err(JoinError::Retry(MEMBER_ID_REQUIRED));
        }
        retry_or_fail(joined.error_code, "JoinGroup")?;
        self.member_id = joined.member_id.clone();
        self.generation_id = joined.generation_id;
        let assignments = leader_assignments(&joined, &self.topic, self.partitions);
        let sync = SyncGroupRequest::default()
            .with_group_id(self.group_id.clone())
            .with_generation_id(self.generation_id)
            .with_member_id(self.member_id.clone())
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str(ASSIGNOR_RANGE)))
            .with_assignments(assignments);
        let synced = coordinator
            .call(&sync, ApiKey::SyncGroup)
            .await
            .map_err(|_| JoinError::Retry(NOT_COORDINATOR))?;
        retry_or_fail(synced.error_code, "SyncGroup")?;
        self.assignment =
            parse_assignment(&synced.assignment, &self.topic).map_err(JoinError::Fatal)?;
        Ok(())
    }
}

enum JoinError {
    Retry(i16),
    Fatal(anyhow::Error),
}

fn retry_or_fail(code: i16, what: &str) -> Result<(), JoinError> {
    match code {
        0 => Ok(()),
        COORDINATOR_LOAD_IN_PROGRESS
        | COORDINATOR_NOT_AVAILABLE
        | NOT_COORDINATOR
        | REBALANCE_IN_PROGRESS
        | ILLEGAL_GENERATION
        | UNKNOWN_MEMBER_ID => Err(JoinError::Retry(code)),
        other => Err(JoinError::Fatal(anyhow!("{what}: error {other}"))),
    }
}

/// The SyncGroup assignments this member sends: the range assignment of `topic`'s
/// `partitions` over the joined members (sorted by member id) when it is the group leader,
/// nothing otherwise.
pub fn leader_assignments(
    joined: &JoinGroupResponse,
    topic: &str,
    partitions: usize,
) -> Vec<SyncGroupRequestAssignment> {
    if joined.leader != joined.member_id {
        return Vec::new();
    }
    let mut members: Vec<StrBytes> = joined.members.iter().map(|m| m.member_id.clone()).collect();
    members.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    range_assignment(partitions, members.len())
        .into_iter()
        .zip(members)
        .map(|(partitions, member_id)| {
            SyncGroupRequestAssignment::default()
                .with_member_id(member_id)
                .with_assignment(assignment_bytes(topic, &partitions))
        })
        .collect()
}

/// Partitions `0..partitions` split into `members` contiguous ranges, the first ones one
/// larger when it does not divide (Kafka's RangeAssignor for one topic).
pub fn range_assignment(partitions: usize, members: usize) -> Vec<Vec<usize>> {
    assert!(members > 0);
    let per_member = partitions / members;
    let extra = partitions % members;
    let mut next = 0;
    (0..members)
        .map(|m| {
            let count = per_member + usize::from(m < extra);
            let range = (next..next + count).collect();
            next += count;
            range
        })
        .collect()
}

/// `ConsumerProtocolSubscription` v0 with its version prefix, as JoinGroup metadata.
pub fn subscription_bytes(topic: &str) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.to_string())]);
    embedded(&subscription, 0)
}

/// `ConsumerProtocolAssignment` v0 with its version prefix, as a SyncGroup assignment.
pub fn assignment_bytes(topic: &str, partitions: &[usize]) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
        AssignedTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions.iter().map(|&p| p as i32).collect()),
    ]);
    embedded(&assignment, 0)
}

/// The partitions of `topic` in a SyncGroup assignment (empty bytes: nothing assigned).
pub fn parse_assignment(bytes: &Bytes, topic: &str) -> Result<Vec<usize>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut body = bytes.clone();
    if body.remaining() < 2 {
        bail!("assignment too short");
    }
    let version = body.get_i16().clamp(0, 3);
    let assignment = ConsumerProtocolAssignment::decode(&mut body, version)?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .filter(|t| t.topic.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter().map(|&p| p as usize))
        .collect())
}

fn embedded<M: Encodable>(message: &M, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .expect("consumer protocol messages encode");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_is_contiguous_and_complete() {
        assert_eq!(
            range_assignment(7, 3),
            vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]
        );
        assert_eq!(range_assignment(2, 3), vec![vec![0], vec![1], vec![]]);
    }

    #[test]
    fn assignment_round_trips_through_the_consumer_protocol() {
        let bytes = assignment_bytes("t", &[1, 4]);
        assert_eq!(parse_assignment(&bytes, "t").unwrap(), vec![1, 4]);
        assert!(parse_assignment(&bytes, "other").unwrap().is_empty());
        assert!(parse_assignment(&Bytes::new(), "t").unwrap().is_empty());
        let subscription = subscription_bytes("t");
        let mut body = subscription.slice(2..);
        let decoded = ConsumerProtocolSubscription::decode(&mut body, 0).unwrap();
        assert_eq!(decoded.topics[0].as_str(), "t");
    }
}
