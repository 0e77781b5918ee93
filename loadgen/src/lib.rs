//! loadgen: a Kafka-protocol load generator for any Kafka-compatible broker.
//!
//! Owns: its own small async Kafka client (bootstrap, metadata, leader routing, ApiVersions
//! negotiation, pipelined Produce/Fetch, CreateTopics, InitProducerId, transactions with
//! their coordinator), record generation
//! (open-loop at a rate, or as fast as possible), latency measurement with HDR histograms
//! corrected for coordinated omission, and the report (progress line, summary, JSON, SVG).
//! Does not own: anything of the Sluice broker; it depends on the `kafka-protocol` crate and
//! generic crates only, so its numbers mean the same against Kafka, Redpanda or Sluice.
//!
//! Invariants: records are counted once each (`records_sent` when first put on the wire,
//! `records_acked` when answered, `records_failed` when given up); latencies are measured
//! from each record's due time; no allocation per record on the produce path.
//!
//! Entry points: [`run`] (async, on a tokio runtime) and [`run_blocking`]; `sluice loadgen`
//! can take [`LoadgenArgs`] as a subcommand's arguments and call [`run_blocking`]:
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     /// Kafka load generator (same flags as the `loadgen` binary).
//!     Loadgen(loadgen::LoadgenArgs),
//! }
//! // ...
//! Command::Loadgen(args) => {
//!     let report = loadgen::run_blocking(args)?; // prints progress, summary, writes --json
//!     if report.interrupted {
//!         std::process::exit(130);
//!     }
//! }
//! ```

// `deny`, not `forbid`: `client::frame` implements the `unsafe` trait `BufMut` (by delegation)
// so Produce frames need not copy their record batches; it is the one module that allows it.
#![deny(unsafe_code)]

pub mod args;
pub mod client;
pub mod consumer;
pub mod keys;
pub mod plot;
pub mod producer;
pub mod record_batch;
pub mod report;
pub mod schedule;
pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use args::LoadgenArgs;
pub use report::Report;

use crate::client::Cluster;
use crate::client::versions::TransactionVersion;
use crate::consumer::{ConsumerConfig, ConsumerShared, assignment, run_consumer};
use crate::keys::{KeyGenerator, SizeDistribution};
use crate::producer::{
    ProducerConfig, ProducerIdentity, ProducerShared, StopSignal, batch_buffers, payload_pool,
    run_producer,
};
use crate::record_batch::BatchBuffers;
use crate::report::{Measured, Transactions, latency_line, rfc3339_utc};
use crate::schedule::{Clock, Schedule};
use crate::stats::{Counters, Stats};

/// How long producers keep waiting for answers after Ctrl-C.
const ABORT_DRAIN: Duration = Duration::from_secs(3);
/// How long producers wait for consumers to get their first assignment.
const CONSUMERS_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Progress line period.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs `args` on a fresh multi-thread tokio runtime, printing progress and the summary, and
/// writing the JSON report and plot if asked.
///
/// One worker thread per producer and consumer, at most one per CPU: a producer's task and its
/// connection's writer then mostly share a thread, instead of handing every request across
/// threads (8 % less loadgen CPU with one producer, docs/benchmarks.md).
pub fn run_blocking(args: LoadgenArgs) -> Result<Report> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let clients = (args.producers + args.consumers) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(clients.clamp(1, cpus))
        .enable_all()
        .thread_name("loadgen")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

/// Runs one load test to completion (or Ctrl-C) and returns its report, after printing the
/// summary to stdout and writing `--json` / `--plot`.
pub async fn run(args: LoadgenArgs) -> Result<Report> {
    let report = run_quietly(args.clone(), ctrl_c()).await?;
    print!("{}", report.human_summary());
    write_outputs(&args, &report)?;
    Ok(report)
}

