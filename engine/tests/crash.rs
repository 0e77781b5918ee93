//! Crash test: a child process (this test binary, re-executed) appends with durable acks and
//! prints each acknowledged batch; the parent SIGKILLs it at a random moment, reopens the
//! log, and checks that every acknowledged batch is present and intact and that the log is
//! consistent. Many rounds on the same directory, so recovery also runs on recovered logs.
//!
//! ENGINE_CRASH_ROUNDS overrides the number of rounds; a failure prints the seed
//! (ENGINE_CRASH_SEED replays it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use engine::batch::{batch_crc, build_test_batch, validate_batch};
use engine::{FlushPolicy, Log, LogConfig};
use rand::{Rng, SeedableRng};

const CHILD_TASKS: u64 = 8;
/// How long the parent waits for the child's next ack before calling it hung.
const ACK_DEADLINE: Duration = Duration::from_secs(30);

fn config(preallocate: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        flush: FlushPolicy::EveryAppend,
        preallocate,
        ..LogConfig::default()
    }
}

/// A batch whose last record's value ends with `id` (big-endian), CRC fixed up.
fn make_batch(id: u64) -> Vec<u8> {
    let records = 1 + (id % 4) as i32;
    // At least 16 bytes a record, so the last value holds the 8 id bytes.
    let payload = 64 + (id.wrapping_mul(2654435761) % 3000) as usize;
    let mut b = build_test_batch(records, payload, id as i64, id as i64, (id % 251) as u8);
    let end = b.len() - ID_FROM_END;
    b[end..end + 8].copy_from_slice(&id.to_be_bytes());
    let crc = batch_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Where the id sits: before the last record's header count (one byte).
const ID_FROM_END: usize = 9;

/// The child: appends forever from several tasks, printing `ACK first last id` after each
/// wait_durable. Runs only when the parent sets ENGINE_CRASH_DIR.
#[test]
#[ignore = "child process of crash_keeps_every_acknowledged_batch"]
fn crash_child() {
    let Ok(dir) = std::env::var("ENGINE_CRASH_DIR") else {
        return;
    };
    let round: u64 = std::env::var("ENGINE_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let preallocate = std::env::var("ENGINE_CRASH_PREALLOCATE").is_ok_and(|v| v == "1");
    compio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let (log, _) = Log::open(dir.into(), config(preallocate))
                .await
                .expect("child open");
            let log = Rc::new(log);
            let mut tasks = Vec::new();
            for task in 0..CHILD_TASKS {
                let log = log.clone();
                tasks.push(compio::runtime::spawn(async move {
                    for seq in 0u64.. {
                        let id = (round << 40) | (task << 32) | seq;
                        let info = log
                            .append(Bytes::from(make_batch(id)), round as i32)
                            .await
                            .expect("append");
                        log.wait_durable(info.last_offset)
                            .await
                            .expect("wait_durable");
                        println!("ACK {} {} {id}", info.first_offset, info.last_offset);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
}

struct Ack {
    first: i64,
    last: i64,
    id: u64,
}

#[test]
fn crash_keeps_every_acknowledged_batch() {
    let rounds: u64 = std::env::var("ENGINE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let seed: u64 = std::env::var("ENGINE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (ENGINE_CRASH_SEED={seed} replays the kill points)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<i64, Ack> = BTreeMap::new();
    for round in 1..=rounds {
        let kill_after = rng.random_range(1..300usize);
        let preallocate = rng.random_bool(0.5);
        let new_acks = run_child(dir.path(), round, preallocate, kill_after);
        assert!(
            new_acks.len() >= kill_after,
            "round {round}: child printed {} acks",
            new_acks.len()
        );
        for ack in new_acks {
            assert!(
                acked.insert(ack.first, ack).is_none(),
                "round {round}: offset acknowledged twice"
            );
        }
        verify(dir.path(), preallocate, &acked, round, seed);
    }
}

/// Runs one child until it has printed `kill_after` acks, SIGKILLs it, and returns every ack
/// it printed (including those in the pipe after the kill point).
fn run_child(dir: &Path, round: u64, preallocate: bool, kill_after: usize) -> Vec<Ack> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ENGINE_CRASH_DIR", dir)
        .env("ENGINE_CRASH_ROUND", round.to_string())
        .env(
            "ENGINE_CRASH_PREALLOCATE",
            if preallocate { "1" } else { "0" },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ACK ") {
                let v: Vec<&str> = rest.split(' ').collect();
                let ack = Ack {
                    first: v[0].parse().unwrap(),
                    last: v[1].parse().unwrap(),
                    id: v[2].parse().unwrap(),
                };
                if tx.send(ack).is_err() {
                    break;
                }
            }
        }
    });
    let mut acks = Vec::new();
    while acks.len() < kill_after {
        match rx.recv_timeout(ACK_DEADLINE) {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                let _ = child.kill();
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("round {round}: no ack from the child ({e}); its stderr:\n{err}");
            }
        }
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must die by the signal");
    reader.join().unwrap();
    acks.extend(rx.try_iter());
    acks
}

/// Reopens the log and checks every acknowledged batch and the whole log's consistency.
fn verify(dir: &Path, preallocate: bool, acked: &BTreeMap<i64, Ack>, round: u64, seed: u64) {
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let (log, report) = Log::open(dir.into(), config(preallocate))
            .await
            .expect("reopen after kill");
        let ctx = format!("round {round} seed {seed} report {report:?}");
        // Whole log: contiguous offsets from the start, every CRC valid.
        let r = log
            .read(log.log_start_offset(), i64::MAX, u32::MAX, true)
            .await
            .unwrap();
        let bytes = log.read_bytes(&r.slices).await.unwrap();
        let mut at = 0;
        let mut next = log.log_start_offset();
        let mut by_offset = BTreeMap::new();
        while at < bytes.len() {
            let (h, len) = validate_batch(&bytes[at..], 1 << 20, true)
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(h.base_offset(), next, "{ctx}: offsets must be contiguous");
            let id_at = at + len - ID_FROM_END;
            let id = u64::from_be_bytes(bytes[id_at..id_at + 8].try_into().unwrap());
            by_offset.insert(h.base_offset(), (h.last_offset(), id));
            next = h.last_offset() + 1;
            at += len;
        }
        assert_eq!(next, log.log_end_offset(), "{ctx}");
        // Every acknowledged batch is there, at its offsets, with its payload.
        for ack in acked.values() {
            let found = by_offset.get(&ack.first);
            assert_eq!(
                found,
                Some(&(ack.last, ack.id)),
                "{ctx}: acknowledged batch at {} lost or changed",
                ack.first
            );
        }
        log.close().await.unwrap();
    });
}
