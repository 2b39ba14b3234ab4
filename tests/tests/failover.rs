//! Guarantees under the loss of a member, with records flowing: a killed fetcher's
//! or writer's partitions run again on the survivors within the lease TTL plus a
//! few seconds; losing the leading coordinator does not stop the data path; a
//! paused (zombie) fetcher writes nothing once its lease is gone. Every record
//! arrives, first copies in source order; duplicates stay within the bound a
//! resend from the last checkpoint allows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use kmirror_tests::kafka::{create_topic, read_all, Cluster, WatermarkReader};
use kmirror_tests::ordering::assert_complete_in_order;
use kmirror_tests::status::PartitionStatusView;
use kmirror_tests::steady::SteadyLoad;
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 6;
const LEASE_TTL: Duration = Duration::from_secs(4);
/// How far past the lease TTL a failover may take.
const FAILOVER_MARGIN: Duration = Duration::from_secs(5);
/// Records produced per tick of the background producer, and the tick.
const CHUNK: u64 = 500;
const TICK: Duration = Duration::from_millis(100);
const CHUNKS: u64 = 120;
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// The load that keeps records flowing through each fault.
const LOAD: SteadyLoad = SteadyLoad {
    partitions: PARTITIONS,
    chunk: CHUNK,
    tick: TICK,
    chunks: CHUNKS,
};

fn produce_steadily(topic: String) -> JoinHandle<Result<u64>> {
    LOAD.start(Cluster::Source, topic)
}

fn options(name: &str) -> FleetOptions {
    FleetOptions {
        lease_ttl: LEASE_TTL,
        checkpoint_interval: CHECKPOINT_INTERVAL,
        ..FleetOptions::new(name)
    }
}

/// Most duplicates a failover may cause: per moved partition, what was sent since
/// the last checkpoint — the in-flight window plus what was acknowledged but not
/// yet checkpointed — at the production rate, with a factor two of slack for the
/// checkpoint write's own latency.
fn duplicate_bound(moved_partitions: usize) -> usize {
    let per_partition_rate = LOAD.rate() / PARTITIONS as f64;
    let window_seconds = CHECKPOINT_INTERVAL.as_secs_f64() * 2.0 + 1.0;
    (moved_partitions as f64 * per_partition_rate * window_seconds).ceil() as usize
}

async fn partitions(fleet: &Fleet, flow: &str) -> Vec<PartitionStatusView> {
    match fleet.flow_status(flow).await {
        Ok(status) => status.partitions,
        Err(_) => Vec::new(),
    }
}

/// Waits until `dest_count` records arrived in the destination.
async fn wait_arrived(fleet: &Fleet, topic: &str, count: i64) {
    let dest = WatermarkReader::new(Cluster::Dest).expect("destination reader");
    fleet
        .wait_until(
            Duration::from_secs(120),
            &format!("{count} records to arrive"),
            || async {
                match dest.offset_count(topic).await {
                    Ok(arrived) if arrived >= count => Ok(()),
                    Ok(arrived) => Err(format!("{arrived} arrived")),
                    Err(error) => Err(format!("{error:#}")),
                }
            },
        )
        .await;
}

/// Waits until every partition `member` owned at the fault runs elsewhere and has
/// mirrored past where it stood; returns how long that took.
async fn wait_moved_and_running(
    fleet: &Fleet,
    flow: &str,
    member: &str,
    fault_at: Instant,
    before: &BTreeMap<(String, i64), i64>,
) -> Duration {
    let what = format!("the partitions of {member} to run elsewhere");
    fleet
        .wait_until(
            LEASE_TTL + FAILOVER_MARGIN + Duration::from_secs(30),
            &what,
            || async {
                let now = partitions(fleet, flow).await;
                for (key, mirrored_before) in before {
                    let Some(partition) = now.iter().find(|partition| {
                        (&partition.topic, partition.partition) == (&key.0, key.1)
                    }) else {
                        return Err(format!("{key:?} not in status"));
                    };
                    if partition.fetcher == member || partition.writer == member {
                        return Err(format!("{key:?} still on {member}"));
                    }
                    if partition.mirrored_offset <= *mirrored_before {
                        return Err(format!("{key:?} not past {mirrored_before} yet"));
                    }
                }
                Ok(())
            },
        )
        .await;
    fault_at.elapsed()
}

