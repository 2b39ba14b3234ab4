//! Records as the tests produce them and read them back, and the comparisons
//! the tests assert with.

use std::collections::BTreeMap;
use std::fmt;

/// A record header: a key and a value that may be null.
pub type RecordHeader = (String, Option<Vec<u8>>);

/// A record to produce. `partition: None` lets the producer's partitioner choose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutRecord {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
    /// CreateTime in milliseconds; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

/// Where the destination cluster put a produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Timestamp type of a consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    NotAvailable,
    CreateTime,
    LogAppendTime,
}

/// A record read back from a topic.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the epoch (-1 when not available).
    pub timestamp: i64,
    /// `None` when the reader cannot tell (kcat's format output).
    pub timestamp_type: Option<TimestampType>,
}

impl ConsumedRecord {
    /// The first field in which two records' contents differ (partition and offset
    /// aside, which differ between clusters), or `None` when they are equal.
    pub fn content_difference(&self, other: &ConsumedRecord) -> Option<String> {
        if self.key != other.key {
            return Some(format!(
                "key {} != {}",
                show_bytes(&self.key),
                show_bytes(&other.key)
            ));
        }
        if self.value != other.value {
            return Some(format!(
                "value {} != {}",
                show_bytes(&self.value),
                show_bytes(&other.value)
            ));
        }
        if self.headers != other.headers {
            return Some(format!(
                "headers {} != {}",
                show_headers(&self.headers),
                show_headers(&other.headers)
            ));
        }
        if self.timestamp != other.timestamp {
            return Some(format!(
                "timestamp {} != {}",
                self.timestamp, other.timestamp
            ));
        }
        if let (Some(this_type), Some(other_type)) = (self.timestamp_type, other.timestamp_type) {
            if this_type != other_type {
                return Some(format!("timestamp type {this_type:?} != {other_type:?}"));
            }
        }
        None
    }

    /// Whether this record carries what `produced` was sent with.
    pub fn matches_produced(&self, produced: &OutRecord) -> Option<String> {
        let expected = ConsumedRecord {
            partition: self.partition,
            offset: self.offset,
            key: produced.key.clone(),
            value: produced.value.clone(),
            headers: produced.headers.clone(),
            timestamp: produced.timestamp.unwrap_or(self.timestamp),
            timestamp_type: produced.timestamp.map(|_| TimestampType::CreateTime),
        };
        self.content_difference(&expected)
    }
}

impl fmt::Debug for ConsumedRecord {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "[p{} o{} key={} value={} headers={} ts={} {:?}]",
            self.partition,
            self.offset,
            show_bytes(&self.key),
            show_bytes(&self.value),
            show_headers(&self.headers),
            self.timestamp,
            self.timestamp_type
        )
    }
}

/// Bytes for failure messages: short text as text, long values cut.
pub fn show_bytes(bytes: &Option<Vec<u8>>) -> String {
    const SHOWN: usize = 64;
    match bytes {
        None => "null".to_string(),
        Some(bytes) => {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
            if bytes.len() > SHOWN {
                format!("{shown:?}... ({} bytes)", bytes.len())
            } else {
                format!("{shown:?}")
            }
        }
    }
}

fn show_headers(headers: &[RecordHeader]) -> String {
    let shown: Vec<String> = headers
        .iter()
        .map(|(key, value)| format!("{key:?}={}", show_bytes(value)))
        .collect();
    format!("{{{}}}", shown.join(", "))
}

/// Records of a topic, per partition, in offset order.
pub type TopicRecords = BTreeMap<i32, Vec<ConsumedRecord>>;

/// Total number of records over all partitions.
pub fn record_count(records: &TopicRecords) -> usize {
    records.values().map(Vec::len).sum()
}

/// Asserts that every partition of `dest` holds exactly the records of the same
/// partition of `source`, in the same order, with equal key, value, headers and
/// timestamp. Offsets may differ (transaction markers take offsets in the source).
pub fn assert_same_partitions(source: &TopicRecords, dest: &TopicRecords) {
    let source_partitions: Vec<i32> = source.keys().copied().collect();
    let dest_partitions: Vec<i32> = dest.keys().copied().collect();
    assert_eq!(
        source_partitions, dest_partitions,
        "source and destination have different partitions"
    );
    for (partition, source_records) in source {
        let dest_records = &dest[partition];
        for (index, (source_record, dest_record)) in
            source_records.iter().zip(dest_records).enumerate()
        {
            if let Some(difference) = source_record.content_difference(dest_record) {
                panic!(
                    "partition {partition}, record #{index}: {difference}\n  source: {source_record:?}\n  destination: {dest_record:?}"
                );
            }
        }
        assert_eq!(
            source_records.len(),
            dest_records.len(),
            "partition {partition}: the source holds {} records, the destination {} \
             (first extra: {:?})",
            source_records.len(),
            dest_records.len(),
            source_records
                .get(dest_records.len())
                .or_else(|| dest_records.get(source_records.len()))
        );
    }
}

/// Asserts that a partition holds exactly the produced records, in order.
pub fn assert_partition_holds(records: &[ConsumedRecord], produced: &[&OutRecord]) {
    for (index, (record, out)) in records.iter().zip(produced).enumerate() {
        if let Some(difference) = record.matches_produced(out) {
            panic!("record #{index} differs from what was produced: {difference}\n  read: {record:?}\n  produced: {out:?}");
        }
    }
    assert_eq!(
        records.len(),
        produced.len(),
        "read {} records, produced {}",
        records.len(),
        produced.len()
    );
}
