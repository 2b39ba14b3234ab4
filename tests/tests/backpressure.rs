//! Guarantee: a partition held back by its in-flight window (paused at the source
//! until the writer's acks make room) loses nothing and reorders nothing when it
//! is resumed, also while tailing, when its end is reached between records.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, produce, read_all, record_count, Cluster,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn tailing_partitions_paused_by_a_full_window_lose_nothing() -> Result<()> {
    const BURSTS: usize = 40;
    const PER_BURST: usize = 10;
    const PARTITIONS: i32 = 2;
    let topic = unique_name("backpressure");
    let flow = unique_name("backpressure-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;

    // One batch in flight per partition, and acks that take a while: every batch
    // pauses its partition until the writer has delivered it.
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        max_in_flight_batches: Some(1),
        writer_properties: vec![("linger.ms".into(), "20".into())],
        ..FleetOptions::new("backpressure")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;

    // Small bursts, each produced and acknowledged before the next: the fetcher
    // reaches each partition's end between them.
    let records = KeyedRecords::new((BURSTS * PER_BURST) as u64, PARTITIONS).generate();
    for burst in records.chunks(PER_BURST) {
        produce(Cluster::Source, &topic, burst.to_vec()).await?;
    }

    fleet
        .wait_for_mirror(&topic, records.len() as i64, Duration::from_secs(60))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;
    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_eq!(record_count(&source), records.len());
    assert_same_partitions(&source, &dest);
    Ok(())
}
