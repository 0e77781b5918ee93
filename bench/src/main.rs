//! `bench` binary: runs named scenarios against Sluice and optionally a second broker.
//!
//! ```text
//! bench list
//! bench run [--scenario NAME]... [--sluice PATH | --bootstrap ADDR] [--compare ADDR]
//!           [--compare-label L] [--duration SECS] [--warmup-secs SECS] [--append FILE]
//! bench peer [--scenario NAME]... [--rounds N] [--duration SECS] [--warmup-secs SECS]
//!            [--records-scale X] [--kafka-heap-mb MB] [--sluice PATH] [--broker KIND]...
//!            [--host-limits-secs S] [--append FILE]
//! ```
//!
//! `peer` starts a real Apache Kafka (refstack) and Sluice in both flush modes and runs the
//! side-by-side scenarios of `bench::peer` against them in interleaved rounds.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bench::peer::{self, BrokerKind, PEER_SCENARIOS, PeerSettings};
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
    /// List the scenarios (and the side-by-side ones of `peer`).
    List,
    /// Side by side with a real Apache Kafka started here: interleaved rounds, ratios.
    Peer {
        /// Scenario names (default: all of `bench list`'s peer scenarios).
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Seconds each timed loadgen run measures.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        /// Multiplies the record counts of the perf tools and of the fetch fill.
        #[arg(long, default_value_t = 1.0)]
        records_scale: f64,
        #[arg(long, default_value_t = peer::KAFKA_HEAP_MB_DEFAULT)]
        kafka_heap_mb: u32,
        /// Sluice binary (default target/release/sluice).
        #[arg(long)]
        sluice: Option<PathBuf>,
        /// Brokers: kafka, sluice, sluice-pc (default: all three).
        #[arg(long = "broker")]
        brokers: Vec<String>,
        /// Round-major: each round runs every scenario before the next round (pairs compared
        /// with each other, as transactional vs idempotent, are then seconds apart).
        #[arg(long, default_value_t = false)]
        interleave: bool,
        /// Seconds for each host-limit measurement (iperf3, two fio jobs); 0 skips them.
        #[arg(long, default_value_t = 5)]
        host_limits_secs: u32,
        /// Append a markdown section (table, host limits, settings, command) to this file.
        #[arg(long)]
        append: Option<PathBuf>,
    },
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
            println!("\npeer scenarios (bench peer):");
            for s in PEER_SCENARIOS {
                println!("{:<17} {:<25} {}", s.name, s.client, s.description);
            }
            Ok(())
        }
        Cmd::Peer {
            scenarios,
            rounds,
            duration,
            warmup_secs,
            records_scale,
            kafka_heap_mb,
            sluice,
            brokers,
            host_limits_secs,
            interleave,
            append,
        } => {
            let chosen = choose(&scenarios, PEER_SCENARIOS, peer::peer_scenario)?;
            let brokers = if brokers.is_empty() {
                BrokerKind::ALL.to_vec()
            } else {
                brokers
                    .iter()
                    .map(|label| {
                        BrokerKind::ALL
                            .into_iter()
                            .find(|b| b.label() == label)
                            .with_context(|| format!("no broker {label:?}"))
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            let settings = PeerSettings {
                rounds,
                duration_secs: duration,
                warmup_secs,
                records_scale,
                kafka_heap_mb,
                sluice: sluice.unwrap_or_else(|| PathBuf::from("target/release/sluice")),
                brokers,
                interleave,
            };
            let stack = refstack::JavaStack::locate()?;
            let data_dir = tempfile::tempdir().context("temp dir for the host limits")?;
            let limits = if host_limits_secs > 0 {
                eprintln!("bench peer: host limits ({host_limits_secs} s each)");
                Some(bench::host_limits::measure(
                    data_dir.path(),
                    host_limits_secs,
                )?)
            } else {
                None
            };
            let started = std::time::Instant::now();
            let report = peer::run(&stack, &chosen, &settings)?;
            let elapsed = started.elapsed().as_secs();
            let host = loadgen::report::HostInfo::current();
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let limits = limits
                .map(|l| l.markdown(data_dir.path()))
                .unwrap_or_default();
            let command: Vec<String> = std::env::args().collect();
            let section = format!(
                "{}\n{}{limits}\n{}\nMachine: {} ({} cpus, kernel {}); load average at the end \
                 {}; the brokers' rounds took {elapsed} s. Command: `{}`.\n",
                report.markdown_table(),
                report.transactions_table(),
                report.settings_text(),
                host.hostname,
                host.cpus,
                host.kernel,
                load.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
                command.join(" "),
            );
            print!("{section}");
            if let Some(path) = append {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                writeln!(file, "\n{section}")?;
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
            let chosen = choose(&scenarios, SCENARIOS, scenario)?;
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

/// The scenarios named on the command line (each looked up with `find`), or all of them.
fn choose<T>(
    names: &[String],
    all: &'static [T],
    find: fn(&str) -> Option<&'static T>,
) -> Result<Vec<&'static T>> {
    if names.is_empty() {
        return Ok(all.iter().collect());
    }
    names
        .iter()
        .map(|name| find(name).with_context(|| format!("no scenario {name:?}")))
        .collect()
}
