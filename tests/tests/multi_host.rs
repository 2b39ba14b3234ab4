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

use std::time::{Duration, Instant};

use kmirror_tests::hosts::{check_sequences, Deployment, SequenceCheck, FETCHERS, WRITERS};
use kmirror_tests::netns::unavailable_reason;

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
