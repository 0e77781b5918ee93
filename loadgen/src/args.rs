//! Command-line parameters (design.md section 9), shared by `loadgen` and `sluice loadgen`.
//!
//! Owns: flag names, defaults, parsing of the small spec languages (`--keys`, `--acks`,
//! `--compression`) and validation of their combinations.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use crate::client::versions::TransactionVersion;
use crate::record_batch::Compression;

/// In-flight produce requests per connection (Kafka's idempotence limit).
pub const IN_FLIGHT_MAX: usize = 5;
/// Zipf key spaces are tabulated; this bounds the table (8 bytes a key).
pub const ZIPF_KEYS_MAX: u64 = 10_000_000;
/// Run length when neither --records nor --duration is given.
pub const DURATION_DEFAULT_SECS: f64 = 10.0;
/// How long a transaction stays open (`--transaction-duration-ms`), as
/// ProducerPerformance's `--transaction-duration-ms` would be set for the 100 ms.
pub const TRANSACTION_DURATION_MS_DEFAULT: u64 = 100;
/// The coordinator aborts a transaction left open longer than this (the Java producer's
/// `transaction.timeout.ms` default).
pub const TRANSACTION_TIMEOUT_MS: i32 = 60_000;

/// Parameters of one load run.
#[derive(Debug, Clone, Args, Serialize)]
pub struct LoadgenArgs {
    /// Broker(s) to bootstrap from, HOST:PORT[,HOST:PORT...].
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to produce to and consume from.
    #[arg(long)]
    pub topic: String,
    /// Partitions when loadgen creates the topic (an existing topic is used as it is).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor when loadgen creates the topic.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Topic config for a topic loadgen creates, KEY=VALUE with Kafka's names
    /// (e.g. min.insync.replicas=2); repeatable.
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_config: Vec<String>,
    /// Record value size in bytes (the first 12 carry the send timestamp for end-to-end latency).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: u32,
    /// If set, record sizes are uniform in [--record-bytes, --record-bytes-max].
    #[arg(long)]
    pub record_bytes_max: Option<u32>,
    /// Total records to produce (across all producers).
    #[arg(long, conflicts_with = "duration")]
    pub records: Option<u64>,
    /// Seconds to produce for, after the warm-up (default 10 when --records is not given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of load before measurement starts (histograms and rates ignore them).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_secs: f64,
    /// Producer connections (each its own task, connection per broker, producer id).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Acknowledgements: 0, 1 or all (-1).
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    /// Target rate in records/s across all producers (open loop); absent = as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Consumers reading the topic's partitions (assigned round robin) for end-to-end latency.
    #[arg(long, default_value_t = 0)]
    pub consumers: u32,
    /// Consumers join this consumer group (range assignment) instead of splitting the
    /// partitions among themselves; offsets are not committed.
    #[arg(long)]
    pub group: Option<String>,
    /// How long a batch may wait for more records, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Largest batch (uncompressed bytes) per partition.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_bytes: usize,
    /// Largest produce request (sum of its batches); Kafka's max.request.size default.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub request_bytes: usize,
    /// Bytes a producer may hold unacknowledged before it stops generating.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub buffer_bytes: usize,
    /// Produce requests in flight per connection (1..=5).
    #[arg(long, default_value_t = IN_FLIGHT_MAX)]
    pub max_in_flight: usize,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: CompressionArg,
    /// Idempotent producer (InitProducerId + sequences); requires --acks all.
    #[arg(long, default_value_t = false)]
    pub idempotence: bool,
    /// Transactional producers: producer `i` uses transactional id `PREFIX-i` (FindCoordinator,
    /// InitProducerId, AddPartitionsToTxn, EndTxn); implies idempotence, requires --acks all.
    #[arg(long, value_name = "PREFIX")]
    pub transactional_id: Option<String>,
    /// With --transactional-id: commit each transaction this long after it began.
    #[arg(long, default_value_t = TRANSACTION_DURATION_MS_DEFAULT)]
    pub transaction_duration_ms: u64,
    /// With --transactional-id: the transaction protocol, 1 (AddPartitionsToTxn, EndTxn v4)
    /// or 2 (KIP-890: Produce v12 adds partitions, EndTxn v5 bumps the epoch). Default: 2 when
    /// the broker finalizes the feature transaction.version at 2 or more, else 1 (as Kafka's
    /// Java producer decides).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub transaction_version: Option<u8>,
    /// Keys: none, uniform:N, zipf:N:S (N distinct keys, Zipf exponent S).
    #[arg(long, default_value = "none")]
    pub keys: KeySpec,
    /// Resends of a batch after a retriable error before it counts as failed.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a latency-percentile plot (SVG) here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seconds to wait for consumers to read everything after producing stops.
    #[arg(long, default_value_t = 30.0)]
    pub drain_secs: f64,
    /// No progress line on stderr.
    #[arg(long, default_value_t = false)]
    pub quiet: bool,
    /// Seed for keys, sizes and payloads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl LoadgenArgs {
    pub fn validate(&self) -> Result<()> {
        if self.producers == 0 && self.consumers == 0 {
            bail!("nothing to do: --producers 0 and --consumers 0");
        }
        if !(1..=IN_FLIGHT_MAX).contains(&self.max_in_flight) {
            bail!("--max-in-flight must be 1..={IN_FLIGHT_MAX}");
        }
        if self.idempotence && self.acks != Acks::All {
            bail!("--idempotence requires --acks all");
        }
        if let Some(prefix) = &self.transactional_id {
            if self.acks != Acks::All {
                bail!("--transactional-id requires --acks all");
            }
            if prefix.is_empty() {
                bail!("--transactional-id needs a non-empty prefix");
            }
            if self.transaction_duration_ms == 0 {
                bail!("--transaction-duration-ms must be positive");
            }
        } else if self.transaction_version.is_some() {
            bail!("--transaction-version needs --transactional-id");
        }
        if let Some(max) = self.record_bytes_max
            && max < self.record_bytes
        {
            bail!(
                "--record-bytes-max {max} is below --record-bytes {}",
                self.record_bytes
            );
        }
        if self.batch_bytes > self.request_bytes {
            bail!("--batch-bytes must not exceed --request-bytes");
        }
        if self.record_bytes_max.unwrap_or(self.record_bytes) as usize + 64 > self.batch_bytes {
            bail!("--batch-bytes must hold at least one record");
        }
        if let Some(rate) = self.rate
            && (rate.is_nan() || rate <= 0.0 || rate.is_infinite())
        {
            bail!("--rate must be a positive number");
        }
        if self.duration.is_some_and(|d| d.is_nan() || d <= 0.0) || self.warmup_secs < 0.0 {
            bail!("--duration must be positive and --warmup-secs not negative");
        }
        self.topic_configs()?;
        if self.records.is_some() && self.warmup_secs > 0.0 {
            // A count-bounded run may end inside the warm-up, leaving no measured window.
            bail!("--warmup-secs goes with --duration, not --records");
        }
        if self.buffer_bytes < self.batch_bytes {
            bail!("--buffer-bytes must hold at least one batch");
        }
        Ok(())
    }

