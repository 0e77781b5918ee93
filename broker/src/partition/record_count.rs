//! Counting the records of a compressed producer batch, as Kafka's LogValidator does on the
//! leader (it decompresses every compressed batch and iterates its records).
//!
//! Owns: streaming decompression of the four codecs Kafka v2 batches use (gzip, snappy in
//! xerial framing or raw, lz4 frame, zstd) and a walk over the records' varint length prefixes
//! in the inflated stream. Nothing is decoded beyond the prefixes, nothing is allocated per
//! record, and the inflated bytes pass through one fixed buffer (snappy blocks through one
//! reused block buffer).
//! Does not own: uncompressed batches (`engine::batch::count_records` walks those in place),
//! or rewriting batches (recompression is issue 22).
//! Invariants: at most `INFLATED_BYTES_MAX` bytes are inflated per batch, so a small batch
//! that inflates without bound (a decompression bomb) costs bounded CPU and no memory.

use std::io::Read;

use engine::limits::RECORD_BODY_BYTES_MIN;

/// Inflated bytes one batch may expand to before it is refused. Kafka sets no such bound; a
/// 1 MiB batch of ordinary data inflates 2-10x, highly repetitive data up to ~250x.
pub const INFLATED_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Bytes read from a streaming decoder at a time.
const CHUNK_BYTES: usize = 16 * 1024;
/// A zigzag varint32 takes at most 5 bytes.
const VARINT32_BYTES_MAX: u8 = 5;
/// xerial snappy-java's stream header (magic, version 1, compatible version 1).
const SNAPPY_XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// The magic part alone: other versions of the header are framed the same way.
const SNAPPY_XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";

const _: () = assert!(CHUNK_BYTES as u64 <= INFLATED_BYTES_MAX);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("the compressed records do not decompress: {0}")]
    Decompress(String),
    #[error("the records inflate beyond the bound of {INFLATED_BYTES_MAX} bytes")]
    TooLarge,
    /// Record `record` has a malformed or too small length prefix, or the stream ends inside
    /// it (Kafka: "Incorrect declared batch size, premature EOF reached").
    #[error("record {record} at inflated byte {position} has a bad length or is cut short")]
    BadRecordLength { record: u32, position: u64 },
}

/// The number of records in the compressed records section `payload` (the batch bytes after
/// its 61-byte header) of codec `codec` (the batch attributes' low 3 bits, 1..=4).
pub fn count_compressed_records(codec: i16, payload: &[u8]) -> Result<u32, CountError> {
    count_bounded(codec, payload, INFLATED_BYTES_MAX)
}

fn count_bounded(codec: i16, payload: &[u8], bound: u64) -> Result<u32, CountError> {
    let mut counter = Counter {
        bound,
        ..Counter::default()
    };
    match codec {
        // Several gzip members back to back read as one stream, as Java's GZIPInputStream.
        1 => drain(flate2::read::MultiGzDecoder::new(payload), &mut counter)?,
        2 => snappy(payload, &mut counter)?,
        3 => {
            let decoder = lz4::Decoder::new(payload).map_err(decompress_error)?;
            drain(decoder, &mut counter)?
        }
        4 => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(payload).map_err(decompress_error)?;
            drain(decoder, &mut counter)?
        }
        other => return Err(CountError::UnknownCodec(other)),
    }
    counter.finish()
}

fn decompress_error(e: impl std::fmt::Display) -> CountError {
    CountError::Decompress(e.to_string())
}

/// Reads a streaming decoder to its end through one fixed buffer.
fn drain(mut decoder: impl Read, counter: &mut Counter) -> Result<(), CountError> {
    let mut chunk = [0u8; CHUNK_BYTES];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(decompress_error(e)),
        };
        counter.feed(&chunk[..n])?;
    }
}

