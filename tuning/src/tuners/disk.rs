//! Block-device tuners for the disk(s) holding the data directory: I/O scheduler and nomerges.
//! Also resolves the data directory to its whole disks (partition -> disk, dm/md -> slaves).

use std::path::{Path, PathBuf};

use crate::host::Host;
use crate::tuner::{Row, Want, file_row};

use super::TuneConfig;

pub const SCHEDULER_WHY: &str = "NVMe needs no scheduler; mq-deadline bounds latency elsewhere";
pub const NOMERGES_WHY: &str = "merging costs CPU per I/O; NVMe gains nothing from it";

/// Most nesting of dm/md over disks followed when resolving the data directory.
const SLAVE_DEPTH_MAX: usize = 4;

/// One row per data disk: `none` for NVMe, `mq-deadline` otherwise.
pub fn scheduler(host: &Host, cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "disk-scheduler";
    per_disk(host, cfg, TUNER, |disk| {
        let want = if is_nvme(disk) { "none" } else { "mq-deadline" };
        let path = format!("/sys/block/{disk}/queue/scheduler");
        file_row(
            host,
            TUNER,
            &format!("{disk} scheduler"),
            &path,
            Want::Selected(want.into()),
        )
    })
}

/// One row per data disk: nomerges=2 (never merge) for NVMe, 0 (merge) otherwise.
pub fn nomerges(host: &Host, cfg: &TuneConfig) -> Vec<Row> {
    const TUNER: &str = "disk-nomerges";
    per_disk(host, cfg, TUNER, |disk| {
        let want = if is_nvme(disk) { "2" } else { "0" };
        let path = format!("/sys/block/{disk}/queue/nomerges");
        file_row(
            host,
            TUNER,
            &format!("{disk} nomerges"),
            &path,
            Want::Exact(want.into()),
        )
    })
}

fn per_disk(
    host: &Host,
    cfg: &TuneConfig,
    tuner: &'static str,
    row: impl Fn(&str) -> Row,
) -> Vec<Row> {
    match data_disks(host, &cfg.data_dir) {
        Ok(disks) => disks.iter().map(|d| row(d)).collect(),
        Err(why) => vec![Row::unsupported(tuner, "data disk", why)],
    }
}

pub fn is_nvme(disk: &str) -> bool {
    disk.starts_with("nvme")
}

/// The whole disks (names under /sys/block) that hold `data_dir`.
pub fn data_disks(host: &Host, data_dir: &Path) -> Result<Vec<String>, String> {
    let existing = existing_ancestor(host, data_dir);
    let (major, minor) = host
        .system()
        .device_of(&host.path(&existing))
        .map_err(|e| format!("cannot stat {}: {e}", existing.display()))?;
    let dev = format!("{major}:{minor}");
    let name = block_name_for_dev(host, &dev).ok_or_else(|| {
        format!(
            "{} is on device {dev}, which is no block device (tmpfs/overlay?)",
            existing.display()
        )
    })?;
    let mut disks = Vec::new();
    expand_slaves(host, &name, 0, &mut disks);
    disks.sort();
    disks.dedup();
    Ok(disks)
}

/// The deepest existing directory on the way to `dir` (the data dir may not exist yet).
pub fn existing_ancestor(host: &Host, dir: &Path) -> PathBuf {
    let mut p = dir.to_path_buf();
    while !host.exists(&p) {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// The /sys/block disk for "major:minor": the disk itself, or the disk of a partition.
fn block_name_for_dev(host: &Host, dev: &str) -> Option<String> {
    for disk in host.list(Path::new("/sys/block")) {
        let base = Path::new("/sys/block").join(&disk);
        if host.read(&base.join("dev")).ok().as_deref() == Some(dev) {
            return Some(disk);
        }
        for part in host.list(&base) {
            if part.starts_with(&disk)
                && host.read(&base.join(&part).join("dev")).ok().as_deref() == Some(dev)
            {
                return Some(disk);
            }
        }
    }
    None
}

/// The disk name whose partition (or itself) is called `name`.
fn disk_of(host: &Host, name: &str) -> Option<String> {
    let disks = host.list(Path::new("/sys/block"));
    if disks.iter().any(|d| d == name) {
        return Some(name.to_string());
    }
    disks
        .into_iter()
        .find(|d| host.exists(&Path::new("/sys/block").join(d).join(name)))
}

fn expand_slaves(host: &Host, disk: &str, depth: usize, out: &mut Vec<String>) {
    let slaves = host.list(&Path::new("/sys/block").join(disk).join("slaves"));
    if slaves.is_empty() || depth >= SLAVE_DEPTH_MAX {
        out.push(disk.to_string());
        return;
    }
    for slave in slaves {
        match disk_of(host, &slave) {
            Some(d) => expand_slaves(host, &d, depth + 1, out),
            None => out.push(slave),
        }
    }
}