    /// `--topic-config` as (name, value) pairs.
    pub fn topic_configs(&self) -> Result<Vec<(String, String)>> {
        self.topic_config
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => bail!("--topic-config wants KEY=VALUE, not {kv:?}"),
            })
            .collect()
    }

    /// Whether producers stamp producer ids and sequences (idempotence, or transactions).
    pub fn idempotent(&self) -> bool {
        self.idempotence || self.transactional_id.is_some()
    }

    /// The transaction protocol asked for (`None`: what the broker finalized).
    pub fn transaction_version(&self) -> Option<TransactionVersion> {
        self.transaction_version.map(|v| match v {
            1 => TransactionVersion::V1,
            _ => TransactionVersion::V2,
        })
    }

    /// Producer `index`'s transactional id, in a transactional run.
    pub fn transactional_id_of(&self, index: u32) -> Option<String> {
        self.transactional_id
            .as_ref()
            .map(|prefix| format!("{prefix}-{index}"))
    }

    /// How long producers generate (warm-up included), unless a record count bounds the run.
    pub fn produce_time(&self) -> Option<Duration> {
        if self.records.is_some() {
            return None;
        }
        let secs = self.duration.unwrap_or(DURATION_DEFAULT_SECS) + self.warmup_secs;
        Some(Duration::from_secs_f64(secs))
    }
}

/// Produce acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Acks> {
        Ok(match s {
            "0" => Acks::None,
            "1" => Acks::Leader,
            "all" | "-1" => Acks::All,
            other => bail!("--acks must be 0, 1 or all, not {other:?}"),
        })
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

impl From<Acks> for String {
    fn from(acks: Acks) -> String {
        acks.to_string()
    }
}

/// Compression codec flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct CompressionArg(#[serde(skip)] pub Compression);

impl FromStr for CompressionArg {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<CompressionArg> {
        Ok(CompressionArg(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => bail!("--compression must be none|gzip|snappy|lz4|zstd, not {other:?}"),
        }))
    }
}

impl fmt::Display for CompressionArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

impl From<CompressionArg> for String {
    fn from(c: CompressionArg) -> String {
        c.to_string()
    }
}

/// Key distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(into = "String")]
pub enum KeySpec {
    None,
    Uniform { keys: u64 },
    Zipf { keys: u64, exponent: f64 },
}

