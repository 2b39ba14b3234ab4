//! The machine documents of `-o json` and `-o yaml` (their shapes are listed in
//! the `output` module's doc): stable field names, nulls for what is unknown.

use std::collections::BTreeMap;

use kmirror_proto::v1::{
    AssignmentInfo, Cluster, Flow, FlowStatus, Member, PartitionMove, PartitionStatus, TopicMatch,
};
use serde::Serialize;

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
    pub total_lag: Option<i64>,
    pub until_caught_up: bool,
    pub target_records: Option<i64>,
    pub remaining_records: Option<i64>,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub partitions: Vec<PartitionStatusJson>,
    /// The last consumer-group offset sync; null when the flow syncs no group.
    pub group_sync: Option<GroupSyncJson>,
}

#[derive(Debug, Serialize)]
pub struct GroupSyncJson {
    pub at_ms: i64,
    pub error: Option<String>,
    pub groups: Vec<GroupSyncStatusJson>,
}

#[derive(Debug, Serialize)]
pub struct GroupSyncStatusJson {
    pub group: String,
    pub state: String,
    pub committed: u32,
    pub unchanged: u32,
    pub skipped: Vec<String>,
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
    /// Set while the partition is held (a retention gap, a recreated topic).
    pub hold: Option<HoldJson>,
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
            total_lag: known(flow.total_lag),
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
            group_sync: (flow.group_sync_at_ms > 0).then(|| GroupSyncJson {
                at_ms: flow.group_sync_at_ms,
                error: non_empty(&flow.group_sync_error),
                groups: flow
                    .group_sync
                    .iter()
                    .map(|group| GroupSyncStatusJson {
                        group: group.group.clone(),
                        state: group.state.clone(),
                        committed: group.committed,
                        unchanged: group.unchanged,
                        skipped: group.skipped.clone(),
                    })
                    .collect(),
            }),
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
            hold: partition.hold.as_ref().map(HoldJson::from),
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
    /// Groups whose offsets are synced (regex); null when none.
    pub sync_group_offsets: Option<String>,
    pub sync_group_offsets_exclude: Vec<String>,
    pub sync_group_offsets_interval_ms: Option<i64>,
    /// Exactly-once mode (transactional batches); false for at-least-once.
    pub exactly_once: bool,
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
            sync_group_offsets: non_empty(&flow.sync_group_offsets),
            sync_group_offsets_exclude: flow.sync_group_offsets_exclude.clone(),
            sync_group_offsets_interval_ms: (!flow.sync_group_offsets.is_empty())
                .then_some(flow.sync_group_offsets_interval_ms),
            exactly_once: flow.exactly_once,
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

/// The outcome of a command that changes something, for `-o json|yaml`.
#[derive(Debug, Serialize)]
pub struct DoneJson {
    pub kind: String,
    pub name: String,
    pub action: String,
}

/// A held partition's hold, as `status` and `partition reset` print it.
#[derive(Debug, Serialize)]
pub struct HoldJson {
    /// `retention_gap` or `recreated`.
    pub reason: String,
    pub position: i64,
    pub log_start: i64,
    pub log_end: i64,
    /// The source offsets lost (retention gap), inclusive.
    pub lost_from: Option<i64>,
    pub lost_to: Option<i64>,
    pub message: String,
    pub detected_ms: i64,
    pub detected_by: String,
}

impl From<&kmirror_proto::v1::PartitionHold> for HoldJson {
    fn from(hold: &kmirror_proto::v1::PartitionHold) -> Self {
        Self {
            reason: hold.reason.clone(),
            position: hold.position,
            log_start: hold.log_start,
            log_end: hold.log_end,
            lost_from: known(hold.lost_from),
            lost_to: known(hold.lost_to),
            message: hold.message.clone(),
            detected_ms: hold.detected_ms,
            detected_by: hold.detected_by.clone(),
        }
    }
}
