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
//! | `assignments/<flow>/<topic>/<partition>` | [`Assignment`] | leader, compares its leadership |
//! | `checkpoints/<flow>/<topic>/<partition>` | [`Checkpoint`] | fetcher, compares the assignment |
//! | `errors/<flow>/<topic>/<partition>` | [`PartitionError`], bound to the reporter's lease | fetcher |
//! | `flow-status/<flow>` | [`FlowState`] | leader |

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

    /// Parses the partition out of an `assignments/`, `checkpoints/` or `errors/` key.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: ClusterName,
    pub bootstrap_servers: String,
    /// librdkafka client properties (security settings, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// What to mirror from which cluster to which.
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
}

impl FlowSpec {
    /// The destination topic of a source topic (identity for now).
    pub fn dest_topic(&self, source_topic: &str) -> String {
        source_topic.to_string()
    }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// Empty when the flow runs; otherwise why it cannot.
    pub error: String,
    pub topics: Vec<String>,
    pub updated_ms: i64,
}

/// Encodes a stored value.
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
}
