//! `sluice start`: brings the shards up, prints `ready`, waits for SIGTERM/SIGINT, and shuts
//! down cleanly.
//!
//! Start-up: probe io_uring (clear error with the fix), open the catalog, bind the listener
//! (a taken port fails here), start one pinned thread per shard, let every shard open the
//! partitions it owns, then start accepting and print the `ready` line.
//! Shutdown, in two phases so cross-shard work can finish: (1) every shard stops reading new
//! requests and waits for its connections to finish their in-flight requests; (2) every shard
//! flushes and closes its logs. Then the threads are joined and the process exits 0.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::{Config, split_host_port};
use crate::controller::{Catalog, CatalogError, ClusterHandle, ControllerFrontend};
use crate::metadata::{ClusterMetadata, PartitionTable, ShardId};
use crate::net;
use crate::partition::now_ms;
use crate::runtime::{MESH_QUEUE_CAPACITY, Shard, ShardTask, Shared, partitions, run_mesh_loop};
use crate::sys;

/// How often interval flushes (`flush.ms`) are checked.
pub const FLUSH_TICK_MS: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    IoUring(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "cannot listen on {addr}: {source} (is another broker running? pick another --kafka-addr)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {shard} failed to start: {message}")]
    Shard { shard: usize, message: String },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Raises the open-file limit to its hard limit and computes how many partition replicas
