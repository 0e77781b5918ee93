//! Side by side with Apache Kafka: one run starts a real single-node Apache Kafka (KRaft, from
//! the reference stack's jars) and Sluice in both flush modes on this machine, runs the same
//! workloads against each in interleaved rounds (round r visits the brokers in an order rotated
//! by r: K S P, S P K, ...), and reports medians and Sluice/Kafka ratios with each broker's CPU
//! seconds per GB (utime + stime of its process from /proc/<pid>/stat, before and after each
//! measurement).
//!
//! Workloads are driven by loadgen and by Kafka's own perf tools (`java_tools`), so no row
//! depends on our client alone. Each measurement gets a fresh topic, created before the CPU
//! window opens and deleted after it closes (the disk does not fill up over a run).
//!
//! Owns: the peer scenario table, the brokers' settings for a peer run, the rounds, CPU
//! accounting and the side-by-side table. Does not own: starting Kafka (refstack), starting
//! Sluice (`crate::start_broker_with`), measuring load (loadgen, the perf tools).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use kafka_protocol::messages::DeleteTopicsRequest;
use loadgen::client::cluster::{Cluster, topic_name};
use refstack::{ApacheKafka, JavaStack, KafkaOptions};

use crate::java_tools::{self, PerfProducer, ProducerPerfRun};
use crate::{StartedBroker, run_loadgen, start_broker_with};

/// loadgen's resends of a batch after a retriable error (100 ms apart) in a peer run.
pub const PRODUCE_RETRIES: u32 = 100;

/// Apache Kafka's heap in a peer run: Kafka's scripts default to `-Xmx1G -Xms1G`.
pub const KAFKA_HEAP_MB_DEFAULT: u32 = 1024;

/// server.properties lines a peer run adds to refstack's single-node defaults. Everything
/// else is Kafka's default, including no fsync per write (`log.flush.interval.messages` and
/// `log.flush.interval.ms` unset: the OS writes the page cache back).
pub const KAFKA_PEER_PROPS: &[(&str, &str)] = &[
    // A deleted topic's files go after 1 s instead of 60 s, so a run's disk use stays bounded.
    ("file.delete.delay.ms", "1000"),
];

/// Environment every Sluice of a peer run gets (besides `start_broker`'s sparse 256 MiB
/// segments): the clients share the two cores, so shards are not pinned (docs/operations.md).
pub const SLUICE_PEER_ENV: &[(&str, &str)] = &[("SLUICE_BROKER_PIN_THREADS", "false")];

/// A broker of a peer run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Apache Kafka, its defaults: acks=all answered once the ISR (here the leader alone) has
    /// the write in its page cache; no fsync.
    Kafka,
    /// Sluice's default: acks=all answered after fdatasync (`log.acks_all_durable = true`).
    SluiceDurable,
    /// Sluice in Kafka's page-cache mode (`SLUICE_LOG_ACKS_ALL_DURABLE=false`).
    SluicePageCache,
}

impl BrokerKind {
    pub const ALL: [BrokerKind; 3] = [
        BrokerKind::Kafka,
        BrokerKind::SluiceDurable,
        BrokerKind::SluicePageCache,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BrokerKind::Kafka => "kafka",
            BrokerKind::SluiceDurable => "sluice",
            BrokerKind::SluicePageCache => "sluice-pc",
        }
    }

    /// What an acks=all answer means on this broker.
    pub fn acks_all_durability(self) -> &'static str {
        match self {
            BrokerKind::Kafka => {
                "after the ISR (the leader alone) has it in the page cache, no fsync"
            }
            BrokerKind::SluiceDurable => "after fdatasync (group commit)",
            BrokerKind::SluicePageCache => "in the page cache, no fsync (Kafka's mode)",
        }
    }

    fn sluice_env(self) -> Vec<(&'static str, &'static str)> {
        let mut env = SLUICE_PEER_ENV.to_vec();
        if self == BrokerKind::SluicePageCache {
            env.push(("SLUICE_LOG_ACKS_ALL_DURABLE", "false"));
        }
        env
    }
}

/// Which producer a produce workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// No producer id (the clients' defaults here: loadgen's, and the perf tool's
    /// `enable.idempotence` default, which is true with acks=all).
    Plain,
    /// Producer id and sequences (loadgen `--idempotence`, Java `enable.idempotence=true`).
    Idempotent,
    /// Transactions committed every `duration_ms` (loadgen `--transactional-id`, the perf
    /// tool's `--transactional-id --transaction-duration-ms`); `baseline` names the
    /// idempotent scenario of the same shape and client its overhead is measured against.
    Transactional {
        duration_ms: u64,
        baseline: &'static str,
    },
}

