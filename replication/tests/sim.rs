//! The replication simulator over many seeds.
//!
//! `cargo test -p replication --test sim` runs `DEFAULT_SEEDS` seeds.
//! `SLUICE_SIM_SEEDS=N` runs N seeds instead (longer runs), from `SLUICE_SIM_FIRST_SEED`
//! (default 0); `SLUICE_SIM_SEED=S` runs one seed, and `SLUICE_SIM_TRACE=1` with it prints
//! every event.

use replication::sim::{self, SimConfig, SimReport, Violation};
use replication::{ControllerConfig, Durability};

const DEFAULT_SEEDS: u64 = 96;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

fn run_seeds(
    seeds: impl Iterator<Item = u64>,
    config_for: impl Fn(u64) -> SimConfig,
) -> (SimReport, Vec<Violation>) {
    let mut total = SimReport::default();
    let mut failures = Vec::new();
    for seed in seeds {
        match sim::run(seed, &config_for(seed)) {
            Ok(report) => total.add(&report),
            Err(violation) => failures.push(violation),
        }
    }
    (total, failures)
}

fn first_violation(
    mut seeds: impl Iterator<Item = u64>,
    config_for: impl Fn(u64) -> SimConfig,
) -> Option<Violation> {
    seeds.find_map(|seed| sim::run(seed, &config_for(seed)).err())
}

#[test]
fn invariants_hold_over_many_seeds() {
    if let Some(seed) = env_u64("SLUICE_SIM_SEED") {
        let mut config = sim::config_for_seed(seed);
        config.trace = std::env::var_os("SLUICE_SIM_TRACE").is_some();
        eprintln!("seed {seed}: {config:?}");
        match sim::run(seed, &config) {
            Ok(report) => eprintln!("seed {seed} passed: {report:?}"),
            Err(violation) => panic!("{violation}"),
        }
        return;
    }
    let count = env_u64("SLUICE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("SLUICE_SIM_FIRST_SEED").unwrap_or(0);
    let (total, failures) = run_seeds(first..first + count, sim::config_for_seed);
    eprintln!("seeds {first}..{}: {total:?}", first + count);
    if let Some(mean_ms) = total.failover_ms_total.checked_div(total.failovers) {
        let max_ms = total.failover_ms_max;
        eprintln!("leader crash to new leader: mean {mean_ms} ms, max {max_ms} ms (simulated)");
    }
    for violation in &failures {
        eprintln!("{violation}");
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed (listed above)",
        failures.len()
    );
    // The faults were exercised, not dodged.
    assert!(total.acked > 0 && total.consumed_batches > 0);
    assert!(total.elections > count && total.crashes > 0 && total.isr_changes > 0);
    assert!(
        total.truncated_batches > 0,
        "no follower ever truncated: {total:?}"
    );
    assert!(
        total.not_enough_replicas > 0,
        "min.insync.replicas never refused: {total:?}"
    );
    // Kafka's RF=1 contract was exercised: a lone ISR leader lost visible, unsynced batches
    // in a crash and was elected again (allowed, counted, the consumer reset).
    assert!(
        total.lone_leader_losses > 0,
        "no lone leader ever lost its page-cache tail: {total:?}"
    );
}

#[test]
fn a_seed_replays_identically() {
    let config = sim::config_for_seed(7);
    assert_eq!(sim::run(7, &config), sim::run(7, &config));
}

/// The checks can fail: with Kafka's page-cache durability, a power cut loses acknowledged
/// records, and the simulator must notice.
#[test]
fn detects_acked_loss_with_page_cache_durability() {
    let config_for = |seed| {
        let mut config = sim::config_for_seed(seed);
        config.replica.durability = Durability::PageCache;
        config.flush = sim::FlushModel::Interval { interval_ms: 500 };
        config
    };
    let violation = first_violation(0..24, config_for)
        .expect("page-cache durability with power cuts lost nothing in 24 seeds");
    eprintln!("page cache (this test's config), first failure: {violation}");
}

/// The checks can fail: unclean leader election elects replicas missing committed records.
#[test]
fn detects_acked_loss_with_unclean_election() {
    let config_for = |seed| {
        let mut config = sim::config_for_seed(seed);
        config.controller = ControllerConfig {
            unclean_leader_election: true,
            ..config.controller
        };
        config.faults.power_cuts = false;
        config
    };
    let violation =
        first_violation(0..24, config_for).expect("unclean election lost nothing in 24 seeds");
    eprintln!("unclean (this test's config), first failure: {violation}");
}