/// fit in it (docs/operations.md, "Open files"). Logged once; never fails start-up.
fn open_file_budget(config: &Config) -> crate::fd_budget::FdBudget {
    let limit = match sys::raise_nofile_limit() {
        Ok(l) => {
            tracing::info!(target: "broker::server", soft_before = l.soft_before, soft = l.soft, hard = l.hard, "open-file limit (RLIMIT_NOFILE)");
            if l.soft < l.hard {
                tracing::warn!(target: "broker::server", soft = l.soft, hard = l.hard, "could not raise the open-file soft limit to the hard limit");
            }
            l.soft
        }
        Err(e) => {
            // Not expected on Linux; budget for the common default rather than refuse to run.
            tracing::warn!(target: "broker::server", error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
            1024
        }
    };
    let connections_max = config.kafka.connections_max as u64;
    let budget = crate::fd_budget::FdBudget::compute(limit, connections_max);
    tracing::info!(
        target: "broker::server",
        limit,
        reserved_base = budget.base_reserved,
        reserved_connections = budget.connections_reserved,
        fds_per_partition_replica = crate::fd_budget::FDS_PER_PARTITION_REPLICA,
        partition_replicas_max = budget.partition_replicas_max,
        "open-file budget"
    );
    if budget.connections_squeezed(connections_max) {
        tracing::warn!(
            target: "broker::server",
            limit,
            connections_max,
            reserved_connections = budget.connections_reserved,
            "the open-file limit cannot hold kafka.connections_max connections and partitions both; raise the hard limit (LimitNOFILE= / ulimit -Hn) or lower kafka.connections_max"
        );
    }
    budget
}

/// Runs the broker until SIGTERM/SIGINT. Returns after a clean shutdown.
pub fn run(config: Config) -> Result<(), StartError> {
    sys::block_termination_signals().map_err(|source| StartError::Io {
        what: "blocking signals",
        source,
    })?;
    if let Err(e) = compio::runtime::Runtime::new() {
        return Err(StartError::IoUring(sys::io_uring_help(&e)));
    }
    let fd_budget = open_file_budget(&config);
    let config = Arc::new(config);
    // The cluster id and producer-id blocks. Topics come from the metadata quorum, which every
    // broker runs: with --seeds as one of its voters, without as a quorum of one
    // (docs/internals/controller.md). Its log is replayed after start, so the data dir is swept
    // for directories it does not know only once this node is registered.
    let catalog = Catalog::open(&config.broker.data_dir)?;
    let addr: SocketAddr = config.kafka.addr.parse().map_err(|_| StartError::Io {
        what: "kafka.addr",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let listener =
        net::bind_with_retry(addr).map_err(|source| StartError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| StartError::Io {
        what: "listener address",
        source,
    })?;
    let (advertised_host, advertised_port) = match split_host_port(&config.kafka.advertised_addr) {
        Some(hp) => hp,
        None if local.ip().is_unspecified() => {
            tracing::warn!(target: "broker::server", "listening on {local}; advertising 127.0.0.1 (set --advertised-kafka-addr for remote clients)");
            ("127.0.0.1".to_string(), local.port())
        }
        None => (local.ip().to_string(), local.port()),
    };
    let snapshot = Arc::new(crate::controller::initial_metadata(
        &config,
        catalog.cluster_id.clone(),
        &advertised_host,
        advertised_port,
    ));
    let (cluster, control_receivers) = ClusterHandle::new(
        config.broker.node_id,
        replica_config(&config),
        config.cluster.replica_fetch_wait_max_ms,
    );
    let shard_count = config.shard_count();
    let share = crate::runtime::request_budget::shard_share(&config, shard_count);
    if share < config.kafka.frame_bytes_max as usize {
        tracing::warn!(target: "broker::server", share, shards = shard_count, frame_bytes_max = config.kafka.frame_bytes_max, "each shard's share of kafka.queued_max_request_bytes is below kafka.frame_bytes_max: a larger frame waits until its shard has no other request, and a shard may hold up to frame_bytes_max (raise queued_max_request_bytes or lower frame_bytes_max)");
    }
    let mut senders = Vec::with_capacity(shard_count);
    let mut receivers = Vec::with_capacity(shard_count);
    for _ in 0..shard_count {
        let (tx, rx) = async_channel::bounded::<ShardTask>(MESH_QUEUE_CAPACITY);
        senders.push(tx);
        receivers.push(rx);
    }
    let shared = Arc::new(Shared {
        config: Arc::clone(&config),
        table: PartitionTable {
            shards: shard_count,
        },
        mesh: senders,
        connections: (0..shard_count).map(|_| AtomicUsize::new(0)).collect(),
        advertised_host,
        advertised_port,
        metrics: (0..shard_count)
            .map(|_| crate::metrics::ShardMetrics::default())
            .collect(),
        cluster: Arc::new(cluster),
        fd_budget,
        open_partition_replicas: AtomicUsize::new(0),
    });
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let seed = crate::controller::CatalogSeed {
        cluster_id: catalog.cluster_id.clone(),
        topics: catalog.topics.values().cloned().collect(),
    };
    let mut control = Some(catalog);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut threads = Vec::with_capacity(shard_count);
    for (id, rx) in receivers.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let snapshot = Arc::clone(&snapshot);
        let control = if id == 0 { control.take() } else { None };
        let ready = ready_tx.clone();
        let core = config.broker.pin_threads.then_some(id % cores);
        let handle = std::thread::Builder::new()
            .name(format!("sluice-shard-{id}"))
            .spawn(move || shard_main(ShardId(id), core, shared, snapshot, rx, control, ready))
            .map_err(|source| StartError::Io {
                what: "spawning shard thread",
                source,
            })?;
        threads.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((shard, Err(message))) => {
                failure.get_or_insert(StartError::Shard { shard, message });
            }
            Err(_) => {
                failure.get_or_insert(StartError::Shard {
                    shard: 0,
                    message: "a shard thread exited".into(),
                });
                break;
            }
        }
    }
    if let Some(e) = failure {
        shutdown(
            &shared,
            threads,
            Duration::from_secs(config.broker.shutdown_timeout_s),
        );
        return Err(e);
    }
    // Detached: it holds no data that needs flushing (the quorum syncs every write).
    let control = crate::controller::start(Arc::clone(&shared), control_receivers, seed)
        .map_err(|message| StartError::Shard { shard: 0, message })?;
    wait_registered(&control.registered);
    // Accept only once every shard has its partitions open and, in the quorum, this node is
    // registered and knows which partitions it leads (connections wait in the backlog).
    let task: ShardTask =
        Box::new(move |s: &Rc<Shard>| Box::pin(net::run_acceptor(Rc::clone(s), listener)));
    shared.send_blocking(ShardId(0), task);
    start_http(&config, &shared);
    println!(
        "sluice ready: kafka={}:{} listener={} shards={} node_id={} data_dir={}",
        shared.advertised_host,
        shared.advertised_port,
        local,
        shard_count,
        config.broker.node_id,
        config.broker.data_dir.display()
    );
    let _ = std::io::stdout().flush();
    tracing::info!(target: "broker::server", %local, shards = shard_count, "ready");
    let signal = sys::wait_for_termination().map_err(|source| StartError::Io {
        what: "waiting for signals",
        source,
    })?;
    tracing::info!(target: "broker::server", signal, "shutting down");
    if !shutdown(
        &shared,
        threads,
        Duration::from_secs(config.broker.shutdown_timeout_s),
    ) {
        tracing::error!(target: "broker::server", "shutdown timed out; exiting anyway");
        std::process::exit(1);
    }
    println!("sluice stopped");
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Starts the HTTP listener if `http.addr` is set. A failure is logged, not fatal: metrics
/// are not worth refusing Kafka traffic for.
fn start_http(config: &Config, shared: &Arc<Shared>) {
    if config.http.addr.is_empty() {
        return;
    }
    let Ok(addr) = config.http.addr.parse::<SocketAddr>() else {
        return; // validated at load
    };
    match crate::http::start(addr, Arc::clone(shared)) {
        Ok(local) => {
            println!("sluice http: listening on {local} (/metrics, /v1/status)");
            tracing::info!(target: "broker::http", %local, "http listening");
        }
        Err(e) => {
            tracing::error!(target: "broker::http", %addr, error = %e, "cannot start the http listener; continuing without /metrics");
        }
    }
}

/// Two-phase shutdown (see module docs). Returns false if it did not finish in `timeout`.
fn shutdown(
    shared: &Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let n = shared.shard_count();
    // Phase 1: stop reading requests, let in-flight ones finish.
    let (tx, rx) = mpsc::channel::<()>();
    for s in 0..n {
        let tx = tx.clone();
        shared.send_blocking(
            ShardId(s),
            Box::new(move |shard: &Rc<Shard>| {
                shard.begin_stop();
                let shard = Rc::clone(shard);
                Box::pin(async move {
                    while shard.open_connections.get() > 0 {
                        let closed = shard.connection_closed.notified();
                        if shard.open_connections.get() == 0 {
                            break;
                        }
                        closed.await;
                    }
                    let _ = tx.send(());
                })
            }),
        );
    }
    if !wait_acks(&rx, n, deadline) {
        return false;
    }
    // Phase 2: flush and close logs, then leave the runtime.
    for s in 0..n {
        let tx = tx.clone();
        shared.send_blocking(
            ShardId(s),
            Box::new(move |shard: &Rc<Shard>| {
                let shard = Rc::clone(shard);
                Box::pin(async move {
                    partitions::close_all(&shard).await;
                    shard.exit();
                    let _ = tx.send(());
                })
            }),
        );
    }
    if !wait_acks(&rx, n, deadline) {
        return false;
    }
    for t in threads {
        let _ = t.join();
    }
    true
}

fn wait_acks(rx: &mpsc::Receiver<()>, n: usize, deadline: Instant) -> bool {
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            return false;
        }
    }
    true
}