/// What a peer scenario does.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// loadgen producing as fast as it can for the run's duration.
    Loadgen {
        partitions: i32,
        record_bytes: u32,
        acks: &'static str,
        producer: Producer,
        /// loadgen `--producers`: connections, each its own producer id (and transactional
        /// id).
        producers: u32,
    },
    /// `kafka-producer-perf-test` sending `records` (times the run's records scale).
    ProducerPerf {
        partitions: i32,
        record_bytes: u32,
        acks: &'static str,
        records: u64,
        producer: Producer,
    },
    /// loadgen fills a topic with `records`, then `kafka-consumer-perf-test` reads it all from
    /// offset 0 (served from the page cache: it was just written).
    FetchFromStart {
        partitions: i32,
        record_bytes: u32,
        records: u64,
    },
    /// loadgen open loop at `fraction` of Kafka's median rate in scenario `rate_of` of this
    /// run, one consumer: end-to-end latency.
    Latency {
        partitions: i32,
        record_bytes: u32,
        acks: &'static str,
        rate_of: &'static str,
        fraction: f64,
    },
}

/// One named side-by-side workload.
#[derive(Debug, Clone, Copy)]
pub struct PeerScenario {
    pub name: &'static str,
    pub client: &'static str,
    pub description: &'static str,
    pub workload: Workload,
}

impl PeerScenario {
    /// The producer of a produce workload.
    pub fn producer(&self) -> Option<Producer> {
        match self.workload {
            Workload::Loadgen { producer, .. } | Workload::ProducerPerf { producer, .. } => {
                Some(producer)
            }
            _ => None,
        }
    }

    fn acks(&self) -> &'static str {
        match self.workload {
            Workload::Loadgen { acks, .. }
            | Workload::ProducerPerf { acks, .. }
            | Workload::Latency { acks, .. } => acks,
            Workload::FetchFromStart { .. } => "1",
        }
    }
}

/// The side-by-side scenarios, in run order (`latency-50pct` needs `1k-acksall`'s Kafka rate).
pub const PEER_SCENARIOS: &[PeerScenario] = &[
    PeerScenario {
        name: "1k-acks1",
        client: "loadgen",
        description: "produce, 16 partitions, 1 KiB, acks=1, max rate",
        workload: Workload::Loadgen {
            partitions: 16,
            record_bytes: 1024,
            acks: "1",
            producer: Producer::Plain,
            producers: 1,
        },
    },
    PeerScenario {
        name: "1k-acks1-perf",
        client: "kafka-producer-perf-test",
        description: "produce, 16 partitions, 1 KiB, acks=1, max rate",
        workload: Workload::ProducerPerf {
            partitions: 16,
            record_bytes: 1024,
            acks: "1",
            records: 1_000_000,
            producer: Producer::Plain,
        },
    },
    PeerScenario {
        name: "1k-acksall",
        client: "loadgen",
        description: "produce, 16 partitions, 1 KiB, acks=all, max rate",
        workload: Workload::Loadgen {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            producer: Producer::Plain,
            producers: 1,
        },
    },
    PeerScenario {
        name: "1k-acksall-perf",
        client: "kafka-producer-perf-test",
        description: "produce, 16 partitions, 1 KiB, acks=all, max rate",
        workload: Workload::ProducerPerf {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            records: 1_000_000,
            producer: Producer::Plain,
        },
    },
    PeerScenario {
        name: "100b-acks1",
        client: "loadgen",
        description: "produce, 16 partitions, 100 B, acks=1, max rate",
        workload: Workload::Loadgen {
            partitions: 16,
            record_bytes: 100,
            acks: "1",
            producer: Producer::Plain,
            producers: 1,
        },
    },
    PeerScenario {
        name: "100b-acks1-perf",
        client: "kafka-producer-perf-test",
        description: "produce, 16 partitions, 100 B, acks=1, max rate",
        workload: Workload::ProducerPerf {
            partitions: 16,
            record_bytes: 100,
            acks: "1",
            records: 3_000_000,
            producer: Producer::Plain,
        },
    },
    PeerScenario {
        name: "1000p-acks1",
        client: "loadgen",
        description: "produce, 1000 partitions, 1 KiB, acks=1, max rate",
        workload: Workload::Loadgen {
            partitions: 1000,
            record_bytes: 1024,
            acks: "1",
            producer: Producer::Plain,
            producers: 1,
        },
    },
    PeerScenario {
        name: "1000p-acks1-perf",
        client: "kafka-producer-perf-test",
        description: "produce, 1000 partitions, 1 KiB, acks=1, max rate",
        workload: Workload::ProducerPerf {
            partitions: 1000,
            record_bytes: 1024,
            acks: "1",
            records: 1_000_000,
            producer: Producer::Plain,
        },
    },
    PeerScenario {
        name: "fetch-start",
        client: "kafka-consumer-perf-test",
        description: "fetch 1 GB from offset 0, 16 partitions, 1 KiB (filled by loadgen)",
        workload: Workload::FetchFromStart {
            partitions: 16,
            record_bytes: 1024,
            records: 1_000_000,
        },
    },
    PeerScenario {
        name: "latency-50pct",
        client: "loadgen",
        description: "end to end, 16 partitions, 1 KiB, acks=all, 1 consumer, open loop at 50% of Kafka's 1k-acksall rate",
        workload: Workload::Latency {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            rate_of: "1k-acksall",
            fraction: 0.5,
        },
    },
    // Issue 15: transactional against idempotent produce, same shape and client, same run.
    PeerScenario {
        name: "1k-idem",
        client: "loadgen",
        description: "produce, 16 partitions, 1 KiB, acks=all, idempotent, max rate",
        workload: Workload::Loadgen {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            producer: Producer::Idempotent,
            producers: 1,
        },
    },
    PeerScenario {
        name: "1k-txn100",
        client: "loadgen",
        description: "produce, 16 partitions, 1 KiB, acks=all, a transaction every 100 ms, max rate",
        workload: Workload::Loadgen {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            producer: Producer::Transactional {
                duration_ms: 100,
                baseline: "1k-idem",
            },
            producers: 1,
        },
    },
    PeerScenario {
        name: "1k-idem-x4",
        client: "loadgen",
        description: "produce, 16 partitions, 1 KiB, acks=all, 4 idempotent producers, max rate",
        workload: Workload::Loadgen {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            producer: Producer::Idempotent,
            producers: 4,
        },
    },
    PeerScenario {
        name: "1k-txn100-x4",
        client: "loadgen",
        description: "produce, 16 partitions, 1 KiB, acks=all, 4 transactional producers, a transaction every 100 ms each, max rate",
        workload: Workload::Loadgen {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            producer: Producer::Transactional {
                duration_ms: 100,
                baseline: "1k-idem-x4",
            },
            producers: 4,
        },
    },
    PeerScenario {
        name: "1k-idem-perf",
        client: "kafka-producer-perf-test",
        description: "produce, 16 partitions, 1 KiB, acks=all, idempotent, max rate",
        workload: Workload::ProducerPerf {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            records: 1_000_000,
            producer: Producer::Idempotent,
        },
    },
    PeerScenario {
        name: "1k-txn100-perf",
        client: "kafka-producer-perf-test",
        description: "produce, 16 partitions, 1 KiB, acks=all, a transaction every 100 ms, max rate",
        workload: Workload::ProducerPerf {
            partitions: 16,
            record_bytes: 1024,
            acks: "all",
            records: 1_000_000,
            producer: Producer::Transactional {
                duration_ms: 100,
                baseline: "1k-idem-perf",
            },
        },
    },
];

