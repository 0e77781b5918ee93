//! Apache Kafka's own perf tools as a second client, so no side-by-side number depends on
//! loadgen alone: `kafka-producer-perf-test` (org.apache.kafka.tools.ProducerPerformance) and
//! `kafka-consumer-perf-test` (org.apache.kafka.tools.ConsumerPerformance), run from the
//! reference stack's jars with the JVM settings of Kafka's scripts (`-Xmx512M`, G1).
//!
//! Owns: their command lines and parsing their summary lines.
//! Does not own: the JVM or the jars (refstack), the topics (the caller creates them).

use std::process::Command;

use anyhow::{Context, Result, bail};
use refstack::JavaStack;

/// Heap of the perf tools, as `kafka-producer-perf-test.sh` sets it (`KAFKA_HEAP_OPTS`).
pub const PERF_TOOL_HEAP: &str = "-Xmx512M";

/// Producer settings given to `kafka-producer-perf-test`, matching loadgen's defaults (linger
/// 5 ms, 1 MB batches, 64 MiB of buffer), so both clients send the same shape.
pub const PRODUCER_PROPS: &[&str] = &[
    "linger.ms=5",
    "batch.size=1000000",
    "buffer.memory=67108864",
];

/// What `kafka-producer-perf-test` printed in its summary line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProducerPerf {
    pub records: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
}

/// What `kafka-consumer-perf-test` printed (`fetch.*` columns: after the group join).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsumerPerf {
    pub records: u64,
    pub mb: f64,
    pub fetch_mb_per_sec: f64,
    pub fetch_records_per_sec: f64,
}

/// The parameters of one producer perf run.
#[derive(Debug, Clone)]
pub struct ProducerPerfRun<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    pub records: u64,
    pub record_bytes: u32,
    /// `1` or `all`.
    pub acks: &'a str,
    pub producer: PerfProducer<'a>,
}

/// The producer `kafka-producer-perf-test` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfProducer<'a> {
    /// The Java producer's defaults (`enable.idempotence` true unless acks or retries rule
    /// it out).
    Default,
    /// `enable.idempotence=true`, said explicitly.
    Idempotent,
    /// `--transactional-id ID --transaction-duration-ms N`: ProducerPerformance calls
    /// `initTransactions()` before its clock starts, then commits the open transaction at the
    /// first send `N` ms after it began (`commitTransaction()` blocks the sending thread).
    Transactional {
        transactional_id: &'a str,
        duration_ms: u64,
    },
}

/// `java ... ProducerPerformance`, as `kafka-producer-perf-test.sh` runs it.
pub fn producer_perf_command(stack: &JavaStack, run: &ProducerPerfRun) -> Command {
    let mut cmd = tool_jvm(stack);
    cmd.arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--bootstrap-server", run.bootstrap, "--topic", run.topic])
        .args(["--num-records", &run.records.to_string()])
        .args(["--record-size", &run.record_bytes.to_string()])
        .args(["--throughput", "-1", "--command-property"])
        .arg(format!("acks={}", run.acks))
        .args(PRODUCER_PROPS);
    match run.producer {
        PerfProducer::Default => {}
        PerfProducer::Idempotent => {
            cmd.arg("enable.idempotence=true");
        }
        PerfProducer::Transactional {
            transactional_id,
            duration_ms,
        } => {
            cmd.arg("enable.idempotence=true")
                .args(["--transactional-id", transactional_id])
                .args(["--transaction-duration-ms", &duration_ms.to_string()]);
        }
    }
    cmd
}

/// Runs `kafka-producer-perf-test` and checks it sent every record.
pub fn producer_perf(stack: &JavaStack, run: &ProducerPerfRun) -> Result<ProducerPerf> {
    let stdout = run_tool(
        producer_perf_command(stack, run),
        "kafka-producer-perf-test",
    )?;
    let perf = parse_producer_perf(&stdout)?;
    if perf.records != run.records {
        bail!(
            "kafka-producer-perf-test sent {} of {} records:\n{stdout}",
            perf.records,
            run.records
        );
    }
    Ok(perf)
}

