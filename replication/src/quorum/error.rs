//! The quorum's one error type.

use std::path::{Path, PathBuf};

use crate::types::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// `open` was given a node that is not among the voters (a configuration error).
    #[error("node {node} is not one of the quorum's voters {voters:?}")]
    NotAVoter { node: NodeId, voters: Vec<NodeId> },
    /// Proposals go to the leader; `leader` is who this node believes leads (None: unknown).
    #[error("not the quorum leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// raft-rs refused the proposal (e.g. a leadership transfer is in progress, or too many
    /// bytes are uncommitted because the followers are away); retry later.
    #[error("raft dropped the proposal (leader: {leader:?})")]
    ProposalDropped { leader: Option<NodeId> },
    /// Empty entries are raft's own (a new leader's first entry), so a proposal has data.
    #[error("empty proposal")]
    EmptyProposal,
    #[error("proposal of {bytes} bytes is over the {max} bytes limit")]
    ProposalTooLarge { bytes: usize, max: usize },
    /// A message not addressed to this node, or from a node that is not a voter.
    #[error("raft message from raft id {from} to raft id {to} is not for this quorum member")]
    Misaddressed { from: u64, to: u64 },
    /// `compact` was given an index this node has not applied (delivered) yet.
    #[error("cannot compact through index {index}: only {applied} is applied")]
    CompactPastApplied { index: u64, applied: u64 },
    #[error("snapshot of {bytes} bytes is over the {max} bytes limit")]
    SnapshotTooLarge { bytes: usize, max: usize },
    /// The snapshot on disk was taken with other voters than `open` was given (the seeds
    /// changed): membership changes are not supported.
    #[error("the quorum snapshot's voters {snapshot:?} are not the configured voters {voters:?}")]
    VotersChanged {
        snapshot: Vec<NodeId>,
        voters: Vec<NodeId>,
    },
    #[error("raft: {0}")]
    Raft(#[source] raft::Error),
    #[error("raft message of {bytes} bytes is over the {max} bytes limit")]
    MessageTooLarge { bytes: usize, max: usize },
    #[error("raft message does not decode")]
    Decode(#[source] protobuf::ProtobufError),
    /// One of the quorum's files could not be read or written. After a failed write the node refuses
    /// every further step (`Failed`); drop it and `open` again.
    #[error("quorum storage: {op} {path}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checksummed record that this code cannot have written (not a torn write), a damaged
    /// snapshot, or a log that starts after its snapshot: the files are kept as they are for a
    /// human to look at.
    #[error("quorum file {path} is corrupt at byte {offset}: {reason}", path = path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    /// An earlier write or sync failed, so what is on disk is unknown; reopen the node.
    #[error("an earlier quorum storage write failed; drop this node and open it again")]
    Failed,
}

impl QuorumError {
    /// For `map_err`: an I/O failure of `op` on `path`.
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> QuorumError {
        let path = path.to_path_buf();
        move |source| QuorumError::Io { op, path, source }
    }

    /// The node must be dropped (and opened again, or the process stopped): its file could
    /// not be read or written, or holds what this code cannot have written. Every other error
    /// refuses one input and leaves the node usable.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            QuorumError::Io { .. } | QuorumError::Corrupt { .. } | QuorumError::Failed
        )
    }
}
