//! What kmirrorctl prints: borderless aligned tables with upper-case headers for
//! people (`-o text`, and `-o wide` with more columns), stable JSON and YAML for
//! scripts (`-o json`, `-o yaml`: the same document).
//!
//! Machine output shapes (field names and nesting are stable; fields may be added,
//! never renamed or removed; integers are numbers, rates are numbers per second):
//!
//! - `status`: `{"leader", "flows":[{"name","source_cluster","dest_cluster","state",
//!   "phase","error","total_lag","until_caught_up","target_records",
//!   "remaining_records","records_per_sec","bytes_per_sec","partitions":[{"topic",
//!   "partition","dest_topic","log_end_offset","mirrored_offset","lag","fetcher",
//!   "writer","epoch","error","dest_offset","target_offset","records_per_sec",
//!   "bytes_per_sec","checkpoint_ms"}]}]}`. `leader` is null when no coordinator
//!   leads. `state` is `running`, `degraded` (some partition cannot progress),
//!   `failing` (the flow as a whole cannot run), `paused` or `completed` (a
//!   migration that reached its targets). Unknown or inapplicable values are null,
//!   never -1 or "": `leader` when no coordinator leads, `error` when there is
//!   none, `log_end_offset` and `lag` when the source cannot be asked,
//!   `dest_offset` before the first checkpoint, `fetcher` and `writer` for an
//!   unassigned partition, `target_records`, `remaining_records` and
//!   `target_offset` outside migration mode.
//! - `members`: `{"members":[{"id","role","address","version","leader","partitions",
//!   "lease_remaining_ms","records_per_sec","bytes_per_sec","drained","started_ms",
//!   "metrics_url"}]}`. `lease_remaining_ms` is null when unknown, `metrics_url`
//!   when the member serves no metrics.
//! - `cluster list`: `{"clusters":[{"name","bootstrap_servers","properties":{}}]}`
//!   (secret property values masked).
//! - `flow list`: `{"flows":[{"name","source_cluster","dest_cluster","include",
//!   "exclude" (null when none),"rename":{"policy",...},"start","start_timestamp_ms","until_caught_up",
//!   "paused","phase","sync_topic_configs","sync_topic_configs_exclude","created_ms"}]}`.
//! - `assignments`: `{"assignments":[{"flow","topic","partition","dest_topic",
//!   "fetcher","writer","epoch","records_per_sec","bytes_per_sec"}]}`.
//! - `rebalance`: `{"applied","moves":[{"flow","topic","partition","role","from","to"}]}`.
//! - `flow create`: `{"kind","name","action","topics":[{"source_topic","dest_topic",
//!   "source_partitions","dest_partitions"}],"warnings":[]}` (`dest_partitions` null
//!   for a destination topic still to be created).
//! - `status --watch -o json`: one compact `status` document per line.

use std::collections::BTreeMap;

use clap::ValueEnum;
use kmirror_proto::v1::{
    AssignmentInfo, Cluster, Flow, FlowStatus, Member, PartitionMove, PartitionStatus, TopicMatch,
};
use serde::Serialize;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned table.
    #[default]
    Text,
    /// Aligned table with more columns.
    Wide,
    /// JSON document (stable shape).
    Json,
    /// YAML document (the same shape as JSON).
    Yaml,
}

impl OutputFormat {
    pub fn is_machine(self) -> bool {
        matches!(self, OutputFormat::Json | OutputFormat::Yaml)
    }
}

/// Renders `value` as JSON or YAML, or else as the text `table` makes (told
/// whether wide output was asked for).
pub fn render<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce(bool) -> String,
) -> String {
    match format {
        OutputFormat::Text => table(false),
        OutputFormat::Wide => table(true),
        OutputFormat::Json => {
            let mut text = to_json(value);
            text.push('\n');
            text
        }
        OutputFormat::Yaml => to_yaml(value),
    }
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("output values always serialize")
}