impl FromStr for KeySpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<KeySpec> {
        let parts: Vec<&str> = s.split(':').collect();
        let spec = match parts.as_slice() {
            ["none"] => KeySpec::None,
            ["uniform", n] => KeySpec::Uniform { keys: n.parse()? },
            ["zipf", n, e] => KeySpec::Zipf {
                keys: n.parse()?,
                exponent: e.parse()?,
            },
            _ => bail!("--keys must be none, uniform:N or zipf:N:S, not {s:?}"),
        };
        match spec {
            KeySpec::Uniform { keys: 0 } | KeySpec::Zipf { keys: 0, .. } => {
                bail!("--keys needs at least one key")
            }
            KeySpec::Zipf { keys, .. } if keys > ZIPF_KEYS_MAX => {
                bail!("zipf key space is limited to {ZIPF_KEYS_MAX} keys")
            }
            KeySpec::Zipf { exponent, .. } if exponent.is_nan() || exponent <= 0.0 => {
                bail!("zipf exponent must be positive")
            }
            _ => {}
        }
        Ok(spec)
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::None => f.write_str("none"),
            KeySpec::Uniform { keys } => write!(f, "uniform:{keys}"),
            KeySpec::Zipf { keys, exponent } => write!(f, "zipf:{keys}:{exponent}"),
        }
    }
}

impl From<KeySpec> for String {
    fn from(k: KeySpec) -> String {
        k.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    #[test]
    fn parses_the_section_9_flags() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "--bootstrap",
            "h:1",
            "--topic",
            "t",
            "--partitions",
            "16",
            "--record-bytes",
            "100",
            "--records",
            "1000",
            "--producers",
            "4",
            "--acks",
            "1",
            "--rate",
            "5000",
            "--consumers",
            "2",
            "--json",
            "r.json",
            "--keys",
            "zipf:100:1.1",
            "--compression",
            "zstd",
            "--topic-config",
            "retention.ms=60000",
            "--topic-config",
            "min.insync.replicas=1",
        ])
        .unwrap();
        let a = cli.args;
        assert_eq!(a.partitions, Some(16));
        assert_eq!(a.acks, Acks::Leader);
        assert_eq!(
            a.keys,
            KeySpec::Zipf {
                keys: 100,
                exponent: 1.1
            }
        );
        assert_eq!(a.compression.0, Compression::Zstd);
        assert!(a.validate().is_ok());
        assert_eq!(a.produce_time(), None);
        assert_eq!(
            a.topic_configs().unwrap(),
            vec![
                ("retention.ms".to_string(), "60000".to_string()),
                ("min.insync.replicas".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn transactional_runs_are_idempotent_with_one_id_per_producer() {
        let cli = Cli::try_parse_from(["loadgen", "--topic", "t", "--transactional-id", "bench"])
            .unwrap();
        let a = cli.args;
        assert!(a.validate().is_ok());
        assert!(a.idempotent() && !a.idempotence);
        assert_eq!(a.transaction_duration_ms, TRANSACTION_DURATION_MS_DEFAULT);
        assert_eq!(a.transactional_id_of(3).as_deref(), Some("bench-3"));
        assert_eq!(a.transaction_version(), None);
        let v1 = Cli::try_parse_from([
            "loadgen",
            "--topic",
            "t",
            "--transactional-id",
            "bench",
            "--transaction-version",
            "1",
        ])
        .unwrap()
        .args;
        assert_eq!(v1.transaction_version(), Some(TransactionVersion::V1));
        let plain = Cli::try_parse_from(["loadgen", "--topic", "t"])
            .unwrap()
            .args;
        assert!(!plain.idempotent());
        assert_eq!(plain.transactional_id_of(0), None);
    }

    #[test]
    fn rejects_bad_combinations() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["loadgen", "--topic", "t"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| c.args.validate())
        };
        assert!(parse(&["--records", "1", "--duration", "2"]).is_err());
        assert!(parse(&["--idempotence", "--acks", "1"]).unwrap().is_err());
        assert!(parse(&["--keys", "zipf:10"]).is_err());
        assert!(parse(&["--acks", "2"]).is_err());
        assert!(parse(&["--topic-config", "novalue"]).unwrap().is_err());
        assert!(
            parse(&["--records", "10", "--warmup-secs", "1"])
                .unwrap()
                .is_err()
        );
        assert!(parse(&["--max-in-flight", "6"]).unwrap().is_err());
        assert!(
            parse(&["--transactional-id", "tx", "--acks", "1"])
                .unwrap()
                .is_err()
        );
        assert!(parse(&["--transactional-id", ""]).unwrap().is_err());
        assert!(parse(&["--transactional-id", "tx", "--transaction-version", "3"]).is_err());
        assert!(parse(&["--transaction-version", "2"]).unwrap().is_err());
        assert!(
            parse(&["--transactional-id", "tx", "--transaction-duration-ms", "0"])
                .unwrap()
                .is_err()
        );
        assert!(parse(&[]).unwrap().is_ok());
    }
}
