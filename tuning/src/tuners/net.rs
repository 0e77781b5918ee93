//! Network sysctls: accept and SYN backlogs, the per-CPU input backlog, and socket buffer
//! limits. All are "at least": a host already above the recommendation is left alone.

use crate::host::Host;
use crate::tuner::{Row, Want, sysctl_row};

use super::TuneConfig;

pub const BACKLOG_WHY: &str = "connection storms (client restarts) overflow short queues";
pub const BUFFERS_WHY: &str = "autotuning needs room for bandwidth x RTT per connection";

/// Accept queue length per listener.
pub const SOMAXCONN: u64 = 4096;
pub const TCP_MAX_SYN_BACKLOG: u64 = 4096;
/// Packets queued per CPU between the NIC and the stack.
pub const NETDEV_MAX_BACKLOG: u64 = 8192;
/// 16 MiB: 10 Gbit/s x 12 ms RTT.
pub const SOCKET_BUFFER_BYTES_MAX: u64 = 16 << 20;

pub fn backlog(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "net-backlog";
    vec![
        sysctl_row(host, TUNER, "net.core.somaxconn", Want::AtLeast(SOMAXCONN)),
        sysctl_row(
            host,
            TUNER,
            "net.ipv4.tcp_max_syn_backlog",
            Want::AtLeast(TCP_MAX_SYN_BACKLOG),
        ),
        sysctl_row(
            host,
            TUNER,
            "net.core.netdev_max_backlog",
            Want::AtLeast(NETDEV_MAX_BACKLOG),
        ),
    ]
}

pub fn buffers(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "net-buffers";
    vec![
        sysctl_row(
            host,
            TUNER,
            "net.core.rmem_max",
            Want::AtLeast(SOCKET_BUFFER_BYTES_MAX),
        ),
        sysctl_row(
            host,
            TUNER,
            "net.core.wmem_max",
            Want::AtLeast(SOCKET_BUFFER_BYTES_MAX),
        ),
        sysctl_row(
            host,
            TUNER,
            "net.ipv4.tcp_rmem",
            Want::AtLeastEach(vec![4096, 131072, SOCKET_BUFFER_BYTES_MAX]),
        ),
        sysctl_row(
            host,
            TUNER,
            "net.ipv4.tcp_wmem",
            Want::AtLeastEach(vec![4096, 16384, SOCKET_BUFFER_BYTES_MAX]),
        ),
    ]
}
