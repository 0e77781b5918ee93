//! One producer: generates records on schedule, batches them per partition, sends pipelined
//! Produce requests to each partition's leader and records ack latency.
//!
//! Owns: its connections (one per leader it talks to), open batches, sealed batches waiting
//! for a send slot, in-flight requests, producer id and per-partition sequences, and with
//! `--transactional-id` its open transaction (the coordinator's side is in
//! `client::transaction`).
//! Invariants: at most one batch per partition per request (Kafka's rule for v2 batches) and
//! batches of one partition leave in sequence order; bytes buffered (open + ready + in
//! flight) stay under `buffer_bytes` (generation pauses, the schedule does not); no
//! allocation per record (a batch's buffer is reserved when it opens, and full-size ones are
//! reused once their batch is answered or given up).
//!
//! Transactions: a batch goes out only once its partition is in the open transaction (at
//! transaction version 1 one AddPartitionsToTxn for the partitions of the batches waiting,
//! before the first batch to each; at version 2 the partition is in as soon as a batch of it
//! waits: its first Produce (v12) adds it); `--transaction-duration-ms` after the first add
//! the transaction completes: no new batch goes out (generation goes on into the buffer), and
//! once every request of the transaction is answered (resends included) EndTxn commits it, or
//! aborts it if one of its batches was given up. At version 1 sequences run on across
//! transactions (same producer id and epoch: no epoch bump at commit); at version 2 each
//! EndTxn answers with the next producer id and epoch, every partition's sequence restarts at
//! 0, and the batches sealed while the transaction completed (still unsent) are stamped again
//! (`record_batch::restamp`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use kafka_wire::decode_response;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::args::{LoadgenArgs, TRANSACTION_TIMEOUT_MS};
use crate::client::cluster::topic_name;
use crate::client::connection::{CLIENT_ID, encode_frame_segmented};
use crate::client::transaction::TransactionCoordinator;
use crate::client::versions::TransactionVersion;
use crate::client::{Cluster, Connection, TopicLayout, error_codes};
use crate::keys::{KEY_BYTES_MAX, KeyGenerator, SizeDistribution, format_key, partition_for_key};
use crate::record_batch::{
    BatchBuffers, BatchBuilder, Compression, ProducerStamp, record_count, restamp,
};
use crate::schedule::{Clock, Schedule, latency_us};
use crate::stats::Stats;

/// Bytes at the start of each value: the due time (u64 µs since the epoch) and a marker.
pub const VALUE_HEADER_BYTES: usize = 12;
/// Marker after the timestamp so consumers only time loadgen's own records.
pub const VALUE_MAGIC: [u8; 4] = *b"SLG1";
/// Random payload the record values are sliced from.
pub const PAYLOAD_POOL_BYTES: usize = 1 << 20;
/// Records generated per loop turn before in-flight answers are looked at again.
const GENERATE_CHUNK: usize = 4096;
/// Wait before resending a batch after a retriable error.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Least time between two metadata refreshes of one producer.
const REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Broker-side timeout for acks=all produce requests.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// What the run asks of its producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Run,
    /// Stop generating, send what is buffered, wait for the answers.
    Finish,
    /// Ctrl-C: stop generating and give up after a short drain.
    Abort,
}

/// Settings of one producer, derived from the run's arguments.
#[derive(Clone)]
pub struct ProducerConfig {
    pub index: u32,
    pub acks: i16,
    pub compression: Compression,
    pub linger: Duration,
    pub batch_bytes: usize,
    pub request_bytes: usize,
    pub buffer_bytes: usize,
    pub in_flight_max: usize,
    pub idempotence: bool,
    /// How long a transaction stays open after its first partition is added (with a
    /// transaction coordinator, see [`run_producer`]).
    pub transaction_duration: Duration,
    pub retries: u32,
    /// Records this producer generates, if the run is bounded by count.
    pub records: Option<u64>,
    /// When generation stops, if the run is bounded by time.
    pub produce_until: Option<Instant>,
    pub schedule: Schedule,
    pub sizes: SizeDistribution,
    pub keys: Arc<KeyGenerator>,
    pub seed: u64,
    /// Latencies of records due before this (µs since the epoch) are warm-up.
    pub measure_from_us: u64,
    /// How long to wait for answers after an abort.
    pub abort_drain: Duration,
}

/// What a producer shares with the rest of the run.
#[derive(Clone)]
pub struct ProducerShared {
    pub cluster: Arc<Cluster>,
    pub stats: Arc<Stats>,
    pub clock: Clock,
    pub payload: Bytes,
    pub stop: watch::Receiver<StopSignal>,
}

/// A random payload pool: uppercase letters, like kafka-producer-perf-test's random payloads
/// (compressible about as much as typical text, not all-zero).
pub fn payload_pool(seed: u64, record_bytes_max: usize) -> Bytes {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_5eed);
    let mut pool = BytesMut::with_capacity(PAYLOAD_POOL_BYTES + record_bytes_max);
    for _ in 0..PAYLOAD_POOL_BYTES + record_bytes_max {
        pool.extend_from_slice(&[b'A' + rng.random_range(0..26u8)]);
    }
    pool.freeze()
}

