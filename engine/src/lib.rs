//! Sluice storage engine.
//!
//! Owns: segmented partition logs of Kafka v2 record batches, their sparse indexes, crash
//! recovery, retention, and the I/O layer (compio / io_uring) underneath.
//! Does not own: Kafka requests, sockets, replication or any notion of a cluster.
//! Invariants: see the module docs; every on-disk read is validated before use.
