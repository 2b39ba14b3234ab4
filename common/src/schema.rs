//! The etcd key schema of a fleet and the values stored under it (JSON).
//!
//! Everything lives under `/kmirror/<fleet>/`:
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `clusters/<name>` | [`ClusterSpec`] | coordinator (admin API) |
//! | `flows/<name>` | [`FlowSpec`] | coordinator (admin API) |
//! | `members/<role>/<id>` | [`MemberInfo`], bound to the member's lease | the member |
//! | `election` | coordinator campaign (etcd election API) | coordinators |
//! | `assignments/<flow>/<topic>/<partition>` | [`Assignment`] | leader, compares its leadership; the fetcher deletes one it released, comparing it |
//! | `checkpoints/<flow>/<topic>/<partition>` | [`Checkpoint`] | fetcher, compares the assignment |
//! | `errors/<flow>/<topic>/<partition>` | [`PartitionError`], bound to the reporter's lease | fetcher |
//! | `flow-status/<flow>` | [`FlowState`] | leader |
//! | `group-sync/<flow>` | [`GroupSyncReport`]: what the last consumer-group offset sync did | leader |
//! | `drained/<role>/<id>` | [`Drain`] | coordinator (admin API); the leader removes it once the member left |
//! | `rebalance` | [`RebalanceRequest`] | coordinator (admin API); the leader removes it once applied |
//! | `undeliverable/<writer>/<cluster>` | [`Undeliverable`], bound to the writer's lease | writer; it deletes it once it reaches the cluster again |
//! | `audit/<time ms, 16 digits>-<random>` | [`AuditRecord`] | coordinator (every mutating admin call) |
//! | `tokens/<name>` | [`TokenRecord`] (a hash of the token, never the token) | coordinator (admin API) |
//! | `holds/<flow>/<topic>/<partition>` | [`PartitionHold`]: the partition is stopped until an operator resets it | fetcher (compares the assignment); coordinator (admin API) deletes it |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{ClusterName, Epoch, FlowName, MemberId, PartitionKey, Role};

