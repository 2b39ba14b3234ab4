use super::*;
use prost::Message;

/// A record as owned test data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRecord {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: Option<i64>,
}

impl OwnedRecord {
    fn plain(offset: i64) -> Self {
        Self {
            offset,
            key: Some(b"key".to_vec()),
            value: Some(b"value".to_vec()),
            headers: vec![("h".to_string(), Some(vec![0, 1]))],
            timestamp_ms: Some(1_700_000_000_000_i64.wrapping_add(offset)),
        }
    }

    fn of(record: PackedRecord<'_>) -> Self {
        Self {
            offset: record.offset,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record
                .headers()
                .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                .collect(),
            timestamp_ms: record.timestamp_ms,
        }
    }
}

fn pack(records: &[OwnedRecord]) -> PackedBatch {
    let mut builder = PackedBuilder::default();
    for record in records {
        builder
            .push(
                record.offset,
                record.key.as_deref(),
                record.value.as_deref(),
                record
                    .headers
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_deref())),
                record.timestamp_ms,
            )
            .expect("offsets increase");
    }
    builder.finish()
}

fn unpack(batch: &PackedBatch) -> Result<Vec<OwnedRecord>, MalformedBatch> {
    PackedRecords::new(&batch.records, batch.base_offset, batch.record_count)
        .iter()
        .map(|record| record.map(OwnedRecord::of))
        .collect()
}

fn summary_of(records: &[OwnedRecord]) -> PackedSummary {
    let timestamps = || records.iter().filter_map(|record| record.timestamp_ms);
    let length = |bytes: &Option<Vec<u8>>| bytes.as_ref().map_or(0, Vec::len) as u64;
    PackedSummary {
        record_count: records.len() as u32,
        first_offset: records.first().map(|record| record.offset),
        last_offset: records.last().map(|record| record.offset),
        key_value_bytes: records
            .iter()
            .map(|record| length(&record.key) + length(&record.value))
            .sum(),
        header_bytes: records
            .iter()
            .flat_map(|record| &record.headers)
            .map(|(key, value)| key.len() as u64 + length(value))
            .sum(),
        oldest_timestamp_ms: timestamps().min(),
        newest_timestamp_ms: timestamps().max(),
    }
}

fn assert_round_trip(records: &[OwnedRecord]) {
    let batch = pack(records);
    assert_eq!(batch.record_count as usize, records.len());
    assert_eq!(unpack(&batch).unwrap(), records);
    let expected = summary_of(records);
    assert_eq!(batch.summary, expected);
    let read = PackedRecords::new(&batch.records, batch.base_offset, batch.record_count);
    assert_eq!(read.validate().unwrap(), expected);
    // Once validated, records read the same without the keys' second check.
    let validated: Vec<_> = read
        .iter_validated()
        .map(|record| {
            let record = record.unwrap();
            (record.header_bytes(), OwnedRecord::of(record))
        })
        .collect();
    assert_eq!(
        validated
            .iter()
            .map(|(_, record)| record.clone())
            .collect::<Vec<_>>(),
        records
    );
    assert_eq!(
        validated
            .iter()
            .map(|(bytes, _)| *bytes as u64)
            .sum::<u64>(),
        expected.header_bytes
    );
}

#[test]
fn null_and_empty_stay_apart_and_headers_keep_their_order() {
    let records = vec![
        OwnedRecord {
            offset: 0,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp_ms: None,
        },
        OwnedRecord {
            offset: 1,
            key: Some(Vec::new()),
            value: Some(Vec::new()),
            headers: vec![
                ("b".to_string(), None),
                ("a".to_string(), Some(Vec::new())),
                ("b".to_string(), Some(vec![0, 0xff, 0x80, 0])),
                (String::new(), Some(b"empty key".to_vec())),
                ("clé ✓".to_string(), Some(vec![0xc3, 0x28])),
            ],
            timestamp_ms: Some(0),
        },
        // Gaps from transaction markers, timestamps absent, negative or extreme.
        OwnedRecord {
            offset: 7,
            key: Some(vec![0; 300]),
            value: None,
            headers: Vec::new(),
            timestamp_ms: Some(-1),
        },
        OwnedRecord {
            timestamp_ms: None,
            ..OwnedRecord::plain(8)
        },
        OwnedRecord {
            timestamp_ms: Some(i64::MIN),
            ..OwnedRecord::plain(1_000)
        },
        OwnedRecord {
            timestamp_ms: Some(i64::MAX),
            ..OwnedRecord::plain(1_001)
        },
        OwnedRecord::plain(i64::MAX),
    ];
    assert_round_trip(&records);
}

