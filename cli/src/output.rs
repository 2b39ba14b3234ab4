//! What kmirrorctl prints: borderless aligned tables for people, stable JSON for
//! scripts.
//!
//! JSON shapes (field names and nesting are stable; integers are JSON numbers):
//!
//! - `status -o json`:
//!   `{"flows":[{"name","source_cluster","dest_cluster","state","error","total_lag",
//!   "partitions":[{"topic","partition","dest_topic","log_end_offset","mirrored_offset",
//!   "lag","fetcher","writer","epoch","error","dest_offset"}]}]}`.
//!   `state` is `running`, `degraded` (some partition cannot progress) or `failing`
//!   (the flow as a whole cannot run). `log_end_offset` and `lag` are -1 when the
//!   source cannot be asked; `dest_offset` is -1 before the first checkpoint;
//!   `fetcher` and `writer` are empty for an unassigned partition.
//! - `members -o json`: `{"members":[{"id","role","address","version","leader","partitions"}]}`.
//! - `cluster list -o json`: `{"clusters":[{"name","bootstrap_servers","properties":{}}]}`
//!   (secret property values masked).
//! - `flow list -o json`: `{"flows":[{"name","source_cluster","dest_cluster","include","exclude"}]}`.

use std::collections::BTreeMap;

use kmirror_proto::v1::{Cluster, Flow, FlowStatus, Member, PartitionStatus};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct StatusJson {
    pub flows: Vec<FlowStatusJson>,
}

