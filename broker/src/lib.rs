//! Sluice broker: the Kafka protocol server on a thread-per-core data plane.
//!
//! Owns: the `sluice start` runtime (one pinned shard per core, each with its own compio
//! runtime), connection handling and Kafka framing, request handlers (one file per API in
//! `handlers/`), partition state on top of `engine::Log` (leader epoch, high watermark,
//! producer state), replication drivers, the group coordinator, the control plane
//! (`controller/`), fetch sessions and the cross-shard routing between them (`runtime/`).
//! No import cycles between its modules (`tests/module_graph.rs`).
//! Does not own: on-disk log format, recovery, retention mechanics (the `engine` crate); the
//! Kafka wire's bytes (framing, codec, error codes, the fetch-frame builder: `kafka-wire`); the
//! `sluice` binary and its CLI (the `sluice` crate). This library depends on no tokio, loadgen
//! or tuning.
//! Invariants:
//! - A partition is owned by exactly one shard (`metadata::PartitionTable`); only that shard
//!   touches its `engine::Log`. Other shards reach it through bounded mesh channels.
//! - A connection lives on one shard for life; its responses go out in request order.
//! - Record bytes travel between shards as `Bytes` (reference counted), never copied.
//! - Kafka error codes are produced at the handler boundary (`handlers/`), nowhere else.

#![deny(unsafe_code)]

/// Unit tests run with the broker's allocator too (hostile array lengths in decode tests).
#[cfg(test)]
#[global_allocator]
static ALLOC: sys::BrokerAlloc = sys::BrokerAlloc;

pub mod config;
pub mod controller;
pub mod fd_budget;
pub mod group;
pub mod handlers;
pub mod http;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod partition;
pub mod replica;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod sys;
pub mod txn;
