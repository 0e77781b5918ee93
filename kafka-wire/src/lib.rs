//! The Kafka wire as every side of Sluice speaks it: the broker's listener and its follower
//! fetcher, the `sluice` CLI, loadgen and the integration tests' raw client.
//!
//! Owns:
//! - [`frame`]: the size prefix, splitting request frames off a read buffer, the fixed header
//!   prefix, bounds on response frames.
//! - [`codec`]: request frames (header version chosen by kafka-protocol from the API version),
//!   response frames, decoding a response into its typed body with record sets kept as `Bytes`
//!   slices of the frame.
//! - [`error`]: Kafka error codes by name (`i16` constants over `kafka_protocol::ResponseError`)
//!   and `error_name(code)`.
//! - [`varint`]: unsigned and zigzag varints.
//! - [`fetch_frame`]: the zero-copy FetchResponse frame builder (`[bytes][file range]...`).
//! - [`blocking`]: reading one response frame from a `std::io::Read`.
//!
//! Does not own: sockets driven by an async runtime (one client connection per runtime, built
//! on this crate: `broker::replica::client` on compio, `loadgen::client::connection` on tokio),
//! version negotiation, which error code a handler answers with, the record-batch format (the
//! `engine` crate).
//!
//! Invariants:
//! - Pure bytes: no async runtime and no `unsafe`; it depends on kafka-protocol, bytes and
//!   thiserror only.
//! - Decoding input never panics on a short or malformed frame; it returns a small error
//!   (`FrameError`, `VarintError`) or a decode error. An incomplete frame is not an error.
//! - What this crate encodes is byte for byte what kafka-protocol encodes for the same message
//!   (the fetch-frame builder is tested against it for every Fetch version).

#![forbid(unsafe_code)]

pub mod blocking;
pub mod codec;
pub mod error;
pub mod fetch_frame;
pub mod frame;
pub mod varint;

pub use codec::{
    DecodeError, EncodeError, decode_response, decode_response_as, encode_request,
    encode_request_into, encode_response,
};
pub use error::error_name;
