//! The benchmark's records and the clock they are stamped with.
//!
//! Every record has an 8-byte key drawn from [`DISTINCT_KEYS`] keys, a value whose
//! first half is random and second half zero (so compression finds what real data
//! offers, no more), and one header with an 8-byte value.

use rustix::time::{clock_gettime, ClockId};

/// Distinct keys of every workload.
pub const DISTINCT_KEYS: u64 = 100_000;
/// Header of the load generator: the record's sequence number.
pub const SEQUENCE_HEADER: &str = "seq";
/// Header of the open-loop generator: the intended send time, CLOCK_MONOTONIC ns.
pub const INTENDED_HEADER: &str = "t";
/// Random bytes the value halves are cut from. Far larger than a compression
/// window, so two records never share random bytes a compressor could find.
const RANDOM_POOL_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of record data one record carries (key, value, header name and value):
/// the unit of the benchmark's MB/s and CPU seconds per GB.
pub fn payload_bytes(value_size: usize, header: &str) -> u64 {
    (8 + value_size + header.len() + 8) as u64
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so
/// a time stamped by the generator is comparable with the consumer's reading.
pub fn monotonic_ns() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    u64::try_from(now.tv_sec).expect("the monotonic clock is positive") * 1_000_000_000
        + u64::try_from(now.tv_nsec).expect("nanoseconds are positive")
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    kmirror_tests::now_ms()
}

/// SplitMix64: small, fast and good enough for test data.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }
}

/// Makes keys and values without allocating per record: the value buffer is
/// reused, its random half refilled from the pool at a random place.
pub struct RecordFactory {
    rng: SplitMix64,
    pool: Vec<u8>,
    value: Vec<u8>,
    random_len: usize,
}

impl RecordFactory {
    pub fn new(value_size: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut pool = Vec::with_capacity(RANDOM_POOL_BYTES + 8);
        while pool.len() < RANDOM_POOL_BYTES {
            pool.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        Self {
            rng,
            pool,
            value: vec![0; value_size],
            random_len: value_size / 2,
        }
    }

    pub fn next_key(&mut self) -> [u8; 8] {
        (self.rng.next_u64() % DISTINCT_KEYS).to_be_bytes()
    }

    pub fn next_value(&mut self) -> &[u8] {
        let span = self.pool.len() - self.random_len;
        let start = usize::try_from(self.rng.next_u64() % span as u64).expect("fits usize");
        self.value[..self.random_len].copy_from_slice(&self.pool[start..start + self.random_len]);
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_half_random_half_zero() {
        let mut factory = RecordFactory::new(1024, 7);
        let first = factory.next_value().to_vec();
        let second = factory.next_value().to_vec();
        assert_eq!(first.len(), 1024);
        assert!(first[512..].iter().all(|byte| *byte == 0));
        assert!(first[..512].iter().filter(|byte| **byte == 0).count() < 32);
        assert_ne!(first[..512], second[..512]);
    }

    #[test]
    fn keys_stay_in_the_key_space() {
        let mut factory = RecordFactory::new(16, 1);
        for _ in 0..10_000 {
            assert!(u64::from_be_bytes(factory.next_key()) < DISTINCT_KEYS);
        }
    }
}