pub fn peer_scenario(name: &str) -> Option<&'static PeerScenario> {
    PEER_SCENARIOS.iter().find(|s| s.name == name)
}

/// Settings of one peer run.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    pub rounds: usize,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    /// Multiplies the record counts of the perf tools and of the fetch fill.
    pub records_scale: f64,
    pub kafka_heap_mb: u32,
    /// The Sluice binary.
    pub sluice: PathBuf,
    /// The brokers, in the order of round 0 (Kafka must be one of them).
    pub brokers: Vec<BrokerKind>,
    /// Round-major order ([`run_order`]); a latency scenario then takes its rate from the
    /// first round of the scenario it follows.
    pub interleave: bool,
}

/// One measurement of one scenario on one broker.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    /// p50 / p99 / p99.9 in ms: produce ack latency, or end to end for a latency scenario.
    pub latency_ms: [f64; 3],
    /// The broker's CPU seconds (user + system) over the measurement.
    pub cpu_secs: f64,
    /// Record bytes the measurement moved (produced, or fetched for `FetchFromStart`).
    pub bytes: u64,
    /// Open loop: records that fell due but were not sent by the end.
    pub behind_schedule: u64,
    /// loadgen's transactional runs: commits per second and EndTxn p99 (NaN otherwise).
    pub transactions_per_sec: f64,
    pub commit_ms_p99: f64,
}

impl Measurement {
    pub fn cpu_secs_per_gb(&self) -> f64 {
        self.cpu_secs / (self.bytes.max(1) as f64 / 1e9)
    }
}

/// One scenario's rounds: `measurements[round][broker index]`.
#[derive(Debug, Clone)]
pub struct PeerResult {
    pub scenario: &'static PeerScenario,
    /// The open-loop rate (records/s) of a latency scenario.
    pub rate: Option<f64>,
    pub measurements: Vec<Vec<Measurement>>,
}

/// A whole peer run.
#[derive(Debug, Clone)]
pub struct PeerReport {
    pub brokers: Vec<BrokerKind>,
    pub results: Vec<PeerResult>,
    pub kafka_version: String,
    pub settings: PeerSettings,
}

/// A running broker of a peer run.
enum Running {
    Kafka(ApacheKafka),
    Sluice(StartedBroker),
}

impl Running {
    fn bootstrap(&self) -> String {
        match self {
            Running::Kafka(k) => k.bootstrap(),
            Running::Sluice(s) => s.bootstrap.clone(),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Running::Kafka(k) => k.pid(),
            Running::Sluice(s) => s.pid(),
        }
    }
}

