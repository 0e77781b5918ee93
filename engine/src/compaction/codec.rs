//! The four codecs of Kafka v2 batches, for the cleaner: inflate a compressed batch's records
//! section to filter it, deflate what stays with the same codec.
//!
//! Owns: the framing Kafka writes: gzip; snappy in snappy-java's xerial framing (read also as
//! one raw block, as snappy-java's reader falls back to); lz4 frames; zstd frames.
//! Invariants: at most `CLEAN_INFLATED_BYTES_MAX` bytes are inflated per batch (a batch
//! beyond it is kept whole, as are batches that do not decompress), so a hostile batch costs
//! bounded memory; a rebuilt batch uses the codec it had.

use std::io::{Read, Write};

/// Inflated bytes one batch may take in the cleaner; larger ones are kept whole.
pub(crate) const CLEAN_INFLATED_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// snappy-java's stream header (magic, version 1, compatible version 1).
const SNAPPY_XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const SNAPPY_XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// snappy-java's default block size.
const SNAPPY_BLOCK_BYTES: usize = 32 * 1024;

/// The records section of a batch of `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd), inflated;
/// `None` if it does not decompress, the codec is unknown or it inflates beyond the bound.
pub(crate) fn inflate(codec: i16, payload: &[u8]) -> Option<Vec<u8>> {
    let bound = CLEAN_INFLATED_BYTES_MAX;
    let mut out = Vec::new();
    let read_all = |r: &mut dyn Read, out: &mut Vec<u8>| -> Option<()> {
        r.take(bound + 1).read_to_end(out).ok()?;
        (out.len() as u64 <= bound).then_some(())
    };
    match codec {
        1 => read_all(&mut flate2::read::MultiGzDecoder::new(payload), &mut out)?,
        2 => snappy_inflate(payload, &mut out)?,
        3 => read_all(&mut lz4::Decoder::new(payload).ok()?, &mut out)?,
        4 => read_all(
            &mut zstd::stream::read::Decoder::with_buffer(payload).ok()?,
            &mut out,
        )?,
        _ => return None,
    }
    Some(out)
}

fn snappy_inflate(payload: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> Option<()> {
        let len = snap::raw::decompress_len(compressed).ok()?;
        if (out.len() + len) as u64 > CLEAN_INFLATED_BYTES_MAX {
            return None;
        }
        let at = out.len();
        out.resize(at + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(compressed, &mut out[at..])
            .ok()?;
        out.truncate(at + n);
        Some(())
    };
    if !payload.starts_with(SNAPPY_XERIAL_MAGIC) {
        return block(payload, out);
    }
    let mut rest = payload.get(SNAPPY_XERIAL_HEADER.len()..)?;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        block(tail.get(..len)?, out)?;
        rest = &tail[len..];
    }
    Some(())
}

/// `plain` compressed with `codec` as Kafka's Java producer frames it.
pub(crate) fn deflate(codec: i16, plain: &[u8]) -> Vec<u8> {
    match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).expect("writing to memory");
            e.finish().expect("writing to memory")
        }
        2 => {
            let mut out = SNAPPY_XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for chunk in plain.chunks(SNAPPY_BLOCK_BYTES) {
                let block = encoder.compress_vec(chunk).expect("snappy block");
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .expect("lz4 encoder");
            e.write_all(plain).expect("writing to memory");
            let (out, result) = e.finish();
            result.expect("lz4 frame");
            out
        }
        4 => zstd::encode_all(plain, 3).expect("zstd in memory"),
        other => unreachable!("codec {other} was inflated, so it is known"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in 1..=4 {
            let packed = deflate(codec, &plain);
            assert!(packed.len() < plain.len(), "codec {codec} compresses");
            assert_eq!(
                inflate(codec, &packed).as_deref(),
                Some(&plain[..]),
                "codec {codec}"
            );
        }
        assert_eq!(inflate(4, b"not zstd"), None);
        assert_eq!(inflate(7, b""), None);
    }
}
