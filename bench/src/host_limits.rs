//! The host's raw limits, measured in the same run as the brokers so every broker number can be
//! read against them: loopback TCP bandwidth (iperf3, one stream) and the data directory's disk
//! (fio: sequential 1 MiB writes, and 4 KiB appends each followed by fdatasync, the acks=all
//! pattern of a durable broker).
//!
//! Owns: running iperf3 and fio for a few seconds each and reading their JSON.
//! Does not own: installing them (`apt-get install iperf3 fio`); a missing tool is an error
//! with that command, never a silently empty row.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long the iperf3 server may take to listen.
const IPERF_SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct HostLimits {
    pub loopback_gbit_per_sec: f64,
    pub seq_write_mb_per_sec: f64,
    pub fdatasync_appends_per_sec: f64,
    pub fdatasync_us_p50: f64,
    pub fdatasync_us_p99: f64,
    pub seconds_each: u32,
}

/// Runs iperf3 on loopback and fio in `dir` (the bench's data directory), `seconds_each` each.
pub fn measure(dir: &Path, seconds_each: u32) -> Result<HostLimits> {
    let loopback_gbit_per_sec = iperf3_loopback(seconds_each)?;
    let file = dir.join("host_limits.fio");
    let runtime = seconds_each.to_string();
    let seq = fio(&[
        "--name=seqwrite",
        "--rw=write",
        "--bs=1m",
        "--size=4g",
        "--ioengine=psync",
        "--end_fsync=1",
        "--time_based=0",
        &format!("--runtime={runtime}"),
        &format!("--filename={}", file.display()),
    ]);
    let _ = std::fs::remove_file(&file);
    let seq = seq?;
    let sync = fio(&[
        "--name=fdatasync",
        "--rw=write",
        "--bs=4k",
        "--size=256m",
        "--ioengine=psync",
        "--fdatasync=1",
        "--time_based=0",
        &format!("--runtime={runtime}"),
        &format!("--filename={}", file.display()),
    ]);
    let _ = std::fs::remove_file(&file);
    let sync = sync?;
    let write = &sync["jobs"][0]["write"];
    let percentile = |q: &str| {
        sync["jobs"][0]["sync"]["lat_ns"]["percentile"][q]
            .as_f64()
            .map_or(f64::NAN, |ns| ns / 1000.0)
    };
    Ok(HostLimits {
        loopback_gbit_per_sec,
        seq_write_mb_per_sec: number(&seq["jobs"][0]["write"]["bw_bytes"])? / 1e6,
        fdatasync_appends_per_sec: number(&write["iops"])?,
        fdatasync_us_p50: percentile("50.000000"),
        fdatasync_us_p99: percentile("99.000000"),
        seconds_each,
    })
}

impl HostLimits {
    /// A markdown table.
    pub fn markdown(&self, dir: &Path) -> String {
        let s = self.seconds_each;
        format!(
            "| host limit (same run) | value |\n|---|---:|\n\
             | loopback TCP, 1 stream (`iperf3 -c 127.0.0.1 -t {s}`) | {:.1} Gbit/s ({:.0} MB/s) |\n\
             | sequential 1 MiB writes + final fsync (fio, {s} s, {}) | {:.0} MB/s |\n\
             | 4 KiB appends, fdatasync after each (fio, {s} s) | {:.0} appends/s, fdatasync p50 {:.0} µs, p99 {:.0} µs |\n",
            self.loopback_gbit_per_sec,
            self.loopback_gbit_per_sec * 1e9 / 8.0 / 1e6,
            dir.display(),
            self.seq_write_mb_per_sec,
            self.fdatasync_appends_per_sec,
            self.fdatasync_us_p50,
            self.fdatasync_us_p99,
        )
    }
}

/// An iperf3 server that is stopped when dropped.
struct IperfServer(Child);

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf3_loopback(seconds: u32) -> Result<f64> {
    let port = refstack::free_port()?.to_string();
    let server = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 (apt-get install iperf3)")?;
    let _server = IperfServer(server);
    // No bare-connect probe: iperf3's server takes any connection for a test and then turns
    // the real client away as busy. The client is retried until the server listens.
    let deadline = Instant::now() + IPERF_SERVER_READY_TIMEOUT;
    let json = loop {
        let out = Command::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &port,
                "-J",
                "-t",
                &seconds.to_string(),
            ])
            .output()
            .context("running iperf3 -c")?;
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() && json["error"].is_null() && !json.is_null() {
            break json;
        }
        if Instant::now() > deadline {
            bail!(
                "iperf3 -c failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(number(&json["end"]["sum_received"]["bits_per_second"])? / 1e9)
}

fn fio(args: &[&str]) -> Result<Value> {
    let out = Command::new("fio")
        .args(args)
        .arg("--output-format=json")
        .output()
        .context("running fio (apt-get install fio)")?;
    if !out.status.success() {
        bail!(
            "fio {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("fio JSON")
}

fn number(value: &Value) -> Result<f64> {
    value
        .as_f64()
        .with_context(|| format!("expected a number, found {value}"))
}
