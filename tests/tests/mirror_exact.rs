//! Guarantee: per source partition, the destination holds exactly the source's
//! records, in the same order, with equal key, value, headers and timestamp.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, partition_count, produce, read_all, record_count, Cluster,
};
use kmirror_tests::{kcat, unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn hundred_thousand_keyed_records_over_eight_partitions_are_mirrored_exactly() -> Result<()> {
    const RECORDS: u64 = 100_000;
    const PARTITIONS: i32 = 8;
    let topic = unique_name("exact");
    let flow = unique_name("exact-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let mut records = KeyedRecords::new(RECORDS, PARTITIONS).generate();
    // Half is there before the flow starts (catching up), half comes while it
    // runs (tailing).
    let tail = records.split_off(records.len() / 2);

    let fleet = Fleet::start(FleetOptions::new("exact")).await;
    fleet.add_clusters().await;
    produce(Cluster::Source, &topic, records).await?;
    fleet.create_flow(&flow, &topic, None).await;
    produce(Cluster::Source, &topic, tail).await?;

    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(300))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    assert_eq!(
        partition_count(Cluster::Dest, &topic).await?,
        Some(PARTITIONS),
        "the destination topic is created with the source's partition count"
    );
    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_eq!(record_count(&source), RECORDS as usize);
    assert_same_partitions(&source, &dest);
    Ok(())
}

/// The same check through an independent client: Debian's kcat reads the
/// destination.
#[tokio::test(flavor = "multi_thread")]
async fn destination_read_with_kcat_equals_the_source() -> Result<()> {
    const RECORDS: u64 = 5_000;
    const PARTITIONS: i32 = 3;
    let topic = unique_name("exact-kcat");
    let flow = unique_name("exact-kcat-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(RECORDS, PARTITIONS).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions::new("exact-kcat")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(180))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    let source = read_all(Cluster::Source, &topic).await?;
    let dest = kcat::read_topic(Cluster::Dest, &topic, None).await?;
    assert_eq!(record_count(&source), RECORDS as usize);
    assert_same_partitions(&source, &dest);
    Ok(())
}
