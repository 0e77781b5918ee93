//! Log compaction: Kafka's log cleaner for `cleanup.policy=compact` logs.
//!
//! Owns: the offset map, the per-batch decision (which records, batches and markers a
//! cleaned log keeps), the reader of sealed segments, the on-disk swap protocol and its
//! completion at open, and the per-log cleaner checkpoint (the first dirty offset).
//! Does not own: when to clean (the broker's cleaner task, from [`crate::Log::dirty_stats`]),
//! producer state (the broker says which batches must stay for it), topic configs.
//!
//! Semantics (Kafka's `LogCleaner`, 4.x): a round maps the dirty range `[first dirty, end)`
//! key -> latest offset, then rewrites every sealed segment below `end` (from the log start)
//! in groups no larger than a segment: a record stays if it is the latest for its key in the
//! map or lies above the map; offsets are never renumbered (a rewritten batch keeps its base
//! offset and last offset delta); a tombstone (null value) and a marker whose transaction
//! has no data left stay until their batch's delete horizon (`now + delete.retention.ms`,
//! stamped into the batch's base timestamp with attribute bit 6 the first time a round keeps
//! it) has passed; data of aborted transactions goes, and its ABORT marker with it once no
//! batch of that transaction is left; records without a key go; the batch the broker names
//! as a producer's last (its sequence state) stays even when nothing in it is live. Only
//! sealed segments below the high watermark, the last stable offset, the newest producer
//! snapshot (so the `.txnindex` files are complete) and `min.compaction.lag.ms` are cleaned.
//! Compressed batches are inflated (at most `codec::CLEAN_INFLATED_BYTES_MAX` each; a larger
//! one, or one that does not decompress, is kept whole and its keys stay out of the map) and
//! a rebuilt one is deflated with its own codec.
//!
//! The swap protocol (crash-safe at every step; completed by `complete_swaps` at open):
//! 1. the group's kept batches are written to `<base>-<end>.cleaned` and fdatasynced
//!    (`base` the group's first segment base, `end` its last segment's next offset);
//! 2. it is renamed to `<base>-<end>.swap` and the directory fsynced: the commit point;
//! 3. every segment file (`.log`, `.index`, `.timeindex`, `.txnindex`) with a base in
//!    `[base, end)` is removed, the swap file renamed to `<base>.log`, the directory fsynced;
//! 4. the new segment's indexes and `.txnindex` are written (a crash before they are
//!    complete leaves a segment whose index open rebuilds).
//!
//! At open a `.cleaned` file is deleted (the originals are intact) and a `.swap` file is
//! finished from step 3 (the originals may be partly gone; the swap has everything kept).

mod codec;
mod offset_map;
mod records;
mod throttle;
mod txn;

use std::path::{Path, PathBuf};

use crate::batch::{ATTR_DELETE_HORIZON, BatchHeader, MAGIC_V2, batch_crc};
use crate::error::LogError;
use crate::io;
use crate::limits::{BATCH_HEADER_BYTES, MAX_BATCH_BYTES_LIMIT};
use crate::txn_index::AbortedTxn;

pub use offset_map::{OFFSET_MAP_ENTRY_BYTES, OffsetMap};
pub use throttle::Throttle;

use records::control_type;
use records::{RecordView, rebuild};
pub(crate) use txn::CleanedTxns;

/// Bytes the cleaner reads from a segment per step (at least one whole batch).
pub(crate) const CLEAN_CHUNK_BYTES: usize = 256 * 1024;
/// Bytes of kept batches buffered before a write to the cleaned file.
pub(crate) const CLEAN_WRITE_BYTES: usize = 256 * 1024;

/// File suffixes of the swap protocol.
pub(crate) const CLEANED_SUFFIX: &str = "cleaned";
pub(crate) const SWAP_SUFFIX: &str = "swap";

const CLEANER_CHECKPOINT_FILE: &str = "cleaner.checkpoint";
const CLEANER_CHECKPOINT_TMP: &str = "cleaner.checkpoint.tmp";
const CLEANER_CHECKPOINT_MAGIC: &[u8; 4] = b"SLCC";
const CLEANER_CHECKPOINT_VERSION: u16 = 1;
/// magic | version u16 | first_dirty_offset i64 | crc32c u32 of the bytes before it.
const CLEANER_CHECKPOINT_BYTES: usize = 4 + 2 + 8 + 4;

