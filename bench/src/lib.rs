//! bench: named end-to-end scenarios (modelled on OpenMessaging Benchmark workloads) run with
//! loadgen against Sluice and, in the same run, against any other broker address, with the
//! results side by side as ratios; plus criterion micro-benchmarks (benches/).
//!
//! Owns: the scenario table, starting a broker binary for a scenario (fresh data directory
//! each time, so scenarios do not inherit each other's logs), the comparison table; and
//! (`peer`) the side-by-side run against a real Apache Kafka started from the reference stack,
//! with Kafka's own perf tools as a second client (`java_tools`) and the host's limits
//! measured in the same run (`host_limits`).
//! Does not own: load generation or measurement (loadgen does both), starting Kafka (refstack).

#![forbid(unsafe_code)]

pub mod host_limits;
pub mod java_tools;
pub mod peer;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use loadgen::{LoadgenArgs, Report};

/// How long a started broker may take to print `ready`.
const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a started broker may take to stop after SIGTERM.
const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One named workload.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    /// loadgen flags besides bootstrap, topic, duration and warm-up.
    pub flags: &'static [&'static str],
    /// Open loop at this fraction of the `max-1k` scenario's measured rate.
    pub rate_of_max: Option<f64>,
}

/// The scenarios of issue 5 (OMB's 1 topic x 16 partitions family).
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "max-1k",
        description: "1 topic x 16 partitions, 1 KiB records, 1 producer, acks=1, max rate",
        flags: &[
            "--partitions",
            "16",
            "--record-bytes",
            "1024",
            "--acks",
            "1",
        ],
        rate_of_max: None,
    },
    Scenario {
        name: "max-100b",
        description: "16 partitions, 100 B records, 1 producer, acks=1, max rate",
        flags: &["--partitions", "16", "--record-bytes", "100", "--acks", "1"],
        rate_of_max: None,
    },
    Scenario {
        name: "acks-all",
        description: "16 partitions, 1 KiB records, 1 producer, acks=all, max rate",
        flags: &[
            "--partitions",
            "16",
            "--record-bytes",
            "1024",
            "--acks",
            "all",
        ],
        rate_of_max: None,
    },
    Scenario {
        name: "producers-4",
        description: "16 partitions, 1 KiB records, 4 producers, acks=1, max rate",
        flags: &[
            "--partitions",
            "16",
            "--record-bytes",
            "1024",
            "--acks",
            "1",
            "--producers",
            "4",
        ],
        rate_of_max: None,
    },
    Scenario {
        name: "producers-50",
        description: "16 partitions, 1 KiB records, 50 producers, acks=1, max rate",
        flags: &[
            "--partitions",
            "16",
            "--record-bytes",
            "1024",
            "--acks",
            "1",
            "--producers",
            "50",
            "--buffer-bytes",
            "8388608",
        ],
        rate_of_max: None,
    },
    Scenario {
        name: "keyed",
        description: "16 partitions, 1 KiB records, 10 000 uniform keys, acks=1, max rate",
        flags: &[
            "--partitions",
            "16",
            "--record-bytes",
            "1024",
            "--acks",
            "1",
            "--keys",
            "uniform:10000",
        ],
        rate_of_max: None,
    },
    Scenario {
        name: "latency-50pct",
        description: "16 partitions, 1 KiB records, acks=all, open loop at 50% of max-1k, 1 consumer",
        flags: &[
            "--partitions",
            "16",
            "--record-bytes",
            "1024",
            "--acks",
            "all",
            "--consumers",
            "1",
        ],
        rate_of_max: Some(0.5),
    },
];

pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Where a scenario's load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A broker already running at this address.
    Address { label: String, bootstrap: String },
    /// A Sluice (or any `sluice start`-compatible) binary the runner starts per scenario.
    Binary { label: String, path: PathBuf },
}

impl Target {
    pub fn label(&self) -> &str {
        match self {
            Target::Address { label, .. } | Target::Binary { label, .. } => label,
        }
    }
}

