//! Transactions (exactly-once): the transaction coordinator and its `__transaction_state`
//! log, Kafka's protocol at transaction versions 0 to 2 (KIP-890: version 2 bumps the
//! producer epoch at every end and lets partitions be added by Produce and TxnOffsetCommit).
//!
//! Owns: the state of each transactional id and its transitions (`metadata`, pure), the
//! log record format (`records`), the per-shard coordinator that persists transitions,
//! replays a partition when its replica becomes leader, writes markers and aborts expired
//! transactions (`backend`), and the routing of a transactional id to its coordinator
//! (`frontend`). Does not own: the partitions' side (control batches, producer state, last
//! stable offset: `partition/`, `handlers/write_txn_markers.rs`), transactional offset
//! commits (`group/`), request decoding (`handlers/`).
//!
//! Invariants: a transactional id's state lives only on the shard owning its
//! `__transaction_state` partition, and only while that replica leads; a transition is
//! applied only after its record is replicated; markers are written only for a Prepare*
//! state that is in the log, with the coordinator epoch (the partition's leader epoch) it
//! was loaded under, so a deposed coordinator's markers are fenced by the partitions.

pub mod backend;
pub mod config;
pub mod frontend;
pub mod metadata;
pub mod peer;
pub mod records;
pub mod verify;

#[cfg(test)]
mod sim;

pub use config::TxnSection;
pub use metadata::{TxnError, TxnMetadata, TxnState, TxnVersion};

/// Most `__transaction_state` partitions (Kafka allows any count; this bounds routing tables).
pub const STATE_PARTITIONS_MAX: i32 = 1_000;
/// Transactional ids one shard's coordinator holds; InitProducerId for a new id beyond it
/// gets COORDINATOR_NOT_AVAILABLE.
pub const IDS_PER_SHARD_MAX: usize = 200_000;
/// Partitions one transaction may span; AddPartitionsToTxn beyond it is refused.
pub const PARTITIONS_PER_TXN_MAX: usize = 10_000;

/// The tagged field of a WriteTxnMarkers v1 marker entry in which Sluice brokers send the
/// marker's transaction version (one byte), as v2's `TransactionVersion` does (KIP-1228;
/// the protocol library serves v1 only). Kafka ignores unknown tags; a marker without it is
/// checked as transaction version 0.
pub const MARKER_VERSION_TAG: i32 = 10_000;
/// The tagged field in which Sluice brokers carry a transaction's `txn_sequence` (8 bytes,
/// big-endian): on a WriteTxnMarkers v1 marker entry, and on an AddPartitionsToTxn v4+
/// result (the answer to a partition leader's verification or add). A partition that knows
/// the sequence of a producer's ongoing transaction refuses a marker naming another one: a
/// late copy of an earlier transaction's marker (Jepsen's interleaving at transaction
/// version 1, where the epochs are the same).
pub const TXN_SEQUENCE_TAG: i32 = 10_001;

/// The `TXN_SEQUENCE_TAG` value of a tagged-field map, if present and well-formed.
pub fn tagged_sequence(fields: &std::collections::BTreeMap<i32, bytes::Bytes>) -> Option<u64> {
    let raw = fields.get(&TXN_SEQUENCE_TAG)?;
    Some(u64::from_be_bytes(raw.as_ref().try_into().ok()?))
}

const _: () = assert!(PARTITIONS_PER_TXN_MAX <= records::PARTITIONS_PER_RECORD_MAX);
