//! Shared harness for the broker's integration tests: a real `sluice` child process per test,
//! and a minimal raw Kafka client (kafka-wire's framing and codec over a blocking socket; its
//! own loop, because it panics on any failure and must also write malformed frames).
//!
//! Broker: `Broker::start()` / `Broker::start_with(&["--shards", "1"])` start `sluice start`
//! on a kernel-chosen loopback port (`--kafka-addr 127.0.0.1:0`; the port is read from the
//! `ready` line, so there is no free-port race) with a fresh temp data dir, and return once it
//! printed `ready`. `.addr()` is "127.0.0.1:PORT"; `.stop()` sends SIGTERM and requires exit 0;
//! `.kill()` is SIGKILL; `.restart()` is a clean stop and a start on the same port and data dir.
//! Nothing sleeps to synchronise: every wait has a deadline and fails with the broker's log.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod cluster;
pub mod metrics;
pub mod nemesis;
pub mod requests;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_wire::varint::put_varint;

/// How long the broker may take to print `ready` (a debug build on a loaded 2-core machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean shutdown may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read timeout of the raw client: turns a hang into a failure.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_KEEP_BYTES: usize = 64 * 1024;
/// Largest response frame the raw client reads (a Fetch answer in these tests is far smaller).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

pub struct Broker {
    child: Option<Child>,
    addr: String,
    data_dir: tempfile::TempDir,
    args: Vec<String>,
    log: Arc<Mutex<String>>,
    /// RLIMIT_NOFILE (soft = hard) the child runs with; None inherits the test's.
    nofile: Option<u64>,
}

impl Broker {
    /// A broker with default settings (2 shards, so cross-shard paths are exercised).
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// A broker with extra `sluice start` flags (`--shards N` replaces the harness's 2).
    pub fn start_with(args: &[&str]) -> Broker {
        Broker::start_limited(args, None)
    }

    /// Like `start_with`, with the child's open-file limit (soft and hard) set to `nofile`
    /// before it runs, also on every restart.
    pub fn start_with_nofile(nofile: u64, args: &[&str]) -> Broker {
        Broker::start_limited(args, Some(nofile))
    }

    fn start_limited(args: &[&str], nofile: Option<u64>) -> Broker {
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .expect("temp dir");
        Broker::start_with_dir(data_dir, args, nofile)
    }

    /// Like `start_with`, with the data dir created inside `parent` (e.g. a small filesystem
    /// mounted for the test).
    pub fn start_in(parent: &Path, args: &[&str]) -> Broker {
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir_in(parent)
            .expect("temp dir");
        Broker::start_with_dir(data_dir, args, None)
    }

    fn start_with_dir(data_dir: tempfile::TempDir, args: &[&str], nofile: Option<u64>) -> Broker {
        let mut broker = Broker {
            child: None,
            addr: "127.0.0.1:0".to_string(),
            data_dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            log: Arc::new(Mutex::new(String::new())),
            nofile,
        };
        broker.spawn();
        broker
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// SIGTERM; the broker must exit 0 within the deadline.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGKILL, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Changes the open-file limit (soft and hard) the next start runs with.
    pub fn set_nofile(&mut self, nofile: u64) {
        self.nofile = Some(nofile);
    }

    /// Clean stop, then start again on the same port and data dir.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// Start again after `kill()` (same port and data dir).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker still running");
        self.spawn();
    }

    /// Sends SIGTERM and returns at once (for tests that watch the shutdown itself).
    pub fn send_sigterm(&self) {
        let child = self.child.as_ref().expect("broker running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(
            matches!(sent, Ok(s) if s.success()),
            "SIGTERM to broker: {sent:?}"
        );
    }