/// Builds the keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    pub fn new(fleet: &str) -> Self {
        Self {
            root: format!("/kmirror/{fleet}/"),
        }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The fleet these keys belong to.
    pub fn fleet(&self) -> &str {
        self.root
            .strip_prefix("/kmirror/")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_default()
    }

    pub fn clusters(&self) -> String {
        format!("{}clusters/", self.root)
    }

    pub fn cluster(&self, name: &ClusterName) -> String {
        format!("{}clusters/{name}", self.root)
    }

    pub fn flows(&self) -> String {
        format!("{}flows/", self.root)
    }

    pub fn flow(&self, name: &FlowName) -> String {
        format!("{}flows/{name}", self.root)
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.root)
    }

    pub fn members_of(&self, role: Role) -> String {
        format!("{}members/{role}/", self.root)
    }

    pub fn member(&self, role: Role, id: &MemberId) -> String {
        format!("{}members/{role}/{id}", self.root)
    }

    pub fn election(&self) -> String {
        format!("{}election", self.root)
    }

    pub fn assignments(&self) -> String {
        format!("{}assignments/", self.root)
    }

    pub fn flow_assignments(&self, flow: &FlowName) -> String {
        format!("{}assignments/{flow}/", self.root)
    }

    pub fn assignment(&self, partition: &PartitionKey) -> String {
        format!("{}assignments/{}", self.root, partition_path(partition))
    }

    pub fn checkpoints(&self) -> String {
        format!("{}checkpoints/", self.root)
    }

    pub fn flow_checkpoints(&self, flow: &FlowName) -> String {
        format!("{}checkpoints/{flow}/", self.root)
    }

    pub fn checkpoint(&self, partition: &PartitionKey) -> String {
        format!("{}checkpoints/{}", self.root, partition_path(partition))
    }

    pub fn errors(&self) -> String {
        format!("{}errors/", self.root)
    }

    pub fn partition_error(&self, partition: &PartitionKey) -> String {
        format!("{}errors/{}", self.root, partition_path(partition))
    }

    pub fn flow_states(&self) -> String {
        format!("{}flow-status/", self.root)
    }

    pub fn flow_state(&self, flow: &FlowName) -> String {
        format!("{}flow-status/{flow}", self.root)
    }

    pub fn group_sync_reports(&self) -> String {
        format!("{}group-sync/", self.root)
    }

    pub fn group_sync_report(&self, flow: &FlowName) -> String {
        format!("{}group-sync/{flow}", self.root)
    }

    pub fn drained(&self) -> String {
        format!("{}drained/", self.root)
    }

    pub fn drained_member(&self, role: Role, id: &MemberId) -> String {
        format!("{}drained/{role}/{id}", self.root)
    }

    pub fn rebalance_request(&self) -> String {
        format!("{}rebalance", self.root)
    }

    pub fn undeliverable(&self) -> String {
        format!("{}undeliverable/", self.root)
    }

    pub fn undeliverable_mark(&self, writer: &MemberId, cluster: &ClusterName) -> String {
        format!("{}undeliverable/{writer}/{cluster}", self.root)
    }

    /// `(writer, cluster)` out of an `undeliverable/<writer>/<cluster>` key.
    pub fn parse_undeliverable(&self, key: &[u8]) -> Option<(MemberId, ClusterName)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.undeliverable())?;
        let (writer, cluster) = rest.split_once('/')?;
        Some((MemberId::new(writer).ok()?, ClusterName::new(cluster).ok()?))
    }

    pub fn tokens(&self) -> String {
        format!("{}tokens/", self.root)
    }

    pub fn token(&self, name: &str) -> String {
        format!("{}tokens/{name}", self.root)
    }

    pub fn audit_log(&self) -> String {
        format!("{}audit/", self.root)
    }

    /// An audit entry's key: sorted by time (zero-padded), unique by a random
    /// suffix (two coordinators may record at the same millisecond).
    pub fn audit_entry(&self, time_ms: i64, unique: &str) -> String {
        format!("{}audit/{time_ms:016}-{unique}", self.root)
    }

    pub fn holds(&self) -> String {
        format!("{}holds/", self.root)
    }

    pub fn flow_holds(&self, flow: &FlowName) -> String {
        format!("{}holds/{flow}/", self.root)
    }

    pub fn hold(&self, partition: &PartitionKey) -> String {
        format!("{}holds/{}", self.root, partition_path(partition))
    }

    /// Parses the partition out of an `assignments/`, `checkpoints/`, `errors/` or `holds/` key.
    pub fn parse_partition_key(&self, section_prefix: &str, key: &[u8]) -> Option<PartitionKey> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(section_prefix)?;
        let mut parts = rest.splitn(3, '/');
        let flow = FlowName::new(parts.next()?).ok()?;
        let topic = parts.next()?;
        let partition = parts.next()?.parse().ok()?;
        Some(PartitionKey::new(flow, topic, partition))
    }

    /// The last segment of a key (the name under `clusters/`, `flows/`, `members/<role>/`).
    pub fn last_segment(key: &[u8]) -> Option<&str> {
        std::str::from_utf8(key).ok()?.rsplit('/').next()
    }
}

fn partition_path(partition: &PartitionKey) -> String {
    format!(
        "{}/{}/{}",
        partition.flow, partition.topic, partition.partition
    )
}

/// How to reach a Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: ClusterName,
    pub bootstrap_servers: String,
    /// librdkafka client properties (security settings, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// What to mirror from which cluster to which.
///
/// Fields added after the first release carry `#[serde(default)]`, so flows stored
/// by an older version still decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: FlowName,
    pub source_cluster: ClusterName,
    pub dest_cluster: ClusterName,
    /// Matched against the whole topic name.
    pub include: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<String>,
    pub created_ms: i64,
    /// How destination topics are named.
    #[serde(default)]
    pub rename: RenamePolicy,
    /// Where partitions without a checkpoint start when the flow starts.
    #[serde(default)]
    pub start: StartPosition,
    /// Whether destination topic configs follow the source's.
    #[serde(default)]
    pub config_sync: ConfigSync,
    /// Paused by an operator: the leader removes the flow's assignments (its
    /// checkpoints stay) until it is resumed.
    #[serde(default)]
    pub paused: bool,
    /// Migration mode: copy up to the source end offsets seen when the flow
    /// started, then stop (the flow completes).
    #[serde(default)]
    pub until_caught_up: bool,
    /// Consumer-group offset sync: translated source group offsets committed to
    /// the destination's groups. Off unless asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_sync: Option<GroupSync>,
    /// Exactly-once mode: writers produce each batch of the flow in a Kafka
    /// transaction with its offset map entry, one transactional id per source
    /// partition, and a partition resumes from the committed map.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exactly_once: bool,
}

