//! The text tables each command prints (`-o text`, and `-o wide` with more
//! columns).

use std::collections::BTreeMap;

use kmirror_proto::v1::{
    AssignmentInfo, Cluster, Flow, FlowStatus, Member, PartitionMove, PartitionStatus, TopicMatch,
};

use super::cells::{
    human_bytes_rate, human_duration, human_rate, offset_cell, or_dash, render_table,
};

/// The topics a flow matches and where they go, one per line under a count.
pub fn matched_topics_text(topics: &[TopicMatch]) -> String {
    if topics.is_empty() {
        return "no source topic matches now\n".to_string();
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|matched| {
            vec![
                matched.source_topic.clone(),
                matched.source_partitions.to_string(),
                matched.dest_topic.clone(),
                if matched.dest_partitions > 0 {
                    matched.dest_partitions.to_string()
                } else {
                    "new".to_string()
                },
            ]
        })
        .collect();
    format!(
        "{} topic(s) matched:\n{}",
        topics.len(),
        render_table(
            &["TOPIC", "PARTITIONS", "DEST-TOPIC", "DEST-PARTITIONS"],
            &rows
        )
    )
}

/// Client-side throughput of each partition between two refreshes of `status
/// --watch`: records mirrored per second, keyed by (flow, topic, partition).
pub type Rates = BTreeMap<(String, String, i32), f64>;

/// The status as two tables: one row per partition (the columns of
/// kafka-consumer-groups), then one row per flow with its TOTAL-LAG. `rates_opt`
/// adds a RATE column (records/s measured between refreshes of `--watch`).
pub fn status_text(
    leader: &str,
    flows: &[FlowStatus],
    wide: bool,
    rates_opt: Option<&Rates>,
) -> String {
    let mut output = String::new();
    if flows.is_empty() {
        output.push_str("no flows\n");
    }
    let mut headers = vec![
        "FLOW",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
    ];
    if rates_opt.is_some() {
        headers.push("RATE");
    }
    headers.extend(["FETCHER", "WRITER"]);
    if wide {
        headers.extend([
            "DEST-TOPIC",
            "DEST-OFFSET",
            "EPOCH",
            "RECORDS/S",
            "BYTES/S",
            "TARGET",
        ]);
    }
    headers.push("ERROR");
    let partition_rows: Vec<Vec<String>> = flows
        .iter()
        .flat_map(|flow| {
            flow.partitions.iter().map(move |partition| {
                let mut row = vec![
                    flow.name.clone(),
                    partition.topic.clone(),
                    partition.partition.to_string(),
                    partition.mirrored_offset.to_string(),
                    offset_cell(partition.log_end_offset),
                    offset_cell(partition.lag),
                ];
                if let Some(rates) = rates_opt {
                    let key = (
                        flow.name.clone(),
                        partition.topic.clone(),
                        partition.partition,
                    );
                    row.push(
                        rates
                            .get(&key)
                            .map(|rate| format!("{}/s", human_rate(*rate)))
                            .unwrap_or_else(|| "-".to_string()),
                    );
                }
                row.push(or_dash(&partition.fetcher));
                row.push(or_dash(&partition.writer));
                if wide {
                    row.push(partition.dest_topic.clone());
                    row.push(offset_cell(partition.dest_offset));
                    row.push(partition.epoch.to_string());
                    row.push(human_rate(partition.records_per_sec));
                    row.push(human_bytes_rate(partition.bytes_per_sec));
                    row.push(offset_cell(partition.target_offset));
                }
                row.push(partition.error.clone());
                row
            })
        })
        .collect();
    if !partition_rows.is_empty() {
        output.push_str(&render_table(&headers, &partition_rows));
        output.push('\n');
    }
    if !flows.is_empty() {
        let mut flow_headers = vec!["FLOW", "STATE", "TOTAL-LAG", "CLUSTERS"];
        if wide {
            flow_headers.extend(["RECORDS/S", "BYTES/S", "PROGRESS"]);
        }
        flow_headers.push("ERROR");
        let flow_rows: Vec<Vec<String>> = flows
            .iter()
            .map(|flow| {
                let mut row = vec![
                    flow.name.clone(),
                    flow.state.clone(),
                    if flow.total_lag < 0 {
                        "unknown".to_string()
                    } else {
                        flow.total_lag.to_string()
                    },
                    format!("{} -> {}", flow.source_cluster, flow.dest_cluster),
                ];
                if wide {
                    row.push(human_rate(flow.records_per_sec));
                    row.push(human_bytes_rate(flow.bytes_per_sec));
                    row.push(migration_progress(flow));
                }
                row.push(flow.error.clone());
                row
            })
            .collect();
        output.push_str(&render_table(&flow_headers, &flow_rows));
        let sync_rows: Vec<Vec<String>> = flows
            .iter()
            .filter(|flow| flow.group_sync_at_ms > 0)
            .flat_map(|flow| {
                let failure = (!flow.group_sync_error.is_empty()).then(|| {
                    vec![
                        flow.name.clone(),
                        "-".to_string(),
                        "failed".to_string(),
                        "-".to_string(),
                        flow.group_sync_error.clone(),
                    ]
                });
                failure
                    .into_iter()
                    .chain(flow.group_sync.iter().map(|group| {
                        vec![
                            flow.name.clone(),
                            group.group.clone(),
                            group.state.clone(),
                            format!("{}/{}", group.committed, group.unchanged),
                            group.skipped.first().cloned().unwrap_or_default(),
                        ]
                    }))
            })
            .collect();
        if !sync_rows.is_empty() {
            output.push('\n');
            output.push_str(&render_table(
                &["FLOW", "GROUP", "SYNC", "COMMITTED/UNCHANGED", "NOTE"],
                &sync_rows,
            ));
        }
    }
    if leader.is_empty() {
        output.push_str("\nno coordinator leads the fleet\n");
    }
    let held = flows
        .iter()
        .flat_map(|flow| &flow.partitions)
        .filter(|partition| partition.hold.is_some())
        .count();
    if held > 0 {
        output.push_str(&format!(
            "\n{held} partitions held: nothing of them is mirrored until an operator runs \
             `kmirrorctl partition reset FLOW TOPIC PARTITION --to earliest|latest|OFFSET`\n"
        ));
    }
    output
}

