//! Named limits of the engine, with their relationships asserted at compile time.
//!
//! Owns: every numeric bound the engine enforces on input and on disk.
//! Invariants: the `const _: () = assert!(…)` lines below hold; changing a value that breaks
//! them fails the build.

/// Bytes in a Kafka v2 record batch header (base_offset .. records_count).
pub const BATCH_HEADER_BYTES: usize = 61;
/// Smallest v2 record body (after its length prefix): attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each at least.
pub const RECORD_BODY_BYTES_MIN: usize = 6;
/// Longest zigzag varint of an i32 (Kafka's `readVarint` reads at most 5 bytes).
pub const VARINT32_BYTES_MAX: usize = 5;
/// Bytes of the `base_offset` + `batch_length` prefix; `batch_length` counts the rest.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
/// First byte covered by the batch CRC32C (attributes onwards).
pub const BATCH_CRC_START: usize = 21;
/// Bytes the engine patches in place at append: base_offset, batch_length, leader epoch.
/// (batch_length is not changed, but it sits between the two patched fields.)
pub const BATCH_PATCH_BYTES: usize = 16;
/// Largest batch the engine accepts whatever the topic config says (Kafka's
/// max.message.bytes is an i32; we bound it lower so one batch fits a read buffer).
pub const MAX_BATCH_BYTES_LIMIT: u32 = 64 * 1024 * 1024;
/// Default max.message.bytes (Kafka: 1 MiB + overhead).
pub const MAX_BATCH_BYTES_DEFAULT: u32 = 1024 * 1024 + 12 * 1024;
/// Smallest allowed segment.bytes (Kafka: 14 bytes; we want room for at least one header).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment.bytes: positions in the offset index are u32 (Kafka: i32::MAX).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Default segment.bytes.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Default segment.ms (7 days).
pub const SEGMENT_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;
/// Default index.interval.bytes.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Bytes per offset-index entry: relative offset (u32 BE) + position (u32 BE), as Kafka.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Bytes per time-index entry: timestamp (i64 BE) + relative offset (u32 BE), as Kafka.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// Largest relative offset in one segment (index entries hold u32).
pub const SEGMENT_RELATIVE_OFFSET_MAX: i64 = u32::MAX as i64;
/// Read-ahead chunk used when walking batch headers or scanning during recovery.
pub const SCAN_CHUNK_BYTES: usize = 256 * 1024;
/// Bytes looked at beyond the first bad byte to tell a preallocated zero tail from torn data.
pub const ZERO_TAIL_PROBE_BYTES: usize = 1024 * 1024;
/// Segments per log before open refuses the directory (recovery opens all 3 files of each;
/// afterwards a sealed segment holds 1, its `.log`).
pub const SEGMENTS_PER_LOG_MAX: usize = 100_000;
/// fdatasyncs of one log allowed in flight at once (pipelined group commit). 1 batches best
/// (fewest syncs) and is optimal when the device serialises flushes; more lets a late waiter
/// start its own sync at once on devices that flush in parallel. See engine.md.
pub const SYNCS_IN_FLIGHT_MAX: usize = 2;
/// Multi-batch appends copy into a reused buffer; above this capacity it is not kept.
pub const WRITE_BUFFER_RETAIN_BYTES: usize = 4 * 1024 * 1024;
/// Slices per vectored write (Linux IOV_MAX is 1024); a follower append of more batches is
/// written in several vectored writes.
pub const WRITE_SLICES_MAX: usize = 512;
/// How often flush_tick rewrites the recovery-point checkpoint (Kafka: 60 s).
pub const CHECKPOINT_INTERVAL_MS: i64 = 60_000;
/// Bytes of the checkpoint file.
pub const CHECKPOINT_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 4 + 4;

const _: () = assert!(BATCH_CRC_START < BATCH_HEADER_BYTES);
const _: () = assert!(
    (MAX_BATCH_BYTES_LIMIT as usize) < (1 << (7 * VARINT32_BYTES_MAX - 1)),
    "any record length inside a batch fits a varint"
);
const _: () = assert!(
    BATCH_PATCH_BYTES < BATCH_CRC_START,
    "patched bytes must lie outside the CRC"
);
const _: () = assert!(BATCH_LENGTH_PREFIX_BYTES < BATCH_HEADER_BYTES);
const _: () = assert!(MAX_BATCH_BYTES_DEFAULT <= MAX_BATCH_BYTES_LIMIT);
const _: () = assert!((MAX_BATCH_BYTES_LIMIT as u64) < SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN >= BATCH_HEADER_BYTES as u64);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(
    SEGMENT_BYTES_MAX <= u32::MAX as u64,
    "index positions are u32"
);
const _: () = assert!(
    WRITE_SLICES_MAX >= 2 && WRITE_SLICES_MAX <= 1024,
    "IOV_MAX is 1024"
);
const _: () = assert!(INDEX_INTERVAL_BYTES_DEFAULT <= i32::MAX as u32);
const _: () = assert!(SCAN_CHUNK_BYTES >= BATCH_HEADER_BYTES);
const _: () = assert!(CHECKPOINT_BYTES == 38);
const _: () = assert!(SYNCS_IN_FLIGHT_MAX >= 1);
const _: () = assert!(WRITE_BUFFER_RETAIN_BYTES >= MAX_BATCH_BYTES_DEFAULT as usize);
