//! The reference stack (issue 14): Apache Kafka's own jars, built by Maven from
//! `tests/java/pom.xml`, used three ways beside Sluice:
//! - [`JavaStack::java`] runs a Java program on them: our test programs under
//!   `tests/java/src` (the Java client) and Kafka's command-line tools (`kafka-topics` is
//!   `org.apache.kafka.tools.TopicCommand`, and so on), exactly as Kafka's shell scripts do;
//! - [`ApacheKafka::start`] starts a real single-node Apache Kafka (KRaft, combined
//!   broker+controller) in a temporary directory: the differential tests' oracle and `bench`'s
//!   peer;
//! - both find the jars in one place ([`JavaStack::locate`]).
//!
//! Owns: locating the jars, the JVM command line, Kafka's server.properties, storage format,
//! start, readiness and stop. Does not own: what the tests or benchmarks do with them.
//! Test and benchmark support only; nothing here ships in the broker.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kafka_protocol::messages::MetadataRequest;

/// The environment variable that names the Maven-built `tests/java` folder (set by `.ci/run`).
pub const JAVA_DIR_ENV: &str = "SLUICE_TEST_JAVA_DIR";

/// JVM flags for short-lived tools: start in about a second on two cores instead of three.
pub const QUICK_JVM: &[&str] = &[
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
];

/// Apache Kafka's jars and our Java test programs, as Maven built them.
#[derive(Clone, Debug)]
pub struct JavaStack {
    dir: PathBuf,
}

impl JavaStack {
    /// `$SLUICE_TEST_JAVA_DIR`, else `tests/java` of this workspace. Fails (never skips) with
    /// the command that builds it when the jars are missing.
    pub fn locate() -> Result<Self> {
        let dir = match std::env::var_os(JAVA_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/java"),
        };
        let lib = dir.join("target/lib");
        let has_client = fs::read_dir(&lib)
            .map(|entries| {
                entries.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("kafka-clients-")
                })
            })
            .unwrap_or(false);
        if !has_client {
            bail!(
                "Apache Kafka's jars are not in {}: build them with \
                 `mvn -q -B -f tests/java/pom.xml -Dmaven.repo.local=.m2 package` \
                 (.ci/run does), or set {JAVA_DIR_ENV}",
                lib.display()
            );
        }
        Ok(Self { dir })
    }

    /// The `tests/java` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `target/classes:target/lib/*`: our programs, then every dependency.
    pub fn classpath(&self) -> OsString {
        let mut cp = OsString::from(self.dir.join("target/classes"));
        cp.push(":");
        cp.push(self.dir.join("target/lib/*"));
        cp
    }

    /// The Kafka version of the jars (from `kafka-clients-<version>.jar`).
    pub fn kafka_version(&self) -> String {
        fs::read_dir(self.dir.join("target/lib"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("kafka-clients-")
                    .and_then(|v| v.strip_suffix(".jar"))
                    .map(str::to_string)
            })
            .next()
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// `java` (from `$JAVA_HOME` when set) with the classpath and [`QUICK_JVM`], ready for the
    /// main class and its arguments. For a short-lived tool or test program.
    pub fn java(&self, main_class: &str) -> Command {
        let mut cmd = self.jvm();
        cmd.args(QUICK_JVM).arg(main_class);
        cmd
    }

    /// `java -cp <classpath>` with nothing else: the caller adds JVM flags and the class.
    pub fn jvm(&self) -> Command {
        let java = std::env::var_os("JAVA_HOME")
            .map(|home| PathBuf::from(home).join("bin/java"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("java"));
        let mut cmd = Command::new(java);
        cmd.arg("-cp").arg(self.classpath());
        cmd
    }
}

/// How to start an [`ApacheKafka`].
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// Heap, -Xms = -Xmx (Kafka's scripts default to 1 GiB).
    pub heap_mb: u32,
    /// Where the log dir and server.properties go; a fresh temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// server.properties lines after the defaults of [`ApacheKafka::start`] (a later line wins,
    /// as in `java.util.Properties`).
    pub props: Vec<(String, String)>,
    /// JVM flags before the main class; Kafka's `KAFKA_JVM_PERFORMANCE_OPTS` when empty.
    pub jvm_flags: Vec<String>,
    /// How long to wait for the broker to answer Metadata with itself.
    pub ready_timeout: Duration,
}

