//! The JSON of `kmirrorctl status -o json`, parsed in one place.
//!
//! The shape follows `StatusResponse` in `proto/proto/kmirror/v1/admin.proto`:
//! `{"flows":[{"name", "state", "error", "total_lag", "partitions":[{"topic",
//! "partition", "dest_topic", "log_end_offset", "mirrored_offset", "lag",
//! "fetcher", "writer", "epoch", "error", "dest_offset"}]}]}`. The fields the tests
//! decide on (names, offsets, lag, errors) must be there, so that a renamed field
//! fails loudly instead of reading as 0 and letting a check pass by accident; the
//! others may be missing. Nulls read as empty (offsets and lag as -1, unknown),
//! numbers may come as strings (as
//! protobuf's JSON mapping writes 64-bit integers), and a bare array of flows or a
//! single flow object is accepted too.

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Everything `status` printed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusView {
    pub flows: Vec<FlowStatusView>,
}

/// One flow's status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlowStatusView {
    #[serde(deserialize_with = "nullable_string")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable_string")]
    pub source_cluster: String,
    #[serde(default, deserialize_with = "nullable_string")]
    pub dest_cluster: String,
    #[serde(deserialize_with = "nullable_string")]
    pub state: String,
    #[serde(deserialize_with = "nullable_string")]
    pub error: String,
    #[serde(deserialize_with = "offset_or_unknown")]
    pub total_lag: i64,
    pub partitions: Vec<PartitionStatusView>,
}

/// One source partition's status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartitionStatusView {
    #[serde(deserialize_with = "nullable_string")]
    pub topic: String,
    #[serde(deserialize_with = "flexible_integer")]
    pub partition: i64,
    #[serde(default, deserialize_with = "nullable_string")]
    pub dest_topic: String,
    #[serde(deserialize_with = "offset_or_unknown")]
    pub log_end_offset: i64,
    #[serde(deserialize_with = "flexible_integer")]
    pub mirrored_offset: i64,
    #[serde(deserialize_with = "offset_or_unknown")]
    pub lag: i64,
    #[serde(default, deserialize_with = "nullable_string")]
    pub fetcher: String,
    #[serde(default, deserialize_with = "nullable_string")]
    pub writer: String,
    #[serde(default, deserialize_with = "flexible_integer")]
    pub epoch: i64,
    #[serde(deserialize_with = "nullable_string")]
    pub error: String,
    #[serde(default = "unknown", deserialize_with = "offset_or_unknown")]
    pub dest_offset: i64,
}

impl StatusView {
    pub fn parse(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .with_context(|| format!("status output is not JSON: {json}"))?;
        let wrapped = match value {
            Value::Array(flows) => serde_json::json!({ "flows": flows }),
            Value::Object(ref object)
                if !object.contains_key("flows") && object.contains_key("name") =>
            {
                serde_json::json!({ "flows": [value] })
            }
            other => other,
        };
        serde_json::from_value(wrapped).with_context(|| format!("unexpected status JSON: {json}"))
    }

    pub fn flow(&self, name: &str) -> Result<&FlowStatusView> {
        self.flows
            .iter()
            .find(|flow| flow.name == name)
            .ok_or_else(|| anyhow!("status shows no flow named {name}"))
    }
}

impl FlowStatusView {
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionStatusView> {
        self.partitions
            .iter()
            .find(|status| status.topic == topic && status.partition == i64::from(partition))
    }

    pub fn partitions_of<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a PartitionStatusView> + 'a {
        self.partitions
            .iter()
            .filter(move |status| status.topic == topic)
    }

    /// Whether every partition of `topic` (there are `partitions`) is mirrored up
    /// to its source end, with no error.
    pub fn topic_caught_up(&self, topic: &str, partitions: i32) -> Result<(), String> {
        let statuses: Vec<&PartitionStatusView> = self.partitions_of(topic).collect();
        if statuses.len() != usize::try_from(partitions).unwrap_or_default() {
            return Err(format!(
                "status lists {} of {partitions} partitions of {topic}",
                statuses.len()
            ));
        }
        for status in statuses {
            if status.log_end_offset < 0
                || status.mirrored_offset != status.log_end_offset
                || status.lag != 0
                || !status.error.is_empty()
            {
                return Err(format!(
                    "{topic}/{} not caught up: {status:?}",
                    status.partition
                ));
            }
        }
        Ok(())
    }
}

