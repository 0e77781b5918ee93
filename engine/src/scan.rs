//! Walking the batches of a segment file: a light header walk for reads and lookups, and a
//! full validating scan for recovery.
//!
//! Owns: reading a segment in chunks and framing batches out of it.
//! Invariants: never trusts a length it has not bounds-checked; every failure names the file
//! and the byte position.

use std::ops::ControlFlow;
use std::path::Path;

use compio::fs::File;

use crate::batch::{BatchHeader, MAGIC_V2, batch_crc, frame_batch};
use crate::error::LogError;
use crate::io::read_up_to;
use crate::limits::{
    BATCH_HEADER_BYTES, MAX_BATCH_BYTES_LIMIT, SCAN_CHUNK_BYTES, SEGMENT_BYTES_MAX,
    ZERO_TAIL_PROBE_BYTES,
};

/// Bytes read per step of a header walk (headers only; batch bodies are skipped).
const HEADER_WALK_CHUNK_BYTES: usize = 16 * 1024;

/// Calls `f(position, header)` for each batch from `start` until `end` or `f` breaks.
/// The region is data the engine wrote and recovery validated; a malformed header here
/// means the file changed under us and is reported as `Corrupt`.
pub(crate) async fn walk_headers(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    mut f: impl FnMut(u64, &BatchHeader) -> ControlFlow<()>,
) -> Result<(), LogError> {
    walk_batches(file, path, start, end, |_| false, |pos, h, _| f(pos, h)).await
}

/// Largest batch [`walk_batches`] hands over whole (a control batch is under 100 bytes).
pub(crate) const WHOLE_BATCH_BYTES_MAX: u64 = 4096;

/// [`walk_headers`], also handing `f` the whole batch (length prefix included) for each
/// batch `whole(header)` asks for, if it is at most [`WHOLE_BATCH_BYTES_MAX`] bytes; every
/// other batch gets an empty slice. Used for control batches (transaction markers), whose
/// one record says COMMIT or ABORT.
pub(crate) async fn walk_batches(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    whole: impl Fn(&BatchHeader) -> bool,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> ControlFlow<()>,
) -> Result<(), LogError> {
    let mut pos = start;
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_start = 0u64;
    while pos < end {
        let in_chunk = pos >= chunk_start
            && pos + BATCH_HEADER_BYTES as u64 <= chunk_start + chunk.len() as u64;
        if !in_chunk {
            let want = HEADER_WALK_CHUNK_BYTES
                .min((end - pos) as usize)
                .max(BATCH_HEADER_BYTES);
            chunk = read_up_to(file, pos, want)
                .await
                .map_err(|e| LogError::io("read", path, e))?;
            chunk_start = pos;
            if chunk.len() < BATCH_HEADER_BYTES {
                return Err(corrupt(path, pos, "file ends inside a batch header"));
            }
        }
        let at = (pos - chunk_start) as usize;
        let header =
            BatchHeader::parse(&chunk[at..]).ok_or_else(|| corrupt(path, pos, "short header"))?;
        let total = header.total_bytes();
        if header.magic != MAGIC_V2
            || total < BATCH_HEADER_BYTES as u64
            || total > u64::from(MAX_BATCH_BYTES_LIMIT)
            || pos + total > end
        {
            return Err(corrupt(
                path,
                pos,
                &format!(
                    "batch header (length {}, magic {}) is not valid",
                    header.batch_length.get(),
                    header.magic
                ),
            ));
        }
        let wanted = whole(header) && total <= WHOLE_BATCH_BYTES_MAX;
        if wanted && pos + total > chunk_start + chunk.len() as u64 {
            // The batch runs past the chunk: read it from its start (and what follows).
            chunk = read_up_to(file, pos, HEADER_WALK_CHUNK_BYTES.min((end - pos) as usize))
                .await
                .map_err(|e| LogError::io("read", path, e))?;
            chunk_start = pos;
            if (chunk.len() as u64) < total {
                return Err(corrupt(path, pos, "file ends inside a batch"));
            }
        }
        let at = (pos - chunk_start) as usize;
        let header =
            BatchHeader::parse(&chunk[at..]).ok_or_else(|| corrupt(path, pos, "short header"))?;
        let body: &[u8] = if wanted {
            &chunk[at..at + total as usize]
        } else {
            &[]
        };
        if f(pos, header, body).is_break() {
            return Ok(());
        }
        pos += total;
    }
    Ok(())
}

