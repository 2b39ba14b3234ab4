//! kmirror across simulated hosts ([`kmirror_tests::netns`]): every etcd, broker,
//! coordinator, fetcher and writer on a network namespace of its own, talking over
//! a bridge, with packet loss and cuts made by nftables rules on that bridge.
//! Every scenario checks every record by sequence number: nothing lost, order kept
//! per partition, duplicates counted and bounded. Times to resume and duplicates
//! are printed; `docs/multi-host.md` records them.
//!
//! These tests need root (namespaces, nftables): without it they print why and
//! pass. They run one at a time (each deployment is a dozen processes and two
//! JVMs on a small machine).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kmirror_common::membership::local_deadline;
use kmirror_tests::hosts::{
    check_sequences, Deployment, SequenceCheck, CHECKPOINT_INTERVAL, COORDINATORS,
    DELIVERY_TIMEOUT, DEST, ETCD, FETCHERS, LEASE_TTL, SOURCE, WRITERS,
};
use kmirror_tests::netns::unavailable_reason;
use kmirror_tests::status::PartitionStatusView;

const PARTITIONS: i32 = 8;
/// Time for everything produced to arrive once the fault is gone.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// One deployment at a time: the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The deployment for one scenario, or `None` (with the reason printed) where
/// simulated hosts cannot be made.
async fn deploy(name: &str) -> Option<Deployment> {
    if let Some(reason) = unavailable_reason() {
        eprintln!("skipping multi-host scenario {name}: {reason}");
        return None;
    }
    let started = Instant::now();
    let deployment = Deployment::start(name, PARTITIONS)
        .await
        .unwrap_or_else(|error| panic!("cannot deploy on simulated hosts: {error:#}"));
    eprintln!("{name}: deployed in {:?}", started.elapsed());
    Some(deployment)
}

