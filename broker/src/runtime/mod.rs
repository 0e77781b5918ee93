//! Shards: one OS thread per core with its own compio runtime, sharing nothing.
//!
//! Owns: `Shard` (the per-thread state: metadata copy, owned partitions, per-shard services,
//! connection bookkeeping), `Shared` (the `Send + Sync` pieces every shard reads: config,
//! mesh senders, connection counts), and `invoke_ordered` (with `invoke`, its wait for the
//! answer), the only way to run code on another shard. Beside them: `scatter` (a request's
//! partitions grouped by owning shard and answered in request order), `services` (subsystem
//! state kept once per shard), `frame_pool` and `request_budget` (per-shard receive buffers
//! and request-byte admission), `partitions` (open, close, housekeeping), `control` (the
//! control plane's front on shard 0).
//! Does not own: what handlers, groups or the HTTP side do; the runtime imports none of them.
//! Invariants:
//! - A shard touches only partitions it owns (`PartitionTable`); everything else goes through
//!   `invoke` over a bounded mesh channel.
//! - A mesh task's closure runs synchronously in the receiving loop, in arrival order; only
//!   the future it returns runs concurrently. Order-sensitive work (taking an append ticket)
//!   is done in the closure, so requests keep their order across shards.
//! - The mesh loop never sends on the mesh itself, so bounded channels cannot deadlock.

pub mod cleaner;
pub mod frame_pool;
pub mod partitions;
pub mod request_budget;
pub mod scatter;
pub mod services;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use engine::sync::Notify;

