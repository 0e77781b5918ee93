//! The control thread (every broker runs one; a single node is a quorum of one). Runs the
//! metadata quorum (raft-rs, `replication::quorum`), the rpc listener and links to the other
//! voters, a replica of the controller state machine fed by the committed log (`stm`), this
//! broker's registration and heartbeats, and publishes metadata and partition states to the
//! shards.
//!
//! Owns: the order in which this node learns committed control entries and tells its shards.
//! Does not own: replication (`crate::replica`, on the shards), Kafka requests (handlers).
//! Invariants:
//! - Every node applies the same committed entries in the same order (`stm`), so any node
//!   can answer Metadata from committed state, and a new quorum leader continues from it.
//! - A metadata snapshot reaches every shard (partitions opened) before the partition states
//!   that refer to it are delivered, and before an admin call is answered.
//! - Partition states reach replicas only when addressed to this process's broker epoch:
//!   what the controller told an earlier process of this node (replayed from the log at
//!   start-up) is never acted on.
//! - The thread never blocks a shard: shard -> control messages go through a bounded queue
//!   that drops when full (senders resend), and control -> shard work goes through the mesh.
//!
//! Back-of-envelope: ~5 entries/s on an idle 3-node cluster (a heartbeat per broker per
//! second, a Tick per second), each ~150 bytes of JSON plus raft framing: ~1 KB/s of rpc
//! traffic per voter and one fdatasync per committed batch on each voter.

pub mod auth;
pub mod entry;
pub mod rpc;
pub mod stm;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use kafka_protocol::ResponseError;
use replication::quorum::{QuorumAction, QuorumInput, QuorumNode};
use replication::{
    BrokerEpoch, ControllerConfig, Message, NodeId, PartitionEpoch, PartitionId, PartitionState,
};

use crate::config::Config;
use crate::metadata::ClusterMetadata;
use crate::metadata::handle::{AdminCall, ClusterHandle, ControlReceivers, ToController};
use crate::partition::now_ms;
use crate::replica::ReplicaEvent;
use crate::runtime::{Shard, ShardTask, Shared};
use entry::{AdminError, AdminResults, ControlEntry, RequestTag};
use rpc::{FrameKind, Inbound, Link, RpcAuth};
use stm::ControllerStm;

/// How often the loop wakes without input (raft ticks, timers).
const LOOP_TICK: Duration = Duration::from_millis(50);
/// Registration attempts are resent this often until answered.
const REGISTER_RETRY_MS: i64 = 1_000;
/// The request id of the catalog.json take-over (never a client's: those count from 0).
const MIGRATION_REQUEST: u64 = u64::MAX;
/// Admin calls not applied within this long are answered REQUEST_TIMED_OUT.
const ADMIN_TIMEOUT_MS: i64 = 15_000;

/// The control thread, started.
pub struct ControlThread {
    pub thread: std::thread::JoinHandle<()>,
    /// Fires once this process is registered and its partitions' states are delivered (the
    /// broker is then ready to serve); dropped without a message if the thread ends first.
    pub registered: std::sync::mpsc::Receiver<()>,
}

/// Starts the control thread. Returns once the rpc listener is bound.
/// What the control thread takes from `catalog.json`, read once at start-up by the server.
pub struct CatalogSeed {
    /// Names the cluster until the first registration applied does.
    pub cluster_id: String,
    /// Topics of a data dir written before the quorum existed (taken over once, see `open`).
    pub topics: Vec<crate::metadata::TopicMeta>,
}

