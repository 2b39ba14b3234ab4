//! A topic created in the source after the flow started, and matching its include
//! regex, is mirrored without a restart; one matching its exclude regex is not.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, partition_count, produce, read_all, Cluster,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn topic_created_after_the_flow_started_is_mirrored_without_restart() -> Result<()> {
    let prefix = unique_name("late");
    let first_topic = format!("{prefix}-first");
    let excluded_topic = format!("{prefix}-excluded");
    let late_topic = format!("{prefix}-late");
    let flow = unique_name("late-flow");

    create_topic(Cluster::Source, &first_topic, 2, &[]).await?;
    produce(
        Cluster::Source,
        &first_topic,
        KeyedRecords::new(1_000, 2).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions::new("late")).await;
    fleet.add_clusters().await;
    fleet
        .create_flow(&flow, &format!("{prefix}-.*"), Some(&excluded_topic))
        .await;
    fleet
        .wait_for_mirror(&first_topic, 1_000, Duration::from_secs(120))
        .await;

    // Both topics appear while the flow runs; only the one not excluded is mirrored.
    create_topic(Cluster::Source, &excluded_topic, 1, &[]).await?;
    produce(
        Cluster::Source,
        &excluded_topic,
        KeyedRecords::new(100, 1).generate(),
    )
    .await?;
    create_topic(Cluster::Source, &late_topic, 3, &[]).await?;
    produce(
        Cluster::Source,
        &late_topic,
        KeyedRecords::new(2_000, 3).generate(),
    )
    .await?;

    fleet
        .wait_for_mirror(&late_topic, 2_000, Duration::from_secs(120))
        .await;
    fleet
        .wait_caught_up(&flow, &late_topic, 3, Duration::from_secs(60))
        .await;
    assert_eq!(partition_count(Cluster::Dest, &late_topic).await?, Some(3));
    assert_same_partitions(
        &read_all(Cluster::Source, &late_topic).await?,
        &read_all(Cluster::Dest, &late_topic).await?,
    );
    assert_same_partitions(
        &read_all(Cluster::Source, &first_topic).await?,
        &read_all(Cluster::Dest, &first_topic).await?,
    );

    // The excluded topic existed before the late one was discovered.
    assert_eq!(
        partition_count(Cluster::Dest, &excluded_topic).await?,
        None,
        "the excluded topic was created in the destination"
    );
    let status = fleet.flow_status(&flow).await.map_err(anyhow::Error::msg)?;
    assert_eq!(
        status.partitions_of(&excluded_topic).count(),
        0,
        "{status:?}"
    );
    Ok(())
}
