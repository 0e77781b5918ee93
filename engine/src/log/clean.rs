//! `Log::dirty_stats` and `Log::clean`: one cleaner round on this log (the rules and the
//! swap protocol are in `crate::compaction`).
//!
//! Invariants: a round reads only sealed segments through its own `Rc<SegmentFile>`
//! handles and writes only its own `.cleaned` file without the write lock; the swap takes
//! the write lock and first checks that every segment of the group is still the one read
//! (same file handle), so truncation, retention, DeleteRecords or close in the meantime
//! make the round skip that group instead of resurrecting removed data.

use std::rc::Rc;

use super::*;
use crate::compaction::{
    BatchCleaner, BatchReader, CLEAN_WRITE_BYTES, CLEANED_SUFFIX, CleanOptions, CleanReport,
    CleanedTxns, DirtyStats, Outcome, SWAP_SUFFIX, map_batch, swap_path,
};

/// A sealed segment as a round sees it.
#[derive(Clone)]
struct Sealed {
    base: i64,
    file: Rc<SegmentFile>,
    size: u64,
    next_offset: i64,
}

impl Log {
    /// The log's cleanable and dirty bytes now (see [`DirtyStats`]).
    pub fn dirty_stats(
        &self,
        now_ms: i64,
        last_stable_offset: i64,
        min_compaction_lag_ms: i64,
    ) -> DirtyStats {
        let s = self.state.borrow();
        let upper = self.first_uncleanable(&s, now_ms, last_stable_offset, min_compaction_lag_ms);
        let first_dirty = s.first_dirty_offset.max(s.log_start_offset);
        let mut stats = DirtyStats {
            first_dirty_offset: first_dirty,
            first_uncleanable_offset: upper,
            ..DirtyStats::default()
        };
        for seg in s.segments.values() {
            if seg.next_offset <= s.log_start_offset {
                continue;
            }
            if seg.next_offset > upper || seg.base_offset == s.active().base_offset {
                stats.uncleanable_bytes += seg.size;
            } else if seg.next_offset <= first_dirty {
                stats.clean_bytes += seg.size;
            } else {
                if stats.dirty_bytes == 0 {
                    stats.dirty_first_timestamp = seg
                        .first_batch_timestamp
                        .or((seg.max_timestamp >= 0).then_some(seg.max_timestamp));
                }
                stats.dirty_bytes += seg.size;
            }
        }
        stats
    }

    /// The first offset a round may not clean: the active segment, the high watermark, the
    /// last stable offset, the newest producer snapshot (the `.txnindex` files are complete
    /// below it) and the first segment holding a record newer than min.compaction.lag.ms.
    fn first_uncleanable(
        &self,
        s: &State,
        now_ms: i64,
        last_stable_offset: i64,
        min_compaction_lag_ms: i64,
    ) -> i64 {
        let mut upper = s
            .active()
            .base_offset
            .min(s.high_watermark)
            .min(last_stable_offset)
            .min(s.snapshots.last().copied().unwrap_or(s.log_start_offset));
        if min_compaction_lag_ms > 0 {
            let first_dirty = s.first_dirty_offset.max(s.log_start_offset);
            if let Some(young) = s
                .segments
                .values()
                .filter(|seg| seg.next_offset > first_dirty)
                .find(|seg| seg.max_timestamp > now_ms.saturating_sub(min_compaction_lag_ms))
            {
                upper = upper.min(young.base_offset);
            }
        }
        upper
    }

