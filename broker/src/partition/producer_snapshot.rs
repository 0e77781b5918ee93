//! The payload of a producer-state snapshot (`engine::snapshot` frames, checksums and
//! stores it): every producer's entry, the completed transactions whose marker was not yet
//! below the high watermark and the leader epoch cache, as of the snapshot's offset. The
//! aborted transactions below it are in the segments' `.txnindex` files, written with it. Kafka's snapshot (`ProducerStateManager.writeSnapshot`) holds per
//! producer: id, epoch, last sequence, last offset, offset delta, timestamp, coordinator
//! epoch and current transaction's first offset; Sluice keeps the same per producer, with
//! all `BATCHES_KEPT` batches (so a load is exactly the state a scan builds), plus what Kafka
//! keeps in `leader-epoch-checkpoint` and, for the LSO, its `unreplicatedTxns`.
//!
//! Invariants: a decoded payload passes every check a scan would guarantee (offsets below
//! the snapshot's offset, ascending lists, no producer twice, bounded counts) or is refused
//! with a reason, never half-loaded; lengths are checked against the bytes left before
//! anything is allocated.
//!
//! Layout (big-endian): version u16 = 1 | epochs u32, each (epoch i32, start_offset i64) |
//! producers u32, each (producer_id i64, epoch i16, last_offset i64, coordinator_epoch i32,
//! current_txn_first_offset i64 or -1, last_timestamp i64, batches u8, each (first_seq i32,
//! last_seq i32, first_offset i64, last_offset i64, max_timestamp i64)) | unreplicated u32,
//! each (producer_id i64, first_offset i64, last_offset i64).

use super::{
    BATCHES_KEPT, BatchMeta, ONGOING_TRANSACTIONS_MAX, PRODUCERS_PER_PARTITION_MAX, ProducerEntry,
    ProducerStateTable, TxnRange,
};

const PAYLOAD_VERSION: u16 = 1;
const EPOCH_BYTES: usize = 4 + 8;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;
const PRODUCER_BYTES: usize = 8 + 2 + 8 + 4 + 8 + 8 + 1;
const RANGE_BYTES: usize = 8 + 8 + 8;

/// What a snapshot restores.
pub struct SnapshotState {
    pub table: ProducerStateTable,
    /// The leader epoch cache below the snapshot's offset: (epoch, start offset).
    pub epochs: Vec<(i32, i64)>,
}

impl ProducerStateTable {
    /// Appends the snapshot payload of this table and `epochs` to `out`.
    pub fn encode_snapshot(&self, epochs: &[(i32, i64)], out: &mut Vec<u8>) {
        out.extend_from_slice(&PAYLOAD_VERSION.to_be_bytes());
        out.extend_from_slice(&(epochs.len() as u32).to_be_bytes());
        for &(epoch, start) in epochs {
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&start.to_be_bytes());
        }
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_offset.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.unreplicated.len() as u32).to_be_bytes());
        for t in &self.unreplicated {
            put_range(out, t);
        }
    }

    /// The state in the payload of the snapshot named `offset`, or why it is unusable. Its
    /// aborted transactions are in the `.txnindex` files (`set_aborted_flushed`).
    pub fn decode_snapshot(offset: i64, payload: &[u8]) -> Result<SnapshotState, &'static str> {
        let mut r = Reader(payload);
        if r.u16()? != PAYLOAD_VERSION {
            return Err("unknown payload version");
        }
        let n = r.count(EPOCH_BYTES)?;
        let mut epochs = Vec::with_capacity(n);
        for _ in 0..n {
            let (epoch, start) = (r.i32()?, r.i64()?);
            if start > offset || epochs.last().is_some_and(|&(e, s)| epoch <= e || start < s) {
                return Err("leader epochs out of order");
            }
            epochs.push((epoch, start));
        }
        let mut table = ProducerStateTable::default();
        let n = r.count(PRODUCER_BYTES)?;
        if n > PRODUCERS_PER_PARTITION_MAX + ONGOING_TRANSACTIONS_MAX {
            return Err("more producers than a partition keeps");
        }
        for _ in 0..n {
            let id = r.i64()?;
            let mut e = ProducerEntry::new();
            e.epoch = r.i16()?;
            e.last_offset = r.i64()?;
            e.coordinator_epoch = r.i32()?;
            let txn = r.i64()?;
            e.last_timestamp = r.i64()?;
            let batches = usize::from(r.u8()?);
            if batches > BATCHES_KEPT || r.0.len() < batches * BATCH_BYTES {
                return Err("more batches than a producer keeps");
            }
            for _ in 0..batches {
                let b = BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp: r.i64()?,
                };
                if b.last_offset >= offset || b.first_offset > b.last_offset {
                    return Err("a producer batch at or above the snapshot offset");
                }
                e.batches.push_back(b);
            }
            if e.last_offset >= offset || txn >= offset || txn < -1 {
                return Err("a producer offset at or above the snapshot offset");
            }
            if txn >= 0 {
                if table.ongoing.insert(txn, id).is_some() {
                    return Err("two transactions start at one offset");
                }
                e.current_txn_first_offset = Some(txn);
            }
            if table.producers.insert(id, e).is_some() {
                return Err("a producer twice");
            }
        }
        if table.ongoing.len() > ONGOING_TRANSACTIONS_MAX {
            return Err("more ongoing transactions than a partition keeps");
        }
        let n = r.count(RANGE_BYTES)?;
        for _ in 0..n {
            let t = r.range(offset)?;
            if table
                .unreplicated
                .back()
                .is_some_and(|p| p.last_offset >= t.last_offset)
            {
                return Err("completed transactions out of order");
            }
            table.unreplicated.push_back(t);
        }
        if !r.0.is_empty() {
            return Err("bytes after the payload");
        }
        Ok(SnapshotState { table, epochs })
    }
}

