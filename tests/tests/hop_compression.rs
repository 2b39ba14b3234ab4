//! A fleet whose fetchers compress the batches they send (`--grpc-compression
//! zstd`, for writers across a slow link) mirrors every record as it is: key,
//! value, headers and timestamp, in order, per partition.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, produce, read_all, record_count, Cluster,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn zstd_compressed_batches_mirror_every_record() -> Result<()> {
    const PARTITIONS: i32 = 3;
    let topic = unique_name("hop-zstd");
    let flow = unique_name("hop-zstd-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let records = KeyedRecords::new(3_000, PARTITIONS).generate();
    produce(Cluster::Source, &topic, records.clone()).await?;

    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        env: vec![("KMIRROR_GRPC_COMPRESSION".into(), "zstd".into())],
        ..FleetOptions::new("hop-zstd")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
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

    // The batches did cross compressed: both ends say so for their stream.
    let fetcher_log = std::fs::read_to_string(fleet.log_dir().join("fetcher-0.log"))?;
    let writer_log = std::fs::read_to_string(fleet.log_dir().join("writer-0.log"))?;
    assert!(
        fetcher_log
            .lines()
            .any(|line| line.contains("replicate stream open")
                && line.contains("compression=")
                && line.contains("zstd")),
        "fetcher log: {fetcher_log}"
    );
    assert!(
        writer_log
            .lines()
            .any(|line| line.contains("replicate stream accepted")
                && line.contains("compression=")
                && line.contains("zstd")),
        "writer log: {writer_log}"
    );
    Ok(())
}
