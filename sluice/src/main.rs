//! `sluice`: the one command line (design.md section 9). `sluice start` runs a broker until
//! SIGTERM; `topic`, `produce`, `consume` and `group` speak the Kafka protocol to a running
//! broker (`cli/`); `tune` and `loadgen` delegate to the `tuning` and `loadgen` crates.
#![forbid(unsafe_code)]

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use broker::config::{Config, Overrides};

/// Huge allocations are mapped lazily so a hostile array length cannot abort the broker
/// (see `broker::sys::BrokerAlloc`).
#[global_allocator]
static ALLOC: broker::sys::BrokerAlloc = broker::sys::BrokerAlloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a Kafka-compatible streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker (prints a line containing `ready` once it accepts connections).
    Start(StartArgs),
    /// Create, list, describe, delete topics and change their configs.
    Topic(cli::topic::TopicArgs),
    /// Produce lines from stdin as records, one record per line.
    Produce(cli::produce::ProduceArgs),
    /// Print records of a topic.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe (members, committed offsets, lag) and delete consumer groups.
    Group(cli::group::GroupArgs),
    /// Host checks and tuners: check | apply | revert | script | iotune.
    Tune(tuning::TuneArgs),
    /// Kafka load generator (same flags as the `loadgen` binary).
    Loadgen(loadgen::LoadgenArgs),
}

#[derive(clap::Args)]
struct StartArgs {
    /// TOML config file; SLUICE_<SECTION>_<KEY> environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener HOST:PORT (default 127.0.0.1:9092; port 0 picks a free one).
    #[arg(long)]
    kafka_addr: Option<String>,
    /// Address given to clients in Metadata (default: the listener's).
    #[arg(long)]
    advertised_kafka_addr: Option<String>,
    /// This node's id (default 0).
    #[arg(long)]
    node_id: Option<i32>,
    /// Shards, one thread per core (default: one per available core).
    #[arg(long)]
    shards: Option<usize>,
    /// Internal listener for quorum and controller traffic (cluster mode).
    #[arg(long)]
    rpc_addr: Option<String>,
    /// Quorum voters ID@HOST:PORT,... (their rpc addresses); set = cluster mode.
    #[arg(long)]
    seeds: Option<String>,
    /// File holding the cluster secret rpc peers authenticate with (same on every node).
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// HTTP listener for Prometheus /metrics and /v1/status (default: none; e.g.
    /// 127.0.0.1:9644; port 0 picks a free one).
    #[arg(long)]
    http_addr: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Start(_)) {
        broker::sys::default_sigpipe();
    }
    match cli.command {
        Command::Start(args) => start(args),
        Command::Topic(args) => cli::finish(cli::topic::run(args)),
        Command::Produce(args) => cli::finish(cli::produce::run(args)),
        Command::Consume(args) => cli::finish(cli::consume::run(args)),
        Command::Group(args) => cli::finish(cli::group::run(args)),
        Command::Tune(args) => {
            // Exit codes as `sluice-tune` (tuning::cli): 0 ok, 1 differs, 2 error, ...
            let code = tuning::run_cli(args).unwrap_or_else(|e| {
                eprintln!("sluice tune: {e:#}");
                tuning::cli::EXIT_ERROR
            });
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Loadgen(args) => match loadgen::run_blocking(args) {
            // 128 + SIGINT, as shells expect of an interrupted command; the report is written.
            Ok(report) if report.interrupted => ExitCode::from(130),
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice loadgen: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn start(args: StartArgs) -> ExitCode {
    let overrides = Overrides {
        data_dir: args.data_dir,
        kafka_addr: args.kafka_addr,
        advertised_kafka_addr: args.advertised_kafka_addr,
        node_id: args.node_id,
        shards: args.shards,
        http_addr: args.http_addr,
        rpc_addr: args.rpc_addr,
        seeds: args.seeds,
        cluster_secret_file: args.cluster_secret_file,
    };
    let config = match Config::load(args.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    if config.broker.tuning_report {
        spawn_tuning_report(config.broker.data_dir.clone());
    }
    match broker::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs one line per host setting that differs from `sluice tune`'s recommendation, from a
/// side thread so a slow /proc or /sys read never delays start-up (`broker.tuning_report`
/// turns it off).
fn spawn_tuning_report(data_dir: PathBuf) {
    // The thread must inherit the blocked SIGTERM/SIGINT mask (server::run blocks them too,
    // but later): a thread without it could take the process-directed SIGTERM, whose default
    // action kills the broker instead of shutting it down cleanly.
    if let Err(e) = broker::sys::block_termination_signals() {
        tracing::debug!(target: "broker::tuning", error = %e, "tuning report skipped");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-tuning-report".into())
        .spawn(move || {
            for line in tuning::startup_report(std::path::Path::new("/"), &data_dir) {
                tracing::warn!(target: "broker::tuning", "{line}");
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(target: "broker::tuning", error = %e, "tuning report thread not started");
    }
}
