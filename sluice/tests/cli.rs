//! The `sluice` CLI against a real broker: topic admin, produce/consume round trip, group
//! describe after a commit, the `/metrics` scrape, and `sluice tune check` on a fake root.
//! Every command runs the real binary as a child process; nothing sleeps to synchronise.

mod common;

use common::metrics::{get, http_addr, scrape};

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Broker;

/// Longest any CLI command may take (the CLI's own socket timeouts are shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn sluice(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "sluice {args:?} did not finish in {COMMAND_TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10)); // polling a child, not synchronising
    }
}

/// Runs `sluice ARGS --bootstrap ADDR` and requires success; returns stdout.
fn ok(broker: &Broker, args: &[&str], stdin: Option<&str>) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--bootstrap", broker.addr()]);
    let out = sluice(&all, stdin);
    assert!(
        out.status.success(),
        "sluice {all:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `sluice ARGS --bootstrap ADDR` and requires failure; returns stderr.
fn fails(broker: &Broker, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--bootstrap", broker.addr()]);
    let out = sluice(&all, None);
    assert_eq!(out.status.code(), Some(1), "sluice {all:?} should fail");
    String::from_utf8(out.stderr).expect("utf-8 output")
}

#[test]
fn topic_create_list_describe_alter_delete() {
    let broker = Broker::start();
    let out = ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=123456",
        ],
        None,
    );
    assert!(out.contains("created topic orders"), "{out}");
    let err = fails(&broker, &["topic", "create", "orders"]);
    assert!(err.contains("TOPIC_ALREADY_EXISTS(36)"), "{err}");

    let list = ok(&broker, &["topic", "list"], None);
    assert!(list.lines().any(|l| l == "orders"), "{list}");
    // A bootstrap list: an unreachable first address is skipped.
    let listed = sluice(
        &[
            "topic",
            "list",
            "--bootstrap",
            &format!("127.0.0.1:1,{}", broker.addr()),
        ],
        None,
    );
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), list);

    let describe = ok(&broker, &["topic", "describe", "orders"], None);
    assert!(describe.contains("partitions: 3"), "{describe}");
    for p in 0..3 {
        let row = describe
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&p.to_string()))
            .unwrap_or_else(|| panic!("no row for partition {p}:\n{describe}"));
        // PARTITION LEADER EPOCH REPLICAS ISR: leader, replicas and ISR are node 0.
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!((cols[1], cols[3], cols[4]), ("0", "0", "0"), "{row}");
    }
    assert!(describe.contains("retention.ms=123456"), "{describe}");

    ok(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "segment.bytes=1048576",
            "--delete",
            "retention.ms",
        ],
        None,
    );
    let describe = ok(&broker, &["topic", "describe", "orders"], None);
    assert!(describe.contains("segment.bytes=1048576"), "{describe}");
    assert!(!describe.contains("retention.ms=123456"), "{describe}");

    // No --http-addr: no HTTP listener (the default).
    assert!(!broker.log().contains("sluice http:"), "{}", broker.log());
    ok(&broker, &["topic", "delete", "orders"], None);
    let list = ok(&broker, &["topic", "list"], None);
    assert!(!list.lines().any(|l| l == "orders"), "{list}");
    let err = fails(&broker, &["topic", "describe", "orders"]);
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION(3)"), "{err}");
    broker.stop();
}

/// A broker whose groups form at once (no `group.initial.rebalance.delay.ms`), so consumer
/// joins do not wait 3 s each. Keep the returned dir alive as long as the broker.
fn broker_with_quick_groups() -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[group]\ninitial_rebalance_delay_ms = 0\n").expect("config");
    let broker = Broker::start_with(&["--config", config.to_str().expect("utf-8")]);
    (broker, dir)
}

#[test]
fn produce_consume_and_group_describe() {
    let (broker, _config) = broker_with_quick_groups();
    ok(
        &broker,
        &["topic", "create", "lines", "--partitions", "1"],
        None,
    );
    let input: String = (0..100).map(|i| format!("line {i} é\n")).collect();
    ok(&broker, &["produce", "lines"], Some(&input));
    let out = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--group",
            "readers",
            "--from-beginning",
            "--max-records",
            "100",
            "--timeout-ms",
            "20000",
        ],
        None,
    );
    assert_eq!(out, input);

    // The commit is visible: committed 100, log end 100, lag 0; then lag grows by what we add.
    let row = |describe: &str| -> Vec<String> {
        describe
            .lines()
            .find(|l| l.starts_with("lines "))
            .unwrap_or_else(|| panic!("no row for topic lines:\n{describe}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let describe = ok(&broker, &["group", "describe", "readers"], None);
    assert_eq!(
        row(&describe),
        ["lines", "0", "100", "100", "0"],
        "{describe}"
    );
    ok(
        &broker,
        &["produce", "lines", "--key-separator", ":"],
        Some("k1:v1\nk2:v2\n"),
    );
    let describe = ok(&broker, &["group", "describe", "readers"], None);
    assert_eq!(
        row(&describe),
        ["lines", "0", "100", "102", "2"],
        "{describe}"
    );
    let list = ok(&broker, &["group", "list"], None);
    assert!(list.lines().any(|l| l.starts_with("readers\t")), "{list}");

    // The group resumes where it committed; keys were split at the separator.
    let out = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--group",
            "readers",
            "--max-records",
            "2",
            "--print-keys",
            "--timeout-ms",
            "20000",
        ],
        None,
    );
    assert_eq!(out, "k1\tv1\nk2\tv2\n");

    // Several partitions: keyed lines spread over them, all read back (order per partition).
    ok(
        &broker,
        &["topic", "create", "spread", "--partitions", "4"],
        None,
    );
    let keyed: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    ok(
        &broker,
        &["produce", "spread", "--key-separator", ":"],
        Some(&keyed),
    );
    let out = ok(
        &broker,
        &[
            "consume",
            "spread",
            "--from-beginning",
            "--max-records",
            "40",
            "--print-keys",
            "--timeout-ms",
            "20000",
        ],
        None,
    );
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("k{i}\tv{i}")).collect();
    want.sort();
    assert_eq!(got, want);

    ok(&broker, &["group", "delete", "readers"], None);
    let list = ok(&broker, &["group", "list"], None);
    assert!(!list.lines().any(|l| l.starts_with("readers\t")), "{list}");
    broker.stop();
}

