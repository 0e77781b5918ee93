//! `apply` and `revert`. Apply runs the actions of every row that is not ok, recording the
//! value it replaced in a state file (JSON, default /var/lib/sluice/tune-state.json on the
//! host); revert writes those values back, newest first, and forgets them.
//!
//! Invariants: a path's *first* previous value is kept (re-running apply never records a
//! tuned value as "previous"), so apply is idempotent and revert restores the original host.
//! The state file is replaced atomically (write temp, rename) after every run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::host::{Host, UnitOp};
use crate::sys;
use crate::tuner::Action;
use crate::tuners::{self, TuneConfig, TunerDef};

/// Where apply records previous values (host path).
pub const DEFAULT_STATE_FILE: &str = "/var/lib/sluice/tune-state.json";
const STATE_VERSION: u32 = 1;

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// In the order applied; revert walks it backwards.
    pub entries: Vec<Entry>,
}

/// How to undo one applied action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub tuner: String,
    #[serde(flatten)]
    pub undo: Undo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Undo {
    /// Write `previous` back to a sysctl / sysfs file.
    File { path: PathBuf, previous: String },
    /// Restore a config file's content, or remove it when it did not exist.
    Config {
        path: PathBuf,
        previous: Option<String>,
    },
    /// Put a unit back as it was (None: unknown, left alone).
    Unit {
        unit: String,
        was_enabled: Option<bool>,
        was_active: Option<bool>,
    },
    /// Remove the ballast file apply created.
    Ballast { path: PathBuf },
}

impl Undo {
    fn key(&self) -> String {
        match self {
            Undo::File { path, .. } | Undo::Config { path, .. } | Undo::Ballast { path } => {
                path.display().to_string()
            }
            Undo::Unit { unit, .. } => unit.clone(),
        }
    }
}

/// What a run did; the CLI prints it and derives the exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    pub done: Vec<String>,
    /// Dry run: what would be done.
    pub planned: Vec<String>,
    /// Not done: need root, or need a person (manual).
    pub skipped: Vec<String>,
    pub failed: Vec<String>,
    /// Some action was skipped only because this process is not root.
    pub needed_root: bool,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Host path of the state file.
    pub state_file: PathBuf,
}

/// Applies every not-ok row of the selected tuners.
pub fn apply(
    host: &Host,
    cfg: &TuneConfig,
    tuners: &[&TunerDef],
    opts: &RunOptions,
) -> anyhow::Result<Outcome> {
    let rows = tuners::assess(host, cfg, tuners);
    let mut state = load_state(host, &opts.state_file)?;
    let mut out = Outcome::default();
    for row in rows.iter().filter(|r| r.status.wants_change()) {
        for action in &row.actions {
            let what = format!("{}: {}", row.tuner, action.describe());
            if let Action::Manual { .. } = action {
                out.skipped.push(what);
                continue;
            }
            if needs_root(action) && !host.is_root() && !opts.dry_run {
                out.needed_root = true;
                out.skipped.push(format!("{what} (needs root)"));
                continue;
            }
            if already_there(host, action) {
                continue;
            }
            if opts.dry_run {
                out.planned.push(what);
                continue;
            }
            match run_action(host, action) {
                Ok(undo) => {
                    if !state.entries.iter().any(|e| e.undo.key() == undo.key()) {
                        state.entries.push(Entry {
                            tuner: row.tuner.to_string(),
                            undo,
                        });
                    }
                    out.done.push(what);
                }
                Err(e) => out.failed.push(format!("{what}: {e}")),
            }
        }
    }
    if !opts.dry_run {
        save_state(host, &opts.state_file, &state)?;
    }
    Ok(out)
}

/// Restores what apply recorded for the selected tuners, newest first.
pub fn revert(host: &Host, tuners: &[&TunerDef], opts: &RunOptions) -> anyhow::Result<Outcome> {
    let mut state = load_state(host, &opts.state_file)?;
    let mut out = Outcome::default();
    let mut kept = Vec::new();
    for entry in state.entries.drain(..).rev() {
        let selected = tuners.iter().any(|t| t.name == entry.tuner);
        let what = format!("{}: restore {}", entry.tuner, entry.undo.key());
        if !selected {
            kept.push(entry);
            continue;
        }
        if !matches!(entry.undo, Undo::Ballast { .. }) && !host.is_root() && !opts.dry_run {
            out.needed_root = true;
            out.skipped.push(format!("{what} (needs root)"));
            kept.push(entry);
            continue;
        }
        if opts.dry_run {
            out.planned.push(what);
            kept.push(entry);
            continue;
        }
        match run_undo(host, &entry.undo) {
            Ok(()) => out.done.push(what),
            Err(e) => {
                out.failed.push(format!("{what}: {e}"));
                kept.push(entry);
            }
        }
    }
    kept.reverse();
    state.entries = kept;
    if !opts.dry_run {
        save_state(host, &opts.state_file, &state)?;
    }
    Ok(out)
}

