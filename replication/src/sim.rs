//! A seeded deterministic simulator: N broker nodes, one controller, a producer and a consumer
//! on a faulty in-memory network, with an in-memory model log per replica.
//!
//! Owns: the event loop (a time-ordered queue; ties broken by insertion order), the network
//! model (delays, reordering, drops, partitions), the disk model (page cache vs. durable
//! prefix; a crash keeps only the durable prefix and the last checkpointed high watermark),
//! fault injection (crashes, restarts, power cuts, partitions, slow controller links, disk
//! stalls), the clients, and the
//! invariant checks. The same seed always gives the same run.
//! Does not own: any replication logic; it only drives `Node` (the shipped `BrokerLifecycle`
//! and `Replica`s) and `Controller`. Compiled only with the `sim` feature (this crate's tests).
//!
//! Invariants checked while running (`Violation` on the first failure):
//! - no two replicas (or two incarnations of one) lead a partition in the same leader epoch,
//!   and a replica leads only epochs the controller elected it for;
//! - a replica the controller elects holds, at that moment, every committed batch
//!   (acknowledged acks=all or seen by the consumer) at its offset, with one exception, the
//!   contract Kafka has too: a batch only *seen by the consumer* (never acknowledged acks=all)
//!   may be missing when the replica elected is the only ISR member and lost that batch from
//!   its page cache in a crash (power loss: the high watermark counts the leader's log end,
//!   not its durable offset). Such a loss is counted (`SimReport::lone_leader_losses`), the
//!   batches stop counting as committed, and the consumer goes back to the new log end;
//! - no member of the current ISR truncates a committed batch away;
//! - the consumer sees only batches below the high watermark it is told, and that high
//!   watermark never goes backwards; what it reads agrees with what was acknowledged;
//! - a high watermark never exceeds the replica's log end offset.
//!
//! After the fault phase the network heals and every node runs; then, at the end:
//! - every partition has a leader, the ISR holds every replica, all replicas hold identical
//!   logs that contain every committed batch, the leader's high watermark is its log end
//!   offset, and the consumer has read up to it.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use crate::config::{ControllerConfig, Durability, ReplicaConfig};
use crate::controller::{Controller, ControllerInput};
use crate::epoch_cache::EpochCache;
use crate::message::{Action, FetchData, Message};
use crate::node::{Node, NodeInput};
use crate::replica::{RecoveredLog, Role};
use crate::types::{Acks, Address, Batch, LeaderEpoch, NodeId, PartitionId, ReplicaError};

/// How the model disk makes appends durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushModel {
    /// A `RequestDurable` schedules one sync for the node after a random latency in
    /// `[min, max]` ms (group commit: it covers everything written by then); one sync in
    /// `stall_one_in` stalls for up to `stall_ms` more (a slow disk makes followers lag).
    OnRequest {
        latency_ms_min: i64,
        latency_ms_max: i64,
        stall_one_in: u64,
        stall_ms: i64,
    },
    /// Syncs every `interval_ms` whatever is asked (Kafka's flush by interval).
    Interval { interval_ms: i64 },
}

/// Which faults the fault phase injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    pub crashes: bool,
    /// Crash every node at once (all unsynced tails lost together).
    pub power_cuts: bool,
    pub partitions: bool,
    pub drops: bool,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub partitions: u32,
    pub replication_factor: usize,
    pub replica: ReplicaConfig,
    pub controller: ControllerConfig,
    pub flush: FlushModel,
    pub faults: Faults,
    /// Length of the fault phase (producing, faults on), then of the healed phase.
    pub fault_phase_ms: i64,
    pub heal_phase_ms: i64,
    pub tick_ms: i64,
    pub net_delay_ms_min: i64,
    pub net_delay_ms_max: i64,
    /// One message in this many is delayed by up to `long_delay_ms` (stale deliveries).
    pub long_delay_one_in: u64,
    pub long_delay_ms: i64,
    pub produce_interval_ms_max: i64,
    /// Print every event to stderr.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            partitions: 2,
            replication_factor: 3,
            replica: ReplicaConfig {
                replica_lag_time_max_ms: 400,
                min_insync_replicas: 2,
                fetch_backoff_ms: 20,
                empty_fetch_backoff_ms: 20,
                request_timeout_ms: 150,
                produce_timeout_ms: 1_000,
                heartbeat_interval_ms: 50,
                durability: Durability::Fsync,
            },
            controller: ControllerConfig {
                broker_session_timeout_ms: 300,
                unclean_leader_election: false,
            },
            flush: FlushModel::OnRequest {
                latency_ms_min: 1,
                latency_ms_max: 8,
                stall_one_in: 100,
                stall_ms: 800,
            },
            faults: Faults {
                crashes: true,
                power_cuts: true,
                partitions: true,
                drops: true,
            },
            fault_phase_ms: 12_000,
            heal_phase_ms: 6_000,
            tick_ms: 10,
            net_delay_ms_min: 1,
            net_delay_ms_max: 15,
            long_delay_one_in: 50,
            long_delay_ms: 600,
            produce_interval_ms_max: 20,
            trace: false,
        }
    }
}

/// A broken invariant, with what it takes to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub at_ms: i64,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} violated an invariant at t={} ms: {}\n  replay: SLUICE_SIM_SEED={} cargo test -p replication --test sim -- invariants_hold --nocapture (add SLUICE_SIM_TRACE=1 for every event)",
            self.seed, self.at_ms, self.what, self.seed
        )
    }
}