/// Mirrored offsets of the partitions `member` works on.
async fn owned_by(fleet: &Fleet, flow: &str, member: &str) -> BTreeMap<(String, i64), i64> {
    partitions(fleet, flow)
        .await
        .into_iter()
        .filter(|partition| partition.fetcher == member || partition.writer == member)
        .map(|partition| {
            (
                (partition.topic.clone(), partition.partition),
                partition.mirrored_offset,
            )
        })
        .collect()
}

async fn finish_and_check(
    fleet: &Fleet,
    flow: &str,
    topic: &str,
    producer: JoinHandle<Result<u64>>,
    moved: usize,
) -> usize {
    let produced = producer
        .await
        .expect("producer task")
        .expect("records produced");
    fleet
        .wait_caught_up(flow, topic, PARTITIONS, Duration::from_secs(120))
        .await;
    let source = read_all(Cluster::Source, topic)
        .await
        .expect("source readable");
    let dest = read_all(Cluster::Dest, topic)
        .await
        .expect("destination readable");
    let delivery = assert_complete_in_order(&source, &dest);
    assert_eq!(delivery.records as u64, produced);
    let bound = duplicate_bound(moved);
    assert!(
        delivery.duplicates <= bound,
        "{} duplicates, more than the {bound} a resend of {moved} partitions from their checkpoints allows",
        delivery.duplicates
    );
    delivery.duplicates
}