/// What a round needs from the broker.
pub struct CleanOptions<'a> {
    pub now_ms: i64,
    /// The partition's last stable offset: nothing at or above it is cleaned.
    pub last_stable_offset: i64,
    /// delete.retention.ms: how long tombstones and empty transactions' markers stay.
    pub delete_retention_ms: i64,
    /// min.compaction.lag.ms: segments with a record newer than this stay dirty.
    pub min_compaction_lag_ms: i64,
    pub map: &'a mut OffsetMap,
    pub throttle: &'a mut Throttle,
    /// Batches that must stay (a live producer's last batch: its sequence and epoch).
    pub retain_batch: &'a dyn Fn(&BatchHeader) -> bool,
}

/// Where a log stands for the cleaner (segment granularity, as Kafka's dirty ratio).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirtyStats {
    pub first_dirty_offset: i64,
    /// Offsets at or above this cannot be cleaned now.
    pub first_uncleanable_offset: i64,
    /// Bytes of cleanable segments below the first dirty offset.
    pub clean_bytes: u64,
    /// Bytes of cleanable segments at or above it.
    pub dirty_bytes: u64,
    /// Bytes of the segments that cannot be cleaned yet (the active one included).
    pub uncleanable_bytes: u64,
    /// The earliest batch timestamp of the first dirty segment (max.compaction.lag.ms).
    pub dirty_first_timestamp: Option<i64>,
}

impl DirtyStats {
    /// dirty / (clean + dirty) of the cleanable part; 0 when nothing is cleanable.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// What a round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// The dirty range the round mapped, `[from, to)`; empty if nothing was cleanable.
    pub dirty_from: i64,
    pub dirty_to: i64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_removed: u64,
    pub batches_removed: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Groups left as they were because the log changed under the round (truncation,
    /// retention, close): they are cleaned by a later round.
    pub groups_skipped: usize,
}

/// What happened to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Kept,
    Rebuilt { records_removed: u64 },
    Removed { records: u64 },
}

/// The per-batch decisions of one round (shared across its groups, in offset order).
pub(crate) struct BatchCleaner<'a> {
    pub map: &'a OffsetMap,
    pub txns: CleanedTxns,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    pub retain_batch: &'a dyn Fn(&BatchHeader) -> bool,
    /// Aborted transactions whose ABORT marker stays in the group being written.
    pub retained_aborts: Vec<AbortedTxn>,
}