/// Starts the brokers and runs `scenarios` in interleaved rounds.
pub fn run(
    stack: &JavaStack,
    scenarios: &[&'static PeerScenario],
    settings: &PeerSettings,
) -> Result<PeerReport> {
    let Some(kafka_index) = settings
        .brokers
        .iter()
        .position(|b| *b == BrokerKind::Kafka)
    else {
        bail!("a peer run needs Apache Kafka among its brokers");
    };
    let clock_ticks = clock_ticks_per_sec()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut running = Vec::new();
    for kind in &settings.brokers {
        eprintln!("bench peer: starting {}", kind.label());
        running.push(start(stack, *kind, settings)?);
    }
    let mut results: Vec<PeerResult> = scenarios
        .iter()
        .map(|scenario| PeerResult {
            scenario,
            rate: None,
            measurements: Vec::new(),
        })
        .collect();
    for (index, round) in run_order(scenarios.len(), settings.rounds, settings.interleave) {
        let scenario = scenarios[index];
        if round == 0
            && let Workload::Latency {
                rate_of, fraction, ..
            } = scenario.workload
        {
            // Kafka's median over the rounds of `rate_of` measured so far: all of them, or
            // the first with --interleave.
            let base = results[..index]
                .iter()
                .find(|r| r.scenario.name == rate_of && !r.measurements.is_empty())
                .with_context(|| format!("{} needs {rate_of} earlier in the run", scenario.name))?;
            let rates: Vec<f64> = base
                .measurements
                .iter()
                .map(|round| round[kafka_index].records_per_sec)
                .collect();
            results[index].rate = Some((median(&rates) * fraction).max(1.0));
        }
        let rate = results[index].rate;
        let n = settings.brokers.len();
        let mut row: Vec<Option<Measurement>> = vec![None; n];
        for step in 0..n {
            let broker_index = (step + round) % n;
            let kind = settings.brokers[broker_index];
            let broker = &running[broker_index];
            let topic = format!("peer-{}-{}-{round}", scenario.name, kind.label());
            eprintln!(
                "bench peer: {} round {round} on {}",
                scenario.name,
                kind.label()
            );
            let measured = runtime
                .block_on(measure(
                    stack,
                    broker,
                    &topic,
                    scenario,
                    settings,
                    rate,
                    clock_ticks,
                ))
                .with_context(|| format!("{} on {}", scenario.name, kind.label()));
            let measured = match (measured, broker) {
                (Ok(m), _) => m,
                (Err(e), Running::Kafka(kafka)) => {
                    return Err(e.context(kafka.log_tail(3000)));
                }
                (Err(e), _) => return Err(e),
            };
            if let Err(e) = runtime.block_on(delete_topic(&broker.bootstrap(), &topic)) {
                eprintln!("bench peer: deleting {topic} on {}: {e:#}", kind.label());
            }
            row[broker_index] = Some(measured);
        }
        results[index].measurements.push(
            row.into_iter()
                .map(|m| m.expect("every broker ran"))
                .collect(),
        );
    }
    Ok(PeerReport {
        brokers: settings.brokers.clone(),
        results,
        kafka_version: stack.kafka_version(),
        settings: settings.clone(),
    })
}

/// The (scenario index, round) of each step of a run: every round of a scenario before the
/// next scenario, or with `interleave` every scenario in a round before the next round (pairs
/// of scenarios compared with each other, as issue 15's, are then seconds apart, not the
/// length of all the rounds of one of them).
fn run_order(scenarios: usize, rounds: usize, interleave: bool) -> Vec<(usize, usize)> {
    if interleave {
        (0..rounds)
            .flat_map(|round| (0..scenarios).map(move |index| (index, round)))
            .collect()
    } else {
        (0..scenarios)
            .flat_map(|index| (0..rounds).map(move |round| (index, round)))
            .collect()
    }
}

fn start(stack: &JavaStack, kind: BrokerKind, settings: &PeerSettings) -> Result<Running> {
    match kind {
        BrokerKind::Kafka => {
            let options = KafkaOptions {
                heap_mb: settings.kafka_heap_mb,
                props: KAFKA_PEER_PROPS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..KafkaOptions::default()
            };
            Ok(Running::Kafka(
                ApacheKafka::start(stack, options).context("starting Apache Kafka")?,
            ))
        }
        _ => {
            if !settings.sluice.exists() {
                bail!(
                    "{} not found: cargo build --release -p sluice",
                    settings.sluice.display()
                );
            }
            Ok(Running::Sluice(start_broker_with(
                &settings.sluice,
                &kind.sluice_env(),
            )?))
        }
    }
}

/// Creates `topic`, runs the workload inside a CPU window on `broker`, and measures it.
async fn measure(
    stack: &JavaStack,
    broker: &Running,
    topic: &str,
    scenario: &PeerScenario,
    settings: &PeerSettings,
    rate: Option<f64>,
    clock_ticks: f64,
) -> Result<Measurement> {
    let bootstrap = broker.bootstrap();
    let scaled = |records: u64| ((records as f64 * settings.records_scale).round() as u64).max(1);
    let timed = |duration: f64| {
        vec![
            "--duration".to_string(),
            duration.to_string(),
            "--warmup-secs".to_string(),
            settings.warmup_secs.to_string(),
        ]
    };
    let shape = |partitions: i32, record_bytes: u32, acks: &str| {
        vec![
            "--partitions".to_string(),
            partitions.to_string(),
            "--record-bytes".to_string(),
            record_bytes.to_string(),
            "--acks".to_string(),
            acks.to_string(),
            // Kafka answers NOT_LEADER_OR_FOLLOWER for seconds after Metadata already lists
            // the leaders of a just-created 1000-partition topic (on this loaded VM): 10
            // retries 100 ms apart gave up. Errors stay counted in loadgen's report.
            "--retries".to_string(),
            PRODUCE_RETRIES.to_string(),
        ]
    };
    let partitions = match scenario.workload {
        Workload::Loadgen { partitions, .. }
        | Workload::ProducerPerf { partitions, .. }
        | Workload::FetchFromStart { partitions, .. }
        | Workload::Latency { partitions, .. } => partitions,
    };
    create_topic(&bootstrap, topic, partitions).await?;
    match scenario.workload {
        Workload::Loadgen {
            record_bytes,
            acks,
            producer,
            producers,
            ..
        } => {
            let mut flags = shape(partitions, record_bytes, acks);
            flags.extend(timed(settings.duration_secs));
            flags.extend(["--producers".to_string(), producers.to_string()]);
            flags.extend(loadgen_producer_flags(producer, topic));
            let before = cpu_secs(broker.pid(), clock_ticks)?;
            let report = run_loadgen(&bootstrap, topic, &flags).await?;
            let cpu = cpu_secs(broker.pid(), clock_ticks)? - before;
            check_no_failures(&report)?;
            let l = &report.produce.latency_us;
            let (transactions_per_sec, commit_ms_p99) = match &report.transactions {
                Some(t) => (t.per_sec, t.commit_latency_us.p99 as f64 / 1000.0),
                None => (f64::NAN, f64::NAN),
            };
            Ok(Measurement {
                records_per_sec: report.produce.records_per_sec,
                mb_per_sec: report.produce.mb_per_sec,
                latency_ms: [l.p50, l.p99, l.p999].map(|us| us as f64 / 1000.0),
                cpu_secs: cpu,
                bytes: report.records_acked * u64::from(record_bytes),
                behind_schedule: 0,
                transactions_per_sec,
                commit_ms_p99,
            })
        }
        Workload::ProducerPerf {
            record_bytes,
            acks,
            records,
            producer,
            ..
        } => {
            let transactional_id = format!("{topic}-perf");
            let run = ProducerPerfRun {
                bootstrap: &bootstrap,
                topic,
                records: scaled(records),
                record_bytes,
                acks,
                producer: match producer {
                    Producer::Plain => PerfProducer::Default,
                    Producer::Idempotent => PerfProducer::Idempotent,
                    Producer::Transactional { duration_ms, .. } => PerfProducer::Transactional {
                        transactional_id: &transactional_id,
                        duration_ms,
                    },
                },
            };
            let before = cpu_secs(broker.pid(), clock_ticks)?;
            let perf = java_tools::producer_perf(stack, &run)?;
            let cpu = cpu_secs(broker.pid(), clock_ticks)? - before;
            Ok(Measurement {
                records_per_sec: perf.records_per_sec,
                mb_per_sec: perf.records_per_sec * f64::from(record_bytes) / 1e6,
                latency_ms: [
                    perf.latency_ms_p50,
                    perf.latency_ms_p99,
                    perf.latency_ms_p999,
                ],
                cpu_secs: cpu,
                bytes: perf.records * u64::from(record_bytes),
                behind_schedule: 0,
                transactions_per_sec: f64::NAN,
                commit_ms_p99: f64::NAN,
            })
        }
        Workload::FetchFromStart {
            record_bytes,
            records,
            ..
        } => {
            let records = scaled(records);
            let mut flags = shape(partitions, record_bytes, "1");
            flags.extend(["--records".to_string(), records.to_string()]);
            let fill = run_loadgen(&bootstrap, topic, &flags).await?;
            check_no_failures(&fill)?;
            if fill.records_acked != records {
                bail!("fill acked {} of {records} records", fill.records_acked);
            }
            let before = cpu_secs(broker.pid(), clock_ticks)?;
            let perf = java_tools::consumer_perf(stack, &bootstrap, topic, records)?;
            let cpu = cpu_secs(broker.pid(), clock_ticks)? - before;
            Ok(Measurement {
                records_per_sec: perf.fetch_records_per_sec,
                mb_per_sec: perf.fetch_records_per_sec * f64::from(record_bytes) / 1e6,
                latency_ms: [f64::NAN; 3],
                cpu_secs: cpu,
                bytes: records * u64::from(record_bytes),
                behind_schedule: 0,
                transactions_per_sec: f64::NAN,
                commit_ms_p99: f64::NAN,
            })
        }
        Workload::Latency {
            record_bytes, acks, ..
        } => {
            let rate = rate.context("a latency scenario needs its rate")?;
            let mut flags = shape(partitions, record_bytes, acks);
            flags.extend(timed(settings.duration_secs));
            flags.extend([
                "--consumers".to_string(),
                "1".to_string(),
                "--rate".to_string(),
                format!("{rate:.0}"),
            ]);
            let before = cpu_secs(broker.pid(), clock_ticks)?;
            let report = run_loadgen(&bootstrap, topic, &flags).await?;
            let cpu = cpu_secs(broker.pid(), clock_ticks)? - before;
            check_no_failures(&report)?;
            let consumed = report.consume.as_ref().map_or(0, |c| c.records);
            if consumed != report.records_acked {
                bail!(
                    "consumer read {consumed} of {} acknowledged records",
                    report.records_acked
                );
            }
            let l = report
                .end_to_end_latency_us
                .as_ref()
                .context("no end-to-end latency in loadgen's report")?;
            Ok(Measurement {
                records_per_sec: report.produce.records_per_sec,
                mb_per_sec: report.produce.mb_per_sec,
                latency_ms: [l.p50, l.p99, l.p999].map(|us| us as f64 / 1000.0),
                cpu_secs: cpu,
                bytes: report.records_acked * u64::from(record_bytes),
                behind_schedule: report.records_behind_schedule,
                transactions_per_sec: f64::NAN,
                commit_ms_p99: f64::NAN,
            })
        }
    }
}

/// loadgen flags for `producer` (a transactional id unique to the measurement's topic).
fn loadgen_producer_flags(producer: Producer, topic: &str) -> Vec<String> {
    match producer {
        Producer::Plain => Vec::new(),
        Producer::Idempotent => vec!["--idempotence".to_string()],
        Producer::Transactional { duration_ms, .. } => vec![
            "--transactional-id".to_string(),
            topic.to_string(),
            "--transaction-duration-ms".to_string(),
            duration_ms.to_string(),
        ],
    }
}

fn check_no_failures(report: &loadgen::Report) -> Result<()> {
    let aborted = report.transactions.as_ref().map_or(0, |t| t.aborted);
    if aborted > 0 {
        bail!(
            "loadgen: {aborted} transactions aborted, {} records failed, errors {:?}",
            report.records_failed,
            report.errors_by_code
        );
    }
    if report.records_failed > 0 || report.records_acked == 0 {
        bail!(
            "loadgen: {} acked, {} failed, errors {:?}",
            report.records_acked,
            report.records_failed,
            report.errors_by_code
        );
    }
    Ok(())
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let cluster = Cluster::connect(bootstrap, topic, 1).await?;
    cluster
        .ensure_topic(Some(partitions), 1, &[])
        .await
        .with_context(|| format!("creating {topic}"))?;
    let found = cluster.layout().partitions();
    if found != partitions as usize {
        bail!("{topic} has {found} partitions, wanted {partitions}");
    }
    Ok(())
}

async fn delete_topic(bootstrap: &str, topic: &str) -> Result<()> {
    let cluster = Cluster::connect(bootstrap, topic, 1).await?;
    let mut request = DeleteTopicsRequest::default();
    request.topic_names = vec![topic_name(topic)];
    request.timeout_ms = 30_000;
    let response = cluster.admin().await?.call_at(&request, 4).await?;
    for result in &response.responses {
        if result.error_code != 0 {
            bail!("DeleteTopics: error code {}", result.error_code);
        }
    }
    Ok(())
}

/// `getconf CLK_TCK`: the unit of utime and stime in /proc/<pid>/stat.
fn clock_ticks_per_sec() -> Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .context("getconf CLK_TCK printed no number")
}