/// A producer's free list of batch buffers. Free buffers hold at most `buffer_bytes`, memory
/// the producer may hold in batches. `prefault` (for producing as fast as possible, when the
/// buffer fills with full batches at once) fills the list with touched buffers, so the run
/// does not fault their pages in while the clock runs: call it before the clock starts.
pub fn batch_buffers(batch_bytes: usize, buffer_bytes: usize, prefault: bool) -> BatchBuffers {
    let mut buffers = BatchBuffers::new(batch_bytes, buffer_bytes / batch_bytes.max(1));
    if prefault {
        buffers.prefault();
    }
    buffers
}

/// Who a producer is to the brokers, settled before the clock starts (as the Java producer
/// gets its id before the first send completes, and ProducerPerformance calls
/// `initTransactions()` before its clock starts).
pub enum ProducerIdentity {
    /// No producer id: batches carry -1.
    None,
    /// InitProducerId without a transactional id.
    Idempotent {
        producer_id: i64,
        producer_epoch: i16,
    },
    /// A transactional id's coordinator, with the id and epoch it gave out.
    Transactional(TransactionCoordinator),
}

impl ProducerIdentity {
    /// Asks the brokers for producer `index`'s identity as `args` describe it.
    pub async fn init(cluster: &Cluster, args: &LoadgenArgs, index: u32) -> Result<Self> {
        Ok(if let Some(id) = args.transactional_id_of(index) {
            ProducerIdentity::Transactional(
                TransactionCoordinator::init(
                    cluster,
                    &id,
                    TRANSACTION_TIMEOUT_MS,
                    args.transaction_version(),
                )
                .await?,
            )
        } else if args.idempotent() {
            let (producer_id, producer_epoch) = cluster.init_producer_id().await?;
            ProducerIdentity::Idempotent {
                producer_id,
                producer_epoch,
            }
        } else {
            ProducerIdentity::None
        })
    }

    /// The transaction protocol version of a transactional producer.
    pub fn transaction_version(&self) -> Option<TransactionVersion> {
        match self {
            ProducerIdentity::Transactional(coordinator) => Some(coordinator.version()),
            _ => None,
        }
    }
}

/// Runs one producer until its records are generated and answered, or it is stopped.
/// `buffers`: its free list of batch buffers ([`batch_buffers`]).
pub async fn run_producer(
    config: ProducerConfig,
    shared: ProducerShared,
    buffers: BatchBuffers,
    identity: ProducerIdentity,
) -> Result<()> {
    let mut producer = Producer::new(config, shared, buffers, identity);
    producer.run().await
}

struct OpenBatch {
    builder: BatchBuilder,
    due_us: Vec<u64>,
    opened: Instant,
    buffered_bytes: usize,
    value_bytes: u64,
}

struct SealedBatch {
    /// Order of sealing within this producer: a retried batch goes back before later ones.
    seal_index: u64,
    partition: usize,
    data: Bytes,
    due_us: Vec<u64>,
    value_bytes: u64,
    buffered_bytes: usize,
    attempts: u32,
    not_before: Option<Instant>,
}

struct Answer {
    broker: i32,
    version: i16,
    batches: Vec<SealedBatch>,
    response: Result<Bytes>,
}

type InFlight = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A transactional producer's coordinator and open transaction.
struct Transaction {
    coordinator: TransactionCoordinator,
    duration: Duration,
    /// By partition: added to the open transaction.
    added: Vec<bool>,
    added_count: u64,
    /// When the open transaction's first partition was added; `None` between transactions.
    started: Option<Instant>,
    /// The open transaction is completing: only resends of its own batches go out.
    completing: bool,
    /// A batch of the open transaction was given up: it is aborted, not committed.
    failed: bool,
    /// Coordinator retries already added to the run's counter.
    retries_counted: u64,
}

impl Transaction {
    /// A partition's first batch of the open transaction goes out. At transaction version 2
    /// that Produce adds the partition: it will get a marker, and the transaction's time runs
    /// from the first one (version 1 counts both at AddPartitionsToTxn). An EndTxn then always
    /// ends a transaction the coordinator has partitions of.
    fn first_send(&mut self, now: Instant) {
        if self.coordinator.version() == TransactionVersion::V2 {
            self.added_count += 1;
            self.started.get_or_insert(now);
        }
    }