    /// One cleaner round: maps the dirty range, then rewrites the cleanable segments from
    /// the log start in groups of at most a segment, swapping each in (module docs of
    /// `crate::compaction`). Appends and reads go on meanwhile; the swap of each group
    /// holds the write lock for its renames and directory fsyncs.
    pub async fn clean(&self, opts: CleanOptions<'_>) -> Result<CleanReport, LogError> {
        let CleanOptions {
            now_ms,
            last_stable_offset,
            delete_retention_ms,
            min_compaction_lag_ms,
            map,
            throttle,
            retain_batch,
        } = opts;
        let (sealed, first_dirty) = {
            let s = self.state.borrow();
            s.usable()?;
            let upper =
                self.first_uncleanable(&s, now_ms, last_stable_offset, min_compaction_lag_ms);
            let active = s.active().base_offset;
            let sealed: Vec<Sealed> = s
                .segments
                .values()
                .filter(|seg| {
                    seg.base_offset != active
                        && seg.next_offset <= upper
                        && seg.next_offset > s.log_start_offset
                })
                .map(|seg| Sealed {
                    base: seg.base_offset,
                    file: seg.log.clone(),
                    size: seg.size,
                    next_offset: seg.next_offset,
                })
                .collect();
            (sealed, s.first_dirty_offset.max(s.log_start_offset))
        };
        let mut report = CleanReport {
            dirty_from: first_dirty,
            dirty_to: first_dirty,
            segments_before: self.segment_count(),
            segments_after: self.segment_count(),
            ..CleanReport::default()
        };
        let Some(last) = sealed.last() else {
            return Ok(report);
        };
        if last.next_offset <= first_dirty {
            return Ok(report);
        }
        let range_end = last.next_offset;
        let mut aborted = Vec::new();
        self.aborted_txns(sealed[0].base, range_end, range_end, &mut aborted)
            .await?;
        // The map pass starts at the dirty range: transactions ended below it are not its.
        let dirty_aborted: Vec<AbortedTxn> = aborted
            .iter()
            .filter(|t| t.last_offset >= first_dirty)
            .copied()
            .collect();

        // 1. The offset map of the dirty range.
        map.clear();
        let mut txns = CleanedTxns::new(&dirty_aborted);
        'map: for seg in sealed.iter().filter(|seg| seg.next_offset > first_dirty) {
            let mut reader = BatchReader::new(seg.file.file(), seg.file.path(), seg.size);
            while let Some((chunk, batches)) = reader.next_chunk().await? {
                for &(at, len) in &batches {
                    let batch = &chunk[at..at + len];
                    let header = BatchHeader::parse(batch).expect("framed by the reader");
                    if header.last_offset() < first_dirty {
                        // Below the dirty range: only the transaction bookkeeping.
                        txns.on_batch(batch, header);
                        continue;
                    }
                    if !map_batch(map, &mut txns, batch, header) {
                        break 'map;
                    }
                }
                report.bytes_read += chunk.len() as u64;
                throttle.consume(chunk.len() as u64).await;
            }
        }
        if map.latest_offset() < first_dirty {
            return Ok(report);
        }
        let end_offset = map.latest_offset() + 1;
        report.dirty_to = end_offset;

        // 2. The groups: every sealed segment holding offsets below the map's end.
        let cleanable: Vec<Sealed> = sealed
            .into_iter()
            .filter(|seg| seg.base < end_offset)
            .collect();
        let mut groups: Vec<Vec<Sealed>> = Vec::new();
        for seg in cleanable {
            let fits = groups.last().is_some_and(|g| {
                let bytes: u64 = g.iter().map(|x| x.size).sum();
                bytes + seg.size <= self.config.segment_bytes
                    && seg.next_offset - g[0].base <= SEGMENT_RELATIVE_OFFSET_MAX
            });
            if fits {
                groups.last_mut().expect("non-empty").push(seg);
            } else {
                groups.push(vec![seg]);
            }
        }

        // 3. Clean and swap each group, one transaction walk across them.
        let mut cleaner = BatchCleaner {
            map,
            txns: CleanedTxns::new(&aborted),
            now_ms,
            delete_retention_ms,
            retain_batch,
            retained_aborts: Vec::new(),
        };
        for group in groups {
            cleaner.retained_aborts.clear();
            if !self
                .clean_group(&group, &mut cleaner, throttle, &mut report)
                .await?
            {
                report.groups_skipped += 1;
            }
        }

