//! `sluice`: the broker's command line. `sluice start` runs a broker until SIGTERM.
#![forbid(unsafe_code)]

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
    /// Internal listener for quorum traffic (not used by a single node yet).
    #[arg(long)]
    rpc_addr: Option<String>,
    /// Quorum members ID@HOST:PORT,... (not used by a single node yet).
    #[arg(long)]
    seeds: Option<String>,
    /// HTTP listener for metrics and admin (not served yet).
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
    match cli.command {
        Command::Start(args) => start(args),
    }
}

fn start(args: StartArgs) -> ExitCode {
    for (flag, value) in [
        ("--rpc-addr", &args.rpc_addr),
        ("--seeds", &args.seeds),
        ("--http-addr", &args.http_addr),
    ] {
        if value.is_some() {
            tracing::warn!(
                "{flag} is accepted but not used yet: this build runs a single node without HTTP services"
            );
        }
    }
    let overrides = Overrides {
        data_dir: args.data_dir,
        kafka_addr: args.kafka_addr,
        advertised_kafka_addr: args.advertised_kafka_addr,
        node_id: args.node_id,
        shards: args.shards,
    };
    let config = match Config::load(args.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    match broker::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}
