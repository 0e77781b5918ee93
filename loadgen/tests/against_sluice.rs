//! loadgen against a real Sluice broker started by the test (`common::start_broker`):
//! counts, not speed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use common::{Broker, start_broker};
use loadgen::LoadgenArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn args(broker: &Broker, extra: &[&str]) -> LoadgenArgs {
    let mut argv = vec!["loadgen", "--bootstrap", &broker.addr, "--quiet"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).expect("valid flags").args
}

/// The acceptance run: five seconds of load through the CLI, JSON report checked.
#[test]
fn five_second_run_acks_and_reads_back_every_record() {
    let broker = start_broker();
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--bootstrap",
            &broker.addr,
            "--topic",
            "it-five-seconds",
            "--partitions",
            "4",
            "--record-bytes",
            "256",
            "--duration",
            "5",
            "--rate",
            "10000",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--acks",
            "all",
            "--quiet",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .expect("running loadgen");
    assert!(
        output.status.success(),
        "loadgen failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("report written"))
            .expect("report is JSON");
    let n = |path: &str| {
        report
            .pointer(path)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("{path} missing: {report}"))
    };
    let sent = n("/records_sent");
    assert!(sent > 1000, "a 5 s run at 10k/s sent only {sent}");
    assert_eq!(n("/records_acked"), sent);
    assert_eq!(n("/records_failed"), 0);
    assert_eq!(n("/errors"), 0, "{}", report["errors_by_code"]);
    assert_eq!(
        n("/consume/records"),
        sent,
        "consumers read back a different count"
    );
    assert_eq!(n("/end_to_end_latency_us/count"), sent);
    assert_eq!(n("/produce/latency_us/count"), sent);
    // The rate is the count over the measured window (no warm-up here).
    let f = |path: &str| {
        report
            .pointer(path)
            .and_then(serde_json::Value::as_f64)
            .unwrap()
    };
    let implied = f("/produce/records_per_sec") * f("/measured_secs");
    assert!(
        (implied - sent as f64).abs() < 1.0,
        "rate x window {implied} != {sent}"
    );
    assert_eq!(report["records_behind_schedule"], 0);
    let latency = |q: &str| n(&format!("/produce/latency_us/{q}"));
    assert!(latency("p50") <= latency("p99") && latency("p99") <= latency("max"));
    assert_eq!(report["parameters"]["rate"], 10000.0);
}

/// Idempotent, compressed, keyed, count-bounded: exactly N records in, N out.
#[test]
fn idempotent_compressed_keyed_run_is_exact() {
    let broker = start_broker();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (topic, compression) in [("it-zstd", "zstd"), ("it-gzip", "gzip")] {
        let args = args(
            &broker,
            &[
                "--topic",
                topic,
                "--partitions",
                "3",
                "--records",
                "20000",
                "--record-bytes",
                "100",
                "--record-bytes-max",
                "300",
                "--keys",
                "zipf:500:1.2",
                "--compression",
                compression,
                "--idempotence",
                "--consumers",
                "1",
                "--producers",
                "2",
            ],
        );
        let report = runtime
            .block_on(loadgen::run_quietly(args, std::future::pending()))
            .expect("run succeeds");
        assert_eq!(report.records_sent, 20_000, "{compression}");
        assert_eq!(report.records_acked, 20_000, "{compression}");
        assert_eq!(
            report.errors, 0,
            "{compression}: {:?}",
            report.errors_by_code
        );
        assert_eq!(report.consume.as_ref().map(|c| c.records), Some(20_000));
    }
}

/// Ctrl-C mid-run: loadgen stops, drains, writes the partial report and exits 130.
#[test]
fn sigint_writes_a_partial_report() {
    let broker = start_broker();
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("partial.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--bootstrap",
            &broker.addr,
            "--topic",
            "it-sigint",
            "--partitions",
            "2",
            "--record-bytes",
            "128",
            "--duration",
            "120",
            "--rate",
            "2000",
            "--json",
        ])
        .arg(&json_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting loadgen");
    // The first progress line means the run is under way.
    let stderr = child.stderr.take().expect("piped stderr");
    let (progress_tx, progress_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("rec/s") {
                let _ = progress_tx.send(());
            }
        }
    });
    progress_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("loadgen printed no progress line within 30 s");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let exit = exit_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("loadgen ignored SIGINT for 30 s")
        .expect("waiting for loadgen");
    assert_eq!(exit.code(), Some(130), "exit status after SIGINT");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("partial report"))
            .expect("report is JSON");
    assert_eq!(report["interrupted"], true);
    let acked = report["records_acked"].as_u64().expect("records_acked");
    let sent = report["records_sent"].as_u64().expect("records_sent");
    assert!(acked > 0 && acked < 240_000, "acked {acked}");
    // The drain normally answers everything sent; a slow disk may leave a few requests
    // unanswered when the 3 s drain ends, never more acked than sent.
    assert!(acked <= sent, "acked {acked} > sent {sent}");
}

/// Consumers in a consumer group (range assignment by the group leader) read every record
/// exactly once.
#[test]
fn group_consumers_read_every_record_once() {
    let broker = start_broker();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let args = args(
        &broker,
        &[
            "--topic",
            "it-group",
            "--partitions",
            "5",
            "--records",
            "30000",
            "--record-bytes",
            "64",
            "--consumers",
            "3",
            "--group",
            "it-group-consumers",
            "--acks",
            "1",
        ],
    );
    let report = runtime
        .block_on(loadgen::run_quietly(args, std::future::pending()))
        .expect("run succeeds");
    assert_eq!(report.records_acked, 30_000);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_code);
    assert_eq!(report.consume.as_ref().map(|c| c.records), Some(30_000));
    assert_eq!(report.end_to_end_latency_us.map(|l| l.count), Some(30_000));
}