#[test]
fn offsets_count_from_any_base() {
    assert_round_trip(&[OwnedRecord::plain(i64::MAX)]);
    assert_round_trip(&[OwnedRecord::plain(0), OwnedRecord::plain(i64::MAX)]);
    assert_round_trip(&[OwnedRecord::plain(-5), OwnedRecord::plain(3)]);
    let batch = pack(&[OwnedRecord::plain(123_456_789_000)]);
    assert_eq!(batch.base_offset, 123_456_789_000);
}

#[test]
fn an_empty_batch_holds_only_the_version() {
    let batch = PackedBuilder::default().finish();
    assert_eq!(&batch.records[..], &[LAYOUT_VERSION]);
    assert_eq!(batch.record_count, 0);
    assert_eq!(unpack(&batch).unwrap(), Vec::new());
    assert_eq!(batch.summary, PackedSummary::default());
}

#[test]
fn many_headers_widen_the_header_count() {
    for count in [127, 128, 300, 16_384] {
        let record = OwnedRecord {
            headers: (0..count)
                .map(|index| (format!("h{index}"), Some(vec![index as u8])))
                .collect(),
            ..OwnedRecord::plain(10)
        };
        assert_round_trip(&[
            record.clone(),
            OwnedRecord::plain(11),
            record.with_offset(12),
        ]);
    }
}

impl OwnedRecord {
    fn with_offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }
}

/// The layout, byte by byte: it is a contract between fetchers and writers of
/// different builds.
#[test]
fn the_layout_is_the_documented_one() {
    let mut builder = PackedBuilder::default();
    builder
        .push(
            100,
            Some(b"k"),
            None,
            [("h", Some(&b""[..])), ("n", None)],
            Some(1_000),
        )
        .unwrap();
    builder
        .push(102, None, Some(b"vv"), NO_HEADERS, Some(999))
        .unwrap();
    builder
        .push(300, Some(b""), None, NO_HEADERS, None)
        .unwrap();
    let batch = builder.finish();
    assert_eq!(batch.base_offset, 100);
    assert_eq!(batch.record_count, 3);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x01, // version
        // offset 100: timestamp, delta 0, 1000 (zigzag 2000 = 0xd0 0x0f)
        0x01, 0x00, 0xd0, 0x0f,
        0x02, b'k', // key "k"
        0x00, // null value
        0x02, // two headers
        0x01, b'h', 0x01, // "h": empty value
        0x01, b'n', 0x00, // "n": null value
        // offset 102: timestamp 999, one below the previous (zigzag -1 = 1)
        0x01, 0x02, 0x01,
        0x00, // null key
        0x03, b'v', b'v', // value "vv"
        0x00, // no header
        // offset 300 (delta 200 = 0xc8 0x01), no timestamp
        0x00, 0xc8, 0x01,
        0x01, // empty key
        0x00, // null value
        0x00, // no header
    ];
    assert_eq!(&batch.records[..], expected);
}

#[test]
fn the_builder_refuses_offsets_that_do_not_increase() {
    let mut builder = PackedBuilder::default();
    builder.push(5, None, None, NO_HEADERS, None).unwrap();
    assert_eq!(
        builder.push(5, None, None, NO_HEADERS, None),
        Err(PushError::OffsetNotIncreasing {
            offset: 5,
            previous: 5
        })
    );
    assert_eq!(
        builder.push(4, None, None, NO_HEADERS, None),
        Err(PushError::OffsetNotIncreasing {
            offset: 4,
            previous: 5
        })
    );
    builder.push(6, None, None, NO_HEADERS, None).unwrap();
    let batch = builder.finish();
    assert_eq!(batch.record_count, 2);
    assert_eq!(unpack(&batch).unwrap().len(), 2);
}

/// splitmix64: deterministic pseudo-random test data without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let length = self.below(max_len + 1);
        (0..length).map(|_| self.next() as u8).collect()
    }

    fn nullable(&mut self, max_len: u64) -> Option<Vec<u8>> {
        match self.below(4) {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(self.bytes(max_len)),
        }
    }

    fn key(&mut self) -> String {
        const ALPHABET: &[char] = &['a', 'Z', '0', '-', '.', 'é', '✓', '\0', ' '];
        let length = self.below(12);
        (0..length)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }

    fn batch(&mut self) -> Vec<OwnedRecord> {
        let count = self.below(40);
        let mut offset = match self.below(3) {
            0 => 0,
            1 => self.below(1 << 40) as i64,
            _ => i64::MAX - 100_000,
        };
        let base_timestamp = self.next() as i64;
        (0..count)
            .map(|_| {
                // Mostly consecutive, sometimes gaps of any size.
                offset += match self.below(8) {
                    0 => 2 + self.below(1_000) as i64,
                    _ => 1,
                };
                let headers = (0..self.below(5))
                    .map(|_| (self.key(), self.nullable(40)))
                    .collect();
                let timestamp_ms = match self.below(5) {
                    0 => None,
                    1 => Some(self.next() as i64),
                    _ => Some(base_timestamp.wrapping_add(self.below(10_000) as i64 - 5_000)),
                };
                OwnedRecord {
                    offset,
                    key: self.nullable(20),
                    value: self.nullable(300),
                    headers,
                    timestamp_ms,
                }
            })
            .collect()
    }
}

