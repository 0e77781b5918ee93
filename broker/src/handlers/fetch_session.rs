//! Incremental fetch sessions (KIP-227), kept per shard (a consumer's connection lives on
//! one shard; reconnecting elsewhere gets FETCH_SESSION_ID_NOT_FOUND and starts over, which
//! clients handle).
//!
//! A session remembers each partition's fetch offset and max bytes, and what the client was
//! last told (high watermark, last stable offset, log start offset), so an incremental answer
//! carries only partitions with records, errors, or changed offsets.
//! Shape: sessions by id (a `HashMap`); a session's partitions by key (topic id, name,
//! index) in a `HashMap` to their position, and in session order in a `BTreeMap` by position,
//! so a fetch touches each of its partitions once, never searching the list.
//! Bounded: at most `capacity` sessions; the least recently used one is evicted.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use crate::metadata::ShardId;
use crate::runtime::Shard;

/// This shard's sessions (a per-shard service, bounded by `kafka.fetch_sessions_per_shard_max`).
pub fn sessions(shard: &Shard) -> Rc<RefCell<FetchSessionCache>> {
    shard.services.get_or_init(|| {
        let capacity = shard.config().kafka.fetch_sessions_per_shard_max;
        RefCell::new(FetchSessionCache::new(shard.id, capacity))
    })
}

/// Epoch meaning "full fetch, no session" / "close the session".
pub const FINAL_EPOCH: i32 = -1;
/// Epoch of the request that creates a session.
pub const INITIAL_EPOCH: i32 = 0;

/// One partition a fetch reads: as requested, or as its session remembers it. Cheap to
/// clone (the topic name is shared), as it travels to the partition's owning shard.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchPartition {
    pub topic: Arc<str>,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
}

