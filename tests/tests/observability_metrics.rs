//! Metrics: every member serves Prometheus metrics at the address it registers;
//! during a mirror the record counters of fetchers and writers add up to the
//! records mirrored and the lag falls to zero, in records and in seconds. With
//! `--metrics-labels topic`, partition series are added up per topic.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kmirror_common::schema::MemberInfo;
use kmirror_common::Role;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{create_topic, produce, Cluster};
use kmirror_tests::observability::{
    http_get, members, metrics_url, sample_value, samples, scrape, sum,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn counters_match_the_records_mirrored_and_lag_falls_to_zero() -> Result<()> {
    const FIRST: u64 = 3_000;
    const SECOND: u64 = 1_000;
    const PARTITIONS: i32 = 3;
    let topic = unique_name("metered");
    let flow = unique_name("metered-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(FIRST, PARTITIONS).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions::new("metered")).await;
    let members = members(&fleet).await?;
    for (id, member) in &members {
        let url = metrics_url(member)?;
        let (status, _) = http_get(url, "/healthz").await?;
        ensure!(status == 200, "{id}: /healthz answered {status}");
        let scraped = scrape(url).await?;
        let role = member.role.to_string();
        ensure!(
            sum(&scraped, "kmirror_build_info", &[("role", role.as_str())]) == 1.0,
            "{id} reports its build"
        );
    }
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, FIRST as i64, Duration::from_secs(120))
        .await;
    wait_for_counters(&fleet, &members, &topic, FIRST, PARTITIONS).await;

    // More records while the flow runs: the counters follow, the lag falls again.
    let mut more = KeyedRecords::new(SECOND, PARTITIONS);
    more.first_sequence = FIRST;
    produce(Cluster::Source, &topic, more.generate()).await?;
    fleet
        .wait_for_mirror(&topic, (FIRST + SECOND) as i64, Duration::from_secs(120))
        .await;
    let totals = wait_for_counters(&fleet, &members, &topic, FIRST + SECOND, PARTITIONS).await;
    ensure!(totals.produced_bytes > 0.0, "bytes are counted: {totals:?}");
    ensure!(
        totals.replicate_streams >= 1.0,
        "writers count their streams: {totals:?}"
    );

    let coordinator = members
        .values()
        .find(|member| member.role == Role::Coordinator)
        .context("a coordinator")?;
    let scraped = scrape(metrics_url(coordinator)?).await?;
    ensure!(sum(&scraped, "kmirror_leader", &[]) == 1.0, "it leads");
    ensure!(
        sum(
            &scraped,
            "kmirror_reconcile_rounds_total",
            &[("outcome", "ok")]
        ) >= 1.0,
        "it counts its rounds"
    );
    ensure!(sum(&scraped, "kmirror_topics_created_total", &[]) >= 1.0);
    ensure!(sum(&scraped, "kmirror_planned_partitions", &[]) >= f64::from(PARTITIONS));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn per_topic_labels_add_partitions_up() -> Result<()> {
    const RECORDS: u64 = 600;
    const PARTITIONS: i32 = 3;
    let topic = unique_name("metered-topic");
    let flow = unique_name("metered-topic-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(RECORDS, PARTITIONS).generate(),
    )
    .await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        env: vec![("KMIRROR_METRICS_LABELS".to_string(), "topic".to_string())],
        ..FleetOptions::new("metered-topic")
    })
    .await;
    let members = members(&fleet).await?;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(120))
        .await;
    let totals = wait_for_counters(&fleet, &members, &topic, RECORDS, 1).await;
    ensure!(totals.produced_records == RECORDS as f64);

    let fetcher = members
        .values()
        .find(|member| member.role == Role::Fetcher)
        .context("a fetcher")?;
    let scraped = scrape(metrics_url(fetcher)?).await?;
    for name in [
        "kmirror_fetched_records_total",
        "kmirror_lag_records",
        "kmirror_in_flight_batches",
    ] {
        let series = samples(&scraped, name, &[("topic", topic.as_str())]);
        ensure!(series.len() == 1, "{name}: one series for the topic");
        ensure!(
            series[0].labels.get("partition").is_none(),
            "{name} has no partition label"
        );
    }
    ensure!(sum(&scraped, "kmirror_assigned_partitions", &[]) == f64::from(PARTITIONS));
    Ok(())
}

/// What the fleet's members report about one topic.
#[derive(Debug, Default)]
struct Totals {
    fetched_records: f64,
    produced_records: f64,
    fetched_bytes: f64,
    produced_bytes: f64,
    restarts: f64,
    lag_records: f64,
    lag_seconds: f64,
    lag_series: usize,
    replicate_streams: f64,
}

/// Waits until the writers report `records` produced records of `topic`, the
/// fetchers as many fetched (more only after a partition restarted), and the
/// lag of each of its `lag_series` series is zero, in records and in seconds.
async fn wait_for_counters(
    fleet: &Fleet,
    members: &BTreeMap<String, MemberInfo>,
    topic: &str,
    records: u64,
    lag_series: i32,
) -> Totals {
    let expected = records as f64;
    let last = std::sync::Mutex::new(Totals::default());
    let what = format!("the metrics of {topic} to show {records} records mirrored and no lag");
    fleet
        .wait_until(Duration::from_secs(60), &what, || {
            let read = totals(members, topic);
            let last = &last;
            async move {
                let totals = read.await.map_err(|error| format!("{error:#}"))?;
                let counted = totals.produced_records == expected
                    && (totals.fetched_records == expected
                        || (totals.restarts > 0.0 && totals.fetched_records > expected));
                let caught_up = totals.lag_series == lag_series as usize
                    && totals.lag_records == 0.0
                    && totals.lag_seconds == 0.0;
                let state = format!("{totals:?}");
                *last.lock().expect("totals lock") = totals;
                if counted && caught_up {
                    Ok(())
                } else {
                    Err(state)
                }
            }
        })
        .await;
    let last = last.into_inner().expect("totals lock");
    if last.restarts == 0.0 {
        assert_eq!(
            last.fetched_bytes, last.produced_bytes,
            "without restarts, as many bytes leave the fetchers as the writers produce"
        );
    }
    last
}

async fn totals(members: &BTreeMap<String, MemberInfo>, topic: &str) -> Result<Totals> {
    let mut totals = Totals::default();
    let of_topic = [("topic", topic)];
    for member in members.values() {
        let scraped = scrape(metrics_url(member)?).await?;
        match member.role {
            Role::Fetcher => {
                totals.fetched_records += sum(&scraped, "kmirror_fetched_records_total", &of_topic);
                totals.fetched_bytes += sum(&scraped, "kmirror_fetched_bytes_total", &of_topic);
                totals.restarts += sum(&scraped, "kmirror_partition_restarts_total", &of_topic);
                totals.lag_records += sum(&scraped, "kmirror_lag_records", &of_topic);
                let lag_seconds = samples(&scraped, "kmirror_lag_seconds", &of_topic);
                totals.lag_series += lag_seconds.len();
                for sample in lag_seconds {
                    totals.lag_seconds = totals.lag_seconds.max(sample_value(sample));
                }
            }
            Role::Writer => {
                totals.produced_records +=
                    sum(&scraped, "kmirror_produced_records_total", &of_topic);
                totals.produced_bytes += sum(&scraped, "kmirror_produced_bytes_total", &of_topic);
                totals.replicate_streams += sum(&scraped, "kmirror_replicate_streams", &[]);
            }
            Role::Coordinator => {}
        }
    }
    Ok(totals)
}
