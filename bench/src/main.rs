//! `bench` binary: runs named scenarios against Sluice and optionally a second broker.
//!
//! ```text
//! bench list
//! bench run [--scenario NAME]... [--sluice PATH | --bootstrap ADDR] [--compare ADDR]
//!           [--compare-label L] [--duration SECS] [--warmup-secs SECS] [--append FILE]
//! ```

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bench::{RunSettings, SCENARIOS, Target, commands, markdown_table, run_scenarios, scenario};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "End-to-end broker benchmarks driven by loadgen"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the scenarios.
    List,
    /// Run scenarios.
    Run {
        /// Scenario names (default: all).
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Sluice binary to start per scenario (default target/release/sluice).
        #[arg(long, conflicts_with = "bootstrap")]
        sluice: Option<PathBuf>,
        /// Use a running broker instead of starting Sluice.
        #[arg(long)]
        bootstrap: Option<String>,
        /// Label of the first target.
        #[arg(long, default_value = "sluice")]
        label: String,
        /// A second broker to run the same scenarios against.
        #[arg(long)]
        compare: Option<String>,
        #[arg(long, default_value = "other")]
        compare_label: String,
        #[arg(long, default_value_t = 15.0)]
        duration: f64,
        #[arg(long, default_value_t = 3.0)]
        warmup_secs: f64,
        /// Append a markdown section with the table and exact commands to this file.
        #[arg(long)]
        append: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::List => {
            for s in SCENARIOS {
                println!("{:<14} {}", s.name, s.description);
            }
            Ok(())
        }
        Cmd::Run {
            scenarios,
            sluice,
            bootstrap,
            label,
            compare,
            compare_label,
            duration,
            warmup_secs,
            append,
        } => {
            let chosen = if scenarios.is_empty() {
                SCENARIOS.iter().collect::<Vec<_>>()
            } else {
                scenarios
                    .iter()
                    .map(|name| scenario(name).with_context(|| format!("no scenario {name:?}")))
                    .collect::<Result<Vec<_>>>()?
            };
            let first = match bootstrap {
                Some(bootstrap) => Target::Address { label, bootstrap },
                None => {
                    let path = sluice.unwrap_or_else(|| PathBuf::from("target/release/sluice"));
                    if !path.exists() {
                        bail!(
                            "{} not found: cargo build --release -p sluice",
                            path.display()
                        );
                    }
                    Target::Binary { label, path }
                }
            };
            let mut targets = vec![first];
            if let Some(bootstrap) = compare {
                targets.push(Target::Address {
                    label: compare_label,
                    bootstrap,
                });
            }
            let settings = RunSettings {
                duration_secs: duration,
                warmup_secs,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let results = runtime.block_on(run_scenarios(&chosen, &targets, &settings))?;
            let table = markdown_table(&results);
            print!("{table}");
            if let Some(path) = append {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let host = &results[0].reports[0].1.host;
                writeln!(
                    file,
                    "\n### bench run ({}, {} {} cpus, kernel {}, git {})\n\n{table}\n{}",
                    results[0].reports[0].1.start_time,
                    host.hostname,
                    host.cpus,
                    host.kernel,
                    results[0].reports[0]
                        .1
                        .git_sha
                        .as_deref()
                        .unwrap_or("unknown"),
                    commands(&results)
                )?;
            }
            Ok(())
        }
    }
}
