//! Shards: one OS thread per core with its own compio runtime, sharing nothing.
//!
//! Owns: `Shard` (the per-thread state: metadata copy, owned partitions, fetch sessions,
//! connection bookkeeping), `Shared` (the `Send + Sync` pieces every shard reads: config,
//! mesh senders, connection counts), and `invoke`, the only way to run code on another shard.
//! Invariants:
//! - A shard touches only partitions it owns (`PartitionTable`); everything else goes through
//!   `invoke` over a bounded mesh channel.
//! - A mesh task's closure runs synchronously in the receiving loop, in arrival order; only
//!   the future it returns runs concurrently. Order-sensitive work (taking an append ticket)
//!   is done in the closure, so requests keep their order across shards.
//! - The mesh loop never sends on the mesh itself, so bounded channels cannot deadlock.

pub mod control;
pub mod partitions;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Config;
use crate::handlers::fetch_session::FetchSessionCache;
use crate::metadata::{ClusterMetadata, PartitionTable, ShardId};
use crate::partition::Partition;
use engine::sync::Notify;

/// Tasks queued to one shard before senders wait (back-pressure).
pub const MESH_QUEUE_CAPACITY: usize = 4096;

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Work sent to a shard: the closure runs in the shard's mesh loop (in order); the future it
/// returns is spawned there.
pub type ShardTask = Box<dyn FnOnce(&Rc<Shard>) -> LocalBoxFuture<()> + Send + 'static>;

/// The process-wide, thread-safe part every shard holds an `Arc` of.
pub struct Shared {
    pub config: Arc<Config>,
    pub table: PartitionTable,
    pub mesh: Vec<async_channel::Sender<ShardTask>>,
    /// Open connections per shard; the acceptor hands new ones to the least loaded.
    pub connections: Vec<AtomicUsize>,
    /// Host and port given to clients in Metadata.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Counters for `/metrics`, one per shard, each written only by its shard.
    pub metrics: Vec<crate::metrics::ShardMetrics>,
    /// The way to the control thread (every broker runs the metadata quorum).
    pub cluster: Arc<crate::metadata::handle::ClusterHandle>,
    /// How many partition replicas this node's open-file limit holds (stated when it
    /// registers; the controller refuses placements beyond it).
    pub fd_budget: crate::fd_budget::FdBudget,
    /// Partition replicas open on this node (all shards); a partition beyond `fd_budget`
    /// is not opened, so the descriptors reserved for connections stay free.
    pub open_partition_replicas: AtomicUsize,
}

impl Shared {
    pub fn shard_count(&self) -> usize {
        self.mesh.len()
    }

    pub fn node_id(&self) -> i32 {
        self.config.broker.node_id
    }

    /// Sends `task` to `target`'s mesh loop (from any thread, e.g. the main thread).
    pub fn send_blocking(&self, target: ShardId, task: ShardTask) -> bool {
        self.mesh[target.0].send_blocking(task).is_ok()
    }

    pub fn least_loaded_shard(&self) -> ShardId {
        let mut best = 0;
        for (i, c) in self.connections.iter().enumerate() {
            if c.load(Ordering::Relaxed) < self.connections[best].load(Ordering::Relaxed) {
                best = i;
            }
        }
        ShardId(best)
    }
}

