//! The io_uring loop behind iotune: keeps `queue_depth` reads or writes in flight against one
//! file until a deadline or an operation budget, and times each completion; plus a QD1
//! write + fdatasync loop. This module holds iotune's only `unsafe` (pushing SQEs).
//!
//! Ownership rule: every buffer handed to the kernel lives in `Slots`, which outlives every
//! in-flight operation: the loop drains all completions before returning. If the ring itself
//! fails mid-run we cannot know the kernel is done with the buffers, so they are leaked.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{IoUring, opcode, types};

/// Alignment O_DIRECT needs for buffers, offsets and lengths (logical block size or page).
pub const DIRECT_ALIGN_BYTES: usize = 4096;
/// Most operations one job keeps in flight.
pub const QUEUE_DEPTH_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
}

/// One closed-loop job.
pub struct Job<'a> {
    pub fd: RawFd,
    pub kind: OpKind,
    pub block_bytes: usize,
    pub queue_depth: usize,
    /// Offset of the next operation.
    pub next_offset: &'a mut dyn FnMut() -> u64,
    pub deadline: Instant,
}

pub struct JobResult {
    pub ops: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Per-operation latency, microseconds.
    pub latency_us: Histogram<u64>,
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 us .. 60 s at 3 significant digits; the bounds are valid so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Page-aligned buffers, one per slot, with the time each slot's op was queued.
struct Slots {
    storage: Vec<Vec<u8>>,
    block_bytes: usize,
    started: Vec<Instant>,
}

impl Slots {
    fn new(count: usize, block_bytes: usize) -> Slots {
        let mut storage = Vec::with_capacity(count);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..count {
            let mut v = vec![0u8; block_bytes + DIRECT_ALIGN_BYTES];
            // Incompressible content: a device that compresses or dedups zeros would flatter.
            for chunk in v.chunks_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let bytes = seed.to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
            storage.push(v);
        }
        Slots {
            storage,
            block_bytes,
            started: vec![Instant::now(); count],
        }
    }

    /// The aligned `block_bytes` window of a slot's buffer.
    fn ptr(&mut self, slot: usize) -> *mut u8 {
        let v = &mut self.storage[slot];
        let start = v.as_ptr().align_offset(DIRECT_ALIGN_BYTES);
        v[start..start + self.block_bytes].as_mut_ptr()
    }
}

/// Runs `job` to its deadline; returns counts and latencies.
pub fn run_job(ring: &mut IoUring, job: Job<'_>) -> io::Result<JobResult> {
    assert!(job.queue_depth >= 1 && job.queue_depth <= QUEUE_DEPTH_MAX);
    assert!(job.queue_depth <= ring.params().sq_entries() as usize);
    let mut slots = Slots::new(job.queue_depth, job.block_bytes);
    let mut latency_us = new_histogram();
    let started = Instant::now();
    let (mut ops, mut bytes, mut in_flight) = (0u64, 0u64, 0usize);
    let mut failure: Option<io::Error> = None;
    for slot in 0..job.queue_depth {
        let offset = (job.next_offset)();
        if let Err(e) = push(ring, &mut slots, &job, slot, offset) {
            failure = Some(e);
            break;
        }
        in_flight += 1;
    }
    while in_flight > 0 {
        if let Err(e) = ring.submit_and_wait(1) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            std::mem::forget(slots); // see the module's ownership rule
            return Err(e);
        }
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, result) in done {
            let slot = slot as usize;
            in_flight -= 1;
            let now = Instant::now();
            if result < 0 {
                failure.get_or_insert(io::Error::from_raw_os_error(-result));
            } else {
                ops += 1;
                bytes += result as u64;
                let us = now.duration_since(slots.started[slot]).as_micros() as u64;
                latency_us.saturating_record(us.max(1));
            }
            if failure.is_none() && now < job.deadline {
                let offset = (job.next_offset)();
                if let Err(e) = push(ring, &mut slots, &job, slot, offset) {
                    failure.get_or_insert(e);
                } else {
                    in_flight += 1;
                }
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(JobResult {
        ops,
        bytes,
        elapsed: started.elapsed(),
        latency_us,
    })
}

fn push(
    ring: &mut IoUring,
    slots: &mut Slots,
    job: &Job<'_>,
    slot: usize,
    offset: u64,
) -> io::Result<()> {
    let ptr = slots.ptr(slot);
    let len = job.block_bytes as u32;
    let fd = types::Fd(job.fd);
    let entry = match job.kind {
        OpKind::Read => opcode::Read::new(fd, ptr, len).offset(offset).build(),
        OpKind::Write => opcode::Write::new(fd, ptr as *const u8, len)
            .offset(offset)
            .build(),
    }
    .user_data(slot as u64);
    slots.started[slot] = Instant::now();
    // SAFETY: the buffer behind `ptr` (block_bytes long, inside `slots.storage[slot]`) stays
    // allocated and untouched until this slot's completion is reaped: `run_job` drains every
    // in-flight op before dropping `slots`, and leaks them if the ring fails.
    // Submitted by the caller's next submit_and_wait.
    unsafe { ring.submission().push(&entry) }.map_err(|_| io::Error::other("submission queue full"))
}

/// QD1 loop: append `block_bytes` then fdatasync, until the deadline; returns the fdatasync
/// latencies (us) and the count. Models the broker's group commit on a preallocated segment.
pub fn run_sync_job(
    ring: &mut IoUring,
    fd: RawFd,
    block_bytes: usize,
    region_bytes: u64,
    deadline: Instant,
) -> io::Result<(u64, Histogram<u64>)> {
    let mut slots = Slots::new(1, block_bytes);
    let mut latency_us = new_histogram();
    let mut offset = 0u64;
    let mut syncs = 0u64;
    while Instant::now() < deadline {
        let ptr = slots.ptr(0) as *const u8;
        let write = opcode::Write::new(types::Fd(fd), ptr, block_bytes as u32)
            .offset(offset)
            .build()
            .user_data(0);
        // SAFETY: slot 0's buffer outlives the op: we wait for its completion right below.
        unsafe { ring.submission().push(&write) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        if let Err(e) = wait_one(ring) {
            std::mem::forget(slots); // the write may still own the buffer
            return Err(e);
        }
        let sync = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(1);
        let t0 = Instant::now();
        // SAFETY: fsync references no memory.
        unsafe { ring.submission().push(&sync) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        if let Err(e) = wait_one(ring) {
            std::mem::forget(slots);
            return Err(e);
        }
        latency_us.saturating_record((t0.elapsed().as_micros() as u64).max(1));
        syncs += 1;
        offset = (offset + block_bytes as u64) % region_bytes.max(block_bytes as u64);
    }
    drop(slots);
    Ok((syncs, latency_us))
}

/// Submits and reaps exactly one completion; a negative result is the op's error.
fn wait_one(ring: &mut IoUring) -> io::Result<()> {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no completion after wait"))?;
    if cqe.result() < 0 {
        return Err(io::Error::from_raw_os_error(-cqe.result()));
    }
    Ok(())
}