impl BatchCleaner<'_> {
    /// Decides `batch` (whole, CRC checked) and appends what stays of it to `out`.
    pub(crate) fn clean(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let horizon =
            (header.attributes() & ATTR_DELETE_HORIZON != 0).then(|| header.base_timestamp());
        let count = u64::try_from(header.records_count()).unwrap_or(0);
        if header.is_control() {
            let control = control_type(batch, header);
            let may_go = self.txns.on_control_batch(
                header.producer_id(),
                control,
                header.last_offset(),
                &mut self.retained_aborts,
            );
            if may_go && horizon.is_some_and(|h| h <= self.now_ms) && !(self.retain_batch)(header) {
                return Outcome::Removed { records: count };
            }
            if may_go && horizon.is_none() {
                let all: Result<Vec<RecordView<'_>>, _> = records::records(batch, header).collect();
                if let Ok(all) = all
                    && !all.is_empty()
                {
                    rebuild(header, &all, Some(self.horizon()), out);
                    return Outcome::Rebuilt { records_removed: 0 };
                }
            }
            out.extend_from_slice(batch);
            return Outcome::Kept;
        }
        let aborted = self.txns.on_data_batch(
            header.producer_id(),
            header.is_transactional(),
            header.last_offset(),
        );
        let retain = header.producer_id() >= 0 && (self.retain_batch)(header);
        let codec = header.compression();
        let inflated = if codec != 0 {
            if aborted && !retain {
                return Outcome::Removed { records: count };
            }
            match codec::inflate(codec, &batch[BATCH_HEADER_BYTES..]) {
                Some(plain) => Some(plain),
                None => {
                    tracing::warn!(target: "engine::cleaner", base_offset = header.base_offset(), codec, "compressed batch not inflated: kept whole");
                    out.extend_from_slice(batch);
                    return Outcome::Kept;
                }
            }
        } else {
            None
        };
        let section = match &inflated {
            Some(plain) => plain.as_slice(),
            None => &batch[BATCH_HEADER_BYTES..],
        };
        let mut kept = Vec::new();
        let mut total = 0u64;
        for record in records::records_in(section, header) {
            let Ok(record) = record else {
                tracing::warn!(target: "engine::cleaner", base_offset = header.base_offset(), "malformed record in a batch: kept whole");
                out.extend_from_slice(batch);
                return Outcome::Kept;
            };
            total += 1;
            if !aborted && self.keeps(&record, horizon) {
                kept.push(record);
            }
        }
        if kept.is_empty() {
            if retain {
                out.extend_from_slice(batch);
                return Outcome::Kept;
            }
            return Outcome::Removed { records: total };
        }
        let stamp = horizon.is_none() && kept.iter().any(|r| r.tombstone);
        if kept.len() as u64 == total && !stamp {
            out.extend_from_slice(batch);
            return Outcome::Kept;
        }
        rebuild(header, &kept, stamp.then(|| self.horizon()), out);
        Outcome::Rebuilt {
            records_removed: total - kept.len() as u64,
        }
    }

    /// Kafka's `shouldRetainRecord`.
    fn keeps(&self, record: &RecordView<'_>, horizon: Option<i64>) -> bool {
        if record.offset > self.map.latest_offset() {
            return true;
        }
        let Some(key) = record.key else {
            return false;
        };
        let latest = record.offset >= self.map.get(key);
        latest && (!record.tombstone || horizon.is_none_or(|h| self.now_ms < h))
    }

    fn horizon(&self) -> i64 {
        self.now_ms.saturating_add(self.delete_retention_ms.max(0))
    }
}

/// Whether a batch (whole, validated) holds a record without a key, or one that cannot be
/// read: a compacted topic refuses it (Kafka's LogValidator: "Compacted topic cannot accept
/// message without key"). A compressed batch is inflated for it (a second pass besides the
/// leader's record count, on compacted topics only); one that does not inflate within the
/// cleaner's bound is not refused here (the record count already refused a corrupt one).
pub fn has_keyless_record(batch: &[u8]) -> bool {
    let Some(header) = BatchHeader::parse(batch) else {
        return true;
    };
    let inflated;
    let section = match header.compression() {
        0 => &batch[BATCH_HEADER_BYTES.min(batch.len())..],
        codec => match codec::inflate(codec, &batch[BATCH_HEADER_BYTES.min(batch.len())..]) {
            Some(plain) => {
                inflated = plain;
                &inflated[..]
            }
            None => return false,
        },
    };
    records::records_in(section, header).any(|r| r.map_or(true, |r| r.key.is_none()))
}

/// Adds the keys of one batch to the map (the dirty-range pass). Returns false, adding
/// nothing, if a new key did not fit: the round's dirty range ends before this batch.
pub(crate) fn map_batch(
    map: &mut OffsetMap,
    txns: &mut CleanedTxns,
    batch: &[u8],
    header: &BatchHeader,
) -> bool {
    let aborted = txns.on_batch(batch, header);
    if !header.is_control() && !aborted {
        let inflated = match header.compression() {
            0 => None,
            codec => match codec::inflate(codec, &batch[BATCH_HEADER_BYTES..]) {
                Some(plain) => Some(plain),
                // Kept whole by the rewrite: its keys stay out of the map.
                None => {
                    map.set_latest_offset(header.last_offset());
                    return true;
                }
            },
        };
        let section = inflated.as_deref().unwrap_or(&batch[BATCH_HEADER_BYTES..]);
        let keyed: Vec<(&[u8], i64)> = records::records_in(section, header)
            .map_while(Result::ok)
            .filter_map(|r| Some((r.key?, r.offset)))
            .collect();
        let new = keyed.iter().filter(|(k, _)| map.get(k) < 0).count();
        if map.len() + new > map.capacity() {
            return false;
        }
        for (key, offset) in keyed {
            map.put(key, offset);
        }
    }
    map.set_latest_offset(header.last_offset());
    true
}