impl KafkaOptions {
    /// A short-lived test broker: the defaults with [`QUICK_JVM`] and a headless JVM (C1 only
    /// and the serial collector start fastest on two cores; answers do not depend on the JIT).
    pub fn short_lived() -> Self {
        let mut jvm_flags: Vec<String> = QUICK_JVM.iter().map(|f| f.to_string()).collect();
        jvm_flags.push("-Djava.awt.headless=true".into());
        Self {
            jvm_flags,
            ..Self::default()
        }
    }
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            heap_mb: 512,
            dir: None,
            props: Vec::new(),
            jvm_flags: Vec::new(),
            ready_timeout: Duration::from_secs(90),
        }
    }
}

/// Kafka's `kafka-run-class.sh` defaults (KAFKA_JVM_PERFORMANCE_OPTS).
pub const KAFKA_JVM_PERFORMANCE_OPTS: &[&str] = &[
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
];

/// The cluster id every reference Kafka is formatted with (any 16 bytes, base64url): each
/// instance has its own directory, so they never meet.
const CLUSTER_ID: &str = "c2x1aWNlLXJlZnN0YWNrAA";

/// A running single-node Apache Kafka (KRaft, broker and controller in one JVM). Killed when
/// dropped.
pub struct ApacheKafka {
    child: Child,
    port: u16,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl ApacheKafka {
    /// Writes server.properties, formats the log dir with Kafka's storage tool, starts
    /// `kafka.Kafka` and waits until Metadata lists the broker.
    ///
    /// Defaults (before `options.props`): one node, PLAINTEXT on a free loopback port, internal
    /// topics with replication factor 1, `group.initial.rebalance.delay.ms=0`. Durability is
    /// Kafka's default: no fsync per write (`log.flush.interval.messages` unset); an acks=all
    /// answer means "replicated to the ISR", here only the leader itself.
    pub fn start(stack: &JavaStack, options: KafkaOptions) -> Result<Self> {
        let (temp, dir) = match &options.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("apache-kafka-")
                    .tempdir()
                    .context("creating Kafka's directory")?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let data = dir.join("data");
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let port = free_port()?;
        let controller_port = free_port()?;
        let mut props = vec![
            ("process.roles", "broker,controller".to_string()),
            ("node.id", "1".to_string()),
            (
                "controller.quorum.voters",
                format!("1@127.0.0.1:{controller_port}"),
            ),
            (
                "listeners",
                format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
            ),
            (
                "advertised.listeners",
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            ("controller.listener.names", "CONTROLLER".to_string()),
            ("inter.broker.listener.name", "PLAINTEXT".to_string()),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string(),
            ),
            ("log.dirs", data.display().to_string()),
            ("offsets.topic.replication.factor", "1".to_string()),
            ("offsets.topic.num.partitions", "4".to_string()),
            ("transaction.state.log.replication.factor", "1".to_string()),
            ("transaction.state.log.min.isr", "1".to_string()),
            (
                "share.coordinator.state.topic.replication.factor",
                "1".to_string(),
            ),
            ("share.coordinator.state.topic.min.isr", "1".to_string()),
            ("group.initial.rebalance.delay.ms", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<Vec<_>>();
        props.extend(options.props.iter().cloned());
        let config = dir.join("server.properties");
        let mut file =
            fs::File::create(&config).with_context(|| format!("writing {}", config.display()))?;
        for (key, value) in &props {
            writeln!(file, "{key}={value}")?;
        }
        drop(file);

        let format = stack
            .java("kafka.tools.StorageTool")
            .args(["format", "-t", CLUSTER_ID, "-c"])
            .arg(&config)
            .output()
            .context("running Kafka's storage tool")?;
        if !format.status.success() {
            bail!(
                "kafka-storage format failed ({}): {}{}",
                format.status,
                String::from_utf8_lossy(&format.stdout),
                String::from_utf8_lossy(&format.stderr)
            );
        }

        let log = fs::File::create(dir.join("kafka.log"))?;
        let mut cmd = stack.jvm();
        cmd.arg(format!("-Xms{}m", options.heap_mb))
            .arg(format!("-Xmx{}m", options.heap_mb));
        if options.jvm_flags.is_empty() {
            cmd.args(KAFKA_JVM_PERFORMANCE_OPTS);
        } else {
            cmd.args(&options.jvm_flags);
        }
        let child = cmd
            .arg("kafka.Kafka")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kafka.Kafka")?;
        let mut kafka = Self {
            child,
            port,
            dir,
            _temp: temp,
        };
        kafka.wait_ready(options.ready_timeout)?;
        Ok(kafka)
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JVM's pid (for CPU accounting from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's directory: server.properties, data/, kafka.log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `bytes` of the broker's log, for failure messages.
    pub fn log_tail(&self, bytes: usize) -> String {
        let log = fs::read(self.dir.join("kafka.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(bytes)..]).into_owned()
    }

    /// Kills the JVM (SIGKILL) and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("Apache Kafka exited ({status}):\n{}", self.log_tail(4000));
            }
            if metadata_lists_a_broker(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Apache Kafka did not answer Metadata within {timeout:?}:\n{}",
                    self.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One Metadata v12 round trip; true when the answer lists at least one broker.
fn metadata_lists_a_broker(port: u16) -> bool {
    let probe = || -> Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let version = 12;
        let request = MetadataRequest::default();
        let frame = kafka_wire::codec::encode_request(&request, version, 1, "refstack")?;
        stream.write_all(&frame)?;
        let mut response = kafka_wire::blocking::read_frame(&mut stream, 64 << 20)?;
        let metadata =
            kafka_wire::codec::decode_response::<MetadataRequest>(&mut response, version)?;
        Ok(!metadata.brokers.is_empty())
    };
    probe().unwrap_or(false)
}

/// The workspace's debug `sluice` binary, for tests outside the `sluice` package (where
/// `CARGO_BIN_EXE_sluice` does not exist): `target/debug/sluice` (or under
/// `$CARGO_TARGET_DIR`) when it is newer than Cargo.lock and every source it is built from, as
/// it is inside `cargo test --workspace`, which builds it before any test runs; otherwise
/// `cargo build -p sluice --bin sluice` first. (Building it unconditionally would resolve
/// features for that package alone and recompile every shared dependency.)
pub fn sluice_debug_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("refstack lives in the workspace")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let binary = target.join("debug").join("sluice");
    if binary_is_fresh(&binary, &workspace) {
        return binary;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(&cargo)
        .args(["build", "-p", "sluice", "--bin", "sluice"])
        .current_dir(&workspace)
        .status()
        .unwrap_or_else(|e| panic!("running `{cargo} build -p sluice --bin sluice`: {e}"));
    assert!(
        status.success(),
        "`cargo build -p sluice --bin sluice` failed: {status}"
    );
    assert!(
        binary.exists(),
        "sluice binary missing at {} after building it",
        binary.display()
    );
    binary
}

/// True when `binary` exists and is newer than Cargo.lock and every file under the sources of
/// the crates the binary is built from.
fn binary_is_fresh(binary: &Path, workspace: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let crates = [
        "sluice",
        "broker",
        "engine",
        "kafka-wire",
        "replication",
        "tuning",
        "loadgen",
    ];
    let mut pending: Vec<PathBuf> = crates
        .iter()
        .flat_map(|krate| {
            [
                workspace.join(krate).join("src"),
                workspace.join(krate).join("Cargo.toml"),
            ]
        })
        .chain([workspace.join("Cargo.lock"), workspace.join("Cargo.toml")])
        .collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            let Ok(entries) = fs::read_dir(&path) else {
                return false;
            };
            pending.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        } else if path.exists() && modified(&path).is_none_or(|m| m > built) {
            return false;
        }
    }
    true
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}