/// utime + stime of process `pid` in seconds (all its threads).
pub fn cpu_secs(pid: u32, clock_ticks: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks)
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line; the command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let (_, rest) = stat
        .rsplit_once(')')
        .context("/proc/<pid>/stat without `)`")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, index 11 here.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/<pid>/stat field {}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Per-round ratios of `result`'s MB/s over `base`'s on broker `index` (rounds paired in
/// order): median, min, max.
fn overhead_ratio(result: &PeerResult, base: &PeerResult, index: usize) -> (f64, f64, f64) {
    let ratios: Vec<f64> = result
        .measurements
        .iter()
        .zip(&base.measurements)
        .map(|(round, base_round)| round[index].mb_per_sec / base_round[index].mb_per_sec)
        .collect();
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(&ratios), min, max)
}

impl PeerResult {
    fn is_latency(&self) -> bool {
        matches!(self.scenario.workload, Workload::Latency { .. })
    }

    /// Median over rounds of `f` for broker `index`.
    fn median_of(&self, index: usize, f: impl Fn(&Measurement) -> f64) -> f64 {
        let values: Vec<f64> = self
            .measurements
            .iter()
            .map(|round| f(&round[index]))
            .collect();
        median(&values)
    }

    /// The headline value: MB/s (higher is better) or end-to-end p99 ms (lower is better).
    fn headline(m: &Measurement, latency: bool) -> f64 {
        if latency {
            m.latency_ms[1]
        } else {
            m.mb_per_sec
        }
    }

