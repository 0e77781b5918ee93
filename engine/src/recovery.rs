//! Opening a log directory: find segments, read the checkpoint, validate the tail from the
//! recovery point batch by batch, cut at the first torn or corrupt byte, rebuild indexes.
//!
//! Owns: the decision of what on disk is trusted.
//! Invariants: data below the checkpointed recovery point was fdatasynced, so damage there
//! is reported as `LogError::Corrupt` (never silently dropped); from the recovery point on,
//! the first bad byte ends the log and everything after it is removed and reported.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{self, Checkpoint};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::SegmentIndex;
use crate::io;
use crate::limits::{SEGMENT_RELATIVE_OFFSET_MAX, SEGMENTS_PER_LOG_MAX};
use crate::scan::{ScanStop, scan_validate};
use crate::segment::{
    BatchFacts, INDEX_SUFFIX, LOG_SUFFIX, Segment, TIME_INDEX_SUFFIX, parse_segment_name,
};
use crate::types::{RecoveryReport, Truncation};

pub(crate) struct Recovered {
    pub segments: BTreeMap<i64, Segment>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// From the checkpoint; the log replaces it with the newest batch's epoch if one is left.
    pub last_leader_epoch: Option<i32>,
    pub report: RecoveryReport,
}

pub(crate) async fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered, LogError> {
    compio::fs::create_dir_all(dir)
        .await
        .map_err(|e| LogError::io("create_dir", dir, e))?;
    // A cleaner swap a crash interrupted is finished (or dropped) before anything is listed.
    crate::compaction::complete_swaps(dir)?;
    let bases = list_segments(dir)?;
    let checkpoint = checkpoint::read(dir).await?;
    let prealloc = config.preallocate.then_some(config.segment_bytes);
    let mut report = RecoveryReport {
        checkpoint_missing: checkpoint.is_none(),
        ..RecoveryReport::default()
    };
    let mut segments = BTreeMap::new();

    if bases.is_empty() {
        let base = checkpoint.map_or(0, |c| c.log_start_offset.max(0));
        let segment = Segment::create(dir, base, prealloc).await?;
        segments.insert(base, segment);
        io::sync_dir(dir)
            .await
            .map_err(|e| LogError::io("fsync", dir, e))?;
        report.recovery_point = base;
    } else {
        let first = bases[0];
        let recovery_point = checkpoint.map_or(first, |c| c.recovery_point).max(first);
        let recovery_segment = *bases
            .iter()
            .rev()
            .find(|&&b| b <= recovery_point)
            .expect("first <= recovery point");
        report.recovery_point = recovery_point;
        let mut next_offset_min = first;
        let mut cut = false;
        for &base in &bases {
            if cut {
                remove_segment_files(dir, base, &mut report).await?;
                continue;
            }
            let (mut segment, offsets, times) = Segment::open(dir, base).await?;
            let trusted = base < recovery_segment;
            if base < next_offset_min {
                let reason = format!(
                    "segment base {base} overlaps offsets up to {}",
                    next_offset_min - 1
                );
                if trusted {
                    return Err(LogError::Corrupt {
                        path: segment.log.path().to_path_buf(),
                        position: 0,
                        reason,
                    });
                }
                remove_segment_files(dir, base, &mut report).await?;
                cut = true;
                continue;
            }
            let rp = if base == recovery_segment {
                Some(recovery_point)
            } else {
                None
            };
            let outcome = recover_segment(
                &mut segment,
                &offsets,
                &times,
                trusted,
                rp,
                config,
                &mut report,
            )
            .await?;
            if let Some(position) = outcome.cut_at {
                segment.set_file_len(position, None).await?;
                cut = true;
            }
            if outcome.index_rebuilt {
                segment.rewrite_index().await?;
            }
            if !trusted {
                io::sync_data(segment.log.file())
                    .await
                    .map_err(|e| LogError::io("fdatasync", segment.log.path(), e))?;
                segment.sync_index().await?;
            }
            next_offset_min = segment.next_offset;
            segments.insert(base, segment);
        }
        // Tidy file lengths: only the active segment keeps a preallocated tail.
        let last = *segments.keys().next_back().expect("at least one segment");
        for (base, segment) in segments.iter_mut() {
            let want_prealloc = if *base == last { prealloc } else { None };
            let wanted_len = want_prealloc.map_or(segment.size, |b| b.max(segment.size));
            if segment.file_len != wanted_len {
                segment.set_file_len(segment.size, want_prealloc).await?;
                io::sync_data(segment.log.file())
                    .await
                    .map_err(|e| LogError::io("fdatasync", segment.log.path(), e))?;
            }
        }
        io::sync_dir(dir)
            .await
            .map_err(|e| LogError::io("fsync", dir, e))?;
    }

    let first_base = *segments.keys().next().expect("at least one segment");
    let log_end_offset = segments
        .values()
        .next_back()
        .expect("at least one segment")
        .next_offset;
    let log_start_offset = checkpoint
        .map_or(first_base, |c| c.log_start_offset)
        .max(first_base)
        .min(log_end_offset);
    let high_watermark = checkpoint
        .map_or(log_start_offset, |c| c.high_watermark)
        .clamp(log_start_offset, log_end_offset);
    report.segments = segments.len();
    report.log_start_offset = log_start_offset;
    report.log_end_offset = log_end_offset;
    checkpoint::write(
        dir,
        Checkpoint {
            recovery_point: log_end_offset,
            log_start_offset,
            high_watermark,
            last_leader_epoch: checkpoint.and_then(|c| c.last_leader_epoch),
        },
    )
    .await?;
    Ok(Recovered {
        segments,
        log_start_offset,
        high_watermark,
        last_leader_epoch: checkpoint.and_then(|c| c.last_leader_epoch),
        report,
    })
}