/// Runs one load test; `interrupt` resolving means Ctrl-C (stop and report what was done).
/// Writes nothing but the progress line (unless `--quiet`).
pub async fn run_quietly(
    args: LoadgenArgs,
    interrupt: impl std::future::Future<Output = ()> + Send,
) -> Result<Report> {
    args.validate()?;
    let start_time = rfc3339_utc(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let mut run = RunContext::set_up(args).await?;
    let (mut consumers, consumer_measure_from_us) = run.spawn_consumers().await;
    // Set up before the clock starts: memory touched now is not part of the measurement.
    let buffers = (0..run.args.producers)
        .map(|_| {
            let a = &run.args;
            batch_buffers(a.batch_bytes, a.buffer_bytes, a.rate.is_none())
        })
        .collect();
    // Producer ids too, as ProducerPerformance calls initTransactions() before its clock
    // starts: a fresh Kafka answers COORDINATOR_LOAD_IN_PROGRESS until it has a block of
    // producer ids, and creates its transaction log on the first FindCoordinator (seconds).
    let identities = run.init_producer_identities().await?;
    run.transaction_version = identities.iter().find_map(|i| i.transaction_version());
    let timing = Timing::start(&run.clock, &run.args);
    consumer_measure_from_us.store(timing.measure_from_us, Ordering::Relaxed);
    let mut producers = run.spawn_producers(&timing, buffers, identities);
    let window_start = Arc::new(Mutex::new(None::<Counters>));
    let progress = tokio::spawn(progress_loop(
        run.stats.clone(),
        timing.run_start,
        timing.measure_from,
        window_start.clone(),
        run.args.quiet,
    ));

    tokio::pin!(interrupt);
    let mut outcome = Outcome::default();
    outcome
        .await_producers(&mut producers, &run.stop_tx, &mut interrupt)
        .await;
    let produce_end = Instant::now();
    if run.args.consumers > 0 {
        run.announce_targets(&mut outcome).await;
        outcome
            .drain_consumers(&mut consumers, &run, &mut interrupt)
            .await;
    }
    let consume_end = Instant::now();
    progress.abort();
    if let Some(error) = outcome.first_error {
        return Err(error);
    }
    let at_window_start = window_start
        .lock()
        .expect("window lock")
        .unwrap_or_default();
    Ok(run.report(
        start_time,
        &timing,
        at_window_start,
        produce_end,
        consume_end,
        outcome.interrupted,
    ))
}

/// What every phase of one run shares.
struct RunContext {
    args: LoadgenArgs,
    clock: Clock,
    cluster: Arc<Cluster>,
    topic_created: bool,
    partitions: usize,
    stats: Arc<Stats>,
    stop_tx: watch::Sender<StopSignal>,
    stop_rx: watch::Receiver<StopSignal>,
    targets_tx: watch::Sender<Option<Arc<Vec<i64>>>>,
    targets_rx: watch::Receiver<Option<Arc<Vec<i64>>>>,
    /// Consumers' next offsets by partition, from the log end before producing.
    positions: Arc<Mutex<Vec<i64>>>,
    /// The transaction protocol the producers follow (transactional runs, once they have
    /// their identities).
    transaction_version: Option<TransactionVersion>,
}

/// When the load started and what counts as measured.
struct Timing {
    run_start: Instant,
    start_us: u64,
    measure_from: Instant,
    measure_from_us: u64,
    produce_until: Option<Instant>,
}

impl Timing {
    fn start(clock: &Clock, args: &LoadgenArgs) -> Timing {
        let run_start = Instant::now();
        let measure_from = run_start + Duration::from_secs_f64(args.warmup_secs);
        Timing {
            run_start,
            start_us: clock.at_us(run_start),
            measure_from,
            measure_from_us: clock.at_us(measure_from),
            produce_until: args.produce_time().map(|d| run_start + d),
        }
    }
}

impl RunContext {
    /// Bootstrap, topic, and the consumers' start offsets.
    async fn set_up(args: LoadgenArgs) -> Result<RunContext> {
        let clock = Clock::new();
        let cluster = Arc::new(
            Cluster::connect(&args.bootstrap, &args.topic, args.max_in_flight)
                .await
                .context("bootstrap")?,
        );
        let topic_created = cluster
            .ensure_topic(
                args.partitions,
                args.replication_factor,
                &args.topic_configs()?,
            )
            .await?;
        let partitions = cluster.layout().partitions();
        let positions = if args.consumers > 0 {
            cluster.end_offsets().await.context("start offsets")?
        } else {
            Vec::new()
        };
        let (stop_tx, stop_rx) = watch::channel(StopSignal::Run);
        let (targets_tx, targets_rx) = watch::channel(None);
        Ok(RunContext {
            args,
            clock,
            cluster,
            topic_created,
            partitions,
            stats: Arc::new(Stats::default()),
            stop_tx,
            stop_rx,
            targets_tx,
            targets_rx,
            positions: Arc::new(Mutex::new(positions)),
            transaction_version: None,
        })
    }

    /// Starts the consumers and waits until each has its first assignment (a group join can
    /// take seconds; end-to-end latency should not include it). Returns the tasks and the
    /// cell the measured window's start goes into once producing begins.
    async fn spawn_consumers(&self) -> (JoinSet<Result<()>>, Arc<AtomicU64>) {
        let args = &self.args;
        let measure_from_us = Arc::new(AtomicU64::new(0));
        let mut consumers = JoinSet::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.consumers.max(1) as usize);
        for index in 0..args.consumers {
            let config = ConsumerConfig {
                index,
                partitions: assignment(self.partitions, args.consumers, index),
                group: args.group.clone(),
                read_committed: args.transactional_id.is_some(),
            };
            let shared = ConsumerShared {
                cluster: self.cluster.clone(),
                stats: self.stats.clone(),
                clock: self.clock,
                targets: self.targets_rx.clone(),
                stop: self.stop_rx.clone(),
                positions: self.positions.clone(),
                ready: ready_tx.clone(),
                measure_from_us: measure_from_us.clone(),
            };
            consumers.spawn(run_consumer(config, shared));
        }
        drop(ready_tx);
        let ready_deadline = tokio::time::sleep(CONSUMERS_READY_TIMEOUT);
        tokio::pin!(ready_deadline);
        for _ in 0..args.consumers {
            tokio::select! {
                ready = ready_rx.recv() => if ready.is_none() { break },
                _ = &mut ready_deadline => {
                    eprintln!(
                        "loadgen: consumers not ready after {CONSUMERS_READY_TIMEOUT:?}; producing anyway"
                    );
                    break;
                }
            }
        }
        (consumers, measure_from_us)
    }

    /// Each producer's id (idempotence) or transaction coordinator (transactions).
    async fn init_producer_identities(&self) -> Result<Vec<ProducerIdentity>> {
        let mut identities = Vec::new();
        for index in 0..self.args.producers {
            identities.push(ProducerIdentity::init(&self.cluster, &self.args, index).await?);
        }
        Ok(identities)
    }

    /// `buffers`: one free list of batch buffers per producer; `identities`: each one's
    /// producer id or transaction coordinator.
    fn spawn_producers(
        &self,
        timing: &Timing,
        buffers: Vec<BatchBuffers>,
        identities: Vec<ProducerIdentity>,
    ) -> JoinSet<Result<()>> {
        let args = &self.args;
        let record_bytes_max = args.record_bytes_max.unwrap_or(args.record_bytes);
        let payload = payload_pool(args.seed, record_bytes_max as usize);
        let keys = Arc::new(KeyGenerator::new(args.keys));
        let producers_n = u64::from(args.producers);
        let mut producers = JoinSet::new();
        for ((index, buffers), identity) in (0..args.producers).zip(buffers).zip(identities) {
            // An even split of --records, the remainder to the first producers.
            let share = |total: u64| {
                total / producers_n + u64::from(u64::from(index) < total % producers_n)
            };
            let schedule = match args.rate {
                Some(rate) => {
                    Schedule::open_loop(timing.start_us, rate / f64::from(args.producers))
                }
                None => Schedule::max_throughput(timing.start_us),
            };
            let config = ProducerConfig {
                index,
                acks: args.acks.wire(),
                compression: args.compression.0,
                linger: Duration::from_millis(args.linger_ms),
                batch_bytes: args.batch_bytes,
                request_bytes: args.request_bytes,
                buffer_bytes: args.buffer_bytes,
                in_flight_max: args.max_in_flight,
                idempotence: args.idempotent(),
                transaction_duration: Duration::from_millis(args.transaction_duration_ms),
                retries: args.retries,
                records: args.records.map(share),
                produce_until: timing.produce_until,
                schedule,
                sizes: SizeDistribution {
                    min: args.record_bytes,
                    max: record_bytes_max,
                },
                keys: keys.clone(),
                seed: args.seed,
                measure_from_us: timing.measure_from_us,
                abort_drain: ABORT_DRAIN,
            };
            let shared = ProducerShared {
                cluster: self.cluster.clone(),
                stats: self.stats.clone(),
                clock: self.clock,
                payload: payload.clone(),
                stop: self.stop_rx.clone(),
            };
            producers.spawn(run_producer(config, shared, buffers, identity));
        }
        producers
    }

    /// Tells the consumers where the log ends now that producing is over (or to stop).
    async fn announce_targets(&self, outcome: &mut Outcome) {
        if outcome.interrupted || outcome.first_error.is_some() {
            let _ = self.stop_tx.send(StopSignal::Abort);
            return;
        }
        match self.cluster.end_offsets().await {
            Ok(targets) => {
                let _ = self.targets_tx.send(Some(Arc::new(targets)));
            }
            Err(error) => {
                outcome
                    .first_error
                    .get_or_insert(error.context("end offsets"));
                let _ = self.stop_tx.send(StopSignal::Abort);
            }
        }
    }

    fn report(
        &self,
        start_time: String,
        timing: &Timing,
        at_window_start: Counters,
        produce_end: Instant,
        consume_end: Instant,
        interrupted: bool,
    ) -> Report {
        let args = &self.args;
        let stats = &self.stats;
        let total = stats.snapshot();
        let window_secs = |end: Instant| {
            end.saturating_duration_since(timing.measure_from)
                .as_secs_f64()
        };
        let produce = stats.produce.lock().expect("recorder lock");
        let end_to_end = stats.end_to_end.lock().expect("recorder lock");
        let transactions = self.transaction_version.map(|version| Transactions {
            version: version.number(),
            committed: stats.transactions_committed.load(Ordering::Relaxed),
            aborted: stats.transactions_aborted.load(Ordering::Relaxed),
            partitions: stats.transaction_partitions.load(Ordering::Relaxed),
            coordinator_retries: stats.coordinator_retries.load(Ordering::Relaxed),
            commit_latency: stats.commit.lock().expect("recorder lock").total.summary(),
        });
        let mut report = Report::build(
            args,
            start_time,
            Measured {
                total,
                records_behind_schedule: stats.records_behind_schedule.load(Ordering::Relaxed),
                at_window_start,
                measured_secs: window_secs(produce_end),
                elapsed_secs: produce_end.duration_since(timing.run_start).as_secs_f64(),
                produce_latency: produce.total.summary(),
                end_to_end_latency: (args.consumers > 0).then(|| end_to_end.total.summary()),
                transactions,
                errors: stats.errors(),
                interrupted,
                partitions: self.partitions,
                topic_created: self.topic_created,
                open_loop: args.rate.is_some(),
            },
        );
        if let Some(consume) = report.consume.as_mut() {
            // Consumers finish after the producers: their window ends when they do.
            let secs = window_secs(consume_end).max(1e-9);
            let window = total.minus(&at_window_start);
            consume.records_per_sec = window.records_consumed as f64 / secs;
            consume.bytes_per_sec = window.bytes_consumed as f64 / secs;
            consume.mb_per_sec = consume.bytes_per_sec / 1e6;
        }
        if args.plot.is_some() {
            report.plot_points = Some((
                produce.total.percentile_curve(),
                end_to_end.total.percentile_curve(),
            ));
        }
        report
    }
}

