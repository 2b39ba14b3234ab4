//! Guarantee: the whole fleet secured at once mirrors exactly and survives the
//! loss of a fetcher. The source cluster is reached over SASL_SSL with
//! SCRAM-SHA-512, the destination over SSL with kmirror's client certificate
//! (mutual TLS), both with kmirror's ACLs only (`deploy/local/stack up --secure`,
//! a private stack); etcd requires TLS client certificates and RBAC, each role
//! logging in as its own user limited to the fleet's prefix (a private etcd);
//! and every connection between members and from kmirrorctl is mutual TLS.
//!
//! 100 000 keyed records with headers and timestamps over six partitions: the
//! first 60 000 are mirrored exactly (every record compared: key, value,
//! headers, timestamp, per-partition order); the other 40 000 are produced
//! while a fetcher is killed with SIGKILL, and its partitions run again on the
//! survivor: every record arrives, first copies in source order, duplicates
//! within what a resend from the last checkpoints allows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, produce, read_all, record_count, WatermarkReader,
};
use kmirror_tests::ordering::assert_complete_in_order;
use kmirror_tests::secure_etcd::SecureEtcd;
use kmirror_tests::secure_stack::{SecureStack, Side};
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 6;
/// Records mirrored before the fault, then produced while it happens.
const BEFORE_FAULT: u64 = 60_000;
const DURING_FAULT: u64 = 40_000;
/// The load produced through the fault: a chunk every tick.
const CHUNK: u64 = 1_000;
const TICK: Duration = Duration::from_millis(200);
const LEASE_TTL: Duration = Duration::from_secs(4);
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// How far past the lease TTL the killed fetcher's partitions may take to run again.
const FAILOVER_MARGIN: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(180);