use crate::config::Config;
use crate::metadata::{ClusterMetadata, PartitionTable, ShardId};
use crate::partition::Partition;

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
    pub cluster: Arc<crate::controller::ClusterHandle>,
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
    /// Subsystem state kept once per shard (group backend, follower fetchers, fetch
    /// sessions, metrics view): see `services.rs`.
    pub services: services::Services,
    /// The controller frontend (topic changes, producer ids); present on shard 0 only.
    pub control: Option<crate::controller::ControllerFrontend>,
    /// Set when the broker is shutting down: stop reading new requests.
    stopping: Cell<bool>,
    pub stop_notify: Rc<Notify>,
    /// Open connections on this shard, and a wake-up when one closes.
    pub open_connections: Cell<usize>,
    pub connection_closed: Rc<Notify>,
    /// Set in the last shutdown phase: the shard's runtime returns.
    pub exited: Cell<bool>,
    pub exit_notify: Rc<Notify>,
    /// Reused receive buffers for large request frames (runtime/frame_pool.rs).
    pub frame_pool: frame_pool::FramePool,
    /// This shard's share of `kafka.queued_max_request_bytes` (runtime/request_budget.rs).
    pub request_budget: Rc<request_budget::RequestBudget>,
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
        control: Option<crate::controller::ControllerFrontend>,
    ) -> Rc<Shard> {
        let disk = crate::storage::DiskGuard::new(&shared.config);
        let request_budget = request_budget::RequestBudget::new(request_budget::shard_share(
            &shared.config,
            shared.shard_count(),
        ));
        Rc::new(Shard {
            id,
            shared,
            metadata: RefCell::new(metadata),
            partitions: RefCell::new(HashMap::new()),
            services: services::Services::default(),
            control,
            stopping: Cell::new(false),
            stop_notify: Rc::new(Notify::new()),
            open_connections: Cell::new(0),
            connection_closed: Rc::new(Notify::new()),
            exited: Cell::new(false),
            exit_notify: Rc::new(Notify::new()),
            frame_pool: frame_pool::FramePool::prefaulted(),
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
        self.invoke_ordered(target, f).await.result().await
    }

    /// The one way to run code on a shard. Returns once the closure has been queued on
    /// `target` (run, when `target` is this shard); its result arrives through the returned
    /// [`Queued`]. Closures queued one after the other run on their target in that order.
    pub async fn invoke_ordered<R, F>(self: &Rc<Self>, target: ShardId, f: F) -> Queued<R>
    where
        R: Send + 'static,
        F: FnOnce(&Rc<Shard>) -> LocalBoxFuture<R> + Send + 'static,
    {
        if target == self.id {
            return Queued(QueuedState::Local(f(self)));
        }
        let (tx, rx) = async_channel::bounded::<R>(1);
        let task: ShardTask = Box::new(move |shard: &Rc<Shard>| {
            let fut = f(shard);
            Box::pin(async move {
                let r = fut.await;
                let _ = tx.send(r).await;
            })
        });
        match self.shared.mesh[target.0].send(task).await {
            Ok(()) => Queued(QueuedState::Remote(rx)),
            Err(_) => Queued(QueuedState::Gone),
        }
    }
}

/// A closure queued by [`Shard::invoke_ordered`]; [`Queued::result`] waits for its answer
/// (`None` if the target shard is gone).
pub struct Queued<R>(QueuedState<R>);

enum QueuedState<R> {
    /// The target is this shard: its future, run by whoever awaits the result.
    Local(LocalBoxFuture<R>),
    /// The target's one-slot reply channel.
    Remote(async_channel::Receiver<R>),
    /// The target's mesh channel is closed (shutting down).
    Gone,
}

impl<R> Queued<R> {
    /// The closure's result; `None` if the target shard is gone.
    pub async fn result(self) -> Option<R> {
        match self.0 {
            QueuedState::Local(fut) => Some(fut.await),
            QueuedState::Remote(rx) => rx.recv().await.ok(),
            QueuedState::Gone => None,
        }
    }
}

/// The shard's mesh loop: runs each task's closure in arrival order, spawns its future.
pub async fn run_mesh_loop(shard: Rc<Shard>, rx: async_channel::Receiver<ShardTask>) {
    while let Ok(task) = rx.recv().await {
        let fut = task(&shard);
        compio::runtime::spawn(fut).detach();
    }
}

/// Shards for unit tests: shard 0 runs on the caller's runtime, the others each on a thread
/// of their own with their mesh loop, as in the broker.
#[cfg(test)]
pub mod test_support {
    use std::rc::Rc;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::{MESH_QUEUE_CAPACITY, Shard, ShardTask, Shared, run_mesh_loop};
    use crate::config::Config;
    use crate::metadata::{ClusterMetadata, PartitionTable, ShardId};

    /// `n` shards; returns shard 0 (call from inside a compio runtime) and stops the other
    /// threads when the returned guard drops.
    pub fn shards(n: usize) -> (Rc<Shard>, Threads) {
        let config = Arc::new(Config::default());
        let (cluster, _receivers) =
            crate::controller::ClusterHandle::new(0, Default::default(), 500);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| async_channel::bounded::<ShardTask>(MESH_QUEUE_CAPACITY))
            .unzip();
        let shared = Arc::new(Shared {
            config,
            table: PartitionTable { shards: n },
            mesh: senders,
            connections: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            metrics: (0..n).map(|_| Default::default()).collect(),
            cluster: Arc::new(cluster),
            fd_budget: crate::fd_budget::FdBudget::compute(1 << 20, 10),
            open_partition_replicas: AtomicUsize::new(0),
        });
        let mut receivers = receivers.into_iter();
        let local_rx = receivers.next().expect("at least one shard");
        let mut threads = Vec::new();
        for (i, rx) in receivers.enumerate() {
            let shared = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || {
                compio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(async move {
                        let metadata = Arc::new(ClusterMetadata::default());
                        let shard = Shard::new(ShardId(i + 1), shared, metadata, None);
                        compio::runtime::spawn(run_mesh_loop(Rc::clone(&shard), rx)).detach();
                        loop {
                            let exit = shard.exit_notify.notified();
                            if shard.exited.get() {
                                break;
                            }
                            exit.await;
                        }
                    })
            }));
        }
        let shard = Shard::new(
            ShardId(0),
            Arc::clone(&shared),
            Arc::new(ClusterMetadata::default()),
            None,
        );
        compio::runtime::spawn(run_mesh_loop(Rc::clone(&shard), local_rx)).detach();
        (shard, Threads { shared, threads })
    }

    /// The other shards' threads; dropping it ends them.
    pub struct Threads {
        shared: Arc<Shared>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    impl Drop for Threads {
        fn drop(&mut self) {
            for target in 1..=self.threads.len() {
                let task: ShardTask = Box::new(|s: &Rc<Shard>| {
                    s.exited.set(true);
                    s.exit_notify.notify_all();
                    Box::pin(async {})
                });
                self.shared.send_blocking(ShardId(target), task);
            }
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}
