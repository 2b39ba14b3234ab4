//! Flow options end to end: rename policies, start positions, topic configs that
//! follow the source, pause and resume, and migration mode with `flow wait`.

use std::time::Duration;

use anyhow::{anyhow, Result};
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::fleet::{DEST_CLUSTER, SOURCE_CLUSTER};
use kmirror_tests::kafka::{
    alter_topic_configs, assert_same_partitions, create_topic, produce, read_all, topic_config,
    Cluster, WatermarkReader,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

/// `flow create NAME` from the fleet's source to its destination with `options`.
async fn create_flow(fleet: &Fleet, flow: &str, include: &str, options: &[&str]) {
    let mut args = vec![
        "flow",
        "create",
        flow,
        "--source",
        SOURCE_CLUSTER,
        "--dest",
        DEST_CLUSTER,
        "--include",
        include,
    ];
    args.extend_from_slice(options);
    fleet.ctl(args).await.assert_success();
}

/// Partitions of `flow` that have an assignment.
async fn assigned_partitions(fleet: &Fleet, flow: &str) -> Result<usize, String> {
    let output = fleet
        .ctl(["assignments", "--flow", flow, "-o", "json"])
        .await;
    if !output.success() {
        return Err(output.to_string());
    }
    let json: Value = serde_json::from_str(&output.stdout).map_err(|error| error.to_string())?;
    Ok(json["assignments"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_rename_and_latest_start_mirror_only_new_records_to_the_prefixed_topic() -> Result<()>
{
    let topic = unique_name("rename-latest");
    let flow = unique_name("rename-latest-flow");
    let dest_topic = format!("{SOURCE_CLUSTER}.{topic}");
    create_topic(Cluster::Source, &topic, 2, &[("retention.ms", "86400000")]).await?;
    let old = KeyedRecords::new(500, 2);
    produce(Cluster::Source, &topic, old.generate()).await?;

    let fleet = Fleet::start(FleetOptions::new("rename-latest")).await;
    fleet.add_clusters().await;
    create_flow(
        &fleet,
        &flow,
        &topic,
        &["--rename", "prefix", "--start", "latest"],
    )
    .await;

    // Started at the end: both partitions checkpointed at their end, no lag.
    fleet
        .wait_until(TIMEOUT, "the flow to start at the source end", || async {
            let status = fleet.flow_status(&flow).await?;
            let partitions: Vec<_> = status.partitions_of(&topic).collect();
            let at_end = partitions.len() == 2
                && partitions
                    .iter()
                    .all(|partition| partition.lag == 0 && partition.mirrored_offset > 0);
            if at_end {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        })
        .await;
    let new = KeyedRecords {
        first_sequence: 500,
        ..KeyedRecords::new(300, 2)
    };
    produce(Cluster::Source, &topic, new.generate()).await?;
    fleet.wait_for_mirror(&dest_topic, 300, TIMEOUT).await;
    fleet.wait_caught_up(&flow, &topic, 2, TIMEOUT).await;

    // Exactly the new records, in the prefixed topic; the source name is unused.
    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &dest_topic).await?;
    for (partition, records) in &source {
        let new_ones: Vec<_> = records
            .iter()
            .filter(|record| {
                // Values are `value-<sequence>-<padding>`.
                record
                    .value
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .and_then(|value| value.split('-').nth(1).map(str::to_string))
                    .and_then(|sequence| sequence.parse::<u64>().ok())
                    .is_some_and(|sequence| sequence >= 500)
            })
            .collect();
        let copied = dest.get(partition).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(copied.len(), new_ones.len(), "partition {partition}");
        for (copy, original) in copied.iter().zip(new_ones) {
            assert_eq!(copy.content_difference(original), None);
        }
    }
    assert_eq!(
        kmirror_tests::kafka::partition_count(Cluster::Dest, &topic).await?,
        None,
        "the unprefixed name was created in the destination"
    );

    // A config change in the source follows to the destination.
    assert_eq!(
        topic_config(Cluster::Dest, &dest_topic, "retention.ms").await?,
        Some("86400000".to_string())
    );
    alter_topic_configs(Cluster::Source, &topic, &[("retention.ms", "172800000")]).await?;
    fleet
        .wait_until(TIMEOUT, "retention.ms to follow the source", || async {
            match topic_config(Cluster::Dest, &dest_topic, "retention.ms").await {
                Ok(Some(value)) if value == "172800000" => Ok(()),
                Ok(value) => Err(format!("destination retention.ms {value:?}")),
                Err(error) => Err(format!("{error:#}")),
            }
        })
        .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timestamp_start_skips_older_records_and_a_map_names_the_destination() -> Result<()> {
    let topic = unique_name("start-time");
    let flow = unique_name("start-time-flow");
    let dest_topic = unique_name("mapped");
    create_topic(Cluster::Source, &topic, 1, &[]).await?;
    let records = KeyedRecords::new(1_000, 1);
    // Record n carries timestamp base + n: start at record 600.
    let start_ms = records.base_timestamp + 600;
    produce(Cluster::Source, &topic, records.generate()).await?;

    let fleet = Fleet::start(FleetOptions::new("start-time")).await;
    fleet.add_clusters().await;
    let start = start_ms.to_string();
    let map = format!("{topic}={dest_topic}");
    create_flow(&fleet, &flow, &topic, &["--start", &start, "--map", &map]).await;
    fleet.wait_for_mirror(&dest_topic, 400, TIMEOUT).await;
    fleet.wait_caught_up(&flow, &topic, 1, TIMEOUT).await;
    let dest = read_all(Cluster::Dest, &dest_topic).await?;
    let copied = dest.get(&0).cloned().unwrap_or_default();
    assert_eq!(copied.len(), 400);
    assert_eq!(copied[0].timestamp, start_ms);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_flow_holds_no_assignment_and_resumes_where_it_stopped() -> Result<()> {
    let topic = unique_name("pause");
    let flow = unique_name("pause-flow");
    create_topic(Cluster::Source, &topic, 3, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(1_000, 3).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions::new("pause")).await;
    fleet.add_clusters().await;
    create_flow(&fleet, &flow, &topic, &[]).await;
    fleet.wait_for_mirror(&topic, 1_000, TIMEOUT).await;
    fleet.wait_caught_up(&flow, &topic, 3, TIMEOUT).await;

    fleet.ctl(["flow", "pause", &flow]).await.assert_success();
    fleet
        .wait_until(TIMEOUT, "the paused flow's assignments to go", || async {
            match assigned_partitions(&fleet, &flow).await? {
                0 => Ok(()),
                count => Err(format!("{count} partitions still assigned")),
            }
        })
        .await;
    let status = fleet.flow_status(&flow).await.map_err(anyhow::Error::msg)?;
    assert_eq!(status.state, "paused", "{status:?}");

    // Records produced while paused wait in the source: nobody can move the
    // checkpoints, so the lag is exactly them.
    let more = KeyedRecords {
        first_sequence: 1_000,
        ..KeyedRecords::new(600, 3)
    };
    produce(Cluster::Source, &topic, more.generate()).await?;
    fleet
        .wait_until(
            TIMEOUT,
            "the lag to show the records produced while paused",
            || async {
                let status = fleet.flow_status(&flow).await?;
                if status.total_lag == 600 && status.state == "paused" {
                    Ok(())
                } else {
                    Err(format!("{status:?}"))
                }
            },
        )
        .await;
    assert_eq!(
        WatermarkReader::new(Cluster::Dest)?
            .offset_count(&topic)
            .await?,
        1_000
    );

    fleet.ctl(["flow", "resume", &flow]).await.assert_success();
    fleet.wait_for_mirror(&topic, 1_600, TIMEOUT).await;
    fleet.wait_caught_up(&flow, &topic, 3, TIMEOUT).await;
    // Caught up before the pause: nothing is copied twice.
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_of_a_million_records_completes_and_flow_wait_exits_0() -> Result<()> {
    const RECORDS: u64 = 1_000_000;
    let topic = unique_name("migration");
    let flow = unique_name("migration-flow");
    create_topic(Cluster::Source, &topic, 8, &[]).await?;
    let records = KeyedRecords {
        headers: false,
        value_padding: 16,
        distinct_keys: 10_000,
        ..KeyedRecords::new(RECORDS, 8)
    };
    produce(Cluster::Source, &topic, records.generate()).await?;

    let fleet = Fleet::start(FleetOptions::new("migration")).await;
    fleet.add_clusters().await;
    create_flow(&fleet, &flow, &topic, &["--until-caught-up"]).await;
    // Wait for the targets to be captured, then add records past them: the
    // migration copies up to the end offsets seen when it started, no further.
    fleet
        .wait_until(TIMEOUT, "the migration targets to be captured", || async {
            let json = fleet.status_json(&flow).await?;
            let target = json["flows"][0]["target_records"].as_i64().unwrap_or(-1);
            if target == RECORDS as i64 {
                Ok(())
            } else {
                Err(format!("target_records {target}"))
            }
        })
        .await;
    let later = KeyedRecords {
        first_sequence: RECORDS,
        ..KeyedRecords::new(1_000, 8)
    };
    produce(Cluster::Source, &topic, later.generate()).await?;

    let wait = fleet
        .ctl([
            "flow",
            "wait",
            &flow,
            "--interval",
            "1s",
            "--timeout",
            "15m",
        ])
        .await;
    assert!(wait.success(), "flow wait failed: {wait}");
    assert!(wait.stdout.contains("completed"), "{wait}");
    assert!(
        wait.stderr.contains(&format!("/{RECORDS} records")),
        "no progress lines: {wait}"
    );

    let status = fleet.flow_status(&flow).await.map_err(anyhow::Error::msg)?;
    assert_eq!(status.state, "completed", "{status:?}");
    assert_eq!(
        assigned_partitions(&fleet, &flow)
            .await
            .map_err(anyhow::Error::msg)?,
        0
    );
    // Every record of the migration is there, in order. Fetchers read ahead, so
    // a few records produced after the targets were captured may follow them
    // (the partition stops once its checkpoint passed its target).
    let source = read_all(Cluster::Source, &topic).await?;
    let copied = read_all(Cluster::Dest, &topic).await?;
    let mut total = 0;
    for (partition, records) in &copied {
        let originals = source
            .get(partition)
            .ok_or_else(|| anyhow!("no source partition {partition}"))?;
        assert!(
            records.len() <= originals.len(),
            "partition {partition} has duplicates"
        );
        for (copy, original) in records.iter().zip(originals) {
            if let Some(difference) = copy.content_difference(original) {
                return Err(anyhow!("partition {partition}: {difference}"));
            }
        }
        total += records.len();
    }
    assert!(
        total as u64 >= RECORDS,
        "{total} of {RECORDS} records copied"
    );
    Ok(())
}