struct SegmentOutcome {
    cut_at: Option<u64>,
    index_rebuilt: bool,
}

/// Fills in a segment's facts and index from its files. `trusted` segments lie wholly
/// below the recovery point: only their tail (from the last index entry) is re-read.
/// `recovery_point` is set for the segment that contains it: the scan starts there.
async fn recover_segment(
    segment: &mut Segment,
    offsets: &[u8],
    times: &[u8],
    trusted: bool,
    recovery_point: Option<i64>,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<SegmentOutcome, LogError> {
    let base = segment.base_offset;
    let (mut index, mut index_rebuilt) = match (
        trusted || recovery_point.is_some(),
        SegmentIndex::decode(offsets, times, segment.file_len),
    ) {
        (true, Ok(index)) => (index, false),
        (true, Err(_)) => {
            report.rebuilt_indexes.push(segment.index_path());
            (SegmentIndex::default(), true)
        }
        // Beyond the recovery segment the index files may hold unsynced garbage: rebuild.
        (false, _) => (SegmentIndex::default(), true),
    };
    if let Some(rp) = recovery_point {
        index.truncate_after_offset((rp - base).max(0) as u64);
    }
    loop {
        let start = index.last();
        segment.index = std::mem::take(&mut index);
        segment.size = start.map_or(0, |e| u64::from(e.position));
        segment.next_offset = base + start.map_or(0, |e| i64::from(e.relative_offset));
        segment.max_timestamp = start.map_or(-1, |e| e.max_timestamp_before);
        segment.offset_of_max_timestamp =
            start.map_or(-1, |e| base + i64::from(e.offset_of_max_before));
        segment.first_batch_timestamp = None;
        let path = segment.log.path().to_path_buf();
        let file = segment.log.file().clone();
        let interval = config.index_interval_bytes;
        let mut first_ts = None;
        let (end, stop) = scan_validate(
            &file,
            &path,
            segment.size,
            segment.file_len,
            segment.next_offset,
            base + SEGMENT_RELATIVE_OFFSET_MAX,
            |b| {
                first_ts.get_or_insert(b.header.max_timestamp());
                segment.note_batch(BatchFacts::of(b.position, b.header), interval);
            },
        )
        .await?;
        report.scanned_bytes += end - start.map_or(0, |e| u64::from(e.position));
        // A scan from an index entry that fails on its very first batch means the entry
        // was wrong, not the log: rebuild the index from byte 0.
        if let (Some(e), ScanStop::Bad { position, .. }) = (start, &stop)
            && *position == u64::from(e.position)
        {
            report.rebuilt_indexes.push(segment.index_path());
            index_rebuilt = true;
            continue;
        }
        // Scanning from an index entry, the first batch's timestamp is unknown; segment.ms
        // then counts from the first batch scanned: a slightly later roll at worst.
        segment.first_batch_timestamp = first_ts;
        segment.size = end;
        let file_len = segment.file_len;
        return match stop {
            ScanStop::End => Ok(SegmentOutcome {
                cut_at: None,
                index_rebuilt,
            }),
            // Zeros after the last batch are the preallocated tail; without preallocation
            // they are a torn write (or a file extended without data) and are reported.
            ScanStop::ZeroTail { position } => {
                if !config.preallocate && !trusted {
                    let reason = "zero bytes after the last batch".to_string();
                    report.truncations.push(Truncation {
                        file: path,
                        position,
                        bytes: file_len - position,
                        reason,
                    });
                }
                Ok(SegmentOutcome {
                    cut_at: None,
                    index_rebuilt,
                })
            }
            ScanStop::Bad {
                position,
                nonzero_bytes,
                reason,
            } => {
                if trusted {
                    return Err(LogError::Corrupt {
                        path,
                        position,
                        reason,
                    });
                }
                let bytes = if config.preallocate {
                    nonzero_bytes
                } else {
                    file_len - position
                };
                report.truncations.push(Truncation {
                    file: path,
                    position,
                    bytes,
                    reason,
                });
                Ok(SegmentOutcome {
                    cut_at: Some(position),
                    index_rebuilt,
                })
            }
        };
    }
}

/// Base offsets of the `.log` files in `dir`, sorted. Removes index files without a log.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    // std::fs::read_dir blocks, but only once per log at open; compio 0.19 has no async
    // directory listing without the fs-dir feature.
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("read_dir", dir, e))?;
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name, LOG_SUFFIX) {
            bases.push(base);
        } else if let Some(base) = parse_segment_name(name, INDEX_SUFFIX)
            .or_else(|| parse_segment_name(name, TIME_INDEX_SUFFIX))
        {
            orphans.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    if bases.len() > SEGMENTS_PER_LOG_MAX {
        return Err(LogError::Limit(format!(
            "{} holds {} segments, more than SEGMENTS_PER_LOG_MAX = {SEGMENTS_PER_LOG_MAX}",
            dir.display(),
            bases.len()
        )));
    }
    for (base, path) in orphans {
        if bases.binary_search(&base).is_err() {
            std::fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
        }
    }
    Ok(bases)
}

async fn remove_segment_files(
    dir: &Path,
    base: i64,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = crate::segment::segment_path(dir, base, suffix);
        match compio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io("remove", path, e)),
        }
        if suffix == LOG_SUFFIX {
            report.removed_segments.push(path);
        }
    }
    Ok(())
}