async fn setup(name: &str, fleet_options: FleetOptions) -> (Fleet, String, String) {
    let topic = unique_name(name);
    let flow = unique_name(&format!("{name}-flow"));
    create_topic(Cluster::Source, &topic, PARTITIONS, &[])
        .await
        .expect("source topic");
    let fleet = Fleet::start(fleet_options).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    (fleet, topic, flow)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_fetchers_partitions_resume_on_the_survivor() {
    let (fleet, topic, flow) = setup("kill-fetcher", options("kill-fetcher")).await;
    let producer = produce_steadily(topic.clone());
    wait_arrived(&fleet, &topic, 10_000).await;

    let before = owned_by(&fleet, &flow, "fetcher-0").await;
    assert!(!before.is_empty(), "fetcher-0 had no partition");
    let fault_at = Instant::now();
    fleet.kill("fetcher-0");
    let resumed = wait_moved_and_running(&fleet, &flow, "fetcher-0", fault_at, &before).await;
    assert!(
        resumed <= LEASE_TTL + FAILOVER_MARGIN,
        "took {resumed:?} to resume"
    );

    let duplicates = finish_and_check(&fleet, &flow, &topic, producer, before.len()).await;
    eprintln!("failover: kill -9 fetcher: resumed in {resumed:?}, {duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_writers_partitions_resume_on_the_survivor() {
    let (fleet, topic, flow) = setup("kill-writer", options("kill-writer")).await;
    let producer = produce_steadily(topic.clone());
    wait_arrived(&fleet, &topic, 10_000).await;

    let before = owned_by(&fleet, &flow, "writer-0").await;
    assert!(!before.is_empty(), "writer-0 had no partition");
    let fault_at = Instant::now();
    fleet.kill("writer-0");
    let resumed = wait_moved_and_running(&fleet, &flow, "writer-0", fault_at, &before).await;
    assert!(
        resumed <= LEASE_TTL + FAILOVER_MARGIN,
        "took {resumed:?} to resume"
    );

    let duplicates = finish_and_check(&fleet, &flow, &topic, producer, before.len()).await;
    eprintln!("failover: kill -9 writer: resumed in {resumed:?}, {duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_leading_coordinator_never_stops_mirroring() {
    let fleet_options = FleetOptions {
        coordinators: 2,
        ..options("kill-leader")
    };
    let (fleet, topic, flow) = setup("kill-leader", fleet_options).await;
    let producer = produce_steadily(topic.clone());
    wait_arrived(&fleet, &topic, 10_000).await;

    let leader = leader_of(&fleet).await.expect("a leader");
    let fault_at = Instant::now();
    fleet.kill(&leader);
    let dest = WatermarkReader::new(Cluster::Dest).expect("destination reader");
    let arrived_at_fault = dest.offset_count(&topic).await.expect("watermarks");
    let mut arrived_without_leader = arrived_at_fault;
    let new_leader = loop {
        assert!(
            fault_at.elapsed() <= LEASE_TTL + FAILOVER_MARGIN,
            "no new leader within {:?}",
            LEASE_TTL + FAILOVER_MARGIN
        );
        if let Some(new_leader) = leader_of(&fleet).await.filter(|id| *id != leader) {
            break new_leader;
        }
        arrived_without_leader = dest.offset_count(&topic).await.expect("watermarks");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = fault_at.elapsed();
    assert!(
        arrived_without_leader > arrived_at_fault,
        "nothing was mirrored while no coordinator led ({arrived_at_fault} records before and after)"
    );
    let duplicates = finish_and_check(&fleet, &flow, &topic, producer, 0).await;
    assert_eq!(duplicates, 0, "the data path does not need the coordinator");
    eprintln!("failover: kill -9 leading coordinator: {new_leader} leads after {took:?}, {duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_fetcher_writes_nothing_once_its_partitions_moved() {
    let (fleet, topic, flow) = setup("zombie", options("zombie")).await;
    let producer = produce_steadily(topic.clone());
    wait_arrived(&fleet, &topic, 10_000).await;

    let before = owned_by(&fleet, &flow, "fetcher-0").await;
    assert!(!before.is_empty(), "fetcher-0 had no partition");
    let old_epochs: BTreeMap<(String, i64), i64> = partitions(&fleet, &flow)
        .await
        .into_iter()
        .map(|partition| {
            (
                (partition.topic.clone(), partition.partition),
                partition.epoch,
            )
        })
        .collect();
    let fault_at = Instant::now();
    fleet.pause("fetcher-0");
    let resumed = wait_moved_and_running(&fleet, &flow, "fetcher-0", fault_at, &before).await;
    assert!(
        resumed <= LEASE_TTL + FAILOVER_MARGIN,
        "took {resumed:?} to resume"
    );

    // Watch every checkpoint write from the moment the zombie runs again.
    let mut etcd = kmirror_test_support::etcd::connect().await;
    let prefix = format!("/kmirror/{}/checkpoints/{flow}/", fleet.name());
    let revision = etcd
        .get("/", None)
        .await
        .expect("etcd")
        .header()
        .expect("header")
        .revision();
    fleet.unpause("fetcher-0");
    let finished = finish_and_check(&fleet, &flow, &topic, producer, before.len()).await;

    // Replay every checkpoint write since the zombie woke: each carries a newer
    // epoch than the one the zombie held.
    let mut watch = etcd
        .watch(
            prefix.as_str(),
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .expect("etcd watch");
    let mut checked = 0;
    while let Ok(Some(response)) = tokio::time::timeout(Duration::from_secs(3), watch.message())
        .await
        .map(|message| message.expect("watch answers"))
    {
        for kv in response.events().iter().filter_map(|event| event.kv()) {
            if kv.value().is_empty() {
                continue;
            }
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let mut parts = key.rsplit('/');
            let partition: i64 = parts.next().unwrap().parse().unwrap();
            let topic_name = parts.next().unwrap().to_string();
            let checkpoint: serde_json::Value =
                serde_json::from_slice(kv.value()).expect("checkpoint json");
            let epoch = checkpoint["epoch"].as_i64().expect("epoch");
            let partition_key = (topic_name.clone(), partition);
            if before.contains_key(&partition_key) {
                let old = old_epochs[&partition_key];
                assert!(
                    epoch > old,
                    "a checkpoint of {topic_name}/{partition} was written with the zombie's epoch {old}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no checkpoint write was seen after the zombie woke"
    );
    eprintln!("failover: SIGSTOP fetcher past its lease: moved in {resumed:?}, {finished} duplicates, {checked} checkpoint writes checked");
}

async fn leader_of(fleet: &Fleet) -> Option<String> {
    let output = fleet.ctl(["members", "-o", "json"]).await;
    if !output.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&output.stdout).ok()?;
    json["members"]
        .as_array()?
        .iter()
        .find(|member| member["leader"].as_bool() == Some(true))
        .and_then(|member| member["id"].as_str())
        .map(str::to_string)
}