/// `45.0% (450/1000)` for a migration, `-` otherwise.
pub fn migration_progress(flow: &FlowStatus) -> String {
    if !flow.until_caught_up || flow.target_records < 0 {
        return "-".to_string();
    }
    let done = (flow.target_records - flow.remaining_records.max(0)).max(0);
    let percent = if flow.target_records == 0 {
        100.0
    } else {
        done as f64 * 100.0 / flow.target_records as f64
    };
    format!("{percent:.1}% ({done}/{})", flow.target_records)
}

/// Why the fleet is degraded, one reason per flow or fact; empty when healthy.
pub fn degraded_reasons(leader: &str, flows: &[FlowStatus]) -> Vec<String> {
    let mut reasons = Vec::new();
    if leader.is_empty() {
        reasons.push("no coordinator leads the fleet".to_string());
    }
    for flow in flows {
        match flow.state.as_str() {
            "failing" => reasons.push(format!("flow {} is failing: {}", flow.name, flow.error)),
            "degraded" => {
                let stopped: Vec<String> = flow
                    .partitions
                    .iter()
                    .filter(|partition| !partition.error.is_empty())
                    .map(|partition| format!("{}/{}", partition.topic, partition.partition))
                    .collect();
                reasons.push(format!(
                    "flow {} is degraded: {} partition(s) stopped ({})",
                    flow.name,
                    stopped.len(),
                    stopped.join(", ")
                ));
            }
            _ => {}
        }
    }
    reasons
}