    /// Whether `batch` may be sent now (its partition is in the open transaction, and the
    /// transaction takes batches, or this one is a resend of its own).
    fn admits(&self, batch: &SealedBatch) -> bool {
        self.added[batch.partition] && (!self.completing || batch.attempts > 0)
    }
}
struct Producer {
    config: ProducerConfig,
    shared: ProducerShared,
    topic: TopicName,
    layout: TopicLayout,
    connections: HashMap<i32, Connection>,
    open: Vec<OpenBatch>,
    /// Buffers of answered batches, for the next ones.
    buffers: BatchBuffers,
    ready: VecDeque<SealedBatch>,
    in_flight: FuturesUnordered<InFlight>,
    sequences: Vec<i32>,
    producer_id: i64,
    producer_epoch: i16,
    rng: SmallRng,
    generated: u64,
    sealed: u64,
    buffered_bytes: usize,
    sticky_partition: usize,
    generating: bool,
    refresh_needed: bool,
    refreshed_at: Option<Instant>,
    /// Header pieces of Produce frames (the batches are not copied into frames).
    frame: BytesMut,
    /// The batches of the request being encoded, in request order.
    frame_batches: Vec<Bytes>,
    partition_taken: Vec<bool>,
    aborted_at: Option<Instant>,
    transaction: Option<Transaction>,
    /// Idempotent producers, by partition: a batch was acknowledged (of the open transaction,
    /// for a transactional one). Until then one batch of the partition is in flight at a time
    /// (`first_sent`: one went out). A Kafka leader takes any sequence as a producer's first
    /// on a partition, so if the first batch is answered with a retriable error
    /// (NOT_LEADER_OR_FOLLOWER on a just-created topic; NOT_ENOUGH_REPLICAS while a
    /// transaction's first batch is verified with the coordinator) and a pipelined later one
    /// is appended, the resend is OUT_OF_ORDER_SEQUENCE_NUMBER: seen on Kafka 4.3.1 in bench
    /// runs, an idempotent and a transactional one.
    first_acked: Vec<bool>,
    first_sent: Vec<bool>,
}

impl Producer {
    fn new(
        config: ProducerConfig,
        shared: ProducerShared,
        buffers: BatchBuffers,
        identity: ProducerIdentity,
    ) -> Producer {
        let layout = shared.cluster.layout();
        let partitions = layout.partitions();
        assert!(
            partitions > 0,
            "producer started before the topic has partitions"
        );
        let mut transaction = None;
        let (producer_id, producer_epoch) = match identity {
            ProducerIdentity::Transactional(coordinator) => {
                let identity = (coordinator.producer_id(), coordinator.producer_epoch());
                transaction = Some(Transaction {
                    retries_counted: 0,
                    coordinator,
                    duration: config.transaction_duration,
                    added: vec![false; partitions],
                    added_count: 0,
                    started: None,
                    completing: false,
                    failed: false,
                });
                identity
            }
            ProducerIdentity::Idempotent {
                producer_id,
                producer_epoch,
            } => (producer_id, producer_epoch),
            ProducerIdentity::None => (-1, -1),
        };
        let open = (0..partitions)
            .map(|_| OpenBatch {
                builder: BatchBuilder::with_capacity(config.batch_bytes),
                due_us: Vec::new(),
                opened: Instant::now(),
                buffered_bytes: 0,
                value_bytes: 0,
            })
            .collect();
        Producer {
            topic: topic_name(shared.cluster.topic()),
            rng: SmallRng::seed_from_u64(config.seed.wrapping_add(u64::from(config.index))),
            sticky_partition: config.index as usize % partitions,
            config,
            shared,
            layout,
            connections: HashMap::new(),
            open,
            buffers,
            ready: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            sequences: vec![0; partitions],
            producer_id,
            producer_epoch,
            generated: 0,
            sealed: 0,
            buffered_bytes: 0,
            generating: true,
            refresh_needed: false,
            refreshed_at: None,
            frame: BytesMut::new(),
            frame_batches: Vec::new(),
            partition_taken: vec![false; partitions],
            aborted_at: None,
            transaction,
            first_acked: vec![false; partitions],
            first_sent: vec![false; partitions],
        }
    }

