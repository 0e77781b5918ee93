//! The side-by-side wiring, end to end and small: a real Apache Kafka (refstack) and Sluice
//! (default mode: acks=all after fdatasync), one round of a loadgen scenario and a
//! kafka-producer-perf-test scenario, and the ratio rows they produce. (The page-cache mode and
//! the consumer perf tool only add time here: the manual run covers them.) Proves `bench peer` works in CI; the full run is manual
//! (docs/benchmarks.md).
//!
//! The Sluice binary belongs to another package, so `CARGO_BIN_EXE_sluice` is not available:
//! as loadgen's tests do, this reuses `target/debug/sluice` when it is newer than the sources
//! (as it is inside `cargo test --workspace`), otherwise builds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use bench::peer::{self, BrokerKind, PeerSettings};
use refstack::JavaStack;

#[test]
fn kafka_and_sluice_give_ratio_rows() {
    let stack = JavaStack::locate().expect("the reference stack's jars");
    let scenarios = ["1k-acksall", "1k-acks1-perf"]
        .map(|name| peer::peer_scenario(name).expect("scenario exists"));
    let settings = PeerSettings {
        rounds: 1,
        duration_secs: 1.0,
        warmup_secs: 0.0,
        // 20 000 records for the perf tool.
        records_scale: 0.02,
        kafka_heap_mb: 512,
        sluice: sluice_binary(),
        brokers: vec![BrokerKind::Kafka, BrokerKind::SluiceDurable],
    };
    let report = peer::run(&stack, &scenarios, &settings).expect("peer run");

    assert_eq!(report.results.len(), scenarios.len());
    for result in &report.results {
        let round = &result.measurements[0];
        assert_eq!(
            round.len(),
            2,
            "{}: one measurement per broker",
            result.scenario.name
        );
        for (kind, m) in settings.brokers.iter().zip(round) {
            let what = format!("{} on {}", result.scenario.name, kind.label());
            assert!(
                m.mb_per_sec > 0.0 && m.mb_per_sec.is_finite(),
                "{what}: {m:?}"
            );
            assert!(m.bytes > 0, "{what}: {m:?}");
            assert!(m.cpu_secs >= 0.0, "{what}: {m:?}");
        }
        // Every broker works to take a write or serve a fetch: its CPU window is not empty.
        assert!(round[0].cpu_secs > 0.0, "Kafka used no CPU: {:?}", round[0]);
        let (ratio, _, _) = result.ratio(1, 0);
        assert!(
            ratio.is_finite() && ratio > 0.0,
            "{}: ratio {ratio}",
            result.scenario.name
        );
    }
    let perf = &report.results[1].measurements[0];
    assert!(perf.iter().all(|m| m.bytes == 20_000 * 1024), "{perf:?}");

    let table = report.markdown_table();
    assert!(table.contains("| sluice/kafka (min-max) |"), "{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row:\n{table}"))
            .to_string()
    };
    assert!(
        row("1k-acksall").contains("kafka: after the ISR"),
        "{table}"
    );
    assert!(
        row("1k-acks1-perf").contains("| kafka-producer-perf-test |"),
        "{table}"
    );
    assert!(
        row("1k-acksall").contains("sluice: after fdatasync"),
        "{table}"
    );
}

fn sluice_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench lives in the workspace")
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"));
    let binary = target.join("debug").join("sluice");
    // `cargo test --workspace` builds the binary for the sluice package's integration tests
    // before any test runs; building it again with `-p sluice` would resolve features for that
    // package alone and recompile shared dependencies, so reuse it when it is fresh.
    if binary_is_fresh(&binary, &workspace) {
        return binary;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(&cargo)
        .args(["build", "-p", "sluice", "--bin", "sluice"])
        .current_dir(&workspace)
        .status()
        .unwrap_or_else(|e| panic!("running `{cargo} build -p sluice --bin sluice`: {e}"));
    assert!(status.success(), "`cargo build -p sluice` failed: {status}");
    binary
}

/// True when `binary` is newer than Cargo.lock and every source of the crates it is built from.
fn binary_is_fresh(binary: &Path, workspace: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let crates = [
        "sluice",
        "broker",
        "engine",
        "kafka-wire",
        "replication",
        "tuning",
        "loadgen",
    ];
    let mut pending: Vec<PathBuf> = crates
        .iter()
        .flat_map(|krate| {
            [
                workspace.join(krate).join("src"),
                workspace.join(krate).join("Cargo.toml"),
            ]
        })
        .chain([workspace.join("Cargo.lock"), workspace.join("Cargo.toml")])
        .collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                return false;
            };
            pending.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        } else if path.exists() && modified(&path).is_none_or(|m| m > built) {
            return false;
        }
    }
    true
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
