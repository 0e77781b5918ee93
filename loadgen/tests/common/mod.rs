//! Shared by loadgen's integration tests: a real Sluice broker started per test.
//!
//! The broker binary belongs to another package, so `CARGO_BIN_EXE_sluice` is not available:
//! `refstack::sluice_debug_binary` finds (or builds) it, and the harness starts it on a free
//! port with a temporary data directory.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Broker {
    child: Child,
    pub addr: String,
    _data_dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub fn start_broker() -> Broker {
    let binary = refstack::sluice_debug_binary();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(&binary)
        .args(["start", "--kafka-addr", &addr, "--data-dir"])
        .arg(data_dir.path())
        // Small, sparse segments: the test must not fill the disk.
        .env("SLUICE_LOG_PREALLOCATE", "false")
        .env("SLUICE_LOG_SEGMENT_BYTES", "16777216")
        .env("SLUICE_BROKER_SHARDS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    let broker = Broker {
        child,
        addr,
        _data_dir: data_dir,
    };
    ready_rx
        .recv_timeout(READY_TIMEOUT)
        .unwrap_or_else(|_| panic!("sluice did not print `ready` within {READY_TIMEOUT:?}"));
    broker
}
