//! The open-file budget: how many partition replicas this node can hold open within its
//! RLIMIT_NOFILE, after a reserve for everything else that takes descriptors.
//!
//! Owns: the arithmetic (pure, so it is tested without touching limits) and its named
//! constants. Does not own: raising the limit (`sys::raise_nofile_limit`) or refusing
//! requests (the controller state machine refuses placements over a node's budget, which each
//! node states when it registers).
//!
//! Back-of-envelope, per partition replica: the active segment holds its `.log`, `.index` and
//! `.timeindex` open (3 fds); a sealed segment holds only its `.log` (for zero-copy reads)
//! once its index entries are synced at the next checkpoint (1 fd; the engine closes sealed
//! index files). The budget counts [`FDS_PER_PARTITION_REPLICA`] per replica: the active
//! segment and an allowance for sealed ones (docs/operations.md, "Open files"). With the default 10 000 connections
//! and a 65 536 limit: (65 536 - 1 024 - 10 000) / 5 = 10 902 replicas >= 10 000.

/// Descriptors held for one partition replica in the budget: 3 for the active segment plus
/// an allowance of 2 sealed segments at 1 fd each (an average across the node's partitions;
/// idle partitions have none).
pub const FDS_PER_PARTITION_REPLICA: u64 = 5;
/// Descriptors reserved for everything but partitions and client connections: listeners,
/// io_uring rings and their eventfds, splice pipes, the metadata quorum's log and rpc links,
/// replica fetcher connections, the HTTP server, checkpoint and catalog writes, stdio.
pub const FDS_RESERVED_BASE: u64 = 1_024;
/// When the limit cannot hold `kafka.connections_max` connections and partitions both, the
/// connections get at most this share (percent) of what is left after the base reserve.
pub const CONNECTION_SHARE_PERCENT_MAX: u64 = 50;

const _: () = assert!(
    FDS_PER_PARTITION_REPLICA >= 3,
    "the active segment alone holds 3"
);
const _: () = assert!(CONNECTION_SHARE_PERCENT_MAX < 100);
// The target: 10 000 partition replicas with the default 10 000 connections in a
// 65 536 limit.
const _: () = assert!((65_536 - FDS_RESERVED_BASE - 10_000) / FDS_PER_PARTITION_REPLICA >= 10_000);

/// The computed budget, logged at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// RLIMIT_NOFILE's soft limit the process runs with.
    pub limit: u64,
    /// Descriptors kept for client connections.
    pub connections_reserved: u64,
    /// Descriptors kept for everything else ([`FDS_RESERVED_BASE`], capped by the limit).
    pub base_reserved: u64,
    /// Partition replicas this node may hold.
    pub partition_replicas_max: u32,
}

impl FdBudget {
    /// The budget within `limit` descriptors for `connections_max` client connections.
    pub fn compute(limit: u64, connections_max: u64) -> FdBudget {
        let base_reserved = FDS_RESERVED_BASE.min(limit);
        let after_base = limit - base_reserved;
        // u128: the limit may be RLIM_INFINITY (u64::MAX).
        let share = u128::from(after_base) * u128::from(CONNECTION_SHARE_PERCENT_MAX) / 100;
        let connections_reserved = connections_max.min(share as u64);
        let for_partitions = after_base - connections_reserved;
        let partition_replicas_max =
            u32::try_from(for_partitions / FDS_PER_PARTITION_REPLICA).unwrap_or(u32::MAX);
        FdBudget {
            limit,
            connections_reserved,
            base_reserved,
            partition_replicas_max,
        }
    }

    /// Whether the reserve for connections is smaller than `kafka.connections_max` (the
    /// limit is too low for both; start-up warns).
    pub fn connections_squeezed(&self, connections_max: u64) -> bool {
        self.connections_reserved < connections_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_partitions_fit_a_65k_limit() {
        let b = FdBudget::compute(65_536, 10_000);
        assert_eq!(b.connections_reserved, 10_000);
        assert_eq!(b.partition_replicas_max, 10_902);
        assert!(!b.connections_squeezed(10_000));
        // The machine: 20 000 fds held 7 000 partitions at 3 fds each, and nothing
        // was left for connections. The budget stops well before that.
        let b = FdBudget::compute(20_000, 10_000);
        assert_eq!(b.partition_replicas_max, (20_000 - 1_024 - 9_488) / 5);
        assert!(b.connections_squeezed(10_000));
    }

    #[test]
    fn tiny_limits_give_a_small_budget_not_a_panic() {
        for limit in [0, 1, 1_023, 1_024, 1_025, 2_048] {
            let b = FdBudget::compute(limit, 10_000);
            assert!(b.base_reserved + b.connections_reserved <= limit, "{b:?}");
            let used = u64::from(b.partition_replicas_max) * FDS_PER_PARTITION_REPLICA;
            assert!(
                used + b.base_reserved + b.connections_reserved <= limit,
                "{b:?}"
            );
        }
        assert_eq!(FdBudget::compute(2_048, 10_000).partition_replicas_max, 102);
        assert_eq!(
            FdBudget::compute(u64::MAX, 10).partition_replicas_max,
            u32::MAX
        );
    }
}