    async fn run(&mut self) -> Result<()> {
        loop {
            let now = Instant::now();
            self.observe_stop(now);
            if let Some(aborted_at) = self.aborted_at
                && now >= aborted_at + self.config.abort_drain
            {
                return Ok(());
            }
            let more_now = if self.generating {
                self.generate(now)?
            } else {
                false
            };
            self.seal_lingering(now, !self.generating)?;
            if self.refresh_needed {
                self.refresh(now).await;
            }
            if self.transaction.is_some() {
                self.step_transaction(now).await?;
            }
            self.send_ready(now).await;
            if !self.generating
                && self.ready.is_empty()
                && self.in_flight.is_empty()
                && self.open.iter().all(|b| b.builder.is_empty())
                && self
                    .transaction
                    .as_ref()
                    .is_none_or(|t| t.started.is_none())
            {
                return Ok(());
            }
            if more_now {
                while let Some(Some(answer)) = self.in_flight.next().now_or_never() {
                    self.complete(answer);
                }
                tokio::task::yield_now().await;
                continue;
            }
            let wake = self.next_wake(now);
            let mut stop = self.shared.stop.clone();
            tokio::select! {
                biased;
                Some(answer) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.complete(answer);
                    while let Some(Some(answer)) = self.in_flight.next().now_or_never() {
                        self.complete(answer);
                    }
                }
                _ = stop.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Open loop only: records that fell due before generation stopped but were never
    /// generated (the producer was behind schedule); reported so a lagging run is not
    /// mistaken for a clean one.
    fn record_schedule_lag(&self, stopped_at: Instant) {
        if !self.config.schedule.is_open_loop() {
            return;
        }
        let until = self
            .config
            .produce_until
            .map_or(stopped_at, |u| u.min(stopped_at));
        let due = self
            .config
            .schedule
            .due_before(self.shared.clock.at_us(until))
            .min(self.config.records.unwrap_or(u64::MAX));
        let lag = due.saturating_sub(self.generated);
        self.shared
            .stats
            .records_behind_schedule
            .fetch_add(lag, Ordering::Relaxed);
    }

    fn observe_stop(&mut self, now: Instant) {
        let was_generating = self.generating;
        self.observe_stop_inner(now);
        if was_generating && !self.generating {
            self.record_schedule_lag(now);
        }
    }

    fn observe_stop_inner(&mut self, now: Instant) {
        // Marks the value seen, so the `changed()` of the clone made per wait stays pending.
        let signal = *self.shared.stop.borrow_and_update();
        if signal != StopSignal::Run {
            self.generating = false;
        }
        if signal == StopSignal::Abort && self.aborted_at.is_none() {
            self.aborted_at = Some(now);
        }
        if self.config.records.is_some_and(|n| self.generated >= n) {
            self.generating = false;
        }
    }

    /// Appends the records due by `now`; returns true if more could be generated at once.
    fn generate(&mut self, now: Instant) -> Result<bool> {
        let now_us = self.shared.clock.at_us(now);
        let schedule = self.config.schedule;
        let mut limit = schedule
            .due_by(now_us)
            .min(self.config.records.unwrap_or(u64::MAX));
        let past_end = self.config.produce_until.is_some_and(|until| now >= until);
        if let Some(until) = self.config.produce_until {
            // Records due at or after the end of the run are not part of it.
            limit = limit.min(schedule.due_before(self.shared.clock.at_us(until)));
        }
        // At the end, one last pass (bounded by the buffer) takes the records due before it;
        // whatever is still missing then is reported as lag, not chased past the end.
        let chunk = if past_end { usize::MAX } else { GENERATE_CHUNK };
        let mut made = 0;
        while self.generated < limit && self.has_room() && made < chunk {
            self.append_record(now, now_us)?;
            made += 1;
        }
        if self.config.records.is_some_and(|n| self.generated >= n) {
            self.generating = false;
        }
        if past_end && self.generating {
            self.generating = false;
            self.record_schedule_lag(now);
        }
        Ok(self.generating && !self.config.schedule.is_open_loop() && self.has_room())
    }

    /// Whether the buffer takes the next record. The Java producer takes a whole batch.size
    /// from buffer.memory when it opens a batch; likewise an unkeyed record that would open a
    /// new batch waits until the buffer holds a full batch more. Counting only record bytes
    /// instead, a producer at full speed followed every full batch with a batch of one record
    /// (opened with the last bytes of room) that lingered out while it waited for answers:
    /// half of all batches, each an append of its own at the broker. (Keyed records pick
    /// their partition from the key drawn for them, so they count record bytes only.)
    fn has_room(&self) -> bool {
        if self.buffered_bytes >= self.config.buffer_bytes {
            return false;
        }
        if self.config.keys.is_keyed() {
            return true;
        }
        let open = &self.open[self.sticky_partition].builder;
        let record_max = open.record_size(None, self.config.sizes.max as usize);
        let opens_batch =
            open.is_empty() || open.size_bytes() + record_max > self.config.batch_bytes;
        !opens_batch || self.buffered_bytes + self.config.batch_bytes <= self.config.buffer_bytes
    }

    fn append_record(&mut self, now: Instant, now_us: u64) -> Result<()> {
        let value_bytes = self.config.sizes.next(&mut self.rng) as usize;
        let mut key_buf = [0u8; KEY_BYTES_MAX];
        let key = self
            .config
            .keys
            .next_index(&mut self.rng)
            .map(|index| format_key(index, &mut key_buf) as &[u8]);
        let partitions = self.open.len();
        let mut partition = match key {
            Some(key) => partition_for_key(key, partitions),
            None => self.sticky_partition,
        };
        let due_us = self.config.schedule.due_us(self.generated, now_us);
        let mut header = [0u8; VALUE_HEADER_BYTES];
        header[..8].copy_from_slice(&due_us.to_be_bytes());
        header[8..].copy_from_slice(&VALUE_MAGIC);
        let prefix = &header[..value_bytes.min(VALUE_HEADER_BYTES)];
        let fill_bytes = value_bytes - prefix.len();
        let offset = self.rng.random_range(0..PAYLOAD_POOL_BYTES);
        let record_bytes = self.open[partition]
            .builder
            .record_size(key.map(<[u8]>::len), value_bytes);
        let open = &self.open[partition];
        if !open.builder.is_empty()
            && open.builder.size_bytes() + record_bytes > self.config.batch_bytes
        {
            self.seal(partition)?;
            if key.is_none() {
                // As the Java producer's sticky partitioning: a record that does not fit the
                // sticky partition's batch goes to the next partition (the seal moved the
                // sticky partition on), not into a new batch of this one that would wait
                // alone for its linger. Non-sticky partitions hold no open batch.
                partition = self.sticky_partition;
            }
        }
        let payload = &self.shared.payload;
        let open = &mut self.open[partition];
        if open.builder.is_empty() {
            open.opened = now;
        }
        open.builder.append(
            (due_us / 1000) as i64,
            key,
            prefix,
            &payload[offset..offset + fill_bytes],
        );
        open.due_us.push(due_us);
        open.buffered_bytes += record_bytes;
        open.value_bytes += value_bytes as u64;
        self.buffered_bytes += record_bytes;
        self.generated += 1;
        if open.builder.size_bytes() >= self.config.batch_bytes {
            self.seal(partition)?;
        }
        Ok(())
    }

    fn seal_lingering(&mut self, now: Instant, all: bool) -> Result<()> {
        for partition in 0..self.open.len() {
            let open = &self.open[partition];
            if !open.builder.is_empty() && (all || now >= open.opened + self.config.linger) {
                self.seal(partition)?;
            }
        }
        Ok(())
    }

    fn seal(&mut self, partition: usize) -> Result<()> {
        let open = &mut self.open[partition];
        let count = open.builder.record_count();
        let stamp = if self.config.idempotence {
            let base_sequence = self.sequences[partition];
            self.sequences[partition] = base_sequence.wrapping_add(count) & i32::MAX;
            ProducerStamp {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence,
                transactional: self.transaction.is_some(),
            }
        } else {
            ProducerStamp::NONE
        };
        let data = open
            .builder
            .seal_reusing(self.config.compression, stamp, &mut self.buffers)
            .context("sealing a batch")?;
        let due_us = std::mem::replace(&mut open.due_us, Vec::with_capacity(count as usize));
        let value_bytes = std::mem::take(&mut open.value_bytes);
        let buffered_bytes = std::mem::take(&mut open.buffered_bytes);
        self.sealed += 1;
        self.ready.push_back(SealedBatch {
            seal_index: self.sealed,
            partition,
            data,
            due_us,
            value_bytes,
            buffered_bytes,
            attempts: 0,
            not_before: None,
        });
        if partition == self.sticky_partition {
            self.sticky_partition = (self.sticky_partition + 1) % self.open.len();
        }
        Ok(())
    }

    async fn refresh(&mut self, now: Instant) {
        if self
            .refreshed_at
            .is_some_and(|at| now < at + REFRESH_INTERVAL_MIN)
        {
            return;
        }
        self.refreshed_at = Some(now);
        match self.shared.cluster.refresh().await {
            Ok(_) => {
                self.layout = self.shared.cluster.layout();
                self.refresh_needed = false;
            }
            Err(_) => self.shared.stats.error(error_codes::NETWORK_EXCEPTION, 1),
        }
    }

    async fn connection(&mut self, broker: i32) -> Option<Connection> {
        if let Some(connection) = self.connections.get(&broker) {
            return Some(connection.clone());
        }
        let addr = self.layout.brokers.get(&broker)?.clone();
        match Connection::connect(&addr, self.config.in_flight_max).await {
            Ok(connection) => {
                self.connections.insert(broker, connection.clone());
                Some(connection)
            }
            Err(_) => {
                self.shared.stats.error(error_codes::NETWORK_EXCEPTION, 1);
                self.refresh_needed = true;
                None
            }
        }
    }

    /// Sends as many requests as free in-flight slots allow.
    async fn send_ready(&mut self, now: Instant) {
        loop {
            let Some((broker, connection, permit)) = self.pick_broker(now).await else {
                return;
            };
            let batches = self.take_batches_for(broker, now);
            // pick_broker and take_batches_for apply the same order rule.
            assert!(!batches.is_empty(), "a picked broker has a sendable batch");
            let Ok(mut version) = connection.version_for(ApiKey::Produce) else {
                self.fail_batches(batches, error_codes::NETWORK_EXCEPTION);
                continue;
            };
            let transactional_id = self
                .transaction
                .as_ref()
                .map(|t| t.coordinator.transactional_id().clone());
            if let Some(transaction) = &self.transaction {
                let Some(at) = transaction.coordinator.version().produce_version(version) else {
                    // TransactionCoordinator::init checked the coordinator; this leader differs.
                    warn(&format!(
                        "broker {broker} serves Produce up to v{version}: too old for \
                         transaction version 2"
                    ));
                    self.fail_batches(batches, error_codes::UNSUPPORTED_VERSION);
                    continue;
                };
                version = at;
            }
            let request = ProduceRequest::default()
                .with_transactional_id(transactional_id)
                .with_acks(self.config.acks)
                .with_timeout_ms(PRODUCE_TIMEOUT_MS)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(self.topic.clone())
                        .with_partition_data(
                            batches
                                .iter()
                                .map(|b| {
                                    PartitionProduceData::default()
                                        .with_index(b.partition as i32)
                                        .with_records(Some(b.data.clone()))
                                })
                                .collect(),
                        ),
                ]);
            let correlation_id = connection.next_correlation_id();
            self.frame_batches.clear();
            self.frame_batches
                .extend(batches.iter().map(|b| b.data.clone()));
            let encoded = encode_frame_segmented(
                &mut self.frame,
                &request,
                version,
                correlation_id,
                CLIENT_ID,
                &self.frame_batches,
            );
            // Drop the request's and the list's clones of the batches now: once the frame is
            // written only `batches` holds them, so `recycle` gets their buffers back.
            self.frame_batches.clear();
            drop(request);
            let frame = match encoded {
                Ok(frame) => frame,
                Err(error) => {
                    warn(&format!("encoding a produce request: {error:#}"));
                    self.fail_batches(batches, -1);
                    continue;
                }
            };
            let first_attempt: u64 = batches
                .iter()
                .filter(|b| b.attempts == 0)
                .map(|b| b.due_us.len() as u64)
                .sum();
            let expects_response = self.config.acks != 0;
            let sent = connection.send_frame(frame, expects_response, permit).await;
            let stats = &self.shared.stats;
            stats
                .records_sent
                .fetch_add(first_attempt, Ordering::Relaxed);
            stats.requests_sent.fetch_add(1, Ordering::Relaxed);
            let future: InFlight = match sent {
                Ok(receiver) => Box::pin(async move {
                    let response = match receiver.await {
                        Ok(response) => response,
                        Err(_) => Err(anyhow::anyhow!("connection dropped the request")),
                    };
                    Answer {
                        broker,
                        version,
                        batches,
                        response,
                    }
                }),
                Err(error) => Box::pin(std::future::ready(Answer {
                    broker,
                    version,
                    batches,
                    response: Err(error),
                })),
            };
            self.in_flight.push(future);
        }
    }