#[derive(Debug, Serialize)]
pub struct FlowStatusJson {
    pub name: String,
    pub source_cluster: String,
    pub dest_cluster: String,
    pub state: String,
    pub error: String,
    pub total_lag: i64,
    pub partitions: Vec<PartitionStatusJson>,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatusJson {
    pub topic: String,
    pub partition: i32,
    pub dest_topic: String,
    pub log_end_offset: i64,
    pub mirrored_offset: i64,
    pub lag: i64,
    pub fetcher: String,
    pub writer: String,
    pub epoch: u64,
    pub error: String,
    pub dest_offset: i64,
}

impl From<&FlowStatus> for FlowStatusJson {
    fn from(flow: &FlowStatus) -> Self {
        Self {
            name: flow.name.clone(),
            source_cluster: flow.source_cluster.clone(),
            dest_cluster: flow.dest_cluster.clone(),
            state: flow.state.clone(),
            error: flow.error.clone(),
            total_lag: flow.total_lag,
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
            log_end_offset: partition.log_end_offset,
            mirrored_offset: partition.mirrored_offset,
            lag: partition.lag,
            fetcher: partition.fetcher.clone(),
            writer: partition.writer.clone(),
            epoch: partition.epoch,
            error: partition.error.clone(),
            dest_offset: partition.dest_offset,
        }
    }
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

#[derive(Debug, Serialize)]
pub struct FlowJson {
    pub name: String,
    pub source_cluster: String,
    pub dest_cluster: String,
    pub include: String,
    pub exclude: String,
}

impl From<&Flow> for FlowJson {
    fn from(flow: &Flow) -> Self {
        Self {
            name: flow.name.clone(),
            source_cluster: flow.source_cluster.clone(),
            dest_cluster: flow.dest_cluster.clone(),
            include: flow.include.clone(),
            exclude: flow.exclude.clone(),
        }
    }
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("output values always serialize")
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
fn offset_cell(value: i64) -> String {
    if value < 0 {
        "-".to_string()
    } else {
        value.to_string()
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

/// The status as two tables: one row per partition, then one TOTAL-LAG line per flow.
pub fn status_text(flows: &[FlowStatus]) -> String {
    if flows.is_empty() {
        return "no flows\n".to_string();
    }
    let partition_rows: Vec<Vec<String>> = flows
        .iter()
        .flat_map(|flow| {
            flow.partitions.iter().map(move |partition| {
                vec![
                    flow.name.clone(),
                    partition.topic.clone(),
                    partition.partition.to_string(),
                    offset_cell(partition.log_end_offset),
                    partition.mirrored_offset.to_string(),
                    offset_cell(partition.lag),
                    or_dash(&partition.fetcher),
                    or_dash(&partition.writer),
                    partition.error.clone(),
                ]
            })
        })
        .collect();
    let flow_rows: Vec<Vec<String>> = flows
        .iter()
        .map(|flow| {
            vec![
                flow.name.clone(),
                flow.state.clone(),
                flow.total_lag.to_string(),
                format!("{} -> {}", flow.source_cluster, flow.dest_cluster),
                flow.error.clone(),
            ]
        })
        .collect();
    let mut output = String::new();
    if !partition_rows.is_empty() {
        output.push_str(&render_table(
            &[
                "FLOW",
                "TOPIC",
                "PARTITION",
                "LOG-END-OFFSET",
                "MIRRORED-OFFSET",
                "LAG",
                "FETCHER",
                "WRITER",
                "ERROR",
            ],
            &partition_rows,
        ));
        output.push('\n');
    }
    output.push_str(&render_table(
        &["FLOW", "STATE", "TOTAL-LAG", "CLUSTERS", "ERROR"],
        &flow_rows,
    ));
    output
}

pub fn members_text(members: &[Member]) -> String {
    if members.is_empty() {
        return "no members\n".to_string();
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            let leader = match (member.role.as_str(), member.leader) {
                ("coordinator", true) => "yes",
                ("coordinator", false) => "no",
                _ => "-",
            };
            let partitions = if member.role == "coordinator" {
                "-".to_string()
            } else {
                member.partitions.to_string()
            };
            vec![
                member.id.clone(),
                member.role.clone(),
                member.address.clone(),
                member.version.clone(),
                leader.to_string(),
                partitions,
            ]
        })
        .collect();
    render_table(
        &["ID", "ROLE", "ADDRESS", "VERSION", "LEADER", "PARTITIONS"],
        &rows,
    )
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

pub fn flows_text(flows: &[Flow]) -> String {
    if flows.is_empty() {
        return "no flows\n".to_string();
    }
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|flow| {
            vec![
                flow.name.clone(),
                flow.source_cluster.clone(),
                flow.dest_cluster.clone(),
                flow.include.clone(),
                flow.exclude.clone(),
            ]
        })
        .collect();
    render_table(&["NAME", "SOURCE", "DEST", "INCLUDE", "EXCLUDE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_status() -> Vec<FlowStatus> {
        vec![FlowStatus {
            name: "dr".to_string(),
            source_cluster: "src".to_string(),
            dest_cluster: "dst".to_string(),
            state: "degraded".to_string(),
            error: String::new(),
            total_lag: 42,
            partitions: vec![
                PartitionStatus {
                    topic: "orders".to_string(),
                    partition: 0,
                    dest_topic: "orders".to_string(),
                    log_end_offset: 1000,
                    mirrored_offset: 958,
                    lag: 42,
                    fetcher: "fetcher-1".to_string(),
                    writer: "writer-1".to_string(),
                    epoch: 7,
                    error: String::new(),
                    dest_offset: 957,
                },
                PartitionStatus {
                    topic: "orders".to_string(),
                    partition: 1,
                    dest_topic: "orders".to_string(),
                    log_end_offset: -1,
                    mirrored_offset: 0,
                    lag: -1,
                    fetcher: String::new(),
                    writer: String::new(),
                    epoch: 0,
                    error: "record too large".to_string(),
                    dest_offset: -1,
                },
            ],
        }]
    }

    #[test]
    fn tables_align_columns_without_borders_or_trailing_spaces() {
        let table = render_table(
            &["NAME", "VALUE"],
            &[
                vec!["a".to_string(), "1".to_string()],
                vec!["longer".to_string(), "".to_string()],
            ],
        );
        assert_eq!(table, "NAME    VALUE\na       1\nlonger\n");
    }

    #[test]
    fn status_text_has_partition_rows_and_a_total_lag_line_per_flow() {
        let text = status_text(&sample_status());
        let expected = "\
FLOW  TOPIC   PARTITION  LOG-END-OFFSET  MIRRORED-OFFSET  LAG  FETCHER    WRITER    ERROR
dr    orders  0          1000            958              42   fetcher-1  writer-1
dr    orders  1          -               0                -    -          -         record too large

FLOW  STATE     TOTAL-LAG  CLUSTERS    ERROR
dr    degraded  42         src -> dst
";
        assert_eq!(text, expected);
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let json = StatusJson {
            flows: sample_status().iter().map(FlowStatusJson::from).collect(),
        };
        let value: serde_json::Value = serde_json::from_str(&to_json(&json)).unwrap();
        let flow = &value["flows"][0];
        assert_eq!(flow["name"], "dr");
        assert_eq!(flow["state"], "degraded");
        assert_eq!(flow["total_lag"], 42);
        let partition = &flow["partitions"][0];
        for field in [
            "topic",
            "partition",
            "dest_topic",
            "log_end_offset",
            "mirrored_offset",
            "lag",
            "fetcher",
            "writer",
            "epoch",
            "error",
            "dest_offset",
        ] {
            assert!(partition.get(field).is_some(), "missing {field}");
        }
        assert_eq!(partition["log_end_offset"], 1000);
        assert_eq!(flow["partitions"][1]["lag"], -1);
    }

    #[test]
    fn members_table_marks_the_leader_among_coordinators() {
        let members = vec![
            Member {
                id: "coordinator-a".to_string(),
                role: "coordinator".to_string(),
                address: "10.0.0.1:7070".to_string(),
                version: "0.1.0".to_string(),
                leader: true,
                partitions: 0,
            },
            Member {
                id: "fetcher-b".to_string(),
                role: "fetcher".to_string(),
                address: "10.0.0.2:40001".to_string(),
                version: "0.1.0".to_string(),
                leader: false,
                partitions: 8,
            },
        ];
        let expected = "\
ID             ROLE         ADDRESS         VERSION  LEADER  PARTITIONS
coordinator-a  coordinator  10.0.0.1:7070   0.1.0    yes     -
fetcher-b      fetcher      10.0.0.2:40001  0.1.0    -       8
";
        assert_eq!(members_text(&members), expected);
    }

    #[test]
    fn empty_lists_say_so() {
        assert_eq!(status_text(&[]), "no flows\n");
        assert_eq!(members_text(&[]), "no members\n");
        assert_eq!(clusters_text(&[]), "no clusters\n");
        assert_eq!(flows_text(&[]), "no flows\n");
    }
}
