//! `loadgen` binary: parses the flags of design.md section 9 and runs one load test.

#![forbid(unsafe_code)]

use clap::Parser;
use loadgen::LoadgenArgs;

/// Kafka-protocol load generator for any Kafka-compatible broker.
#[derive(Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = loadgen::run_blocking(cli.args)?;
    if report.interrupted {
        // 128 + SIGINT, as shells expect of an interrupted command; the report is written.
        std::process::exit(130);
    }
    Ok(())
}
