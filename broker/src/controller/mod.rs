//! Cluster mode: the control thread. Runs the metadata quorum (raft-rs), the rpc listener
//! and links to the other voters, a replica of the controller state machine fed by the
//! committed log, this broker's registration and heartbeats, and publishes metadata to the
//! shards.
