//! Source topics change under a running flow: partitions added to a source topic
//! are created in the destination and mirrored; a deleted source topic stops its
//! partitions cleanly while the flow's other topics keep flowing.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    add_partitions, assert_same_partitions, create_topic, delete_topic, partition_count, produce,
    read_all, Cluster, OutRecord,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

fn records_into(partition: i32, first_sequence: u64, count: u64) -> Vec<OutRecord> {
    KeyedRecords {
        first_sequence,
        ..KeyedRecords::new(count, 1)
    }
    .generate()
    .into_iter()
    .map(|record| OutRecord {
        partition: Some(partition),
        ..record
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_added_to_a_source_topic_are_created_and_mirrored() -> Result<()> {
    let topic = unique_name("grow");
    let flow = unique_name("grow-flow");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    let mut expected = 0;
    for partition in 0..2 {
        produce(
            Cluster::Source,
            &topic,
            records_into(partition, expected, 500),
        )
        .await?;
        expected += 500;
    }
    let fleet = Fleet::start(FleetOptions::new("grow")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, expected as i64, Duration::from_secs(120))
        .await;

    add_partitions(Cluster::Source, &topic, 4).await?;
    for partition in 0..4 {
        produce(
            Cluster::Source,
            &topic,
            records_into(partition, expected, 300),
        )
        .await?;
        expected += 300;
    }
    fleet
        .wait_until(
            Duration::from_secs(60),
            "the destination topic to grow to 4 partitions",
            || async {
                match partition_count(Cluster::Dest, &topic).await {
                    Ok(Some(4)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    fleet
        .wait_caught_up(&flow, &topic, 4, Duration::from_secs(120))
        .await;
    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_same_partitions(&source, &dest);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_source_topic_stops_its_partitions_and_the_others_keep_flowing() -> Result<()> {
    let prefix = unique_name("gone");
    let (kept, deleted) = (format!("{prefix}.kept"), format!("{prefix}.deleted"));
    let flow = unique_name("gone-flow");
    for topic in [&kept, &deleted] {
        create_topic(Cluster::Source, topic, 2, &[]).await?;
        produce(Cluster::Source, topic, records_into(0, 0, 200)).await?;
    }
    let fleet = Fleet::start(FleetOptions::new("gone")).await;
    fleet.add_clusters().await;
    fleet
        .create_flow(&flow, &format!("{}\\..*", regex_escape(&prefix)), None)
        .await;
    fleet
        .wait_for_mirror(&kept, 200, Duration::from_secs(120))
        .await;
    fleet
        .wait_for_mirror(&deleted, 200, Duration::from_secs(120))
        .await;

    delete_topic(Cluster::Source, &deleted).await?;
    produce(Cluster::Source, &kept, records_into(1, 200, 300)).await?;
    fleet
        .wait_until(
            Duration::from_secs(60),
            "the deleted topic's partitions to leave the status",
            || async {
                let status = fleet.flow_status(&flow).await?;
                if status
                    .partitions
                    .iter()
                    .any(|partition| partition.topic == deleted)
                {
                    Err(format!("{deleted} still has partitions in the status"))
                } else {
                    Ok(())
                }
            },
        )
        .await;
    fleet
        .wait_caught_up(&flow, &kept, 2, Duration::from_secs(120))
        .await;
    for member in fleet.member_ids() {
        assert!(
            fleet.is_running(&member),
            "{member} stopped after the topic was deleted"
        );
    }
    let source = read_all(Cluster::Source, &kept).await?;
    let dest = read_all(Cluster::Dest, &kept).await?;
    assert_same_partitions(&source, &dest);
    Ok(())
}

fn regex_escape(text: &str) -> String {
    regex::escape(text)
}
