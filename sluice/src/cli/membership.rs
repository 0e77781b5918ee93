//! `consume --group`: membership in a classic consumer group (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) over the blocking client, with the range assignor for one topic.
//!
//! The subscription and assignment bytes and the range split are loadgen's
//! (`loadgen::client::group`), which speaks the same protocol asynchronously. Every member is
//! assumed to read the same single topic, as `sluice consume` members do.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_wire::error::{
    COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, ILLEGAL_GENERATION,
    MEMBER_ID_REQUIRED, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};
use loadgen::client::group::{leader_assignments, parse_assignment, subscription_bytes};

use super::client::{Client, error_name};
use super::str_bytes;

pub const SESSION_TIMEOUT_MS: i32 = 10_000;
pub const REBALANCE_TIMEOUT_MS: i32 = 30_000;
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a join may keep getting "try again" answers.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const ASSIGNOR: &str = "range";
const PROTOCOL_TYPE: &str = "consumer";

/// One member of a classic consumer group reading one topic.
pub struct Member {
    group_id: GroupId,
    topic: String,
    partitions: usize,
    pub member_id: StrBytes,
    pub generation_id: i32,
    /// Partition indexes assigned in the current generation.
    pub assignment: Vec<i32>,
    heartbeat_at: Instant,
}

impl Member {
    /// Joins `group` through `coordinator` and waits for the first assignment.
    pub fn join(
        coordinator: &mut Client,
        group: &str,
        topic: &str,
        partitions: usize,
    ) -> Result<Member> {
        let mut member = Member {
            group_id: GroupId(str_bytes(group)),
            topic: topic.to_string(),
            partitions,
            member_id: StrBytes::default(),
            generation_id: -1,
            assignment: Vec::new(),
            heartbeat_at: Instant::now(),
        };
        member.rejoin(coordinator)?;
        Ok(member)
    }

    /// Heartbeats when one is due; on a rebalance rejoins and returns true (the assignment
    /// may have changed).
    pub fn heartbeat_if_due(&mut self, coordinator: &mut Client) -> Result<bool> {
        if self.heartbeat_at.elapsed() < HEARTBEAT_INTERVAL {
            return Ok(false);
        }
        self.heartbeat_at = Instant::now();
        let request = HeartbeatRequest::default()
            .with_group_id(self.group_id.clone())
            .with_generation_id(self.generation_id)
            .with_member_id(self.member_id.clone());
        let (response, _) = coordinator.call(&request)?;
        match response.error_code {
            0 => Ok(false),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID => {
                if response.error_code == UNKNOWN_MEMBER_ID {
                    self.member_id = StrBytes::default();
                }
                self.rejoin(coordinator)?;
                Ok(true)
            }
            code => bail!(
                "Heartbeat for group {}: {}",
                self.group_id.0,
                error_name(code)
            ),
        }
    }

    /// Leaves the group (best effort: the session would expire anyway).
    pub fn leave(&self, coordinator: &mut Client) {
        let member = MemberIdentity::default().with_member_id(self.member_id.clone());
        let request = LeaveGroupRequest::default()
            .with_group_id(self.group_id.clone())
            .with_members(vec![member]);
        if let Err(e) = coordinator.call(&request) {
            eprintln!("sluice consume: leaving group {}: {e:#}", self.group_id.0);
        }
    }

    fn rejoin(&mut self, coordinator: &mut Client) -> Result<()> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            match self.join_and_sync(coordinator)? {
                0 => {
                    self.heartbeat_at = Instant::now();
                    return Ok(());
                }
                code if Instant::now() > deadline => {
                    bail!(
                        "joining group {}: still {}",
                        self.group_id.0,
                        error_name(code)
                    )
                }
                MEMBER_ID_REQUIRED | REBALANCE_IN_PROGRESS => {}
                _ => std::thread::sleep(Duration::from_millis(200)), // back-off before retrying
            }
        }
    }

    /// One JoinGroup + SyncGroup round; returns 0 or a code worth retrying.
    fn join_and_sync(&mut self, coordinator: &mut Client) -> Result<i16> {
        let join = JoinGroupRequest::default()
            .with_group_id(self.group_id.clone())
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(self.member_id.clone())
            .with_protocol_type(str_bytes(PROTOCOL_TYPE))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(str_bytes(ASSIGNOR))
                    .with_metadata(subscription_bytes(&self.topic)),
            ]);
        let (joined, _) = coordinator.call(&join)?;
        match joined.error_code {
            0 => {}
            MEMBER_ID_REQUIRED => {
                self.member_id = joined.member_id.clone();
                return Ok(MEMBER_ID_REQUIRED);
            }
            UNKNOWN_MEMBER_ID => {
                self.member_id = StrBytes::default();
                return Ok(UNKNOWN_MEMBER_ID);
            }
            code @ (COORDINATOR_LOAD_IN_PROGRESS
            | COORDINATOR_NOT_AVAILABLE
            | REBALANCE_IN_PROGRESS
            | ILLEGAL_GENERATION) => return Ok(code),
            code => bail!("JoinGroup {}: {}", self.group_id.0, error_name(code)),
        }
        self.member_id = joined.member_id.clone();
        self.generation_id = joined.generation_id;
        let assignments = leader_assignments(&joined, &self.topic, self.partitions);
        let sync = SyncGroupRequest::default()
            .with_group_id(self.group_id.clone())
            .with_generation_id(self.generation_id)
            .with_member_id(self.member_id.clone())
            .with_protocol_type(Some(str_bytes(PROTOCOL_TYPE)))
            .with_protocol_name(Some(str_bytes(ASSIGNOR)))
            .with_assignments(assignments);
        let (synced, _) = coordinator.call(&sync)?;
        match synced.error_code {
            0 => {}
            code @ (REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID) => {
                return Ok(code);
            }
            code => bail!("SyncGroup {}: {}", self.group_id.0, error_name(code)),
        }
        self.assignment = parse_assignment(&synced.assignment, &self.topic)?
            .into_iter()
            .map(|p| p as i32)
            .collect();
        Ok(0)
    }
}