fn put_range(out: &mut Vec<u8>, t: &TxnRange) {
    out.extend_from_slice(&t.producer_id.to_be_bytes());
    out.extend_from_slice(&t.first_offset.to_be_bytes());
    out.extend_from_slice(&t.last_offset.to_be_bytes());
}

/// A cursor over the payload; every read checks the bytes left.
struct Reader<'a>(&'a [u8]);

const SHORT: &str = "payload ends early";

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(SHORT)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    /// A u32 count of items of at least `item_bytes` each, checked against the bytes left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, &'static str> {
        let n = u32::from_be_bytes(self.take()?) as usize;
        if n.saturating_mul(item_bytes) > self.0.len() {
            return Err(SHORT);
        }
        Ok(n)
    }
    /// A completed transaction wholly below `offset`.
    fn range(&mut self, offset: i64) -> Result<TxnRange, &'static str> {
        let t = TxnRange {
            producer_id: self.i64()?,
            first_offset: self.i64()?,
            last_offset: self.i64()?,
        };
        if t.last_offset >= offset || t.first_offset > t.last_offset || t.first_offset < 0 {
            return Err("a transaction at or above the snapshot offset");
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Marker, ProducerView};
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMeta {
        BatchMeta {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq - first_seq),
            max_timestamp: first_offset * 10,
        }
    }

    fn marker(producer_id: i64, commit: bool, offset: i64) -> Marker {
        Marker {
            producer_id,
            producer_epoch: 0,
            coordinator_epoch: 3,
            commit,
            offset,
            timestamp: offset * 10,
        }
    }

    /// Producer 1: idempotent, 7 batches (5 kept). Producer 2: aborted at 20, then an open
    /// transaction from 30. Producer 3: committed at 26. High watermark 25.
    fn sample() -> ProducerStateTable {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(1, 0, meta(i * 2, i * 2 + 1, i64::from(i) * 2), false);
        }
        t.record(2, 0, meta(0, 2, 14), true);
        t.record_marker(marker(2, false, 20));
        t.record(3, 1, meta(0, 0, 21), true);
        t.record_marker(marker(3, true, 26));
        t.record(2, 0, meta(3, 3, 30), true);
        t.note_high_watermark(25);
        t
    }

    fn views(t: &ProducerStateTable) -> Vec<ProducerView> {
        let mut v: Vec<_> = t.producers().collect();
        v.sort_by_key(|p| p.producer_id);
        v
    }

    #[test]
    fn round_trip_is_the_same_state() {
        let mut t = sample();
        let epochs = [(0, 0), (4, 12)];
        let mut payload = Vec::new();
        t.encode_snapshot(&epochs, &mut payload);
        let mut back =
            ProducerStateTable::decode_snapshot(31, &payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.epochs, epochs);
        assert_eq!(views(&back.table), views(&t));
        assert_eq!(back.table.ongoing, t.ongoing);
        assert_eq!(back.table.unreplicated, t.unreplicated);
        assert!(
            back.table.aborted.is_empty(),
            "aborted ones go to the .txnindex files"
        );
        assert_eq!(
            back.table.first_unstable_offset(25),
            t.first_unstable_offset(25)
        );
        // Duplicates are still recognised from the restored batches.
        assert_eq!(
            back.table.check(1, 0, 12, 13, false),
            t.check(1, 0, 12, 13, false)
        );
        back.table.set_aborted_flushed(31);
        assert_eq!(back.table.aborted_floor(), 31);
        assert_eq!(
            t.unflushed_aborted(31).len(),
            1,
            "written with the snapshot"
        );
    }

    #[test]
    fn damage_is_refused_never_half_loaded() {
        let t = sample();
        let mut payload = Vec::new();
        t.encode_snapshot(&[(0, 0)], &mut payload);
        assert!(
            ProducerStateTable::decode_snapshot(30, &payload).is_err(),
            "offset 30 is in it"
        );
        for len in 0..payload.len() {
            assert!(
                ProducerStateTable::decode_snapshot(31, &payload[..len]).is_err(),
                "cut to {len}"
            );
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert!(ProducerStateTable::decode_snapshot(31, &longer).is_err());
        // Every single-byte change decodes to an error or to some state, never a panic.
        for i in 0..payload.len() {
            let mut bad = payload.clone();
            bad[i] = bad[i].wrapping_add(0x81);
            let _ = ProducerStateTable::decode_snapshot(31, &bad);
        }
    }
}