pub fn to_yaml<T: Serialize>(value: &T) -> String {
    let mut text = serde_saphyr::to_string(value).expect("output values always serialize");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[derive(Debug, Serialize)]
pub struct StatusJson {
    pub leader: Option<String>,
    pub flows: Vec<FlowStatusJson>,
}

#[derive(Debug, Serialize)]
pub struct FlowStatusJson {
    pub name: String,
    pub source_cluster: String,
    pub dest_cluster: String,
    pub state: String,
    pub phase: String,
    pub error: Option<String>,
    pub total_lag: i64,
    pub until_caught_up: bool,
    pub target_records: Option<i64>,
    pub remaining_records: Option<i64>,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub partitions: Vec<PartitionStatusJson>,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatusJson {
    pub topic: String,
    pub partition: i32,
    pub dest_topic: String,
    pub log_end_offset: Option<i64>,
    pub mirrored_offset: i64,
    pub lag: Option<i64>,
    pub fetcher: Option<String>,
    pub writer: Option<String>,
    pub epoch: u64,
    pub error: Option<String>,
    pub dest_offset: Option<i64>,
    pub target_offset: Option<i64>,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub checkpoint_ms: i64,
}

impl StatusJson {
    pub fn new(leader: &str, flows: &[FlowStatus]) -> Self {
        Self {
            leader: non_empty(leader),
            flows: flows.iter().map(FlowStatusJson::from).collect(),
        }
    }
}

impl From<&FlowStatus> for FlowStatusJson {
    fn from(flow: &FlowStatus) -> Self {
        Self {
            name: flow.name.clone(),
            source_cluster: flow.source_cluster.clone(),
            dest_cluster: flow.dest_cluster.clone(),
            state: flow.state.clone(),
            phase: flow.phase.clone(),
            error: non_empty(&flow.error),
            total_lag: flow.total_lag,
            until_caught_up: flow.until_caught_up,
            target_records: known(flow.target_records),
            remaining_records: known(flow.remaining_records),
            records_per_sec: round2(flow.records_per_sec),
            bytes_per_sec: round2(flow.bytes_per_sec),
            partitions: flow
                .partitions
                .iter()
                .map(PartitionStatusJson::from)
                .collect(),
        }
    }
}

impl From<&PartitionStatus> for PartitionStatusJson {
    fn from(partition: &PartitionStatus) -> Self {
        Self {
            topic: partition.topic.clone(),
            partition: partition.partition,
            dest_topic: partition.dest_topic.clone(),
            log_end_offset: known(partition.log_end_offset),
            mirrored_offset: partition.mirrored_offset,
            lag: known(partition.lag),
            fetcher: non_empty(&partition.fetcher),
            writer: non_empty(&partition.writer),
            epoch: partition.epoch,
            error: non_empty(&partition.error),
            dest_offset: known(partition.dest_offset),
            target_offset: known(partition.target_offset),
            records_per_sec: round2(partition.records_per_sec),
            bytes_per_sec: round2(partition.bytes_per_sec),
            checkpoint_ms: partition.checkpoint_ms,
        }
    }
}

/// `None` (null in JSON and YAML) for the -1 the API uses for "unknown" or "not
/// applicable".
fn known(value: i64) -> Option<i64> {
    (value >= 0).then_some(value)
}

/// `None` (null in JSON and YAML) for the empty string the API uses for "none".
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// Rates to two decimals: the fetchers' smoothing makes more digits noise.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[derive(Debug, Serialize)]
pub struct MembersJson {
    pub members: Vec<MemberJson>,
}

#[derive(Debug, Serialize)]
pub struct MemberJson {
    pub id: String,
    pub role: String,
    pub address: String,
    pub version: String,
    pub leader: bool,
    pub partitions: u32,
    pub lease_remaining_ms: Option<i64>,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub drained: bool,
    pub started_ms: i64,
    pub metrics_url: Option<String>,
}

impl From<&Member> for MemberJson {
    fn from(member: &Member) -> Self {
        Self {
            id: member.id.clone(),
            role: member.role.clone(),
            address: member.address.clone(),
            version: member.version.clone(),
            leader: member.leader,
            partitions: member.partitions,
            lease_remaining_ms: known(member.lease_remaining_ms),
            records_per_sec: round2(member.records_per_sec),
            bytes_per_sec: round2(member.bytes_per_sec),
            drained: member.drained,
            started_ms: member.started_ms,
            metrics_url: non_empty(&member.metrics_url),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClustersJson {
    pub clusters: Vec<ClusterJson>,
}

#[derive(Debug, Serialize)]
pub struct ClusterJson {
    pub name: String,
    pub bootstrap_servers: String,
    pub properties: BTreeMap<String, String>,
}

impl From<&Cluster> for ClusterJson {
    fn from(cluster: &Cluster) -> Self {
        Self {
            name: cluster.name.clone(),
            bootstrap_servers: cluster.bootstrap_servers.clone(),
            properties: cluster.properties.clone().into_iter().collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FlowsJson {
    pub flows: Vec<FlowJson>,
}

/// A flow's rename policy as one object: `{"policy":"identity"}`,
/// `{"policy":"prefix","alias","separator"}` or `{"policy":"map","topics":{}}`.
#[derive(Debug, Serialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
pub enum RenameJson {
    Identity,
    Prefix { alias: String, separator: String },
    Map { topics: BTreeMap<String, String> },
}

#[derive(Debug, Serialize)]
pub struct FlowJson {
    pub name: String,
    pub source_cluster: String,
    pub dest_cluster: String,
    pub include: String,
    pub exclude: Option<String>,
    pub rename: RenameJson,
    pub start: String,
    pub start_timestamp_ms: i64,
    pub until_caught_up: bool,
    pub paused: bool,
    pub phase: String,
    pub sync_topic_configs: bool,
    pub sync_topic_configs_exclude: Vec<String>,
    pub created_ms: i64,
}

impl From<&Flow> for FlowJson {
    fn from(flow: &Flow) -> Self {
        let rename = match flow.rename_policy.as_str() {
            "prefix" => RenameJson::Prefix {
                alias: flow.rename_prefix.clone(),
                separator: flow.rename_separator.clone(),
            },
            "map" => RenameJson::Map {
                topics: flow.rename_map.clone().into_iter().collect(),
            },
            _ => RenameJson::Identity,
        };
        Self {
            name: flow.name.clone(),
            source_cluster: flow.source_cluster.clone(),
            dest_cluster: flow.dest_cluster.clone(),
            include: flow.include.clone(),
            exclude: non_empty(&flow.exclude),
            rename,
            start: flow.start.clone(),
            start_timestamp_ms: flow.start_timestamp_ms,
            until_caught_up: flow.until_caught_up,
            paused: flow.paused,
            phase: flow.phase.clone(),
            sync_topic_configs: flow.sync_topic_configs.unwrap_or(true),
            sync_topic_configs_exclude: flow.sync_topic_configs_exclude.clone(),
            created_ms: flow.created_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AssignmentsJson {
    pub assignments: Vec<AssignmentJson>,
}

#[derive(Debug, Serialize)]
pub struct AssignmentJson {
    pub flow: String,
    pub topic: String,
    pub partition: i32,
    pub dest_topic: String,
    pub fetcher: String,
    pub writer: String,
    pub epoch: u64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
}

impl From<&AssignmentInfo> for AssignmentJson {
    fn from(assignment: &AssignmentInfo) -> Self {
        Self {
            flow: assignment.flow.clone(),
            topic: assignment.topic.clone(),
            partition: assignment.partition,
            dest_topic: assignment.dest_topic.clone(),
            fetcher: assignment.fetcher.clone(),
            writer: assignment.writer.clone(),
            epoch: assignment.epoch,
            records_per_sec: round2(assignment.records_per_sec),
            bytes_per_sec: round2(assignment.bytes_per_sec),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RebalanceJson {
    pub applied: bool,
    pub moves: Vec<MoveJson>,
}

#[derive(Debug, Serialize)]
pub struct MoveJson {
    pub flow: String,
    pub topic: String,
    pub partition: i32,
    pub role: String,
    pub from: String,
    pub to: String,
}

impl From<&PartitionMove> for MoveJson {
    fn from(movement: &PartitionMove) -> Self {
        Self {
            flow: movement.flow.clone(),
            topic: movement.topic.clone(),
            partition: movement.partition,
            role: movement.role.clone(),
            from: movement.from.clone(),
            to: movement.to.clone(),
        }
    }
}

/// A stored flow with the topics it matches now, for `flow create -o json|yaml`.
#[derive(Debug, Serialize)]
pub struct FlowStoredJson {
    pub kind: String,
    pub name: String,
    pub action: String,
    pub topics: Vec<TopicMatchJson>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TopicMatchJson {
    pub source_topic: String,
    pub dest_topic: String,
    pub source_partitions: i32,
    /// null when the destination topic does not exist yet.
    pub dest_partitions: Option<i32>,
}

impl FlowStoredJson {
    pub fn new(name: &str, action: &str, topics: &[TopicMatch], warnings: &[String]) -> Self {
        Self {
            kind: "flow".to_string(),
            name: name.to_string(),
            action: action.to_string(),
            topics: topics
                .iter()
                .map(|matched| TopicMatchJson {
                    source_topic: matched.source_topic.clone(),
                    dest_topic: matched.dest_topic.clone(),
                    source_partitions: matched.source_partitions,
                    dest_partitions: (matched.dest_partitions > 0)
                        .then_some(matched.dest_partitions),
                })
                .collect(),
            warnings: warnings.to_vec(),
        }
    }
}

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

/// The outcome of a command that changes something, for `-o json|yaml`.
#[derive(Debug, Serialize)]
pub struct DoneJson {
    pub kind: String,
    pub name: String,
    pub action: String,
}

/// Renders rows under upper-case headers, columns separated by at least two spaces,
/// no borders and no trailing spaces.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if column < widths.len() {
                widths[column] = widths[column].max(cell.chars().count());
            }
        }
    }
    let mut output = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for cells in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (column, cell) in cells.iter().enumerate().take(widths.len()) {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let padding = widths[column].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', padding));
        }
        output.push_str(line.trim_end());
        output.push('\n');
    }
    output
}

/// `-` for the -1 the API uses for "unknown".
pub fn offset_cell(value: i64) -> String {
    if value < 0 {
        "-".to_string()
    } else {
        value.to_string()
    }
}

pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

/// A rate with a metric suffix: `0`, `950`, `12.3k`, `4.5M`.
pub fn human_rate(value: f64) -> String {
    human_number(value, "")
}

/// Bytes per second: `0 B/s`, `12.3 kB/s`, `4.5 MB/s`.
pub fn human_bytes_rate(value: f64) -> String {
    let text = human_number(value, "B");
    if text
        .chars()
        .last()
        .is_some_and(|last| last.is_ascii_digit())
    {
        format!("{text} B/s")
    } else {
        format!("{text}/s")
    }
}

fn human_number(value: f64, unit: &str) -> String {
    let value = value.max(0.0);
    let (scaled, suffix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        return format!("{}", value.round() as i64);
    };
    if unit.is_empty() {
        format!("{scaled:.1}{suffix}")
    } else {
        format!("{scaled:.1} {suffix}{unit}")
    }
}

/// A duration in whole units: `45s`, `3m20s`, `2h05m`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_string();
    }
    let seconds = seconds.round() as u64;
    if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    }
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
                    flow.total_lag.to_string(),
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
    }
    if leader.is_empty() {
        output.push_str("\nno coordinator leads the fleet\n");
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
            }
            row
        })
        .collect();
    let mut headers = vec!["NAME", "SOURCE", "DEST", "INCLUDE", "EXCLUDE", "PHASE"];
    if wide {
        headers.extend(["RENAME", "START", "MODE", "CONFIG-SYNC"]);
    }
    render_table(&headers, &rows)
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

#[cfg(test)]
mod tests;