    /// Waits for the process to exit (after `send_sigterm`); None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let status = wait_deadline(&mut child, timeout);
        if status.is_none() {
            self.child = Some(child);
        }
        status
    }

    /// The running process's id (for /proc measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is running").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The broker's output so far (stdout and stderr by line).
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A raw Kafka connection to this broker.
    pub fn connect(&self) -> RawClient {
        RawClient::connect(&self.addr)
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // kill(1) rather than libc::kill: no unsafe for one signal; the child is not reaped
        // yet, so its pid cannot have been reused.
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(
            matches!(sent, Ok(s) if s.success()),
            "SIGTERM to broker: {sent:?}"
        );
        match wait_deadline(&mut child, STOP_TIMEOUT) {
            Some(status) => {
                assert!(
                    status.success(),
                    "broker exited with {status} after SIGTERM (want 0)\n--- log ---\n{}",
                    self.log()
                )
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- log ---\n{}",
                    self.log()
                );
            }
        }
    }

    fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        if let Some(nofile) = self.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit, which is async-signal-safe; it touches no shared state.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // Two shards unless the test chose (clap refuses a repeated flag).
        let shards: &[&str] = if self.args.iter().any(|a| a == "--shards") {
            &[]
        } else {
            &["--shards", "2"]
        };
        let mut child = command
            .arg("start")
            .args(shards)
            .args(["--kafka-addr", &self.addr, "--data-dir"])
            .arg(self.data_dir.path())
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the sluice binary");
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let outputs: [(Box<dyn Read + Send>, bool); 2] = [
            (Box::new(child.stdout.take().expect("stdout")), true),
            (Box::new(child.stderr.take().expect("stderr")), false),
        ];
        for (out, is_stdout) in outputs {
            let log = Arc::clone(&self.log);
            let ready_tx = ready_tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if is_stdout && line.starts_with("sluice ready:") {
                        let _ = ready_tx.send(line.clone());
                    }
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                        if log.len() > LOG_KEEP_BYTES {
                            let cut = log.len() - LOG_KEEP_BYTES;
                            let cut = (cut..log.len())
                                .find(|i| log.is_char_boundary(*i))
                                .unwrap_or(0);
                            log.drain(..cut);
                        }
                    }
                }
            });
        }
        drop(ready_tx);
        self.child = Some(child);
        self.wait_ready(&ready_rx);
    }

    fn wait_ready(&mut self, ready_rx: &Receiver<String>) {
        let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                self.kill();
                panic!(
                    "broker did not print `ready` ({e:?})\n--- log ---\n{}",
                    self.log()
                );
            }
        };
        // "sluice ready: kafka=HOST:PORT listener=... ..."
        let listener = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listener="))
            .unwrap_or_else(|| panic!("no listener= in ready line: {line}"));
        self.addr = listener.to_string();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- broker log ---\n{}", self.log());
        }
        self.kill();
    }
}

fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// A blocking Kafka connection speaking raw frames.
pub struct RawClient {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl RawClient {
    pub fn connect(addr: &str) -> RawClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Encodes and sends a request; returns its correlation id.
    pub fn send<R: Encodable>(&mut self, api_key: ApiKey, version: i16, body: &R) -> i32 {
        let (frame, correlation_id) = self.encode(api_key, version, body);
        self.stream.write_all(&frame).expect("write frame");
        correlation_id
    }

    /// Encodes a request as a complete frame (size prefix included) without sending it, so
    /// several can go out in one write.
    pub fn encode<R: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &R,
    ) -> (Vec<u8>, i32) {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut frame = BytesMut::new();
        kafka_wire::encode_request_into(
            &mut frame,
            api_key,
            version,
            correlation_id,
            "raw-test",
            body,
        )
        .expect("encode request");
        (frame.to_vec(), correlation_id)
    }

    /// Sends `payload` with its size prefix.
    pub fn send_frame(&mut self, payload: &[u8]) {
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).expect("write frame");
    }

    /// Reads one response frame (without the size prefix); None on EOF/reset.
    pub fn recv_frame(&mut self) -> Option<Bytes> {
        kafka_wire::blocking::read_frame(&mut self.stream, RESPONSE_BYTES_MAX).ok()
    }

    /// Reads and decodes a response; checks the correlation id.
    pub fn recv<R: Decodable>(&mut self, api_key: ApiKey, version: i16, correlation_id: i32) -> R {
        let mut frame = self.recv_frame().expect("response frame");
        let (header, response) = kafka_wire::decode_response_as::<R>(api_key, version, &mut frame)
            .expect("decode response");
        assert_eq!(
            header.correlation_id, correlation_id,
            "responses out of order"
        );
        response
    }

    /// Request and response in one.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        let id = self.send(api_key, version, body);
        self.recv(api_key, version, id)
    }

    /// True when the broker closed the connection (EOF or reset) within the read timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// Timestamp of record 0 of every batch `record_batch` builds; record i has base + i.
