//! `Host`: every read and write a tuner makes goes through here, rooted at a directory
//! (`/` in production, a temp dir holding a fake /proc and /sys in tests). Facts that are not
//! files (rlimits, systemd units, the io_uring probe, which device holds a path) go through the
//! [`System`] trait, with [`RealSystem`] for the machine and [`FakeSystem`] for tests.
//!
//! Invariant: tuners never touch `std::fs` directly; paths they pass are host-absolute
//! ("/proc/sys/vm/swappiness") and are re-rooted here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::sys::{self, Rlimit};

/// State of a systemd unit as far as a check needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnitState {
    /// None: the unit is not installed.
    pub enabled: Option<bool>,
    /// None: unknown (systemd is not running, or the unit is not installed).
    pub active: Option<bool>,
}

/// What a tuner may do to a systemd unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitOp {
    Start,
    Stop,
    Enable,
    Disable,
}

impl UnitOp {
    pub fn verb(self) -> &'static str {
        match self {
            UnitOp::Start => "start",
            UnitOp::Stop => "stop",
            UnitOp::Enable => "enable",
            UnitOp::Disable => "disable",
        }
    }
}

/// Host facts that are not files. Implementations must not change anything except in
/// `unit_control`.
pub trait System: Send + Sync {
    /// Effective uid 0.
    fn is_root(&self) -> bool;
    /// (soft, hard) of this process, `sys::RLIM_UNLIMITED` for infinity.
    fn rlimit(&self, which: Rlimit) -> io::Result<(u64, u64)>;
    fn unit_state(&self, unit: &str) -> UnitState;
    fn unit_control(&self, unit: &str, op: UnitOp) -> io::Result<()>;
    /// Tries io_uring_setup; Err carries the reason (errno text).
    fn probe_io_uring(&self) -> Result<(), String>;
    /// (major, minor) of the device holding `path` (host path, already re-rooted).
    fn device_of(&self, path: &Path) -> io::Result<(u32, u32)>;
}

/// The running machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSystem;

impl System for RealSystem {
    fn is_root(&self) -> bool {
        sys::is_effective_root()
    }

    fn rlimit(&self, which: Rlimit) -> io::Result<(u64, u64)> {
        sys::getrlimit(which)
    }

    fn unit_state(&self, unit: &str) -> UnitState {
        // `is-enabled` works without a running systemd (it reads unit files); `is-active`
        // needs the manager, so its answer only counts when it says active/inactive.
        let enabled = match systemctl_output(&["is-enabled", unit]) {
            Some(s) if s == "enabled" || s == "enabled-runtime" || s == "alias" => Some(true),
            Some(s) if s == "disabled" || s == "masked" || s == "static" || s == "indirect" => {
                Some(false)
            }
            _ => None,
        };
        let active = match systemctl_output(&["is-active", unit]) {
            Some(s) if s == "active" || s == "activating" => Some(true),
            Some(s) if s == "inactive" || s == "failed" => Some(false),
            _ => None,
        };
        UnitState { enabled, active }
    }

    fn unit_control(&self, unit: &str, op: UnitOp) -> io::Result<()> {
        let status = Command::new("systemctl").args([op.verb(), unit]).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "systemctl {} {unit}: {status}",
                op.verb()
            )))
        }
    }

    fn probe_io_uring(&self) -> Result<(), String> {
        match io_uring::IoUring::new(8) {
            Ok(_ring) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn device_of(&self, path: &Path) -> io::Result<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        Ok(sys::dev_major_minor(fs::metadata(path)?.dev()))
    }
}