pub fn start(
    shared: Arc<Shared>,
    receivers: ControlReceivers,
    seed: CatalogSeed,
) -> Result<ControlThread, String> {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (registered_tx, registered_rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("sluice-control".into())
        .spawn(move || {
            let runtime = match compio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    let _ = bound_tx.send(Err(format!("control thread runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match ControlLoop::open(shared, receivers, seed, registered_tx).await {
                    Ok((control, listener)) => {
                        let _ = bound_tx.send(Ok(()));
                        control.run(listener).await;
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| format!("spawning the control thread: {e}"))?;
    bound_rx
        .recv()
        .map_err(|_| "the control thread exited at start".to_string())??;
    Ok(ControlThread {
        thread: handle,
        registered: registered_rx,
    })
}

/// The metadata a shard starts with, before the quorum has told it anything: no topics, and
/// this node as the only (fenced) broker.
pub fn initial_metadata(
    config: &Config,
    cluster_id: String,
    host: &str,
    port: u16,
) -> ClusterMetadata {
    let mut m = ClusterMetadata::new(cluster_id, 0, Vec::new());
    let node_id = config.broker.node_id;
    m.brokers.insert(
        node_id,
        crate::metadata::BrokerInfo {
            node_id,
            host: host.to_string(),
            port,
            rack: (!config.cluster.rack.is_empty()).then(|| config.cluster.rack.clone()),
            fenced: true,
        },
    );
    m
}

enum Event {
    Inbound(Inbound),
    FromShard(ToController),
    Admin(AdminCall),
    Timer,
    Closed,
}

struct ControlLoop {
    shared: Arc<Shared>,
    handle: Arc<ClusterHandle>,
    me: i32,
    incarnation: u64,
    cluster_id: String,
    quorum: QuorumNode,
    stm: ControllerStm,
    links: HashMap<i32, Link>,
    /// This node's identity and secret on the rpc port; the voters entries are checked against.
    rpc_auth: Rc<RpcAuth>,
    receivers: ControlReceivers,
    inbound_tx: async_channel::Sender<Inbound>,
    inbound_rx: async_channel::Receiver<Inbound>,
    broker_epoch: Option<BrokerEpoch>,
    /// Partition epoch last delivered to the local replica, for this broker epoch.
    delivered: HashMap<PartitionId, PartitionEpoch>,
    pending_admin: HashMap<u64, (i64, async_channel::Sender<Result<AdminResults, AdminError>>)>,
    next_admin_id: u64,
    last_register_ms: i64,
    last_heartbeat_ms: i64,
    last_tick_ms: i64,
    /// When this node last checked preferred leaders (or became the quorum leader).
    last_rebalance_ms: i64,
    applied_index: u64,
    published_controller: Option<i32>,
    /// The quorum's storage failed; the loop ends.
    failed: bool,
    /// Told once after this process registered and its states went out.
    registered: Option<std::sync::mpsc::Sender<()>>,
    /// Topics of a pre-quorum catalog.json to create once registered (quorum of one).
    migrate: Option<Vec<crate::metadata::TopicMeta>>,
    /// The migration's CreateTopics is in flight (`registered` waits for it).
    migrating: bool,
    registration_done: bool,
    /// Work found while applying entries, done after the step (publish first).
    metadata_dirty: bool,
    to_deliver: Vec<PartitionState>,
    alter_answers: Vec<(PartitionId, Message<()>)>,
    admin_done: Vec<(RequestTag, AdminResults)>,
}

impl ControlLoop {
    async fn open(
        shared: Arc<Shared>,
        receivers: ControlReceivers,
        seed: CatalogSeed,
        registered: std::sync::mpsc::Sender<()>,
    ) -> Result<(ControlLoop, Option<compio::net::TcpListener>), String> {
        let config = Arc::clone(&shared.config);
        let handle = Arc::clone(&shared.cluster);
        let me = config.broker.node_id;
        let seeds = config.cluster.voters(me)?;
        let voters: Vec<NodeId> = seeds.iter().map(|s| NodeId(s.node_id)).collect();
        // A quorum of one talks to nobody: it needs a listener only if one was asked for.
        let listener = if config.cluster.rpc_addr.is_empty() {
            None
        } else {
            // Retried like the Kafka listener: a node restarted right after a SIGKILL finds
            // its port held for a moment by the dead process's io_uring.
            let addr: std::net::SocketAddr = config.cluster.rpc_addr.parse().map_err(|_| {
                format!(
                    "cluster.rpc_addr {:?} is not HOST:PORT",
                    config.cluster.rpc_addr
                )
            })?;
            let listener = crate::server::bind_with_retry(addr)
                .map_err(|e| format!("binding cluster.rpc_addr {addr}: {e}"))?;
            Some(
                compio::net::TcpListener::from_std(listener)
                    .map_err(|e| format!("registering cluster.rpc_addr {addr}: {e}"))?,
            )
        };
        let dir = config.broker.data_dir.join("__quorum");
        let now = now_ms();
        let quorum = QuorumNode::open(NodeId(me), &voters, &dir, now)
            .map_err(|e| format!("opening the metadata quorum in {}: {e}", dir.display()))?;
        let rpc_auth = Rc::new(RpcAuth {
            me,
            voters: voters.iter().map(|v| v.0).collect(),
            secret: load_secret(&config, voters.len())?,
        });
        let mut links = HashMap::new();
        for s in seeds.iter().filter(|s| s.node_id != me) {
            links.insert(
                s.node_id,
                Link::start(
                    s.node_id,
                    format!("{}:{}", s.host, s.port),
                    Rc::clone(&rpc_auth),
                ),
            );
        }
        let controller_config = ControllerConfig {
            broker_session_timeout_ms: config.cluster.broker_session_timeout_ms,
            unclean_leader_election: config.cluster.unclean_leader_election,
        };
        let (inbound_tx, inbound_rx) = async_channel::bounded(rpc::INBOUND_QUEUE_CAPACITY);
        let cluster_id = seed.cluster_id;
        // A brand-new quorum of one on a data dir written by a version without the quorum
        // takes over the topics of its catalog.json (once: the registration that follows
        // makes the quorum non-empty).
        let migrate = (voters.len() == 1
            && quorum.commit_index() == 0
            && quorum.snapshot_index() == 0
            && !seed.topics.is_empty())
        .then_some(seed.topics);
        tracing::info!(target: "broker::controller", node = me, voters = ?voters.iter().map(|v| v.0).collect::<Vec<_>>(), rpc = %config.cluster.rpc_addr, "metadata quorum opened");
        Ok((
            ControlLoop {
                shared,
                handle,
                me,
                // Grows with every process start of this node (the controller fences the
                // previous incarnation when a new one registers).
                incarnation: u64::try_from(now).unwrap_or(0),
                cluster_id,
                quorum,
                stm: ControllerStm::new(NodeId(me), controller_config),
                links,
                rpc_auth,
                receivers,
                inbound_tx,
                inbound_rx,
                broker_epoch: None,
                delivered: HashMap::new(),
                pending_admin: HashMap::new(),
                next_admin_id: 0,
                last_register_ms: i64::MIN / 2,
                last_heartbeat_ms: i64::MIN / 2,
                last_tick_ms: i64::MIN / 2,
                last_rebalance_ms: now,
                applied_index: 0,
                published_controller: None,
                failed: false,
                registered: Some(registered),
                migrate,
                migrating: false,
                registration_done: false,
                metadata_dirty: false,
                to_deliver: Vec::new(),
                alter_answers: Vec::new(),
                admin_done: Vec::new(),
            },
            listener,
        ))
    }

    async fn run(mut self, listener: Option<compio::net::TcpListener>) {
        if let Some(listener) = listener {
            compio::runtime::spawn(rpc::accept_loop(
                listener,
                self.inbound_tx.clone(),
                Rc::clone(&self.rpc_auth),
            ))
            .detach();
        }
        loop {
            if self.failed {
                return;
            }
            let event = self.next_event().await;
            let now = now_ms();
            match event {
                Event::Closed => return,
                Event::Inbound(Inbound::Raft(message)) => {
                    self.step(now, QuorumInput::Message(message))
                }
                Event::Inbound(Inbound::Propose { from, entry }) => {
                    // Forwarded by a voter that believes we lead; if we do not, it retries.
                    // Checked at the rpc boundary; checked again here, where every proposal
                    // passes, so nothing unchecked reaches the log.
                    if self.quorum.is_leader() {
                        match entry.validate_forwarded(from, &self.rpc_auth.voters) {
                            Ok(()) => self.step(now, QuorumInput::Propose(entry.encode())),
                            Err(error) => {
                                tracing::warn!(target: "broker::controller", from, %error, "forwarded proposal refused")
                            }
                        }
                    }
                }
                Event::FromShard(ToController::AlterPartition {
                    partition,
                    leader_epoch,
                    partition_epoch,
                    proposal,
                    new_isr,
                }) => {
                    if let Some(broker_epoch) = self.broker_epoch {
                        self.propose(ControlEntry::AlterPartition {
                            node: self.me,
                            broker_epoch: broker_epoch.0,
                            partition: partition.0,
                            leader_epoch: leader_epoch.0,
                            partition_epoch: partition_epoch.0,
                            proposal,
                            new_isr: new_isr.into_iter().map(|n| n.0).collect(),
                            now_ms: now,
                        });
                    }
                }
                Event::Admin(call) => {
                    let id = self.next_admin_id;
                    self.next_admin_id += 1;
                    self.pending_admin.insert(id, (now, call.reply));
                    let request = RequestTag {
                        node: self.me,
                        incarnation: self.incarnation,
                        id,
                    };
                    self.propose(ControlEntry::Admin {
                        request,
                        op: call.op,
                    });
                }
                Event::Timer => {
                    self.step(now, QuorumInput::Tick);
                    self.timers(now);
                }
            }
            self.after_step().await;
        }
    }

    async fn next_event(&self) -> Event {
        let inbound = Box::pin(self.inbound_rx.recv());
        let shards = Box::pin(self.receivers.from_shards.recv());
        let admin = Box::pin(self.receivers.admin.recv());
        let timer = Box::pin(compio::time::sleep(LOOP_TICK));
        match select(select(inbound, shards), select(admin, timer)).await {
            Either::Left((Either::Left((Ok(inbound), _)), _)) => Event::Inbound(inbound),
            Either::Left((Either::Right((Ok(m), _)), _)) => Event::FromShard(m),
            Either::Right((Either::Left((Ok(c), _)), _)) => Event::Admin(c),
            Either::Right((Either::Right(((), _)), _)) => Event::Timer,
            _ => Event::Closed,
        }
    }

    /// Registration, heartbeats, the quorum leader's Ticks, admin timeouts.
    fn timers(&mut self, now: i64) {
        let config = Arc::clone(&self.shared.config);
        let cluster = &config.cluster;
        match self.broker_epoch {
            None if now - self.last_register_ms >= REGISTER_RETRY_MS => {
                self.last_register_ms = now;
                let rack = (!cluster.rack.is_empty()).then(|| cluster.rack.clone());
                self.propose(ControlEntry::Register {
                    node: self.me,
                    incarnation: self.incarnation,
                    host: self.shared.advertised_host.clone(),
                    port: self.shared.advertised_port,
                    rack,
                    cluster_id: self.cluster_id.clone(),
                    now_ms: now,
                    partition_replicas_max: Some(self.shared.fd_budget.partition_replicas_max),
                });
            }
            Some(epoch) if now - self.last_heartbeat_ms >= cluster.broker_heartbeat_interval_ms => {
                self.last_heartbeat_ms = now;
                self.propose(ControlEntry::Heartbeat {
                    node: self.me,
                    broker_epoch: epoch.0,
                    now_ms: now,
                });
            }
            _ => {}
        }
        let tick_ms = (cluster.broker_session_timeout_ms / 4).clamp(100, 1_000);
        if self.quorum.is_leader() && now - self.last_tick_ms >= tick_ms {
            self.last_tick_ms = now;
            self.propose(ControlEntry::Tick { now_ms: now });
        }
        let rebalance_ms = cluster.leader_imbalance_check_interval_ms;
        if !self.quorum.is_leader() {
            self.last_rebalance_ms = now;
        } else if rebalance_ms > 0 && now - self.last_rebalance_ms >= rebalance_ms {
            self.last_rebalance_ms = now;
            self.propose(ControlEntry::PreferredLeaders { now_ms: now });
        }
        let expired: Vec<u64> = self
            .pending_admin
            .iter()
            .filter(|(_, (at, _))| now - at > ADMIN_TIMEOUT_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, reply)) = self.pending_admin.remove(&id) {
                let _ = reply.try_send(Err(AdminError {
                    code: ResponseError::RequestTimedOut.code(),
                    message: "the metadata quorum did not commit the request in time".into(),
                }));
            }
        }
    }

    /// Proposes to the quorum: directly when this node leads it, else forwarded to the
    /// leader (dropped when none is known; every proposer retries on its own timer).
    fn propose(&mut self, entry: ControlEntry) {
        if let Err(error) = entry.validate(&self.rpc_auth.voters) {
            // Our own input: a bug, or an admin request that slipped past its handler's
            // checks. It is answered, and never enters the log.
            tracing::error!(target: "broker::controller", %error, ?entry, "invalid metadata entry not proposed");
            if let ControlEntry::Admin { request, .. } = &entry
                && request.node == self.me
                && let Some((_, reply)) = self.pending_admin.remove(&request.id)
            {
                let _ = reply.try_send(Err(AdminError {
                    code: ResponseError::InvalidRequest.code(),
                    message: error.to_string(),
                }));
            }
            return;
        }
        let bytes = entry.encode();
        if self.quorum.is_leader() {
            self.step(now_ms(), QuorumInput::Propose(bytes));
        } else if let Some(leader) = self.quorum.leader()
            && let Some(link) = self.links.get(&leader.0)
        {
            link.send(rpc::frame(FrameKind::Propose, &bytes));
        }
    }

    fn step(&mut self, now: i64, input: QuorumInput) {
        let actions = match self.quorum.step(now, input) {
            Ok(a) => a,
            Err(error) if error.is_fatal() => {
                // The quorum's storage failed: stop taking part. Heartbeats stop, so the
                // controller fences this broker and its leaderships move to healthy replicas.
                tracing::error!(target: "broker::controller", %error, "metadata quorum storage failed; this node leaves the control plane (restart it once the disk is fixed)");
                self.failed = true;
                return;
            }
            Err(error) => {
                tracing::debug!(target: "broker::controller", %error, "quorum step refused");
                return;
            }
        };
        for action in actions {
            match action {
                QuorumAction::Send { to, message } => {
                    if let Some(link) = self.links.get(&to.0) {
                        let bytes = replication::quorum::encode_message(&message);
                        link.send(rpc::frame(FrameKind::Raft, &bytes));
                    }
                }
                QuorumAction::Applied { index, data } => self.apply(index, &data),
                QuorumAction::Restore { index, data } => self.restore(index, &data),
            }
        }
    }

    fn apply(&mut self, index: u64, data: &[u8]) {
        self.applied_index = index;
        let entry = match ControlEntry::decode(data) {
            Ok(e) => e,
            Err(error) => {
                tracing::error!(target: "broker::controller", index, %error, "undecodable metadata entry skipped");
                return;
            }
        };
        let outcome = self.stm.apply(entry);
        self.metadata_dirty |= outcome.metadata_changed;
        if self.broker_epoch.is_some() {
            self.to_deliver.extend(
                outcome
                    .new_states
                    .into_iter()
                    .filter(|s| s.replicas.contains(&NodeId(self.me))),
            );
        }
        for message in outcome.to_me {
            self.on_controller_message(message);
        }
        if let Some((tag, results)) = outcome.admin
            && tag.node == self.me
            && tag.incarnation == self.incarnation
        {
            self.admin_done.push((tag, results));
        }
    }

    /// Replaces the state machine with a snapshot (this node's own at start-up, or the
    /// leader's when this node was too far behind for the log).
    fn restore(&mut self, index: u64, data: &[u8]) {
        let config = ControllerConfig {
            broker_session_timeout_ms: self.shared.config.cluster.broker_session_timeout_ms,
            unclean_leader_election: self.shared.config.cluster.unclean_leader_election,
        };
        match ControllerStm::from_snapshot(NodeId(self.me), config, data) {
            Ok(stm) => {
                self.stm = stm;
                self.applied_index = index;
                self.metadata_dirty = true;
                if self.broker_epoch.is_some() {
                    self.delivered.clear();
                    self.to_deliver.extend(self.stm.states_of_me());
                }
                tracing::info!(target: "broker::controller", index, "metadata restored from a snapshot");
            }
            Err(error) => {
                // Our own snapshot, checksummed by the quorum: unreadable means a bug or a
                // newer format. Leave the control plane rather than serve a wrong state.
                tracing::error!(target: "broker::controller", index, %error, "metadata snapshot unreadable; this node leaves the control plane");
                self.failed = true;
            }
        }
    }

    /// Snapshots the state machine and compacts the quorum log every
    /// `cluster.metadata_snapshot_interval_entries` applied entries (default 10 000: ~1.5 MB
    /// of log, ~30 min of an idle 3-node cluster's heartbeats and ticks).
    fn maybe_compact(&mut self) {
        let interval = self
            .shared
            .config
            .cluster
            .metadata_snapshot_interval_entries;
        if self.applied_index < self.quorum.snapshot_index() + interval {
            return;
        }
        let snapshot = self.stm.to_snapshot();
        if let Err(error) = self.quorum.compact(self.applied_index, snapshot) {
            if error.is_fatal() {
                tracing::error!(target: "broker::controller", %error, "metadata snapshot failed; this node leaves the control plane");
                self.failed = true;
            } else {
                tracing::warn!(target: "broker::controller", %error, "metadata snapshot skipped");
            }
        }
    }

    fn on_controller_message(&mut self, message: Message<()>) {
        match message {
            Message::BrokerRegistrationResponse {
                incarnation,
                broker_epoch,
            } if incarnation == self.incarnation && self.broker_epoch != Some(broker_epoch) => {
                tracing::info!(target: "broker::controller", node = self.me, broker_epoch = broker_epoch.0, "registered with the controller");
                self.broker_epoch = Some(broker_epoch);
                self.handle.set_broker_epoch(broker_epoch);
                self.delivered.clear();
                self.last_heartbeat_ms = now_ms();
                let mine = self.stm.states_of_me();
                let budget = self.shared.fd_budget.partition_replicas_max;
                if mine.len() as u64 > u64::from(budget) {
                    // Created under a higher limit: opening them may run out of descriptors
                    // (EMFILE). New ones are refused; these are not closed.
                    tracing::warn!(target: "broker::controller", replicas = mine.len(), budget, limit = self.shared.fd_budget.limit, "this node holds more partition replicas than its open-file limit allows; raise RLIMIT_NOFILE (docs/operations.md, \"Open files\")");
                }
                self.to_deliver.extend(mine);
            }
            Message::BrokerHeartbeatResponse {
                broker_epoch,
                result,
            } if Some(broker_epoch) == self.broker_epoch => match result {
                Ok(states) => self.to_deliver.extend(states),
                Err(error) => {
                    tracing::warn!(target: "broker::controller", %error, "heartbeat refused; registering again");
                    self.broker_epoch = None;
                }
            },
            Message::PartitionUpdate {
                broker_epoch,
                states,
            } if Some(broker_epoch) == self.broker_epoch => self.to_deliver.extend(states),
            Message::AlterPartitionResponse { partition, .. } if self.broker_epoch.is_some() => {
                self.alter_answers.push((partition, message));
            }
            _ => {}
        }
    }

    /// After a step: publish metadata if it changed, then deliver states and answers.
    async fn after_step(&mut self) {
        self.maybe_compact();
        let controller = self.quorum.leader().map(|n| n.0);
        if self.metadata_dirty || controller != self.published_controller {
            self.metadata_dirty = false;
            self.published_controller = controller;
            let mut snapshot = self.stm.snapshot(self.applied_index, controller);
            if snapshot.cluster_id.is_empty() {
                snapshot.cluster_id = self.cluster_id.clone();
            }
            publish(&self.shared, Arc::new(snapshot)).await;
        }
        for state in std::mem::take(&mut self.to_deliver) {
            if self
                .delivered
                .get(&state.partition)
                .is_some_and(|e| *e >= state.partition_epoch)
            {
                continue;
            }
            let Some((topic, index)) = self.stm.locate(state.partition) else {
                continue;
            };
            let (topic, index) = (topic.to_string(), index);
            self.delivered
                .insert(state.partition, state.partition_epoch);
            deliver(&self.shared, topic, index, ReplicaEvent::State(state)).await;
        }
        for (partition, message) in std::mem::take(&mut self.alter_answers) {
            let Some((topic, index)) = self.stm.locate(partition) else {
                continue;
            };
            if let Message::AlterPartitionResponse {
                leader_epoch,
                proposal,
                result,
                ..
            } = message
            {
                if let Ok(state) = &result {
                    self.delivered
                        .insert(state.partition, state.partition_epoch);
                }
                let event = ReplicaEvent::AlterPartitionResponse {
                    leader_epoch,
                    proposal,
                    result,
                };
                deliver(&self.shared, topic.to_string(), index, event).await;
            }
        }
        for (tag, results) in std::mem::take(&mut self.admin_done) {
            if tag.id == MIGRATION_REQUEST {
                self.migrating = false;
                if !results.iter().all(Result::is_ok) {
                    tracing::error!(target: "broker::controller", ?results, "taking over catalog.json topics failed");
                }
            } else if let Some((_, reply)) = self.pending_admin.remove(&tag.id) {
                let _ = reply.try_send(Ok(results));
            }
        }
        if self.broker_epoch.is_some() && !self.registration_done {
            self.registration_done = true;
            self.after_registration();
        }
        if self.registration_done
            && !self.migrating
            && let Some(registered) = self.registered.take()
        {
            let _ = registered.send(());
        }
    }

    /// Once per process, after the first registration applied (so everything committed
    /// before it is applied too): sweep the data dir against the committed topics, and take
    /// over a pre-quorum catalog's topics.
    fn after_registration(&mut self) {
        let metadata = self.stm.snapshot(self.applied_index, None);
        // The topics about to be taken over are known too: their directories hold their data.
        let mut known = metadata.clone();
        for t in self.migrate.iter().flatten() {
            known
                .topics
                .entry(t.name.clone())
                .or_insert_with(|| Arc::new(t.clone()));
        }
        let data_dir = self.shared.config.broker.data_dir.clone();
        if let Err(error) = crate::runtime::partitions::sweep_data_dir(&data_dir, &known) {
            tracing::warn!(target: "broker::controller", %error, "sweeping the data dir failed");
        }
        let Some(topics) = self.migrate.take() else {
            return;
        };
        let specs: Vec<entry::NewTopicSpec> = topics
            .into_iter()
            .filter(|t| metadata.topic(&t.name).is_none())
            .map(|t| entry::NewTopicSpec {
                name: t.name,
                id: t.id.hyphenated().to_string(),
                partitions: t.partitions,
                replication_factor: 1,
                configs: t.configs,
            })
            .collect();
        if specs.is_empty() {
            return;
        }
        tracing::info!(target: "broker::controller", topics = specs.len(), "taking over the topics of catalog.json into the metadata quorum");
        self.migrating = true;
        let request = RequestTag {
            node: self.me,
            incarnation: self.incarnation,
            id: MIGRATION_REQUEST,
        };
        // A quorum of one leads itself once registered, so this commits in the next step.
        self.propose(ControlEntry::Admin {
            request,
            op: entry::AdminOp::CreateTopics { topics: specs },
        });
    }
}

/// The cluster secret from `cluster.secret_file`, or none (with a loud warning when other
/// voters could connect: without a secret the rpc port trusts anyone who reaches it).
fn load_secret(config: &Config, voters: usize) -> Result<auth::ClusterSecret, String> {
    let path = &config.cluster.secret_file;
    if !path.as_os_str().is_empty() {
        let secret = auth::ClusterSecret::load(path)?;
        tracing::info!(target: "broker::controller", path = %path.display(), "rpc peers authenticate with the cluster secret");
        return Ok(secret);
    }
    if voters > 1 || !config.cluster.rpc_addr.is_empty() {
        tracing::warn!(target: "broker::controller", rpc = %config.cluster.rpc_addr, "NO CLUSTER SECRET: anyone who can reach the rpc port can join the metadata quorum and change or break the cluster. Set cluster.secret_file (--cluster-secret-file, SLUICE_CLUSTER_SECRET_FILE) to the same secret on every node and bind --rpc-addr to a private interface (docs/operations.md)");
    }
    Ok(auth::ClusterSecret::none())
}

/// Installs `snapshot` on every shard (partitions opened or closed) and waits for all.
async fn publish(shared: &Arc<Shared>, snapshot: Arc<ClusterMetadata>) {
    let mut waits = Vec::new();
    for tx in &shared.mesh {
        let (done_tx, done_rx) = async_channel::bounded::<usize>(1);
        let snap = Arc::clone(&snapshot);
        let task: ShardTask = Box::new(move |shard: &Rc<Shard>| {
            let shard = Rc::clone(shard);
            Box::pin(async move {
                // Each failure is logged (and the partition marked offline) by the shard.
                let failed = crate::runtime::partitions::apply_metadata(&shard, snap)
                    .await
                    .len();
                let _ = done_tx.send(failed).await;
            })
        });
        if tx.send(task).await.is_ok() {
            waits.push(done_rx);
        }
    }
    for rx in waits {
        if let Ok(failed) = rx.recv().await
            && failed > 0
        {
            tracing::warn!(target: "broker::controller", failed, "a shard applied the metadata with partitions offline");
        }
    }
}

/// Hands `event` to the replica of `topic`-`index` on its owning shard.
async fn deliver(shared: &Arc<Shared>, topic: String, index: i32, event: ReplicaEvent) {
    let owner = shared.table.shard_of(&topic, index);
    let task: ShardTask = Box::new(move |shard: &Rc<Shard>| {
        crate::replica::deliver(shard, &topic, index, event);
        Box::pin(async {})
    });
    let _ = shared.mesh[owner.0].send(task).await;
}
