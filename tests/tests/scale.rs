//! Scaling a running fleet out and back in while records flow: from one fetcher
//! and one writer to three of each, then drained back to one. Nothing is lost,
//! first copies arrive in source order, and the assignment stays sticky: no
//! partition moves more often than the change of membership requires.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::kafka::{create_topic, Cluster};
use kmirror_tests::steady::SteadyLoad;
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use serde_json::Value;

const PARTITIONS: i32 = 8;
const ROLES: [&str; 2] = ["fetcher", "writer"];

/// (fetcher, writer) of every partition, from `kmirrorctl assignments -o json`.
async fn assignments(fleet: &Fleet, flow: &str) -> BTreeMap<i64, (String, String)> {
    let output = fleet
        .ctl(["assignments", "--flow", flow, "-o", "json"])
        .await;
    let json: Value = serde_json::from_str(&output.stdout).unwrap_or(Value::Null);
    json["assignments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|assignment| {
            (
                assignment["partition"].as_i64().unwrap_or(-1),
                (
                    assignment["fetcher"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    assignment["writer"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            )
        })
        .collect()
}

fn loads(assigned: &BTreeMap<i64, (String, String)>, role: usize) -> BTreeMap<String, usize> {
    let mut loads = BTreeMap::new();
    for owners in assigned.values() {
        let owner = if role == 0 { &owners.0 } else { &owners.1 };
        *loads.entry(owner.clone()).or_insert(0) += 1;
    }
    loads
}

/// Follows the assignments until `done` holds for them, counting every change of
/// owner per role (fetcher, writer) seen on the way.
async fn follow_moves(
    fleet: &Fleet,
    flow: &str,
    what: &str,
    done: impl Fn(&BTreeMap<i64, (String, String)>) -> bool,
) -> ([usize; 2], BTreeMap<i64, (String, String)>) {
    let mut previous = assignments(fleet, flow).await;
    let mut moves = [0; 2];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = assignments(fleet, flow).await;
        if now.len() == PARTITIONS as usize {
            for (partition, owners) in &now {
                if let Some(before) = previous.get(partition) {
                    moves[0] += usize::from(before.0 != owners.0);
                    moves[1] += usize::from(before.1 != owners.1);
                }
            }
            previous = now;
            if done(&previous) {
                return (moves, previous);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; assignments: {previous:?}\n{}",
            fleet.log_paths()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_out_and_draining_back_moves_only_what_it_must_and_loses_nothing() -> Result<()> {
    let topic = unique_name("scale");
    let flow = unique_name("scale-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 3,
        writers: 3,
        ..FleetOptions::new("scale")
    })
    .await;
    // Start from one fetcher and one writer: the others stop gracefully (they
    // leave etcd at once) before the flow exists.
    for role in ROLES {
        for index in 1..3 {
            fleet.sigterm(&format!("{role}-{index}")).await;
        }
    }
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    let load = SteadyLoad {
        partitions: PARTITIONS,
        chunk: 300,
        tick: Duration::from_millis(100),
        chunks: 250,
    };
    let producer = load.start(Cluster::Source, topic.clone());
    let (_, start) = follow_moves(
        &fleet,
        &flow,
        "every partition on fetcher-0 and writer-0",
        |now| {
            now.values()
                .all(|owners| owners == &("fetcher-0".to_string(), "writer-0".to_string()))
        },
    )
    .await;
    assert_eq!(start.len(), PARTITIONS as usize);

    // Scale out to three of each.
    for role in ROLES {
        for index in 1..3 {
            fleet.start_member(&format!("{role}-{index}"));
        }
    }
    let (moves, spread) = follow_moves(
        &fleet,
        &flow,
        "the partitions to spread over three of each",
        |now| {
            (0..2).all(|role| {
                let loads = loads(now, role);
                loads.len() == 3 && loads.values().all(|count| (2..=3).contains(count))
            })
        },
    )
    .await;
    for (role, name) in ROLES.iter().enumerate() {
        let stayed = loads(&spread, role)[&format!("{name}-0")];
        assert_eq!(
            moves[role],
            PARTITIONS as usize - stayed,
            "{name}s: {} moves where {} partitions left {name}-0 (a partition moved twice)",
            moves[role],
            PARTITIONS as usize - stayed
        );
    }

    // Drain back to one of each: exactly the drained members' partitions move.
    let mut drained_partitions = [0; 2];
    for (role, name) in ROLES.iter().enumerate() {
        let loads = loads(&spread, role);
        drained_partitions[role] = loads[&format!("{name}-1")] + loads[&format!("{name}-2")];
    }
    for role in ROLES {
        for index in 1..3 {
            fleet
                .ctl(["drain", &format!("{role}-{index}")])
                .await
                .assert_success();
        }
    }
    let (_, back) = follow_moves(
        &fleet,
        &flow,
        "every partition back on fetcher-0 and writer-0",
        |now| {
            now.values()
                .all(|owners| owners == &("fetcher-0".to_string(), "writer-0".to_string()))
        },
    )
    .await;
    // `drain` returns once the member holds nothing: compare the plans before and
    // after. Exactly the drained members' partitions changed owner.
    let mut moves_back = [0; 2];
    for (partition, owners) in &back {
        let before = &spread[partition];
        moves_back[0] += usize::from(before.0 != owners.0);
        moves_back[1] += usize::from(before.1 != owners.1);
    }
    assert_eq!(moves_back, drained_partitions);
    for role in ROLES {
        for index in 1..3 {
            fleet.sigterm(&format!("{role}-{index}")).await;
        }
    }

    let produced = producer.await??;
    let delivery = fleet
        .assert_mirrored_in_order(
            &flow,
            &topic,
            PARTITIONS,
            produced,
            Duration::from_secs(120),
        )
        .await?;
    eprintln!(
        "scale: out moved {moves:?} (fetchers, writers), drain moved {drained_partitions:?}, {} duplicates",
        delivery.duplicates
    );
    Ok(())
}