/// Runs `kafka-consumer-perf-test` from the start of `topic` until it has read `records`, and
/// checks it read exactly that many.
pub fn consumer_perf(
    stack: &JavaStack,
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<ConsumerPerf> {
    let mut cmd = tool_jvm(stack);
    cmd.arg("org.apache.kafka.tools.ConsumerPerformance")
        .args(["--bootstrap-server", bootstrap, "--topic", topic])
        .args(["--num-records", &records.to_string()])
        .args(["--timeout", "60000", "--hide-header"]);
    let stdout = run_tool(cmd, "kafka-consumer-perf-test")?;
    let perf = parse_consumer_perf(&stdout)?;
    if perf.records != records {
        bail!(
            "kafka-consumer-perf-test read {} of {records} records:\n{stdout}",
            perf.records
        );
    }
    Ok(perf)
}

/// Parses the summary line: `N records sent, R records/sec (M MB/sec), A ms avg latency,
/// X ms max latency, P ms 50th, P ms 95th, P ms 99th, P ms 99.9th.`
pub fn parse_producer_perf(stdout: &str) -> Result<ProducerPerf> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("records sent,") && l.contains("99.9th"))
        .with_context(|| {
            format!("no summary line in kafka-producer-perf-test output:\n{stdout}")
        })?;
    let field = |suffix: &str| -> Result<f64> {
        line.split(',')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(suffix))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .with_context(|| format!("no `{suffix}` in {line:?}"))
    };
    let records_part = line.split(',').nth(1).unwrap_or_default();
    let mb_per_sec = records_part
        .split_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no MB/sec in {line:?}"))?;
    let records_per_sec = records_part
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no records/sec in {line:?}"))?;
    Ok(ProducerPerf {
        records: field(" records sent")? as u64,
        records_per_sec,
        mb_per_sec,
        latency_ms_p50: field(" ms 50th")?,
        latency_ms_p99: field(" ms 99th")?,
        latency_ms_p999: field(" ms 99.9th.")?,
    })
}

/// Parses the CSV line of `--hide-header`: start.time, end.time, data.consumed.in.MB, MB.sec,
/// data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec,
/// fetch.nMsg.sec.
pub fn parse_consumer_perf(stdout: &str) -> Result<ConsumerPerf> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.split(',').count() == 10)
        .with_context(|| format!("no CSV line in kafka-consumer-perf-test output:\n{stdout}"))?;
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let number = |i: usize| -> Result<f64> {
        fields[i]
            .parse::<f64>()
            .with_context(|| format!("field {i} of {line:?}"))
    };
    Ok(ConsumerPerf {
        records: number(4)? as u64,
        mb: number(2)?,
        fetch_mb_per_sec: number(8)?,
        fetch_records_per_sec: number(9)?,
    })
}

fn tool_jvm(stack: &JavaStack) -> Command {
    let mut cmd = stack.jvm();
    cmd.arg(PERF_TOOL_HEAP)
        .args(refstack::KAFKA_JVM_PERFORMANCE_OPTS);
    cmd
}

fn run_tool(mut cmd: Command, name: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {name}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{name} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_producer_summary_line() {
        let out = "500 records sent, 100.0 records/sec (0.10 MB/sec), 3.0 ms avg latency, 9.0 ms max latency.\n\
                   100000 records sent, 52910.052910 records/sec (51.67 MB/sec), 312.45 ms avg latency, 801.00 ms max latency, 298 ms 50th, 700 ms 95th, 780 ms 99th, 799 ms 99.9th.\n";
        let perf = parse_producer_perf(out).unwrap();
        assert_eq!(perf.records, 100_000);
        assert!((perf.records_per_sec - 52910.05291).abs() < 1e-3);
        assert_eq!(perf.mb_per_sec, 51.67);
        assert_eq!(
            (
                perf.latency_ms_p50,
                perf.latency_ms_p99,
                perf.latency_ms_p999
            ),
            (298.0, 780.0, 799.0)
        );
        assert!(parse_producer_perf("nothing").is_err());
    }

    #[test]
    fn parses_the_consumer_csv_line() {
        let out = "2026-12-07 10:00:00:000, 2026-12-07 10:00:03:000, 97.6563, 32.5521, 100000, 33333.3333, 312, 2688, 36.3305, 37202.3810\n";
        let perf = parse_consumer_perf(out).unwrap();
        assert_eq!(perf.records, 100_000);
        assert_eq!(perf.fetch_mb_per_sec, 36.3305);
        assert!(parse_consumer_perf("a, b").is_err());
    }
}