        // 4. The next round maps from here.
        let keep_going = {
            let mut s = self.state.borrow_mut();
            if s.usable().is_ok() {
                s.first_dirty_offset = s.first_dirty_offset.max(end_offset);
                true
            } else {
                false
            }
        };
        if keep_going && report.groups_skipped == 0 {
            crate::compaction::write_checkpoint(&self.dir, end_offset).await?;
        }
        report.segments_after = self.segment_count();
        Ok(report)
    }

    /// Writes the kept batches of `group` to a `.cleaned` file and swaps it in. False if the
    /// log changed under the round and the group was left as it was.
    async fn clean_group(
        &self,
        group: &[Sealed],
        cleaner: &mut BatchCleaner<'_>,
        throttle: &mut crate::compaction::Throttle,
        report: &mut CleanReport,
    ) -> Result<bool, LogError> {
        let base = group[0].base;
        let end = group.last().expect("non-empty group").next_offset;
        let cleaned_path = swap_path(&self.dir, base, end, CLEANED_SUFFIX);
        let out_file = compio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&cleaned_path)
            .await
            .map_err(|e| LogError::io("create", &cleaned_path, e))?;
        let mut facts: Vec<BatchFacts> = Vec::new();
        let mut out: Vec<u8> = Vec::with_capacity(CLEAN_WRITE_BYTES);
        let mut written = 0u64;
        for seg in group {
            let mut reader = BatchReader::new(seg.file.file(), seg.file.path(), seg.size);
            while let Some((chunk, batches)) = reader.next_chunk().await? {
                for &(at, len) in &batches {
                    let batch = &chunk[at..at + len];
                    let header = BatchHeader::parse(batch).expect("framed by the reader");
                    let before = out.len();
                    report.records_read += u64::try_from(header.records_count()).unwrap_or(0);
                    match cleaner.clean(batch, header, &mut out) {
                        Outcome::Kept => {}
                        Outcome::Rebuilt { records_removed } => {
                            report.records_removed += records_removed
                        }
                        Outcome::Removed { records } => {
                            report.records_removed += records;
                            report.batches_removed += 1;
                        }
                    }
                    if out.len() > before {
                        let h = BatchHeader::parse(&out[before..]).expect("a whole batch");
                        facts.push(BatchFacts::of(written + before as u64, h));
                    }
                }
                report.bytes_read += chunk.len() as u64;
                throttle.consume(chunk.len() as u64).await;
                if out.len() >= CLEAN_WRITE_BYTES {
                    written += self
                        .write_cleaned(&out_file, &cleaned_path, &mut out, written)
                        .await?;
                    throttle.consume(out.capacity() as u64).await;
                }
            }
        }
        if !out.is_empty() {
            written += self
                .write_cleaned(&out_file, &cleaned_path, &mut out, written)
                .await?;
        }
        report.bytes_written += written;
        io::sync_data(&out_file)
            .await
            .map_err(|e| LogError::io("fdatasync", &cleaned_path, e))?;
        drop(out_file);
        self.swap_in(group, &cleaned_path, facts, &cleaner.retained_aborts, end)
            .await
    }

    async fn write_cleaned(
        &self,
        file: &File,
        path: &Path,
        out: &mut Vec<u8>,
        position: u64,
    ) -> Result<u64, LogError> {
        let bytes = std::mem::take(out);
        let len = bytes.len() as u64;
        let (res, mut buf) = io::write_all(file, bytes, position).await;
        res.map_err(|e| LogError::io("write", path, e))?;
        buf.clear();
        *out = buf;
        Ok(len)
    }

    /// Steps 2-4 of the swap protocol under the write lock.
    async fn swap_in(
        &self,
        group: &[Sealed],
        cleaned_path: &Path,
        facts: Vec<BatchFacts>,
        retained_aborts: &[AbortedTxn],
        end: i64,
    ) -> Result<bool, LogError> {
        let base = group[0].base;
        let _writer = self.write_lock.lock().await;
        let unchanged = {
            let s = self.state.borrow();
            s.usable().is_ok()
                && s.active().base_offset >= end
                && group.iter().all(|g| {
                    s.segments
                        .get(&g.base)
                        .is_some_and(|seg| Rc::ptr_eq(&seg.log, &g.file))
                })
        };
        if !unchanged {
            drop(_writer);
            compio::fs::remove_file(cleaned_path)
                .await
                .map_err(|e| LogError::io("remove", cleaned_path, e))?;
            return Ok(false);
        }
        let swap = swap_path(&self.dir, base, end, SWAP_SUFFIX);
        compio::fs::rename(cleaned_path, &swap)
            .await
            .map_err(|e| LogError::io("rename", &swap, e))?;
        io::sync_dir(&self.dir)
            .await
            .map_err(|e| LogError::io("fsync", &self.dir, e))?;
        // Committed: from here a crash is finished by `complete_swaps` at open.
        let old: Vec<Segment> = {
            let mut s = self.state.borrow_mut();
            group
                .iter()
                .filter_map(|g| {
                    s.txn_indexes.remove(&g.base);
                    s.segments.remove(&g.base)
                })
                .collect()
        };
        for seg in &old {
            txn_index::remove(&self.dir, seg.base_offset)?;
            for path in seg.paths() {
                match compio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io("remove", path, e)),
                }
            }
        }
        let log_path = segment_path(&self.dir, base, LOG_SUFFIX);
        compio::fs::rename(&swap, &log_path)
            .await
            .map_err(|e| LogError::io("rename", &log_path, e))?;
        io::sync_dir(&self.dir)
            .await
            .map_err(|e| LogError::io("fsync", &self.dir, e))?;
        let (mut segment, _, _) = Segment::open(&self.dir, base).await?;
        for f in facts {
            segment.note_batch(f, self.config.index_interval_bytes);
        }
        segment.rewrite_index().await?;
        segment.sync_index().await?;
        segment.close_index_files();
        if !retained_aborts.is_empty() {
            let mut bytes =
                Vec::with_capacity(retained_aborts.len() * txn_index::TXN_INDEX_ENTRY_BYTES);
            for e in retained_aborts {
                txn_index::encode(e, &mut bytes);
            }
            txn_index::write_at(&self.dir, base, 0, bytes).await?;
        }
        let mut s = self.state.borrow_mut();
        if !retained_aborts.is_empty() {
            s.txn_indexes
                .insert(base, TxnIndexFile::of(retained_aborts));
        }
        s.metrics.segments_deleted += old.len() as u64;
        s.segments.insert(base, segment);
        Ok(true)
    }
}