#[test]
fn random_batches_come_back_byte_for_byte() {
    let mut random = Random(7);
    for _ in 0..2_000 {
        let records = random.batch();
        assert_round_trip(&records);
    }
}

#[test]
fn a_batch_crosses_protobuf_without_a_copy() {
    let records: Vec<OwnedRecord> = (0..50).map(OwnedRecord::plain).collect();
    let mut batch = Batch {
        dest_topic: "orders".to_string(),
        next_offset: 50,
        ..Batch::default()
    };
    batch.set_packed(pack(&records));
    let encoded = Bytes::from(batch.encode_to_vec());
    let decoded = Batch::decode(encoded.clone()).unwrap();
    assert_eq!(decoded, batch);
    let within = encoded.as_ptr_range();
    assert!(
        within.contains(&decoded.records.as_ptr()),
        "records slice the frame"
    );
    let unpacked: Vec<OwnedRecord> = decoded
        .packed()
        .iter()
        .map(|record| OwnedRecord::of(record.unwrap()))
        .collect();
    assert_eq!(unpacked, records);
}

/// The message shapes of the layout before it was packed, to show mixed
/// versions fail loudly in both directions.
mod legacy {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Batch {
        #[prost(int64, tag = "6")]
        pub next_offset: i64,
        #[prost(message, repeated, tag = "7")]
        pub records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        #[prost(int64, tag = "1")]
        pub offset: i64,
        #[prost(bytes = "vec", optional, tag = "3")]
        pub value: Option<Vec<u8>>,
    }
}

#[test]
fn records_of_the_earlier_layout_are_refused_and_packed_ones_undecodable_to_it() {
    let legacy_batch = legacy::Batch {
        next_offset: 3,
        records: (0..3)
            .map(|offset| legacy::Record {
                offset,
                value: Some(b"v".to_vec()),
            })
            .collect(),
    };
    let batch = Batch::decode(&legacy_batch.encode_to_vec()[..]).unwrap();
    assert!(matches!(
        batch.packed().validate(),
        Err(MalformedBatch::UnsupportedVersion(_))
    ));
    // A legacy record at offset 0 with nothing set encodes as no bytes at all.
    let empty_legacy = legacy::Batch {
        next_offset: 1,
        records: vec![legacy::Record::default()],
    };
    let batch = Batch::decode(&empty_legacy.encode_to_vec()[..]).unwrap();
    assert_eq!(
        batch.packed().validate(),
        Err(MalformedBatch::MissingVersion)
    );

    let mut packed = Batch::default();
    packed.set_packed(pack(&[OwnedRecord::plain(0)]));
    assert!(legacy::Batch::decode(&packed.encode_to_vec()[..]).is_err());
    let mut empty = Batch::default();
    empty.set_packed(PackedBuilder::default().finish());
    assert!(legacy::Batch::decode(&empty.encode_to_vec()[..]).is_err());
}

fn read(data: &[u8], base_offset: i64, record_count: u32) -> Result<PackedSummary, MalformedBatch> {
    PackedRecords::new(data, base_offset, record_count).validate()
}

fn record_problem(data: &[u8], record_count: u32) -> (u32, RecordProblem) {
    match read(data, 0, record_count) {
        Err(MalformedBatch::Record { index, problem }) => (index, problem),
        other => panic!("expected a record problem, got {other:?}"),
    }
}

#[test]
fn a_batch_must_start_with_a_known_version() {
    assert_eq!(read(&[], 0, 0), Err(MalformedBatch::MissingVersion));
    assert_eq!(read(&[], 0, 3), Err(MalformedBatch::MissingVersion));
    assert_eq!(read(&[2], 0, 0), Err(MalformedBatch::UnsupportedVersion(2)));
    assert_eq!(read(&[1], 0, 0), Ok(PackedSummary::default()));
}

