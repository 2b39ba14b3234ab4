//! Consumer failover: the offset map translates source positions exactly, a
//! source group's committed offsets translate to destination positions from which
//! a consumer reads exactly what the group had not read, and bad input fails
//! clearly while the mirror goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    alter_topic_configs, create_topic, produce, produce_transactions, read_all, ConsumedRecord,
    TopicRecords, Transaction,
};
use kmirror_tests::{unique_name, Cluster, CtlOutput, Fleet, FleetOptions};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

const PARTITIONS: i32 = 3;

/// A small deterministic generator (the test needs no cryptographic randomness,
/// and a fixed seed makes a failure repeatable).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn translations(output: &CtlOutput) -> Vec<Value> {
    let json: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("{output}: not JSON: {error}"));
    json["translations"]
        .as_array()
        .expect("translations")
        .clone()
}

/// The source record a consumer positioned at `offset` reads first.
fn first_at_or_after(records: &[ConsumedRecord], offset: i64) -> Option<&ConsumedRecord> {
    records.iter().find(|record| record.offset >= offset)
}

#[tokio::test(flavor = "multi_thread")]
async fn random_source_offsets_translate_to_the_same_records_across_aborted_transactions(
) -> Result<()> {
    let topic = unique_name("offset-map");
    let flow = unique_name("offset-map-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    // Committed and aborted transactions interleaved: the source offsets have gaps
    // (markers and aborted records) the map must step over.
    let mut sequence = 0;
    let mut transactions = Vec::new();
    for round in 0..40 {
        let records = KeyedRecords {
            first_sequence: sequence,
            ..KeyedRecords::new(50, PARTITIONS)
        }
        .generate();
        sequence += 50;
        transactions.push(Transaction {
            records,
            commit: round % 4 != 3,
        });
    }
    produce_transactions(Cluster::Source, &topic, transactions).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords {
            first_sequence: sequence,
            ..KeyedRecords::new(1_000, PARTITIONS)
        }
        .generate(),
    )
    .await?;
    let committed = 30 * 50 + 1_000;

    let fleet = Fleet::start(FleetOptions::new("offset-map")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, committed, Duration::from_secs(180))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_random_offsets_translate(&fleet, &flow, &topic, &source, &dest, 18).await;
    Ok(())
}