/// `kmirrorctl top`: the partitions furthest behind, most lag first.
pub fn top_text(flows: &[FlowStatus], limit: usize, rates_opt: Option<&Rates>) -> String {
    let mut partitions: Vec<(&FlowStatus, &PartitionStatus)> = flows
        .iter()
        .flat_map(|flow| {
            flow.partitions
                .iter()
                .map(move |partition| (flow, partition))
        })
        .collect();
    partitions.sort_by(|left, right| {
        right
            .1
            .lag
            .cmp(&left.1.lag)
            .then_with(|| left.0.name.cmp(&right.0.name))
            .then_with(|| left.1.topic.cmp(&right.1.topic))
            .then_with(|| left.1.partition.cmp(&right.1.partition))
    });
    if partitions.is_empty() {
        return "no partitions\n".to_string();
    }
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .take(limit)
        .map(|(flow, partition)| {
            let key = (
                flow.name.clone(),
                partition.topic.clone(),
                partition.partition,
            );
            let rate = rates_opt
                .and_then(|rates| rates.get(&key).copied())
                .unwrap_or(partition.records_per_sec);
            let eta = if partition.lag <= 0 {
                "-".to_string()
            } else if rate > 0.0 {
                human_duration(partition.lag as f64 / rate)
            } else {
                "stalled".to_string()
            };
            vec![
                flow.name.clone(),
                partition.topic.clone(),
                partition.partition.to_string(),
                offset_cell(partition.lag),
                format!("{}/s", human_rate(rate)),
                human_bytes_rate(partition.bytes_per_sec),
                eta,
                or_dash(&partition.fetcher),
                partition.error.clone(),
            ]
        })
        .collect();
    render_table(
        &[
            "FLOW",
            "TOPIC",
            "PARTITION",
            "LAG",
            "RATE",
            "BYTES/S",
            "ETA",
            "FETCHER",
            "ERROR",
        ],
        &rows,
    )
}

pub fn members_text(members: &[Member], wide: bool) -> String {
    if members.is_empty() {
        return "no members\n".to_string();
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            let coordinator = member.role == "coordinator";
            let leader = match (coordinator, member.leader) {
                (true, true) => "yes",
                (true, false) => "no",
                _ => "-",
            };
            let lease = if member.lease_remaining_ms < 0 {
                "-".to_string()
            } else {
                format!("{}s", member.lease_remaining_ms / 1000)
            };
            let (partitions, rate) = if coordinator {
                ("-".to_string(), "-".to_string())
            } else {
                (
                    member.partitions.to_string(),
                    format!("{}/s", human_rate(member.records_per_sec)),
                )
            };
            let mut row = vec![
                member.id.clone(),
                member.role.clone(),
                member.address.clone(),
                leader.to_string(),
                lease,
                partitions,
                rate,
                if member.drained { "drained" } else { "-" }.to_string(),
            ];
            if wide {
                row.push(human_bytes_rate(member.bytes_per_sec));
                row.push(member.version.clone());
                row.push(or_dash(&member.metrics_url));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "ID",
        "ROLE",
        "ADDRESS",
        "LEADER",
        "LEASE",
        "PARTITIONS",
        "RATE",
        "DRAIN",
    ];
    if wide {
        headers.extend(["BYTES/S", "VERSION", "METRICS"]);
    }
    render_table(&headers, &rows)
}

pub fn clusters_text(clusters: &[Cluster]) -> String {
    if clusters.is_empty() {
        return "no clusters\n".to_string();
    }
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|cluster| {
            let properties: BTreeMap<&String, &String> = cluster.properties.iter().collect();
            let properties: Vec<String> = properties
                .into_iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            vec![
                cluster.name.clone(),
                cluster.bootstrap_servers.clone(),
                properties.join(","),
            ]
        })
        .collect();
    render_table(&["NAME", "BOOTSTRAP", "PROPERTIES"], &rows)
}