#[test]
fn the_declared_count_must_match() {
    let batch = pack(&[OwnedRecord::plain(0), OwnedRecord::plain(1)]);
    assert_eq!(
        read(&batch.records, 0, 3),
        Err(MalformedBatch::MissingRecords {
            declared: 3,
            found: 2
        })
    );
    let first_record_len = pack(&[OwnedRecord::plain(0)]).records.len() - 1;
    assert_eq!(
        read(&batch.records, 0, 1),
        Err(MalformedBatch::TrailingBytes {
            declared: 1,
            extra: batch.records.len() - 1 - first_record_len
        })
    );
    assert_eq!(
        read(&batch.records, 0, 0),
        Err(MalformedBatch::TrailingBytes {
            declared: 0,
            extra: batch.records.len() - 1
        })
    );
}

#[test]
fn malformed_records_are_named_by_index_and_field() {
    let valid = [0x00, 0x00, 0x00, 0x00, 0x00];
    let with_second = |second: &[u8]| [&[1][..], &valid, second].concat();

    assert_eq!(
        record_problem(&with_second(&[0x80]), 2),
        (1, RecordProblem::ReservedAttributes(0x80))
    );
    assert_eq!(
        record_problem(&with_second(&[0x00, 0x80]), 2),
        (1, RecordProblem::Truncated(RecordField::OffsetDelta))
    );
    // Eleven varint bytes, and a tenth byte above 1.
    let too_long = [&[0x00][..], &[0xff; 10], &[0x01]].concat();
    assert_eq!(
        record_problem(&with_second(&too_long), 2),
        (1, RecordProblem::BadVarint(RecordField::OffsetDelta))
    );
    let tenth_too_big = [&[0x00][..], &[0xff; 9], &[0x02]].concat();
    assert_eq!(
        record_problem(&with_second(&tenth_too_big), 2),
        (1, RecordProblem::BadVarint(RecordField::OffsetDelta))
    );
    // A delta of 0 repeats the previous offset.
    assert_eq!(
        record_problem(&with_second(&[0x00, 0x00, 0x00, 0x00, 0x00]), 2),
        (
            1,
            RecordProblem::OffsetNotIncreasing {
                offset: 0,
                previous: 0
            }
        )
    );
    assert_eq!(
        record_problem(&with_second(&[0x01, 0x01, 0xff]), 2),
        (1, RecordProblem::Truncated(RecordField::Timestamp))
    );
    assert_eq!(
        record_problem(&with_second(&[0x00, 0x01, 0x05, b'a']), 2),
        (
            1,
            RecordProblem::TooLong {
                field: RecordField::Key,
                claimed: 4,
                remaining: 1
            }
        )
    );
    assert_eq!(
        record_problem(&with_second(&[0x00, 0x01, 0x00]), 2),
        (1, RecordProblem::Truncated(RecordField::Value))
    );
    assert_eq!(
        record_problem(&with_second(&[0x00, 0x01, 0x00, 0x00, 0x03, 0x00]), 2),
        (
            1,
            RecordProblem::TooManyHeaders {
                claimed: 3,
                remaining: 1
            }
        )
    );
    assert_eq!(
        record_problem(
            &with_second(&[0x00, 0x01, 0x00, 0x00, 0x02, 0x01, b'a', 0x00, 0x01, 0xff, 0x00]),
            2
        ),
        (1, RecordProblem::HeaderKeyNotUtf8(1))
    );
    assert_eq!(
        record_problem(
            &with_second(&[0x00, 0x01, 0x00, 0x00, 0x01, 0x01, b'a', 0x09, 0x00]),
            2
        ),
        (
            1,
            RecordProblem::TooLong {
                field: RecordField::HeaderValue(0),
                claimed: 8,
                remaining: 1
            }
        )
    );
    // A base offset the delta pushes past i64::MAX.
    assert_eq!(
        read(&[0x01, 0x00, 0x02, 0x00, 0x00, 0x00], i64::MAX - 1, 1),
        Err(MalformedBatch::Record {
            index: 0,
            problem: RecordProblem::OffsetOverflow {
                delta: 2,
                base_offset: i64::MAX - 1
            }
        })
    );
    let huge_delta = [&[0x01, 0x00][..], &[0xff; 9], &[0x01, 0x00, 0x00, 0x00]].concat();
    assert!(matches!(
        read(&huge_delta, 0, 1),
        Err(MalformedBatch::Record {
            index: 0,
            problem: RecordProblem::OffsetOverflow { .. }
        })
    ));
}

#[test]
fn errors_read_as_sentences_naming_the_record() {
    let error = MalformedBatch::Record {
        index: 3,
        problem: RecordProblem::Truncated(RecordField::HeaderValue(2)),
    };
    assert_eq!(
        error.to_string(),
        "record 3: its header 2 value is cut off by the end of the packed records"
    );
}