impl FetchPartition {
    /// The partition's identity in a session: topic id and name and index, as Kafka's
    /// `TopicIdPartition`.
    pub fn key(&self) -> PartitionKey {
        PartitionKey {
            topic_id: self.topic_id,
            topic: Arc::clone(&self.topic),
            partition: self.partition,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic_id: uuid::Uuid,
    pub topic: Arc<str>,
    pub partition: i32,
}

/// What a session remembers of a partition (Kafka's `CachedPartition`).
#[derive(Debug)]
struct CachedPartition {
    fetch: FetchPartition,
    /// What the last response said: (high watermark, last stable offset, log start offset);
    /// `None`: never sent.
    last_sent: Option<(i64, i64, i64)>,
}

/// One client's session: its partitions by key, in session order.
///
/// Order (Kafka's `FetchSession.partitionMap`, an insertion-ordered set): a full fetch keeps
/// the request's order, partitions added later go to the end, an update keeps a partition's
/// place, and a partition included in an incremental answer moves to the end, so the
/// partitions take turns at the front of the response (and its byte budget).
#[derive(Debug)]
pub struct FetchSession {
    pub id: i32,
    /// The epoch the next request must carry.
    pub next_epoch: i32,
    /// Partition -> its position in `order`.
    index: HashMap<PartitionKey, u64>,
    /// Position -> partition; positions only grow, so iteration is session order.
    order: BTreeMap<u64, CachedPartition>,
    next_position: u64,
    last_used: u64,
}

impl FetchSession {
    fn new(id: i32, partitions: impl IntoIterator<Item = FetchPartition>, last_used: u64) -> Self {
        let mut session = FetchSession {
            id,
            next_epoch: 1,
            index: HashMap::new(),
            order: BTreeMap::new(),
            next_position: 0,
            last_used,
        };
        for p in partitions {
            session.upsert(p);
        }
        session
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Adds `p` at the end, or updates its fetch offset, max bytes and leader epoch in place.
    pub fn upsert(&mut self, p: FetchPartition) {
        if let Some(position) = self.index.get(&p.key()) {
            let cached = self
                .order
                .get_mut(position)
                .expect("session index and order agree");
            cached.fetch.fetch_offset = p.fetch_offset;
            cached.fetch.partition_max_bytes = p.partition_max_bytes;
            cached.fetch.current_leader_epoch = p.current_leader_epoch;
            return;
        }
        let position = self.take_position();
        self.index.insert(p.key(), position);
        self.order.insert(
            position,
            CachedPartition {
                fetch: p,
                last_sent: None,
            },
        );
    }

    /// Removes every partition `forget` names (one pass over the session).
    pub fn forget(&mut self, mut forget: impl FnMut(&FetchPartition) -> bool) {
        let index = &mut self.index;
        self.order.retain(|_, cached| {
            let keep = !forget(&cached.fetch);
            if !keep {
                index.remove(&cached.fetch.key());
            }
            keep
        });
    }

    /// The partitions to read, in session order.
    pub fn partitions(&self) -> Vec<FetchPartition> {
        self.order.values().map(|c| c.fetch.clone()).collect()
    }

    /// Records that the client is told `now` (high watermark, last stable offset, log start
    /// offset) for `key`, and returns whether the partition belongs in the answer: always in
    /// a full fetch; in an incremental one only with `news` (records or an error) or changed
    /// offsets, and then it moves to the end of the session. Unknown keys: true.
    pub fn record_sent(
        &mut self,
        key: &PartitionKey,
        now: (i64, i64, i64),
        news: bool,
        incremental: bool,
    ) -> bool {
        let Some(&position) = self.index.get(key) else {
            return true;
        };
        let cached = self
            .order
            .get_mut(&position)
            .expect("session index and order agree");
        let include = !incremental || news || cached.last_sent != Some(now);
        cached.last_sent = Some(now);
        if incremental && include {
            let cached = self.order.remove(&position).expect("present");
            let position = self.take_position();
            self.index.insert(cached.fetch.key(), position);
            self.order.insert(position, cached);
        }
        include
    }

    fn take_position(&mut self) -> u64 {
        let position = self.next_position;
        self.next_position += 1;
        position
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    InvalidEpoch,
}

#[derive(Debug)]
pub struct FetchSessionCache {
    sessions: HashMap<i32, FetchSession>,
    capacity: usize,
    next_id: u32,
    shard: ShardId,
    clock: u64,
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
    pub fn create(&mut self, partitions: impl IntoIterator<Item = FetchPartition>) -> Option<i32> {
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
        self.sessions
            .insert(id, FetchSession::new(id, partitions, self.clock));
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
        let a = c.create([]).unwrap();
        assert!(c.get_incremental(a, 2).is_err());
        assert!(c.get_incremental(a, 1).is_ok());
        assert_eq!(
            c.get_incremental(a, 1).unwrap_err(),
            SessionError::InvalidEpoch
        );
        assert!(c.get_incremental(a, 2).is_ok());
        let b = c.create([]).unwrap();
        let _ = c.get_incremental(b, 1);
        let d = c.create([]).unwrap();
        assert_ne!(a, b);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get_incremental(a, 3).unwrap_err(), SessionError::NotFound);
        assert!(c.get_incremental(d, 1).is_ok());
        assert_eq!(
            c.get_incremental(999, 1).unwrap_err(),
            SessionError::NotFound
        );
    }

    fn part(topic: &str, partition: i32, fetch_offset: i64) -> FetchPartition {
        FetchPartition {
            topic: topic.into(),
            topic_id: uuid::Uuid::nil(),
            partition,
            fetch_offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    fn order(s: &FetchSession) -> Vec<(String, i32, i64)> {
        s.partitions()
            .into_iter()
            .map(|p| (p.topic.to_string(), p.partition, p.fetch_offset))
            .collect()
    }

    /// Kafka's session order: request order at creation, new partitions at the end, updates
    /// in place, forgotten ones gone; the same partition twice is kept once.
    #[test]
    fn session_keeps_insertion_order_and_updates_in_place() {
        let mut c = FetchSessionCache::new(ShardId(0), 4);
        let id = c
            .create([
                part("a", 1, 0),
                part("b", 0, 0),
                part("a", 0, 0),
                part("a", 1, 9),
            ])
            .unwrap();
        let s = c.get_incremental(id, 1).unwrap();
        assert_eq!(
            order(s),
            vec![("a".into(), 1, 9), ("b".into(), 0, 0), ("a".into(), 0, 0)]
        );
        s.upsert(part("c", 0, 5));
        s.upsert(part("b", 0, 7));
        s.forget(|p| &*p.topic == "a" && p.partition == 1);
        assert_eq!(
            order(s),
            vec![("b".into(), 0, 7), ("a".into(), 0, 0), ("c".into(), 0, 5)]
        );
        assert_eq!(s.len(), 3);
        // The same name under another topic id is another partition.
        let mut other = part("b", 0, 1);
        other.topic_id = uuid::Uuid::from_u128(7);
        s.upsert(other);
        assert_eq!(s.len(), 4);
    }

    /// Incremental answers carry only partitions with news or changed offsets, and those move
    /// to the end of the session; a full fetch answers everything and keeps the order.
    #[test]
    fn incremental_answers_only_news_and_rotates_it_to_the_end() {
        let mut c = FetchSessionCache::new(ShardId(0), 4);
        let id = c
            .create([part("t", 0, 0), part("t", 1, 0), part("t", 2, 0)])
            .unwrap();
        let s = c.session_mut(id).unwrap();
        let key = |p: i32| part("t", p, 0).key();
        for p in 0..3 {
            assert!(s.record_sent(&key(p), (5, 5, 0), false, false), "full: all");
        }
        assert_eq!(order(s).iter().map(|x| x.1).collect::<Vec<_>>(), [0, 1, 2]);
        // Nothing changed: nothing to send, order kept.
        for p in 0..3 {
            assert!(!s.record_sent(&key(p), (5, 5, 0), false, true));
        }
        assert_eq!(order(s).iter().map(|x| x.1).collect::<Vec<_>>(), [0, 1, 2]);
        // Partition 0 has records, partition 1 a new high watermark: both sent and rotated.
        assert!(s.record_sent(&key(0), (5, 5, 0), true, true));
        assert!(s.record_sent(&key(1), (6, 6, 0), false, true));
        assert!(!s.record_sent(&key(2), (5, 5, 0), false, true));
        assert_eq!(order(s).iter().map(|x| x.1).collect::<Vec<_>>(), [2, 0, 1]);
        // A key the session does not hold is always answered.
        assert!(s.record_sent(&key(9), (1, 1, 0), false, true));
    }

    /// Many partitions: lookups stay by key (this would take seconds with linear matching).
    #[test]
    fn large_sessions_update_by_key() {
        let mut c = FetchSessionCache::new(ShardId(0), 1);
        let n = 20_000;
        let id = c.create((0..n).map(|p| part("big", p, 0))).unwrap();
        let s = c.get_incremental(id, 1).unwrap();
        for p in (0..n).rev() {
            s.upsert(part("big", p, i64::from(p)));
        }
        for p in 0..n {
            s.record_sent(&part("big", p, 0).key(), (1, 1, 0), false, true);
        }
        let parts = s.partitions();
        assert_eq!(parts.len(), n as usize);
        assert!(
            parts
                .iter()
                .all(|p| p.fetch_offset == i64::from(p.partition))
        );
    }
}
