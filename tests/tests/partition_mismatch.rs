//! Guarantee: when the destination topic has fewer partitions than the source,
//! every record arrives exactly once, in the partition Kafka's default
//! partitioner gives its key, and per-key order is kept.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    create_topic, produce, read_all, record_count, Cluster, ConsumedRecord,
};
use kmirror_tests::murmur2::default_partition;
use kmirror_tests::{unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn keyed_records_land_where_kafkas_partitioner_puts_them_once_and_in_key_order() -> Result<()>
{
    const RECORDS: u64 = 20_000;
    const SOURCE_PARTITIONS: i32 = 8;
    const DEST_PARTITIONS: i32 = 3;
    let topic = unique_name("mismatch");
    let flow = unique_name("mismatch-flow");
    create_topic(Cluster::Source, &topic, SOURCE_PARTITIONS, &[]).await?;
    create_topic(Cluster::Dest, &topic, DEST_PARTITIONS, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(RECORDS, SOURCE_PARTITIONS).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions::new("mismatch")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(180))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, SOURCE_PARTITIONS, Duration::from_secs(60))
        .await;

    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_eq!(record_count(&source), RECORDS as usize);
    assert_eq!(
        dest.keys().copied().collect::<Vec<_>>(),
        (0..DEST_PARTITIONS).collect::<Vec<_>>(),
        "the pre-created destination topic keeps its partitions"
    );

    // Every value is unique (it holds the record's sequence number).
    let mut source_by_value: HashMap<&[u8], &ConsumedRecord> = HashMap::new();
    for record in source.values().flatten() {
        let value = record
            .value
            .as_deref()
            .expect("generated records have values");
        assert!(source_by_value.insert(value, record).is_none());
    }
    let mut seen = HashMap::new();
    for record in dest.values().flatten() {
        let key = record
            .key
            .as_deref()
            .expect("mirrored records keep their keys");
        assert_eq!(
            record.partition,
            default_partition(key, DEST_PARTITIONS),
            "record {record:?} is not in the partition Kafka's default partitioner picks"
        );
        let value = record
            .value
            .as_deref()
            .expect("mirrored records keep their values");
        let source_record = source_by_value
            .get(value)
            .unwrap_or_else(|| panic!("{record:?} is not in the source"));
        if let Some(difference) = source_record.content_difference(record) {
            panic!("{record:?} differs from its source record {source_record:?}: {difference}");
        }
        let copies = seen.entry(value).or_insert(0);
        *copies += 1;
        assert_eq!(*copies, 1, "{record:?} was mirrored more than once");
    }
    assert_eq!(seen.len(), source_by_value.len(), "records are missing");

    // Per key, the destination order equals the source order.
    let values_per_key = |records: &kmirror_tests::kafka::TopicRecords| {
        let mut per_key: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        for record in records.values().flatten() {
            per_key
                .entry(record.key.clone().unwrap_or_default())
                .or_default()
                .push(record.value.clone().unwrap_or_default());
        }
        per_key
    };
    let source_order = values_per_key(&source);
    let dest_order = values_per_key(&dest);
    assert_eq!(source_order.len(), dest_order.len());
    for (key, source_values) in &source_order {
        assert!(
            dest_order.get(key) == Some(source_values),
            "key {:?}: order differs between source and destination",
            String::from_utf8_lossy(key)
        );
    }
    Ok(())
}