    /// Per-round ratios of broker `index` over broker `base` on the headline value: median,
    /// min, max.
    pub fn ratio(&self, index: usize, base: usize) -> (f64, f64, f64) {
        let latency = self.is_latency();
        let ratios: Vec<f64> = self
            .measurements
            .iter()
            .map(|round| {
                Self::headline(&round[index], latency) / Self::headline(&round[base], latency)
            })
            .collect();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(&ratios), min, max)
    }
}

impl PeerReport {
    fn kafka_index(&self) -> usize {
        self.brokers
            .iter()
            .position(|b| *b == BrokerKind::Kafka)
            .expect("a peer run has Kafka")
    }

    /// The side-by-side table (medians over rounds) with Sluice/Kafka ratios.
    pub fn markdown_table(&self) -> String {
        let kafka = self.kafka_index();
        let mut out = String::new();
        let mut header = "| scenario | client |".to_string();
        let mut rule = "|---|---|".to_string();
        for b in &self.brokers {
            let _ = write!(header, " {} |", b.label());
            rule.push_str("---:|");
        }
        let others: Vec<usize> = (0..self.brokers.len()).filter(|i| *i != kafka).collect();
        for i in &others {
            let _ = write!(header, " {}/kafka (min-max) |", self.brokers[*i].label());
            rule.push_str("---:|");
        }
        header.push_str(" CPU s/GB ");
        header.push_str(
            &self
                .brokers
                .iter()
                .map(|b| b.label())
                .collect::<Vec<_>>()
                .join(" / "),
        );
        header.push_str(" | acks=all durability |");
        rule.push_str("---:|---|");
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{rule}");
        for result in &self.results {
            let latency = result.is_latency();
            let mut row = format!("| {} | {} |", result.scenario.name, result.scenario.client);
            for index in 0..self.brokers.len() {
                let mb = result.median_of(index, |m| m.mb_per_sec);
                let [p50, p99, p999] =
                    [0, 1, 2].map(|q| result.median_of(index, |m| m.latency_ms[q]));
                if latency {
                    let behind = result.median_of(index, |m| m.behind_schedule as f64);
                    let _ = write!(row, " e2e {p50:.1} / {p99:.1} / {p999:.1} ms");
                    if behind > 0.0 {
                        let _ = write!(row, ", {behind:.0} behind");
                    }
                    row.push_str(" |");
                } else if p99.is_nan() {
                    let _ = write!(row, " {mb:.0} MB/s |");
                } else {
                    let _ = write!(row, " {mb:.0} MB/s (p99 {p99:.0} ms) |");
                }
            }
            for index in &others {
                let (median, min, max) = result.ratio(*index, kafka);
                let _ = write!(row, " **{median:.2}** ({min:.2}-{max:.2}) |");
            }
            let cpu: Vec<String> = (0..self.brokers.len())
                .map(|i| format!("{:.2}", result.median_of(i, Measurement::cpu_secs_per_gb)))
                .collect();
            let _ = write!(row, " {} |", cpu.join(" / "));
            if result.scenario.acks() == "all" {
                let notes: Vec<String> = self
                    .brokers
                    .iter()
                    .map(|b| format!("{}: {}", b.label(), b.acks_all_durability()))
                    .collect();
                let _ = write!(row, " {} |", notes.join("; "));
            } else {
                row.push_str(" - |");
            }
            let _ = writeln!(out, "{row}");
        }
        out
    }