/// Per-shard state. `!Send`: it lives on its shard's thread only.
pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    metadata: RefCell<Arc<ClusterMetadata>>,
    /// Partitions this shard owns: topic -> partition index -> partition.
    pub partitions: RefCell<HashMap<String, Vec<Option<Rc<Partition>>>>>,
    pub fetch_sessions: RefCell<FetchSessionCache>,
    /// Control plane (catalog, producer ids); present on shard 0 only.
    pub control: Option<control::ControlPlane>,
    /// Set when the broker is shutting down: stop reading new requests.
    stopping: Cell<bool>,
    pub stop_notify: Rc<Notify>,
    /// Open connections on this shard, and a wake-up when one closes.
    pub open_connections: Cell<usize>,
    pub connection_closed: Rc<Notify>,
    /// Set in the last shutdown phase: the shard's runtime returns.
    pub exited: Cell<bool>,
    pub exit_notify: Rc<Notify>,
    /// Reused receive buffers for large request frames (net/frame_pool.rs).
    pub frame_pool: crate::net::frame_pool::FramePool,
    /// This shard's share of `kafka.queued_max_request_bytes` (net/request_budget.rs).
    pub request_budget: Rc<crate::net::request_budget::RequestBudget>,
    /// The replica timer (`replica::run_ticker`) runs on this shard.
    pub replica_ticker_started: Cell<bool>,
    /// Free space of the data dir and the reserve under which Produce is refused.
    pub disk: crate::storage::DiskGuard,
    /// Partitions this shard should hold but could not open (bad log, bad config, no fds):
    /// (topic, partition) -> why. Requests for them get KAFKA_STORAGE_ERROR; the next
    /// metadata update tries again.
    pub offline_partitions: RefCell<HashMap<(String, i32), String>>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        shared: Arc<Shared>,
        metadata: Arc<ClusterMetadata>,
        control: Option<control::ControlPlane>,
    ) -> Rc<Shard> {
        let sessions = shared.config.kafka.fetch_sessions_per_shard_max;
        let disk = crate::storage::DiskGuard::new(&shared.config);
        let request_budget = crate::net::request_budget::RequestBudget::new(
            crate::net::request_budget::shard_share(&shared.config, shared.shard_count()),
        );
        Rc::new(Shard {
            id,
            shared,
            metadata: RefCell::new(metadata),
            partitions: RefCell::new(HashMap::new()),
            fetch_sessions: RefCell::new(FetchSessionCache::new(id, sessions)),
            control,
            stopping: Cell::new(false),
            stop_notify: Rc::new(Notify::new()),
            open_connections: Cell::new(0),
            connection_closed: Rc::new(Notify::new()),
            exited: Cell::new(false),
            exit_notify: Rc::new(Notify::new()),
            frame_pool: crate::net::frame_pool::FramePool::prefaulted(),
            request_budget,
            replica_ticker_started: Cell::new(false),
            disk,
            offline_partitions: RefCell::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The current metadata snapshot (cheap clone of an `Arc`).
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.metadata.borrow())
    }

    pub fn set_metadata(&self, m: Arc<ClusterMetadata>) {
        *self.metadata.borrow_mut() = m;
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> ShardId {
        self.shared.table.shard_of(topic, partition)
    }

    /// The partition if this shard owns it and has it open.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        let map = self.partitions.borrow();
        let idx = usize::try_from(partition).ok()?;
        map.get(topic)?.get(idx)?.clone()
    }

    /// Why this shard holds no open log for a partition it should have, if it failed to open.
    pub fn offline_reason(&self, topic: &str, partition: i32) -> Option<String> {
        self.offline_partitions
            .borrow()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    pub fn begin_stop(&self) {
        self.stopping.set(true);
        // In-flight produces and offset commits answer now instead of waiting for followers
        // (`ReplicaDriver::stop_waiting`); their connections then close.
        for partitions in self.partitions.borrow().values() {
            for p in partitions.iter().flatten() {
                p.replica.stop_waiting();
            }
        }
        self.stop_notify.notify_all();
    }

    /// Runs `f` on shard `target` and returns its result; `None` if that shard is gone
    /// (shutting down). Runs inline when `target` is this shard, keeping the same ordering
    /// guarantee: the closure runs now, before any later `invoke` from this task.
    pub async fn invoke<R, F>(self: &Rc<Self>, target: ShardId, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&Rc<Shard>) -> LocalBoxFuture<R> + Send + 'static,
    {
        if target == self.id {
            return Some(f(self).await);
        }
        let (tx, rx) = async_channel::bounded::<R>(1);
        let task: ShardTask = Box::new(move |shard: &Rc<Shard>| {
            let fut = f(shard);
            Box::pin(async move {
                let r = fut.await;
                let _ = tx.send(r).await;
            })
        });
        self.shared.mesh[target.0].send(task).await.ok()?;
        rx.recv().await.ok()
    }

    /// Like `invoke`, but returns once the closure has been queued (ordered) on the target;
    /// the result arrives through the returned future.
    pub async fn invoke_ordered<R, F>(
        self: &Rc<Self>,
        target: ShardId,
        f: F,
    ) -> LocalBoxFuture<Option<R>>
    where
        R: Send + 'static,
        F: FnOnce(&Rc<Shard>) -> LocalBoxFuture<R> + Send + 'static,
    {
        if target == self.id {
            let fut = f(self);
            return Box::pin(async move { Some(fut.await) });
        }
        let (tx, rx) = async_channel::bounded::<R>(1);
        let task: ShardTask = Box::new(move |shard: &Rc<Shard>| {
            let fut = f(shard);
            Box::pin(async move {
                let r = fut.await;
                let _ = tx.send(r).await;
            })
        });
        if self.shared.mesh[target.0].send(task).await.is_err() {
            return Box::pin(async { None });
        }
        Box::pin(async move { rx.recv().await.ok() })
    }
}

impl Shard {
    /// Runs `f` with partition `topic`/`partition` on its owning shard. Errors: the topic or
    /// partition is unknown (UNKNOWN_TOPIC_OR_PARTITION) or not open on its owner.
    pub async fn with_partition<R, F>(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Partition>) -> LocalBoxFuture<R> + Send + 'static,
    {
        use kafka_protocol::ResponseError;
        let known = self
            .metadata()
            .topic(topic)
            .is_some_and(|m| partition >= 0 && partition < m.partitions);
        if !known {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        let owner = self.owner_of(topic, partition);
        let topic = topic.to_string();
        let r = self
            .invoke(owner, move |s: &Rc<Shard>| {
                let p = s.partition(&topic, partition);
                match p {
                    Some(p) => {
                        let fut = f(p);
                        Box::pin(async move { Some(fut.await) })
                    }
                    None => Box::pin(async { None }),
                }
            })
            .await;
        r.flatten().ok_or(ResponseError::NotLeaderOrFollower)
    }
}

/// The shard's mesh loop: runs each task's closure in arrival order, spawns its future.
pub async fn run_mesh_loop(shard: Rc<Shard>, rx: async_channel::Receiver<ShardTask>) {
    while let Ok(task) = rx.recv().await {
        let fut = task(&shard);
        compio::runtime::spawn(fut).detach();
    }
}