fn shard_main(
    id: ShardId,
    core: Option<usize>,
    shared: Arc<Shared>,
    snapshot: Arc<ClusterMetadata>,
    rx: async_channel::Receiver<ShardTask>,
    catalog: Option<Catalog>,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
) {
    let mut builder = compio::runtime::RuntimeBuilder::new();
    if let Some(core) = core {
        builder.thread_affinity(HashSet::from([core]));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send((id.0, Err(sys::io_uring_help(&e))));
            return;
        }
    };
    rt.block_on(async move {
        let node_id = shared.cluster.node_id;
        let shard = Shard::new(
            id,
            shared,
            Arc::new(ClusterMetadata::default()),
            catalog.map(|c| ControllerFrontend::new(c, node_id)),
        );
        compio::runtime::spawn(run_mesh_loop(Rc::clone(&shard), rx)).detach();
        // Partitions that fail to open are logged and offline; the shard starts regardless.
        partitions::apply_metadata(&shard, snapshot).await;
        crate::group::backend::start_if_present(&shard);
        crate::txn::backend::set_local_marker_writer(
            crate::handlers::write_txn_markers::write_markers_boxed,
        );
        crate::txn::backend::start_if_present(&shard);
        // Below the free-space reserve from the first request on.
        partitions::check_disk(&shard, Instant::now());
        let _ = ready.send((id.0, Ok(())));
        compio::runtime::spawn(housekeeping_loop(Rc::clone(&shard))).detach();
        compio::runtime::spawn(crate::runtime::cleaner::cleaner_loop(Rc::clone(&shard))).detach();
        shard.wait_exit().await;
    });
}

