//! The shape every tuner shares: it looks at the host and returns [`Row`]s (one per setting),
//! each with the current value, the recommended one, a [`Status`] and the [`Action`]s that
//! would reach the recommendation. `check` prints rows, `apply` runs the actions of rows that
//! are not ok, `script` prints the actions of every supported row.
//!
//! Invariant: assessing never changes the host.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{Host, UnitOp};

/// Where a setting stands on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Already at (or better than) the recommendation.
    Ok,
    /// Differs, and this process could change it (it is root).
    Differs,
    /// Differs (or cannot be read) and changing it needs root; run `apply` as root.
    NeedsRoot,
    /// The knob does not exist here (VM without cpufreq, no systemd, ...); nothing to do.
    Unsupported,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Differs => "differs",
            Status::NeedsRoot => "needs root",
            Status::Unsupported => "unsupported here",
        }
    }

    /// Apply acts on these.
    pub fn wants_change(self) -> bool {
        matches!(self, Status::Differs | Status::NeedsRoot)
    }
}

/// One change to the host. Paths are host paths (re-rooted by [`Host`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Write `value` to a sysctl / sysfs file.
    WriteFile { path: PathBuf, value: String },
    /// Write a whole config file (created with its directory if missing).
    WriteConfig { path: PathBuf, content: String },
    /// systemctl <op> <unit>.
    Unit { unit: String, op: UnitOp },
    /// Reserve `bytes` with fallocate at `path`.
    CreateBallast { path: PathBuf, bytes: u64 },
    /// Nothing automatic; the text says what a person must do.
    Manual { text: String },
}

impl Action {
    /// One-line description for dry runs and reports.
    pub fn describe(&self) -> String {
        match self {
            Action::WriteFile { path, value } => format!("write {value:?} to {}", path.display()),
            Action::WriteConfig { path, .. } => format!("write config file {}", path.display()),
            Action::Unit { unit, op } => format!("systemctl {} {unit}", op.verb()),
            Action::CreateBallast { path, bytes } => {
                format!("fallocate {bytes} bytes at {}", path.display())
            }
            Action::Manual { text } => format!("manual: {text}"),
        }
    }
}

/// One line of `check`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub tuner: &'static str,
    pub setting: String,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    /// Why unsupported / extra context; empty when nothing to add.
    pub note: String,
    /// What reaches `recommended`. Empty for unsupported rows.
    #[serde(skip)]
    pub actions: Vec<Action>,
}