impl FlowSpec {
    /// The destination topic of a source topic: the single place it is computed.
    pub fn dest_topic(&self, source_topic: &str) -> String {
        self.rename.dest_topic(source_topic)
    }
}

/// How a flow names destination topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "policy", rename_all = "lowercase", deny_unknown_fields)]
pub enum RenamePolicy {
    /// The source topic's name (MirrorMaker 1, MirrorMaker 2's IdentityReplicationPolicy).
    #[default]
    Identity,
    /// `<alias><separator><topic>` (MirrorMaker 2's DefaultReplicationPolicy: the
    /// source cluster's alias, then `.`).
    Prefix {
        alias: String,
        #[serde(default = "default_separator")]
        separator: String,
    },
    /// Explicit names; a topic not in the map keeps its name.
    Map { topics: BTreeMap<String, String> },
}

fn default_separator() -> String {
    ".".to_string()
}

impl RenamePolicy {
    pub fn dest_topic(&self, source_topic: &str) -> String {
        match self {
            RenamePolicy::Identity => source_topic.to_string(),
            RenamePolicy::Prefix { alias, separator } => {
                format!("{alias}{separator}{source_topic}")
            }
            RenamePolicy::Map { topics } => topics
                .get(source_topic)
                .cloned()
                .unwrap_or_else(|| source_topic.to_string()),
        }
    }

    /// `identity`, `prefix` or `map`.
    pub fn kind(&self) -> &'static str {
        match self {
            RenamePolicy::Identity => "identity",
            RenamePolicy::Prefix { .. } => "prefix",
            RenamePolicy::Map { .. } => "map",
        }
    }
}

/// Where a flow starts reading partitions that have no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "from", rename_all = "lowercase", deny_unknown_fields)]
pub enum StartPosition {
    /// Everything the source retains.
    #[default]
    Earliest,
    /// Only records produced after the flow started.
    Latest,
    /// The first record whose timestamp is at or after `ms` (milliseconds since
    /// the Unix epoch).
    Timestamp { ms: i64 },
}

/// Destination topic configs kept equal to the source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSync {
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Regular expressions of config names never copied (whole name).
    #[serde(default = "default_config_sync_exclude")]
    pub exclude: Vec<String>,
}

fn enabled() -> bool {
    true
}

