//! Reused receive buffers for large request frames (one pool per shard).
//!
//! Why: a produce request is ~1 MiB of record batches that stays alive (as `Bytes` slices)
//! until its appends finish, so the connection cannot read the next request into the same
//! memory. Reading each frame into a fresh allocation made the allocator hand out memory it
//! had just given back to the kernel (glibc trims freed heap tops with `madvise`), and the
//! kernel then faulted and zeroed every page again while copying from the socket: ~19 % of
//! the broker's CPU on a 1 KiB acks=1 produce run (docs/benchmarks.md, issue 3). A frame of
//! at least `POOLED_FRAME_BYTES_MIN` is therefore read straight into a buffer from this pool;
//! the frame is `Bytes::from_owner` of that buffer, and when its last slice is dropped (on
//! whichever shard appended it) the buffer goes back to the pool, its pages still mapped.
//!
//! Limits: the pool keeps at most `POOL_BYTES_MAX` of idle buffers and none larger than
//! `POOLED_BUFFER_BYTES_MAX`; anything beyond is freed as before. Buffers are sized in steps
//! of `BUFFER_STEP_BYTES` so frames of slightly different sizes share them.
//! Invariant: a buffer is either in the pool (len 0) or owned by exactly one frame.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Frames at least this large are read into a pooled buffer; smaller ones are cut from the
/// connection's read buffer.
pub const POOLED_FRAME_BYTES_MIN: usize = 64 * 1024;
/// Largest buffer kept for reuse (larger frames get a one-off allocation).
pub const POOLED_BUFFER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Idle bytes a pool keeps (per shard).
pub const POOL_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Buffer capacities are rounded up to a multiple of this.
pub const BUFFER_STEP_BYTES: usize = 128 * 1024;
/// Buffers a shard's pool starts with, already written once so their pages are mapped: the
/// first produce requests at full speed otherwise fault every page in while the socket copy
/// runs, slowest on a VM whose host takes freed guest memory back (docs/benchmarks.md).
pub const PREFAULT_BUFFERS: usize = 16;
/// Their size: Kafka's default `max.request.size` (1 MiB), so any default-sized request fits.
pub const PREFAULT_BUFFER_BYTES: usize = 1024 * 1024;

const _: () = assert!(POOLED_FRAME_BYTES_MIN <= POOLED_BUFFER_BYTES_MAX);
const _: () = assert!(POOLED_BUFFER_BYTES_MAX <= POOL_BYTES_MAX);
const _: () = assert!(POOLED_BUFFER_BYTES_MAX.is_multiple_of(BUFFER_STEP_BYTES));
const _: () = assert!(PREFAULT_BUFFER_BYTES.is_multiple_of(BUFFER_STEP_BYTES));
const _: () = assert!(PREFAULT_BUFFERS * PREFAULT_BUFFER_BYTES <= POOL_BYTES_MAX);

/// A shard's pool of idle frame buffers. Cheap to clone (one `Arc`); `Send`, because a frame
/// may be dropped on the shard that owns its partition.
#[derive(Clone, Default)]
pub struct FramePool {
    idle: Arc<Mutex<Idle>>,
}

