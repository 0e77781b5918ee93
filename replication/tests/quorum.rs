//! Quorum tests (being written).
