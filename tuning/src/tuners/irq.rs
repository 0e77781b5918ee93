//! IRQ affinity for the NICs and the data disks, and the irqbalance conflict.
//!
//! Modes follow rpk/perftune: `mq` spreads each device's queues one per CPU over all CPUs;
//! `sq` puts every IRQ on CPU 0; `sq-split` on the first physical core (CPU 0 and its
//! hyperthread siblings). `auto` picks mq for <= 4 CPUs, sq for <= 4 physical cores, sq-split
//! above. In sq/sq-split the broker's shards should avoid the IRQ CPUs ([`shard_cpus`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::{Host, UnitOp};
use crate::tuner::{Action, Row, differs_status};

use super::TuneConfig;
use super::cpu::{format_cpu_list, online_cpus, parse_cpu_list, siblings};
use super::disk::data_disks;

pub const AFFINITY_WHY: &str = "queue IRQs on the right CPUs keep softirq work off busy shards";
pub const IRQBALANCE_WHY: &str = "irqbalance rewrites IRQ affinity behind the tuner's back";

/// How IRQs are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IrqMode {
    /// mq for <= 4 CPUs, sq for <= 4 physical cores, sq-split otherwise.
    #[default]
    Auto,
    /// Each device's IRQs spread one per CPU across all CPUs.
    Mq,
    /// All IRQs on CPU 0.
    Sq,
    /// All IRQs on the first physical core (CPU 0 and its siblings).
    SqSplit,
}

/// The concrete mode `auto` resolves to and the CPUs that take IRQs.
pub fn irq_cpus(host: &Host, mode: IrqMode) -> (IrqMode, Vec<u32>) {
    let cpus = online_cpus(host);
    let mode = match mode {
        IrqMode::Auto => {
            let cores: BTreeSet<Vec<u32>> = cpus.iter().map(|&c| siblings(host, c)).collect();
            if cpus.len() <= 4 {
                IrqMode::Mq
            } else if cores.len() <= 4 {
                IrqMode::Sq
            } else {
                IrqMode::SqSplit
            }
        }
        m => m,
    };
    let first = cpus.first().copied().unwrap_or(0);
    let irq = match mode {
        IrqMode::Sq => vec![first],
        IrqMode::SqSplit => siblings(host, first),
        IrqMode::Mq | IrqMode::Auto => cpus,
    };
    (mode, irq)
}

/// The CPUs the broker's shards should run on for `mode`: all but the IRQ CPUs in sq/sq-split
/// (never empty).
pub fn shard_cpus(host: &Host, mode: IrqMode) -> Vec<u32> {
    let all = online_cpus(host);
    let (mode, irq) = irq_cpus(host, mode);
    if mode == IrqMode::Mq {
        return all;
    }
    let rest: Vec<u32> = all.iter().copied().filter(|c| !irq.contains(c)).collect();
    if rest.is_empty() { all } else { rest }
}

/// One row per NIC and data disk with IRQs.
pub fn affinity(host: &Host, cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "irq-affinity";
    let (mode, irq_cpu_list) = irq_cpus(host, cfg.irq_mode);
    if irq_cpu_list.is_empty() {
        return vec![Row::unsupported(
            TUNER,
            "irqs",
            "no online CPUs listed in sysfs",
        )];
    }
    let names = interrupt_names(host);
    let mut devices: Vec<(String, Vec<u32>)> = Vec::new();
    for nic in host.list(Path::new("/sys/class/net")) {
        let link = Path::new("/sys/class/net").join(&nic).join("device");
        if host.exists(&link) {
            devices.push((nic.clone(), device_irqs(host, &link, &nic, &names)));
        }
    }
    let disk_error = match data_disks(host, &cfg.data_dir) {
        Ok(disks) => {
            for disk in disks {
                let link = Path::new("/sys/block").join(&disk).join("device");
                devices.push((disk.clone(), device_irqs(host, &link, &disk, &names)));
            }
            None
        }
        Err(why) => Some(why),
    };
    let mut rows: Vec<Row> = devices
        .into_iter()
        .filter(|(_, irqs)| !irqs.is_empty())
        .map(|(dev, irqs)| device_row(host, TUNER, mode, &irq_cpu_list, &dev, &irqs))
        .collect();
    if rows.is_empty() {
        let why = disk_error.unwrap_or_else(|| "no NIC or data disk with IRQs found".into());
        rows.push(Row::unsupported(TUNER, "irqs", why));
    }
    rows
}