#[derive(Default)]
struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl FramePool {
    /// A pool holding `PREFAULT_BUFFERS` idle buffers of `PREFAULT_BUFFER_BYTES`, each
    /// written once (the allocation is touched here, on the shard thread, at start).
    pub fn prefaulted() -> FramePool {
        let pool = FramePool::default();
        for _ in 0..PREFAULT_BUFFERS {
            // Not `vec![0; n]`: calloc would hand out untouched zero pages.
            let mut buf = Vec::with_capacity(PREFAULT_BUFFER_BYTES);
            buf.resize(PREFAULT_BUFFER_BYTES, 1u8);
            std::hint::black_box(buf.as_slice());
            buf.clear();
            pool.give_back(buf);
        }
        pool
    }

    /// An empty buffer with capacity for at least `bytes`: the smallest idle one that fits,
    /// or a new one.
    pub fn take(&self, bytes: usize) -> Vec<u8> {
        if bytes <= POOLED_BUFFER_BYTES_MAX {
            let mut idle = self.lock();
            let best = idle
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= bytes)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let buf = idle.buffers.swap_remove(i);
                idle.bytes -= buf.capacity();
                return buf;
            }
        }
        Vec::with_capacity(bytes.next_multiple_of(BUFFER_STEP_BYTES))
    }

    /// The filled buffer as `Bytes`; it returns to the pool when the last slice is dropped.
    pub fn freeze(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    /// Idle buffers and their total capacity (tests, metrics).
    pub fn idle(&self) -> (usize, usize) {
        let idle = self.lock();
        (idle.buffers.len(), idle.bytes)
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > POOLED_BUFFER_BYTES_MAX {
            return;
        }
        let mut idle = self.lock();
        if idle.bytes + cap > POOL_BYTES_MAX {
            return;
        }
        buf.clear();
        idle.bytes += cap;
        idle.buffers.push(buf);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // Nothing panics while the lock is held; a poisoned pool is still consistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A frame's buffer, owned by its `Bytes` slices.
struct Pooled {
    buf: Vec<u8>,
    pool: FramePool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_slice_drops() {
        let pool = FramePool::default();
        let mut buf = pool.take(100_000);
        assert!(buf.capacity() >= 100_000);
        let cap = buf.capacity();
        buf.extend_from_slice(&[7u8; 100_000]);
        let frame = pool.freeze(buf);
        let tail = frame.slice(50_000..);
        drop(frame);
        assert_eq!(pool.idle(), (0, 0), "a slice still holds the buffer");
        assert_eq!(tail[0], 7);
        drop(tail);
        assert_eq!(pool.idle(), (1, cap));
        let again = pool.take(90_000);
        assert_eq!(again.capacity(), cap, "the idle buffer is reused");
        assert!(again.is_empty());
        assert_eq!(pool.idle(), (0, 0));
    }

    #[test]
    fn smallest_fitting_buffer_is_taken() {
        let pool = FramePool::default();
        let big = pool.take(4 * BUFFER_STEP_BYTES);
        let small = pool.take(BUFFER_STEP_BYTES);
        drop(pool.freeze(big));
        drop(pool.freeze(small));
        assert_eq!(pool.take(100).capacity(), BUFFER_STEP_BYTES);
        assert_eq!(pool.take(100).capacity(), 4 * BUFFER_STEP_BYTES);
    }

    #[test]
    fn prefaulted_pool_serves_a_default_sized_request_without_allocating() {
        let pool = FramePool::prefaulted();
        assert_eq!(
            pool.idle(),
            (PREFAULT_BUFFERS, PREFAULT_BUFFERS * PREFAULT_BUFFER_BYTES)
        );
        let buf = pool.take(PREFAULT_BUFFER_BYTES);
        assert_eq!(buf.capacity(), PREFAULT_BUFFER_BYTES);
        assert_eq!(pool.idle().0, PREFAULT_BUFFERS - 1);
        drop(pool.freeze(buf));
        assert_eq!(pool.idle().0, PREFAULT_BUFFERS);
    }

    #[test]
    fn pool_is_bounded() {
        let pool = FramePool::default();
        let huge = pool.take(POOLED_BUFFER_BYTES_MAX + 1);
        drop(pool.freeze(huge));
        assert_eq!(pool.idle(), (0, 0), "oversized buffers are not kept");
        let frames: Vec<Bytes> = (0..POOL_BYTES_MAX / POOLED_BUFFER_BYTES_MAX + 2)
            .map(|_| pool.freeze(pool.take(POOLED_BUFFER_BYTES_MAX)))
            .collect();
        drop(frames);
        assert!(pool.idle().1 <= POOL_BYTES_MAX);
    }
}
