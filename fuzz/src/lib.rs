//! Sluice fuzz harnesses: the logic behind each cargo-fuzz target, one module per target.
//!
//! Owns: `log_model` (engine `Log` operations with reopens and crashes against a model) and
//! `request_decode` (bytes through the broker's own request path, as a connection reads
//! them). Does not own: what is checked; that is the engine's and the broker's contract.
//! The same files are compiled by stable tests (engine/tests/log_model.rs,
//! broker/tests/request_decode.rs, by `#[path]`), so CI keeps them building and replays
//! the fixed inputs and every crash found (fuzz/regressions/<target>/).
#![forbid(unsafe_code)]

pub mod log_model;
#[cfg(feature = "broker")]
pub mod request_decode;
