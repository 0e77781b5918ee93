//! Sparse offset and time indexes of one segment, kept in memory and mirrored to
//! `.index` / `.timeindex` files.
//!
//! Owns: entry layout, lookups, validation of index files read back from disk.
//! Invariants: entries are written at the same batch boundaries into both files, one every
//! `index.interval.bytes` of log; entry k of both files names the same batch. Relative
//! offsets and positions strictly increase; `max_timestamp_before` never decreases.
//! Position 0 (the segment's first batch) is implicit and never stored.
//!
//! On-disk entries (big-endian, as Kafka's layouts):
//!   .index      [relative_offset: u32][position: u32]
//!   .timeindex  [max_timestamp_before: i64][offset_of_max_before: u32]
//! where max_timestamp_before is the largest batch max_timestamp in the segment strictly
//! before that batch (so a timestamp lookup may start its walk there) and
//! offset_of_max_before the relative last offset of the batch that holds it (Kafka's time
//! index pairs a timestamp with the offset where it was seen, too).

use crate::limits::{OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
    pub max_timestamp_before: i64,
    /// Relative offset of the batch holding `max_timestamp_before` (its last offset).
    pub offset_of_max_before: u32,
}

#[derive(Debug, Default)]
pub(crate) struct SegmentIndex {
    entries: Vec<IndexEntry>,
    /// Entries already written to the index files.
    pub persisted: usize,
}

/// Why an index file pair was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IndexDamage(pub String);