/// While `sluice consume --group` runs it is a member: describe lists it with its assignment.
#[test]
fn group_describe_shows_a_running_consumer_and_its_partitions() {
    let (broker, _config) = broker_with_quick_groups();
    ok(
        &broker,
        &["topic", "create", "live", "--partitions", "2"],
        None,
    );
    let mut consumer = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "consume",
            "live",
            "--group",
            "watchers",
            "--timeout-ms",
            "60000",
        ])
        .args(["--bootstrap", broker.addr()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn consumer");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let describe = loop {
        let out = sluice(
            &[
                "group",
                "describe",
                "watchers",
                "--bootstrap",
                broker.addr(),
            ],
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.contains("state: Stable") && text.contains("members: 1") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "consumer never became a stable member:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50)); // polling with a deadline
    };
    let _ = consumer.kill();
    let _ = consumer.wait();
    assert!(describe.contains("protocol: consumer"), "{describe}");
    assert!(describe.contains("assignor: range"), "{describe}");
    let member = describe
        .lines()
        .find(|l| l.contains("sluice-cli"))
        .unwrap_or_else(|| panic!("no member row:\n{describe}"));
    assert!(member.ends_with("live:0,1"), "{member}");
    broker.stop();
}

#[test]
fn metrics_scrape_parses_and_counters_grow() {
    let broker = Broker::start_with(&["--http-addr", "127.0.0.1:0"]);
    let http = http_addr(&broker);
    ok(
        &broker,
        &["topic", "create", "m", "--partitions", "1"],
        None,
    );
    let before = scrape(&http);
    let input: String = (0..50).map(|i| format!("{i}\n")).collect();
    ok(&broker, &["produce", "m"], Some(&input));
    let after = scrape(&http);
    let produce = |m: &BTreeMap<String, f64>| sum(m, "sluice_requests_total", "api=\"Produce\"");
    assert!(
        produce(&after) > produce(&before),
        "Produce requests did not grow"
    );
    for name in [
        "sluice_log_appended_bytes_total",
        "sluice_log_appended_batches_total",
        "sluice_request_bytes_total",
        "sluice_response_bytes_total",
    ] {
        assert!(
            sum(&after, name, "") > sum(&before, name, ""),
            "{name} did not grow: {} -> {}",
            sum(&before, name, ""),
            sum(&after, name, "")
        );
    }
    // Deleting the topic closes its log; the engine counters keep what it had appended.
    ok(&broker, &["topic", "delete", "m"], None);
    let deleted = scrape(&http);
    for name in [
        "sluice_log_appended_bytes_total",
        "sluice_log_appended_batches_total",
    ] {
        assert!(
            sum(&deleted, name, "") >= sum(&after, name, ""),
            "{name} went down after a topic delete: {} -> {}",
            sum(&after, name, ""),
            sum(&deleted, name, "")
        );
    }
    ok(
        &broker,
        &["topic", "create", "m", "--partitions", "1"],
        None,
    );
    let (head, status) = get(&http, "/v1/status");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["node_id"], 0);
    assert_eq!(status["topics"], 1, "{status}");
    let (head, _) = get(&http, "/no-such-page");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    broker.stop();
}

/// SIGTERM right after `ready`, while the start-up tuning report may still be running on its
/// side thread: that thread must not take the signal (exit 0, not killed by SIGTERM).
#[test]
fn sigterm_during_the_tuning_report_still_exits_0() {
    for _ in 0..6 {
        Broker::start_with(&["--http-addr", "127.0.0.1:0"]).stop();
    }
}

#[test]
fn start_rejects_a_bad_http_addr_with_exit_2() {
    let out = sluice(&["start", "--http-addr", "not-an-address"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http.addr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tune_check_runs_on_a_fake_root() {
    let root = tempfile::tempdir().expect("temp dir");
    let out = sluice(
        &[
            "tune",
            "check",
            "--root",
            root.path().to_str().expect("utf-8"),
        ],
        None,
    );
    let code = out.status.code().expect("exit code");
    assert_ne!(code, 2, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("settings:"));
}

/// Sum of the samples of metric `name` whose labels contain `label` ("" = all).
fn sum(samples: &BTreeMap<String, f64>, name: &str, label: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(name) && series.contains(label))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn loadgen_subcommand_delegates_to_the_loadgen_crate() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let json_arg = json.to_str().expect("utf-8");
    ok(
        &broker,
        &[
            "loadgen",
            "--topic",
            "lg",
            "--records",
            "500",
            "--record-bytes",
            "64",
            "--json",
            json_arg,
        ],
        None,
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report written")).expect("JSON");
    assert_eq!(report["records_acked"], 500, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    broker.stop();
}