fn path(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Mirrored offset of every partition `member` fetches, by topic and partition.
async fn fetched_by(fleet: &Fleet, flow: &str, member: &str) -> BTreeMap<i64, i64> {
    let partitions = match fleet.flow_status(flow).await {
        Ok(status) => status.partitions,
        Err(_) => Vec::new(),
    };
    partitions
        .into_iter()
        .filter(|partition| partition.fetcher == member)
        .map(|partition| (partition.partition, partition.mirrored_offset))
        .collect()
}

/// Produces [`DURING_FAULT`] records after the first [`BEFORE_FAULT`], a chunk
/// per tick, into the secured source.
fn produce_during_fault(secure: &SecureStack, topic: String) -> JoinHandle<Result<()>> {
    let source = secure.admin(Side::Source);
    tokio::spawn(async move {
        for chunk in 0..DURING_FAULT / CHUNK {
            let next_tick = tokio::time::Instant::now() + TICK;
            let records = KeyedRecords {
                first_sequence: BEFORE_FAULT + chunk * CHUNK,
                ..KeyedRecords::new(CHUNK, PARTITIONS)
            };
            produce(source, &topic, records.generate()).await?;
            tokio::time::sleep_until(next_tick).await;
        }
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_secured_end_to_end_mirrors_exactly_and_survives_a_killed_fetcher() -> Result<()> {
    let started = Instant::now();
    // The brokers start on other threads while etcd's certificates are made.
    let secure_task = tokio::spawn(SecureStack::start("fleet"));
    let etcd = SecureEtcd::start("secure-fleet").await?;
    etcd.enable_auth()?;
    let fleet_name = unique_name("secure-fleet");
    let role_env = etcd.fleet_users(&fleet_name)?;
    let secure = secure_task.await??;
    let topic = unique_name("secure-fleet");
    let flow = unique_name("secure-fleet-flow");
    create_topic(secure.admin(Side::Source), &topic, PARTITIONS, &[]).await?;
    produce(
        secure.admin(Side::Source),
        &topic,
        KeyedRecords::new(BEFORE_FAULT, PARTITIONS).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions {
        name: fleet_name,
        name_is_unique: true,
        etcd_endpoint: Some(etcd.endpoint.clone()),
        etcd_connect_options: Some(etcd.root_options()?),
        role_env,
        clusters: Some((secure.admin(Side::Source), secure.admin(Side::Dest))),
        lease_ttl: LEASE_TTL,
        checkpoint_interval: CHECKPOINT_INTERVAL,
        ..FleetOptions::default()
    })
    .await;
    let ready_at = started.elapsed();
    // SCRAM-SHA-512 over SASL_SSL from the source's Java client properties;
    // kmirror's client certificate (mTLS) for the destination's.
    for (cluster, file) in [("source", "source.properties"), ("dest", "dest.properties")] {
        let properties = std::fs::read_to_string(secure.file(file))?;
        let expected = match cluster {
            "source" => "sasl.mechanism=SCRAM-SHA-512",
            _ => "ssl.keystore.location=",
        };
        assert!(properties.contains(expected), "{file}: {properties}");
        fleet
            .ctl([
                "cluster",
                "add",
                cluster,
                "--property-file",
                &path(&secure.file(file)),
            ])
            .await
            .assert_success();
    }
    fleet.create_flow(&flow, &topic, None).await;
    let mirror_started = Instant::now();
    fleet
        .wait_for_mirror(&topic, BEFORE_FAULT as i64, TIMEOUT)
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, TIMEOUT)
        .await;
    let mirrored_in = mirror_started.elapsed();
    let source = read_all(secure.admin(Side::Source), &topic).await?;
    let dest = read_all(secure.admin(Side::Dest), &topic).await?;
    assert_eq!(record_count(&source), BEFORE_FAULT as usize);
    assert_same_partitions(&source, &dest);

    // The rest arrives while fetcher-0 is killed.
    let producer = produce_during_fault(&secure, topic.clone());
    let dest_reader = WatermarkReader::new(secure.admin(Side::Dest))?;
    let mid_stream = (BEFORE_FAULT + DURING_FAULT / 8) as i64;
    fleet
        .wait_until(TIMEOUT, "records to flow again", || async {
            match dest_reader.offset_count(&topic).await {
                Ok(count) if count >= mid_stream => Ok(()),
                Ok(count) => Err(format!("{count} of {mid_stream} records")),
                Err(error) => Err(format!("{error:#}")),
            }
        })
        .await;
    let before = fetched_by(&fleet, &flow, "fetcher-0").await;
    assert!(!before.is_empty(), "fetcher-0 fetched no partition");
    let killed_at = Instant::now();
    fleet.kill("fetcher-0");
    fleet
        .wait_until(
            LEASE_TTL + FAILOVER_MARGIN + Duration::from_secs(30),
            "the killed fetcher's partitions to run on the survivor",
            || async {
                let now = fetched_by(&fleet, &flow, "fetcher-1").await;
                for (partition, mirrored_before) in &before {
                    match now.get(partition) {
                        Some(mirrored) if mirrored > mirrored_before => {}
                        Some(_) => return Err(format!("{partition} not past {mirrored_before}")),
                        None => return Err(format!("{partition} not on fetcher-1 yet")),
                    }
                }
                Ok(())
            },
        )
        .await;
    let resumed_in = killed_at.elapsed();
    assert!(
        resumed_in <= LEASE_TTL + FAILOVER_MARGIN,
        "the killed fetcher's partitions took {resumed_in:?} to run again"
    );
    producer.await??;
    let total = BEFORE_FAULT + DURING_FAULT;
    fleet.wait_for_mirror(&topic, total as i64, TIMEOUT).await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, TIMEOUT)
        .await;

    let source = read_all(secure.admin(Side::Source), &topic).await?;
    let dest = read_all(secure.admin(Side::Dest), &topic).await?;
    assert_eq!(record_count(&source), total as usize);
    let delivery = assert_complete_in_order(&source, &dest);
    assert_eq!(delivery.records, total as usize);
    // A resend from the last checkpoint of each moved partition: what it sent
    // since, at the load's rate, with slack for the checkpoint write's latency.
    let rate_per_partition = CHUNK as f64 / TICK.as_secs_f64() / PARTITIONS as f64;
    let resend_seconds = CHECKPOINT_INTERVAL.as_secs_f64() * 2.0 + 1.0;
    let bound = (before.len() as f64 * rate_per_partition * resend_seconds).ceil() as usize;
    assert!(
        delivery.duplicates <= bound,
        "{} duplicates, more than the {bound} a resend of {} partitions from their checkpoints allows",
        delivery.duplicates,
        before.len()
    );
    eprintln!(
        "secure fleet: ready after {ready_at:?}, {BEFORE_FAULT} records mirrored exactly in {mirrored_in:?}; \
         kill -9 fetcher-0 ({} partitions): running again in {resumed_in:?}, {} duplicates (bound {bound}); \
         {total} records, wall time {:?}",
        before.len(),
        delivery.duplicates,
        started.elapsed()
    );
    Ok(())
}