/// MirrorMaker 2's default `config.properties.exclude`: settings that belong to
/// the destination cluster's own operation.
pub fn default_config_sync_exclude() -> Vec<String> {
    [
        r"follower\.replication\.throttled\.replicas",
        r"leader\.replication\.throttled\.replicas",
        r"message\.timestamp\.difference\.max\.ms",
        r"message\.timestamp\.type",
        r"unclean\.leader\.election\.enable",
        r"min\.insync\.replicas",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Default for ConfigSync {
    fn default() -> Self {
        Self {
            enabled: true,
            exclude: default_config_sync_exclude(),
        }
    }
}

/// Which source consumer groups a flow syncs to the destination, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSync {
    /// Regular expression matched against the whole group id.
    pub include: String,
    /// Regular expressions of group ids never synced (whole id).
    #[serde(default = "default_group_sync_exclude")]
    pub exclude: Vec<String>,
    #[serde(default = "default_group_sync_interval_ms")]
    pub interval_ms: u64,
}

/// MirrorMaker 2's `sync.group.offsets.interval.seconds` default.
pub const DEFAULT_GROUP_SYNC_INTERVAL_MS: u64 = 10_000;

fn default_group_sync_interval_ms() -> u64 {
    DEFAULT_GROUP_SYNC_INTERVAL_MS
}

/// MirrorMaker 2's default `groups.exclude`: console consumers, Connect's own
/// groups and internal ones.
pub fn default_group_sync_exclude() -> Vec<String> {
    [r"console-consumer-.*", r"connect-.*", r"__.*"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// What the last consumer-group offset sync of a flow did, group by group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSyncReport {
    /// When the sync ran (milliseconds since the Unix epoch).
    pub at_ms: i64,
    /// Why the sync as a whole failed (a cluster unreachable, ...); groups are
    /// then those of the last sync that got as far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub groups: Vec<GroupSyncOutcome>,
}

/// One group's outcome in a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSyncOutcome {
    pub group: String,
    /// `synced` (every partition at its translated position), `partial` (some
    /// partitions could not be translated or would move backwards), `live` (the
    /// destination group has active members, so it was left alone) or `failed`.
    pub state: String,
    /// Partitions committed by this sync.
    pub committed: u32,
    /// Partitions already at their translated position.
    pub unchanged: u32,
    /// Partitions left alone, each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// A registered member, stored under a key bound to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: MemberId,
    pub role: Role,
    /// Address other members and the CLI reach its gRPC server at.
    pub address: String,
    pub version: String,
    pub started_ms: i64,
    /// URL of the member's /metrics, /healthz and /readyz endpoint, if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
}

/// Who works on a source partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub fetcher: MemberId,
    pub writer: MemberId,
    pub epoch: Epoch,
    pub dest_topic: String,
    /// Partition count of the destination topic when the assignment was made: the
    /// writer maps source partitions by number only when the counts match.
    pub dest_partitions: i32,
    pub source_partitions: i32,
    /// Set when the partition is to stop (its flow paused, deleted or completed):
    /// the fetcher stops reading, waits for the acks of what it sent, writes the
    /// final checkpoint and deletes the assignment in one transaction. Nothing of
    /// the partition is planned again until the assignment is gone, so a resume
    /// never copies what the fetcher still had in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releasing_since_ms: Option<i64>,
}

/// How long the leader waits for a fetcher to release a partition before it
/// deletes the assignment itself (the fetcher is stuck or cut off from etcd).
pub const RELEASE_TIMEOUT_MS: i64 = 30_000;

impl Assignment {
    pub fn is_releasing(&self) -> bool {
        self.releasing_since_ms.is_some()
    }
}

/// Where mirroring of a source partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Next source offset to read: every record before it is in the destination.
    pub next_offset: i64,
    /// Destination partition and offset of the last record mirrored before
    /// `next_offset` (-1 when unknown).
    pub dest_partition: i32,
    pub dest_offset: i64,
    pub epoch: Epoch,
    pub updated_ms: i64,
    /// Throughput the fetcher measured for the partition when it wrote the
    /// checkpoint (smoothed), for balancing assignments by load.
    #[serde(default)]
    pub records_per_sec: f64,
    #[serde(default)]
    pub bytes_per_sec: f64,
}

/// Why a partition cannot progress, as reported by the fetcher working on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionError {
    pub message: String,
    pub offset: i64,
    pub reporter: MemberId,
    pub since_ms: i64,
}

/// A flow's state as the leader sees it (topic discovery, destination topics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FlowState {
    /// Empty when the flow runs; otherwise why it cannot.
    pub error: String,
    pub topics: Vec<String>,
    pub updated_ms: i64,
    #[serde(default)]
    pub phase: FlowPhase,
    /// When the leader first saw the flow's source topics: its start position was
    /// applied and, in migration mode, its targets captured then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// Migration mode: per source topic and partition, the offsets it is copied
    /// from and up to (the source's start and end offsets when the flow started).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, BTreeMap<i32, OffsetRange>>,
    /// When a migration reached every target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<i64>,
    /// Per source topic, the configs last copied from it (those the flow's
    /// config sync does not exclude): a source value that differs from these is
    /// a change to carry to the destination. Values set on the destination alone
    /// are left as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// What a flow is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlowPhase {
    #[default]
    Running,
    /// Paused by an operator: nothing assigned.
    Paused,
    /// A migration that copied everything up to its targets: nothing assigned.
    Completed,
}

impl FlowPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowPhase::Running => "running",
            FlowPhase::Paused => "paused",
            FlowPhase::Completed => "completed",
        }
    }
}

/// Source offsets `[start, end)` of a partition a migration copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub start: i64,
    pub end: i64,
}

/// A member drained by an operator: it keeps nothing and gets nothing new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub since_ms: i64,
}

