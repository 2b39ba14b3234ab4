//! No silent offset surprises: a source partition whose log start passed its
//! checkpoint (records deleted before they were mirrored) and a source topic
//! deleted and created again under the same name are held, reported with the
//! offsets lost (status, metrics, the audit log), mirror nothing more until an
//! operator resets them, and then continue from where the operator said.
//!
//! Records carry their sequence number in a `seq` header; each test asserts
//! exactly which sequence numbers reach the destination, in order.

use std::time::Duration;

use anyhow::Result;
use kmirror_common::tls::PeerRole;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    create_topic, delete_records, delete_topic, produce, read_all, ConsumedRecord, OutRecord,
};
use kmirror_tests::observability::{members, metrics_url, scrape, sum};
use kmirror_tests::{unique_name, Cluster, Fleet, FleetOptions};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

/// `count` records numbered from `first_sequence`, all into `partition`.
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

/// The sequence numbers of `records`, in order.
fn sequences(records: Option<&Vec<ConsumedRecord>>) -> Vec<u64> {
    records
        .map(|records| {
            records
                .iter()
                .map(|record| {
                    record
                        .headers
                        .iter()
                        .find(|(name, _)| name == "seq")
                        .and_then(|(_, value)| value.as_deref())
                        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
                        .unwrap_or_else(|| panic!("record without a seq header: {record:?}"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The destination's sequence numbers of `topic`'s partition `partition`.
async fn dest_sequences(topic: &str, partition: i32) -> Result<Vec<u64>> {
    let dest = read_all(Cluster::Dest, topic).await?;
    Ok(sequences(dest.get(&partition)))
}

/// One partition's row of `status -o json`.
async fn partition_row(
    fleet: &Fleet,
    flow: &str,
    topic: &str,
    partition: i32,
) -> Result<Value, String> {
    let status = fleet.status_json(flow).await?;
    status["flows"][0]["partitions"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|row| row["topic"] == topic && row["partition"] == partition)
        })
        .cloned()
        .ok_or_else(|| format!("no row for {topic}/{partition} in {status}"))
}

/// Waits until `status` shows the partition held and given back by its fetcher
/// (the leader plans no held partition), and returns its hold.
async fn wait_for_hold(fleet: &Fleet, flow: &str, topic: &str, partition: i32) -> Value {
    let what = format!("{topic}/{partition} to be held and unassigned");
    fleet
        .wait_until(TIMEOUT, &what, || async {
            let row = partition_row(fleet, flow, topic, partition).await?;
            if row["hold"].is_object() && row["fetcher"].is_null() {
                Ok(())
            } else {
                Err(format!("not held, or still assigned: {row}"))
            }
        })
        .await;
    let row = partition_row(fleet, flow, topic, partition)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    row["hold"].clone()
}

/// Waits until the partition is mirrored up to `offset`, without error or hold.
async fn wait_mirrored_to(fleet: &Fleet, flow: &str, topic: &str, partition: i32, offset: i64) {
    let what = format!("{topic}/{partition} to be mirrored up to {offset}");
    fleet
        .wait_until(TIMEOUT, &what, || async {
            let row = partition_row(fleet, flow, topic, partition).await?;
            let done =
                row["mirrored_offset"] == offset && row["error"].is_null() && row["hold"].is_null();
            if done {
                Ok(())
            } else {
                Err(row.to_string())
            }
        })
        .await;
}

/// The audit log's entries whose call ends with `call` and that name `object`.
async fn audit_entries(fleet: &Fleet, call: &str, object: &str) -> Vec<Value> {
    let output = fleet
        .ctl(["audit", "--limit", "1000", "-o", "json"])
        .await
        .assert_success();
    let audit: Value = serde_json::from_str(&output.stdout).expect("audit is JSON");
    audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|entry| {
            entry["call"]
                .as_str()
                .is_some_and(|name| name.ends_with(call))
                && entry["object"] == object
        })
        .cloned()
        .collect()
}

/// Sum of a metric over the fleet's members of `role`.
async fn fleet_metric(fleet: &Fleet, role: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for member in members(fleet).await.expect("members").values() {
        if member.role.to_string() != role {
            continue;
        }
        let url = metrics_url(member).expect("metrics address");
        total += sum(&scrape(url).await.expect("scrape"), name, labels);
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retention_gap_holds_its_partition_with_the_offsets_lost_until_an_operator_resets_it(
) -> Result<()> {
    let topic = unique_name("gap");
    let flow = unique_name("gap-flow");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    // Partition 0's sequence numbers are its offsets.
    produce(Cluster::Source, &topic, records_into(0, 0, 100)).await?;
    produce(Cluster::Source, &topic, records_into(1, 1_000, 100)).await?;
    let fleet = Fleet::start(FleetOptions::new("gap")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &regex::escape(&topic), None).await;
    fleet.wait_caught_up(&flow, &topic, 2, TIMEOUT).await;

    // While the flow is paused, records it has not mirrored are deleted at the
    // source, as retention would: offsets 100..149 are gone.
    fleet.ctl(["flow", "pause", &flow]).await.assert_success();
    produce(Cluster::Source, &topic, records_into(0, 100, 100)).await?;
    delete_records(Cluster::Source, &topic, 0, rdkafka::Offset::Offset(150)).await?;
    fleet.ctl(["flow", "resume", &flow]).await.assert_success();

    let message = "source log start 150 passed checkpoint 100: offsets 100..149 lost";
    let hold = wait_for_hold(&fleet, &flow, &topic, 0).await;
    assert_eq!(hold["reason"], "retention_gap", "{hold}");
    assert_eq!(hold["position"], 100, "{hold}");
    assert_eq!(hold["log_start"], 150, "{hold}");
    assert_eq!(hold["lost_from"], 100, "{hold}");
    assert_eq!(hold["lost_to"], 149, "{hold}");
    assert_eq!(hold["message"], message, "{hold}");
    let status = fleet.ctl(["status", "--flow", &flow]).await;
    assert!(status.is_degraded_status(), "{status}");
    let held_line = status
        .stdout
        .lines()
        .find(|line| line.contains(&format!("held: {message}")))
        .unwrap_or_else(|| panic!("no held partition in {status}"));
    for needle in [flow.as_str(), topic.as_str(), " 0 "] {
        assert!(
            held_line.contains(needle),
            "{needle:?} not in {held_line:?}"
        );
    }
    assert!(
        status.stdout.contains("kmirrorctl partition reset"),
        "{status}"
    );

    // Nothing past the gap is mirrored, while the flow's other partition goes on.
    produce(Cluster::Source, &topic, records_into(0, 200, 20)).await?;
    produce(Cluster::Source, &topic, records_into(1, 1_100, 20)).await?;
    wait_mirrored_to(&fleet, &flow, &topic, 1, 120).await;
    assert_eq!(
        dest_sequences(&topic, 0).await?,
        (0..100).collect::<Vec<_>>()
    );
    assert!(partition_row(&fleet, &flow, &topic, 0).await.unwrap()["hold"].is_object());

    // The event in the audit log, and the metrics.
    let object = format!("partition/{flow}/{topic}/0");
    let events = audit_entries(&fleet, "PartitionHeld", &object).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"], message);
    assert_eq!(events[0]["outcome"], "retention_gap");
    let fetcher_identity = format!("spiffe://kmirror/{}/fetcher/", fleet.name());
    assert!(
        events[0]["identity"]
            .as_str()
            .is_some_and(|identity| identity.starts_with(&fetcher_identity)),
        "{events:?}"
    );
    let labels = [
        ("flow", flow.as_str()),
        ("topic", topic.as_str()),
        ("partition", "0"),
    ];
    assert_eq!(
        fleet_metric(&fleet, "fetcher", "kmirror_offsets_lost_total", &labels).await,
        50.0
    );
    assert_eq!(
        fleet_metric(&fleet, "fetcher", "kmirror_partition_holds_total", &labels).await,
        1.0
    );
    let held = [("flow", flow.as_str()), ("reason", "retention_gap")];
    assert_eq!(
        fleet_metric(&fleet, "coordinator", "kmirror_held_partitions", &held).await,
        1.0
    );

    // Resets that cannot be done are refused, naming what is wrong.
    let reset = |args: &[&str]| {
        let mut command = vec!["partition", "reset"];
        command.extend_from_slice(args);
        command.into_iter().map(String::from).collect::<Vec<_>>()
    };
    fleet
        .ctl(reset(&[&flow, &topic, "0", "--to", "120"]))
        .await
        .assert_failure(1, &["offset 120 is outside the source's range 150..220"]);
    fleet
        .ctl(reset(&[&flow, &topic, "0", "--to", "soon"]))
        .await
        .assert_failure(1, &["expected earliest, latest or a source offset"]);
    fleet
        .ctl(reset(&["no-such-flow", &topic, "0", "--to", "earliest"]))
        .await
        .assert_failure(1, &["flow no-such-flow not found"]);
    fleet
        .ctl(reset(&[&flow, &topic, "7", "--to", "earliest"]))
        .await
        .assert_failure(1, &["partition", "the source topic has 2 partitions"]);
    fleet
        .ctl(reset(&[&flow, "no-such-topic", "0", "--to", "earliest"]))
        .await
        .assert_failure(1, &["topic no-such-topic", "not found"]);
    // A partition that runs is not reset under its fetcher.
    fleet
        .ctl(reset(&[&flow, &topic, "1", "--to", "earliest"]))
        .await
        .assert_failure(1, &["is being mirrored", "pause flow"]);
    let viewer = fleet
        .pki()
        .expect("the fleet runs with TLS")
        .issue(PeerRole::Viewer, "vera");
    fleet
        .ctl_as(
            Some(&viewer),
            reset(&[&flow, &topic, "0", "--to", "earliest"]),
        )
        .await
        .assert_failure(1, &["may not call", "ResetPartition"]);
    assert!(partition_row(&fleet, &flow, &topic, 0).await.unwrap()["hold"].is_object());

    // The operator decides: on from the earliest offset the source has.
    let output = fleet
        .ctl(reset(&[
            &flow, &topic, "0", "--to", "earliest", "-o", "json",
        ]))
        .await
        .assert_success();
    let answer: Value = serde_json::from_str(&output.stdout)?;
    assert_eq!(answer["previous_offset"], 100, "{answer}");
    assert_eq!(answer["offset"], 150, "{answer}");
    assert_eq!(answer["cleared"]["message"], message, "{answer}");
    wait_mirrored_to(&fleet, &flow, &topic, 0, 220).await;
    let expected: Vec<u64> = (0..100).chain(150..220).collect();
    assert_eq!(dest_sequences(&topic, 0).await?, expected);
    assert_eq!(
        dest_sequences(&topic, 1).await?,
        (1_000..1_120).collect::<Vec<_>>()
    );
    let resets = audit_entries(&fleet, "ResetPartition", &object).await;
    let done: Vec<&Value> = resets
        .iter()
        .filter(|entry| entry["outcome"] == "ok")
        .collect();
    assert_eq!(done.len(), 1, "{resets:?}");
    assert_eq!(done[0]["detail"], "to earliest");
    fleet.wait_caught_up(&flow, &topic, 2, TIMEOUT).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_source_topic_holds_its_partition_until_reset_to_an_offset() -> Result<()> {
    let prefix = unique_name("recreate");
    let (kept, recreated) = (format!("{prefix}.kept"), format!("{prefix}.recreated"));
    let flow = unique_name("recreate-flow");
    for topic in [&kept, &recreated] {
        create_topic(Cluster::Source, topic, 1, &[]).await?;
    }
    produce(Cluster::Source, &kept, records_into(0, 0, 50)).await?;
    produce(Cluster::Source, &recreated, records_into(0, 0, 100)).await?;
    let fleet = Fleet::start(FleetOptions::new("recreate")).await;
    fleet.add_clusters().await;
    fleet
        .create_flow(&flow, &format!("{}\\..*", regex::escape(&prefix)), None)
        .await;
    fleet.wait_caught_up(&flow, &kept, 1, TIMEOUT).await;
    fleet.wait_caught_up(&flow, &recreated, 1, TIMEOUT).await;

    // The topic is deleted and created again under its name, with 30 new
    // records: its offsets start at 0 again, below the checkpoint (100).
    fleet.ctl(["flow", "pause", &flow]).await.assert_success();
    delete_topic(Cluster::Source, &recreated).await?;
    fleet
        .wait_until(TIMEOUT, "the deleted topic to be created again", || async {
            create_topic(Cluster::Source, &recreated, 1, &[])
                .await
                .map_err(|error| format!("{error:#}"))
        })
        .await;
    produce(Cluster::Source, &recreated, records_into(0, 1_000, 30)).await?;
    fleet.ctl(["flow", "resume", &flow]).await.assert_success();

    let hold = wait_for_hold(&fleet, &flow, &recreated, 0).await;
    assert_eq!(hold["reason"], "recreated", "{hold}");
    assert_eq!(hold["position"], 100, "{hold}");
    assert_eq!(hold["log_end"], 30, "{hold}");
    assert_eq!(
        hold["message"], "topic recreated: checkpoint 100, source end now 30",
        "{hold}"
    );
    assert!(hold["lost_from"].is_null(), "{hold}");

    // Nothing of the new topic is mirrored, while the flow's other topic goes on.
    produce(Cluster::Source, &kept, records_into(0, 50, 20)).await?;
    produce(Cluster::Source, &recreated, records_into(0, 1_030, 10)).await?;
    wait_mirrored_to(&fleet, &flow, &kept, 0, 70).await;
    assert_eq!(
        dest_sequences(&recreated, 0).await?,
        (0..100).collect::<Vec<_>>()
    );
    let object = format!("partition/{flow}/{recreated}/0");
    let events = audit_entries(&fleet, "PartitionHeld", &object).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "recreated");

    // The operator decides: on from offset 10 of the new topic.
    let output = fleet
        .ctl([
            "partition",
            "reset",
            &flow,
            &recreated,
            "0",
            "--to",
            "10",
            "-o",
            "json",
        ])
        .await
        .assert_success();
    let answer: Value = serde_json::from_str(&output.stdout)?;
    assert_eq!(answer["previous_offset"], 100, "{answer}");
    assert_eq!(answer["offset"], 10, "{answer}");
    wait_mirrored_to(&fleet, &flow, &recreated, 0, 40).await;
    let expected: Vec<u64> = (0..100).chain(1_010..1_040).collect();
    assert_eq!(dest_sequences(&recreated, 0).await?, expected);
    assert_eq!(dest_sequences(&kept, 0).await?, (0..70).collect::<Vec<_>>());
    Ok(())
}
