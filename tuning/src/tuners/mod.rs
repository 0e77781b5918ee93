//! The tuner registry: every tuner's name, why it matters, and the function that assesses it.
//! Order here is the order of `check`'s table and of the boot script.

use std::path::PathBuf;

use anyhow::bail;

use crate::host::Host;
use crate::tuner::Row;

pub mod ballast;
pub mod cpu;
pub mod disk;
pub mod fstrim;
pub mod irq;
pub mod limits;
pub mod memory;
pub mod net;

pub use irq::IrqMode;

/// What the tuners need to know beyond the host itself.
#[derive(Debug, Clone)]
pub struct TuneConfig {
    /// The broker's data directory (host path): picks the disks and holds the ballast.
    pub data_dir: PathBuf,
    pub irq_mode: IrqMode,
    /// Ballast size; 0 disables the ballast tuner.
    pub ballast_bytes: u64,
}

impl Default for TuneConfig {
    fn default() -> TuneConfig {
        TuneConfig {
            data_dir: PathBuf::from("./data"),
            irq_mode: IrqMode::Auto,
            ballast_bytes: ballast::DEFAULT_BYTES,
        }
    }
}

/// One tuner.
pub struct TunerDef {
    pub name: &'static str,
    pub why: &'static str,
    pub assess: fn(&Host, &TuneConfig) -> Vec<Row>,
}

/// Every tuner, in table order (also the order apply and the script act in: irqbalance is
/// stopped before IRQ affinity is written, so it cannot undo it in between).
pub const TUNERS: &[TunerDef] = &[
    TunerDef {
        name: "cpu-governor",
        why: cpu::GOVERNOR_WHY,
        assess: cpu::governor,
    },
    TunerDef {
        name: "cpu-boost",
        why: cpu::BOOST_WHY,
        assess: cpu::boost,
    },
    TunerDef {
        name: "clocksource",
        why: cpu::CLOCKSOURCE_WHY,
        assess: cpu::clocksource,
    },
    TunerDef {
        name: "irqbalance",
        why: irq::IRQBALANCE_WHY,
        assess: irq::irqbalance,
    },
    TunerDef {
        name: "irq-affinity",
        why: irq::AFFINITY_WHY,
        assess: irq::affinity,
    },
    TunerDef {
        name: "disk-scheduler",
        why: disk::SCHEDULER_WHY,
        assess: disk::scheduler,
    },
    TunerDef {
        name: "disk-nomerges",
        why: disk::NOMERGES_WHY,
        assess: disk::nomerges,
    },
    TunerDef {
        name: "transparent-hugepages",
        why: memory::THP_WHY,
        assess: memory::transparent_hugepages,
    },
    TunerDef {
        name: "vm-swappiness",
        why: memory::SWAPPINESS_WHY,
        assess: memory::swappiness,
    },
    TunerDef {
        name: "vm-dirty",
        why: memory::DIRTY_WHY,
        assess: memory::dirty,
    },
    TunerDef {
        name: "net-backlog",
        why: net::BACKLOG_WHY,
        assess: net::backlog,
    },
    TunerDef {
        name: "net-buffers",
        why: net::BUFFERS_WHY,
        assess: net::buffers,
    },
    TunerDef {
        name: "fs-file-max",
        why: limits::FILE_MAX_WHY,
        assess: limits::file_max,
    },
    TunerDef {
        name: "nofile",
        why: limits::NOFILE_WHY,
        assess: limits::nofile,
    },
    TunerDef {
        name: "memlock",
        why: limits::MEMLOCK_WHY,
        assess: limits::memlock,
    },
    TunerDef {
        name: "io-uring",
        why: limits::IO_URING_WHY,
        assess: limits::io_uring,
    },
    TunerDef {
        name: "aio-max-nr",
        why: limits::AIO_WHY,
        assess: limits::aio_max_nr,
    },
    TunerDef {
        name: "fstrim",
        why: fstrim::WHY,
        assess: fstrim::fstrim,
    },
    TunerDef {
        name: "ballast",
        why: ballast::WHY,
        assess: ballast::ballast,
    },
];

/// The tuners named in `only` (all when empty); unknown names are an error listing the known.
pub fn select(only: &[String]) -> anyhow::Result<Vec<&'static TunerDef>> {
    if only.is_empty() {
        return Ok(TUNERS.iter().collect());
    }
    let mut picked = Vec::new();
    for name in only {
        match TUNERS.iter().find(|t| t.name == name) {
            Some(t) => picked.push(t),
            None => {
                let known: Vec<&str> = TUNERS.iter().map(|t| t.name).collect();
                bail!("unknown tuner {name:?}; known: {}", known.join(", "));
            }
        }
    }
    // Keep table order whatever order --only listed them in.
    picked.sort_by_key(|t| TUNERS.iter().position(|x| x.name == t.name));
    picked.dedup_by_key(|t| t.name);
    Ok(picked)
}

/// Assesses the selected tuners; every row names its tuner.
pub fn assess(host: &Host, cfg: &TuneConfig, tuners: &[&TunerDef]) -> Vec<Row> {
    tuners.iter().flat_map(|t| (t.assess)(host, cfg)).collect()
}