    /// Issue 15's table: each transactional scenario's MB/s over its idempotent baseline's
    /// (same client, same shape, same run), per broker: the median and range of the
    /// per-round ratios, with the transactional run's commits/s and EndTxn p99 (loadgen
    /// measures those; the perf tool does not report them). Empty without a transactional
    /// scenario whose baseline ran too.
    pub fn transactions_table(&self) -> String {
        let mut out = String::new();
        let pairs: Vec<(&PeerResult, &PeerResult, u64)> = self
            .results
            .iter()
            .filter_map(|result| {
                let Producer::Transactional {
                    duration_ms,
                    baseline,
                } = result.scenario.producer()?
                else {
                    return None;
                };
                let base = self.results.iter().find(|r| r.scenario.name == baseline)?;
                Some((result, base, duration_ms))
            })
            .collect();
        if pairs.is_empty() {
            return out;
        }
        let mut header = "| transactional / idempotent | client | commit every |".to_string();
        let mut rule = "|---|---|---:|".to_string();
        for b in &self.brokers {
            let _ = write!(header, " {} MB/s ratio (min-max) |", b.label());
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{rule}");
        for (result, base, duration_ms) in pairs {
            let mut row = format!(
                "| {} / {} | {} | {duration_ms} ms |",
                result.scenario.name, base.scenario.name, result.scenario.client
            );
            for index in 0..self.brokers.len() {
                let (median, min, max) = overhead_ratio(result, base, index);
                let _ = write!(row, " **{median:.3}** ({min:.3}-{max:.3})");
                let per_sec = result.median_of(index, |m| m.transactions_per_sec);
                if !per_sec.is_nan() {
                    let commit = result.median_of(index, |m| m.commit_ms_p99);
                    let _ = write!(row, ", {per_sec:.0} commits/s, EndTxn p99 {commit:.1} ms");
                }
                row.push_str(" |");
            }
            let _ = writeln!(out, "{row}");
        }
        // A blank line ends the table.
        out.push('\n');
        out
    }

    /// The scenarios, exact client settings, open-loop rates and brokers' settings.
    pub fn settings_text(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Rounds: {} (interleaved, order rotated each round; {}); loadgen runs {} s after {} \
             s of warm-up; perf-tool record counts x{}. Values are medians over rounds; a ratio \
             is Sluice/Kafka on MB/s (throughput rows) or on end-to-end p99 (latency rows, lower \
             is better), median and range of the per-round ratios. CPU s/GB: the broker \
             process's utime+stime over the measurement divided by the record bytes it moved.\n",
            s.rounds,
            if s.interleave {
                "round-major: each round runs every scenario"
            } else {
                "every round of a scenario before the next scenario"
            },
            s.duration_secs,
            s.warmup_secs,
            s.records_scale
        );
        for result in &self.results {
            let _ = write!(
                out,
                "- `{}` ({}): {}",
                result.scenario.name, result.scenario.client, result.scenario.description
            );
            if let Some(rate) = result.rate {
                let _ = write!(out, "; rate {rate:.0} records/s");
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "\nBrokers:\n- kafka: Apache Kafka {} (KRaft, one JVM as broker and controller, \
             refstack), `-Xms{m}m -Xmx{m}m {}`, server.properties = refstack's single-node \
             defaults + {:?}; no fsync per write (`log.flush.interval.*` unset, Kafka's default).\n\
             - sluice: `{}`, release, sparse 256 MiB segments (`SLUICE_LOG_PREALLOCATE=false`, \
             `SLUICE_LOG_SEGMENT_BYTES=268435456`), {:?}; acks=all after fdatasync (default \
             `log.acks_all_durable = true`).\n\
             - sluice-pc: the same plus `SLUICE_LOG_ACKS_ALL_DURABLE=false`: acks=all answered \
             from the page cache, as Kafka does.\n\
             - kafka-producer-perf-test / kafka-consumer-perf-test: `{} {}`, producer \
             `--command-property {}`.",
            self.kafka_version,
            refstack::KAFKA_JVM_PERFORMANCE_OPTS.join(" "),
            KAFKA_PEER_PROPS,
            s.sluice.display(),
            SLUICE_PEER_ENV,
            java_tools::PERF_TOOL_HEAP,
            refstack::KAFKA_JVM_PERFORMANCE_OPTS.join(" "),
            java_tools::PRODUCER_PROPS.join(" "),
            m = s.kafka_heap_mb,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat = "4242 (java (x) y) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 30";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), 325);
        assert!(parse_stat_cpu_ticks("4242 (java) S 1").is_err());
        let own = cpu_secs(std::process::id(), clock_ticks_per_sec().unwrap()).unwrap();
        assert!(own >= 0.0);
    }