/// Settings shared by every scenario of one run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub duration_secs: f64,
    pub warmup_secs: f64,
}

/// One scenario's results on each target.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub scenario: &'static Scenario,
    pub loadgen_flags: Vec<String>,
    pub reports: Vec<(String, Report)>,
}

/// A broker the runner started; killed on drop with its data directory removed.
pub struct StartedBroker {
    child: Child,
    pub bootstrap: String,
    _data_dir: tempfile::TempDir,
}

impl StartedBroker {
    /// The broker's pid (for CPU accounting from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for StartedBroker {
    fn drop(&mut self) {
        // SIGTERM is the broker's clean shutdown; SIGKILL if it takes too long.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + BROKER_STOP_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sluice start` on a free port with a fresh data directory (sparse 256 MiB segments
/// so a benchmark does not preallocate gigabytes).
pub fn start_broker(path: &PathBuf) -> Result<StartedBroker> {
    start_broker_with(path, &[])
}

/// [`start_broker`] with extra `SLUICE_*` environment overrides (later ones win).
pub fn start_broker_with(path: &PathBuf, env: &[(&str, &str)]) -> Result<StartedBroker> {
    let data_dir = tempfile::tempdir().context("temp data dir")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut child = Command::new(path)
        .args(["start", "--kafka-addr", &bootstrap, "--data-dir"])
        .arg(data_dir.path())
        .env("SLUICE_LOG_PREALLOCATE", "false")
        .env("SLUICE_LOG_SEGMENT_BYTES", "268435456")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    let broker = StartedBroker {
        child,
        bootstrap,
        _data_dir: data_dir,
    };
    if ready_rx.recv_timeout(BROKER_READY_TIMEOUT).is_err() {
        bail!(
            "{} did not print `ready` within {BROKER_READY_TIMEOUT:?}",
            path.display()
        );
    }
    Ok(broker)
}

/// loadgen flags for `scenario` (bootstrap and topic excluded).
pub fn loadgen_flags(
    scenario: &Scenario,
    settings: &RunSettings,
    max_rate: Option<f64>,
) -> Result<Vec<String>> {
    let mut flags: Vec<String> = scenario.flags.iter().map(|s| s.to_string()).collect();
    flags.extend([
        "--duration".to_string(),
        settings.duration_secs.to_string(),
        "--warmup-secs".to_string(),
        settings.warmup_secs.to_string(),
    ]);
    if let Some(fraction) = scenario.rate_of_max {
        let Some(max_rate) = max_rate else {
            bail!("scenario {} needs the max-1k rate first", scenario.name);
        };
        flags.extend(["--rate".to_string(), format!("{:.0}", max_rate * fraction)]);
    }
    Ok(flags)
}

#[derive(Parser)]
struct LoadgenCli {
    #[command(flatten)]
    args: LoadgenArgs,
}

/// Runs one scenario's loadgen flags against `bootstrap` on a fresh topic.
pub async fn run_loadgen(bootstrap: &str, topic: &str, flags: &[String]) -> Result<Report> {
    let mut argv = vec![
        "loadgen".to_string(),
        "--bootstrap".to_string(),
        bootstrap.to_string(),
        "--topic".to_string(),
        topic.to_string(),
    ];
    argv.extend(flags.iter().cloned());
    let args = LoadgenCli::try_parse_from(&argv)
        .with_context(|| format!("loadgen flags {flags:?}"))?
        .args;
    loadgen::run_quietly(args, std::future::pending()).await
}

/// Runs `scenarios` against every target; `max-1k` results feed the open-loop scenarios.
pub async fn run_scenarios(
    scenarios: &[&'static Scenario],
    targets: &[Target],
    settings: &RunSettings,
) -> Result<Vec<ScenarioResult>> {
    let mut results = Vec::new();
    // Per target: the max-1k rate, measured first if an open-loop scenario needs it.
    let mut max_rates: Vec<Option<f64>> = vec![None; targets.len()];
    let needs_max = scenarios.iter().any(|s| s.rate_of_max.is_some());
    let mut order: Vec<&'static Scenario> = scenarios.to_vec();
    if needs_max && !order.iter().any(|s| s.name == "max-1k") {
        order.insert(0, scenario("max-1k").expect("max-1k is defined"));
    }
    order.sort_by_key(|s| s.rate_of_max.is_some());
    for scenario in order {
        let mut reports = Vec::new();
        let mut flags_used = Vec::new();
        for (index, target) in targets.iter().enumerate() {
            // The open-loop rate comes from the first target so every target gets the same load.
            let flags = loadgen_flags(scenario, settings, max_rates[0])?;
            let topic = format!("bench-{}-{}", scenario.name, std::process::id());
            eprintln!(
                "bench: {} on {} ({})",
                scenario.name,
                target.label(),
                flags.join(" ")
            );
            let report = match target {
                Target::Address { bootstrap, .. } => run_loadgen(bootstrap, &topic, &flags).await?,
                Target::Binary { path, .. } => {
                    let broker = start_broker(path)?;
                    run_loadgen(&broker.bootstrap, &topic, &flags).await?
                }
            };
            if scenario.name == "max-1k" {
                max_rates[index] = Some(report.produce.records_per_sec);
            }
            flags_used = flags;
            reports.push((target.label().to_string(), report));
        }
        results.push(ScenarioResult {
            scenario,
            loadgen_flags: flags_used,
            reports,
        });
    }
    Ok(results)
}

/// A markdown table: one row per scenario, columns per target, ratios against the first.
pub fn markdown_table(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let Some(first) = results.first() else {
        return out;
    };
    let labels: Vec<&str> = first.reports.iter().map(|(l, _)| l.as_str()).collect();
    let mut header = "| scenario |".to_string();
    let mut rule = "|---|".to_string();
    for label in &labels {
        let _ = write!(
            header,
            " {label} rec/s | {label} MB/s | {label} p50/p99/p99.9 ms |"
        );
        rule.push_str("---:|---:|---:|");
    }
    for label in labels.iter().skip(1) {
        let _ = write!(header, " {label}/{} rec/s |", labels[0]);
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{rule}");
    for result in results {
        let mut row = format!("| {} |", result.scenario.name);
        for (_, report) in &result.reports {
            let l = &report.produce.latency_us;
            let _ = write!(
                row,
                " {:.0} | {:.1} | {:.2} / {:.2} / {:.2} |",
                report.produce.records_per_sec,
                report.produce.mb_per_sec,
                l.p50 as f64 / 1000.0,
                l.p99 as f64 / 1000.0,
                l.p999 as f64 / 1000.0
            );
        }
        let base = result.reports[0].1.produce.records_per_sec.max(1e-9);
        for (_, report) in result.reports.iter().skip(1) {
            let _ = write!(row, " {:.2} |", report.produce.records_per_sec / base);
        }
        let _ = writeln!(out, "{row}");
    }
    out
}

/// Exact loadgen commands of each scenario, for the report.
pub fn commands(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    for result in results {
        let _ = writeln!(
            out,
            "- `{}`: {} — `loadgen --bootstrap ADDR --topic T {}`",
            result.scenario.name,
            result.scenario.description,
            result.loadgen_flags.join(" ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_parses_as_loadgen_flags() {
        let settings = RunSettings {
            duration_secs: 5.0,
            warmup_secs: 1.0,
        };
        for scenario in SCENARIOS {
            let flags = loadgen_flags(scenario, &settings, Some(1000.0)).unwrap();
            let mut argv = vec![
                "loadgen".to_string(),
                "--topic".to_string(),
                "t".to_string(),
            ];
            argv.extend(flags);
            let args = LoadgenCli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{}: {e}", scenario.name))
                .args;
            args.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
            if scenario.rate_of_max.is_some() {
                assert_eq!(args.rate, Some(500.0));
            }
        }
        let open_loop = scenario("latency-50pct").unwrap();
        assert!(loadgen_flags(open_loop, &settings, None).is_err());
    }
}
