//! Why a control-plane operation failed, as typed errors. The state machine, the control
//! thread and the frontend's own checks return these; none of them chooses a Kafka code. The
//! frontend maps them to Kafka codes in one place (`frontend::admin_error`), at the handlers'
//! side of the boundary.
//!
//! Invariants: applying the same entry gives the same error on every node (the errors carry
//! only data from the entry and the committed state).

/// One admin item's failure, or the whole call's (`InvalidEntry`, `TimedOut`, `Busy`,
/// `Stopped`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("unknown topic {topic}")]
    UnknownTopic { topic: String },
    #[error("topic {topic} already exists")]
    TopicExists { topic: String },
    #[error("bad topic id: {reason}")]
    BadTopicId { reason: String },
    #[error("partitions must be in 1..={max}, got {got}")]
    PartitionCount { max: i32, got: i32 },
    #[error("topic {topic} has {have} partitions; {count} is not a valid new count")]
    NewPartitionCount {
        topic: String,
        have: i32,
        count: i32,
    },
    #[error("replication factor {replication_factor} is invalid with {live} live brokers")]
    ReplicationFactor {
        replication_factor: i16,
        live: usize,
    },
    #[error(
        "node {node} holds {held} partition replicas and would hold {would_hold}, over the \
         {max} its open-file limit allows (RLIMIT_NOFILE; see docs/operations.md, \"Open files\")"
    )]
    ReplicaBudget {
        node: i32,
        held: u64,
        would_hold: u64,
        max: u32,
    },
    #[error(transparent)]
    Config(#[from] ConfigChangeError),
    /// The frontend's checks, before anything is proposed.
    #[error("invalid topic name {topic:?}")]
    InvalidTopicName { topic: String },
    #[error("manual replica assignment is not supported yet")]
    ManualAssignment,
    /// Topic configs `TopicConfig::resolve` refuses (the reason names the config).
    #[error("{reason}")]
    TopicConfig { topic: String, reason: String },
    /// A broken expectation inside this broker (a failed catalog write, a missing answer).
    #[error("{reason}")]
    Internal { reason: String },
    /// The entry failed the leader's check before `propose` (never reached the log).
    #[error(transparent)]
    InvalidEntry(#[from] InvalidEntry),
    #[error("the metadata quorum did not commit the request in time")]
    TimedOut,
    #[error("the control plane is busy or stopped")]
    Busy,
    #[error("the control plane stopped before answering")]
    Stopped,
}

/// A config change that cannot be applied to a topic's current overrides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigChangeError {
    /// APPEND or SUBTRACT on a config that is not a list.
    #[error("{name} is not a list config")]
    NotAList { name: String },
    #[error("bad operation {op} for {name}")]
    BadOperation { name: String, op: i8 },
}

/// Results of an admin operation, one per item.
pub type AdminResults = Vec<Result<(), AdminError>>;

/// Why an entry may not be proposed. Checked at the rpc boundary (a forwarded proposal) and
/// by the leader before every proposal, so a malformed entry never reaches the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEntry {
    #[error("node {node} is not a voter of this quorum")]
    UnknownNode { node: i32 },
    #[error("{what} is proposed by the quorum leader itself, never forwarded")]
    NotForwardable { what: &'static str },
    #[error("node {peer} forwarded an entry of node {node}")]
    WrongProposer { peer: i32, node: i32 },
    #[error("{field}: {reason}")]
    BadField { field: &'static str, reason: String },
}