    #[test]
    fn latency_scenarios_follow_the_scenario_they_take_their_rate_from() {
        for (i, scenario) in PEER_SCENARIOS.iter().enumerate() {
            assert_eq!(peer_scenario(scenario.name).unwrap().name, scenario.name);
            if let Workload::Latency { rate_of, .. } = scenario.workload {
                let base = PEER_SCENARIOS
                    .iter()
                    .position(|s| s.name == rate_of)
                    .unwrap();
                assert!(base < i, "{rate_of} must run before {}", scenario.name);
            }
        }
    }

    #[test]
    fn transactional_scenarios_name_an_idempotent_baseline_of_their_shape_and_client() {
        let mut pairs = 0;
        for scenario in PEER_SCENARIOS {
            let Some(Producer::Transactional { baseline, .. }) = scenario.producer() else {
                continue;
            };
            let base = peer_scenario(baseline).expect("the baseline exists");
            assert_eq!(base.producer(), Some(Producer::Idempotent));
            assert_eq!(base.client, scenario.client);
            assert_eq!(base.acks(), "all");
            let shape = |s: &PeerScenario| match s.workload {
                Workload::Loadgen {
                    partitions,
                    record_bytes,
                    producers,
                    ..
                } => (partitions, record_bytes, producers),
                Workload::ProducerPerf {
                    partitions,
                    record_bytes,
                    ..
                } => (partitions, record_bytes, 1),
                _ => unreachable!("a produce workload"),
            };
            assert_eq!(shape(base), shape(scenario));
            pairs += 1;
        }
        assert_eq!(pairs, 3, "two loadgen pairs and a perf-tool pair");
    }

    #[test]
    fn overhead_ratios_pair_rounds_in_order() {
        let m = |mb: f64| Measurement {
            records_per_sec: mb * 1000.0,
            mb_per_sec: mb,
            latency_ms: [1.0; 3],
            cpu_secs: 1.0,
            bytes: 1,
            behind_schedule: 0,
            transactions_per_sec: f64::NAN,
            commit_ms_p99: f64::NAN,
        };
        let result = |name: &str, rounds: &[f64]| PeerResult {
            scenario: peer_scenario(name).unwrap(),
            rate: None,
            measurements: rounds.iter().map(|&mb| vec![m(mb)]).collect(),
        };
        let txn = result("1k-txn100", &[90.0, 50.0, 95.0]);
        let idem = result("1k-idem", &[100.0, 50.0, 100.0]);
        assert_eq!(overhead_ratio(&txn, &idem, 0), (0.95, 0.9, 1.0));
    }

    #[test]
    fn run_order_is_scenario_major_or_round_major() {
        assert_eq!(run_order(2, 2, false), [(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert_eq!(run_order(2, 2, true), [(0, 0), (1, 0), (0, 1), (1, 1)]);
        assert!(run_order(3, 0, true).is_empty());
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
