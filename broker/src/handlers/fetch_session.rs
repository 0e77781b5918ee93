//! Incremental fetch sessions (KIP-227), kept per shard (a consumer's connection lives on
//! one shard; reconnecting elsewhere gets FETCH_SESSION_ID_NOT_FOUND and starts over, which
//! clients handle).
//!
//! A session remembers each partition's fetch offset and max bytes, and what the client was
//! last told (high watermark, last stable offset, log start offset), so an incremental answer
//! carries only partitions with records, errors, or changed offsets.
//! Bounded: at most `capacity` sessions; the least recently used one is evicted.

use std::collections::HashMap;

use crate::metadata::ShardId;

/// Epoch meaning "full fetch, no session" / "close the session".
pub const FINAL_EPOCH: i32 = -1;
/// Epoch of the request that creates a session.
pub const INITIAL_EPOCH: i32 = 0;

#[derive(Debug, Clone, PartialEq)]
pub struct SessionPartition {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
    /// What the last response said (None: never sent).
    pub last_sent: Option<(i64, i64, i64)>,
}

#[derive(Debug)]
pub struct FetchSession {
    pub id: i32,
    /// The epoch the next request must carry.
    pub next_epoch: i32,
    pub partitions: Vec<SessionPartition>,
    last_used: u64,
}

#[derive(Debug)]
pub struct FetchSessionCache {
    sessions: HashMap<i32, FetchSession>,
    capacity: usize,
    next_id: u32,
    shard: ShardId,
    clock: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    InvalidEpoch,
}

impl FetchSessionCache {
    pub fn new(shard: ShardId, capacity: usize) -> Self {
        FetchSessionCache {
            sessions: HashMap::new(),
            capacity,
            next_id: 0,
            shard,
            clock: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Creates a session holding `partitions`; None when sessions are disabled (capacity 0).
    pub fn create(&mut self, partitions: Vec<SessionPartition>) -> Option<i32> {
        if self.capacity == 0 {
            return None;
        }
        if self.sessions.len() >= self.capacity
            && let Some((&oldest, _)) = self.sessions.iter().min_by_key(|(_, s)| s.last_used)
        {
            self.sessions.remove(&oldest);
        }
        let id = loop {
            self.next_id = self.next_id.wrapping_add(1);
            // Ids are unique per shard and never 0; the shard id is folded in so that a
            // session id names its shard.
            let id = ((self.next_id as u64 * 256 + self.shard.0 as u64) % (i32::MAX as u64)) as i32;
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.clock += 1;
        self.sessions.insert(
            id,
            FetchSession {
                id,
                next_epoch: 1,
                partitions,
                last_used: self.clock,
            },
        );
        Some(id)
    }

    /// The session for an incremental request at `epoch`; advances the expected epoch.
    pub fn get_incremental(
        &mut self,
        id: i32,
        epoch: i32,
    ) -> Result<&mut FetchSession, SessionError> {
        self.clock += 1;
        let clock = self.clock;
        let s = self.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if s.next_epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        s.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        s.last_used = clock;
        Ok(s)
    }

    pub fn session_mut(&mut self, id: i32) -> Option<&mut FetchSession> {
        self.sessions.get_mut(&id)
    }

    pub fn remove(&mut self, id: i32) -> Option<FetchSession> {
        self.sessions.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_and_eviction() {
        let mut c = FetchSessionCache::new(ShardId(1), 2);
        let a = c.create(vec![]).unwrap();
        assert!(c.get_incremental(a, 2).is_err());
        assert!(c.get_incremental(a, 1).is_ok());
        assert_eq!(
            c.get_incremental(a, 1).unwrap_err(),
            SessionError::InvalidEpoch
        );
        assert!(c.get_incremental(a, 2).is_ok());
        let b = c.create(vec![]).unwrap();
        let _ = c.get_incremental(b, 1);
        let d = c.create(vec![]).unwrap();
        assert_ne!(a, b);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get_incremental(a, 3).unwrap_err(), SessionError::NotFound);
        assert!(c.get_incremental(d, 1).is_ok());
        assert_eq!(
            c.get_incremental(999, 1).unwrap_err(),
            SessionError::NotFound
        );
    }
}
