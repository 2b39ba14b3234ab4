//! Reading Kafka for the admin calls that look at data (offset translation,
//! verification): a flow and its clusters from etcd, a consumer per cluster, the
//! offset map's entries of chosen source partitions, and records at chosen
//! offsets. librdkafka's consumer calls block: callers run them on the blocking
//! pool.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kmirror_common::kafka::{is_group_authorization_error, ReadToEndConsumer, ReadToEndContext};
use kmirror_common::offset_map::{map_partition, MapEntry, MapKey};
use kmirror_common::schema::{ClusterSpec, FlowSpec};
use kmirror_common::FlowName;
use rdkafka::consumer::Consumer;
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
            // The map ends at a transaction marker when exactly-once writers wrote
            // it last: no record reaches the high watermark there, the end of the
            // partition tells instead.
            ("enable.partition.eof", "true"),
            ("isolation.level", "read_committed"),
        ],
        defaults: &[],
    };
    let mut config = kmirror_common::kafka::client_config(spec, &role, &[])?;
    // librdkafka assigns partitions only to a consumer with a group id, even
    // one that joins no group. Its search for that group's coordinator fails on
    // a cluster that grants no ACL on the group: readers skip that error
    // ([`kmirror_common::kafka::is_group_authorization_error`]), so reading needs no
    // group ACL.
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
) -> Result<ReadToEndConsumer, CoordinatorError> {
    create(spec, &consumer_config(spec, group_opt)?)
}

/// A consumer that reads records at chosen offsets ([`read_records`]): it
/// tells when a partition holds nothing more, fetches little per seek, and
/// starts from the log start when an offset is gone.
pub fn record_reader(spec: &ClusterSpec) -> Result<ReadToEndConsumer, CoordinatorError> {
    let mut config = consumer_config(spec, None)?;
    config
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "262144")
        .set("fetch.wait.max.ms", "100");
    create(spec, &config)
}

fn create(
    spec: &ClusterSpec,
    config: &ClientConfig,
) -> Result<ReadToEndConsumer, CoordinatorError> {
    config
        .create_with_context(ReadToEndContext)
        .map_err(|error| {
            CoordinatorError::InvalidArgument(format!(
                "invalid client properties for cluster {}: {error}",
                spec.name
            ))
        })
}

/// The map entries of the wanted source partitions of the flow, in the order they
/// were written: each map partition holding one is read from its start to its end.
pub fn read_map(
    consumer: &ReadToEndConsumer,
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
            let message = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(eof_partition)))
                    if eof_partition == map_partition =>
                {
                    break
                }
                // The end of the map partition read before, told late.
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(error)) if is_group_authorization_error(&error) => continue,
                Some(message) => message?,
            };
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

/// Records wanted from a cluster: per partition, source or destination offsets
/// (ascending).
pub type WantedRecords = BTreeMap<(String, i32), Vec<i64>>;

/// Per partition and wanted offset, the first record at or after it (`None`
/// when the partition ends at or before it).
pub type RecordsRead = BTreeMap<(String, i32, i64), Option<RecordRead>>;

/// Reading on beats seeking when the next wanted record is at most this many
/// offsets ahead.
const SEEK_GAP: i64 = 1_000;

/// Reads the wanted records through a [`record_reader`]: every partition at
/// once, each from its first wanted offset on, reading on through close offsets
/// and seeking over wide gaps. Fails when nothing arrives for `timeout`.
pub fn read_records(
    consumer: &ReadToEndConsumer,
    wanted: &WantedRecords,
    timeout: Duration,
) -> Result<RecordsRead, KafkaError> {
    let mut read = RecordsRead::new();
    // Per partition, the offsets still to read, next first.
    let mut pending: BTreeMap<(String, i32), std::collections::VecDeque<i64>> = wanted
        .iter()
        .filter(|(_, offsets)| !offsets.is_empty())
        .map(|(id, offsets)| (id.clone(), offsets.iter().copied().collect()))
        .collect();
    if pending.is_empty() {
        return Ok(read);
    }
    let mut assignment = TopicPartitionList::new();
    for ((topic, partition), offsets) in &pending {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(offsets[0]))?;
    }
    consumer.assign(&assignment)?;
    let mut deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            consumer.resume(&assignment)?;
            consumer.unassign()?;
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            // The end of a partition, told by its number only: of any topic
            // with a partition of that number, and maybe of an earlier read.
            Some(Err(KafkaError::PartitionEOF(eof_partition))) => {
                let ended: Vec<(String, i32)> = pending
                    .keys()
                    .filter(|(_, partition)| *partition == eof_partition)
                    .cloned()
                    .collect();
                for id in ended {
                    let (_, high) = consumer.fetch_watermarks(&id.0, id.1, timeout)?;
                    let offsets = pending.get_mut(&id).expect("pending partition");
                    while offsets.front().is_some_and(|offset| *offset >= high) {
                        let offset = offsets.pop_front().expect("front");
                        read.insert((id.0.clone(), id.1, offset), None);
                    }
                    if offsets.is_empty() {
                        pending.remove(&id);
                    }
                }
                continue;
            }
            Some(Err(error)) if is_group_authorization_error(&error) => continue,
            Some(Err(error)) => return Err(error),
            Some(Ok(message)) => message,
        };
        let id = (message.topic().to_string(), message.partition());
        let Some(offsets) = pending.get_mut(&id) else {
            continue;
        };
        // Earlier offsets, or records queued before a seek, are passed over.
        if offsets
            .front()
            .is_none_or(|offset| *offset > message.offset())
        {
            continue;
        }
        deadline = Instant::now() + timeout;
        let record = record_read(&message);
        while offsets
            .front()
            .is_some_and(|offset| *offset <= message.offset())
        {
            let offset = offsets.pop_front().expect("front");
            read.insert((id.0.clone(), id.1, offset), Some(record.clone()));
        }
        match offsets.front() {
            None => {
                pending.remove(&id);
                let mut done = TopicPartitionList::new();
                done.add_partition(&id.0, id.1);
                consumer.pause(&done)?;
            }
            Some(&next) if next - message.offset() > SEEK_GAP => {
                consumer.seek(&id.0, id.1, Offset::Offset(next), timeout)?;
            }
            Some(_) => {}
        }
    }
    // A partition paused here would stay paused in the next read's assignment.
    consumer.resume(&assignment)?;
    consumer.unassign()?;
    Ok(read)
}

fn record_read(message: &rdkafka::message::BorrowedMessage<'_>) -> RecordRead {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    RecordRead {
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: message.timestamp(),
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