/// How the waiting phases ended.
#[derive(Default)]
struct Outcome {
    interrupted: bool,
    first_error: Option<anyhow::Error>,
}

impl Outcome {
    /// Waits for every producer; Ctrl-C tells them to abort (they drain for ABORT_DRAIN).
    async fn await_producers<F: std::future::Future<Output = ()>>(
        &mut self,
        producers: &mut JoinSet<Result<()>>,
        stop: &watch::Sender<StopSignal>,
        interrupt: &mut std::pin::Pin<&mut F>,
    ) {
        loop {
            tokio::select! {
                joined = producers.join_next() => match joined {
                    None => return,
                    Some(result) => note_error(&mut self.first_error, result, stop),
                },
                _ = interrupt.as_mut(), if !self.interrupted => {
                    self.interrupted = true;
                    eprintln!("loadgen: interrupted, draining (up to {ABORT_DRAIN:?})");
                    let _ = stop.send(StopSignal::Abort);
                }
            }
        }
    }

    /// Waits for the consumers to reach their targets, at most `--drain-secs`.
    async fn drain_consumers<F: std::future::Future<Output = ()>>(
        &mut self,
        consumers: &mut JoinSet<Result<()>>,
        run: &RunContext,
        interrupt: &mut std::pin::Pin<&mut F>,
    ) {
        let stop = &run.stop_tx;
        let deadline = tokio::time::sleep(Duration::from_secs_f64(run.args.drain_secs));
        tokio::pin!(deadline);
        let mut drain_expired = false;
        loop {
            tokio::select! {
                joined = consumers.join_next() => match joined {
                    None => return,
                    Some(result) => note_error(&mut self.first_error, result, stop),
                },
                _ = interrupt.as_mut(), if !self.interrupted => {
                    self.interrupted = true;
                    let _ = stop.send(StopSignal::Abort);
                }
                _ = &mut deadline, if !drain_expired => {
                    drain_expired = true;
                    eprintln!(
                        "loadgen: consumers did not reach the log end within {}s",
                        run.args.drain_secs
                    );
                    let _ = stop.send(StopSignal::Abort);
                }
            }
        }
    }
}

