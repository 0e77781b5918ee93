//! The command line: clap types the broker embeds (`sluice tune ...`) and the `sluice-tune`
//! binary parses, and [`run_cli`], which runs a command and returns the exit code.
//!
//! Exit codes: 0 all ok / all done; 1 `check`: something differs or needs root, `apply` /
//! `revert`: an action failed; 2 error (bad arguments, unreadable state file, iotune failure);
//! 3 `check`: nothing differs but some tuners are unsupported here; 4 `apply` / `revert`: some
//! actions need root and were skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::apply::{self, DEFAULT_STATE_FILE, RunOptions};
use crate::host::{Host, RealSystem};
use crate::iotune::{self, IotuneOptions};
use crate::script;
use crate::tuner::{Row, Status};
use crate::tuners::{self, IrqMode, TuneConfig, TunerDef, ballast};

pub const EXIT_OK: i32 = 0;
pub const EXIT_DIFFERS: i32 = 1;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_ERROR: i32 = 2;
pub const EXIT_UNSUPPORTED: i32 = 3;
pub const EXIT_NEEDS_ROOT: i32 = 4;

/// `sluice tune` / `sluice-tune`.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Root of the host to inspect: a directory holding proc/, sys/, etc/ (tests use a fake tree).
    #[arg(long, default_value = "/", global = true)]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: TuneCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TuneCommand {
    /// Show every tuner: current value, recommended value, status, why. Changes nothing.
    Check(CheckArgs),
    /// Apply the recommendations (root), recording previous values for `revert`.
    Apply(ApplyArgs),
    /// Restore the values `apply` replaced.
    Revert(RevertArgs),
    /// Print the equivalent shell script (or, with --unit, its systemd oneshot unit).
    Script(ScriptArgs),
    /// Measure the data directory's disk and write DATA_DIR/io-profile.json.
    Iotune(IotuneArgs),
    /// Create or remove the disk-full ballast file.
    Ballast(BallastArgs),
    /// List the tuners and why each matters.
    List,
}

/// Options every tuner-running command shares.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Only these tuners (comma-separated names from `list`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The broker's data directory: picks the disks to tune and holds the ballast.
    #[arg(long, default_value = "./data", env = "SLUICE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// IRQ placement mode.
    #[arg(long, value_enum, default_value_t = IrqMode::Auto)]
    pub irq_mode: IrqMode,
    /// Ballast size in bytes (0 disables the ballast tuner).
    #[arg(long, default_value_t = ballast::DEFAULT_BYTES)]
    pub ballast_bytes: u64,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Print JSON rows instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where previous values are recorded (a path on the host, under --root).
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RevertArgs {
    /// Only these tuners' recorded changes.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ScriptArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Print the systemd oneshot unit that runs the script at boot instead.
    #[arg(long)]
    pub unit: bool,
}

#[derive(Debug, Clone, Args)]
pub struct IotuneArgs {
    #[arg(long, default_value = "./data", env = "SLUICE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Total measuring time in seconds (at most 600).
    #[arg(long, default_value_t = iotune::DURATION_S_DEFAULT as f64)]
    pub duration: f64,
    /// Test file size in MiB (capped at a quarter of the free space).
    #[arg(long, default_value_t = iotune::FILE_BYTES_DEFAULT >> 20)]
    pub file_mib: u64,
    /// Profile path (default DATA_DIR/io-profile.json).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print the profile JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BallastAction {
    Create,
    Remove,
}

#[derive(Debug, Clone, Args)]
pub struct BallastArgs {
    #[arg(value_enum)]
    pub action: BallastAction,
    #[arg(long, default_value = "./data", env = "SLUICE_DATA_DIR")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = ballast::DEFAULT_BYTES)]
    pub bytes: u64,
}

/// Runs one command against the real machine seen from `args.root`; returns the exit code.
pub fn run_cli(args: TuneArgs) -> anyhow::Result<i32> {
    let host = Host::new(args.root.clone(), Box::new(RealSystem));
    run_on(&host, args.command, &mut std::io::stdout().lock())
}