/// Kafka's snappy: xerial snappy-java framing (a header, then blocks each prefixed with its
/// compressed length as a big-endian u32), or one raw snappy block without the header (as
/// snappy-java's reader falls back to).
fn snappy(payload: &[u8], counter: &mut Counter) -> Result<(), CountError> {
    let mut block = Vec::new();
    let mut inflate = |compressed: &[u8], counter: &mut Counter| -> Result<(), CountError> {
        let len = snap::raw::decompress_len(compressed).map_err(decompress_error)?;
        if counter.inflated + len as u64 > counter.bound {
            return Err(CountError::TooLarge);
        }
        block.resize(len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(compressed, &mut block)
            .map_err(decompress_error)?;
        counter.feed(&block[..n])
    };
    if !payload.starts_with(SNAPPY_XERIAL_MAGIC) {
        return inflate(payload, counter);
    }
    let mut rest = payload
        .get(SNAPPY_XERIAL_HEADER.len()..)
        .ok_or_else(|| decompress_error("snappy stream header cut short"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| decompress_error("snappy block length cut short"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let compressed = tail
            .get(..len)
            .ok_or_else(|| decompress_error("snappy block cut short"))?;
        inflate(compressed, counter)?;
        rest = &tail[len..];
    }
    Ok(())
}

/// Walks varint length prefixes across chunk boundaries: a prefix, then that many bytes of
/// record body to skip, and so on.
#[derive(Default)]
struct Counter {
    /// Inflated bytes allowed (`INFLATED_BYTES_MAX` but in tests).
    bound: u64,
    records: u32,
    /// Body bytes of the current record still to skip.
    skip: u64,
    /// The varint being read: raw bits so far and how many bytes it took.
    varint: u32,
    varint_bytes: u8,
    /// Inflated bytes seen, and where the current record began.
    inflated: u64,
    record_start: u64,
}

impl Counter {
    fn feed(&mut self, mut chunk: &[u8]) -> Result<(), CountError> {
        self.inflated += chunk.len() as u64;
        if self.inflated > self.bound {
            return Err(CountError::TooLarge);
        }
        let mut position = self.inflated - chunk.len() as u64;
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len() as u64);
                self.skip -= n;
                chunk = &chunk[n as usize..];
                position += n;
                continue;
            }
            if self.varint_bytes == 0 {
                self.record_start = position;
            }
            let b = chunk[0];
            chunk = &chunk[1..];
            position += 1;
            self.varint |= u32::from(b & 0x7f) << (7 * u32::from(self.varint_bytes));
            self.varint_bytes += 1;
            if b & 0x80 != 0 {
                if self.varint_bytes == VARINT32_BYTES_MAX {
                    return Err(self.bad_length());
                }
                continue;
            }
            let length = (self.varint >> 1) as i32 ^ -((self.varint & 1) as i32);
            if length < RECORD_BODY_BYTES_MIN as i32 {
                return Err(self.bad_length());
            }
            self.skip = length as u64;
            self.varint = 0;
            self.varint_bytes = 0;
            self.records += 1;
        }
        Ok(())
    }

    fn finish(&self) -> Result<u32, CountError> {
        if self.skip > 0 || self.varint_bytes > 0 {
            return Err(self.bad_length());
        }
        Ok(self.records)
    }

    fn bad_length(&self) -> CountError {
        CountError::BadRecordLength {
            record: self.records - u32::from(self.skip > 0),
            position: self.record_start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    /// `count` records of `value_bytes`-byte values, encoded as Kafka v2 records are.
    fn records(count: usize, value_bytes: usize) -> Vec<u8> {
        let batch = engine::batch::build_test_batch(count as i32, count * value_bytes, 0, 0, b'x');
        batch[engine::limits::BATCH_HEADER_BYTES..].to_vec()
    }

    fn compress(codec: i16, raw: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        let put = |buf: &mut BytesMut| -> anyhow::Result<()> {
            buf.extend_from_slice(raw);
            Ok(())
        };
        match codec {
            1 => Gzip::compress(&mut out, put),
            2 => Snappy::compress(&mut out, put),
            3 => Lz4::compress(&mut out, put),
            4 => Zstd::compress(&mut out, put),
            _ => unreachable!(),
        }
        .expect("compress");
        out.freeze()
    }

    #[test]
    fn every_codec_counts_the_records_it_holds() {
        for codec in 1..=4 {
            for (count, value_bytes) in [(1, 0), (3, 10), (500, 100), (40, 70_000)] {
                let raw = records(count, value_bytes);
                assert_eq!(
                    engine::batch::count_records(&raw),
                    Ok(count as u32),
                    "the raw records frame"
                );
                let found = count_compressed_records(codec, &compress(codec, &raw));
                assert_eq!(found, Ok(count as u32), "codec {codec}, {count} records");
            }
        }
    }

    /// Whole batches as a Kafka client library encodes them (kafka-protocol's encoder).
    #[test]
    fn client_encoded_batches_count() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<Record> = (0..3)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i,
                    // offset - sequence constant keeps the records in one batch; the first
                    // record's -1 is the batch's base sequence (no producer).
                    sequence: i as i32 - 1,
                    timestamp: 1_700_000_000_000 + i,
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(format!("value {i} ").repeat(20))),
                    headers: Default::default(),
                })
                .collect();
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
            let header = engine::batch::BatchHeader::parse(&buf).expect("header");
            assert_eq!(header.total_bytes(), buf.len() as u64, "one batch");
            assert_eq!(header.compression(), compression as i16);
            let payload = &buf[engine::limits::BATCH_HEADER_BYTES..];
            assert_eq!(
                count_compressed_records(header.compression(), payload),
                Ok(3),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn raw_snappy_without_the_xerial_header_is_read_too() {
        let raw = records(7, 20);
        let block = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("snappy");
        assert_eq!(count_compressed_records(2, &block), Ok(7));
    }

    #[test]
    fn cut_records_and_bad_lengths_are_refused() {
        for codec in 1..=4 {
            let raw = records(3, 10);
            // The last record cut short: its prefix promises more bytes than follow.
            let cut = compress(codec, &raw[..raw.len() - 1]);
            assert!(
                matches!(
                    count_compressed_records(codec, &cut),
                    Err(CountError::BadRecordLength { record: 2, .. })
                ),
                "codec {codec}"
            );
            // A record whose length prefix is below the smallest record.
            let tiny = compress(codec, &[0x02, 0, 0]);
            assert!(matches!(
                count_compressed_records(codec, &tiny),
                Err(CountError::BadRecordLength { record: 0, .. })
            ));
        }
    }

    #[test]
    fn garbage_and_unknown_codecs_are_refused_without_panicking() {
        for codec in 1..=4 {
            for garbage in [&b""[..], b"\x00", b"not compressed at all", &[0xff; 64]] {
                let r = count_compressed_records(codec, garbage);
                assert!(
                    matches!(
                        r,
                        Err(CountError::Decompress(_)) | Err(CountError::BadRecordLength { .. })
                    ) || r == Ok(0),
                    "codec {codec}: {r:?}"
                );
            }
        }
        assert_eq!(
            count_compressed_records(5, b"x"),
            Err(CountError::UnknownCodec(5))
        );
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_bound() {
        // Valid 7-byte records, far more of them than the bound lets through: the walk stops
        // at the bound instead of inflating the rest.
        let bound = 1 << 20;
        let raw = [0x0c, 0, 0, 0, 0, 0, 0].repeat(4 * bound / 7);
        for codec in 1..=4 {
            let bomb = compress(codec, &raw);
            assert_eq!(
                count_bounded(codec, &bomb, bound as u64),
                Err(CountError::TooLarge),
                "codec {codec}"
            );
            assert_eq!(
                count_bounded(codec, &bomb, 8 * bound as u64),
                Ok((4 * bound / 7) as u32)
            );
        }
    }
}