#[test]
fn every_cut_of_a_batch_is_refused_and_no_damage_panics() {
    let mut random = Random(11);
    for _ in 0..200 {
        let records = random.batch();
        let batch = pack(&records);
        let data = &batch.records[..];
        for cut in 0..data.len() {
            let result = read(&data[..cut], batch.base_offset, batch.record_count);
            assert!(
                result.is_err(),
                "a batch cut at {cut} of {} passed",
                data.len()
            );
        }
        for _ in 0..20 {
            let mut damaged = data.to_vec();
            for _ in 0..=random.below(3) {
                let at = random.below(damaged.len() as u64) as usize;
                damaged[at] = random.next() as u8;
            }
            // Whatever it says, it says it without panicking, and records read
            // before an error are whole.
            for record in PackedRecords::new(&damaged, batch.base_offset, batch.record_count) {
                let Ok(record) = record else { break };
                assert_eq!(record.headers().count(), record.header_count());
            }
            // Reading damage as if validated misreads at worst, never panics.
            for record in
                PackedRecords::new(&damaged, batch.base_offset, batch.record_count).iter_validated()
            {
                let Ok(record) = record else { break };
                assert!(record.headers().count() <= record.header_count());
            }
        }
    }
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    fn nullable_bytes(max_len: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
        prop::option::of(prop::collection::vec(any::<u8>(), 0..max_len))
    }

    fn records_strategy() -> impl Strategy<Value = Vec<OwnedRecord>> {
        let record = (
            1..1_000i64,
            nullable_bytes(24),
            nullable_bytes(64),
            prop::collection::vec((".{0,8}", nullable_bytes(16)), 0..4),
            prop::option::of(any::<i64>()),
        );
        (
            prop_oneof![Just(0i64), 0..1i64 << 40, Just(i64::MAX - 1_000_000)],
            prop::collection::vec(record, 0..12),
        )
            .prop_map(|(base, parts)| {
                let mut offset = base;
                parts
                    .into_iter()
                    .map(|(gap, key, value, headers, timestamp_ms)| {
                        offset += gap;
                        OwnedRecord {
                            offset,
                            key,
                            value,
                            headers,
                            timestamp_ms,
                        }
                    })
                    .collect()
            })
    }

    /// Reads every record and every header of `data`; only errors may come out.
    fn read_all(data: &[u8], base_offset: i64, record_count: u32) {
        let records = PackedRecords::new(data, base_offset, record_count);
        let _ = records.validate();
        for record in records.iter().chain(records.iter_validated()) {
            let Ok(record) = record else { break };
            assert!(record.headers().count() <= record.header_count());
            let _ = record.data_bytes();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_the_packed_record_reader(
            body in prop::collection::vec(any::<u8>(), 0..256),
            versioned in any::<bool>(),
            base_offset in any::<i64>(),
            record_count in prop_oneof![0..8u32, any::<u32>()],
        ) {
            let mut data = body;
            if versioned {
                data.insert(0, LAYOUT_VERSION);
            }
            read_all(&data, base_offset, record_count);
        }

        #[test]
        fn generated_batches_round_trip_with_their_summary(records in records_strategy()) {
            let batch = pack(&records);
            prop_assert_eq!(unpack(&batch).unwrap(), records.clone());
            prop_assert_eq!(
                PackedRecords::new(&batch.records, batch.base_offset, batch.record_count).validate(),
                Ok(summary_of(&records))
            );
        }

        #[test]
        fn corrupted_or_truncated_batches_are_refused_without_panicking(
            records in records_strategy(),
            cut in any::<prop::sample::Index>(),
            damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            declared_delta in -2..3i64,
        ) {
            let batch = pack(&records);
            let data = batch.records.to_vec();
            // Any strict prefix of a batch with records is refused.
            let cut = cut.index(data.len());
            if cut < data.len() {
                prop_assert!(
                    PackedRecords::new(&data[..cut], batch.base_offset, batch.record_count)
                        .validate()
                        .is_err(),
                    "a batch cut at {} of {} passed", cut, data.len()
                );
            }
            // A declared count other than the real one is refused.
            let declared = i64::from(batch.record_count) + declared_delta;
            if declared_delta != 0 && declared >= 0 {
                prop_assert!(
                    PackedRecords::new(&data, batch.base_offset, declared as u32)
                        .validate()
                        .is_err()
                );
            }
            let mut damaged = data;
            for (at, byte) in damage {
                let at = at.index(damaged.len());
                damaged[at] = byte;
            }
            read_all(&damaged, batch.base_offset, batch.record_count);
        }
    }
}
