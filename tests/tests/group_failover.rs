//! Consumers that fail over: a group's offsets are synced to the destination at
//! their exact translated positions, `kmirrorctl failover` runs the runbook, a
//! group with active members on the destination is never moved, and bad input
//! fails clearly while the mirror goes on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    commit_group, committed_offsets, consume_as_group, create_topic, produce, read_all,
    record_count, LiveMember, TopicRecords,
};
use kmirror_tests::{unique_name, Cluster, Fleet, FleetOptions};
use serde_json::Value;

fn json(output: &kmirror_tests::CtlOutput) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("{output}: not JSON: {error}"))
}

/// MirrorMaker 2's failover shape: a group reads 60 % of a 12-partition topic
/// while records keep flowing, then `kmirrorctl failover`; the same group on
/// the destination reads exactly the records it had not read, none twice, none
/// missing, per partition.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_fails_over_and_reads_exactly_what_it_had_not_read() -> Result<()> {
    const PARTITIONS: i32 = 12;
    const FIRST: u64 = 6_000;
    let topic = unique_name("failover");
    let flow = unique_name("failover-flow");
    let group = unique_name("billing");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(FIRST, PARTITIONS).generate(),
    )
    .await?;

    let fleet = Fleet::start(FleetOptions::new("failover")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;

    // Records keep flowing while the group reads.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (producing, topic) = (producing.clone(), topic.clone());
        tokio::spawn(async move {
            let mut sequence = FIRST;
            while producing.load(Ordering::Relaxed) {
                let chunk = KeyedRecords {
                    first_sequence: sequence,
                    ..KeyedRecords::new(200, PARTITIONS)
                };
                produce(Cluster::Source, &topic, chunk.generate()).await?;
                sequence += 200;
            }
            anyhow::Ok(sequence)
        })
    };
    let read_on_source = consume_as_group(
        Cluster::Source,
        &group,
        &topic,
        false,
        |read| record_count(read) as u64 >= FIRST * 6 / 10,
        Duration::from_secs(120),
    )
    .await?;
    producing.store(false, Ordering::Relaxed);
    let produced = producer.await??;
    assert!(produced > FIRST, "records flowed while the group read");

    let output = fleet
        .ctl([
            "failover",
            &flow,
            "--groups",
            &group,
            "--timeout",
            "3m",
            "-o",
            "json",
        ])
        .await;
    assert!(output.success(), "{output}");
    let report = json(&output);
    assert_eq!(report["exact"], true, "{output}");
    assert_eq!(report["caught_up"], true, "{output}");
    assert_eq!(report["paused"], true, "{output}");
    let groups = report["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{output}");
    assert_eq!(groups[0]["group"], group.as_str());
    assert_eq!(groups[0]["state"], "synced", "{output}");
    assert_eq!(
        groups[0]["partitions"].as_array().unwrap().len(),
        read_on_source.len(),
        "a position per partition the group read: {output}"
    );
    let text = fleet.ctl(["flow", "list", "-o", "json"]).await;
    assert!(text.stdout.contains("\"phase\": \"paused\""), "{text}");

    // The same group, now on the destination: it starts where the sync put it.
    let source = read_all(Cluster::Source, &topic).await?;
    let read_on_dest = consume_as_group(
        Cluster::Dest,
        &group,
        &topic,
        true,
        |_| false,
        Duration::from_secs(120),
    )
    .await?;
    assert_read_once(&source, &read_on_source, &read_on_dest);
    Ok(())
}

/// Every source record was read exactly once: first on the source, the rest on
/// the destination, in order per partition, with the same content.
fn assert_read_once(source: &TopicRecords, on_source: &TopicRecords, on_dest: &TopicRecords) {
    for (partition, records) in source {
        let before: &[_] = on_source
            .get(partition)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let after: &[_] = on_dest
            .get(partition)
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(
            before.len() + after.len(),
            records.len(),
            "partition {partition}: {} read on the source and {} on the destination of {} records",
            before.len(),
            after.len(),
            records.len()
        );
        for (index, (expected, found)) in records.iter().zip(before.iter().chain(after)).enumerate()
        {
            if let Some(difference) = expected.content_difference(found) {
                panic!(
                    "partition {partition}, record {index} (source offset {}): {difference}",
                    expected.offset
                );
            }
        }
    }
}