    /// The first ready batch's leader that has a free in-flight slot.
    async fn pick_broker(
        &mut self,
        now: Instant,
    ) -> Option<(i32, Connection, tokio::sync::OwnedSemaphorePermit)> {
        let mut tried: Vec<i32> = Vec::new();
        // A batch can go only if no earlier batch of its partition is waiting (order).
        let mut partition_seen = vec![false; self.open.len()];
        for index in 0..self.ready.len() {
            let batch = &self.ready[index];
            let partition = batch.partition;
            let blocked = std::mem::replace(&mut partition_seen[partition], true);
            let held = self.transaction.as_ref().is_some_and(|t| !t.admits(batch))
                || self.first_in_flight(batch);
            if blocked || held || batch.not_before.is_some_and(|t| now < t) {
                continue;
            }
            let Some(broker) = self.layout.leaders.get(partition).copied().flatten() else {
                self.refresh_needed = true;
                continue;
            };
            if tried.contains(&broker) {
                continue;
            }
            tried.push(broker);
            let Some(connection) = self.connection(broker).await else {
                continue;
            };
            if let Some(permit) = connection.try_acquire() {
                return Some((broker, connection, permit));
            }
        }
        None
    }

    /// Removes from `ready` the batches for `broker` that go into one request: at most one
    /// per partition, in order, up to `request_bytes`.
    fn take_batches_for(&mut self, broker: i32, now: Instant) -> Vec<SealedBatch> {
        self.partition_taken.fill(false);
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        let mut index = 0;
        while index < self.ready.len() {
            let batch = &self.ready[index];
            let partition = batch.partition;
            let leader = self.layout.leaders.get(partition).copied().flatten();
            let eligible = leader == Some(broker)
                && !self.partition_taken[partition]
                && batch.not_before.is_none_or(|t| now >= t)
                && self.transaction.as_ref().is_none_or(|t| t.admits(batch))
                && !self.first_in_flight(batch)
                && (taken.is_empty() || bytes + batch.data.len() <= self.config.request_bytes);
            // Whatever the outcome, later batches of this partition wait for this one.
            self.partition_taken[partition] = true;
            if eligible {
                bytes += batch.data.len();
                if !std::mem::replace(&mut self.first_sent[partition], true)
                    && let Some(transaction) = self.transaction.as_mut()
                {
                    transaction.first_send(now);
                }
                taken.push(self.ready.remove(index).expect("index in range"));
            } else {
                index += 1;
            }
        }
        taken
    }

