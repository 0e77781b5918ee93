//! Sluice broker: the Kafka protocol server on a thread-per-core data plane.
