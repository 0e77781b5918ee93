//! Memory tuners: transparent hugepages, swappiness and the page-cache writeback thresholds.
//!
//! Sluice writes through the page cache and makes data durable with fdatasync (group commit).
//! The vm.dirty_* knobs decide when the kernel flushes on its own and when it stalls writers:
//! - `dirty_background_ratio`: % of reclaimable memory dirty before the flusher threads start
//!   writing back. Low (5) keeps writeback continuous, so each fdatasync has little left to
//!   flush and its latency stays flat.
//! - `dirty_ratio`: % at which a writing thread is itself throttled in balance_dirty_pages()
//!   (the produce path stalls for tens of ms). High (40) leaves room between the two so bursts
//!   are absorbed instead of throttled.
//! - `dirty_expire_centisecs`: age after which dirty data is written back anyway; 5 s instead
//!   of 30 s avoids large, old batches flushed all at once.
//! - `dirty_writeback_centisecs`: how often the flusher wakes; 1 s instead of 5 s spreads
//!   writeback into small steady pieces.
//!
//! Writing a *_ratio resets the matching *_bytes knob to 0 (the kernel keeps one of the pair).

use crate::host::Host;
use crate::tuner::{Row, Want, file_row, sysctl_row};

use super::TuneConfig;

pub const THP_WHY: &str = "THP=always stalls allocations on compaction (khugepaged)";
pub const SWAPPINESS_WHY: &str = "swapping broker memory out costs far more than dropping cache";
pub const DIRTY_WHY: &str = "early steady writeback, late throttling: no page-cache stalls";

pub const DIRTY_BACKGROUND_RATIO: u64 = 5;
pub const DIRTY_RATIO: u64 = 40;
pub const DIRTY_EXPIRE_CENTISECS: u64 = 500;
pub const DIRTY_WRITEBACK_CENTISECS: u64 = 100;
const _: () = assert!(DIRTY_BACKGROUND_RATIO < DIRTY_RATIO);

pub fn transparent_hugepages(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "transparent-hugepages";
    let dir = "/sys/kernel/mm/transparent_hugepage";
    vec![
        file_row(
            host,
            TUNER,
            "thp enabled",
            &format!("{dir}/enabled"),
            Want::Selected("madvise".into()),
        ),
        file_row(
            host,
            TUNER,
            "thp defrag",
            &format!("{dir}/defrag"),
            Want::Selected("madvise".into()),
        ),
    ]
}

pub fn swappiness(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    vec![sysctl_row(
        host,
        "vm-swappiness",
        "vm.swappiness",
        Want::AtMost(1),
    )]
}

pub fn dirty(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "vm-dirty";
    let exact = |v: u64| Want::Exact(v.to_string());
    vec![
        sysctl_row(
            host,
            TUNER,
            "vm.dirty_background_ratio",
            exact(DIRTY_BACKGROUND_RATIO),
        ),
        sysctl_row(host, TUNER, "vm.dirty_ratio", exact(DIRTY_RATIO)),
        sysctl_row(
            host,
            TUNER,
            "vm.dirty_expire_centisecs",
            exact(DIRTY_EXPIRE_CENTISECS),
        ),
        sysctl_row(
            host,
            TUNER,
            "vm.dirty_writeback_centisecs",
            exact(DIRTY_WRITEBACK_CENTISECS),
        ),
    ]
}
