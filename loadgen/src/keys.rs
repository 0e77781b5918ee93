//! Record keys and sizes: uniform or Zipf-distributed keys, Kafka's murmur2 partitioner,
//! fixed or uniformly distributed value sizes.
//!
//! Keys are `key-<n>` written into a fixed stack buffer: no allocation per record.

use rand::Rng;
use rand::rngs::SmallRng;

use crate::args::KeySpec;

/// Longest key text: "key-" plus the decimal digits of a u64.
pub const KEY_BYTES_MAX: usize = 4 + 20;

/// Draws key indexes from the configured distribution.
pub struct KeyGenerator {
    spec: KeySpec,
    /// Zipf only: cumulative probabilities of keys 0..n (ascending, last is 1.0).
    zipf_cdf: Vec<f64>,
}

impl KeyGenerator {
    pub fn new(spec: KeySpec) -> KeyGenerator {
        let zipf_cdf = match spec {
            KeySpec::Zipf { keys, exponent } => zipf_cdf(keys, exponent),
            _ => Vec::new(),
        };
        KeyGenerator { spec, zipf_cdf }
    }

    pub fn is_keyed(&self) -> bool {
        self.spec != KeySpec::None
    }

    /// The next key index, or None when records are unkeyed.
    pub fn next_index(&self, rng: &mut SmallRng) -> Option<u64> {
        match self.spec {
            KeySpec::None => None,
            KeySpec::Uniform { keys } => Some(rng.random_range(0..keys)),
            KeySpec::Zipf { .. } => {
                let u: f64 = rng.random();
                let index = self.zipf_cdf.partition_point(|&c| c < u);
                Some(index.min(self.zipf_cdf.len() - 1) as u64)
            }
        }
    }
}

fn zipf_cdf(keys: u64, exponent: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(keys as usize);
    let mut sum = 0.0;
    for rank in 1..=keys {
        sum += 1.0 / (rank as f64).powf(exponent);
        cdf.push(sum);
    }
    for c in &mut cdf {
        *c /= sum;
    }
    cdf
}

/// Writes `key-<index>` into `buf`, returning the used prefix.
pub fn format_key(index: u64, buf: &mut [u8; KEY_BYTES_MAX]) -> &[u8] {
    buf[..4].copy_from_slice(b"key-");
    let mut digits = [0u8; 20];
    let mut n = index;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[4 + i] = digits[len - 1 - i];
    }
    &buf[..4 + len]
}

/// Kafka's default partitioner for keyed records: murmur2, made positive, modulo partitions.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    assert!(partitions > 0);
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions
}

/// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Value sizes: fixed, or uniform in [min, max].
#[derive(Debug, Clone, Copy)]
pub struct SizeDistribution {
    pub min: u32,
    pub max: u32,
}

impl SizeDistribution {
    pub fn next(&self, rng: &mut SmallRng) -> u32 {
        if self.min == self.max {
            self.min
        } else {
            rng.random_range(self.min..=self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 3] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                expected,
                "{:?}",
                std::str::from_utf8(input)
            );
        }
    }

    #[test]
    fn keys_format_without_allocation() {
        let mut buf = [0u8; KEY_BYTES_MAX];
        assert_eq!(format_key(0, &mut buf), b"key-0");
        assert_eq!(format_key(1234, &mut buf), b"key-1234");
        assert_eq!(format_key(u64::MAX, &mut buf), b"key-18446744073709551615");
    }

    #[test]
    fn zipf_favours_low_ranks_and_uniform_does_not() {
        let mut rng = SmallRng::seed_from_u64(7);
        let zipf = KeyGenerator::new(KeySpec::Zipf {
            keys: 1000,
            exponent: 1.2,
        });
        let uniform = KeyGenerator::new(KeySpec::Uniform { keys: 1000 });
        let (mut zipf_top, mut uniform_top) = (0, 0);
        for _ in 0..20_000 {
            let z = zipf.next_index(&mut rng).unwrap();
            let u = uniform.next_index(&mut rng).unwrap();
            assert!(z < 1000 && u < 1000);
            zipf_top += usize::from(z < 10);
            uniform_top += usize::from(u < 10);
        }
        // Zipf(1.2) puts well over a third of the mass on the top 1%; uniform about 1%.
        assert!(zipf_top > 20_000 / 3, "{zipf_top}");
        assert!(uniform_top < 20_000 / 20, "{uniform_top}");
        assert_eq!(KeyGenerator::new(KeySpec::None).next_index(&mut rng), None);
    }
}
