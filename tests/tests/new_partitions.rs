//! Guarantee: a flow that starts on a wide topic loses nothing while the
//! destination brings the new topic's partitions online.
//!
//! A broker creating a topic of a thousand partitions answers "not leader" for
//! many of them for seconds after the topic exists, and the writers produce
//! into them all at once, every one from the beginning. A producer new to a
//! partition could then count a refused request's records as written, because a
//! later request for the same partition was accepted once the leader was ready:
//! the first records of a few partitions were missing while every checkpoint
//! said the partition was at its end.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::kafka::{create_topic, Cluster};
use kmirror_tests::steady::SteadyLoad;
use kmirror_tests::{unique_name, Fleet, FleetOptions};

const PARTITIONS: i32 = 1_000;

#[tokio::test(flavor = "multi_thread")]
async fn every_first_record_arrives_while_the_destination_brings_a_wide_topic_online() -> Result<()>
{
    let topic = unique_name("wide");
    let flow = unique_name("wide-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    // Records before the flow starts and while the destination topic is created:
    // 30 per partition over 15 s.
    let load = SteadyLoad {
        partitions: PARTITIONS,
        chunk: 1_000,
        tick: Duration::from_millis(500),
        chunks: 30,
    };
    let producer = load.start(Cluster::Source, topic.clone());
    let fleet = Fleet::start(FleetOptions {
        fetchers: 2,
        writers: 4,
        ..FleetOptions::new("wide")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;

    let produced = producer.await??;
    let delivery = fleet
        .assert_mirrored_in_order(
            &flow,
            &topic,
            PARTITIONS,
            produced,
            Duration::from_secs(240),
        )
        .await?;
    eprintln!(
        "new partitions: {} records over {PARTITIONS} partitions, {} duplicates",
        delivery.records, delivery.duplicates
    );
    Ok(())
}
