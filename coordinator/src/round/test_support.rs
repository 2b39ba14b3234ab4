//! Values the round's unit tests build from.

use kmirror_common::schema::{Assignment, Checkpoint, FlowSpec};
use kmirror_common::{ClusterName, Epoch, FlowName, MemberId, PartitionKey};

pub fn flow_spec(name: &str) -> FlowSpec {
    FlowSpec {
        name: FlowName::new(name).unwrap(),
        source_cluster: ClusterName::new("src").unwrap(),
        dest_cluster: ClusterName::new("dst").unwrap(),
        include: ".*".to_string(),
        exclude: None,
        created_ms: 0,
        rename: Default::default(),
        start: Default::default(),
        config_sync: Default::default(),
        paused: false,
        until_caught_up: false,
        group_sync: None,
        exactly_once: false,
    }
}

pub fn assignment() -> Assignment {
    Assignment {
        fetcher: MemberId::new("f1").unwrap(),
        writer: MemberId::new("w1").unwrap(),
        epoch: Epoch(4),
        dest_topic: "orders".to_string(),
        dest_partitions: 2,
        source_partitions: 2,
        releasing_since_ms: None,
    }
}

pub fn key(flow: &str, topic: &str, partition: i32) -> PartitionKey {
    PartitionKey::new(FlowName::new(flow).unwrap(), topic, partition)
}

pub fn checkpoint(next_offset: i64) -> Checkpoint {
    Checkpoint {
        next_offset,
        dest_partition: 0,
        dest_offset: 0,
        epoch: Epoch(1),
        updated_ms: 0,
        records_per_sec: 0.0,
        bytes_per_sec: 0.0,
    }
}

pub fn configs(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}
