//! Bad input through kmirrorctl gets exit code 1 and a message naming the problem;
//! nothing of it is stored, the coordinator keeps running and other flows keep
//! mirroring.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::fleet::{DEST_CLUSTER, SOURCE_CLUSTER};
use kmirror_tests::kafka::{assert_same_partitions, create_topic, produce, read_all, Cluster};
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_rejected_with_a_clear_error_and_other_flows_keep_mirroring() -> Result<()> {
    let topic = unique_name("bad-input");
    let flow = unique_name("bad-input-flow");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    let mut records = KeyedRecords::new(2_000, 2).generate();
    let later = records.split_off(1_000);
    produce(Cluster::Source, &topic, records).await?;

    let fleet = Fleet::start(FleetOptions::new("bad-input")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, 1_000, Duration::from_secs(120))
        .await;

    let invalid_regex = "orders-([";
    fleet
        .ctl([
            "flow",
            "create",
            "bad-regex",
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            DEST_CLUSTER,
            "--include",
            invalid_regex,
        ])
        .await
        .assert_failure(1, &[invalid_regex]);

    let unknown_cluster = unique_name("no-such-cluster");
    fleet
        .ctl([
            "flow",
            "create",
            "unknown-cluster",
            "--source",
            &unknown_cluster,
            "--dest",
            DEST_CLUSTER,
            "--include",
            "orders",
        ])
        .await
        .assert_failure(1, &[&unknown_cluster]);

    fleet
        .ctl([
            "flow",
            "create",
            &flow,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            DEST_CLUSTER,
            "--include",
            "something-else",
        ])
        .await
        .assert_failure(1, &[&flow]);

    let unreachable = "127.0.0.1:1";
    fleet
        .ctl(["cluster", "add", "unreachable", "--bootstrap", unreachable])
        .await
        .assert_failure(1, &[unreachable]);

    // Nothing of the rejected input was stored, and the existing flow is unchanged.
    let flows = fleet
        .ctl(["flow", "list", "-o", "json"])
        .await
        .assert_success();
    let flows_json: Value = serde_json::from_str(&flows.stdout)?;
    let stored_flows: Vec<(&str, &str)> = flows_json["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows array: {flows}"))
        .iter()
        .map(|stored| {
            (
                stored["name"].as_str().unwrap_or_default(),
                stored["include"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        stored_flows,
        vec![(flow.as_str(), topic.as_str())],
        "{flows}"
    );
    let clusters = fleet
        .ctl(["cluster", "list", "-o", "json"])
        .await
        .assert_success();
    let clusters_json: Value = serde_json::from_str(&clusters.stdout)?;
    let mut stored_clusters: Vec<&str> = clusters_json["clusters"]
        .as_array()
        .unwrap_or_else(|| panic!("no clusters array: {clusters}"))
        .iter()
        .map(|stored| stored["name"].as_str().unwrap_or_default())
        .collect();
    stored_clusters.sort_unstable();
    assert_eq!(
        stored_clusters,
        vec![DEST_CLUSTER, SOURCE_CLUSTER],
        "{clusters}"
    );

    // The coordinator is still there and the flow still mirrors.
    assert!(fleet.is_running("coordinator-0"), "{}", fleet.log_paths());
    produce(Cluster::Source, &topic, later).await?;
    fleet
        .wait_for_mirror(&topic, 2_000, Duration::from_secs(120))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, 2, Duration::from_secs(60))
        .await;
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}
