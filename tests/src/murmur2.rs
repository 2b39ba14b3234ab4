//! Kafka's default partitioner for keyed records: `murmur2(key) & 0x7fffffff % n`,
//! as in the Java client's `Utils.murmur2` and `BuiltInPartitioner`. The writer
//! must put a keyed record where a Java producer would when partition counts differ,
//! and the tests check that independently with this copy.

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`), returned as Java's signed int.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const MULTIPLIER: u32 = 0x5bd1_e995;
    const SHIFT: u32 = 24;

    // Java hashes the length as an int; keys are far below 2^31 bytes.
    let mut hash = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        word = word.wrapping_mul(MULTIPLIER);
        word ^= word >> SHIFT;
        word = word.wrapping_mul(MULTIPLIER);
        hash = hash.wrapping_mul(MULTIPLIER);
        hash ^= word;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(MULTIPLIER);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(MULTIPLIER);
    hash ^= hash >> 15;
    hash as i32
}

/// The partition Kafka's default partitioner picks for a non-null key.
pub fn default_partition(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafkas_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn default_partition_is_positive_and_in_range() {
        for index in 0..10_000 {
            let key = format!("key-{index}");
            let partition = default_partition(key.as_bytes(), 3);
            assert!((0..3).contains(&partition));
            assert_eq!(
                partition,
                (murmur2(key.as_bytes()) & 0x7fff_ffff) % 3,
                "{key}"
            );
        }
        assert_eq!(default_partition(b"", 7), (murmur2(b"") & 0x7fff_ffff) % 7);
    }
}
