//! The admin and console commands of `sluice` (design.md section 9): `topic`, `produce`,
//! `consume`, `group`. Each speaks the Kafka protocol to a running broker through the small
//! blocking client in `client.rs`, so they work against any Kafka-compatible broker.
//!
//! Owns: argument parsing and output of those commands, one file per command group.
//! Does not own: anything of the running broker; `sluice start` is in `main.rs`.
//! Errors: `anyhow` with context; Kafka error codes are printed by name
//! (`TOPIC_ALREADY_EXISTS(36)`). Exit codes: 0 success, 1 any error.

pub mod client;
pub mod consume;
pub mod group;
pub mod membership;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod topic;

use std::process::ExitCode;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// Default `--bootstrap`: the broker's default Kafka listener.
pub const BOOTSTRAP_DEFAULT: &str = "127.0.0.1:9092";

/// `--bootstrap` shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct Bootstrap {
    /// Broker Kafka address(es) HOST:PORT[,HOST:PORT...]; the first reachable one is used.
    #[arg(long, default_value = BOOTSTRAP_DEFAULT, env = "SLUICE_BOOTSTRAP", global = true)]
    pub bootstrap: String,
}

/// Prints the error chain and maps the result to an exit code.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Parses `k=v`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("nokey").is_err());
        assert!(parse_key_value("=v").is_err());
    }
}