/// Where the source group's offsets are in the destination, per partition.
async fn translated(fleet: &Fleet, flow: &str, group: &str) -> BTreeMap<i32, i64> {
    let output = fleet
        .ctl([
            "offsets",
            "translate",
            "--flow",
            flow,
            "--group",
            group,
            "-o",
            "json",
        ])
        .await;
    assert!(output.success(), "{output}");
    json(&output)["translations"]
        .as_array()
        .expect("translations")
        .iter()
        .map(|translation| {
            (
                translation["partition"].as_i64().unwrap() as i32,
                translation["dest_offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The flow's group sync as `status -o json` shows it: (at_ms, state of `group`).
async fn sync_state(fleet: &Fleet, flow: &str, group: &str) -> Result<(i64, String), String> {
    let status = fleet.status_json(flow).await?;
    let sync = &status["flows"][0]["group_sync"];
    let at_ms = sync["at_ms"]
        .as_i64()
        .ok_or(format!("no sync yet: {status}"))?;
    let state = sync["groups"]
        .as_array()
        .and_then(|groups| groups.iter().find(|entry| entry["group"] == group))
        .and_then(|entry| entry["state"].as_str())
        .ok_or(format!("group {group} not in the sync: {sync}"))?;
    Ok((at_ms, state.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn group_sync_never_moves_a_live_group_nor_backwards_and_bad_input_fails_clearly(
) -> Result<()> {
    const PARTITIONS: i32 = 3;
    const RECORDS: u64 = 3_000;
    let topic = unique_name("group-sync");
    let flow = unique_name("group-sync-flow");
    let group = unique_name("shipping");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(RECORDS, PARTITIONS).generate(),
    )
    .await?;
    let fleet = Fleet::start(FleetOptions::new("group-sync")).await;
    fleet.add_clusters().await;
    fleet
        .ctl([
            "flow",
            "create",
            &flow,
            "--source",
            "source",
            "--dest",
            "dest",
            "--include",
            &topic,
            "--sync-group-offsets",
            &format!("{group}|unused-group"),
            "--sync-group-offsets-interval",
            "1s",
        ])
        .await
        .assert_success();
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(120))
        .await;
    let source = read_all(Cluster::Source, &topic).await?;
    let at = |percent: i64| -> BTreeMap<i32, i64> {
        source
            .iter()
            .map(|(partition, records)| (*partition, records.len() as i64 * percent / 100))
            .collect()
    };

    // The sync commits the source group's translated offsets.
    commit_group(Cluster::Source, &group, &topic, &at(30)).await?;
    let expected = translated(&fleet, &flow, &group).await;
    fleet
        .wait_until(
            Duration::from_secs(60),
            "the group synced at 30 %",
            || async {
                let committed = committed_offsets(Cluster::Dest, &group, &topic, PARTITIONS)
                    .await
                    .map_err(|error| format!("{error:#}"))?;
                (committed == expected).then_some(()).ok_or(format!(
                    "destination group at {committed:?}, want {expected:?}"
                ))
            },
        )
        .await;

    // A consumer of the group is active on the destination: whatever the source
    // group does, the sync leaves the destination group alone.
    let live = LiveMember::join(Cluster::Dest, &group, &topic).await?;
    commit_group(Cluster::Source, &group, &topic, &at(60)).await?;
    let live_syncs = std::sync::Mutex::new(Vec::new());
    fleet
        .wait_until(
            Duration::from_secs(60),
            "three syncs finding the group live",
            || async {
                let (at_ms, state) = sync_state(&fleet, &flow, &group).await?;
                let mut live_syncs = live_syncs.lock().unwrap();
                if state == "live" && !live_syncs.contains(&at_ms) {
                    live_syncs.push(at_ms);
                }
                (live_syncs.len() >= 3).then_some(()).ok_or(format!(
                    "{} live syncs, last state {state}",
                    live_syncs.len()
                ))
            },
        )
        .await;
    assert_eq!(
        committed_offsets(Cluster::Dest, &group, &topic, PARTITIONS).await?,
        expected,
        "a live group was moved"
    );
    let status = fleet.ctl(["status", "--flow", &flow]).await;
    assert!(status.stdout.contains("never moved"), "{status}");

    // Failover refuses to call a live group exact.
    let refused = fleet
        .ctl(["failover", &flow, "--groups", &group, "--now"])
        .await;
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stdout.contains("live"), "{refused}");
    assert!(refused.stderr.contains("not synced exactly"), "{refused}");

    // Once the consumer left, the group follows the source again.
    live.leave().await?;
    let expected = translated(&fleet, &flow, &group).await;
    fleet
        .wait_until(
            Duration::from_secs(60),
            "the group synced at 60 %",
            || async {
                let committed = committed_offsets(Cluster::Dest, &group, &topic, PARTITIONS)
                    .await
                    .map_err(|error| format!("{error:#}"))?;
                (committed == expected).then_some(()).ok_or(format!(
                    "destination group at {committed:?}, want {expected:?}"
                ))
            },
        )
        .await;

    // Never backwards unless asked.
    commit_group(Cluster::Source, &group, &topic, &at(40)).await?;
    let sync_before = sync_state(&fleet, &flow, &group)
        .await
        .map_err(anyhow::Error::msg)?;
    fleet
        .wait_until(
            Duration::from_secs(60),
            "a sync refusing to go backwards",
            || async {
                let (at_ms, state) = sync_state(&fleet, &flow, &group).await?;
                (at_ms > sync_before.0 && state == "partial")
                    .then_some(())
                    .ok_or(format!("state {state} at {at_ms}"))
            },
        )
        .await;
    assert_eq!(
        committed_offsets(Cluster::Dest, &group, &topic, PARTITIONS).await?,
        expected,
        "the destination group went backwards"
    );
    let backwards = fleet
        .ctl([
            "offsets",
            "sync",
            "--flow",
            &flow,
            "--groups",
            &group,
            "--allow-backwards",
            "-o",
            "json",
        ])
        .await;
    assert!(backwards.success(), "{backwards}");
    assert_eq!(
        committed_offsets(Cluster::Dest, &group, &topic, PARTITIONS).await?,
        translated(&fleet, &flow, &group).await
    );

    // What the syncs did is counted in the leader's metrics.
    let members = kmirror_tests::observability::members(&fleet).await?;
    let mut committed_total = 0.0;
    for member in members.values() {
        if let Ok(url) = kmirror_tests::observability::metrics_url(member) {
            let scrape = kmirror_tests::observability::scrape(url).await?;
            committed_total += kmirror_tests::observability::sum(
                &scrape,
                "kmirror_group_offsets_committed_total",
                &[("flow", flow.as_str())],
            );
        }
    }
    assert!(
        committed_total >= 6.0,
        "{committed_total} partitions committed"
    );

    // Bad input: clear errors, exit 1, and the mirror goes on.
    let unknown_group = fleet
        .ctl([
            "offsets",
            "sync",
            "--flow",
            &flow,
            "--groups",
            "nobody-reads-this",
        ])
        .await;
    assert_eq!(unknown_group.code, Some(1), "{unknown_group}");
    assert!(
        unknown_group.stderr.contains("consumer group")
            && unknown_group.stderr.contains("not found"),
        "{unknown_group}"
    );
    let unknown_flow = fleet.ctl(["failover", "no-such-flow", "--now"]).await;
    assert_eq!(unknown_flow.code, Some(1), "{unknown_flow}");
    assert!(
        unknown_flow.stderr.contains("flow no-such-flow not found"),
        "{unknown_flow}"
    );
    let bad_regex = fleet
        .ctl(["offsets", "sync", "--flow", &flow, "--groups", "billing("])
        .await;
    assert_eq!(bad_regex.code, Some(1), "{bad_regex}");
    assert!(
        bad_regex.stderr.contains("invalid group include regex"),
        "{bad_regex}"
    );
    Ok(())
}