pub const BATCH_BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// A transactional record batch (attributes bit 4) of `count` records from `pid`/`epoch`,
/// starting at sequence `seq`, with its CRC recomputed.
pub fn txn_batch(count: i32, pid: i64, epoch: i16, seq: i32) -> Bytes {
    let mut b = record_batch(count, Some((pid, epoch, seq))).to_vec();
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// InitProducerId without a transactional id (an idempotent producer id, epoch 0).
pub fn init_producer_id(c: &mut RawClient) -> i64 {
    use kafka_protocol::messages::{
        ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
    };
    let init: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    init.producer_id.0
}

/// A v2 record batch with `count` records (key "k{i}", value "v{i}"), no compression,
/// producer id -1 unless given. CRC32C filled in.
pub fn record_batch(count: i32, producer: Option<(i64, i16, i32)>) -> Bytes {
    record_batch_sized(count, 0, producer)
}

/// Like `record_batch`, with values padded to at least `value_bytes`.
pub fn record_batch_sized(
    count: i32,
    value_bytes: usize,
    producer: Option<(i64, i16, i32)>,
) -> Bytes {
    let mut records = BytesMut::new();
    for i in 0..count {
        let key = format!("k{i}");
        let mut value = format!("v{i}");
        if value.len() < value_bytes {
            value.push_str(&"x".repeat(value_bytes - value.len()));
        }
        let mut body = BytesMut::new();
        body.put_i8(0); // attributes
        put_varint(&mut body, i64::from(i)); // timestamp delta: record i at base + i
        put_varint(&mut body, i64::from(i)); // offset delta
        put_varint(&mut body, key.len() as i64);
        body.put_slice(key.as_bytes());
        put_varint(&mut body, value.len() as i64);
        body.put_slice(value.as_bytes());
        put_varint(&mut body, 0); // headers
        put_varint(&mut records, body.len() as i64);
        records.put_slice(&body);
    }
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let mut b = BytesMut::new();
    b.put_i64(0); // base offset
    b.put_i32((49 + records.len()) as i32); // batch length: bytes after this field
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, filled below
    b.put_i16(0); // attributes
    b.put_i32(count - 1); // last offset delta
    b.put_i64(BATCH_BASE_TIMESTAMP);
    b.put_i64(BATCH_BASE_TIMESTAMP + i64::from(count - 1));
    b.put_i64(pid);
    b.put_i16(epoch);
    b.put_i32(seq);
    b.put_i32(count);
    b.put_slice(&records);
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A compressed batch of `count` records (offsets 0.., one producer-less batch).
pub fn compressed_batch(compression: kafka_protocol::records::Compression, count: i64) -> Bytes {
    let records: Vec<kafka_protocol::records::Record> = (0..count)
        .map(|i| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: i,
            // offset - sequence constant keeps the records in one batch; the first record's
            // -1 is the batch's base sequence (no producer).
            sequence: i as i32 - 1,
            timestamp: BATCH_BASE_TIMESTAMP + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value {i} ").repeat(20))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.freeze()
}

/// CRC32C (Castagnoli), bitwise: tests only, no extra dependency.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Splits a records blob into (base_offset, record_count) per batch.
pub fn batches(mut records: Bytes) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    while records.len() >= 61 {
        let base = (&records[0..8]).get_i64();
        let len = (&records[8..12]).get_i32() as usize;
        let count = (&records[57..61]).get_i32();
        out.push((base, count));
        if records.len() < 12 + len {
            break;
        }
        records.advance(12 + len);
    }
    out
}

/// The last `bytes` of `s` (on a char boundary), marked as cut when it is.
pub fn tail(s: &str, bytes: usize) -> String {
    if s.len() <= bytes {
        return s.to_string();
    }
    let mut start = s.len() - bytes;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &s[start..])
}

/// Kafka Connect's and MirrorMaker 2's log4j2 config for the tests: INFO to stdout (their log
/// file), Kafka's client and config INFO noise at WARN.
pub const CONNECT_LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c:%L)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
logger.isolation.name = org.apache.kafka.connect.runtime.isolation
logger.isolation.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
";
