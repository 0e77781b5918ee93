//! The cleaner's offset map: key hash -> offset of the latest record with that key in the
//! dirty range (Kafka's `SkimpyOffsetMap`).
//!
//! Owns: key hashing (xxh3, 128 bits: a collision between two keys of one log is about
//! n^2 / 2^129, negligible at millions of keys; Kafka uses MD5 the same way) and the bound
//! on entries.
//! Invariants: never more than `capacity` entries (`put` refuses a new key once full, and
//! the caller ends the dirty range there); `latest_offset` is the last offset the map
//! covers: records above it are not in the map and the cleaner keeps them.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_128;

/// Bytes one entry costs, as budgeted (hash 16 + offset 8, plus the table's slack).
pub const OFFSET_MAP_ENTRY_BYTES: usize = 48;

/// A bounded map of key hashes to offsets. Reused across rounds and logs on one shard.
pub struct OffsetMap {
    entries: HashMap<u128, i64>,
    capacity: usize,
    latest_offset: i64,
}

impl OffsetMap {
    /// A map holding at most `memory_bytes / OFFSET_MAP_ENTRY_BYTES` keys (at least one).
    pub fn with_memory(memory_bytes: usize) -> OffsetMap {
        OffsetMap {
            entries: HashMap::new(),
            capacity: (memory_bytes / OFFSET_MAP_ENTRY_BYTES).max(1),
            latest_offset: -1,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every key; keeps the table's memory for the next round unless it grew past
    /// a quarter of the bound (then it is given back).
    pub fn clear(&mut self) {
        self.entries.clear();
        if self.entries.capacity() > self.capacity / 4 {
            self.entries.shrink_to(self.capacity / 4);
        }
        self.latest_offset = -1;
    }

    /// Records `offset` as the latest for `key`. False (nothing changed) if the key is new
    /// and the map is full.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = xxh3_128(key);
        if let Some(slot) = self.entries.get_mut(&hash) {
            *slot = offset;
            return true;
        }
        if self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(hash, offset);
        true
    }

    /// The latest offset recorded for `key`, -1 if none.
    pub fn get(&self, key: &[u8]) -> i64 {
        self.entries.get(&xxh3_128(key)).copied().unwrap_or(-1)
    }

    /// The last offset the map covers (-1: none).
    pub fn latest_offset(&self) -> i64 {
        self.latest_offset
    }

    pub(crate) fn set_latest_offset(&mut self, offset: i64) {
        self.latest_offset = offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_latest_wins() {
        let mut m = OffsetMap::with_memory(2 * OFFSET_MAP_ENTRY_BYTES);
        assert!(m.put(b"a", 1));
        assert!(m.put(b"b", 2));
        assert!(m.put(b"a", 3), "an existing key updates even when full");
        assert!(!m.put(b"c", 4), "a new key is refused when full");
        assert_eq!((m.get(b"a"), m.get(b"b"), m.get(b"c")), (3, 2, -1));
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m.latest_offset(), -1);
    }
}
