//! Routine operations copy nothing twice and report the truth:
//! - `flow pause` returns once the flow's partitions have stopped and checkpointed
//!   what they wrote: nothing reaches the destination while it is paused, and
//!   `flow resume` copies nothing again, with records flowing all along;
//! - once traffic stops, every rate the fleet shows falls to 0 and the planner sees
//!   no load to move.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, read_all, Cluster, WatermarkReader,
};
use kmirror_tests::steady::SteadyLoad;
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use serde_json::Value;
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn pausing_and_resuming_under_load_copies_every_record_exactly_once() -> Result<()> {
    // About 4 000 records/s for 15 s.
    let (fleet, flow, topic, producer) = mirror_under_load("pause", 150).await?;
    let source = WatermarkReader::new(Cluster::Source)?;
    let dest = WatermarkReader::new(Cluster::Dest)?;
    let source_count = || async {
        source
            .offset_count(&topic)
            .await
            .map_err(|error| format!("{error:#}"))
    };

    for cycle in 1..=3 {
        let mirrored_before = dest.offset_count(&topic).await?;
        fleet
            .wait_until(TIMEOUT, "records to flow into the destination", || async {
                let mirrored = dest
                    .offset_count(&topic)
                    .await
                    .map_err(|error| format!("{error:#}"))?;
                if mirrored >= mirrored_before + 2_000 {
                    Ok(())
                } else {
                    Err(format!("{mirrored} records in the destination"))
                }
            })
            .await;

        fleet.ctl(["flow", "pause", &flow]).await.assert_success();
        let paused_at = dest.offset_count(&topic).await?;
        let source_at_pause = source_count().await.map_err(anyhow::Error::msg)?;
        // While records keep arriving in the source, none reaches the destination.
        fleet
            .wait_until(TIMEOUT, "records to arrive while paused", || async {
                let produced = source_count().await?;
                if produced >= source_at_pause + 4_000 {
                    Ok(())
                } else {
                    Err(format!("{produced} records in the source"))
                }
            })
            .await;
        let still = dest.offset_count(&topic).await?;
        assert_eq!(
            still, paused_at,
            "cycle {cycle}: records reached the destination after `flow pause` returned"
        );
        let status = fleet.flow_status(&flow).await.map_err(anyhow::Error::msg)?;
        let mirrored: i64 = status
            .partitions_of(&topic)
            .map(|partition| partition.mirrored_offset)
            .sum();
        assert_eq!(
            mirrored, paused_at,
            "cycle {cycle}: the checkpoints do not cover what was written before the pause: {status:?}"
        );
        fleet.ctl(["flow", "resume", &flow]).await.assert_success();
    }

    let produced = producer.await??;
    fleet
        .wait_for_mirror(&topic, produced as i64, TIMEOUT)
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, TIMEOUT)
        .await;
    // Every record once, in order, with key, value, headers and timestamp.
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_fleets_rates_fall_to_zero_and_it_proposes_no_moves() -> Result<()> {
    // About 4 000 records/s for 10 s.
    let (fleet, flow, topic, producer) = mirror_under_load("idle", 100).await?;
    fleet
        .wait_until(TIMEOUT, "the members to report their rates", || async {
            let rates = member_rates(&fleet).await?;
            if rates.values().any(|rate| *rate > 100.0) {
                Ok(())
            } else {
                Err(format!("member rates {rates:?}"))
            }
        })
        .await;
    let produced = producer.await??;
    fleet
        .wait_for_mirror(&topic, produced as i64, TIMEOUT)
        .await;

    // Traffic stopped: within 20 s every rate reads 0 and nothing is to move.
    fleet
        .wait_until(
            Duration::from_secs(20),
            "every rate to fall to 0",
            || async {
                let rates = member_rates(&fleet).await?;
                if rates.values().any(|rate| *rate != 0.0) {
                    return Err(format!("member rates {rates:?}"));
                }
                let status = fleet.status_json(&flow).await?;
                let partition_rates: Vec<f64> = status["flows"][0]["partitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|partition| partition["records_per_sec"].as_f64().unwrap_or(-1.0))
                    .collect();
                if partition_rates.len() != PARTITIONS as usize
                    || partition_rates.iter().any(|rate| *rate != 0.0)
                {
                    return Err(format!("partition rates {partition_rates:?}"));
                }
                let flow_rate = status["flows"][0]["records_per_sec"].as_f64();
                if flow_rate != Some(0.0) {
                    return Err(format!("flow rate {flow_rate:?}"));
                }
                Ok(())
            },
        )
        .await;
    let dry_run = fleet
        .ctl(["rebalance", "--dry-run", "-o", "json"])
        .await
        .assert_success();
    let dry_run: Value = serde_json::from_str(&dry_run.stdout)?;
    assert_eq!(
        dry_run["moves"].as_array().map(Vec::len),
        Some(0),
        "an idle fleet is to be rebalanced: {dry_run}"
    );
    Ok(())
}

/// A fleet mirroring a new topic while `chunks` chunks of 400 records are
/// produced into it, one every 100 ms; the task returns how many were produced.
async fn mirror_under_load(
    name: &str,
    chunks: u64,
) -> Result<(Fleet, String, String, JoinHandle<Result<u64>>)> {
    let topic = unique_name(name);
    let flow = unique_name(&format!("{name}-flow"));
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let fleet = Fleet::start(FleetOptions::new(name)).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    let load = SteadyLoad {
        partitions: PARTITIONS,
        chunk: 400,
        tick: Duration::from_millis(100),
        chunks,
    };
    let producer = load.start(Cluster::Source, topic.clone());
    Ok((fleet, flow, topic, producer))
}

/// Records/s of every fetcher and writer, as `kmirrorctl members` shows them.
async fn member_rates(fleet: &Fleet) -> Result<BTreeMap<String, f64>, String> {
    let output = fleet.ctl(["members", "-o", "json"]).await;
    if !output.success() {
        return Err(format!("members failed: {output}"));
    }
    let json: Value = serde_json::from_str(&output.stdout)
        .map_err(|error| format!("members printed no JSON ({error}): {output}"))?;
    Ok(json["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|member| member["role"] != "coordinator")
        .map(|member| {
            (
                member["id"].as_str().unwrap_or_default().to_string(),
                member["records_per_sec"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect())
}