/// Reads the batches of `[start, end)` of a sealed segment a chunk at a time, each batch
/// framed and its CRC checked (the bytes were validated when written; a mismatch now is
/// damage and is reported, never cleaned over).
pub(crate) struct BatchReader<'f> {
    file: &'f compio::fs::File,
    path: &'f Path,
    pos: u64,
    end: u64,
}

impl<'f> BatchReader<'f> {
    pub(crate) fn new(file: &'f compio::fs::File, path: &'f Path, end: u64) -> BatchReader<'f> {
        BatchReader {
            file,
            path,
            pos: 0,
            end,
        }
    }

    /// The next chunk and the (start, len) of each whole batch in it; `None` at the end.
    pub(crate) async fn next_chunk(
        &mut self,
    ) -> Result<Option<(Vec<u8>, Vec<(usize, usize)>)>, LogError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let want = CLEAN_CHUNK_BYTES.min((self.end - self.pos) as usize);
        let mut chunk = io::read_up_to(self.file, self.pos, want)
            .await
            .map_err(|e| LogError::io("read", self.path, e))?;
        let mut batches = Vec::new();
        let mut at = 0usize;
        while let Some(header) = BatchHeader::parse(&chunk[at..]) {
            let total = header.total_bytes();
            let position = self.pos + at as u64;
            if header.magic != MAGIC_V2
                || total < BATCH_HEADER_BYTES as u64
                || total > u64::from(MAX_BATCH_BYTES_LIMIT)
                || position + total > self.end
            {
                return Err(self.corrupt(position, "bad batch header"));
            }
            let total = total as usize;
            if at + total > chunk.len() {
                if at == 0 {
                    // A batch larger than the chunk: read it whole.
                    chunk = io::read_up_to(self.file, self.pos, total)
                        .await
                        .map_err(|e| LogError::io("read", self.path, e))?;
                    if chunk.len() < total {
                        return Err(self.corrupt(position, "file ends inside a batch"));
                    }
                    continue;
                }
                break;
            }
            let header = BatchHeader::parse(&chunk[at..]).expect("parsed above");
            if batch_crc(&chunk[at..at + total]) != header.crc() {
                return Err(self.corrupt(position, "batch CRC mismatch"));
            }
            batches.push((at, total));
            at += total;
        }
        if batches.is_empty() {
            return Err(self.corrupt(self.pos, "no whole batch"));
        }
        chunk.truncate(at);
        self.pos += at as u64;
        Ok(Some((chunk, batches)))
    }

    fn corrupt(&self, position: u64, reason: &str) -> LogError {
        LogError::Corrupt {
            path: self.path.to_path_buf(),
            position,
            reason: reason.to_string(),
        }
    }
}

/// `<base>-<end>.<suffix>` in `dir`.
pub(crate) fn swap_path(dir: &Path, base: i64, end: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}-{end:020}.{suffix}"))
}

/// Parses `<base>-<end>.<suffix>`.
fn parse_swap_name(name: &str, suffix: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    let (base, end) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(base) && digits(end)).then(|| Some((base.parse().ok()?, end.parse().ok()?)))?
}

