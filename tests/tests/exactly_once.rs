//! Exactly-once mode under faults, with records flowing: kill -9 of a fetcher,
//! kill -9 of a writer, a writer stopped (SIGSTOP) past its lease and woken again,
//! a restart of the destination broker, and etcd away longer than the lease TTL.
//! A read_committed consumer of the destination then sees every source record
//! exactly once, in source order, with its key, value, headers and timestamp. A
//! read_uncommitted read sees the same records in the same order, plus the copies
//! in transactions the faults aborted: those never committed.
//!
//! The destination broker and etcd are this test's own (deploy/local/stack with a
//! private state folder and ports), so stopping them disturbs no other test.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::kafka::{
    create_topic, read_all, read_all_uncommitted, Cluster, WatermarkReader,
};
use kmirror_tests::observability::member_sums;
use kmirror_tests::ordering::assert_complete_in_order;
use kmirror_tests::private_stack::PrivateStack;
use kmirror_tests::steady::SteadyLoad;
use kmirror_tests::{unique_name, Fleet, FleetOptions};

const PARTITIONS: i32 = 4;
const LEASE_TTL: Duration = Duration::from_secs(4);
/// Records the destination must gain after each fault before the next one.
const PROGRESS: i64 = 3_000;

/// Waits until the destination topic's partitions end past `count` offsets in
/// total (records, aborted ones and transaction markers included: progress, not
/// content); returns the count reached.
async fn wait_beyond(
    fleet: &Fleet,
    dest: &WatermarkReader,
    topic: &str,
    count: i64,
    what: &str,
) -> i64 {
    fleet
        .wait_until(Duration::from_secs(120), what, || async {
            let now = dest.offset_count(topic).await.unwrap_or(0);
            if now > count {
                Ok(())
            } else {
                Err(format!("{now} offsets in the destination"))
            }
        })
        .await;
    dest.offset_count(topic).await.unwrap_or(count)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_committed_consumer_sees_every_record_once_through_every_fault() -> Result<()> {
    let servers = PrivateStack::new("exactly-once");
    servers.up(&["dest", "etcd"]).await?;
    let clusters = (Cluster::Source, servers.dest());
    let topic = unique_name("exactly-once");
    let flow = unique_name("exactly-once-flow");
    create_topic(clusters.0, &topic, PARTITIONS, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        clusters: Some(clusters),
        etcd_endpoint: Some(servers.etcd_endpoint()),
        lease_ttl: LEASE_TTL,
        checkpoint_interval: Duration::from_millis(200),
        ..FleetOptions::new("exactly-once")
    })
    .await;
    fleet.add_clusters().await;
    fleet
        .create_flow_with(&flow, &topic, &["--exactly-once"])
        .await;
    let load = SteadyLoad {
        partitions: PARTITIONS,
        chunk: 400,
        tick: Duration::from_millis(100),
        chunks: 250,
    };
    let producer = load.start(clusters.0, topic.clone());
    let dest = WatermarkReader::new(clusters.1)?;
    let mut reached = wait_beyond(&fleet, &dest, &topic, PROGRESS, "the mirror to run").await;

    fleet.kill("fetcher-0");
    reached = wait_beyond(
        &fleet,
        &dest,
        &topic,
        reached + PROGRESS,
        "the mirror to resume after kill -9 of fetcher-0",
    )
    .await;
    fleet.start_member("fetcher-0");

    fleet.kill("writer-0");
    reached = wait_beyond(
        &fleet,
        &dest,
        &topic,
        reached + PROGRESS,
        "the mirror to resume after kill -9 of writer-0",
    )
    .await;
    fleet.start_member("writer-0");

    // A zombie writer: stopped past its lease, its partitions move to writer-0,
    // whose first transaction of each fences it; woken, it commits nothing.
    fleet.pause("writer-1");
    wait_lease_lost_elsewhere(&fleet).await;
    reached = wait_beyond(
        &fleet,
        &dest,
        &topic,
        reached + PROGRESS,
        "the mirror to resume without writer-1",
    )
    .await;
    fleet.unpause("writer-1");
    reached = wait_beyond(
        &fleet,
        &dest,
        &topic,
        reached + PROGRESS,
        "the mirror to run with writer-1 awake",
    )
    .await;

    servers.down(&["dest"]).await?;
    servers.up(&["dest"]).await?;
    reached = wait_beyond(
        &fleet,
        &dest,
        &topic,
        reached + PROGRESS,
        "the mirror to resume after the destination restart",
    )
    .await;

    servers.down(&["etcd"]).await?;
    let workers = ["fetcher-0", "fetcher-1", "writer-0", "writer-1"];
    fleet
        .wait_logged(&workers, "lease lost", LEASE_TTL * 3)
        .await;
    servers.up(&["etcd"]).await?;
    wait_beyond(
        &fleet,
        &dest,
        &topic,
        reached + PROGRESS,
        "the mirror to resume once etcd is back",
    )
    .await;

    let produced = producer.await.expect("producer task")?;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(180))
        .await;
    let source = read_all(clusters.0, &topic).await?;
    let committed = read_all(clusters.1, &topic).await?;
    let delivery = assert_complete_in_order(&source, &committed);
    assert_eq!(delivery.records as u64, produced);
    assert_eq!(
        delivery.duplicates, 0,
        "a read_committed consumer saw {} records twice",
        delivery.duplicates
    );
    // What the writers did is on their metrics: every partition opened (fenced,
    // resume position read) since the last faults, transactions committed.
    let opens = member_sums(&fleet, "kmirror_transactional_opens_total", &[]).await?;
    let committed = member_sums(
        &fleet,
        "kmirror_transactions_total",
        &[("outcome", "committed")],
    )
    .await?;
    assert!(
        opens.values().sum::<f64>() >= f64::from(PARTITIONS),
        "{opens:?}"
    );
    assert!(committed.values().sum::<f64>() > 0.0, "{committed:?}");
    let everything = read_all_uncommitted(clusters.1, &topic).await?;
    let with_aborted = assert_complete_in_order(&source, &everything);
    eprintln!(
        "exactly-once through 5 faults: {} records, each once for read_committed; {} copies in aborted transactions",
        delivery.records, with_aborted.duplicates
    );
    Ok(())
}

/// Waits until writer-1's lease has run out (its key gone from etcd's members),
/// so its partitions are free to move.
async fn wait_lease_lost_elsewhere(fleet: &Fleet) {
    fleet
        .wait_until(LEASE_TTL * 4, "writer-1's lease to expire", || async {
            let output = fleet.ctl(["members", "-o", "json"]).await;
            if !output.success() {
                return Err("members not readable".to_string());
            }
            if output.stdout.contains("\"writer-1\"") {
                Err("writer-1 still registered".to_string())
            } else {
                Ok(())
            }
        })
        .await;
}