/// What one run did, to show the faults were exercised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub events: u64,
    pub produced: u64,
    /// acks=all batches acknowledged.
    pub acked: u64,
    /// acks=1 batches acknowledged (not counted as committed).
    pub acked_leader_only: u64,
    pub not_enough_replicas: u64,
    pub consumed_batches: u64,
    pub elections: u64,
    pub crashes: u64,
    pub truncations: u64,
    pub truncated_batches: u64,
    pub isr_changes: u64,
    pub dropped_messages: u64,
    /// From a leader's crash to the next replica leading that partition (simulated time).
    pub failovers: u64,
    pub failover_ms_total: u64,
    pub failover_ms_max: u64,
    /// Elections of a lone ISR member that lost consumed (never acks=all acknowledged)
    /// batches from its page cache in a crash: Kafka's RF=1-style loss, allowed.
    pub lone_leader_losses: u64,
}

impl SimReport {
    pub fn add(&mut self, other: &SimReport) {
        self.events += other.events;
        self.produced += other.produced;
        self.acked += other.acked;
        self.acked_leader_only += other.acked_leader_only;
        self.not_enough_replicas += other.not_enough_replicas;
        self.consumed_batches += other.consumed_batches;
        self.elections += other.elections;
        self.crashes += other.crashes;
        self.truncations += other.truncations;
        self.truncated_batches += other.truncated_batches;
        self.isr_changes += other.isr_changes;
        self.dropped_messages += other.dropped_messages;
        self.failovers += other.failovers;
        self.failover_ms_total += other.failover_ms_total;
        self.failover_ms_max = self.failover_ms_max.max(other.failover_ms_max);
        self.lone_leader_losses += other.lone_leader_losses;
    }
}

/// Runs one seed to the end, or to the first violation.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, Violation> {
    let mut world = World::new(seed, config.clone());
    world.run();
    match world.violation {
        Some(what) => Err(Violation {
            seed,
            at_ms: world.now_ms,
            what,
        }),
        None => Ok(world.report),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers below: randomness, the model log, the event queue, the world.

/// SplitMix64: tiny, fast, and fixed forever (so a seed replays across Rust and crate versions).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi);
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// One replica's log on the model disk.
#[derive(Default)]
struct ModelLog {
    batches: Vec<Batch<u64>>,
    /// Batches `[0, durable)` survive a crash.
    durable: usize,
    high_watermark: i64,
    /// The high watermark as of the last sync (what recovery starts from).
    high_watermark_checkpoint: i64,
}

impl ModelLog {
    fn end_offset(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.next_offset())
    }

    fn append(&mut self, batch: Batch<u64>) -> Result<(), String> {
        if batch.base_offset != self.end_offset() {
            return Err(format!(
                "append at {} but the log ends at {}",
                batch.base_offset,
                self.end_offset()
            ));
        }
        self.batches.push(batch);
        Ok(())
    }

    /// Index of the batch starting at `offset`, or `len` at the end; `None` if mid-batch.
    fn boundary(&self, offset: i64) -> Option<usize> {
        let index = self.batches.partition_point(|b| b.base_offset < offset);
        let on_boundary = self
            .batches
            .get(index)
            .map_or(offset == self.end_offset(), |b| b.base_offset == offset);
        on_boundary.then_some(index)
    }

    fn read(
        &self,
        from_offset: i64,
        max_offset: i64,
        max_batches: usize,
    ) -> Option<Vec<Batch<u64>>> {
        let start = self.boundary(from_offset)?;
        Some(
            self.batches[start..]
                .iter()
                .take_while(|b| b.next_offset() <= max_offset)
                .take(max_batches)
                .cloned()
                .collect(),
        )
    }

    fn sync(&mut self) {
        self.durable = self.batches.len();
        self.high_watermark_checkpoint = self.high_watermark.min(self.end_offset());
    }

    fn crash(&mut self) {
        self.batches.truncate(self.durable);
        self.high_watermark = self.high_watermark_checkpoint.min(self.end_offset());
    }

    fn recovered(&self) -> RecoveredLog {
        RecoveredLog {
            log_end_offset: self.end_offset(),
            high_watermark: self.high_watermark,
            epochs: EpochCache::from_entries(
                self.batches.iter().map(|b| (b.leader_epoch, b.base_offset)),
            ),
        }
    }

    fn contains(&self, base_offset: i64, payload: u64) -> bool {
        self.boundary(base_offset)
            .and_then(|i| self.batches.get(i))
            .is_some_and(|b| b.payload == payload)
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: Address,
        to: Address,
        to_incarnation: u64,
        message: Message<u64>,
    },
    NodeTick {
        node: usize,
        incarnation: u64,
    },
    ControllerTick,
    Flush {
        node: usize,
        incarnation: u64,
    },
    Restart {
        node: usize,
    },
    Fault,
    Heal,
    EndFaultPhase,
    Produce,
    ConsumerPoll,
}