/// `identity`, `prefix east.` or `map (3 topics)`.
pub fn rename_cell(flow: &Flow) -> String {
    match flow.rename_policy.as_str() {
        "prefix" => format!("prefix {}{}", flow.rename_prefix, flow.rename_separator),
        "map" => format!("map ({} topics)", flow.rename_map.len()),
        _ => "identity".to_string(),
    }
}

pub fn flows_text(flows: &[Flow], wide: bool) -> String {
    if flows.is_empty() {
        return "no flows\n".to_string();
    }
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|flow| {
            let mut row = vec![
                flow.name.clone(),
                flow.source_cluster.clone(),
                flow.dest_cluster.clone(),
                flow.include.clone(),
                or_dash(&flow.exclude),
                or_dash(&flow.phase),
            ];
            if wide {
                let start = match flow.start.as_str() {
                    "timestamp" => format!("timestamp {}", flow.start_timestamp_ms),
                    other => or_dash(other),
                };
                row.push(rename_cell(flow));
                row.push(start);
                row.push(
                    if flow.until_caught_up {
                        "migration"
                    } else {
                        "continuous"
                    }
                    .to_string(),
                );
                row.push(
                    if flow.sync_topic_configs.unwrap_or(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_string(),
                );
                row.push(delivery_cell(flow).to_string());
            }
            row
        })
        .collect();
    let mut headers = vec!["NAME", "SOURCE", "DEST", "INCLUDE", "EXCLUDE", "PHASE"];
    if wide {
        headers.extend(["RENAME", "START", "MODE", "CONFIG-SYNC", "DELIVERY"]);
    }
    render_table(&headers, &rows)
}

/// The flow's delivery guarantee, as `flow list -o wide` and import plans show it.
pub fn delivery_cell(flow: &Flow) -> &'static str {
    if flow.exactly_once {
        "exactly-once"
    } else {
        "at-least-once"
    }
}

pub fn assignments_text(assignments: &[AssignmentInfo], wide: bool) -> String {
    if assignments.is_empty() {
        return "no assignments\n".to_string();
    }
    let rows: Vec<Vec<String>> = assignments
        .iter()
        .map(|assignment| {
            let mut row = vec![
                assignment.flow.clone(),
                assignment.topic.clone(),
                assignment.partition.to_string(),
                assignment.fetcher.clone(),
                assignment.writer.clone(),
                assignment.epoch.to_string(),
            ];
            if wide {
                row.push(assignment.dest_topic.clone());
                row.push(format!("{}/s", human_rate(assignment.records_per_sec)));
                row.push(human_bytes_rate(assignment.bytes_per_sec));
            }
            row
        })
        .collect();
    let mut headers = vec!["FLOW", "TOPIC", "PARTITION", "FETCHER", "WRITER", "EPOCH"];
    if wide {
        headers.extend(["DEST-TOPIC", "RATE", "BYTES/S"]);
    }
    render_table(&headers, &rows)
}

pub fn moves_text(moves: &[PartitionMove], applied: bool) -> String {
    let mut output = String::new();
    if !moves.is_empty() {
        let rows: Vec<Vec<String>> = moves
            .iter()
            .map(|movement| {
                vec![
                    movement.flow.clone(),
                    movement.topic.clone(),
                    movement.partition.to_string(),
                    movement.role.clone(),
                    movement.from.clone(),
                    movement.to.clone(),
                ]
            })
            .collect();
        output.push_str(&render_table(
            &["FLOW", "TOPIC", "PARTITION", "ROLE", "FROM", "TO"],
            &rows,
        ));
        output.push('\n');
    }
    let count = moves.len();
    output.push_str(&match (applied, count) {
        (_, 0) => "the load is balanced: nothing to move\n".to_string(),
        (true, _) => format!("moved {count} partition assignment(s)\n"),
        (false, _) => format!("a rebalance would move {count} partition assignment(s) (dry run)\n"),
    });
    output
}