/// How a validating scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Reached the end of the file exactly on a batch boundary.
    End,
    /// Bytes from `position` on are all zero (up to the probe limit): a preallocated tail
    /// or an unwritten hole, not data.
    ZeroTail { position: u64 },
    /// The first bad byte; everything from here on is to be discarded. `nonzero_bytes`
    /// is the extent of non-zero data within the probe window from `position`.
    Bad {
        position: u64,
        nonzero_bytes: u64,
        reason: String,
    },
}

/// A batch accepted by the validating scan.
pub(crate) struct ScannedBatch<'a> {
    pub position: u64,
    pub header: &'a BatchHeader,
}

/// Validates batches from `start` up to `file_len`: framing, magic 2, CRC32C, offsets
/// increasing from `next_offset_min`, and `last_offset <= offset_max`.
/// Calls `f` for every valid batch; returns the end of valid data and why it stopped.
pub(crate) async fn scan_validate(
    file: &File,
    path: &Path,
    start: u64,
    file_len: u64,
    mut next_offset_min: i64,
    offset_max: i64,
    mut f: impl FnMut(ScannedBatch<'_>),
) -> Result<(u64, ScanStop), LogError> {
    let mut pos = start;
    let mut window: Vec<u8> = Vec::new();
    let mut window_start = 0u64;
    loop {
        if pos == file_len {
            return Ok((pos, ScanStop::End));
        }
        // Make sure the window holds at least the header, then the whole batch.
        let window_end = window_start + window.len() as u64;
        if pos < window_start || pos + BATCH_HEADER_BYTES as u64 > window_end {
            let want = SCAN_CHUNK_BYTES.min((file_len - pos) as usize);
            window = read_up_to(file, pos, want)
                .await
                .map_err(|e| LogError::io("read", path, e))?;
            window_start = pos;
        }
        let at = (pos - window_start) as usize;
        let total = match frame_batch(&window[at..], MAX_BATCH_BYTES_LIMIT) {
            Ok((_, total)) => total,
            Err(crate::batch::BatchError::Truncated { needed, .. }) if pos + needed <= file_len => {
                window = read_up_to(file, pos, needed as usize)
                    .await
                    .map_err(|e| LogError::io("read", path, e))?;
                window_start = pos;
                needed as usize
            }
            Err(e) => return stop_at(file, path, pos, file_len, e.to_string()).await,
        };
        if pos + total as u64 > SEGMENT_BYTES_MAX {
            return stop_at(
                file,
                path,
                pos,
                file_len,
                "segment grows past SEGMENT_BYTES_MAX".into(),
            )
            .await;
        }
        let at = (pos - window_start) as usize;
        if window.len() < at + total {
            return stop_at(
                file,
                path,
                pos,
                file_len,
                "batch runs past the end of the file".into(),
            )
            .await;
        }
        let bytes = &window[at..at + total];
        let header = BatchHeader::parse(bytes).expect("framed above");
        let actual = batch_crc(bytes);
        if actual != header.crc() {
            let reason = format!(
                "crc32c mismatch: header {:#010x}, data {actual:#010x}",
                header.crc()
            );
            return stop_at(file, path, pos, file_len, reason).await;
        }
        let (base, delta, count) = (
            header.base_offset(),
            header.last_offset_delta(),
            header.records_count(),
        );
        if base < next_offset_min || delta < 0 || count < 0 || header.last_offset() > offset_max {
            let reason =
                format!("batch offsets {base}+{delta} do not follow offset {next_offset_min}");
            return stop_at(file, path, pos, file_len, reason).await;
        }
        f(ScannedBatch {
            position: pos,
            header,
        });
        next_offset_min = header.last_offset() + 1;
        pos += total as u64;
    }
}

/// Classifies the bytes from `position`: all zero (preallocated tail) or discarded data.
async fn stop_at(
    file: &File,
    path: &Path,
    position: u64,
    file_len: u64,
    reason: String,
) -> Result<(u64, ScanStop), LogError> {
    let probe_len = ZERO_TAIL_PROBE_BYTES.min((file_len - position) as usize);
    let probe = read_up_to(file, position, probe_len)
        .await
        .map_err(|e| LogError::io("read", path, e))?;
    match probe.iter().rposition(|&b| b != 0) {
        None => Ok((position, ScanStop::ZeroTail { position })),
        // Beyond the probe we do not look: the caller decides how much to report.
        Some(last_nonzero) => Ok((
            position,
            ScanStop::Bad {
                position,
                nonzero_bytes: last_nonzero as u64 + 1,
                reason,
            },
        )),
    }
}

fn corrupt(path: &Path, position: u64, reason: &str) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        position,
        reason: reason.to_string(),
    }
}
