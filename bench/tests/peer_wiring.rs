//! The side-by-side wiring, end to end and small: a real Apache Kafka (refstack) and Sluice
//! (default mode: acks=all after fdatasync), one round of a loadgen scenario and a
//! kafka-producer-perf-test scenario, and the ratio rows they produce. (The page-cache mode and
//! the consumer perf tool only add time here: the manual run covers them.) Proves `bench peer` works in CI; the full run is manual
//! (docs/benchmarks.md).
//!
//! The Sluice binary belongs to another package, so `CARGO_BIN_EXE_sluice` is not available:
//! `refstack::sluice_debug_binary` finds (or builds) it.

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
        sluice: refstack::sluice_debug_binary(),
        brokers: vec![BrokerKind::Kafka, BrokerKind::SluiceDurable],
        interleave: false,
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

/// Issue 15's pairs, small: idempotent and transactional produce with loadgen and with
/// `kafka-producer-perf-test --transactional-id --transaction-duration-ms`, on Kafka and
/// Sluice, one round; the overhead table has a ratio per broker and loadgen's commit rate.
#[test]
fn transactional_and_idempotent_pairs_give_overhead_rows() {
    let stack = JavaStack::locate().expect("the reference stack's jars");
    let scenarios = ["1k-idem", "1k-txn100", "1k-idem-perf", "1k-txn100-perf"]
        .map(|name| peer::peer_scenario(name).expect("scenario exists"));
    let settings = PeerSettings {
        rounds: 1,
        duration_secs: 1.0,
        warmup_secs: 0.0,
        // 20 000 records for the perf tool: a few transactions of 100 ms.
        records_scale: 0.02,
        kafka_heap_mb: 512,
        sluice: refstack::sluice_debug_binary(),
        brokers: vec![BrokerKind::Kafka, BrokerKind::SluiceDurable],
        interleave: true,
    };
    let report = peer::run(&stack, &scenarios, &settings).expect("peer run");
    let txn = &report.results[1].measurements[0];
    for (kind, m) in settings.brokers.iter().zip(txn) {
        assert!(
            m.transactions_per_sec > 0.0 && m.commit_ms_p99 > 0.0,
            "loadgen's transactions on {}: {m:?}",
            kind.label()
        );
    }
    let perf = &report.results[3].measurements[0];
    assert!(perf.iter().all(|m| m.bytes == 20_000 * 1024), "{perf:?}");
    let table = report.transactions_table();
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row:\n{table}"))
            .to_string()
    };
    let loadgen_row = row("1k-txn100 / 1k-idem");
    assert_eq!(loadgen_row.matches("commits/s").count(), 2, "{table}");
    assert!(
        row("1k-txn100-perf / 1k-idem-perf").contains("| kafka-producer-perf-test | 100 ms |"),
        "{table}"
    );
    // One ratio per broker, each a finite positive number.
    for line in [&loadgen_row, &row("1k-txn100-perf / 1k-idem-perf")] {
        let ratios: Vec<f64> = line
            .split("**")
            .skip(1)
            .step_by(2)
            .map(|r| r.parse().expect("a ratio"))
            .collect();
        assert_eq!(ratios.len(), 2, "{line}");
        assert!(ratios.iter().all(|r| r.is_finite() && *r > 0.0), "{line}");
    }
}
