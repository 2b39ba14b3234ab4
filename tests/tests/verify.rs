//! `kmirrorctl verify`: passes on a healthy flow (records the source deleted are
//! reported as not compared, a config the sync excludes is not compared), and
//! finds what breaks a failover: a destination partition's data deleted, a record
//! deleted (as `kafka-delete-records` does), a synced config changed, a
//! destination topic deleted, then created again and written with other records,
//! the offset map deleted. An unknown flow is a clear error.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    alter_topic_configs, create_topic, delete_records, delete_topic, partition_count, produce,
    read_all, OutRecord,
};
use kmirror_tests::{unique_name, Cluster, CtlOutput, Fleet, FleetOptions};
use rdkafka::Offset;
use serde_json::Value;

const ORDERS_PARTITIONS: i32 = 3;
const ORDERS_RECORDS: u64 = 900;
const EVENTS_PARTITIONS: i32 = 2;
const EVENTS_RECORDS: u64 = 300;
/// Records the source deletes from the start of orders/2 (as retention would).
const SOURCE_DELETED: i64 = 50;

fn report(output: &CtlOutput) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("{output}: not JSON: {error}"))
}

/// The report's partition `partition` of source topic `topic`.
fn partition<'a>(report: &'a Value, topic: &str, partition: i64) -> &'a Value {
    report["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|entry| entry["source_topic"] == topic)
        .unwrap_or_else(|| panic!("no topic {topic} in {report}"))["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|entry| entry["partition"] == partition)
        .unwrap_or_else(|| panic!("no partition {topic}/{partition} in {report}"))
}

/// The findings of one kind about `topic` (and `partition`, or the whole topic
/// when `None`).
fn findings<'a>(
    report: &'a Value,
    kind: &str,
    topic: &str,
    partition: Option<i64>,
) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|finding| {
            finding["kind"] == kind
                && finding["source_topic"] == topic
                && finding["partition"].as_i64() == partition
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_on_a_healthy_flow_and_finds_deleted_data_a_changed_config_and_a_missing_record(
) -> Result<()> {
    let orders = unique_name("verify-orders");
    let events = unique_name("verify-events");
    let flow = unique_name("verify-flow");
    create_topic(
        Cluster::Source,
        &orders,
        ORDERS_PARTITIONS,
        &[("retention.ms", "86400000")],
    )
    .await?;
    create_topic(Cluster::Source, &events, EVENTS_PARTITIONS, &[]).await?;
    produce(
        Cluster::Source,
        &orders,
        KeyedRecords::new(ORDERS_RECORDS, ORDERS_PARTITIONS).generate(),
    )
    .await?;
    produce(
        Cluster::Source,
        &events,
        KeyedRecords {
            first_sequence: 100_000,
            ..KeyedRecords::new(EVENTS_RECORDS, EVENTS_PARTITIONS)
        }
        .generate(),
    )
    .await?;
    let source_counts = |records: &BTreeMap<i32, Vec<_>>| -> BTreeMap<i32, i64> {
        records
            .iter()
            .map(|(partition, records)| (*partition, records.len() as i64))
            .collect()
    };
    let orders_counts = source_counts(&read_all(Cluster::Source, &orders).await?);
    let events_counts = source_counts(&read_all(Cluster::Source, &events).await?);

    let fleet = Fleet::start(FleetOptions::new("verify")).await;
    fleet.add_clusters().await;
    fleet
        .create_flow(&flow, &format!("{orders}|{events}"), None)
        .await;
    fleet
        .wait_for_mirror(&orders, ORDERS_RECORDS as i64, Duration::from_secs(180))
        .await;
    fleet
        .wait_for_mirror(&events, EVENTS_RECORDS as i64, Duration::from_secs(180))
        .await;
    fleet
        .wait_caught_up(&flow, &orders, ORDERS_PARTITIONS, Duration::from_secs(60))
        .await;
    fleet
        .wait_caught_up(&flow, &events, EVENTS_PARTITIONS, Duration::from_secs(60))
        .await;

    // Healthy, with the source's retention at work on orders/2 and a setting of
    // the destination's own that the config sync excludes.
    delete_records(Cluster::Source, &orders, 2, Offset::Offset(SOURCE_DELETED)).await?;
    alter_topic_configs(
        Cluster::Dest,
        &orders,
        &[
            ("retention.ms", "86400000"),
            ("unclean.leader.election.enable", "true"),
        ],
    )
    .await?;
    let started = std::time::Instant::now();
    let healthy = fleet
        .ctl(["verify", &flow, "--sample", "1000", "-o", "json"])
        .await;
    let every_record_compared_in = started.elapsed();
    assert!(healthy.success(), "{healthy}");
    let healthy = report(&healthy);
    assert_eq!(healthy["drift"], false, "{healthy}");
    for (topic, counts) in [(&orders, &orders_counts), (&events, &events_counts)] {
        for (&number, &count) in counts {
            let checked = partition(&healthy, topic, number.into());
            let expired = if *topic == orders && number == 2 {
                SOURCE_DELETED
            } else {
                0
            };
            assert_eq!(
                checked["mirrored_records"], count,
                "{topic}/{number}: {checked}"
            );
            assert_eq!(
                checked["dest_held_records"], count,
                "{topic}/{number}: {checked}"
            );
            assert_eq!(checked["source_expired_records"], expired, "{checked}");
            // A sample larger than the partition compares every record.
            assert_eq!(checked["sampled"], count, "{checked}");
            assert_eq!(checked["sample_matched"], count - expired, "{checked}");
            assert_eq!(checked["sample_unverifiable"], expired, "{checked}");
        }
    }
    let not_compared = findings(&healthy, "samples_unverifiable", &orders, Some(2));
    assert_eq!(not_compared.len(), 1, "{healthy}");
    assert_eq!(not_compared[0]["drift"], false);
    assert_eq!(not_compared[0]["records"], SOURCE_DELETED);
    println!(
        "verify compared {} records in {every_record_compared_in:?}",
        ORDERS_RECORDS + EVENTS_RECORDS - SOURCE_DELETED as u64
    );
    let text = fleet.ctl(["verify", &flow]).await;
    assert!(text.success(), "{text}");
    assert!(
        text.stdout.contains("MIRRORED") && text.stdout.contains(": no drift ("),
        "{text}"
    );

    // Bad input.
    fleet.ctl(["verify", "no-such-flow"]).await.assert_failure(
        1,
        &[
            "cannot verify flow no-such-flow",
            "flow no-such-flow not found",
        ],
    );

    // Drift. Nothing more is written to the destination while it is made.
    fleet.ctl(["flow", "pause", &flow]).await.assert_success();
    // orders/0: every record deleted; orders/1: its first record deleted.
    delete_records(Cluster::Dest, &orders, 0, Offset::End).await?;
    delete_records(Cluster::Dest, &orders, 1, Offset::Offset(1)).await?;
    // A synced config changed in the destination.
    alter_topic_configs(
        Cluster::Dest,
        &orders,
        &[
            ("retention.ms", "172800000"),
            ("unclean.leader.election.enable", "true"),
        ],
    )
    .await?;
    // events: deleted from the destination.
    delete_topic(Cluster::Dest, &events).await?;
    fleet
        .wait_until(
            Duration::from_secs(60),
            "the destination copy of events to be deleted",
            || async {
                match partition_count(Cluster::Dest, &events).await {
                    Ok(None) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    let deleted = fleet.ctl(["verify", &flow, "-o", "json"]).await;
    assert_eq!(deleted.code, Some(1), "{deleted}");
    let deleted = report(&deleted);
    let missing_topic = findings(&deleted, "dest_topic_missing", &events, None);
    assert_eq!(missing_topic.len(), 1, "{deleted}");
    assert_eq!(missing_topic[0]["drift"], true);

    // events created again and written with other records: as many in
    // partition 0 as were mirrored there, none in partition 1.
    fleet
        .wait_until(
            Duration::from_secs(60),
            "events to be created again in the destination",
            || async {
                create_topic(Cluster::Dest, &events, EVENTS_PARTITIONS, &[])
                    .await
                    .map_err(|error| format!("{error:#}"))
            },
        )
        .await;
    let others: Vec<OutRecord> = KeyedRecords {
        first_sequence: 900_000,
        ..KeyedRecords::new(events_counts[&0] as u64, EVENTS_PARTITIONS)
    }
    .generate()
    .into_iter()
    .map(|record| OutRecord {
        partition: Some(0),
        ..record
    })
    .collect();
    produce(Cluster::Dest, &events, others).await?;

    let drifted_output = fleet
        .ctl(["verify", &flow, "--sample", "5", "-o", "json"])
        .await;
    assert_eq!(drifted_output.code, Some(1), "{drifted_output}");
    assert!(
        drifted_output
            .stderr
            .contains(&format!("flow {flow} drifted")),
        "{drifted_output}"
    );
    let drifted = report(&drifted_output);
    assert_eq!(drifted["drift"], true);

    let emptied = findings(&drifted, "records_missing", &orders, Some(0));
    assert_eq!(emptied.len(), 1, "{drifted}");
    assert_eq!(emptied[0]["dest_first_offset"], 0);
    assert_eq!(emptied[0]["dest_last_offset"], orders_counts[&0] - 1);
    assert_eq!(emptied[0]["records"], orders_counts[&0]);
    assert_eq!(emptied[0]["source_first_offset"], 0);

    let one_record = findings(&drifted, "records_missing", &orders, Some(1));
    assert_eq!(one_record.len(), 1, "{drifted}");
    assert_eq!(one_record[0]["dest_first_offset"], 0);
    assert_eq!(one_record[0]["dest_last_offset"], 0);
    assert_eq!(one_record[0]["records"], 1);
    assert_eq!(
        partition(&drifted, &orders, 1)["dest_held_records"],
        orders_counts[&1] - 1
    );

    let config = findings(&drifted, "config", &orders, None);
    assert_eq!(config.len(), 1, "{drifted}");
    assert_eq!(config[0]["config"], "retention.ms");
    assert_eq!(config[0]["source_value"], "86400000");
    assert_eq!(config[0]["dest_value"], "172800000");
    // The excluded config differs too, and is not compared.
    assert!(
        !drifted_output
            .stdout
            .contains("unclean.leader.election.enable"),
        "{drifted_output}"
    );

    let written_again = findings(&drifted, "record_differs", &events, Some(0));
    assert_eq!(written_again.len(), 5, "{drifted}");
    for finding in written_again {
        assert!(
            finding["detail"]
                .as_str()
                .unwrap()
                .contains("value differs"),
            "{finding}"
        );
    }
    let events_emptied = findings(&drifted, "records_missing", &events, Some(1));
    assert_eq!(events_emptied.len(), 1, "{drifted}");
    assert_eq!(events_emptied[0]["records"], events_counts[&1]);
    // orders/2 holds what it mirrored.
    assert!(findings(&drifted, "records_missing", &orders, Some(2)).is_empty());

    // The text report says what is wrong and where.
    let text = fleet.ctl(["verify", &flow]).await;
    assert_eq!(text.code, Some(1), "{text}");
    assert!(
        text.stdout.contains("FINDING")
            && text
                .stdout
                .contains("config retention.ms is 172800000 in the destination")
            && text.stdout.contains("are gone"),
        "{text}"
    );
    assert!(text.stderr.contains("drifted"), "{text}");

    // Without the offset map nothing mirrored can be checked: drift, not a pass.
    let map_topic = drifted["map_topic"]
        .as_str()
        .expect("map topic")
        .to_string();
    delete_topic(Cluster::Dest, &map_topic).await?;
    fleet
        .wait_until(
            Duration::from_secs(60),
            "the offset map topic to be deleted",
            || async {
                match partition_count(Cluster::Dest, &map_topic).await {
                    Ok(None) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    let without_map = fleet.ctl(["verify", &flow, "-o", "json"]).await;
    assert_eq!(without_map.code, Some(1), "{without_map}");
    let without_map = report(&without_map);
    let map_missing: Vec<&Value> = without_map["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|finding| finding["kind"] == "map_missing")
        .collect();
    assert_eq!(map_missing.len(), 1, "{without_map}");
    assert_eq!(map_missing[0]["dest_topic"], map_topic.as_str());
    assert_eq!(map_missing[0]["source_topic"], Value::Null);
    Ok(())
}