/// Translates 1 000 random source offsets (records, markers, aborted or compacted
/// records alike) and checks the destination record there is the one a source
/// consumer at that offset reads first: same key, value, headers and timestamp.
async fn assert_random_offsets_translate(
    fleet: &Fleet,
    flow: &str,
    topic: &str,
    source: &TopicRecords,
    dest: &TopicRecords,
    seed: u64,
) {
    let mut random = Lcg(seed);
    let mut positions: Vec<(i32, i64)> = Vec::new();
    for _ in 0..1_000 {
        let partition = random.below(PARTITIONS as u64) as i32;
        let records = &source[&partition];
        let last = records.last().expect("every partition has records").offset;
        positions.push((partition, random.below(last as u64 + 1) as i64));
    }
    for chunk in positions.chunks(250) {
        let mut args = vec![
            "offsets".to_string(),
            "translate".into(),
            "--flow".into(),
            flow.to_string(),
            "--topic".into(),
            topic.to_string(),
            "-o".into(),
            "json".into(),
        ];
        for (partition, offset) in chunk {
            args.extend([
                "--partition".to_string(),
                partition.to_string(),
                "--offset".into(),
                offset.to_string(),
            ]);
        }
        let output = fleet.ctl(&args).await;
        assert!(output.success(), "{output}");
        for translation in translations(&output) {
            let partition = translation["partition"].as_i64().unwrap() as i32;
            let offset = translation["source_offset"].as_i64().unwrap();
            assert_eq!(translation["translated"], true, "{translation}");
            assert_eq!(
                translation["dest_partition"].as_i64(),
                Some(partition as i64)
            );
            let dest_offset = translation["dest_offset"].as_i64().unwrap();
            let expected = first_at_or_after(&source[&partition], offset)
                .expect("a position inside the partition has a record at or after it");
            let found = dest[&partition]
                .iter()
                .find(|record| record.offset == dest_offset)
                .unwrap_or_else(|| panic!("no destination record at {partition}@{dest_offset}"));
            if let Some(difference) = expected.content_difference(found) {
                panic!("source {partition}@{offset} translated to {dest_offset}: {difference}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_source_offsets_translate_to_the_same_records_on_a_compacted_topic() -> Result<()> {
    let topic = unique_name("offset-compacted");
    let flow = unique_name("offset-compacted-flow");
    create_topic(
        Cluster::Source,
        &topic,
        PARTITIONS,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    )
    .await?;
    // Few keys written many times, interleaved with keys written once: once
    // compacted, the repeated keys leave gaps between the records that stay.
    let repeated = |first_sequence: u64, count: u64| {
        KeyedRecords {
            first_sequence,
            distinct_keys: 30,
            ..KeyedRecords::new(count, PARTITIONS)
        }
        .generate()
    };
    // Timestamps close to the repeated keys' (a record's timestamp is its base
    // plus its sequence number): a segment rolls on segment.ms measured between
    // record timestamps, so a first batch far in the future would never roll.
    let unique = KeyedRecords {
        first_sequence: 1_000_000,
        base_timestamp: kmirror_tests::now_ms() - 3_600_000 - 1_000_000,
        distinct_keys: u64::MAX,
        ..KeyedRecords::new(1_500, PARTITIONS)
    }
    .generate();
    let mut records = repeated(0, 1_500);
    for (unique, repeated) in unique.into_iter().zip(repeated(1_500, 1_500)) {
        records.push(unique);
        records.push(repeated);
    }
    produce(Cluster::Source, &topic, records).await?;
    let mut sequence = 3_000;
    // A segment rolls (and can be cleaned) only when a record comes after
    // segment.ms: keep writing a little until the cleaner has removed records.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let source = read_all(Cluster::Source, &topic).await?;
        let compacted = source.values().all(|records| {
            records
                .windows(2)
                .any(|pair| pair[1].offset != pair[0].offset + 1)
        });
        if compacted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source topic was not compacted in time"
        );
        produce(Cluster::Source, &topic, repeated(sequence, 30)).await?;
        sequence += 30;
    }
    // No more cleaning from here: the source stays as it is compared with.
    alter_topic_configs(
        Cluster::Source,
        &topic,
        &[("cleanup.policy", "delete"), ("retention.ms", "-1")],
    )
    .await?;
    let source = read_all(Cluster::Source, &topic).await?;
    let present: usize = source.values().map(Vec::len).sum();

    let fleet = Fleet::start(FleetOptions::new("offset-compacted")).await;
    fleet.add_clusters().await;
    // The destination copy is not compacted, so each translated offset holds its
    // record for the comparison.
    fleet
        .ctl([
            "flow",
            "create",
            &flow,
            "--source",
            "source",
            "--dest",
            "dest",
            "--include",
            &topic,
            "--config-exclude",
            "cleanup\\.policy|segment\\.ms|min\\.cleanable\\.dirty\\.ratio|retention\\.ms",
        ])
        .await
        .assert_success();
    fleet
        .wait_for_mirror(&topic, present as i64, Duration::from_secs(180))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;
    let source_after = read_all(Cluster::Source, &topic).await?;
    assert!(
        source_after == source,
        "the source was compacted again while mirroring; the comparison needs a still source"
    );
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_random_offsets_translate(&fleet, &flow, &topic, &source, &dest, 7).await;
    Ok(())
}

/// Commits `offsets` for `group` on the source, as a consumer that read up to
/// there would.
fn commit_group(group: &str, topic: &str, offsets: &BTreeMap<i32, i64>) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", Cluster::Source.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_groups_translated_positions_resume_exactly_and_bad_input_fails_clearly() -> Result<()> {
    const RECORDS: u64 = 3_000;
    let topic = unique_name("offset-group");
    let flow = unique_name("offset-group-flow");
    let mismatched = unique_name("offset-mismatch");
    let mismatched_flow = unique_name("offset-mismatch-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    create_topic(Cluster::Source, &mismatched, 4, &[]).await?;
    create_topic(Cluster::Dest, &mismatched, 2, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(RECORDS, PARTITIONS).generate(),
    )
    .await?;
    produce(
        Cluster::Source,
        &mismatched,
        KeyedRecords::new(200, 4).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions::new("offset-group")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet.create_flow(&mismatched_flow, &mismatched, None).await;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(180))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    // The group read about 60 % of each partition.
    let source = read_all(Cluster::Source, &topic).await?;
    let group = unique_name("billing");
    let committed: BTreeMap<i32, i64> = source
        .iter()
        .map(|(partition, records)| (*partition, records.len() as i64 * 6 / 10))
        .collect();
    {
        let (group, topic, committed) = (group.clone(), topic.clone(), committed.clone());
        tokio::task::spawn_blocking(move || commit_group(&group, &topic, &committed)).await??;
    }

    let output = fleet
        .ctl([
            "offsets",
            "translate",
            "--flow",
            &flow,
            "--group",
            &group,
            "-o",
            "json",
        ])
        .await;
    assert!(output.success(), "{output}");
    let dest = read_all(Cluster::Dest, &topic).await?;
    let translated = translations(&output);
    assert_eq!(translated.len(), PARTITIONS as usize, "{output}");
    for translation in translated {
        let partition = translation["partition"].as_i64().unwrap() as i32;
        assert_eq!(
            translation["source_offset"].as_i64(),
            Some(committed[&partition])
        );
        let dest_offset = translation["dest_offset"].as_i64().unwrap();
        // What a consumer of the destination reads from there: exactly what the
        // group had not read.
        let unread: Vec<&ConsumedRecord> = source[&partition]
            .iter()
            .filter(|record| record.offset >= committed[&partition])
            .collect();
        let resumed: Vec<&ConsumedRecord> = dest[&partition]
            .iter()
            .filter(|record| record.offset >= dest_offset)
            .collect();
        assert_eq!(unread.len(), resumed.len(), "partition {partition}");
        for (expected, found) in unread.iter().zip(&resumed) {
            assert_eq!(
                expected.content_difference(found),
                None,
                "partition {partition}"
            );
        }
    }
    // The text form names the columns an operator looks for.
    let text = fleet
        .ctl(["offsets", "translate", "--flow", &flow, "--group", &group])
        .await;
    assert!(text.success(), "{text}");
    assert!(text.stdout.contains("DEST-OFFSET"), "{text}");

    // Bad input: each a clear error and exit 1.
    let unknown_group = fleet
        .ctl([
            "offsets",
            "translate",
            "--flow",
            &flow,
            "--group",
            "nobody-reads-this",
        ])
        .await;
    assert_eq!(unknown_group.code, Some(1), "{unknown_group}");
    assert!(
        unknown_group
            .stderr
            .contains("consumer group nobody-reads-this")
            && unknown_group.stderr.contains("not found"),
        "{unknown_group}"
    );
    let unknown_flow = fleet
        .ctl([
            "offsets",
            "translate",
            "--flow",
            "no-such-flow",
            "--group",
            &group,
        ])
        .await;
    assert_eq!(unknown_flow.code, Some(1), "{unknown_flow}");
    assert!(
        unknown_flow.stderr.contains("flow no-such-flow not found"),
        "{unknown_flow}"
    );
    let past_end = fleet
        .ctl([
            "offsets",
            "translate",
            "--flow",
            &flow,
            "--topic",
            &topic,
            "--partition",
            "0",
            "--offset",
            "1000000",
        ])
        .await;
    assert_eq!(past_end.code, Some(1), "{past_end}");
    assert!(past_end.stdout.contains("not mirrored yet"), "{past_end}");
    assert!(
        past_end
            .stderr
            .contains("1 of 1 positions could not be translated"),
        "{past_end}"
    );
    let repartitioned = fleet
        .ctl([
            "offsets",
            "translate",
            "--flow",
            &mismatched_flow,
            "--topic",
            &mismatched,
            "--partition",
            "1",
            "--offset",
            "10",
        ])
        .await;
    assert_eq!(repartitioned.code, Some(1), "{repartitioned}");
    assert!(
        repartitioned.stdout.contains("re-partitioned flow"),
        "{repartitioned}"
    );

    // The mirror goes on.
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords {
            first_sequence: RECORDS,
            ..KeyedRecords::new(500, PARTITIONS)
        }
        .generate(),
    )
    .await?;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64 + 500, Duration::from_secs(120))
        .await;
    Ok(())
}
