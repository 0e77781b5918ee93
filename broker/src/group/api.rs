//! The coordinator's inputs and outputs: requests as the state machine sees them (already
//! decoded from any wire version) and the replies and appends it emits. Wire translation lives
//! in the handlers; nothing here knows request versions.

use bytes::Bytes;

pub use super::consumer::Assignment;

use super::error::GroupError;

/// Names one client request; chosen by the I/O layer, echoed on its reply. Every request the
/// coordinator accepts gets exactly one reply, possibly much later (JoinGroup, SyncGroup, and
/// anything that waits for an append).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Names one append to the offsets topic; the I/O layer reports its outcome with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppendToken(pub u64);

#[derive(Debug)]
pub enum Output {
    Reply {
        request: RequestId,
        reply: Reply,
    },
    /// Append `batches` (magic-2 batches) to partition `partition` of `__consumer_offsets`,
    /// then call `GroupCoordinator::append_complete(token, outcome)`.
    Append {
        partition: i32,
        token: AppendToken,
        batches: Bytes,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Ok,
    /// The partition moved away (a replica that is not the leader).
    NotLeader,
    /// The append failed (disk error, size limit).
    Failed,
    /// A transactional append whose producer epoch the partition refused (a fenced producer).
    InvalidProducerEpoch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResult),
    Sync(SyncResult),
    Heartbeat(Option<GroupError>),
    Leave(LeaveResult),
    OffsetCommit(Vec<TopicErrors>),
    TxnOffsetCommit(Vec<TopicErrors>),
    OffsetFetch(FetchResult),
    OffsetDelete(OffsetDeleteResult),
    DeleteGroup(Option<GroupError>),
    Describe(DescribeResult),
    List(ListResult),
    ConsumerHeartbeat(ConsumerHeartbeatResult),
    ConsumerDescribe(ConsumerDescribeResult),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroup {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: the handler passes the session timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+ (KIP-394): a member without an id first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+ (KIP-814): the client understands `skip_assignment`.
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Filled for the leader only: every member's metadata for the selected protocol.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroup {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroup {
    pub group_id: String,
    /// One member before v3; a batch from v3 (KIP-345 admin removal by instance id).
    pub members: Vec<LeaveMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResult {
    pub error: Option<GroupError>,
    pub members: Vec<LeaveMemberResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMemberResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: Option<GroupError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    pub name: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub group_id: String,
    /// -1 for a standalone consumer that only stores offsets.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// OffsetCommit v2..v4 retention_time_ms; -1 means the broker's retention.
    pub retention_time_ms: i64,
    pub topics: Vec<CommitTopic>,
}

/// TxnOffsetCommit (KIP-98, KIP-447 member fields from v3), version-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOffsetCommit {
    pub transactional_id: String,
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 before v3 (and from producers that send no group metadata).
    pub generation_id: i32,
    /// Empty before v3.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<CommitTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitTopic {
    pub name: String,
    pub partitions: Vec<CommitPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicErrors {
    pub name: String,
    pub partitions: Vec<(i32, Option<GroupError>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetch {
    pub group_id: String,
    /// None: every committed offset of the group.
    pub topics: Option<Vec<TopicPartitions>>,
    pub require_stable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    pub error: Option<GroupError>,
    pub topics: Vec<FetchTopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResult {
    pub name: String,
    pub partitions: Vec<FetchPartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResult {
    pub partition: i32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error: Option<GroupError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDelete {
    pub group_id: String,
    pub topics: Vec<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteResult {
    pub error: Option<GroupError>,
    pub topics: Vec<TopicErrors>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeResult {
    pub error: Option<GroupError>,
    /// False when the group does not exist (Kafka describes it as Dead; v6+ says
    /// GROUP_ID_NOT_FOUND — the handler picks by version).
    pub exists: bool,
    /// Kafka's state name (classic or consumer-group states).
    pub state: &'static str,
    pub protocol_type: String,
    /// The selected protocol; empty unless the group is Stable.
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Empty unless the group is Stable (as Kafka).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroups {
    /// Kafka state names, matched case-insensitively; empty = all.
    pub states_filter: Vec<String>,
    /// Group types ("classic", "consumer"), case-insensitive; empty = all.
    pub types_filter: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub error: Option<GroupError>,
    pub groups: Vec<ListedGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name (classic or consumer-group states).
    pub state: &'static str,
    pub group_type: &'static str,
}

/// ConsumerGroupHeartbeat (KIP-848), version-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeat {
    pub group_id: String,
    /// Empty on a first join with v0 (the coordinator picks one); v1 clients choose it.
    pub member_id: String,
    /// 0 joins, -1 leaves, -2 leaves a static member's place open, > 0 heartbeats.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// None: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now; None: unchanged since its last report.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResult {
    pub error: Option<GroupError>,
    pub error_message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's full assignment when it changed (None: unchanged).
    pub assignment: Option<Assignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerDescribeResult {
    pub error: Option<GroupError>,
    pub error_message: Option<String>,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    pub members: Vec<ConsumerDescribedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerDescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target_assignment: Assignment,
}
