//! Operating a running fleet with kmirrorctl: members with their leases and
//! rates, assignments, drain and undrain, rebalance (dry run and applied), and
//! `status` exit codes. Records keep flowing throughout and all of them arrive.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{create_topic, produce, read_all, Cluster};
use kmirror_tests::ordering::assert_complete_in_order;
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 8;

/// Partitions per fetcher, from `assignments -o json`.
async fn fetcher_loads(fleet: &Fleet, flow: &str) -> Result<BTreeMap<String, usize>, String> {
    let output = fleet
        .ctl(["assignments", "--flow", flow, "-o", "json"])
        .await;
    if !output.success() {
        return Err(output.to_string());
    }
    let json: Value = serde_json::from_str(&output.stdout).map_err(|error| error.to_string())?;
    let mut loads = BTreeMap::new();
    for assignment in json["assignments"].as_array().cloned().unwrap_or_default() {
        let fetcher = assignment["fetcher"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *loads.entry(fetcher).or_insert(0) += 1;
    }
    Ok(loads)
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_undrain_and_rebalance_move_partitions_while_records_keep_flowing() -> Result<()> {
    let topic = unique_name("fleet-ops");
    let flow = unique_name("fleet-ops-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let batches: Vec<KeyedRecords> = (0..4)
        .map(|batch| KeyedRecords {
            first_sequence: batch * 1_000,
            ..KeyedRecords::new(1_000, PARTITIONS)
        })
        .collect();
    produce(Cluster::Source, &topic, batches[0].generate()).await?;

    let fleet = Fleet::start(FleetOptions::new("fleet-ops")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet.wait_for_mirror(&topic, 1_000, TIMEOUT).await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, TIMEOUT)
        .await;

    // A healthy fleet: status exits 0; members show the leader, leases and loads.
    fleet.ctl(["status"]).await.assert_success();
    let members = fleet.ctl(["members", "-o", "json"]).await.assert_success();
    let members: Value = serde_json::from_str(&members.stdout)?;
    let members = members["members"].as_array().cloned().unwrap_or_default();
    assert!(members
        .iter()
        .any(|member| member["role"] == "coordinator" && member["leader"] == true));
    let fetchers: Vec<&Value> = members
        .iter()
        .filter(|member| member["role"] == "fetcher")
        .collect();
    assert_eq!(fetchers.len(), 2, "{members:?}");
    for member in &members {
        let lease = member["lease_remaining_ms"].as_i64().unwrap_or(-1);
        assert!(lease > 0, "no lease time left shown: {member}");
    }
    let held: u64 = fetchers
        .iter()
        .map(|member| member["partitions"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(held, PARTITIONS as u64);
    let drained = fetchers[0]["id"].as_str().unwrap_or_default().to_string();
    let other = fetchers[1]["id"].as_str().unwrap_or_default().to_string();

    // Drain: it waits until the member holds nothing, then the other has all.
    let drain = fleet.ctl(["drain", &drained]).await.assert_success();
    assert!(drain.stdout.contains("may stop now"), "{drain}");
    let loads = fetcher_loads(&fleet, &flow)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        loads,
        BTreeMap::from([(other.clone(), PARTITIONS as usize)]),
        "{loads:?}"
    );
    produce(Cluster::Source, &topic, batches[1].generate()).await?;
    fleet.wait_for_mirror(&topic, 2_000, TIMEOUT).await;
    // No fetcher move while one of the two is drained (writers may still be
    // evened out by their measured bytes/s).
    let dry_run = fleet
        .ctl(["rebalance", "--dry-run", "-o", "json"])
        .await
        .assert_success();
    let dry_run: Value = serde_json::from_str(&dry_run.stdout)?;
    let fetcher_moves = dry_run["moves"]
        .as_array()
        .expect("moves listed")
        .iter()
        .filter(|planned| planned["role"] == "fetcher")
        .count();
    assert_eq!(fetcher_moves, 0, "{dry_run}");

    // Undrained, it takes partitions again: as many as the balance bound requires
    // (by measured bytes/s, or by count once the rates are stale; the exact
    // numbers are the planner's property tests).
    fleet.ctl(["undrain", &drained]).await.assert_success();
    fleet
        .wait_until(
            TIMEOUT,
            "the undrained fetcher to get partitions",
            || async {
                let loads = fetcher_loads(&fleet, &flow).await?;
                let total: usize = loads.values().sum();
                if loads.get(&drained).is_some_and(|count| *count > 0)
                    && total == PARTITIONS as usize
                {
                    Ok(())
                } else {
                    Err(format!("{loads:?}"))
                }
            },
        )
        .await;
    produce(Cluster::Source, &topic, batches[2].generate()).await?;

    // A rebalance prints its moves on a dry run, then applies them.
    let dry_run = fleet
        .ctl(["rebalance", "--dry-run", "-o", "json"])
        .await
        .assert_success();
    let dry_run: Value = serde_json::from_str(&dry_run.stdout)?;
    assert_eq!(dry_run["applied"], false, "{dry_run}");
    for movement in dry_run["moves"].as_array().cloned().unwrap_or_default() {
        let to = movement["to"].as_str().unwrap_or_default();
        assert!(
            to == drained || to == other || to.starts_with("writer-"),
            "{movement}"
        );
    }
    let applied = fleet.ctl(["rebalance"]).await.assert_success();
    assert!(
        applied.stdout.contains("moved") || applied.stdout.contains("nothing to move"),
        "{applied}"
    );
    let loads = fetcher_loads(&fleet, &flow)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(loads.values().sum::<usize>(), PARTITIONS as usize);
    assert_eq!(loads.len(), 2, "{loads:?}");

    produce(Cluster::Source, &topic, batches[3].generate()).await?;
    fleet.wait_for_mirror(&topic, 4_000, TIMEOUT).await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, TIMEOUT)
        .await;
    let delivery = assert_complete_in_order(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    assert_eq!(delivery.records, 4_000);

    // Text output for people: consumer-group columns and the total lag.
    let status = fleet
        .ctl(["status", "--flow", &flow])
        .await
        .assert_success();
    assert!(
        status
            .stdout
            .contains("CURRENT-OFFSET  LOG-END-OFFSET  LAG"),
        "{status}"
    );
    assert!(status.stdout.contains("TOTAL-LAG"), "{status}");
    let yaml = fleet
        .ctl(["flow", "list", "-o", "yaml"])
        .await
        .assert_success();
    assert!(yaml.stdout.contains(&format!("name: {flow}")), "{yaml}");

    // Unknown members and flows are errors that name them.
    fleet
        .ctl(["drain", "no-such-member"])
        .await
        .assert_failure(1, &["no-such-member"]);
    fleet
        .ctl(["flow", "pause", "no-such-flow"])
        .await
        .assert_failure(1, &["no-such-flow"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_exits_1_when_a_flow_fails() -> Result<()> {
    let topic = unique_name("degraded");
    let flow = unique_name("degraded-flow");
    create_topic(Cluster::Source, &topic, 1, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 0,
        ..FleetOptions::new("degraded")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    // No writer: the leader cannot assign the partition and the flow fails.
    fleet
        .wait_until(
            TIMEOUT,
            "status to exit 1 naming the failing flow",
            || async {
                let output = fleet.ctl(["status"]).await;
                if output.code == Some(1)
                    && output.stderr.contains("the fleet is degraded")
                    && output.stderr.contains(&flow)
                    && output.stdout.contains("failing")
                {
                    Ok(())
                } else {
                    Err(output.to_string())
                }
            },
        )
        .await;
    Ok(())
}
