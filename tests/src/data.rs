//! Generated test records.

use crate::kafka::OutRecord;
use crate::murmur2::default_partition;

/// How to generate keyed records.
#[derive(Debug, Clone)]
pub struct KeyedRecords {
    /// Records are numbered from `first_sequence` on; the number is in the value
    /// and a header, so every record is unique.
    pub first_sequence: u64,
    pub count: u64,
    /// Source partitions; each key always goes to the partition Kafka's default
    /// partitioner gives it, so per-key order is well defined in the source.
    pub partitions: i32,
    /// Distinct keys, reused round-robin.
    pub distinct_keys: u64,
    /// Bytes of padding added to each value.
    pub value_padding: usize,
    /// Timestamp of record 0; record n gets `base_timestamp + n`.
    pub base_timestamp: i64,
    /// Add headers (`seq`, `origin`). Their names and values are plain text
    /// without ',' or '=', so kcat's header output parses back exactly.
    pub headers: bool,
}

impl KeyedRecords {
    pub fn new(count: u64, partitions: i32) -> Self {
        Self {
            first_sequence: 0,
            count,
            partitions,
            distinct_keys: 1_000,
            value_padding: 32,
            base_timestamp: crate::now_ms() - 3_600_000,
            headers: true,
        }
    }

    pub fn generate(&self) -> Vec<OutRecord> {
        let padding = "x".repeat(self.value_padding);
        (self.first_sequence..self.first_sequence + self.count)
            .map(|sequence| {
                let key = format!("key-{:06}", sequence % self.distinct_keys.max(1)).into_bytes();
                let partition = default_partition(&key, self.partitions);
                let value = format!("value-{sequence}-{padding}").into_bytes();
                let headers = if self.headers {
                    vec![
                        ("seq".to_string(), Some(sequence.to_string().into_bytes())),
                        ("origin".to_string(), Some(b"kmirror-e2e".to_vec())),
                    ]
                } else {
                    Vec::new()
                };
                OutRecord {
                    partition: Some(partition),
                    key: Some(key),
                    value: Some(value),
                    headers,
                    timestamp: Some(self.base_timestamp + sequence as i64),
                }
            })
            .collect()
    }
}

/// Records that exercise every corner of a Kafka record: null and empty keys,
/// null (tombstone) and empty values, no headers, empty, null and binary header
/// values, repeated header names, binary keys and values, all into `partition`.
pub fn fidelity_records(partition: i32, base_timestamp: i64) -> Vec<OutRecord> {
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let invalid_utf8 = vec![0xff, 0xfe, 0x00, 0xc3, 0x28, b'\n', b',', b'='];
    let record = |timestamp_offset: i64,
                  key: Option<&[u8]>,
                  value: Option<&[u8]>,
                  headers: Vec<(&str, Option<&[u8]>)>| OutRecord {
        partition: Some(partition),
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: headers
            .into_iter()
            .map(|(name, header_value)| (name.to_string(), header_value.map(<[u8]>::to_vec)))
            .collect(),
        timestamp: Some(base_timestamp + timestamp_offset),
    };
    vec![
        record(0, None, Some(b"null key"), vec![]),
        record(1, Some(b""), Some(b"empty key"), vec![]),
        record(2, Some(b"tombstone"), None, vec![]),
        record(3, Some(b"empty value"), Some(b""), vec![]),
        record(4, None, None, vec![]),
        record(
            5,
            Some(b"empty header"),
            Some(b"v"),
            vec![("empty", Some(b""))],
        ),
        record(6, Some(b"null header"), Some(b"v"), vec![("null", None)]),
        record(
            7,
            Some(b"binary header"),
            Some(b"v"),
            vec![
                ("binary", Some(&every_byte)),
                ("invalid-utf8", Some(&invalid_utf8)),
            ],
        ),
        record(
            8,
            Some(b"repeated headers"),
            Some(b"v"),
            vec![
                ("same", Some(b"1")),
                ("same", Some(b"2")),
                ("same", None),
                ("other", Some(b"3")),
            ],
        ),
        record(
            9,
            Some(&every_byte),
            Some(&every_byte),
            vec![("k", Some(b"v"))],
        ),
        record(10, Some(&invalid_utf8), Some(&invalid_utf8), vec![]),
        // A day older than its neighbours: CreateTime is the producer's, not the
        // log's, and need not grow with the offset.
        record(-86_400_000, Some(b"older timestamp"), Some(b"v"), vec![]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_records_keep_each_key_in_one_partition() {
        let records = KeyedRecords::new(5_000, 8).generate();
        assert_eq!(records.len(), 5_000);
        let mut partition_of_key = std::collections::HashMap::new();
        for record in &records {
            let key = record.key.clone().unwrap();
            let partition = record.partition.unwrap();
            assert_eq!(*partition_of_key.entry(key).or_insert(partition), partition);
        }
        let used: std::collections::HashSet<i32> = partition_of_key.values().copied().collect();
        assert_eq!(used.len(), 8, "1 000 keys spread over every partition");
    }
}