    fn complete(&mut self, answer: Answer) {
        let acked_us = self.shared.clock.now_us();
        let Answer {
            broker,
            version,
            batches,
            response,
        } = answer;
        let body = match response {
            Ok(body) => body,
            Err(_) => {
                self.connections.remove(&broker);
                self.refresh_needed = true;
                for batch in batches {
                    self.retry_or_fail(batch, error_codes::NETWORK_EXCEPTION);
                }
                return;
            }
        };
        if self.config.acks == 0 {
            self.acknowledge(batches, acked_us);
            return;
        }
        let mut body = body;
        let response = match decode_response::<ProduceRequest>(&mut body, version) {
            Ok(response) => response,
            Err(_) => {
                self.connections.remove(&broker);
                self.fail_batches(batches, error_codes::CORRUPT_RESPONSE);
                return;
            }
        };
        let mut codes: Vec<(i32, i16)> = Vec::with_capacity(batches.len());
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                codes.push((partition.index, partition.error_code));
            }
        }
        let mut acknowledged = Vec::with_capacity(batches.len());
        for batch in batches {
            let code = codes
                .iter()
                .find(|(p, _)| *p == batch.partition as i32)
                .map(|(_, code)| *code)
                .unwrap_or(error_codes::CORRUPT_RESPONSE);
            if code == 0 {
                acknowledged.push(batch);
            } else {
                self.retry_or_fail(batch, code);
            }
        }
        self.acknowledge(acknowledged, acked_us);
    }

    fn acknowledge(&mut self, batches: Vec<SealedBatch>, acked_us: u64) {
        if batches.is_empty() {
            return;
        }
        for batch in &batches {
            self.first_acked[batch.partition] = true;
        }
        let stats = &self.shared.stats;
        let mut records = 0u64;
        let mut bytes = 0u64;
        {
            let mut recorder = stats.produce.lock().expect("recorder lock");
            for batch in &batches {
                for &due_us in &batch.due_us {
                    let measured = due_us >= self.config.measure_from_us;
                    recorder.record_n(latency_us(due_us, acked_us), 1, measured);
                }
                records += batch.due_us.len() as u64;
                bytes += batch.value_bytes;
            }
        }
        for batch in batches {
            self.buffered_bytes -= batch.buffered_bytes;
            self.buffers.recycle(batch.data);
        }
        stats.records_acked.fetch_add(records, Ordering::Relaxed);
        stats.bytes_acked.fetch_add(bytes, Ordering::Relaxed);
    }

    fn retry_or_fail(&mut self, mut batch: SealedBatch, code: i16) {
        self.shared.stats.error(code, 1);
        if error_codes::needs_metadata_refresh(code) {
            self.refresh_needed = true;
        }
        let retriable = code == error_codes::NETWORK_EXCEPTION || error_codes::is_retriable(code);
        if retriable && batch.attempts < self.config.retries && self.aborted_at.is_none() {
            batch.attempts += 1;
            batch.not_before = Some(Instant::now() + RETRY_BACKOFF);
            // Back in sealing order, ahead of every later batch (answers to pipelined
            // requests arrive in order, so several retried batches keep their order too).
            let at = self
                .ready
                .iter()
                .position(|b| b.seal_index > batch.seal_index)
                .unwrap_or(self.ready.len());
            self.ready.insert(at, batch);
        } else {
            self.fail_batches(vec![batch], 0);
        }
    }

    /// Gives up on batches; `code` (if non-zero) is counted as an error first. The open
    /// transaction, if any, will be aborted.
    fn fail_batches(&mut self, batches: Vec<SealedBatch>, code: i16) {
        if let Some(transaction) = self.transaction.as_mut()
            && !batches.is_empty()
        {
            transaction.failed = true;
        }
        for batch in batches {
            if code != 0 {
                self.shared.stats.error(code, 1);
            }
            self.shared
                .stats
                .records_failed
                .fetch_add(batch.due_us.len() as u64, Ordering::Relaxed);
            self.buffered_bytes -= batch.buffered_bytes;
            self.buffers.recycle(batch.data);
        }
    }

    /// Whether `batch` waits because its partition's first batch (see `first_acked`) is
    /// still unanswered; a resend never waits.
    fn first_in_flight(&self, batch: &SealedBatch) -> bool {
        let p = batch.partition;
        self.config.idempotence && !self.first_acked[p] && self.first_sent[p] && batch.attempts == 0
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_millis(100);
        if self.generating && self.buffered_bytes < self.config.buffer_bytes {
            if self.config.schedule.is_open_loop() {
                let due_us = self.config.schedule.due_us(self.generated, 0);
                wake = wake.min(self.shared.clock.instant_at(due_us));
            }
            if let Some(until) = self.config.produce_until {
                wake = wake.min(until);
            }
        }
        for open in &self.open {
            if !open.builder.is_empty() {
                wake = wake.min(open.opened + self.config.linger);
            }
        }
        for batch in &self.ready {
            if let Some(not_before) = batch.not_before {
                wake = wake.min(not_before);
            }
        }
        if let Some(aborted_at) = self.aborted_at {
            wake = wake.min(aborted_at + self.config.abort_drain);
        }
        if let Some(transaction) = &self.transaction
            && let Some(started) = transaction.started
            && !transaction.completing
        {
            wake = wake.min(started + transaction.duration);
        }
        wake.max(now)
    }

    /// Moves the open transaction on: starts completing it when its time is up (or the run
    /// has nothing more to send), ends it once everything of it is answered, and adds the
    /// partitions of waiting batches that are not in it yet.
    async fn step_transaction(&mut self, now: Instant) -> Result<()> {
        let finishing = !self.generating
            && self.ready.is_empty()
            && self.open.iter().all(|b| b.builder.is_empty());
        let answered = self.in_flight.is_empty() && !self.ready.iter().any(|b| b.attempts > 0);
        let Some(transaction) = self.transaction.as_mut() else {
            return Ok(());
        };
        if let Some(started) = transaction.started
            && !transaction.completing
            && (now >= started + transaction.duration || finishing)
        {
            transaction.completing = true;
        }
        if transaction.completing && answered {
            self.end_transaction().await?;
        }
        self.add_waiting_partitions().await
    }

    /// EndTxn: commit, or abort if a batch of the transaction was given up.
    async fn end_transaction(&mut self) -> Result<()> {
        let transaction = self.transaction.as_mut().expect("a transactional producer");
        let commit = !transaction.failed;
        let sent = Instant::now();
        let started_us = self
            .shared
            .clock
            .at_us(transaction.started.expect("an open transaction"));
        let ended = transaction
            .coordinator
            .end(&self.shared.cluster, commit)
            .await;
        let stats = &self.shared.stats;
        let retries = transaction.coordinator.retries();
        stats
            .coordinator_retries
            .fetch_add(retries - transaction.retries_counted, Ordering::Relaxed);
        transaction.retries_counted = retries;
        ended?;
        if commit {
            let latency = sent.elapsed().as_micros() as u64;
            let measured = started_us >= self.config.measure_from_us;
            stats
                .commit
                .lock()
                .expect("recorder lock")
                .record_n(latency, 1, measured);
            stats
                .transaction_partitions
                .fetch_add(transaction.added_count, Ordering::Relaxed);
            stats.transactions_committed.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.transactions_aborted.fetch_add(1, Ordering::Relaxed);
        }
        transaction.added.fill(false);
        transaction.added_count = 0;
        transaction.started = None;
        transaction.completing = false;
        transaction.failed = false;
        // Each transaction's first batch to a partition is verified anew (KIP-890).
        self.first_acked.fill(false);
        self.first_sent.fill(false);
        if transaction.coordinator.version() == TransactionVersion::V2 {
            self.producer_id = transaction.coordinator.producer_id();
            self.producer_epoch = transaction.coordinator.producer_epoch();
            self.sequences.fill(0);
            self.restamp_ready();
        }
        Ok(())
    }

    /// Stamps the waiting batches (all unsent: the transaction they were sealed in ended with
    /// every request answered) with the producer id and epoch now in use and the partitions'
    /// sequences from where they stand, in sealing order.
    fn restamp_ready(&mut self) {
        for batch in self.ready.iter_mut() {
            assert_eq!(batch.attempts, 0, "a resend outlived its transaction");
            let base_sequence = self.sequences[batch.partition];
            let count = record_count(&batch.data);
            self.sequences[batch.partition] = base_sequence.wrapping_add(count) & i32::MAX;
            let stamp = ProducerStamp {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence,
                transactional: true,
            };
            batch.data = restamp(std::mem::take(&mut batch.data), stamp);
        }
    }

    /// AddPartitionsToTxn for the partitions of ready batches not in the open transaction
    /// (none while it completes: those batches wait for the next one).
    async fn add_waiting_partitions(&mut self) -> Result<()> {
        let transaction = self.transaction.as_mut().expect("a transactional producer");
        if transaction.completing {
            return Ok(());
        }
        let mut missing: Vec<i32> = Vec::new();
        for batch in &self.ready {
            let partition = batch.partition as i32;
            if !transaction.added[batch.partition] && !missing.contains(&partition) {
                missing.push(partition);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if transaction.coordinator.version() == TransactionVersion::V2 {
            // The partition's first Produce (v12) adds it (the Java producer's
            // `maybeAddPartition` at transaction version 2); it counts, and the transaction's
            // time runs, from that first send ([`Transaction::first_send`]).
            for &partition in &missing {
                transaction.added[partition as usize] = true;
            }
            return Ok(());
        }
        let first = transaction.started.is_none();
        let added = transaction
            .coordinator
            .add_partitions(&self.shared.cluster, &self.topic, &missing, first)
            .await;
        let retries = transaction.coordinator.retries();
        self.shared
            .stats
            .coordinator_retries
            .fetch_add(retries - transaction.retries_counted, Ordering::Relaxed);
        transaction.retries_counted = retries;
        added?;
        for &partition in &missing {
            transaction.added[partition as usize] = true;
        }
        transaction.added_count += missing.len() as u64;
        // The transaction's time runs from its first answered add.
        transaction.started.get_or_insert_with(Instant::now);
        Ok(())
    }
}

/// loadgen reports to stderr (the progress line lives there too); no tracing subscriber.
fn warn(message: &str) {
    eprintln!("loadgen: {message}");
}
