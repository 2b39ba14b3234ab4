//! Gathering records into batches.

use super::*;

struct Record(i64, Vec<u8>);

impl SourceRecord for Record {
    fn topic(&self) -> &str {
        "orders"
    }
    fn partition(&self) -> i32 {
        0
    }
    fn offset(&self) -> i64 {
        self.0
    }
    fn pack_into(&self, packed: &mut PackedBuilder) -> Result<(), PushError> {
        packed.push(
            self.0,
            None,
            Some(&self.1),
            kmirror_proto::packed::NO_HEADERS,
            None,
        )
    }
}

#[test]
fn a_small_batch_holds_and_reserves_a_small_buffer() {
    let record = Record(7, vec![b'v'; 100]);
    let mut gathering = PartitionGathering::new("orders".to_string(), 0, 1);
    gathering.expect(100 + PACKED_RECORD_OVERHEAD);
    gathering.add(&record);
    let batch = &gathering.batches[0];
    assert!(
        batch.footprint() <= MIN_BATCH_BYTES,
        "{}",
        batch.footprint()
    );
    assert!(batch.footprint() >= batch.packed.encoded_len());
}
