//! Kafka v2 record batches, built by hand into a reused buffer, and parsed back by consumers.
//!
//! Owns: the v2 batch layout (61-byte header, varint records), CRC32C, compression of the
//! records section, and the free list of batch buffers ([`BatchBuffers`]). Invariants: a
//! sealed batch is a complete, CRC-valid v2 batch; appending a record allocates nothing unless
//! the batch outgrows the capacity reserved for it (a full-size batch never does); a batch
//! buffer is reused only once nothing else holds it.
//!
//! Why by hand and not `RecordBatchEncoder`: the encoder wants one owned `Record` (with
//! `Bytes` key/value and a headers map) per record, i.e. allocations per record; here a record
//! is written straight into the batch buffer from borrowed slices.

use anyhow::{Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_wire::varint::{get_varint, put_varint, varint_bytes};

pub use kafka_protocol::records::Compression;

/// Smallest capacity reserved for a new batch.
const BATCH_CAPACITY_MIN: usize = 4096;
/// Most free full-size batch buffers one list keeps (see [`BatchBuffers::new`]).
pub const BATCH_BUFFERS_FREE_MAX: usize = 64;
/// Size of the v2 batch header that precedes the records.
pub const BATCH_HEADER_BYTES: usize = 61;
const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_PARTITION_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORDS_COUNT: usize = 57;
const _: () = assert!(OFFSET_RECORDS_COUNT + 4 == BATCH_HEADER_BYTES);
const MAGIC_V2: u8 = 2;
/// Batch attribute bits 0-2: the compression codec.
const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x7;
/// Batch attribute bit 4: the batch belongs to a transaction (Kafka's `TRANSACTIONAL_FLAG_MASK`).
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
/// Batch attribute bit 5: a control batch (transaction marker).
pub const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Producer identity stamped into a batch (all -1 when idempotence is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Sets the transactional attribute (bit 4): the batch's records become visible to
    /// read_committed consumers only once the producer's transaction commits.
    pub transactional: bool,
}

impl ProducerStamp {
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// Free batch buffers of one producer, so a full-size batch is written into memory that is
/// already mapped and touched: a fresh megabyte per batch costs page faults, zeroing and,
/// when the batch outgrows it, a copy.
///
/// A new batch gets a free full-size buffer (`batch_bytes` capacity) whenever the list has
/// one, whatever size it is expected to reach: the list only ever holds buffers that full
/// batches needed, so this pins no more memory than the workload's peak, and a partition that
/// just sealed a small batch (a lingering one) may well fill the next. Without a free one,
/// a batch expected at half of `batch_bytes` or more gets a fresh full-size buffer and a
/// smaller one a fresh buffer of its expected size, so partitions whose batches linger out
/// small do not each pin a full-size buffer.
pub struct BatchBuffers {
    free: Vec<BytesMut>,
    free_max: usize,
    batch_bytes: usize,
}

impl BatchBuffers {
    /// An empty list of buffers for batches of up to `batch_bytes`, keeping at most
    /// `free_max` of them (capped at [`BATCH_BUFFERS_FREE_MAX`]). Answers free buffers in
    /// bursts (a response can carry several batches, and responses queue up while the
    /// producer generates), so a producer allowed to buffer `n` full batches wants about `n`.
    pub fn new(batch_bytes: usize, free_max: usize) -> BatchBuffers {
        let free_max = free_max.min(BATCH_BUFFERS_FREE_MAX);
        BatchBuffers {
            free: Vec::with_capacity(free_max),
            free_max,
            batch_bytes,
        }
    }

    /// Takes back a finished batch's buffer, if nothing else holds it (a clone still queued
    /// for the socket, say) and it is a full-size one; otherwise just drops `batch`.
    pub fn recycle(&mut self, batch: Bytes) {
        if self.free.len() >= self.free_max {
            return;
        }
        if let Ok(mut buf) = batch.try_into_mut() {
            buf.clear();
            if buf.capacity() >= self.batch_bytes {
                self.free.push(buf);
            }
        }
    }

    /// Fills the list with full-size buffers whose pages are mapped (written once).
    pub fn prefault(&mut self) {
        while self.free.len() < self.free_max {
            // Not `BytesMut::zeroed`: calloc would hand out untouched zero pages.
            let mut buf = BytesMut::with_capacity(self.batch_bytes);
            buf.resize(self.batch_bytes, 1);
            std::hint::black_box(&buf[..]);
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Free buffers on the list.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// An empty buffer with at least `capacity_bytes` of room.
    fn take(&mut self, capacity_bytes: usize) -> BytesMut {
        if let Some(buf) = self.free.pop() {
            return buf;
        }
        if capacity_bytes.saturating_mul(2) < self.batch_bytes {
            return BytesMut::with_capacity(capacity_bytes);
        }
        BytesMut::with_capacity(self.batch_bytes.max(capacity_bytes))
    }
}

/// Accumulates records of one partition into one v2 batch.
pub struct BatchBuilder {
    /// Header placeholder followed by the uncompressed records.
    buf: BytesMut,
    /// Capacity reserved for the next batch: the last batch's size plus a quarter, or half
    /// the previous estimate if that is more (a partition whose batches alternate between
    /// full and lingering ones, as when the producer waits for buffer space, would otherwise
    /// regrow every full one from a small buffer), within [`BATCH_CAPACITY_MIN`,
    /// `capacity_max`]; so a batch is normally one allocation (none per record) without
    /// reserving `--batch-bytes` for partitions whose batches keep lingering out small.
    capacity_bytes: usize,
    capacity_max: usize,
    record_count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        let mut builder = BatchBuilder {
            buf: BytesMut::new(),
            capacity_bytes: bytes.clamp(BATCH_HEADER_BYTES, BATCH_CAPACITY_MIN),
            capacity_max: bytes.max(BATCH_HEADER_BYTES),
            record_count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
        };
        builder.reset();
        builder
    }

    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Bytes of the batch so far, uncompressed, header included.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The encoded size of a record with this key and value (length prefix included), for
    /// deciding whether it still fits a batch before appending it.
    pub fn record_size(&self, key_bytes: Option<usize>, value_bytes: usize) -> usize {
        let body = self.record_body_size(0, key_bytes, value_bytes);
        varint_bytes(i64::from(body as i32)) + body
    }

    /// Appends one record whose value is `value_prefix ++ value_fill`.
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value_prefix: &[u8],
        value_fill: &[u8],
    ) {
        if self.record_count == 0 {
            self.base_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        let value_bytes = value_prefix.len() + value_fill.len();
        let body = self.record_body_size(timestamp_delta, key.map(<[u8]>::len), value_bytes);
        let buf = &mut self.buf;
        put_varint(buf, i64::from(body as i32));
        buf.put_u8(0); // record attributes
        put_varint(buf, timestamp_delta);
        put_varint(buf, i64::from(self.record_count));
        match key {
            Some(key) => {
                put_varint(buf, i64::from(key.len() as i32));
                buf.put_slice(key);
            }
            None => put_varint(buf, -1),
        }
        put_varint(buf, i64::from(value_bytes as i32));
        buf.put_slice(value_prefix);
        buf.put_slice(value_fill);
        put_varint(buf, 0); // header count
        self.record_count += 1;
    }

    /// Finishes the batch (compressing the records if asked) and starts a new empty one in a
    /// fresh buffer. See [`BatchBuilder::seal_reusing`] to reuse buffers.
    pub fn seal(&mut self, compression: Compression, stamp: ProducerStamp) -> Result<Bytes> {
        self.seal_reusing(
            compression,
            stamp,
            &mut BatchBuffers::new(self.capacity_max, 0),
        )
    }

    /// Finishes the batch (compressing the records if asked) and starts a new empty one in a
    /// buffer from `buffers`. Give the returned batch back with [`BatchBuffers::recycle`]
    /// once it is answered.
    pub fn seal_reusing(
        &mut self,
        compression: Compression,
        stamp: ProducerStamp,
        buffers: &mut BatchBuffers,
    ) -> Result<Bytes> {
        assert!(self.record_count > 0, "sealing an empty batch");
        let used = self.buf.len();
        self.capacity_bytes = (used + used / 4)
            .max(self.capacity_bytes / 2)
            .clamp(BATCH_CAPACITY_MIN.min(self.capacity_max), self.capacity_max);
        let mut batch = match compression {
            // The records stay where they are; the builder moves on to another buffer.
            Compression::None => {
                std::mem::replace(&mut self.buf, buffers.take(self.capacity_bytes))
            }
            // The records are copied out compressed; the builder keeps its buffer.
            _ => {
                let mut out = BytesMut::with_capacity(self.buf.len() / 2 + BATCH_HEADER_BYTES);
                out.put_slice(&self.buf[..BATCH_HEADER_BYTES]);
                compress_into(&mut out, &self.buf[BATCH_HEADER_BYTES..], compression)?;
                self.buf.clear();
                out
            }
        };
        self.write_header(&mut batch, compression, stamp);
        self.reset();
        Ok(batch.freeze())
    }

    fn write_header(&self, batch: &mut BytesMut, compression: Compression, stamp: ProducerStamp) {
        let batch_length = (batch.len() - 12) as i32;
        let header = &mut batch[..BATCH_HEADER_BYTES];
        header[..8].copy_from_slice(&0i64.to_be_bytes());
        header[OFFSET_BATCH_LENGTH..OFFSET_BATCH_LENGTH + 4]
            .copy_from_slice(&batch_length.to_be_bytes());
        header[OFFSET_PARTITION_LEADER_EPOCH..OFFSET_PARTITION_LEADER_EPOCH + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        header[OFFSET_MAGIC] = MAGIC_V2;
        let mut attributes = compression as i16;
        if stamp.transactional {
            attributes |= ATTRIBUTE_TRANSACTIONAL;
        }
        header[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        header[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(self.record_count - 1).to_be_bytes());
        header[OFFSET_BASE_TIMESTAMP..OFFSET_BASE_TIMESTAMP + 8]
            .copy_from_slice(&self.base_timestamp_ms.to_be_bytes());
        header[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8]
            .copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        header[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8]
            .copy_from_slice(&stamp.producer_id.to_be_bytes());
        header[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2]
            .copy_from_slice(&stamp.producer_epoch.to_be_bytes());
        header[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4]
            .copy_from_slice(&stamp.base_sequence.to_be_bytes());
        header[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4]
            .copy_from_slice(&self.record_count.to_be_bytes());
        let crc = crc32c(&batch[OFFSET_ATTRIBUTES..]);
        batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }

    fn reset(&mut self) {
        self.buf.clear();
        // Normally a no-op: a buffer from `BatchBuffers::take` or the one kept after
        // compressing has the room already.
        self.buf.reserve(self.capacity_bytes);
        self.buf.put_bytes(0, BATCH_HEADER_BYTES);
        self.record_count = 0;
        self.base_timestamp_ms = 0;
        self.max_timestamp_ms = 0;
    }

    fn record_body_size(
        &self,
        timestamp_delta: i64,
        key_bytes: Option<usize>,
        value_bytes: usize,
    ) -> usize {
        let key = match key_bytes {
            Some(n) => varint_bytes(i64::from(n as i32)) + n,
            None => 1,
        };
        1 + varint_bytes(timestamp_delta)
            + varint_bytes(i64::from(self.record_count))
            + key
            + varint_bytes(i64::from(value_bytes as i32))
            + value_bytes
            + 1
    }
}

/// Rewrites a sealed batch's producer id, epoch and base sequence (the transactional
/// attribute stays) and its CRC: a transaction version 2 producer's batches sealed before an
/// EndTxn went out, with the epoch and sequences that EndTxn ended. In place when nothing else
/// holds `batch` (the usual case: it was never sent), else in a copy.
pub fn restamp(batch: Bytes, stamp: ProducerStamp) -> Bytes {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "restamping a sealed batch"
    );
    let mut batch = batch
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    batch[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8]
        .copy_from_slice(&stamp.producer_id.to_be_bytes());
    batch[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2]
        .copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    batch[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4]
        .copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c(&batch[OFFSET_ATTRIBUTES..]);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// A sealed batch's record count (from its header).
pub fn record_count(batch: &[u8]) -> i32 {
    i32::from_be_bytes(
        batch[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4]
            .try_into()
            .expect("4 bytes"),
    )
}

/// One parsed batch header and where its records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub compression_code: i16,
    /// Attribute bit 4: written by a transactional producer.
    pub transactional: bool,
    pub control: bool,
}

impl BatchInfo {
    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta) + 1
    }
}

/// Walks the complete batches in a Fetch `records` blob, calling `on_value` with each
/// record's offset and value (after decompression). A partial batch at the end (the broker may cut one
/// at max_bytes) is ignored. Returns the info of each complete batch seen.
pub fn for_each_value(
    records: &Bytes,
    mut on_batch: impl FnMut(&BatchInfo),
    mut on_value: impl FnMut(i64, &[u8]),
) -> Result<()> {
    let mut at = 0usize;
    while records.len() - at >= BATCH_HEADER_BYTES {
        let header = &records[at..];
        let batch_length = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        if batch_length < (BATCH_HEADER_BYTES - 12) as i32 {
            bail!("batch length {batch_length} too small at byte {at}");
        }
        let total = 12 + batch_length as usize;
        if records.len() - at < total {
            break; // partial batch
        }
        if header[OFFSET_MAGIC] != MAGIC_V2 {
            bail!("batch magic {} is not 2", header[OFFSET_MAGIC]);
        }
        let crc_stored = u32::from_be_bytes(header[OFFSET_CRC..OFFSET_CRC + 4].try_into()?);
        let crc = crc32c(&records[at + OFFSET_ATTRIBUTES..at + total]);
        if crc != crc_stored {
            bail!("batch CRC mismatch at byte {at}: stored {crc_stored:#x}, computed {crc:#x}");
        }
        let attributes =
            i16::from_be_bytes(header[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].try_into()?);
        let info = BatchInfo {
            base_offset: i64::from_be_bytes(header[..8].try_into()?),
            last_offset_delta: i32::from_be_bytes(
                header[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4].try_into()?,
            ),
            record_count: i32::from_be_bytes(
                header[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4].try_into()?,
            ),
            compression_code: attributes & ATTRIBUTE_COMPRESSION_MASK,
            transactional: attributes & ATTRIBUTE_TRANSACTIONAL != 0,
            control: attributes & ATTRIBUTE_CONTROL != 0,
        };
        on_batch(&info);
        if !info.control {
            let body = records.slice(at + BATCH_HEADER_BYTES..at + total);
            let body = decompress(body, info.compression_code)?;
            parse_record_values(&body, info.base_offset, info.record_count, &mut on_value)?;
        }
        at += total;
    }
    Ok(())
}

fn parse_record_values(
    mut body: &[u8],
    base_offset: i64,
    count: i32,
    on_value: &mut impl FnMut(i64, &[u8]),
) -> Result<()> {
    for _ in 0..count {
        let length = get_varint32(&mut body)? as usize;
        if body.len() < length {
            bail!("record length {length} exceeds batch");
        }
        let mut record = &body[..length];
        body = &body[length..];
        record.advance(1); // attributes
        get_varint(&mut record)?; // timestamp delta
        let offset = base_offset + i64::from(get_varint32(&mut record)?);
        let key_len = get_varint32(&mut record)?;
        if key_len > 0 {
            if record.len() < key_len as usize {
                bail!("key exceeds record");
            }
            record.advance(key_len as usize);
        }
        let value_len = get_varint32(&mut record)?;
        if value_len > 0 {
            if record.len() < value_len as usize {
                bail!("value exceeds record");
            }
            on_value(offset, &record[..value_len as usize]);
        } else {
            on_value(offset, &[]);
        }
    }
    Ok(())
}

fn compress_into(out: &mut BytesMut, records: &[u8], compression: Compression) -> Result<()> {
    let fill = |tmp: &mut BytesMut| -> Result<()> {
        tmp.put_slice(records);
        Ok(())
    };
    match compression {
        Compression::None => out.put_slice(records),
        Compression::Gzip => Gzip::compress(out, fill)?,
        Compression::Snappy => Snappy::compress(out, fill)?,
        Compression::Lz4 => Lz4::compress(out, fill)?,
        Compression::Zstd => Zstd::compress(out, fill)?,
    }
    Ok(())
}

fn decompress(mut body: Bytes, code: i16) -> Result<Bytes> {
    let take = |b: &mut Bytes| -> Result<Bytes> { Ok(b.split_to(b.len())) };
    Ok(match code {
        0 => body,
        1 => Gzip::decompress(&mut body, take)?,
        2 => Snappy::decompress(&mut body, take)?,
        3 => Lz4::decompress(&mut body, take)?,
        4 => Zstd::decompress(&mut body, take)?,
        other => bail!("unknown compression code {other}"),
    })
}

/// CRC32C (Castagnoli) of `bytes`, with the widest carry-less multiply the CPU has.
fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// A zigzag varint that must fit an `i32` (Kafka's `varint`, as record fields use).
fn get_varint32(buf: &mut &[u8]) -> Result<i32> {
    let value = get_varint(buf)?;
    i32::try_from(value).map_err(|_| anyhow::anyhow!("varint {value} exceeds an i32"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(compression: Compression, stamp: ProducerStamp) -> Bytes {
        let mut builder = BatchBuilder::with_capacity(1024);
        builder.append(1_000, Some(b"key-1"), b"prefix", b"value one");
        builder.append(1_250, None, b"", &[7u8; 300]);
        builder.append(1_100, Some(b""), b"x", b"");
        let expected = builder.size_bytes();
        let batch = builder.seal(compression, stamp).unwrap();
        if compression == Compression::None {
            assert_eq!(batch.len(), expected);
        }
        assert!(builder.is_empty());
        batch
    }

    #[test]
    fn kafka_protocol_decodes_our_batches() {
        let stamp = ProducerStamp {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 17,
            transactional: false,
        };
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut batch = build(compression, stamp);
            let set = RecordBatchDecoder::decode(&mut batch).unwrap();
            assert_eq!(set.compression, compression);
            let records = &set.records;
            assert_eq!(records.len(), 3, "{compression:?}");
            assert_eq!(records[0].key.as_deref(), Some(&b"key-1"[..]));
            assert_eq!(records[0].value.as_deref(), Some(&b"prefixvalue one"[..]));
            assert_eq!(records[0].timestamp, 1_000);
            assert_eq!(records[1].key, None);
            assert_eq!(records[1].value.as_deref(), Some(&[7u8; 300][..]));
            assert_eq!(records[1].timestamp, 1_250);
            assert_eq!(records[1].offset, 1);
            assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
            assert_eq!(records[0].producer_id, 42);
            assert_eq!(records[0].producer_epoch, 3);
            assert_eq!(records[0].sequence, 17);
            assert_eq!(records[2].sequence, 19);
        }
    }

    #[test]
    fn a_restamped_batch_is_the_batch_sealed_with_the_new_stamp() {
        let old = ProducerStamp {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 100,
            transactional: true,
        };
        let new = ProducerStamp {
            producer_id: 8,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: true,
        };
        for compression in [Compression::None, Compression::Lz4] {
            let batch = build(compression, old);
            assert_eq!(record_count(&batch), 3);
            // Held elsewhere too (copied) and held only here (in place): the same bytes.
            let copy = restamp(batch.clone(), new);
            assert_eq!(copy, build(compression, new), "{compression:?}");
            assert_eq!(restamp(batch, new), copy);
            let mut decoded = copy.clone();
            let set = RecordBatchDecoder::decode(&mut decoded).unwrap();
            assert_eq!(set.records[2].producer_id, 8);
            assert_eq!(set.records[2].sequence, 2);
            assert!(set.records[0].transactional);
            for_each_value(&copy, |_| {}, |_, _| {}).expect("a valid CRC");
        }
    }

    #[test]
    fn transactional_batches_carry_bit_4_and_nothing_else_changes() {
        let stamp = ProducerStamp {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 100,
            transactional: true,
        };
        for compression in [Compression::None, Compression::Zstd] {
            let plain = build(
                compression,
                ProducerStamp {
                    transactional: false,
                    ..stamp
                },
            );
            let mut batch = build(compression, stamp);
            let attributes = |b: &Bytes| {
                i16::from_be_bytes(
                    b[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2]
                        .try_into()
                        .unwrap(),
                )
            };
            assert_eq!(attributes(&batch), compression as i16 | 0x10);
            assert_eq!(attributes(&plain), compression as i16);
            // Only the attributes and the CRC over them differ.
            let differing: Vec<usize> =
                (0..batch.len()).filter(|&i| batch[i] != plain[i]).collect();
            assert!(
                differing
                    .iter()
                    .all(|&i| (OFFSET_CRC..OFFSET_ATTRIBUTES + 2).contains(&i)),
                "{differing:?}"
            );
            let set = RecordBatchDecoder::decode(&mut batch).unwrap();
            assert!(set.records.iter().all(|r| r.transactional && !r.control));
            assert_eq!(set.records[0].producer_id, 7);
            assert_eq!(set.records[2].sequence, 102);
            // Our own parser reads it back (and would skip it only if it were a control batch).
            let mut values = 0;
            for_each_value(
                &build(compression, stamp),
                |info| assert!(info.transactional && !info.control),
                |_, _| values += 1,
            )
            .unwrap();
            assert_eq!(values, 3);
        }
    }

    #[test]
    fn our_parser_reads_batches_and_skips_a_partial_tail() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let one = build(compression, ProducerStamp::NONE);
            let mut blob = BytesMut::new();
            blob.put_slice(&one);
            blob.put_slice(&one);
            blob.put_slice(&one[..one.len() - 5]);
            let blob = blob.freeze();
            let mut values = Vec::new();
            let mut batches = 0;
            let mut offsets = Vec::new();
            for_each_value(
                &blob,
                |_| batches += 1,
                |o, v| {
                    offsets.push(o);
                    values.push(v.len())
                },
            )
            .unwrap();
            assert_eq!(offsets, vec![0, 1, 2, 0, 1, 2]);
            assert_eq!(batches, 2);
            assert_eq!(values, vec![15, 300, 1, 15, 300, 1]);
        }
    }

    #[test]
    fn parser_rejects_a_corrupt_batch() {
        let one = build(Compression::None, ProducerStamp::NONE);
        let mut bad = BytesMut::from(&one[..]);
        let last = bad.len() - 3;
        bad[last] ^= 0xff;
        let error = for_each_value(&bad.freeze(), |_| {}, |_, _| {}).unwrap_err();
        assert!(error.to_string().contains("CRC"), "{error}");
    }

    #[test]
    fn record_size_matches_what_append_writes() {
        let mut builder = BatchBuilder::with_capacity(64);
        for (key, value) in [(Some(5usize), 100usize), (None, 0), (Some(0), 20_000)] {
            let before = builder.size_bytes();
            let predicted = builder.record_size(key, value);
            let key_bytes = vec![b'k'; key.unwrap_or(0)];
            let value_bytes = vec![b'v'; value];
            builder.append(0, key.map(|_| &key_bytes[..]), &value_bytes, b"");
            assert_eq!(builder.size_bytes() - before, predicted);
        }
    }

    #[test]
    fn full_size_batch_buffers_are_reused_once_nothing_else_holds_them() {
        let mut buffers = BatchBuffers::new(4096, 4);
        let mut builder = BatchBuilder::with_capacity(4096);
        let seal_full = |builder: &mut BatchBuilder, buffers: &mut BatchBuffers| {
            while builder.size_bytes() + builder.record_size(None, 500) <= 4096 {
                builder.append(0, None, b"", &[1u8; 500]);
            }
            builder
                .seal_reusing(Compression::None, ProducerStamp::NONE, buffers)
                .unwrap()
        };
        let first = seal_full(&mut builder, &mut buffers);
        let held = first.clone();
        buffers.recycle(first);
        assert_eq!(buffers.free_count(), 0, "a clone still holds the batch");
        let second = seal_full(&mut builder, &mut buffers);
        let second_at = second.as_ptr();
        buffers.recycle(second);
        assert_eq!(buffers.free_count(), 1);
        // The builder took its current buffer at the last seal; the one after is `second`'s.
        let _third = seal_full(&mut builder, &mut buffers);
        assert_eq!(buffers.free_count(), 0);
        let mut fourth = seal_full(&mut builder, &mut buffers);
        assert_eq!(fourth.as_ptr(), second_at);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut fourth).unwrap();
        assert_eq!(set.records.len(), 7);
        assert_eq!(
            held.len(),
            BATCH_HEADER_BYTES + 7 * builder.record_size(None, 500)
        );
    }

    #[test]
    fn prefault_fills_the_list_with_full_size_buffers_the_next_batches_take() {
        let mut buffers = BatchBuffers::new(64 * 1024, 3);
        buffers.prefault();
        assert_eq!(buffers.free_count(), 3);
        let mut builder = BatchBuilder::with_capacity(64 * 1024);
        builder.append(0, None, b"", b"first");
        let first = builder
            .seal_reusing(Compression::None, ProducerStamp::NONE, &mut buffers)
            .unwrap();
        // The builder moved on to a prefaulted buffer; the sealed batch is intact.
        assert_eq!(buffers.free_count(), 2);
        assert_eq!(builder.buf.capacity(), 64 * 1024);
        let mut first = first;
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut first).unwrap();
        assert_eq!(set.records.len(), 1);
    }

    #[test]
    fn small_batches_get_free_buffers_or_fresh_ones_of_their_own_size() {
        let mut buffers = BatchBuffers::new(1 << 20, 4);
        let mut builder = BatchBuilder::with_capacity(1 << 20);
        builder.append(0, None, b"", b"small");
        let small = builder
            .seal_reusing(Compression::None, ProducerStamp::NONE, &mut buffers)
            .unwrap();
        buffers.recycle(small);
        assert_eq!(buffers.free_count(), 0, "a small buffer is not kept");

        let full = BytesMut::with_capacity(1 << 20).freeze();
        buffers.recycle(full);
        assert_eq!(buffers.free_count(), 1);
        builder.append(0, None, b"", b"small again");
        builder
            .seal_reusing(Compression::None, ProducerStamp::NONE, &mut buffers)
            .unwrap();
        assert_eq!(
            buffers.free_count(),
            0,
            "a free buffer goes to the next batch"
        );
    }

    #[test]
    fn varints_round_trip() {
        for n in [0i32, 1, -1, 63, -64, 64, 300, i32::MAX, i32::MIN] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, i64::from(n));
            assert_eq!(buf.len(), varint_bytes(i64::from(n)));
            let mut slice = &buf[..];
            assert_eq!(get_varint32(&mut slice).unwrap(), n);
        }
        let mut too_big = BytesMut::new();
        put_varint(&mut too_big, i64::from(i32::MAX) + 1);
        assert!(get_varint32(&mut &too_big[..]).is_err());
    }
}