/// Reads the destination back and checks every record of `0..per_partition` in
/// every partition.
async fn check_destination(deployment: &Deployment, per_partition: u64) -> SequenceCheck {
    let source = deployment
        .read_sequences(&deployment.source_bootstrap)
        .await
        .expect("source readable");
    let produced = check_sequences(per_partition, PARTITIONS, &source)
        .unwrap_or_else(|error| panic!("the source itself is not as produced: {error}"));
    assert_eq!(produced.duplicates, 0, "the source holds duplicates");
    let dest = deployment
        .read_sequences(&deployment.dest_bootstrap)
        .await
        .expect("destination readable");
    check_sequences(per_partition, PARTITIONS, &dest).unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_on_separate_hosts_mirrors_every_record_exactly() {
    const PER_PARTITION: u64 = 200_000 / PARTITIONS as u64;
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(deployment) = deploy("hosts-baseline").await else {
        return;
    };
    let started = Instant::now();
    deployment
        .produce(0, PER_PARTITION)
        .await
        .expect("produced");
    deployment
        .wait_caught_up(CATCH_UP_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let took = started.elapsed();
    let check = check_destination(&deployment, PER_PARTITION).await;
    assert_eq!(check.duplicates, 0, "no failure, yet duplicates: {check:?}");
    let status = deployment.status().await.expect("status");
    for host in FETCHERS.iter().chain(&WRITERS) {
        assert!(
            status
                .partitions
                .iter()
                .any(|partition| partition.fetcher == *host || partition.writer == *host),
            "{host} works on no partition: the fleet did not spread over its hosts"
        );
    }
    eprintln!(
        "multi-host baseline: {} records mirrored in {took:?}, {} duplicates",
        check.records, check.duplicates
    );
}

/// The background load of the fault scenarios: `CHUNK` records per partition every
/// `TICK`, `CHUNKS` times (3 200 records a second over 8 partitions).
const CHUNK: u64 = 100;
const TICK: Duration = Duration::from_millis(250);

fn records_per_second() -> f64 {
    (CHUNK * PARTITIONS as u64) as f64 / TICK.as_secs_f64()
}

/// Starts the background load; it returns the records produced per partition.
fn produce_steadily(
    deployment: &Deployment,
    chunks: u64,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(deployment.producer().produce_steadily(CHUNK, TICK, chunks))
}

/// Waits until the destination holds at least `count` records; returns when.
async fn wait_arrived(deployment: &Deployment, count: i64, timeout: Duration) -> Instant {
    deployment
        .wait_until(
            timeout,
            &format!("{count} records in the destination"),
            || async {
                match deployment.dest_count().await {
                    Ok(arrived) if arrived >= count => Ok(()),
                    Ok(arrived) => Err(format!("{arrived} arrived")),
                    Err(error) => Err(error),
                }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    Instant::now()
}

/// Waits for the load to end and the flow to catch up, then checks every record.
async fn finish_and_check(
    deployment: &Deployment,
    load: tokio::task::JoinHandle<anyhow::Result<u64>>,
) -> SequenceCheck {
    let per_partition = load
        .await
        .expect("producer task")
        .expect("records produced");
    deployment
        .wait_caught_up(CATCH_UP_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    check_destination(deployment, per_partition).await
}

/// Most duplicates a resend of `partitions` partitions from their checkpoints may
/// cause: what was sent since the last checkpoint etcd took — the checkpoint
/// interval, twice for the checkpoint's own latency, plus a second of in-flight
/// window, plus `checkpoints_blocked`, a time the fetcher kept sending while it
/// could not checkpoint — at the load's rate per partition, half as much again
/// for a fetcher that fell behind on a busy machine and sends faster than the
/// load while it catches up. A fetcher that kept writing past its deadline, for
/// the rest of the cut, would send several times that.
fn duplicate_bound(partitions: usize, checkpoints_blocked: Duration) -> u64 {
    const CATCH_UP: f64 = 1.5;
    let per_partition_rate = records_per_second() / f64::from(PARTITIONS);
    let window_seconds =
        checkpoints_blocked.as_secs_f64() + CHECKPOINT_INTERVAL.as_secs_f64() * 2.0 + 1.0;
    (partitions as f64 * per_partition_rate * window_seconds * CATCH_UP).ceil() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_percent_packet_loss_slows_mirroring_but_loses_and_reorders_nothing() {
    /// Records that must arrive under each loss before it is lifted.
    const UNDER_LOSS: i64 = 3_000;
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(deployment) = deploy("hosts-loss").await else {
        return;
    };
    let load = produce_steadily(&deployment, 60);
    wait_arrived(&deployment, 4_000, Duration::from_secs(60)).await;

    let network = deployment.network();
    let mut rates = Vec::new();
    for (link, these, those) in [
        ("fetchers-writers", &FETCHERS[..], &WRITERS[..]),
        ("fetchers-source", &FETCHERS[..], &[SOURCE][..]),
    ] {
        network.lose(these, those, 10).expect("loss rules");
        let arrived_before = deployment.dest_count().await.expect("end offsets");
        let lossy_since = Instant::now();
        wait_arrived(
            &deployment,
            arrived_before + UNDER_LOSS,
            Duration::from_secs(90),
        )
        .await;
        let rate = UNDER_LOSS as f64 / lossy_since.elapsed().as_secs_f64();
        network.heal().expect("loss rules removed");
        eprintln!("multi-host loss: 10 % loss {link}: {rate:.0} records/s mirrored");
        rates.push((link, rate));
    }

    let check = finish_and_check(&deployment, load).await;
    assert!(
        check.duplicates <= duplicate_bound(PARTITIONS as usize, Duration::ZERO),
        "{check:?}: more duplicates than a resend of every partition allows"
    );
    eprintln!(
        "multi-host loss: {} records, {} duplicates, {} resends; rates under loss {rates:?} (load {:.0} records/s)",
        check.records,
        check.duplicates,
        check.resends,
        records_per_second()
    );
}

/// How far past the lease TTL a failover may take.
const FAILOVER_MARGIN: Duration = Duration::from_secs(5);

/// Who works on a partition: its fetcher or its writer.
type Owner = fn(&PartitionStatusView) -> &str;

fn fetcher_of(partition: &PartitionStatusView) -> &str {
    &partition.fetcher
}

fn writer_of(partition: &PartitionStatusView) -> &str {
    &partition.writer
}

/// Mirrored offset and epoch of each partition `member` works on.
async fn owned_by(
    deployment: &Deployment,
    member: &str,
    owner: Owner,
) -> BTreeMap<i64, (i64, i64)> {
    let status = deployment.status().await.expect("status");
    status
        .partitions
        .iter()
        .filter(|partition| owner(partition) == member)
        .map(|partition| {
            (
                partition.partition,
                (partition.mirrored_offset, partition.epoch),
            )
        })
        .collect()
}

/// Waits until every partition of `before` runs on another member than `member`
/// and mirrored past where it stood; returns how long after `fault_at` that was.
async fn wait_moved_and_running(
    deployment: &Deployment,
    member: &str,
    owner: Owner,
    before: &BTreeMap<i64, (i64, i64)>,
    fault_at: Instant,
) -> Duration {
    let what = format!("the partitions of {member} to run elsewhere");
    deployment
        .wait_until(LEASE_TTL + Duration::from_secs(60), &what, || async {
            let status = deployment.status().await?;
            for (partition, (mirrored_before, _)) in before {
                let Some(now) = status
                    .partitions
                    .iter()
                    .find(|status| status.partition == *partition)
                else {
                    return Err(format!("partition {partition} not in status"));
                };
                if owner(now) == member {
                    return Err(format!("partition {partition} still on {member}"));
                }
                if now.mirrored_offset <= *mirrored_before {
                    return Err(format!(
                        "partition {partition} not past {mirrored_before} yet"
                    ));
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    fault_at.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetcher_cut_from_etcd_stops_at_its_deadline_and_its_partitions_resume_elsewhere() {
    /// Records per partition produced once the cut is healed.
    const AFTER_HEALING: u64 = 200;
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(deployment) = deploy("hosts-cut-fetcher").await else {
        return;
    };
    let network = deployment.network();
    let cut_fetcher = FETCHERS[0];
    let load = produce_steadily(&deployment, 60);
    wait_arrived(&deployment, 4_000, Duration::from_secs(60)).await;

    let before = owned_by(&deployment, cut_fetcher, fetcher_of).await;
    assert!(!before.is_empty(), "{cut_fetcher} had no partition");
    let revision = deployment.etcd_revision().await.expect("etcd revision");
    network.cut(&[cut_fetcher], &[ETCD]).expect("cut");
    let cut_at = Instant::now();
    let resumed =
        wait_moved_and_running(&deployment, cut_fetcher, fetcher_of, &before, cut_at).await;
    assert!(
        deployment
            .member_log(cut_fetcher)
            .contains("lease counted as lost"),
        "{cut_fetcher} did not count its lease as lost before its partitions moved"
    );
    assert!(
        resumed <= LEASE_TTL + FAILOVER_MARGIN,
        "took {resumed:?} to resume"
    );

    // Still cut from etcd, the fetcher reaches Kafka and the writers. Until its
    // local deadline it sends without being able to checkpoint: that much comes
    // again from the new owner. Had it sent anything after its deadline, a moved
    // partition would show a second resend or more duplicates than that.
    let cut_check = finish_and_check(&deployment, load).await;
    assert!(
        cut_check.resends <= before.len() as u64,
        "{cut_check:?}: more resends than the {} moved partitions make",
        before.len()
    );
    assert!(
        cut_check.duplicates <= duplicate_bound(before.len(), local_deadline(LEASE_TTL)),
        "{cut_check:?}: more duplicates than a resend of {} partitions allows",
        before.len()
    );

    // Healed, it registers again under a new lease; no checkpoint written since
    // the cut carries the epoch it held.
    network.heal().expect("heal");
    deployment
        .wait_until(
            LEASE_TTL + Duration::from_secs(30),
            &format!("{cut_fetcher} to register again"),
            || async {
                let members = deployment.ctl(&["members", "-o", "json"]).await;
                if members.stdout.contains(&format!("\"{cut_fetcher}\"")) {
                    Ok(())
                } else {
                    Err(members.to_string())
                }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let per_partition = cut_check.records / PARTITIONS as u64;
    deployment
        .produce(per_partition, per_partition + AFTER_HEALING)
        .await
        .expect("produced");
    deployment
        .wait_caught_up(CATCH_UP_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let healed_check = check_destination(&deployment, per_partition + AFTER_HEALING).await;
    let writes = deployment
        .checkpoint_writes_since(revision)
        .await
        .expect("checkpoint history");
    // Once a moved partition's checkpoint carries a newer epoch, none may carry
    // the old one again (written before the cut, one may).
    let mut moved = BTreeSet::new();
    let mut checked = 0;
    for (topic, partition, epoch) in &writes {
        let Some((_, old_epoch)) = before.get(partition).filter(|_| *topic == deployment.topic)
        else {
            continue;
        };
        if epoch > old_epoch {
            moved.insert(*partition);
        } else {
            assert!(
                !moved.contains(partition),
                "partition {partition}: a checkpoint carries {cut_fetcher}'s epoch {old_epoch} after the partition moved"
            );
        }
        checked += 1;
    }
    assert_eq!(
        moved.len(),
        before.len(),
        "not every moved partition has a checkpoint with a newer epoch: {moved:?} of {before:?}"
    );
    eprintln!(
        "multi-host cut fetcher from etcd: {} partitions resumed elsewhere in {resumed:?}; \
         while cut {} duplicates, {} resends; after healing {} records, {} duplicates; \
         {checked} checkpoint writes checked",
        before.len(),
        cut_check.duplicates,
        cut_check.resends,
        healed_check.records,
        healed_check.duplicates
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standby_leads_when_the_leaders_host_is_cut_from_etcd_and_mirroring_never_stops() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(deployment) = deploy("hosts-cut-leader").await else {
        return;
    };
    let load = produce_steadily(&deployment, 60);
    wait_arrived(&deployment, 4_000, Duration::from_secs(60)).await;

    let leader = deployment.leader().await.expect("a leader");
    let standby = COORDINATORS
        .into_iter()
        .find(|coordinator| *coordinator != leader)
        .expect("a standby");
    // The cut leader still accepts connections but cannot read etcd.
    deployment.prefer_coordinator(standby);
    deployment
        .network()
        .cut(&[leader.as_str()], &[ETCD])
        .expect("cut");
    let cut_at = Instant::now();
    let arrived_at_cut = deployment.dest_count().await.expect("end offsets");
    let mut arrived_without_new_leader = arrived_at_cut;
    loop {
        assert!(
            cut_at.elapsed() <= LEASE_TTL + FAILOVER_MARGIN,
            "{standby} does not lead within {:?} of the cut",
            LEASE_TTL + FAILOVER_MARGIN
        );
        if deployment.leader().await.as_deref() == Some(standby) {
            break;
        }
        arrived_without_new_leader = deployment.dest_count().await.expect("end offsets");
    }
    let took = cut_at.elapsed();
    assert!(
        arrived_without_new_leader > arrived_at_cut,
        "nothing was mirrored between the cut and the new leader ({arrived_at_cut} records before and after)"
    );
    assert!(
        deployment
            .member_log(&leader)
            .contains("stepped down as leader"),
        "the cut coordinator {leader} did not step down"
    );

    let check = finish_and_check(&deployment, load).await;
    assert_eq!(
        check.duplicates, 0,
        "the data path does not need the coordinator: {check:?}"
    );
    eprintln!(
        "multi-host cut leader from etcd: {standby} leads after {took:?}; {} records mirrored meanwhile; \
         {} records, {} duplicates",
        arrived_without_new_leader - arrived_at_cut,
        check.records,
        check.duplicates
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_cut_from_the_destination_hands_its_partitions_to_writers_that_can_deliver() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(deployment) = deploy("hosts-cut-writer").await else {
        return;
    };
    let network = deployment.network();
    let cut_writer = WRITERS[0];
    let load = produce_steadily(&deployment, 160);
    wait_arrived(&deployment, 4_000, Duration::from_secs(60)).await;

    let before = owned_by(&deployment, cut_writer, writer_of).await;
    assert!(!before.is_empty(), "{cut_writer} had no partition");
    let marks = format!("/kmirror/{}/undeliverable/", deployment.fleet);
    network.cut(&[cut_writer], &[DEST]).expect("cut");
    let cut_at = Instant::now();
    // Its fetchers and etcd still reach it: only its deliveries time out.
    let resumed = wait_moved_and_running(&deployment, cut_writer, writer_of, &before, cut_at).await;
    assert!(
        resumed <= DELIVERY_TIMEOUT + LEASE_TTL + FAILOVER_MARGIN,
        "took {resumed:?} to resume (delivery timeout {DELIVERY_TIMEOUT:?})"
    );
    let said = deployment
        .etcdctl(&["get", "--prefix", "--keys-only", &marks])
        .await
        .expect("etcdctl get");
    assert!(
        said.contains(&format!("{marks}{cut_writer}/")),
        "{cut_writer} did not say in etcd that it cannot deliver: {said:?}"
    );

    // What the cut writer still holds times out before the cut heals, so none
    // of it is delivered late on top of what the new writers wrote.
    tokio::time::sleep(DELIVERY_TIMEOUT).await;
    network.heal().expect("heal");
    deployment
        .wait_until(
            Duration::from_secs(30),
            &format!("{cut_writer} to withdraw its mark"),
            || async {
                let marks_now = deployment
                    .etcdctl(&["get", "--prefix", "--keys-only", &marks])
                    .await?;
                if marks_now.trim().is_empty() {
                    Ok(())
                } else {
                    Err(marks_now)
                }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));

    let check = finish_and_check(&deployment, load).await;
    assert!(
        check.resends <= before.len() as u64,
        "{check:?}: more resends than the {} moved partitions make",
        before.len()
    );
    assert!(
        check.duplicates <= duplicate_bound(before.len(), Duration::ZERO),
        "{check:?}: more duplicates than a resend of {} partitions allows",
        before.len()
    );
    eprintln!(
        "multi-host cut writer from the destination: {} partitions resumed on other writers in {resumed:?} \
         (delivery timeout {DELIVERY_TIMEOUT:?}); {} records, {} duplicates, {} resends",
        before.len(),
        check.records,
        check.duplicates,
        check.resends
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_split_in_two_runs_every_partition_on_the_half_with_etcd_only() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(deployment) = deploy("hosts-split").await else {
        return;
    };
    let network = deployment.network();
    // One half keeps etcd; the brokers stay reachable from both, as when a
    // rack's switch to the others fails but both still reach the clusters.
    let with_etcd = [ETCD, COORDINATORS[0], FETCHERS[0], WRITERS[0]];
    let without = [
        COORDINATORS[1],
        FETCHERS[1],
        FETCHERS[2],
        WRITERS[1],
        WRITERS[2],
    ];
    let load = produce_steadily(&deployment, 120);
    wait_arrived(&deployment, 4_000, Duration::from_secs(60)).await;

    let before = deployment.status().await.expect("status");
    let epochs_before: BTreeMap<i64, i64> = before
        .partitions
        .iter()
        .map(|partition| (partition.partition, partition.epoch))
        .collect();
    let revision = deployment.etcd_revision().await.expect("etcd revision");
    deployment.prefer_coordinator(COORDINATORS[0]);
    network.cut(&without, &with_etcd).expect("cut");
    let cut_at = Instant::now();
    deployment
        .wait_until(
            LEASE_TTL + Duration::from_secs(60),
            "every partition to run on the half with etcd",
            || async {
                let status = deployment.status().await?;
                for partition in &status.partitions {
                    if partition.fetcher != FETCHERS[0] || partition.writer != WRITERS[0] {
                        return Err(format!(
                            "partition {} on {} and {}",
                            partition.partition, partition.fetcher, partition.writer
                        ));
                    }
                }
                if status.partitions.len() != PARTITIONS as usize {
                    return Err(format!("{} partitions in status", status.partitions.len()));
                }
                Ok(())
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let resumed = cut_at.elapsed();
    assert!(
        resumed <= LEASE_TTL + FAILOVER_MARGIN + Duration::from_secs(5),
        "took {resumed:?} for the half with etcd to take every partition"
    );
    for member in [FETCHERS[1], FETCHERS[2], WRITERS[1], WRITERS[2]] {
        assert!(
            deployment
                .member_log(member)
                .contains("lease counted as lost"),
            "{member}, cut from etcd, did not count its lease as lost"
        );
    }

    let split_check = finish_and_check(&deployment, load).await;
    network.heal().expect("heal");
    let moved = epochs_before.len() as u64;
    assert!(
        split_check.resends <= moved,
        "{split_check:?}: more resends than the {moved} partitions make"
    );
    assert!(
        split_check.duplicates <= duplicate_bound(moved as usize, local_deadline(LEASE_TTL)),
        "{split_check:?}: more duplicates than a resend of every partition allows"
    );

    // Healed, the other half registers again and takes its share back; nothing
    // is lost on the way.
    deployment
        .wait_until(
            LEASE_TTL + Duration::from_secs(30),
            "the other half to register again",
            || async {
                let members = deployment.ctl(&["members", "-o", "json"]).await;
                match without
                    .iter()
                    .find(|member| !members.stdout.contains(&format!("\"{member}\"")))
                {
                    Some(missing) => Err(format!("{missing} not registered: {members}")),
                    None => Ok(()),
                }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let per_partition = split_check.records / PARTITIONS as u64;
    deployment
        .produce(per_partition, per_partition + 200)
        .await
        .expect("produced");
    deployment
        .wait_caught_up(CATCH_UP_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let healed_check = check_destination(&deployment, per_partition + 200).await;

    // Checkpoints moved on one side only: once a partition's checkpoint carries
    // a newer epoch than it had before the split, none carries an older one.
    let writes = deployment
        .checkpoint_writes_since(revision)
        .await
        .expect("checkpoint history");
    let mut newest: BTreeMap<i64, i64> = BTreeMap::new();
    for (topic, partition, epoch) in &writes {
        if *topic != deployment.topic {
            continue;
        }
        let seen = newest.entry(*partition).or_insert(*epoch);
        assert!(
            *epoch >= *seen,
            "partition {partition}: a checkpoint of epoch {epoch} after one of epoch {seen}: \
             both sides moved it"
        );
        *seen = *epoch;
    }
    eprintln!(
        "multi-host split: every partition on the half with etcd after {resumed:?}; {} records, \
         {} duplicates, {} resends; after healing {} records, {} duplicates; \
         {} checkpoint writes checked",
        split_check.records,
        split_check.duplicates,
        split_check.resends,
        healed_check.records,
        healed_check.duplicates,
        writes.len()
    );
}