/// Finishes what a crash interrupted (module docs): deletes `.cleaned` files and completes
/// `.swap` files. Runs at open, before the segments are listed; blocking file calls, once.
pub(crate) fn complete_swaps(dir: &Path) -> Result<(), LogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::io("read_dir", dir, e)),
    };
    let mut swaps = Vec::new();
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("read_dir", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if parse_swap_name(&name, CLEANED_SUFFIX).is_some() {
            tracing::info!(target: "engine::cleaner", dir = %dir.display(), file = name, "removing an unfinished cleaned segment");
            remove_if_present(&entry.path())?;
        } else if let Some(range) = parse_swap_name(&name, SWAP_SUFFIX) {
            swaps.push(range);
        } else {
            names.push(name);
        }
    }
    if swaps.is_empty() {
        return Ok(());
    }
    swaps.sort_unstable();
    for (base, end) in swaps {
        tracing::info!(target: "engine::cleaner", dir = %dir.display(), base, end, "completing an interrupted segment swap");
        for name in &names {
            let stem = name.split('.').next().unwrap_or("");
            let is_segment_file = name.ends_with(".log")
                || name.ends_with(".index")
                || name.ends_with(".timeindex")
                || name.ends_with(".txnindex");
            if let (true, Ok(b)) = (is_segment_file && stem.len() == 20, stem.parse::<i64>())
                && (base..end).contains(&b)
            {
                remove_if_present(&dir.join(name))?;
            }
        }
        let from = swap_path(dir, base, end, SWAP_SUFFIX);
        let to = crate::segment::segment_path(dir, base, crate::segment::LOG_SUFFIX);
        std::fs::rename(&from, &to).map_err(|e| LogError::io("rename", &from, e))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync", dir, e))
}

fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path, e)),
    }
}

/// The first dirty offset saved by the last round, if any (a damaged file counts as none:
/// the next round maps from the log start, which is only slower).
pub(crate) async fn read_checkpoint(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("read", &path, e)),
    };
    let valid = bytes.len() == CLEANER_CHECKPOINT_BYTES
        && &bytes[..4] == CLEANER_CHECKPOINT_MAGIC
        && bytes[4..6] == CLEANER_CHECKPOINT_VERSION.to_be_bytes()
        && crate::batch::crc32c(&bytes[..14]).to_be_bytes() == bytes[14..18];
    if !valid {
        tracing::warn!(target: "engine::cleaner", path = %path.display(), "cleaner checkpoint damaged: ignored");
        return Ok(None);
    }
    Ok(Some(i64::from_be_bytes(
        bytes[6..14].try_into().expect("8 bytes"),
    )))
}

pub(crate) async fn write_checkpoint(dir: &Path, first_dirty_offset: i64) -> Result<(), LogError> {
    let mut b = Vec::with_capacity(CLEANER_CHECKPOINT_BYTES);
    b.extend_from_slice(CLEANER_CHECKPOINT_MAGIC);
    b.extend_from_slice(&CLEANER_CHECKPOINT_VERSION.to_be_bytes());
    b.extend_from_slice(&first_dirty_offset.to_be_bytes());
    let crc = crate::batch::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    io::replace_file(
        dir,
        &dir.join(CLEANER_CHECKPOINT_TMP),
        &dir.join(CLEANER_CHECKPOINT_FILE),
        b,
    )
    .await
}

