//! `sluice-tune`: the tuning crate's own binary (the broker's `sluice tune` runs the same
//! [`tuning::run_cli`]). Exit codes are listed in `tuning::cli`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sluice-tune",
    version,
    about = "Check and tune a Linux host for the Sluice broker"
)]
struct Cli {
    #[command(flatten)]
    args: tuning::TuneArgs,
}

fn main() {
    let cli = Cli::parse();
    let code = match tuning::run_cli(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-tune: {e:#}");
            tuning::cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
