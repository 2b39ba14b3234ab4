//! Guarantees when the infrastructure fails under a running mirror: a restart of
//! the source or the destination broker, and etcd going away for less or for more
//! than the lease TTL. The fleet recovers by itself and nothing is lost; records
//! arrive in source order (a resend from a checkpoint may repeat some).
//!
//! Each test starts its own servers (deploy/local/stack with a private state folder
//! and ports), so stopping them disturbs no other test.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::kafka::{create_topic, read_all, Cluster, WatermarkReader};
use kmirror_tests::ordering::assert_complete_in_order;
use kmirror_tests::private_stack::PrivateStack;
use kmirror_tests::steady::SteadyLoad;
use kmirror_tests::{unique_name, Fleet, FleetOptions};

const PARTITIONS: i32 = 4;

async fn arrived(dest: &WatermarkReader, topic: &str) -> i64 {
    dest.offset_count(topic).await.unwrap_or(0)
}

/// Waits until more than `count` records are in the destination topic.
async fn wait_beyond(fleet: &Fleet, dest: &WatermarkReader, topic: &str, count: i64, what: &str) {
    fleet
        .wait_until(Duration::from_secs(120), what, || async {
            let now = arrived(dest, topic).await;
            if now > count {
                Ok(())
            } else {
                Err(format!("{now} records arrived"))
            }
        })
        .await;
}

async fn check_everything_arrived(
    fleet: &Fleet,
    flow: &str,
    topic: &str,
    clusters: (Cluster, Cluster),
    producer: tokio::task::JoinHandle<Result<u64>>,
) {
    let produced = producer
        .await
        .expect("producer task")
        .expect("records produced");
    fleet
        .wait_caught_up(flow, topic, PARTITIONS, Duration::from_secs(180))
        .await;
    let source = read_all(clusters.0, topic).await.expect("source readable");
    let dest = read_all(clusters.1, topic)
        .await
        .expect("destination readable");
    let delivery = assert_complete_in_order(&source, &dest);
    assert_eq!(delivery.records as u64, produced);
    eprintln!(
        "{topic}: {} records arrived in order, {} duplicates",
        delivery.records, delivery.duplicates
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_recovers_by_itself_when_either_broker_restarts() -> Result<()> {
    let servers = PrivateStack::new("brokers");
    servers.up(&["source", "dest"]).await?;
    let clusters = (servers.source(), servers.dest());
    let topic = unique_name("broker-restart");
    let flow = unique_name("broker-restart-flow");
    create_topic(clusters.0, &topic, PARTITIONS, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        clusters: Some(clusters),
        ..FleetOptions::new("broker-restart")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    let load = SteadyLoad {
        partitions: PARTITIONS,
        chunk: 400,
        tick: Duration::from_millis(100),
        chunks: 250,
    };
    let producer = load.start(clusters.0, topic.clone());
    let dest = WatermarkReader::new(clusters.1)?;
    wait_beyond(&fleet, &dest, &topic, 4_000, "the mirror to run").await;

    servers.down(&["source"]).await?;
    servers.up(&["source"]).await?;
    let after_source = arrived(&dest, &topic).await;
    wait_beyond(
        &fleet,
        &dest,
        &topic,
        after_source + 4_000,
        "the mirror to resume after the source restart",
    )
    .await;

    servers.down(&["dest"]).await?;
    servers.up(&["dest"]).await?;
    let after_dest = arrived(&dest, &topic).await;
    wait_beyond(
        &fleet,
        &dest,
        &topic,
        after_dest + 4_000,
        "the mirror to resume after the destination restart",
    )
    .await;

    check_everything_arrived(&fleet, &flow, &topic, clusters, producer).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_away_shorter_than_the_lease_ttl_does_not_stop_the_mirror() -> Result<()> {
    let servers = PrivateStack::new("etcd-short");
    servers.up(&["etcd"]).await?;
    let clusters = (Cluster::Source, Cluster::Dest);
    let topic = unique_name("etcd-short");
    let flow = unique_name("etcd-short-flow");
    create_topic(clusters.0, &topic, PARTITIONS, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        etcd_endpoint: Some(servers.etcd_endpoint()),
        lease_ttl: Duration::from_secs(10),
        ..FleetOptions::new("etcd-short")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    let load = SteadyLoad {
        partitions: PARTITIONS,
        chunk: 400,
        tick: Duration::from_millis(100),
        chunks: 150,
    };
    let producer = load.start(clusters.0, topic.clone());
    let dest = WatermarkReader::new(clusters.1)?;
    wait_beyond(&fleet, &dest, &topic, 4_000, "the mirror to run").await;

    servers.down(&["etcd"]).await?;
    let at_stop = arrived(&dest, &topic).await;
    // Records keep flowing while etcd is away (well inside the local deadline).
    wait_beyond(
        &fleet,
        &dest,
        &topic,
        at_stop + 2_000,
        "records to flow without etcd",
    )
    .await;
    servers.up(&["etcd"]).await?;

    check_everything_arrived(&fleet, &flow, &topic, clusters, producer).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_away_longer_than_the_lease_ttl_stops_the_workers_until_it_returns() -> Result<()> {
    const LEASE_TTL: Duration = Duration::from_secs(4);
    let servers = PrivateStack::new("etcd-long");
    servers.up(&["etcd"]).await?;
    let clusters = (Cluster::Source, Cluster::Dest);
    let topic = unique_name("etcd-long");
    let flow = unique_name("etcd-long-flow");
    create_topic(clusters.0, &topic, PARTITIONS, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        etcd_endpoint: Some(servers.etcd_endpoint()),
        lease_ttl: LEASE_TTL,
        ..FleetOptions::new("etcd-long")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    let load = SteadyLoad {
        partitions: PARTITIONS,
        chunk: 400,
        tick: Duration::from_millis(100),
        chunks: 200,
    };
    let producer = load.start(clusters.0, topic.clone());
    let dest = WatermarkReader::new(clusters.1)?;
    wait_beyond(&fleet, &dest, &topic, 4_000, "the mirror to run").await;

    servers.down(&["etcd"]).await?;
    // At the local deadline (two thirds of the TTL) every worker counts its lease
    // as lost and stops: nothing arrives although the source keeps growing.
    let workers = ["fetcher-0", "fetcher-1", "writer-0", "writer-1"];
    fleet
        .wait_logged(&workers, "lease lost", LEASE_TTL * 3)
        .await;
    let stopped_at = arrived(&dest, &topic).await;
    let source = WatermarkReader::new(clusters.0)?;
    let source_before = source.offset_count(&topic).await?;
    fleet
        .wait_until(
            Duration::from_secs(30),
            "the source to grow while etcd is away",
            || async {
                let now = source.offset_count(&topic).await.unwrap_or(0);
                if now > source_before + 4_000 {
                    Ok(())
                } else {
                    Err(format!("{now} records in the source"))
                }
            },
        )
        .await;
    assert_eq!(
        arrived(&dest, &topic).await,
        stopped_at,
        "workers kept writing past their lease deadline with etcd away"
    );

    servers.up(&["etcd"]).await?;
    wait_beyond(
        &fleet,
        &dest,
        &topic,
        stopped_at,
        "the workers to resume by themselves",
    )
    .await;
    check_everything_arrived(&fleet, &flow, &topic, clusters, producer).await;
    Ok(())
}