/// Reads the state file; a missing file is an empty state.
pub fn load_state(host: &Host, path: &Path) -> anyhow::Result<State> {
    match fs::read_to_string(host.path(path)) {
        Ok(text) => {
            let state: State = serde_json::from_str(&text)
                .with_context(|| format!("parsing state file {}", path.display()))?;
            anyhow::ensure!(
                state.version == STATE_VERSION,
                "state file {} has version {}, expected {STATE_VERSION}",
                path.display(),
                state.version
            );
            Ok(state)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State {
            version: STATE_VERSION,
            entries: Vec::new(),
        }),
        Err(e) => Err(e).with_context(|| format!("reading state file {}", path.display())),
    }
}

/// Writes the state atomically; an empty state removes the file.
fn save_state(host: &Host, path: &Path, state: &State) -> anyhow::Result<()> {
    let full = host.path(path);
    if state.entries.is_empty() {
        return match fs::remove_file(&full) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", full.display()))
            }
            _ => Ok(()),
        };
    }
    if let Some(dir) = full.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = full.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state)?;
    fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &full).with_context(|| format!("renaming to {}", full.display()))?;
    Ok(())
}

fn needs_root(action: &Action) -> bool {
    !matches!(action, Action::CreateBallast { .. } | Action::Manual { .. })
}

/// True when the file already holds the value (apply writes only what changes).
fn already_there(host: &Host, action: &Action) -> bool {
    match action {
        Action::WriteFile { path, value } => host.read(path).is_ok_and(|v| v == *value),
        Action::WriteConfig { path, content } => host.read(path).is_ok_and(|v| v == content.trim()),
        _ => false,
    }
}

fn run_action(host: &Host, action: &Action) -> io::Result<Undo> {
    match action {
        Action::WriteFile { path, value } => {
            let previous = host.read(path)?;
            host.write(path, value)?;
            Ok(Undo::File {
                path: path.clone(),
                previous,
            })
        }
        Action::WriteConfig { path, content } => {
            let previous = match host.read(path) {
                Ok(_) => Some(fs::read_to_string(host.path(path))?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            host.write_config(path, content)?;
            Ok(Undo::Config {
                path: path.clone(),
                previous,
            })
        }
        Action::Unit { unit, op } => {
            let before = host.system().unit_state(unit);
            host.system().unit_control(unit, *op)?;
            Ok(Undo::Unit {
                unit: unit.clone(),
                was_enabled: before.enabled,
                was_active: before.active,
            })
        }
        Action::CreateBallast { path, bytes } => {
            create_ballast(host, path, *bytes)?;
            Ok(Undo::Ballast { path: path.clone() })
        }
        Action::Manual { text } => Err(io::Error::other(format!("manual step: {text}"))),
    }
}

fn run_undo(host: &Host, undo: &Undo) -> io::Result<()> {
    match undo {
        Undo::File { path, previous } => host.write(path, previous),
        Undo::Config {
            path,
            previous: Some(content),
        } => host.write_config(path, content),
        Undo::Config {
            path,
            previous: None,
        }
        | Undo::Ballast { path } => match host.remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Undo::Unit {
            unit,
            was_enabled,
            was_active,
        } => {
            let sys = host.system();
            match was_active {
                Some(true) => sys.unit_control(unit, UnitOp::Start)?,
                Some(false) => sys.unit_control(unit, UnitOp::Stop)?,
                None => {}
            }
            match was_enabled {
                Some(true) => sys.unit_control(unit, UnitOp::Enable)?,
                Some(false) => sys.unit_control(unit, UnitOp::Disable)?,
                None => {}
            }
            Ok(())
        }
    }
}

/// Creates (or grows) the ballast file with real blocks; refuses to take the last free space.
pub fn create_ballast(host: &Host, path: &Path, bytes: u64) -> io::Result<()> {
    let full = host.path(path);
    let dir = full.parent().unwrap_or(Path::new("/"));
    let free = sys::available_bytes(dir)?;
    let have = fs::metadata(&full)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    if bytes.saturating_sub(have) > free / 2 {
        return Err(io::Error::other(format!(
            "ballast of {bytes} bytes would take more than half of the {free} free bytes"
        )));
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&full)?;
    sys::fallocate(&file, bytes)?;
    file.sync_all()
}

/// Removes the ballast file (emergency: frees its space at once). Ok when absent.
pub fn remove_ballast(host: &Host, path: &Path) -> io::Result<bool> {
    match host.remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