fn device_row(
    host: &Host,
    tuner: &'static str,
    mode: IrqMode,
    cpus: &[u32],
    dev: &str,
    irqs: &[u32],
) -> Row {
    let mut current: BTreeMap<String, usize> = BTreeMap::new();
    let mut actions = Vec::new();
    let mut ok = true;
    for (i, irq) in irqs.iter().enumerate() {
        let target: Vec<u32> = match mode {
            IrqMode::Mq | IrqMode::Auto => vec![cpus[i % cpus.len()]],
            IrqMode::Sq | IrqMode::SqSplit => cpus.to_vec(),
        };
        let path = PathBuf::from(format!("/proc/irq/{irq}/smp_affinity_list"));
        let now = host.read(&path).ok().and_then(|s| parse_cpu_list(&s));
        let shown = now
            .as_deref()
            .map(format_cpu_list)
            .unwrap_or_else(|| "?".into());
        *current.entry(shown).or_default() += 1;
        ok &= now.as_deref() == Some(&target[..]);
        actions.push(Action::WriteFile {
            path,
            value: format_cpu_list(&target),
        });
    }
    let current: Vec<String> = current.iter().map(|(c, n)| format!("{c} x{n}")).collect();
    let recommended = match mode {
        IrqMode::Mq | IrqMode::Auto => format!("mq: 1 cpu each over {}", format_cpu_list(cpus)),
        IrqMode::Sq => format!("sq: {}", format_cpu_list(cpus)),
        IrqMode::SqSplit => format!("sq-split: {}", format_cpu_list(cpus)),
    };
    Row {
        tuner,
        setting: format!("{dev} irqs ({})", irqs.len()),
        current: current.join(", "),
        recommended,
        status: differs_status(host, ok),
        note: String::new(),
        actions,
    }
}

/// IRQ number -> name (the last column of /proc/interrupts).
pub fn interrupt_names(host: &Host) -> BTreeMap<u32, String> {
    let text = host.read(Path::new("/proc/interrupts")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (num, rest) = line.trim_start().split_once(':')?;
            let irq: u32 = num.parse().ok()?;
            let name = rest.split_whitespace().last().unwrap_or("").to_string();
            Some((irq, name))
        })
        .collect()
}

/// The IRQs of the device behind `link` (…/device): its MSI(-X) vectors, found on the device
/// or up to two parents (NVMe namespaces and virtio sit below the PCI function); else the
/// legacy `irq` file; else /proc/interrupts entries named after the device (nvme0q1,
/// eth0-TxRx-0). Only IRQs the kernel lists are kept.
pub fn device_irqs(
    host: &Host,
    link: &Path,
    name: &str,
    names: &BTreeMap<u32, String>,
) -> Vec<u32> {
    let known = |irq: &u32| names.is_empty() || names.contains_key(irq);
    if let Ok(dev) = host.canonical(link) {
        let mut candidates = vec![dev.clone(), dev.join("device")];
        if let Some(parent) = dev.parent() {
            candidates.push(parent.to_path_buf());
            if let Some(grand) = parent.parent() {
                candidates.push(grand.to_path_buf());
            }
        }
        for dir in candidates {
            let msi: Vec<u32> = host
                .list(&dir.join("msi_irqs"))
                .iter()
                .filter_map(|n| n.parse().ok())
                .filter(known)
                .collect();
            if !msi.is_empty() {
                return msi;
            }
            if let Ok(irq) = host
                .read(&dir.join("irq"))
                .and_then(|s| s.parse::<u32>().map_err(std::io::Error::other))
                && irq != 0
                && known(&irq)
            {
                return vec![irq];
            }
        }
    }
    // nvme0n1 -> nvme0 queues are named nvme0q0..; NICs use the interface name.
    let prefix = match name
        .strip_prefix("nvme")
        .and_then(|rest| rest.split_once('n'))
    {
        Some((controller, _namespace)) => format!("nvme{controller}q"),
        None => format!("{name}-"),
    };
    names
        .iter()
        .filter(|(_, n)| n.starts_with(&prefix) || *n == name)
        .map(|(irq, _)| *irq)
        .collect()
}

/// irqbalance stopped and disabled (it would undo the affinity above).
pub fn irqbalance(host: &Host, _cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "irqbalance";
    const UNIT: &str = "irqbalance.service";
    let running = host.process_names().iter().any(|n| n == "irqbalance");
    let unit = host.system().unit_state(UNIT);
    let enabled = unit.enabled == Some(true);
    let current = match (running, unit.enabled) {
        (false, None) => "not installed".to_string(),
        (r, e) => format!(
            "{}, {}",
            if r { "running" } else { "not running" },
            if e == Some(true) {
                "enabled"
            } else {
                "disabled"
            }
        ),
    };
    let mut actions = Vec::new();
    if running {
        if host.systemd_running() && unit.enabled.is_some() {
            actions.push(Action::Unit {
                unit: UNIT.into(),
                op: UnitOp::Stop,
            });
        } else {
            actions.push(Action::Manual {
                text: "stop the irqbalance process (pkill -x irqbalance)".into(),
            });
        }
    }
    if enabled {
        actions.push(Action::Unit {
            unit: UNIT.into(),
            op: UnitOp::Disable,
        });
    }
    vec![Row {
        tuner: TUNER,
        setting: "irqbalance".into(),
        current,
        recommended: "not running, disabled".into(),
        status: differs_status(host, !running && !enabled),
        note: String::new(),
        actions,
    }]
}