#[cfg(test)]
pub(crate) use records::tests::keyed_batch;

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_round_trip() {
        let p = swap_path(Path::new("/d"), 42, 100, SWAP_SUFFIX);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_swap_name(name, SWAP_SUFFIX), Some((42, 100)));
        assert_eq!(parse_swap_name(name, CLEANED_SUFFIX), None);
        assert_eq!(
            parse_swap_name("00000000000000000042.log", SWAP_SUFFIX),
            None
        );
    }

    /// `batch` with its records section compressed by `codec` (attributes and CRC updated).
    fn compressed(batch: &[u8], codec: i16) -> Vec<u8> {
        let mut h = *BatchHeader::parse(batch).unwrap();
        h.attributes = (h.attributes() | codec).into();
        let mut out = zerocopy::IntoBytes::as_bytes(&h).to_vec();
        out.extend_from_slice(&codec::deflate(codec, &batch[BATCH_HEADER_BYTES..]));
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = batch_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn compressed_batches_are_filtered_and_keep_their_codec() {
        for codec in 1..=4i16 {
            let b1 = compressed(
                &keyed_batch(0, 1_000, &[(b"a", Some(b"1")), (b"b", Some(b"1"))]),
                codec,
            );
            let b2 = compressed(
                &keyed_batch(2, 2_000, &[(b"a", Some(b"2")), (b"c", Some(b"2"))]),
                codec,
            );
            let mut map = OffsetMap::with_memory(1 << 20);
            let mut txns = CleanedTxns::new(&[]);
            for b in [&b1, &b2] {
                crate::batch::validate_batch(b, u32::MAX, false).expect("a valid compressed batch");
                assert!(map_batch(
                    &mut map,
                    &mut txns,
                    b,
                    BatchHeader::parse(b).unwrap()
                ));
            }
            assert_eq!(
                map.get(b"a"),
                2,
                "codec {codec}: keys of compressed records are mapped"
            );
            let never = |_: &BatchHeader| false;
            let mut cleaner = BatchCleaner {
                map: &map,
                txns: CleanedTxns::new(&[]),
                now_ms: 10_000,
                delete_retention_ms: 0,
                retain_batch: &never,
                retained_aborts: Vec::new(),
            };
            let mut out = Vec::new();
            let outcome = cleaner.clean(&b1, BatchHeader::parse(&b1).unwrap(), &mut out);
            assert_eq!(
                outcome,
                Outcome::Rebuilt { records_removed: 1 },
                "codec {codec}"
            );
            let (h, len) = crate::batch::validate_batch(&out, u32::MAX, false).expect("valid");
            assert_eq!(
                (len, h.compression(), h.records_count(), h.last_offset()),
                (out.len(), codec, 1, 1)
            );
            let plain = codec::inflate(codec, &out[BATCH_HEADER_BYTES..]).expect("inflates");
            let kept: Vec<_> = records::records_in(&plain, h).map(Result::unwrap).collect();
            assert_eq!(
                (kept[0].offset, kept[0].key, kept[0].value),
                (1, Some(&b"b"[..]), &b"1"[..])
            );
            let mut out = Vec::new();
            assert_eq!(
                cleaner.clean(&b2, BatchHeader::parse(&b2).unwrap(), &mut out),
                Outcome::Kept
            );
            assert_eq!(out, b2);
        }
    }

    #[test]
    fn tombstones_get_a_horizon_then_go() {
        let mut map = OffsetMap::with_memory(1 << 20);
        let b1 = keyed_batch(0, 1_000, &[(b"a", Some(b"1")), (b"b", Some(b"1"))]);
        let b2 = keyed_batch(2, 2_000, &[(b"a", Some(b"2")), (b"b", None)]);
        let mut txns = CleanedTxns::new(&[]);
        for b in [&b1, &b2] {
            assert!(map_batch(
                &mut map,
                &mut txns,
                b,
                BatchHeader::parse(b).unwrap()
            ));
        }
        let never = |_: &BatchHeader| false;
        let mut cleaner = BatchCleaner {
            map: &map,
            txns: CleanedTxns::new(&[]),
            now_ms: 10_000,
            delete_retention_ms: 500,
            retain_batch: &never,
            retained_aborts: Vec::new(),
        };
        let mut out = Vec::new();
        let h1 = BatchHeader::parse(&b1).unwrap();
        assert_eq!(
            cleaner.clean(&b1, h1, &mut out),
            Outcome::Removed { records: 2 }
        );
        assert!(out.is_empty());
        let h2 = BatchHeader::parse(&b2).unwrap();
        assert_eq!(
            cleaner.clean(&b2, h2, &mut out),
            Outcome::Rebuilt { records_removed: 0 }
        );
        let stamped = BatchHeader::parse(&out).unwrap();
        assert_eq!(stamped.base_timestamp(), 10_500, "the delete horizon");
        assert_ne!(stamped.attributes() & ATTR_DELETE_HORIZON, 0);

        // Before the horizon the tombstone stays as it is; after it, it goes.
        let stamped = out.clone();
        let h = BatchHeader::parse(&stamped).unwrap();
        for (now, expected) in [
            (10_499, Outcome::Kept),
            (10_500, Outcome::Rebuilt { records_removed: 1 }),
        ] {
            cleaner.now_ms = now;
            let mut again = Vec::new();
            assert_eq!(cleaner.clean(&stamped, h, &mut again), expected);
        }
    }
}
