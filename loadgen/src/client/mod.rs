//! loadgen's own Kafka client: just enough of the protocol to drive load.
//!
//! Built on the kafka-protocol crate for message encoding; nothing here depends on the
//! Sluice broker. Connections are pipelined (several requests in flight, answers in order).

pub mod cluster;
pub mod connection;
pub mod error_codes;
pub mod frame;
pub mod group;
pub mod transaction;
pub mod versions;

pub use cluster::{Cluster, TopicLayout};
pub use connection::Connection;