struct Scheduled {
    at_ms: i64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

struct SimNode {
    id: NodeId,
    incarnation: u64,
    core: Option<Node>,
    logs: BTreeMap<PartitionId, ModelLog>,
    flush_scheduled: bool,
}

/// The client's view of a partition's leader (its last Metadata answer).
#[derive(Clone, Copy, Default)]
struct LeaderView {
    leader: Option<NodeId>,
    leader_epoch: Option<LeaderEpoch>,
}

struct InFlightProduce {
    partition: PartitionId,
    payload: u64,
    record_count: u32,
    acks: Acks,
}

/// A batch known committed, at its base offset.
#[derive(Clone, Copy)]
struct Committed {
    payload: u64,
    record_count: u32,
    /// Acknowledged acks=all (else only read by the consumer).
    acked: bool,
}

#[derive(Default)]
struct ConsumerPartition {
    view: LeaderView,
    position: i64,
    high_watermark: i64,
    in_flight: Option<(u64, i64)>,
}

const PRODUCER: u32 = 0;
const CONSUMER: u32 = 1;
const METADATA_REFRESH_MS: i64 = 200;
const CONSUMER_REQUEST_TIMEOUT_MS: i64 = 300;

struct World {
    config: SimConfig,
    rng: Rng,
    now_ms: i64,
    next_seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    controller: Controller,
    /// Network partition: a group per address; messages cross only within a group.
    groups: BTreeMap<Address, u8>,
    drop_percent: u64,
    /// Messages to and from the controller take 50-700 ms more (a distant or busy quorum).
    slow_controller: bool,
    faults_on: bool,
    producing: bool,
    // Producer.
    producer_view: BTreeMap<PartitionId, LeaderView>,
    producer_refreshed_ms: Option<i64>,
    in_flight_produces: BTreeMap<u64, InFlightProduce>,
    next_request_id: u64,
    next_payload: u64,
    // Consumer.
    consumer: BTreeMap<PartitionId, ConsumerPartition>,
    // Invariant state.
    /// Batches known committed: acknowledged acks=all or read by the consumer.
    committed: BTreeMap<PartitionId, BTreeMap<i64, Committed>>,
    /// (base offset, payload) of the batches each node's replica lost from its page cache
    /// in a crash.
    lost_in_crash: BTreeMap<(NodeId, PartitionId), Vec<(i64, u64)>>,
    leaders: BTreeMap<(PartitionId, LeaderEpoch), (NodeId, u64)>,
    /// Whom the controller elected in each (partition, leader epoch).
    elected: BTreeMap<(PartitionId, LeaderEpoch), NodeId>,
    /// When a partition's leader crashed, until the next leader takes over.
    leader_crashed_ms: BTreeMap<PartitionId, i64>,
    violation: Option<String>,
    report: SimReport,
}

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        assert!(config.replication_factor <= config.nodes);
        config.replica.validate().expect("valid replica config");
        config
            .controller
            .validate(config.replica.heartbeat_interval_ms)
            .expect("valid controller config");
        let mut controller = Controller::new(config.controller);
        let mut nodes: Vec<SimNode> = (0..config.nodes)
            .map(|i| SimNode {
                id: NodeId(i as i32),
                incarnation: 0,
                core: None,
                logs: BTreeMap::new(),
                flush_scheduled: false,
            })
            .collect();
        for p in 0..config.partitions {
            let partition = PartitionId(p);
            let replicas: Vec<NodeId> = (0..config.replication_factor)
                .map(|r| NodeId(((p as usize + r) % config.nodes) as i32))
                .collect();
            for r in &replicas {
                nodes[r.0 as usize]
                    .logs
                    .insert(partition, ModelLog::default());
            }
            controller.create_partition(partition, replicas);
        }
        let mut world = World {
            rng: Rng(seed ^ 0x5EED_5EED_5EED_5EED),
            now_ms: 0,
            next_seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            controller,
            groups: BTreeMap::new(),
            drop_percent: 0,
            slow_controller: false,
            faults_on: true,
            producing: true,
            producer_view: BTreeMap::new(),
            producer_refreshed_ms: None,
            in_flight_produces: BTreeMap::new(),
            next_request_id: 1,
            next_payload: 1,
            consumer: (0..config.partitions)
                .map(|p| (PartitionId(p), ConsumerPartition::default()))
                .collect(),
            committed: BTreeMap::new(),
            lost_in_crash: BTreeMap::new(),
            leaders: BTreeMap::new(),
            elected: BTreeMap::new(),
            leader_crashed_ms: BTreeMap::new(),
            violation: None,
            report: SimReport::default(),
            config,
        };
        for n in 0..world.nodes.len() {
            world.start_node(n);
        }
        world.schedule(0, Event::ControllerTick);
        world.schedule(world.config.tick_ms, Event::Produce);
        world.schedule(world.config.tick_ms, Event::ConsumerPoll);
        let first_fault = world.rng.range(100, 1_000);
        world.schedule(first_fault, Event::Fault);
        world.schedule(world.config.fault_phase_ms, Event::EndFaultPhase);
        if let FlushModel::Interval { interval_ms } = world.config.flush {
            for n in 0..world.nodes.len() {
                world.schedule(
                    interval_ms,
                    Event::Flush {
                        node: n,
                        incarnation: 0,
                    },
                );
            }
        }
        world
    }

    fn run(&mut self) {
        let end_ms = self.config.fault_phase_ms + self.config.heal_phase_ms;
        while let Some(Scheduled { at_ms, event, .. }) = self.queue.pop() {
            if at_ms > end_ms || self.violation.is_some() {
                break;
            }
            self.now_ms = at_ms;
            self.report.events += 1;
            if self.config.trace {
                eprintln!("[{at_ms:>6}] {event:?}");
            }
            self.handle(event);
        }
        if self.violation.is_none() {
            self.now_ms = end_ms;
            self.check_converged();
        }
    }

    fn schedule(&mut self, delay_ms: i64, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Scheduled {
            at_ms: self.now_ms + delay_ms,
            seq,
            event,
        });
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.config.trace {
            eprintln!("[{:>6}]   {}", self.now_ms, what());
        }
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver {
                from,
                to,
                to_incarnation,
                message,
            } => self.deliver(from, to, to_incarnation, message),
            Event::NodeTick { node, incarnation } => {
                if self.nodes[node].core.is_some() && self.nodes[node].incarnation == incarnation {
                    self.step_node(node, NodeInput::Tick);
                    self.schedule(self.config.tick_ms, Event::NodeTick { node, incarnation });
                }
            }
            Event::ControllerTick => {
                self.step_controller(ControllerInput::Tick);
                self.schedule(self.config.tick_ms, Event::ControllerTick);
            }
            Event::Flush { node, incarnation } => self.flush(node, incarnation),
            Event::Restart { node } => {
                if self.nodes[node].core.is_none() {
                    self.start_node(node);
                }
            }
            Event::Fault => {
                if self.faults_on {
                    self.inject_fault();
                    let next = self.rng.range(100, 1_500);
                    self.schedule(next, Event::Fault);
                }
            }
            Event::Heal => {
                if self.faults_on {
                    self.groups.clear();
                    self.drop_percent = 0;
                    self.slow_controller = false;
                }
            }
            Event::EndFaultPhase => {
                self.faults_on = false;
                self.producing = false;
                self.groups.clear();
                self.drop_percent = 0;
                self.slow_controller = false;
                for n in 0..self.nodes.len() {
                    if self.nodes[n].core.is_none() {
                        self.start_node(n);
                    }
                }
            }
            Event::Produce => {
                if self.producing {
                    self.produce();
                    let next = self.rng.range(1, self.config.produce_interval_ms_max);
                    self.schedule(next, Event::Produce);
                }
            }
            Event::ConsumerPoll => {
                self.consumer_poll();
                self.schedule(self.config.tick_ms, Event::ConsumerPoll);
            }
        }
    }

    // ---- nodes and the disk ------------------------------------------------------------------

    fn start_node(&mut self, n: usize) {
        let incarnation = self.nodes[n].incarnation + 1;
        let node = &mut self.nodes[n];
        node.incarnation = incarnation;
        node.flush_scheduled = false;
        let recovered: Vec<(PartitionId, RecoveredLog)> = node
            .logs
            .iter()
            .map(|(&p, log)| (p, log.recovered()))
            .collect();
        node.core = Some(Node::new(
            node.id,
            incarnation,
            self.config.replica,
            recovered,
        ));
        let jitter = self.rng.range(0, self.config.tick_ms - 1);
        self.schedule(
            jitter,
            Event::NodeTick {
                node: n,
                incarnation,
            },
        );
        if let FlushModel::Interval { interval_ms } = self.config.flush {
            self.schedule(
                interval_ms,
                Event::Flush {
                    node: n,
                    incarnation,
                },
            );
        }
    }

    fn crash_node(&mut self, n: usize) {
        let Some(core) = self.nodes[n].core.take() else {
            return;
        };
        self.report.crashes += 1;
        for replica in core.replicas() {
            if let Role::Leader { .. } = replica.role() {
                self.leader_crashed_ms
                    .entry(replica.partition())
                    .or_insert(self.now_ms);
            }
        }
        let id = self.nodes[n].id;
        for (&partition, log) in self.nodes[n].logs.iter_mut() {
            let lost = log.batches[log.durable..]
                .iter()
                .map(|b| (b.base_offset, b.payload));
            self.lost_in_crash
                .entry((id, partition))
                .or_default()
                .extend(lost);
            log.crash();
        }
    }

    fn flush(&mut self, n: usize, incarnation: u64) {
        if self.nodes[n].core.is_none() || self.nodes[n].incarnation != incarnation {
            return;
        }
        self.nodes[n].flush_scheduled = false;
        let mut durable = Vec::new();
        for (&partition, log) in self.nodes[n].logs.iter_mut() {
            log.sync();
            durable.push((partition, log.end_offset()));
        }
        for (partition, offset) in durable {
            self.step_node(n, NodeInput::Durable { partition, offset });
        }
        if let FlushModel::Interval { interval_ms } = self.config.flush {
            self.schedule(
                interval_ms,
                Event::Flush {
                    node: n,
                    incarnation,
                },
            );
        }
    }

    fn step_node(&mut self, n: usize, input: NodeInput<u64>) {
        let Some(core) = self.nodes[n].core.as_mut() else {
            return;
        };
        let actions = core.step(self.now_ms, input);
        self.apply_node_actions(n, actions);
        self.check_leaders(n);
    }

    fn apply_node_actions(&mut self, n: usize, actions: Vec<Action<u64>>) {
        let from = Address::Broker(self.nodes[n].id);
        for action in actions {
            match action {
                Action::Send { to, message } => self.send(from, to, message),
                Action::SendFetchResponse {
                    to,
                    request_id,
                    partition,
                    from_offset,
                    max_offset,
                    high_watermark,
                    log_end_offset,
                } => {
                    let max_batches = self.rng.range(1, 8) as usize;
                    let log = &self.nodes[n].logs[&partition];
                    let Some(batches) = log.read(from_offset, max_offset, max_batches) else {
                        self.fail(format!("{from:?} {partition}: fetch from {from_offset}, not a batch boundary of its log"));
                        return;
                    };
                    let data = FetchData {
                        high_watermark,
                        log_end_offset,
                        batches,
                    };
                    self.send(
                        from,
                        to,
                        Message::FetchResponse {
                            request_id,
                            partition,
                            result: Ok(data),
                        },
                    );
                }
                Action::Append { partition, batch } => {
                    let log = self.nodes[n].logs.entry(partition).or_default();
                    if let Err(e) = log.append(batch) {
                        self.fail(format!("{from:?} {partition}: {e}"));
                    }
                }
                Action::AppendReplicated { partition, batches } => {
                    let log = self.nodes[n].logs.entry(partition).or_default();
                    for batch in batches {
                        if let Err(e) = log.append(batch) {
                            self.fail(format!("{from:?} {partition}: replicated {e}"));
                            return;
                        }
                    }
                }
                Action::Truncate { partition, offset } => self.truncate(n, partition, offset),
                Action::SetHighWatermark {
                    partition,
                    high_watermark,
                } => {
                    let log = self.nodes[n].logs.entry(partition).or_default();
                    log.high_watermark = high_watermark;
                    let end = log.end_offset();
                    if high_watermark > end {
                        self.fail(format!("{from:?} {partition}: high watermark {high_watermark} above log end {end}"));
                    }
                }
                Action::RequestDurable { .. } => {
                    if let FlushModel::OnRequest {
                        latency_ms_min,
                        latency_ms_max,
                        stall_one_in,
                        stall_ms,
                    } = self.config.flush
                        && !self.nodes[n].flush_scheduled
                    {
                        self.nodes[n].flush_scheduled = true;
                        let incarnation = self.nodes[n].incarnation;
                        let mut latency = self.rng.range(latency_ms_min, latency_ms_max);
                        if self.rng.one_in(stall_one_in) {
                            latency += self.rng.range(0, stall_ms);
                        }
                        self.schedule(
                            latency,
                            Event::Flush {
                                node: n,
                                incarnation,
                            },
                        );
                    }
                }
            }
        }
    }

    fn truncate(&mut self, n: usize, partition: PartitionId, offset: i64) {
        let id = self.nodes[n].id;
        let log = self.nodes[n].logs.entry(partition).or_default();
        let Some(keep) = log.boundary(offset) else {
            let what = format!("{id} {partition}: truncate to {offset}, not a batch boundary");
            return self.fail(what);
        };
        // A replica outside the ISR may drop committed batches (e.g. a follower that learned
        // late of an old epoch and truncates to its deposed leader's log); it must fetch them
        // again before it can rejoin. An ISR member may not: it could be elected next.
        let in_isr = self
            .controller
            .partition(partition)
            .is_some_and(|s| s.isr.contains(&id));
        let committed = self.committed.get(&partition);
        let lost = log.batches[keep..].iter().find(|b| {
            committed
                .and_then(|c| c.get(&b.base_offset))
                .is_some_and(|c| c.payload == b.payload)
        });
        if let Some(b) = lost.filter(|_| in_isr) {
            let what = format!(
                "{id} {partition}: ISR member truncating to {offset} removes committed batch at {} (payload {})",
                b.base_offset, b.payload
            );
            return self.fail(what);
        }
        self.report.truncations += 1;
        self.report.truncated_batches += (log.batches.len() - keep) as u64;
        log.batches.truncate(keep);
        log.durable = log.durable.min(keep);
        log.high_watermark = log.high_watermark.min(offset);
        log.high_watermark_checkpoint = log.high_watermark_checkpoint.min(offset);
    }

    /// At most one leader per (partition, leader epoch); a new leader holds every committed batch.
    fn check_leaders(&mut self, n: usize) {
        let Some(core) = &self.nodes[n].core else {
            return;
        };
        let me = (self.nodes[n].id, self.nodes[n].incarnation);
        let leading: Vec<(PartitionId, LeaderEpoch)> = core
            .replicas()
            .filter_map(|r| match r.role() {
                Role::Leader { leader_epoch } => Some((r.partition(), leader_epoch)),
                _ => None,
            })
            .collect();
        for key in leading {
            match self.leaders.get(&key) {
                Some(&holder) if holder == me => {}
                Some(&holder) => {
                    return self.fail(format!(
                        "two leaders for {} in {}: {:?} and {:?}",
                        key.0, key.1, holder, me
                    ));
                }
                None => {
                    self.leaders.insert(key, me);
                    self.report.elections += 1;
                    if let Some(crashed_ms) = self.leader_crashed_ms.remove(&key.0) {
                        let failover_ms = (self.now_ms - crashed_ms) as u64;
                        self.report.failovers += 1;
                        self.report.failover_ms_total += failover_ms;
                        self.report.failover_ms_max = self.report.failover_ms_max.max(failover_ms);
                    }
                    if self.elected.get(&key) != Some(&me.0) {
                        let elected = self.elected.get(&key);
                        return self.fail(format!(
                            "{} leads {} in {} but the controller elected {elected:?}",
                            me.0, key.0, key.1
                        ));
                    }
                }
            }
        }
    }

    /// Steps the controller, checking every election it makes: the replica it elects must hold
    /// every batch committed so far. (Checked at the election, not when the replica learns
    /// of it: a replica may learn late, when it is already a deposed leader of an old epoch
    /// that can commit nothing.)
    fn step_controller(&mut self, input: ControllerInput<u64>) {
        let before: BTreeMap<PartitionId, LeaderEpoch> = self
            .controller
            .partitions()
            .map(|s| (s.partition, s.leader_epoch))
            .collect();
        let actions = self.controller.step(self.now_ms, input);
        let elected: Vec<(PartitionId, LeaderEpoch, NodeId)> = self
            .controller
            .partitions()
            .filter(|s| before.get(&s.partition) != Some(&s.leader_epoch))
            .filter_map(|s| s.leader.map(|l| (s.partition, s.leader_epoch, l)))
            .collect();
        for (partition, leader_epoch, leader) in elected {
            self.elected.insert((partition, leader_epoch), leader);
            let log = &self.nodes[leader.0 as usize].logs[&partition];
            let end = log.end_offset();
            // Kafka's contract: visible data not yet synced by a leader alone in the ISR is
            // lost with its page cache (a power loss). Never an acknowledged batch.
            let lone = self
                .controller
                .partition(partition)
                .is_some_and(|s| s.isr == [leader]);
            let lost_in_crash = self
                .lost_in_crash
                .get(&(leader, partition))
                .filter(|_| lone);
            let mut forgiven = Vec::new();
            let missing = self.committed.get(&partition).and_then(|c| {
                c.iter()
                    .filter(|&(&base, c)| !log.contains(base, c.payload))
                    .find(|&(&base, c)| {
                        let allowed = !c.acked
                            && lost_in_crash.is_some_and(|l| l.contains(&(base, c.payload)));
                        if allowed {
                            forgiven.push(base);
                        }
                        !allowed
                    })
            });
            if let Some((base, c)) = missing {
                let payload = c.payload;
                return self.fail(format!(
                    "the controller elected {leader} for {partition} in {leader_epoch} without committed batch at {base} (payload {payload}); its log ends at {end}"
                ));
            }
            // The consumer may also have been told a high watermark past the lost tail
            // without reading that far.
            let lost_tail = lost_in_crash.is_some_and(|l| l.iter().any(|&(base, _)| base >= end));
            if !forgiven.is_empty() || (lost_tail && self.consumer[&partition].high_watermark > end)
            {
                self.forget_lost(partition, leader, &forgiven, end);
            }
        }
        self.apply_controller_actions(actions);
    }

    /// A lone ISR member whose log now ends at `end` lost its page-cache tail in a crash and
    /// was elected: the consumed batches it lost (`forgiven`) no longer count as committed,
    /// and the consumer goes back to the new log end if it was past it (as a Kafka consumer
    /// does after OFFSET_OUT_OF_RANGE with auto.offset.reset=latest), forgetting a high
    /// watermark it saw past it and any answer still on its way from the previous leader.
    fn forget_lost(&mut self, partition: PartitionId, leader: NodeId, forgiven: &[i64], end: i64) {
        self.report.lone_leader_losses += 1;
        self.trace(|| format!("{leader} {partition}: elected alone, its page-cache tail from {end} lost in a crash"));
        let committed = self.committed.entry(partition).or_default();
        for base in forgiven {
            committed.remove(base);
        }
        let c = self.consumer.get_mut(&partition).expect("every partition");
        c.position = c.position.min(end);
        c.high_watermark = c.high_watermark.min(end);
        c.in_flight = None;
    }

    // ---- controller and network --------------------------------------------------------------

    fn apply_controller_actions(&mut self, actions: Vec<Action<u64>>) {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    if let Message::AlterPartitionResponse { result: Ok(_), .. } = &message {
                        self.report.isr_changes += 1;
                    }
                    self.send(Address::Controller, to, message);
                }
                other => {
                    self.fail(format!("the controller asked for a log action: {other:?}"));
                }
            }
        }
    }

    fn group(&self, address: Address) -> u8 {
        self.groups.get(&address).copied().unwrap_or(0)
    }

    fn send(&mut self, from: Address, to: Address, message: Message<u64>) {
        if self.group(from) != self.group(to)
            || (self.drop_percent > 0 && self.rng.percent(self.drop_percent))
        {
            self.report.dropped_messages += 1;
            return;
        }
        let to_incarnation = match to {
            Address::Broker(id) => self.nodes[id.0 as usize].incarnation,
            _ => 0,
        };
        let mut delay = self
            .rng
            .range(self.config.net_delay_ms_min, self.config.net_delay_ms_max);
        if self.rng.one_in(self.config.long_delay_one_in) {
            delay += self.rng.range(0, self.config.long_delay_ms);
        }
        if self.slow_controller && (from == Address::Controller || to == Address::Controller) {
            delay += self.rng.range(50, 700);
        }
        self.schedule(
            delay,
            Event::Deliver {
                from,
                to,
                to_incarnation,
                message,
            },
        );
    }

    fn deliver(&mut self, from: Address, to: Address, to_incarnation: u64, message: Message<u64>) {
        if self.group(from) != self.group(to) {
            self.report.dropped_messages += 1;
            return;
        }
        match to {
            Address::Broker(id) => {
                let n = id.0 as usize;
                // A restarted process does not receive what was sent to the previous one.
                if self.nodes[n].core.is_none() || self.nodes[n].incarnation != to_incarnation {
                    return;
                }
                self.step_node(n, NodeInput::Message { from, message });
            }
            Address::Controller => {
                self.step_controller(ControllerInput::Message { from, message });
            }
            Address::Client(PRODUCER) => self.on_produce_response(message),
            Address::Client(_) => self.on_consumer_response(message),
        }
    }

    fn inject_fault(&mut self) {
        let faults = self.config.faults;
        let n = self.rng.below(self.nodes.len() as u64) as usize;
        match self.rng.below(100) {
            0..=29 if faults.crashes => {
                self.crash_node(n);
                let restart = self.rng.range(20, 2_000);
                self.trace(|| format!("fault: crash node {n}, restart in {restart} ms"));
                self.schedule(restart, Event::Restart { node: n });
            }
            30..=35 if faults.power_cuts => {
                self.trace(|| "fault: power cut, every node crashes".to_owned());
                for n in 0..self.nodes.len() {
                    self.crash_node(n);
                    let restart = self.rng.range(20, 1_500);
                    self.schedule(restart, Event::Restart { node: n });
                }
            }
            36..=64 if faults.partitions => {
                let mut addresses: Vec<Address> =
                    self.nodes.iter().map(|n| Address::Broker(n.id)).collect();
                addresses.extend([
                    Address::Controller,
                    Address::Client(PRODUCER),
                    Address::Client(CONSUMER),
                ]);
                self.groups = addresses
                    .into_iter()
                    .map(|a| (a, self.rng.below(2) as u8))
                    .collect();
                let heal = self.rng.range(50, 3_000);
                self.trace(|| format!("fault: partition {:?}, heal in {heal} ms", self.groups));
                self.schedule(heal, Event::Heal);
            }
            65..=74 if faults.partitions => {
                // Isolate one node from everything else.
                self.groups = BTreeMap::from([(Address::Broker(self.nodes[n].id), 1)]);
                let heal = self.rng.range(50, 3_000);
                self.trace(|| format!("fault: isolate node {n}, heal in {heal} ms"));
                self.schedule(heal, Event::Heal);
            }
            75..=89 if faults.drops => {
                self.drop_percent = self.rng.range(1, 40) as u64;
                let heal = self.rng.range(50, 2_000);
                self.trace(|| {
                    format!(
                        "fault: drop {}% of messages, heal in {heal} ms",
                        self.drop_percent
                    )
                });
                self.schedule(heal, Event::Heal);
            }
            90..=94 if faults.partitions => {
                self.slow_controller = true;
                let heal = self.rng.range(200, 3_000);
                self.trace(|| format!("fault: slow controller link, heal in {heal} ms"));
                self.schedule(heal, Event::Heal);
            }
            _ => {
                self.slow_controller = false;
                self.trace(|| "fault: none, network healed".to_owned());
                self.groups.clear();
                self.drop_percent = 0;
            }
        }
    }

    // ---- clients -----------------------------------------------------------------------------

    fn metadata(&self, partition: PartitionId) -> LeaderView {
        let state = self
            .controller
            .partition(partition)
            .expect("known partition");
        LeaderView {
            leader: state.leader,
            leader_epoch: Some(state.leader_epoch),
        }
    }

    fn produce(&mut self) {
        if self
            .producer_refreshed_ms
            .is_none_or(|at| self.now_ms - at >= METADATA_REFRESH_MS)
        {
            self.producer_refreshed_ms = Some(self.now_ms);
            for p in 0..self.config.partitions {
                let view = self.metadata(PartitionId(p));
                self.producer_view.insert(PartitionId(p), view);
            }
        }
        let partition = PartitionId(self.rng.below(u64::from(self.config.partitions)) as u32);
        let Some(leader) = self.producer_view.get(&partition).and_then(|v| v.leader) else {
            return;
        };
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let payload = self.next_payload;
        self.next_payload += 1;
        let record_count = self.rng.range(1, 3) as u32;
        // Some acks=1 traffic: it may be lost, so it never counts as committed.
        let acks = if self.rng.one_in(10) {
            Acks::Leader
        } else {
            Acks::All
        };
        self.in_flight_produces.insert(
            request_id,
            InFlightProduce {
                partition,
                payload,
                record_count,
                acks,
            },
        );
        self.report.produced += 1;
        let message = Message::Produce {
            request_id,
            partition,
            acks,
            record_count,
            payload,
        };
        self.send(Address::Client(PRODUCER), Address::Broker(leader), message);
    }

    fn on_produce_response(&mut self, message: Message<u64>) {
        let Message::ProduceResponse {
            request_id,
            partition,
            result,
        } = message
        else {
            return;
        };
        let Some(produce) = self.in_flight_produces.remove(&request_id) else {
            return;
        };
        assert_eq!(produce.partition, partition);
        match result {
            Ok(_) if produce.acks == Acks::Leader => self.report.acked_leader_only += 1,
            Ok(base_offset) => {
                self.report.acked += 1;
                self.commit(
                    partition,
                    base_offset,
                    produce.payload,
                    produce.record_count,
                    "acknowledged",
                );
            }
            Err(error) => {
                if matches!(
                    error,
                    ReplicaError::NotEnoughReplicas | ReplicaError::NotEnoughReplicasAfterAppend
                ) {
                    self.report.not_enough_replicas += 1;
                }
                self.producer_refreshed_ms = None;
            }
        }
    }

    /// Records a committed batch; it must agree with every batch committed before.
    fn commit(
        &mut self,
        partition: PartitionId,
        base_offset: i64,
        payload: u64,
        record_count: u32,
        how: &str,
    ) {
        let acked = how == "acknowledged";
        let committed = self.committed.entry(partition).or_default();
        let end = base_offset + i64::from(record_count);
        if let Some((&base, c)) = committed.range_mut(..end).next_back() {
            let (other, other_end) = (c.payload, base + i64::from(c.record_count));
            if base == base_offset && other == payload {
                c.acked |= acked;
                return;
            }
            if other_end > base_offset {
                let what = format!(
                    "{partition}: {how} batch at {base_offset} (payload {payload}) overlaps committed batch at {base} (payload {other})"
                );
                return self.fail(what);
            }
        }
        committed.insert(
            base_offset,
            Committed {
                payload,
                record_count,
                acked,
            },
        );
    }

    fn consumer_poll(&mut self) {
        for p in 0..self.config.partitions {
            let partition = PartitionId(p);
            let view = self.metadata(partition);
            let c = self.consumer.get_mut(&partition).expect("every partition");
            if let Some((_, sent_at)) = c.in_flight {
                if self.now_ms - sent_at < CONSUMER_REQUEST_TIMEOUT_MS {
                    continue;
                }
                c.in_flight = None;
            }
            // Metadata answers never move a client to an older leader epoch (KIP-320).
            if view.leader_epoch >= c.view.leader_epoch {
                c.view = view;
            }
            let (Some(leader), Some(current_leader_epoch)) = (c.view.leader, c.view.leader_epoch)
            else {
                continue;
            };
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            c.in_flight = Some((request_id, self.now_ms));
            let message = Message::Fetch {
                request_id,
                partition,
                replica: None,
                current_leader_epoch,
                fetch_offset: c.position,
            };
            self.send(Address::Client(CONSUMER), Address::Broker(leader), message);
        }
    }

    fn on_consumer_response(&mut self, message: Message<u64>) {
        let Message::FetchResponse {
            request_id,
            partition,
            result,
        } = message
        else {
            return;
        };
        let c = self.consumer.get_mut(&partition).expect("every partition");
        if c.in_flight.map(|(id, _)| id) != Some(request_id) {
            return;
        }
        c.in_flight = None;
        let data = match result {
            Ok(data) => data,
            Err(ReplicaError::OffsetOutOfRange) => {
                let position = c.position;
                return self.fail(format!("{partition}: consumer position {position} is out of range at the leader: consumed data lost"));
            }
            Err(_) => return,
        };
        if data.high_watermark < c.high_watermark {
            let before = c.high_watermark;
            return self.fail(format!(
                "{partition}: consumer saw the high watermark go back from {before} to {}",
                data.high_watermark
            ));
        }
        c.high_watermark = data.high_watermark;
        let mut position = c.position;
        let mut seen = Vec::new();
        for batch in &data.batches {
            if batch.base_offset != position {
                return self.fail(format!(
                    "{partition}: consumer at {position} got a batch at {}",
                    batch.base_offset
                ));
            }
            if batch.last_offset() >= data.high_watermark {
                return self.fail(format!(
                    "{partition}: consumer got offset {} at or above the high watermark {}",
                    batch.last_offset(),
                    data.high_watermark
                ));
            }
            position = batch.next_offset();
            seen.push((batch.base_offset, batch.payload, batch.record_count));
        }
        c.position = position;
        self.report.consumed_batches += seen.len() as u64;
        for (base, payload, count) in seen {
            self.commit(partition, base, payload, count, "consumed");
        }
    }

    // ---- the end -----------------------------------------------------------------------------

    fn check_converged(&mut self) {
        for p in 0..self.config.partitions {
            let partition = PartitionId(p);
            let state = self.controller.partition(partition).expect("known").clone();
            let Some(leader) = state.leader else {
                return self.fail(format!("{partition}: no leader after the network healed"));
            };
            if state.isr.len() != state.replicas.len() {
                return self.fail(format!(
                    "{partition}: ISR {:?} of replicas {:?} after healing",
                    state.isr, state.replicas
                ));
            }
            let leader_log = &self.nodes[leader.0 as usize].logs[&partition];
            for &r in &state.replicas {
                let log = &self.nodes[r.0 as usize].logs[&partition];
                if log.batches != leader_log.batches {
                    return self.fail(format!(
                        "{partition}: {r} and leader {leader} differ after healing (ends {} vs {})",
                        log.end_offset(),
                        leader_log.end_offset()
                    ));
                }
            }
            let end = leader_log.end_offset();
            let core = self.nodes[leader.0 as usize]
                .core
                .as_ref()
                .and_then(|c| c.replica(partition));
            let high_watermark = core.map_or(-1, |r| r.high_watermark());
            if high_watermark != end {
                return self.fail(format!("{partition}: leader {leader} high watermark {high_watermark} != log end {end} after healing"));
            }
            if let Some(committed) = self.committed.get(&partition)
                && let Some((&base, payload)) = committed
                    .iter()
                    .map(|(b, c)| (b, c.payload))
                    .find(|&(&b, pl)| !leader_log.contains(b, pl))
            {
                return self.fail(format!(
                    "{partition}: committed batch at {base} (payload {payload}) lost"
                ));
            }
            let consumed = self.consumer[&partition].position;
            if consumed != end {
                return self.fail(format!(
                    "{partition}: consumer stopped at {consumed}, log ends at {end}"
                ));
            }
        }
    }
}

/// The configuration a seed runs with: the cluster shape varies with the seed, so that one
/// number replays a run exactly.
pub fn config_for_seed(seed: u64) -> SimConfig {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xC0FF_EE00);
    let mut config = SimConfig::default();
    config.nodes = rng.range(3, 5) as usize;
    config.replication_factor = rng.range(2, config.nodes.min(4) as i64) as usize;
    config.partitions = rng.range(1, 3) as u32;
    config.replica.min_insync_replicas = rng.range(1, config.replication_factor as i64) as usize;
    config
}