impl SegmentIndex {
    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }
    pub(crate) fn last(&self) -> Option<IndexEntry> {
        self.entries.last().copied()
    }
    pub(crate) fn push(&mut self, e: IndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(e.relative_offset > last.relative_offset && e.position > last.position);
            assert!(e.max_timestamp_before >= last.max_timestamp_before);
        }
        assert!(e.position > 0);
        self.entries.push(e);
    }
    /// Largest entry whose batch base offset is <= `relative_offset`; position 0 if none.
    pub(crate) fn floor_offset(&self, relative_offset: u64) -> (u32, u64) {
        let i = self
            .entries
            .partition_point(|e| u64::from(e.relative_offset) <= relative_offset);
        if i == 0 {
            (0, 0)
        } else {
            (
                self.entries[i - 1].relative_offset,
                u64::from(self.entries[i - 1].position),
            )
        }
    }
    /// Largest entry at position <= `position` as (relative offset, position); (0, 0) if none.
    pub(crate) fn floor_position(&self, position: u64) -> (u32, u64) {
        let i = self
            .entries
            .partition_point(|e| u64::from(e.position) <= position);
        if i == 0 {
            (0, 0)
        } else {
            (
                self.entries[i - 1].relative_offset,
                u64::from(self.entries[i - 1].position),
            )
        }
    }
    /// Position from which a walk finds the first batch with max_timestamp >= `ts`:
    /// the last entry all of whose predecessors have max timestamps below `ts`.
    pub(crate) fn floor_timestamp(&self, ts: i64) -> (u32, u64) {
        let i = self
            .entries
            .partition_point(|e| e.max_timestamp_before < ts);
        if i == 0 {
            (0, 0)
        } else {
            (
                self.entries[i - 1].relative_offset,
                u64::from(self.entries[i - 1].position),
            )
        }
    }
    /// Drops entries at positions >= `position`.
    pub(crate) fn truncate_at_position(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }
    /// Drops entries whose batch base offset is > `relative_offset`.
    pub(crate) fn truncate_after_offset(&mut self, relative_offset: u64) {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.relative_offset) <= relative_offset);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Encodes entries `[from..]` for both files.
    pub(crate) fn encode_from(&self, from: usize) -> (Vec<u8>, Vec<u8>) {
        let tail = &self.entries[from..];
        let mut offsets = Vec::with_capacity(tail.len() * OFFSET_INDEX_ENTRY_BYTES);
        let mut times = Vec::with_capacity(tail.len() * TIME_INDEX_ENTRY_BYTES);
        for e in tail {
            offsets.extend_from_slice(&e.relative_offset.to_be_bytes());
            offsets.extend_from_slice(&e.position.to_be_bytes());
            times.extend_from_slice(&e.max_timestamp_before.to_be_bytes());
            times.extend_from_slice(&e.offset_of_max_before.to_be_bytes());
        }
        (offsets, times)
    }

    /// Decodes and validates both files against a log of `log_bytes` bytes.
    pub(crate) fn decode(
        offsets: &[u8],
        times: &[u8],
        log_bytes: u64,
    ) -> Result<SegmentIndex, IndexDamage> {
        if !offsets.len().is_multiple_of(OFFSET_INDEX_ENTRY_BYTES)
            || !times.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES)
        {
            return Err(IndexDamage(format!(
                "sizes {} / {} are not whole entries",
                offsets.len(),
                times.len()
            )));
        }
        let n = offsets.len() / OFFSET_INDEX_ENTRY_BYTES;
        if times.len() / TIME_INDEX_ENTRY_BYTES != n {
            return Err(IndexDamage(format!(
                "{n} offset entries but {} time entries",
                times.len() / 12
            )));
        }
        let mut index = SegmentIndex {
            entries: Vec::with_capacity(n),
            persisted: 0,
        };
        for k in 0..n {
            let o = &offsets[k * 8..k * 8 + 8];
            let t = &times[k * 12..k * 12 + 12];
            let relative_offset = u32::from_be_bytes(o[0..4].try_into().expect("4 bytes"));
            let position = u32::from_be_bytes(o[4..8].try_into().expect("4 bytes"));
            let max_timestamp_before = i64::from_be_bytes(t[0..8].try_into().expect("8 bytes"));
            let offset_of_max_before = u32::from_be_bytes(t[8..12].try_into().expect("4 bytes"));
            let prev = index.entries.last();
            let ordered = prev.is_none_or(|p| {
                relative_offset > p.relative_offset
                    && position > p.position
                    && max_timestamp_before >= p.max_timestamp_before
            });
            if offset_of_max_before >= relative_offset
                || position == 0
                || u64::from(position) >= log_bytes
                || !ordered
            {
                return Err(IndexDamage(format!(
                    "entry {k} is out of order or out of range"
                )));
            }
            index.entries.push(IndexEntry {
                relative_offset,
                position,
                max_timestamp_before,
                offset_of_max_before,
            });
        }
        index.persisted = n;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut ix = SegmentIndex::default();
        ix.push(IndexEntry {
            relative_offset: 10,
            position: 4096,
            max_timestamp_before: 100,
            offset_of_max_before: 9,
        });
        ix.push(IndexEntry {
            relative_offset: 20,
            position: 8192,
            max_timestamp_before: 200,
            offset_of_max_before: 19,
        });
        ix
    }

    #[test]
    fn lookups() {
        let ix = sample();
        assert_eq!(ix.floor_offset(5), (0, 0));
        assert_eq!(ix.floor_offset(10), (10, 4096));
        assert_eq!(ix.floor_offset(25), (20, 8192));
        assert_eq!(ix.floor_position(8000), (10, 4096));
        assert_eq!(ix.floor_timestamp(50), (0, 0));
        assert_eq!(ix.floor_timestamp(150), (10, 4096));
        assert_eq!(ix.floor_timestamp(201), (20, 8192));
    }

    #[test]
    fn encode_decode_and_damage() {
        let ix = sample();
        let (o, t) = ix.encode_from(0);
        let back = SegmentIndex::decode(&o, &t, 10_000).unwrap();
        assert_eq!(back.entries(), ix.entries());
        assert!(
            SegmentIndex::decode(&o, &t, 8000).is_err(),
            "position beyond the log"
        );
        assert!(SegmentIndex::decode(&o[..7], &t, 10_000).is_err());
        let mut swapped = o.clone();
        swapped[0..8].copy_from_slice(&o[8..16]);
        assert!(SegmentIndex::decode(&swapped, &t, 10_000).is_err());
        let zeros = vec![0u8; 16];
        assert!(SegmentIndex::decode(&zeros, &[0u8; 24], 10_000).is_err());
    }

    #[test]
    fn truncation() {
        let mut ix = sample();
        ix.truncate_at_position(8192);
        assert_eq!(ix.entries().len(), 1);
        let mut ix = sample();
        ix.truncate_after_offset(9);
        assert!(ix.entries().is_empty());
    }
}