/// Retention, segment.ms and interval flushes on this shard's partitions, and the
/// free-space check (`storage`).
async fn housekeeping_loop(shard: Rc<Shard>) {
    let full_interval = Duration::from_millis(shard.config().log.housekeeping_interval_ms.max(100));
    // Interval flushes need a finer tick than retention.
    let flush_tick = full_interval.min(Duration::from_millis(FLUSH_TICK_MS));
    let tick = flush_tick.min(shard.disk.interval());
    let mut last_full = Instant::now();
    let mut last_flush = Instant::now();
    let mut accepted_at_trim = 0;
    while !shard.is_stopping() {
        let stop = shard.stop_notify.notified();
        let sleep = Box::pin(compio::time::sleep(tick));
        if let futures_util::future::Either::Right(_) =
            futures_util::future::select(sleep, stop).await
        {
            break;
        }
        let now = Instant::now();
        if shard.disk.due(now) {
            partitions::check_disk(&shard, now);
        }
        let full = now.duration_since(last_full) >= full_interval;
        if full {
            last_full = now;
            if shard.id.0 == 0 {
                trim_after_churn(&shard.shared, &mut accepted_at_trim);
            }
        }
        if full || now.duration_since(last_flush) >= flush_tick {
            last_flush = now;
            partitions::housekeeping(&shard, now_ms(), full).await;
        }
    }
}

/// Connections accepted (all shards) after which the next housekeeping pass hands the
/// allocator's free memory back (`sys::release_free_memory`).
const TRIM_AFTER_CONNECTIONS: u64 = 1_000;

/// On shard 0, once per full housekeeping pass: after `TRIM_AFTER_CONNECTIONS` new
/// connections, return what they freed to the kernel, so RSS follows the live heap after
/// connection churn instead of creeping up to the largest burst's footprint.
fn trim_after_churn(shared: &Shared, accepted_at_trim: &mut u64) {
    let accepted: u64 = shared
        .metrics
        .iter()
        .map(|m| {
            m.connections_accepted
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    if accepted.saturating_sub(*accepted_at_trim) < TRIM_AFTER_CONNECTIONS {
        return;
    }
    *accepted_at_trim = accepted;
    let released = crate::sys::release_free_memory();
    tracing::debug!(target: "broker::server", accepted, released, "returned free heap memory after connection churn");
}

impl Shard {
    /// Ends the shard's runtime (after logs are closed).
    pub fn exit(&self) {
        self.exited.set(true);
        self.exit_notify.notify_all();
    }

    async fn wait_exit(&self) {
        loop {
            let n: engine::sync::Notified = self.exit_notify.notified();
            if self.exited.get() {
                return;
            }
            n.await;
        }
    }
}

/// How long start-up waits for this node's registration before saying `ready` anyway (a
/// voter started long before a majority of the quorum is up).
const REGISTRATION_WAIT: Duration = Duration::from_secs(30);

/// Waits until the metadata quorum registered this node and its partitions know their
/// leaders, so `ready` means clients can produce and fetch.
fn wait_registered(registered: &mpsc::Receiver<()>) {
    let started = Instant::now();
    let mut warned = false;
    while started.elapsed() < REGISTRATION_WAIT {
        match registered.recv_timeout(Duration::from_secs(2)) {
            Ok(()) => return,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                tracing::error!(target: "broker::server", "the control thread stopped before registering");
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !warned => {
                warned = true;
                tracing::info!(target: "broker::server", "waiting for the metadata quorum to register this node (are a majority of the --seeds up?)");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    tracing::warn!(target: "broker::server", "not registered with the metadata quorum yet; serving anyway");
}

/// Replica settings from the cluster section (min.insync.replicas is per topic).
fn replica_config(config: &Config) -> replication::ReplicaConfig {
    let c = &config.cluster;
    replication::ReplicaConfig {
        replica_lag_time_max_ms: c.replica_lag_time_max_ms,
        min_insync_replicas: 1,
        fetch_backoff_ms: c.replica_fetch_backoff_ms,
        // The leader long-polls follower fetches for replica_fetch_wait_max_ms.
        empty_fetch_backoff_ms: 0,
        request_timeout_ms: c.request_timeout_ms,
        produce_timeout_ms: c.request_timeout_ms,
        heartbeat_interval_ms: c.broker_heartbeat_interval_ms,
        durability: if config.log.acks_all_durable {
            replication::Durability::Fsync
        } else {
            replication::Durability::PageCache
        },
    }
}