fn nullable_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// An offset or lag: null (as kmirrorctl writes an unknown one) reads as -1,
/// the API's "unknown", never as 0.
fn offset_or_unknown<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(-1),
        other => flexible_integer(other).map_err(serde::de::Error::custom),
    }
}

fn unknown() -> i64 {
    -1
}

fn flexible_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(0),
        Value::Number(number) => number
            .as_i64()
            .or_else(|| {
                number
                    .as_u64()
                    .and_then(|unsigned| i64::try_from(unsigned).ok())
            })
            .ok_or_else(|| D::Error::custom(format!("{number} is not a 64-bit integer"))),
        Value::String(text) => text
            .parse()
            .map_err(|_| D::Error::custom(format!("{text:?} is not an integer"))),
        other => Err(D::Error::custom(format!("{other} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_response_shape() {
        let json = r#"{"flows":[{"name":"dr","source_cluster":"source","dest_cluster":"dest",
            "state":"degraded","error":"","total_lag":"5","partitions":[
            {"topic":"orders","partition":0,"dest_topic":"orders","log_end_offset":10,
             "mirrored_offset":5,"lag":5,"fetcher":"fetcher-0","writer":"writer-1","epoch":3,
             "error":"record too large","dest_offset":4},
            {"topic":"orders","partition":1,"log_end_offset":7,"mirrored_offset":7,"lag":0,
             "error":null}]}]}"#;
        let status = StatusView::parse(json).unwrap();
        let flow = status.flow("dr").unwrap();
        assert_eq!(flow.state, "degraded");
        assert_eq!(flow.total_lag, 5);
        let stuck = flow.partition("orders", 0).unwrap();
        assert_eq!(stuck.mirrored_offset, 5);
        assert_eq!(stuck.error, "record too large");
        assert_eq!(stuck.epoch, 3);
        let fine = flow.partition("orders", 1).unwrap();
        assert!(fine.error.is_empty());
        assert!(flow.topic_caught_up("orders", 2).is_err());
        assert!(status.flow("other").is_err());
    }

    #[test]
    fn a_null_offset_is_unknown_not_zero() {
        let json = r#"{"flows":[{"name":"dr","state":"running","error":null,"total_lag":0,
            "partitions":[{"topic":"t","partition":0,"log_end_offset":null,
            "mirrored_offset":0,"lag":null,"error":null,"dest_offset":null}]}]}"#;
        let status = StatusView::parse(json).unwrap();
        let flow = status.flow("dr").unwrap();
        let partition = flow.partition("t", 0).unwrap();
        assert_eq!(partition.log_end_offset, -1);
        assert_eq!(partition.lag, -1);
        assert_eq!(partition.dest_offset, -1);
        assert!(flow.topic_caught_up("t", 1).is_err());
    }

    #[test]
    fn accepts_a_bare_flow_or_list_of_flows() {
        let flow = |name: &str| {
            format!(
                r#"{{"name":"{name}","state":"running","error":"","total_lag":0,"partitions":[]}}"#
            )
        };
        let single = StatusView::parse(&flow("dr")).unwrap();
        assert_eq!(single.flows.len(), 1);
        let list = StatusView::parse(&format!("[{},{}]", flow("a"), flow("b"))).unwrap();
        assert_eq!(list.flows.len(), 2);
    }

    #[test]
    fn rejects_status_without_the_fields_checks_rely_on() {
        let renamed = r#"{"flows":[{"name":"dr","state":"running","error":"","total_lag":0,
            "partitions":[{"topic":"t","partition":0,"end_offset":5,"mirrored_offset":5,
            "lag":0,"error":""}]}]}"#;
        let error = StatusView::parse(renamed).unwrap_err();
        assert!(format!("{error:#}").contains("log_end_offset"), "{error:#}");
    }
}