fn note_error(
    first_error: &mut Option<anyhow::Error>,
    result: Result<Result<()>, tokio::task::JoinError>,
    stop: &watch::Sender<StopSignal>,
) {
    let error = match result {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error,
        Err(join_error) => anyhow!("task failed: {join_error}"),
    };
    eprintln!("loadgen: {error:#}");
    first_error.get_or_insert(error);
    let _ = stop.send(StopSignal::Abort);
}

/// Writes the JSON report and the plot, if asked for.
pub fn write_outputs(args: &LoadgenArgs, report: &Report) -> Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let (produce, e2e) = report.plot_points.clone().unwrap_or_default();
        let mut series = vec![plot::Series {
            name: "produce ack",
            points: &produce,
        }];
        if !e2e.is_empty() {
            series.push(plot::Series {
                name: "end to end",
                points: &e2e,
            });
        }
        let title = format!(
            "loadgen {} ({} B, acks={}, {})",
            args.topic,
            args.record_bytes,
            args.acks,
            args.rate
                .map_or("max rate".to_string(), |r| format!("{r} rec/s"))
        );
        std::fs::write(path, plot::percentile_svg(&title, &series))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handling available: never report an interrupt.
        std::future::pending::<()>().await;
    }
}

async fn progress_loop(
    stats: Arc<Stats>,
    run_start: Instant,
    measure_from: Instant,
    window_start: Arc<Mutex<Option<Counters>>>,
    quiet: bool,
) {
    let mut previous = stats.snapshot();
    let mut previous_at = Instant::now();
    let mut tick =
        tokio::time::interval_at((run_start + PROGRESS_INTERVAL).into(), PROGRESS_INTERVAL);
    if measure_from <= run_start {
        *window_start.lock().expect("window lock") = Some(Counters::default());
    } else {
        let window_start = window_start.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            *window_start.lock().expect("window lock") = Some(stats.snapshot());
        });
    }
    loop {
        tick.tick().await;
        let now = Instant::now();
        let current = stats.snapshot();
        let delta = current.minus(&previous);
        let secs = now.duration_since(previous_at).as_secs_f64().max(1e-9);
        let (produce, e2e) = stats.take_interval();
        if !quiet {
            let warm = if now < measure_from { " (warm-up)" } else { "" };
            let mut line = format!(
                "[{:6.1}s]{warm} produce {:>9.0} rec/s {:>8.2} MB/s ack p50 {} p99 {} max {} us",
                now.duration_since(run_start).as_secs_f64(),
                delta.records_acked as f64 / secs,
                delta.bytes_acked as f64 / secs / 1e6,
                produce.p50,
                produce.p99,
                produce.max,
            );
            if current.records_consumed > 0 {
                line.push_str(&format!(
                    " | consume {:>9.0} rec/s e2e p50 {} p99 {} us",
                    delta.records_consumed as f64 / secs,
                    e2e.p50,
                    e2e.p99
                ));
            }
            let errors: u64 = stats.errors().values().sum();
            if errors > 0 {
                line.push_str(&format!(" | errors {errors}"));
            }
            eprintln!("{line}");
        }
        previous = current;
        previous_at = now;
    }
}

/// The latency line used in summaries (exported for `sluice loadgen` style output).
pub fn format_latency(summary: &stats::LatencySummary) -> String {
    latency_line(summary)
}
