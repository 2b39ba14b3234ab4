//! Reading Kafka for the admin calls that look at data (offset translation,
//! verification): a flow and its clusters from etcd, a consumer per cluster, the
//! offset map's entries of chosen source partitions, and single records at chosen
//! offsets. librdkafka's consumer calls block: callers run them on the blocking
//! pool.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kmirror_common::offset_map::{map_partition, MapEntry, MapKey};
use kmirror_common::schema::{ClusterSpec, FlowSpec};
use kmirror_common::FlowName;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, Timestamp, TopicPartitionList};

use super::{not_found, AdminService};
use crate::error::CoordinatorError;
use crate::store::Sections;

/// Source partition: (topic, partition).
pub type SourcePartitionId = (String, i32);

/// A flow and its source and destination clusters, as stored.
pub struct FlowClusters {
    pub flow: FlowSpec,
    pub source: ClusterSpec,
    pub dest: ClusterSpec,
}

impl AdminService {
    /// The flow named (a clear error when it or one of its clusters is unknown).
    pub(super) async fn flow_with_clusters(
        &self,
        name: &str,
    ) -> Result<FlowClusters, CoordinatorError> {
        let flow_name = FlowName::new(name)?;
        let snapshot = self
            .read(Sections {
                flows: true,
                clusters: true,
                ..Sections::default()
            })
            .await?;
        let flow = snapshot
            .flows
            .get(&flow_name)
            .cloned()
            .ok_or_else(|| not_found("flow", &flow_name))?;
        let cluster = |name| {
            snapshot
                .clusters
                .get(name)
                .cloned()
                .ok_or_else(|| not_found("cluster", name))
        };
        Ok(FlowClusters {
            source: cluster(&flow.source_cluster)?,
            dest: cluster(&flow.dest_cluster)?,
            flow,
        })
    }
}

/// A consumer's config for a cluster: assigns partitions by hand and commits
/// nothing.
pub fn consumer_config(
    spec: &ClusterSpec,
    group_opt: Option<&str>,
) -> Result<ClientConfig, CoordinatorError> {
    let role = kmirror_common::kafka::RoleSettings {
        required: &[
            ("client.id", "kmirror-coordinator"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ],
        defaults: &[],
    };
    let mut config = kmirror_common::kafka::client_config(spec, &role, &[])?;
    // A group id is required by librdkafka's consumer even when no group is joined
    // (reading the map assigns partitions by hand and commits nothing).
    config.set(
        "group.id",
        group_opt.unwrap_or("kmirror-offset-translation"),
    );
    Ok(config)
}

/// A consumer of a cluster (see [`consumer_config`]).
pub fn consumer(
    spec: &ClusterSpec,
    group_opt: Option<&str>,
) -> Result<BaseConsumer, CoordinatorError> {
    create(spec, &consumer_config(spec, group_opt)?)
}

/// A consumer that reads single records at chosen offsets ([`read_record_at`]):
/// it tells when a partition holds nothing more, fetches little per seek, and
/// starts from the log start when an offset is gone.
pub fn record_reader(spec: &ClusterSpec) -> Result<BaseConsumer, CoordinatorError> {
    let mut config = consumer_config(spec, None)?;
    config
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "65536")
        .set("fetch.wait.max.ms", "100");
    create(spec, &config)
}

fn create(spec: &ClusterSpec, config: &ClientConfig) -> Result<BaseConsumer, CoordinatorError> {
    config.create().map_err(|error| {
        CoordinatorError::InvalidArgument(format!(
            "invalid client properties for cluster {}: {error}",
            spec.name
        ))
    })
}

/// The map entries of the wanted source partitions of the flow, in the order they
/// were written: each map partition holding one is read from its start to its end.
pub fn read_map(
    consumer: &BaseConsumer,
    flow: &FlowSpec,
    map_topic: &str,
    wanted: &BTreeSet<SourcePartitionId>,
    timeout: Duration,
) -> Result<BTreeMap<SourcePartitionId, Vec<MapEntry>>, KafkaError> {
    let flow_name = flow.name.as_str();
    let map_partitions: BTreeSet<i32> = wanted
        .iter()
        .map(|(topic, partition)| map_partition(flow_name, topic, *partition))
        .collect();
    let mut entries: BTreeMap<SourcePartitionId, Vec<MapEntry>> = BTreeMap::new();
    for map_partition in map_partitions {
        let (low, high) = consumer.fetch_watermarks(map_topic, map_partition, timeout)?;
        if high <= low {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(map_topic, map_partition, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + timeout.max(Duration::from_secs(30));
        let mut next = low;
        while next < high {
            if Instant::now() > deadline {
                return Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            next = message.offset() + 1;
            let (Some(key), Some(value)) = (message.key(), message.payload()) else {
                continue;
            };
            // An entry this version cannot read is skipped: its offsets then read
            // as not mirrored, never as a guess.
            let (Ok(key), Ok(entry)) = (MapKey::decode(key), MapEntry::decode(value)) else {
                tracing::warn!(
                    topic = map_topic,
                    partition = map_partition,
                    offset = message.offset(),
                    "skipping an offset map record that cannot be decoded"
                );
                continue;
            };
            let id = (key.topic, key.partition);
            if key.flow == flow_name && wanted.contains(&id) {
                entries.entry(id).or_default().push(entry);
            }
        }
    }
    consumer.unassign()?;
    Ok(entries)
}

/// A record's content as read, for comparing two copies of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRead {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Timestamp,
}

/// The first record at or after `offset` of a partition, through a
/// [`record_reader`]; `None` when the partition ends at or before `offset`.
pub fn read_record_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<Option<RecordRead>, KafkaError> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            // The end of a partition, told by partition number only: it may be
            // that of another topic's partition read for an earlier record.
            Some(Err(KafkaError::PartitionEOF(eof_partition))) if eof_partition == partition => {
                let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
                if high <= offset {
                    return Ok(None);
                }
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(error)) => return Err(error),
            Some(Ok(message)) => message,
        };
        // Records fetched for an earlier, lower offset may still be queued.
        if message.topic() != topic || message.partition() != partition || message.offset() < offset
        {
            continue;
        }
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Some(RecordRead {
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: message.timestamp(),
        }));
    }
}

/// A failed Kafka request of an admin call, naming the cluster and what was done.
pub fn failed(spec: &ClusterSpec, action: &str, error: &KafkaError) -> CoordinatorError {
    CoordinatorError::Kafka {
        cluster: spec.name.to_string(),
        action: action.to_string(),
        cause: crate::kafka::kafka_cause(error),
    }
}
