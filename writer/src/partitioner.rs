//! Destination partition choice.
//!
//! When the source and destination topics have the same partition count a record
//! keeps its partition number, so the destination partition is a copy of the source
//! partition. Otherwise a keyed record goes where Kafka's default partitioner (the
//! Java client's murmur2) puts its key, so consumers find keys where they expect them
//! and per-key order holds; a record without a key goes to the source partition
//! number modulo the destination count, which keeps the order of each source
//! partition's keyless records.

/// Kafka's `Utils.murmur2`, bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut hash: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        hash ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        hash ^= tail[0] as u32;
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

/// How a batch's records map to destination partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMapping {
    /// Same partition number as in the source.
    Identity(i32),
    /// By key over this many destination partitions.
    ByKey {
        source_partition: i32,
        dest_partitions: i32,
    },
}

impl PartitionMapping {
    pub fn new(source_partition: i32, source_count: i32, dest_count: i32) -> Self {
        if dest_count <= 0 || source_count == dest_count {
            PartitionMapping::Identity(source_partition)
        } else {
            PartitionMapping::ByKey {
                source_partition,
                dest_partitions: dest_count,
            }
        }
    }

    pub fn partition_for(&self, key: Option<&[u8]>) -> i32 {
        match *self {
            PartitionMapping::Identity(partition) => partition,
            PartitionMapping::ByKey {
                source_partition,
                dest_partitions,
            } => match key {
                Some(key) => (murmur2(key) & 0x7fff_ffff) % dest_partitions,
                None => source_partition.rem_euclid(dest_partitions),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // From Apache Kafka's UtilsTest.testMurmur2.
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
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn matching_counts_keep_the_partition_and_others_hash_the_key() {
        assert_eq!(PartitionMapping::new(5, 8, 8).partition_for(Some(b"k")), 5);
        let by_key = PartitionMapping::new(5, 8, 3);
        let expected = (murmur2(b"foobar") & 0x7fff_ffff) % 3;
        assert_eq!(by_key.partition_for(Some(b"foobar")), expected);
        assert_eq!(by_key.partition_for(None), 2);
    }
}
