//! Guard rails of kmirrorctl against a real fleet: each refused change names the
//! conflict, exits 1 and leaves the fleet as it was; what a new flow matches is
//! printed before any record moves.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::fleet::{DEST_CLUSTER, SOURCE_CLUSTER};
use kmirror_tests::kafka::{create_topic, produce, read_all, record_count, Cluster};
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Names of the fleet's flows, from `flow list -o json`.
async fn flow_names(fleet: &Fleet) -> Vec<String> {
    let output = fleet
        .ctl(["flow", "list", "-o", "json"])
        .await
        .assert_success();
    let json: Value = serde_json::from_str(&output.stdout).expect("flow list is JSON");
    json["flows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|flow| flow["name"].as_str().map(str::to_string))
        .collect()
}

/// Records of `topic` in the destination.
async fn dest_records(topic: &str) -> Result<usize> {
    Ok(record_count(&read_all(Cluster::Dest, topic).await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_flow_into_the_same_destination_topic_is_refused() -> Result<()> {
    let base = unique_name("guard-dest");
    let (paid, late, later, small) = (
        format!("{base}-paid"),
        format!("{base}-late"),
        format!("{base}-later"),
        format!("{base}-small"),
    );
    create_topic(Cluster::Source, &paid, 3, &[]).await?;
    produce(Cluster::Source, &paid, KeyedRecords::new(300, 3).generate()).await?;
    let fleet = Fleet::start(FleetOptions::new("guard-dest")).await;
    fleet.add_clusters().await;
    let escaped = regex::escape(&base);

    // The first flow prints what it matched: the topic, and that its destination
    // topic is still to be created.
    let first = format!("{base}-first");
    let created = fleet
        .ctl([
            "flow",
            "create",
            &first,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            DEST_CLUSTER,
            "--include",
            &format!("{escaped}-(paid|late|later)"),
        ])
        .await
        .assert_success();
    assert!(created.stdout.contains("1 topic(s) matched"), "{created}");
    let row = created
        .stdout
        .lines()
        .find(|line| line.starts_with(&paid))
        .unwrap_or_else(|| panic!("no row for {paid}: {created}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [paid.as_str(), "3", paid.as_str(), "new"],
        "{created}"
    );

    // A second flow writing the same topic, under the same cluster name or under
    // another name for the same Kafka cluster: refused, naming topic and flow.
    let second = format!("{base}-second");
    fleet
        .ctl([
            "flow",
            "create",
            &second,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            DEST_CLUSTER,
            "--include",
            &regex::escape(&paid),
        ])
        .await
        .assert_failure(1, &[&paid, &format!("written by flow {first}")]);
    fleet
        .ctl([
            "cluster",
            "add",
            "dest-again",
            "--bootstrap",
            fleet.clusters().1.bootstrap(),
        ])
        .await
        .assert_success();
    fleet
        .ctl([
            "flow",
            "create",
            &second,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            "dest-again",
            "--include",
            &format!("{escaped}-.*"),
        ])
        .await
        .assert_failure(1, &[&paid, &format!("written by flow {first}")]);
    assert_eq!(flow_names(&fleet).await, vec![first.clone()]);

    // A flow matching nothing yet is stored with a warning...
    let created = fleet
        .ctl([
            "flow",
            "create",
            &second,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            DEST_CLUSTER,
            "--include",
            &regex::escape(&late),
        ])
        .await
        .assert_success();
    assert!(
        created
            .stderr
            .contains("warning: no topic of source cluster"),
        "{created}"
    );
    // (as is one writing into the same cluster under its other name)...
    let third = format!("{base}-third");
    fleet
        .ctl([
            "flow",
            "create",
            &third,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            "dest-again",
            "--include",
            &regex::escape(&later),
        ])
        .await
        .assert_success();
    // ...and when their topics appear, the first flow matches them too: the older
    // flow copies them, the younger ones say why they do not.
    create_topic(Cluster::Source, &late, 2, &[]).await?;
    create_topic(Cluster::Source, &later, 1, &[]).await?;
    produce(Cluster::Source, &late, KeyedRecords::new(200, 2).generate()).await?;
    produce(Cluster::Source, &later, KeyedRecords::new(50, 1).generate()).await?;
    for (younger, topic) in [(&second, &late), (&third, &later)] {
        fleet
            .wait_until(
                TIMEOUT,
                "a younger flow to report the shared topic",
                || async {
                    let status = fleet.flow_status(younger).await?;
                    if status.error.contains(topic.as_str()) && status.error.contains(&first) {
                        Ok(())
                    } else {
                        Err(format!("{status:?}"))
                    }
                },
            )
            .await;
    }
    fleet.wait_for_mirror(&paid, 300, TIMEOUT).await;
    fleet.wait_for_mirror(&late, 200, TIMEOUT).await;
    fleet.wait_for_mirror(&later, 50, TIMEOUT).await;
    fleet.wait_caught_up(&first, &late, 2, TIMEOUT).await;
    fleet.wait_caught_up(&first, &later, 1, TIMEOUT).await;
    fleet.wait_caught_up(&first, &paid, 3, TIMEOUT).await;
    assert_eq!(
        dest_records(&paid).await?,
        300,
        "records of {paid} copied twice"
    );
    assert_eq!(
        dest_records(&late).await?,
        200,
        "records of {late} copied twice"
    );
    assert_eq!(
        dest_records(&later).await?,
        50,
        "records of {later} copied twice"
    );
    for younger in [&second, &third] {
        let assignments = fleet
            .ctl(["assignments", "--flow", younger, "-o", "json"])
            .await
            .assert_success();
        let assignments: Value = serde_json::from_str(&assignments.stdout)?;
        assert_eq!(assignments["assignments"], Value::Array(Vec::new()));
    }

    // A destination topic with fewer partitions than its source is warned about.
    create_topic(Cluster::Source, &small, 4, &[]).await?;
    create_topic(Cluster::Dest, &small, 2, &[]).await?;
    let created = fleet
        .ctl([
            "flow",
            "create",
            &format!("{base}-small"),
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            DEST_CLUSTER,
            "--include",
            &regex::escape(&small),
            "-o",
            "json",
        ])
        .await
        .assert_success();
    assert!(
        created.stderr.contains(&format!(
            "{small} has 2 partitions, fewer than source topic"
        )),
        "{created}"
    );
    let json: Value = serde_json::from_str(&created.stdout)?;
    assert_eq!(json["topics"][0]["dest_partitions"], 2, "{json}");
    assert_eq!(json["topics"][0]["source_partitions"], 4, "{json}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_live_fetcher_or_writer_cannot_be_drained() -> Result<()> {
    let topic = unique_name("guard-drain");
    let flow = unique_name("guard-drain-flow");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        ..FleetOptions::new("guard-drain")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &regex::escape(&topic), None).await;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(100, 2).generate(),
    )
    .await?;
    fleet.wait_for_mirror(&topic, 100, TIMEOUT).await;

    let members = fleet.ctl(["members", "-o", "json"]).await.assert_success();
    let members: Value = serde_json::from_str(&members.stdout)?;
    let members = members["members"].as_array().cloned().unwrap_or_default();
    for role in ["fetcher", "writer"] {
        let id = members
            .iter()
            .find(|member| member["role"] == role)
            .and_then(|member| member["id"].as_str())
            .expect("one member of the role")
            .to_string();
        fleet
            .ctl(["drain", &id])
            .await
            .assert_failure(1, &[&id, &format!("last live {role}")]);
    }
    // Nothing was marked: no member drained, the flow keeps running.
    let members = fleet.ctl(["members", "-o", "json"]).await.assert_success();
    let members: Value = serde_json::from_str(&members.stdout)?;
    for member in members["members"].as_array().cloned().unwrap_or_default() {
        assert_eq!(member["drained"], false, "{member}");
    }
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords {
            first_sequence: 100,
            ..KeyedRecords::new(100, 2)
        }
        .generate(),
    )
    .await?;
    fleet.wait_caught_up(&flow, &topic, 2, TIMEOUT).await;
    fleet.ctl(["status"]).await.assert_success();

    // Small things on the same fleet: wide members show metrics URLs, an
    // unreachable first coordinator is skipped, an unknown flow is not found.
    let wide = fleet.ctl(["members", "-o", "wide"]).await.assert_success();
    assert!(
        wide.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .contains("METRICS"),
        "{wide}"
    );
    assert!(wide.stdout.contains("/metrics"), "{wide}");
    let addresses = format!("127.0.0.1:1,{}", fleet.coordinator_address());
    fleet
        .ctl_at(&addresses, &["members".to_string()])
        .await
        .assert_success();
    fleet
        .ctl(["flow", "wait", "no-such-flow"])
        .await
        .assert_failure(1, &["flow no-such-flow not found"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_in_use_cannot_be_deleted_and_replace_keeps_its_properties() -> Result<()> {
    let topic = unique_name("guard-cluster");
    create_topic(Cluster::Source, &topic, 1, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        ..FleetOptions::new("guard-cluster")
    })
    .await;
    fleet.add_clusters().await;
    let dest = fleet.clusters().1.bootstrap();
    let properties = |cluster: &str, json: &Value| -> Value {
        json["clusters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|candidate| candidate["name"] == cluster)
            .map(|candidate| candidate["properties"].clone())
            .unwrap_or(Value::Null)
    };
    let cluster_list = || async {
        let output = fleet
            .ctl(["cluster", "list", "-o", "json"])
            .await
            .assert_success();
        serde_json::from_str::<Value>(&output.stdout).expect("cluster list is JSON")
    };

    fleet
        .ctl([
            "cluster",
            "add",
            "extra",
            "--bootstrap",
            dest,
            "--property",
            "client.rack=rack-1",
            "--property",
            "socket.keepalive.enable=true",
        ])
        .await
        .assert_success();
    // --replace keeps what it does not set, and says so.
    let replaced = fleet
        .ctl([
            "cluster",
            "add",
            "extra",
            "--bootstrap",
            dest,
            "--replace",
            "--property",
            "socket.keepalive.enable=false",
        ])
        .await
        .assert_success();
    assert!(
        replaced.stdout.contains("kept properties: client.rack"),
        "{replaced}"
    );
    let listed = properties("extra", &cluster_list().await);
    assert_eq!(listed["client.rack"], "rack-1", "{listed}");
    assert_eq!(listed["socket.keepalive.enable"], "false", "{listed}");
    let removed = fleet
        .ctl([
            "cluster",
            "add",
            "extra",
            "--bootstrap",
            dest,
            "--replace",
            "--remove-property",
            "client.rack",
        ])
        .await
        .assert_success();
    assert!(
        removed.stdout.contains("removed properties: client.rack"),
        "{removed}"
    );
    let listed = properties("extra", &cluster_list().await);
    assert_eq!(listed.get("client.rack"), None, "{listed}");
    assert_eq!(listed["socket.keepalive.enable"], "false", "{listed}");

    // A cluster a flow uses stays until the flow is gone.
    let flow = unique_name("guard-cluster-flow");
    fleet
        .ctl([
            "flow",
            "create",
            &flow,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            "extra",
            "--include",
            &regex::escape(&topic),
        ])
        .await
        .assert_success();
    fleet
        .ctl(["cluster", "delete", "extra"])
        .await
        .assert_failure(1, &["cluster extra is used by flow(s)", &flow]);
    assert_ne!(properties("extra", &cluster_list().await), Value::Null);
    fleet.ctl(["flow", "delete", &flow]).await.assert_success();
    fleet
        .ctl(["cluster", "delete", "extra"])
        .await
        .assert_success();
    assert_eq!(properties("extra", &cluster_list().await), Value::Null);
    fleet
        .ctl(["cluster", "delete", "extra"])
        .await
        .assert_failure(1, &["cluster extra not found"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rename_change_on_a_flow_with_progress_is_refused() -> Result<()> {
    let topic = unique_name("guard-rename");
    let flow = unique_name("guard-rename-flow");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(100, 2).generate(),
    )
    .await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        ..FleetOptions::new("guard-rename")
    })
    .await;
    fleet.add_clusters().await;
    let include = regex::escape(&topic);
    fleet.create_flow(&flow, &include, None).await;
    fleet.wait_caught_up(&flow, &topic, 2, TIMEOUT).await;

    let renamed = format!("{topic}-copy");
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
            &include,
            "--map",
            &format!("{topic}={renamed}"),
            "--replace",
        ])
        .await
        .assert_failure(
            1,
            &[
                &flow,
                "cannot change its destination names",
                "identity to map",
            ],
        );
    let flows = fleet
        .ctl(["flow", "list", "-o", "json"])
        .await
        .assert_success();
    let flows: Value = serde_json::from_str(&flows.stdout)?;
    assert_eq!(flows["flows"][0]["rename"]["policy"], "identity", "{flows}");
    fleet
        .ctl(["status", "--flow", &flow])
        .await
        .assert_success();
    // The same options again (no rename change) are accepted.
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
            &include,
            "--replace",
        ])
        .await
        .assert_success();
    Ok(())
}
