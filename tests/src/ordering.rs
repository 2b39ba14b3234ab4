//! Checks for mirrors that went through a failure: every source record arrives,
//! first copies in source order, and re-sent records (duplicates) are counted.

use std::collections::HashMap;

use crate::kafka::{ConsumedRecord, TopicRecords};

/// What a failover check found in one topic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub records: usize,
    pub duplicates: usize,
}

type Content<'a> = (
    &'a Option<Vec<u8>>,
    &'a Option<Vec<u8>>,
    &'a [crate::kafka::RecordHeader],
    i64,
);

fn content(record: &ConsumedRecord) -> Content<'_> {
    (
        &record.key,
        &record.value,
        &record.headers,
        record.timestamp,
    )
}

/// Asserts that, per partition, the destination holds every source record, that
/// the first copy of each comes in source order, and that any other copy repeats a
/// record that had already arrived (a resend from a checkpoint, never a record
/// out of place). Records must be unique in the source. Returns the counts.
pub fn assert_complete_in_order(source: &TopicRecords, dest: &TopicRecords) -> Delivery {
    let mut delivery = Delivery::default();
    for (partition, source_records) in source {
        let empty = Vec::new();
        let dest_records = dest.get(partition).unwrap_or(&empty);
        let position: HashMap<Content<'_>, usize> = source_records
            .iter()
            .enumerate()
            .map(|(index, record)| (content(record), index))
            .collect();
        assert_eq!(
            position.len(),
            source_records.len(),
            "partition {partition}: source records are not unique"
        );
        let mut next = 0;
        for (dest_index, record) in dest_records.iter().enumerate() {
            match position.get(&content(record)) {
                Some(&index) if index == next => next += 1,
                Some(&index) if index < next => delivery.duplicates += 1,
                Some(&index) => panic!(
                    "partition {partition}: destination record #{dest_index} is source record #{index}, \
                     but source record #{next} has not arrived yet (order broken)\n  {record:?}"
                ),
                None => panic!(
                    "partition {partition}: destination record #{dest_index} is not in the source\n  {record:?}"
                ),
            }
        }
        assert_eq!(
            next,
            source_records.len(),
            "partition {partition}: only {next} of {} source records arrived (first missing: {:?})",
            source_records.len(),
            source_records.get(next)
        );
        delivery.records += source_records.len();
    }
    delivery
}