/// A writer's word that it cannot deliver to a destination cluster (its
/// deliveries there time out): the leader routes that cluster's partitions to
/// writers that can, while another writer is left to route them to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undeliverable {
    pub since_ms: i64,
    /// The last delivery error, for status and logs.
    pub reason: String,
}

/// An operator asked for a rebalance of running partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceRequest {
    pub requested_ms: i64,
}

/// Encodes a stored value.
/// A bearer token of the admin API, as stored: its SHA-256, not the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    pub created_ms: i64,
    pub created_by: String,
}

/// One mutating admin call, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time_ms: i64,
    /// The caller's identity URI, `insecure` on a coordinator without TLS.
    pub identity: String,
    /// The gRPC method.
    pub call: String,
    /// The flow, cluster or member the call names; empty when none.
    #[serde(default)]
    pub object: String,
    /// `ok`, or the gRPC status code it ended with.
    pub outcome: String,
    #[serde(default)]
    pub remote: String,
    /// What happened, in words, when the call or object does not say it all
    /// (an event's description, the offset a reset asked for).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Why a source partition is held (see [`PartitionHold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The source's log start passed the position: retention (or a deletion of
    /// records) removed records before they were mirrored.
    RetentionGap,
    /// The position is past the source's end: the topic was deleted and created
    /// again under the same name (or its log was truncated).
    Recreated,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::RetentionGap => "retention_gap",
            HoldReason::Recreated => "recreated",
        }
    }
}

/// A source partition stopped because the source no longer has the offset it
/// was to be read from. Nothing of it is mirrored until an operator resets its
/// checkpoint (`kmirrorctl partition reset`), which deletes the hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHold {
    pub reason: HoldReason,
    /// The source offset the partition was to be read from.
    pub position: i64,
    /// The source's log start and end offsets when the hold was detected.
    pub log_start: i64,
    pub log_end: i64,
    /// The offsets lost, as words (`... offsets 3200..4999 lost`).
    pub message: String,
    pub detected_ms: i64,
    pub detected_by: MemberId,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored values always serialize")
}

/// Decodes a stored value, naming the key when it cannot.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(value).map_err(|source| DecodeError {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode the value stored at etcd key {key}")]
pub struct DecodeError {
    pub key: String,
    #[source]
    pub source: serde_json::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_round_trip_through_etcd_keys() {
        let keys = Keys::new("prod");
        let partition = PartitionKey::new(FlowName::new("dr").unwrap(), "orders.v1", 7);
        let key = keys.checkpoint(&partition);
        assert_eq!(key, "/kmirror/prod/checkpoints/dr/orders.v1/7");
        let parsed = keys.parse_partition_key(&keys.checkpoints(), key.as_bytes());
        assert_eq!(parsed, Some(partition));
    }

    #[test]
    fn flows_stored_before_the_flow_options_still_decode() {
        let stored = br#"{"name":"dr","source_cluster":"a","dest_cluster":"b","include":".*","created_ms":1}"#;
        let flow: FlowSpec = decode(b"k", stored).unwrap();
        assert_eq!(flow.rename, RenamePolicy::Identity);
        assert_eq!(flow.start, StartPosition::Earliest);
        assert!(flow.config_sync.enabled && !flow.paused && !flow.until_caught_up);
        let stored = br#"{"error":"","topics":["a"],"updated_ms":3}"#;
        let state: FlowState = decode(b"k", stored).unwrap();
        assert_eq!(state.phase, FlowPhase::Running);
        assert!(state.targets.is_empty() && state.started_ms.is_none());
    }

    #[test]
    fn rename_policies_name_destination_topics() {
        let prefix = RenamePolicy::Prefix {
            alias: "east".to_string(),
            separator: ".".to_string(),
        };
        assert_eq!(prefix.dest_topic("orders"), "east.orders");
        let map = RenamePolicy::Map {
            topics: [("orders".to_string(), "orders-copy".to_string())].into(),
        };
        assert_eq!(map.dest_topic("orders"), "orders-copy");
        assert_eq!(map.dest_topic("payments"), "payments");
        let json = serde_json::to_string(&prefix).unwrap();
        assert_eq!(
            json,
            r#"{"policy":"prefix","alias":"east","separator":"."}"#
        );
    }
}