/// Runs one command against `host`, printing to `out` (tests pass a fake host and a Vec).
pub fn run_on(
    host: &Host,
    command: TuneCommand,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<i32> {
    match command {
        TuneCommand::Check(a) => {
            let (cfg, picked) = prepare(&a.selection)?;
            let rows = tuners::assess(host, &cfg, &picked);
            let code = check_exit_code(&rows);
            if a.json {
                let why: serde_json::Map<String, serde_json::Value> = picked
                    .iter()
                    .map(|t| (t.name.to_string(), t.why.into()))
                    .collect();
                let doc = serde_json::json!({ "rows": rows, "why": why, "exit_code": code });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                write!(out, "{}", render_table(&rows, &picked))?;
            }
            Ok(code)
        }
        TuneCommand::Apply(a) => {
            let (cfg, picked) = prepare(&a.selection)?;
            let opts = RunOptions {
                dry_run: a.dry_run,
                state_file: a.state_file,
            };
            let outcome = apply::apply(host, &cfg, &picked, &opts)?;
            report_outcome(
                out,
                &outcome,
                if a.dry_run {
                    "nothing to change"
                } else {
                    "nothing changed: all ok"
                },
            )
        }
        TuneCommand::Revert(a) => {
            let picked = tuners::select(&a.only)?;
            let opts = RunOptions {
                dry_run: a.dry_run,
                state_file: a.state_file,
            };
            let outcome = apply::revert(host, &picked, &opts)?;
            report_outcome(out, &outcome, "nothing recorded to revert")
        }
        TuneCommand::Script(a) => {
            if a.unit {
                write!(out, "{}", script::systemd_unit())?;
            } else {
                let (cfg, picked) = prepare(&a.selection)?;
                let rows = tuners::assess(host, &cfg, &picked);
                write!(out, "{}", script::shell_script(&rows, &picked))?;
            }
            Ok(EXIT_OK)
        }
        TuneCommand::Iotune(a) => {
            let opts = IotuneOptions {
                data_dir: a.data_dir,
                duration: Duration::try_from_secs_f64(a.duration)
                    .context("--duration must be a positive number of seconds")?,
                file_bytes: a.file_mib.saturating_mul(1 << 20),
                output: a.output,
            };
            let profile = iotune::run(&opts)?;
            if a.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&profile)?)?;
            } else {
                for line in iotune::summary(&profile) {
                    writeln!(out, "{line}")?;
                }
            }
            Ok(EXIT_OK)
        }
        TuneCommand::Ballast(a) => {
            let path = absolute(&a.data_dir)?.join(ballast::FILE_NAME);
            match a.action {
                BallastAction::Create => {
                    apply::create_ballast(host, &path, a.bytes)
                        .with_context(|| format!("creating {}", path.display()))?;
                    writeln!(out, "ballast {} holds {} bytes", path.display(), a.bytes)?;
                }
                BallastAction::Remove => {
                    let removed = apply::remove_ballast(host, &path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    writeln!(
                        out,
                        "ballast {} {}",
                        path.display(),
                        if removed { "removed" } else { "was not there" }
                    )?;
                }
            }
            Ok(EXIT_OK)
        }
        TuneCommand::List => {
            for t in tuners::TUNERS {
                writeln!(out, "{:<22} {}", t.name, t.why)?;
            }
            Ok(EXIT_OK)
        }
    }
}

fn prepare(sel: &Selection) -> anyhow::Result<(TuneConfig, Vec<&'static TunerDef>)> {
    let cfg = TuneConfig {
        data_dir: absolute(&sel.data_dir)?,
        irq_mode: sel.irq_mode,
        ballast_bytes: sel.ballast_bytes,
    };
    Ok((cfg, tuners::select(&sel.only)?))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(crate::host::absolute_path(p))
}

/// 0 all ok, 1 something differs or needs root, 3 only unsupported rows besides ok ones.
pub fn check_exit_code(rows: &[Row]) -> i32 {
    if rows.iter().any(|r| r.status.wants_change()) {
        EXIT_DIFFERS
    } else if rows.iter().any(|r| r.status == Status::Unsupported) {
        EXIT_UNSUPPORTED
    } else {
        EXIT_OK
    }
}

fn report_outcome(
    out: &mut dyn std::io::Write,
    o: &apply::Outcome,
    idle: &str,
) -> anyhow::Result<i32> {
    for line in &o.done {
        writeln!(out, "done     {line}")?;
    }
    for line in &o.planned {
        writeln!(out, "would    {line}")?;
    }
    for line in &o.skipped {
        writeln!(out, "skipped  {line}")?;
    }
    for line in &o.failed {
        writeln!(out, "FAILED   {line}")?;
    }
    if o.done.is_empty() && o.planned.is_empty() && o.skipped.is_empty() && o.failed.is_empty() {
        writeln!(out, "{idle}")?;
    }
    Ok(if !o.failed.is_empty() {
        EXIT_FAILED
    } else if o.needed_root {
        EXIT_NEEDS_ROOT
    } else {
        EXIT_OK
    })
}

/// The `check` table: one line per setting, the tuner's why on its first line, notes below.
pub fn render_table(rows: &[Row], tuners: &[&TunerDef]) -> String {
    let header = [
        "TUNER",
        "SETTING",
        "CURRENT",
        "RECOMMENDED",
        "STATUS",
        "WHY",
    ];
    let mut lines: Vec<[String; 6]> = Vec::new();
    let mut last_tuner = "";
    for r in rows {
        let why = if r.tuner != last_tuner {
            tuners
                .iter()
                .find(|t| t.name == r.tuner)
                .map(|t| t.why)
                .unwrap_or("")
        } else {
            ""
        };
        let tuner = if r.tuner != last_tuner { r.tuner } else { "" };
        last_tuner = r.tuner;
        lines.push([
            tuner.into(),
            r.setting.clone(),
            r.current.clone(),
            r.recommended.clone(),
            r.status.label().into(),
            why.into(),
        ]);
    }
    let mut width = header.map(str::len);
    for l in &lines {
        for (w, cell) in width.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt = |cells: &[String; 6]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 5 {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{:<w$}  ", cell, w = width[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = fmt(&header.map(String::from));
    for l in &lines {
        s.push_str(&fmt(l));
    }
    let notes: Vec<&Row> = rows.iter().filter(|r| !r.note.is_empty()).collect();
    if !notes.is_empty() {
        s.push_str("\nnotes:\n");
        for r in notes {
            s.push_str(&format!("  {} / {}: {}\n", r.tuner, r.setting, r.note));
        }
    }
    let count = |st: Status| rows.iter().filter(|r| r.status == st).count();
    s.push_str(&format!(
        "\n{} settings: {} ok, {} differ, {} need root, {} unsupported here\n",
        rows.len(),
        count(Status::Ok),
        count(Status::Differs),
        count(Status::NeedsRoot),
        count(Status::Unsupported)
    ));
    s
}