fn systemctl_output(args: &[&str]) -> Option<String> {
    let out = Command::new("systemctl").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// A scripted system for tests: every answer is a field; unit operations are recorded.
#[derive(Debug, Default)]
pub struct FakeSystem {
    pub root: bool,
    pub nofile: (u64, u64),
    pub memlock: (u64, u64),
    pub units: Mutex<BTreeMap<String, UnitState>>,
    pub unit_ops: Mutex<Vec<(String, UnitOp)>>,
    pub io_uring_error: Option<String>,
    pub device: Option<(u32, u32)>,
}

impl FakeSystem {
    /// A root-capable host with generous limits, no units, working io_uring, data on 259:0.
    pub fn new(root: bool) -> FakeSystem {
        FakeSystem {
            root,
            nofile: (1 << 20, 1 << 20),
            memlock: (sys::RLIM_UNLIMITED, sys::RLIM_UNLIMITED),
            device: Some((259, 0)),
            ..FakeSystem::default()
        }
    }

    pub fn with_unit(self, unit: &str, enabled: bool, active: bool) -> FakeSystem {
        let state = UnitState {
            enabled: Some(enabled),
            active: Some(active),
        };
        lock(&self.units).insert(unit.to_string(), state);
        self
    }

    pub fn unit_ops(&self) -> Vec<(String, UnitOp)> {
        lock(&self.unit_ops).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl System for FakeSystem {
    fn is_root(&self) -> bool {
        self.root
    }

    fn rlimit(&self, which: Rlimit) -> io::Result<(u64, u64)> {
        Ok(match which {
            Rlimit::Nofile => self.nofile,
            Rlimit::Memlock => self.memlock,
        })
    }

    fn unit_state(&self, unit: &str) -> UnitState {
        lock(&self.units).get(unit).copied().unwrap_or_default()
    }

    fn unit_control(&self, unit: &str, op: UnitOp) -> io::Result<()> {
        lock(&self.unit_ops).push((unit.to_string(), op));
        let mut units = lock(&self.units);
        let state = units.entry(unit.to_string()).or_default();
        match op {
            UnitOp::Start => state.active = Some(true),
            UnitOp::Stop => state.active = Some(false),
            UnitOp::Enable => state.enabled = Some(true),
            UnitOp::Disable => state.enabled = Some(false),
        }
        Ok(())
    }

    fn probe_io_uring(&self) -> Result<(), String> {
        match &self.io_uring_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn device_of(&self, _path: &Path) -> io::Result<(u32, u32)> {
        self.device
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no device"))
    }
}

/// The machine (or a fake of it) seen from a root directory.
pub struct Host {
    root: PathBuf,
    system: Box<dyn System>,
}

impl Host {
    /// The real machine: root `/`, real system calls.
    pub fn real() -> Host {
        Host::new("/", Box::new(RealSystem))
    }

    pub fn new(root: impl Into<PathBuf>, system: Box<dyn System>) -> Host {
        Host {
            root: root.into(),
            system,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn system(&self) -> &dyn System {
        self.system.as_ref()
    }

    pub fn is_root(&self) -> bool {
        self.system.is_root()
    }

    /// The on-disk location of host path `p` (absolute or relative to the host's `/`).
    pub fn path(&self, p: &Path) -> PathBuf {
        let rel: PathBuf = p
            .components()
            .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
            .collect();
        self.root.join(rel)
    }

    /// File contents with surrounding whitespace trimmed.
    pub fn read(&self, p: &Path) -> io::Result<String> {
        Ok(fs::read_to_string(self.path(p))?.trim().to_string())
    }

    /// Writes `value` followed by a newline (how sysctl and sysfs files are written).
    pub fn write(&self, p: &Path, value: &str) -> io::Result<()> {
        fs::write(self.path(p), format!("{value}\n"))
    }

    /// Writes a whole config file, creating its directory.
    pub fn write_config(&self, p: &Path, content: &str) -> io::Result<()> {
        let full = self.path(p);
        if let Some(dir) = full.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(full, content)
    }

    pub fn remove_file(&self, p: &Path) -> io::Result<()> {
        fs::remove_file(self.path(p))
    }

    pub fn exists(&self, p: &Path) -> bool {
        self.path(p).exists()
    }

    pub fn metadata(&self, p: &Path) -> io::Result<fs::Metadata> {
        fs::metadata(self.path(p))
    }

    /// Entry names of a directory, sorted; empty when it does not exist.
    pub fn list(&self, p: &Path) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.path(p)) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort_by(|a, b| natural_cmp(a, b));
        names
    }

    /// Follows symlinks; returns the host path of the target.
    pub fn canonical(&self, p: &Path) -> io::Result<PathBuf> {
        let real = fs::canonicalize(self.path(p))?;
        let root = fs::canonicalize(&self.root)?;
        match real.strip_prefix(&root) {
            Ok(rel) => Ok(Path::new("/").join(rel)),
            Err(_) => Err(io::Error::other(format!(
                "{} escapes the host root",
                real.display()
            ))),
        }
    }

    /// True when systemd is the running init (sd_booted(3): /run/systemd/system exists).
    pub fn systemd_running(&self) -> bool {
        self.path(Path::new("/run/systemd/system")).is_dir()
    }

    /// Names of running processes (from /proc/*/comm).
    pub fn process_names(&self) -> Vec<String> {
        self.list(Path::new("/proc"))
            .into_iter()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|pid| self.read(&Path::new("/proc").join(pid).join("comm")).ok())
            .collect()
    }
}

/// `p` made absolute against the current directory, without `.` components.
pub fn absolute_path(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Orders "cpu2" before "cpu10" and "9" before "10".
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits_at = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
        let (head, tail) = s.split_at(digits_at);
        let num = tail.parse::<u64>().ok();
        (head.to_string(), num, s.to_string())
    };
    split(a).cmp(&split(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rerooted_and_cannot_climb_out_by_prefix() {
        let host = Host::new("/tmp/fake", Box::new(FakeSystem::new(false)));
        assert_eq!(
            host.path(Path::new("/proc/sys/vm/swappiness")),
            Path::new("/tmp/fake/proc/sys/vm/swappiness")
        );
        assert_eq!(
            host.path(Path::new("sys/block")),
            Path::new("/tmp/fake/sys/block")
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["cpu10", "cpu2", "cpu1", "cpufreq"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["cpu1", "cpu2", "cpu10", "cpufreq"]);
    }
}