impl Row {
    pub fn unsupported(
        tuner: &'static str,
        setting: impl Into<String>,
        why: impl Into<String>,
    ) -> Row {
        Row {
            tuner,
            setting: setting.into(),
            current: "-".into(),
            recommended: "-".into(),
            status: Status::Unsupported,
            note: why.into(),
            actions: Vec::new(),
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// The status for a setting that is or is not at its recommendation.
pub fn differs_status(host: &Host, ok: bool) -> Status {
    match (ok, host.is_root()) {
        (true, _) => Status::Ok,
        (false, true) => Status::Differs,
        (false, false) => Status::NeedsRoot,
    }
}

/// What value a file-backed setting should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Exactly this text.
    Exact(String),
    /// A "choice [selected] choice" file (scheduler, THP, ...): this choice selected.
    Selected(String),
    /// A number at least this large (never lowered).
    AtLeast(u64),
    /// A number at most this large.
    AtMost(u64),
    /// Whitespace-separated numbers, each at least the given one (tcp_rmem "min default max").
    AtLeastEach(Vec<u64>),
}

impl Want {
    fn display(&self) -> String {
        match self {
            Want::Exact(v) | Want::Selected(v) => v.clone(),
            Want::AtLeast(n) => format!(">= {n}"),
            Want::AtMost(n) => format!("<= {n}"),
            Want::AtLeastEach(v) => {
                let parts: Vec<String> = v.iter().map(u64::to_string).collect();
                format!(">= {}", parts.join(" "))
            }
        }
    }

    /// (current value for display, ok?, value to write) or an "unsupported" reason.
    fn evaluate(&self, raw: &str) -> Result<(String, bool, String), String> {
        match self {
            Want::Exact(v) => Ok((raw.to_string(), raw == v, v.clone())),
            Want::Selected(v) => {
                let choices: Vec<&str> = raw.split_whitespace().collect();
                let current = choices
                    .iter()
                    .find(|c| c.starts_with('['))
                    .map(|c| c.trim_matches(|ch| ch == '[' || ch == ']').to_string())
                    .unwrap_or_else(|| raw.to_string());
                let available = choices
                    .iter()
                    .any(|c| c.trim_matches(|ch| ch == '[' || ch == ']') == v);
                if !available {
                    return Err(format!("{v:?} is not offered here (choices: {raw})"));
                }
                Ok((current.clone(), current == *v, v.clone()))
            }
            Want::AtLeast(n) => {
                let cur = parse_u64(raw)?;
                Ok((raw.to_string(), cur >= *n, cur.max(*n).to_string()))
            }
            Want::AtMost(n) => {
                let cur = parse_u64(raw)?;
                Ok((raw.to_string(), cur <= *n, cur.min(*n).to_string()))
            }
            Want::AtLeastEach(want) => {
                let cur: Vec<u64> = raw
                    .split_whitespace()
                    .map(parse_u64)
                    .collect::<Result<_, _>>()?;
                if cur.len() != want.len() {
                    return Err(format!("expected {} numbers, found {raw:?}", want.len()));
                }
                let ok = cur.iter().zip(want).all(|(c, w)| c >= w);
                let target: Vec<String> = cur
                    .iter()
                    .zip(want)
                    .map(|(c, w)| (*c).max(*w).to_string())
                    .collect();
                Ok((
                    cur.iter().map(u64::to_string).collect::<Vec<_>>().join(" "),
                    ok,
                    target.join(" "),
                ))
            }
        }
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("not a number: {s:?}"))
}

/// The row for a single file-backed setting. Missing file: unsupported; unreadable: needs root.
pub fn file_row(host: &Host, tuner: &'static str, setting: &str, path: &str, want: Want) -> Row {
    let path = Path::new(path);
    let raw = match host.read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Row::unsupported(
                tuner,
                setting,
                format!("{} does not exist on this kernel", path.display()),
            );
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Row {
                tuner,
                setting: setting.to_string(),
                current: "unreadable".into(),
                recommended: want.display(),
                status: Status::NeedsRoot,
                note: format!("reading {} needs root", path.display()),
                actions: Vec::new(),
            };
        }
        Err(e) => return Row::unsupported(tuner, setting, format!("{}: {e}", path.display())),
    };
    match want.evaluate(&raw) {
        Ok((current, ok, target)) => Row {
            tuner,
            setting: setting.to_string(),
            current,
            recommended: want.display(),
            status: differs_status(host, ok),
            note: String::new(),
            actions: vec![Action::WriteFile {
                path: path.to_path_buf(),
                value: target,
            }],
        },
        Err(why) => Row::unsupported(tuner, setting, why),
    }
}

/// A sysctl row: the setting is named the sysctl way (vm.swappiness).
pub fn sysctl_row(host: &Host, tuner: &'static str, name: &str, want: Want) -> Row {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    file_row(host, tuner, name, &path, want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_choice_parsing() {
        let w = Want::Selected("none".into());
        assert_eq!(
            w.evaluate("[none] mq-deadline kyber").unwrap(),
            ("none".into(), true, "none".into())
        );
        assert_eq!(
            w.evaluate("none [mq-deadline]").unwrap(),
            ("mq-deadline".into(), false, "none".into())
        );
        assert!(
            Want::Selected("bfq".into())
                .evaluate("none [mq-deadline]")
                .is_err()
        );
    }

    #[test]
    fn at_least_never_lowers() {
        assert_eq!(
            Want::AtLeast(4096).evaluate("8192").unwrap(),
            ("8192".into(), true, "8192".into())
        );
        assert_eq!(
            Want::AtLeast(4096).evaluate("128").unwrap(),
            ("128".into(), false, "4096".into())
        );
        let each = Want::AtLeastEach(vec![4096, 131072, 16777216]);
        let (cur, ok, target) = each.evaluate("4096\t87380\t33554432").unwrap();
        assert_eq!(cur, "4096 87380 33554432");
        assert!(!ok);
        assert_eq!(target, "4096 131072 33554432");
        assert!(Want::AtMost(1).evaluate("0").unwrap().1);
        assert!(Want::AtLeast(1).evaluate("lots").is_err());
    }
}
