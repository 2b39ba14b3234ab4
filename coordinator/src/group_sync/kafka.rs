//! The group sync's Kafka I/O: the source groups and their committed offsets,
//! the destination groups' state and commits, and the offset map (read once
//! per call, or kept by the leader and read on from where it stopped).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kmirror_common::kafka::{is_group_authorization_error, ReadToEndConsumer};
use kmirror_common::offset_map::{push_merged, MapEntry, MapKey, MAP_PARTITIONS};
use kmirror_common::schema::{ClusterSpec, FlowSpec};
use kmirror_proto::v1::SourcePosition;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::decide::DestGroup;
use crate::admin::reading::{consumer, read_map, SourcePartitionId};
use crate::error::CoordinatorError;

/// Where the map entries of a sync come from.
pub trait MapSource {
    /// The entries of the wanted source partitions of `flow`, from the map topic
    /// (which exists) read through `dest`.
    fn entries(
        &mut self,
        flow: &FlowSpec,
        dest: &ReadToEndConsumer,
        map_topic: &str,
        wanted: &BTreeSet<SourcePartitionId>,
        timeout: Duration,
    ) -> Result<BTreeMap<SourcePartitionId, Vec<MapEntry>>, KafkaError>;
}

/// Reads the map partitions of the wanted source partitions from their start
/// (an admin call: nothing kept).
pub struct MapReadOnce;

impl MapSource for MapReadOnce {
    fn entries(
        &mut self,
        flow: &FlowSpec,
        dest: &ReadToEndConsumer,
        map_topic: &str,
        wanted: &BTreeSet<SourcePartitionId>,
        timeout: Duration,
    ) -> Result<BTreeMap<SourcePartitionId, Vec<MapEntry>>, KafkaError> {
        read_map(dest, flow, map_topic, wanted, timeout)
    }
}

/// The leader's copy of one destination cluster's map: each sync reads only
/// what was appended since the last. Entries that continue each other are
/// merged ([`push_merged`]), so a partition mirrored without interruption is
/// one entry however many batches it took.
pub struct MapCache {
    cluster: ClusterSpec,
    /// Next map offset to read, per map partition.
    next: Vec<i64>,
    /// Entries by (flow, source topic, source partition).
    entries: BTreeMap<(String, String, i32), Vec<MapEntry>>,
}

impl MapCache {
    pub fn new(cluster: &ClusterSpec) -> Self {
        Self {
            cluster: cluster.clone(),
            next: vec![0; MAP_PARTITIONS as usize],
            entries: BTreeMap::new(),
        }
    }

    /// The cluster spec the cache was read with: a changed one starts afresh.
    pub fn cluster(&self) -> &ClusterSpec {
        &self.cluster
    }

    fn read_on(
        &mut self,
        dest: &ReadToEndConsumer,
        map_topic: &str,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let mut assignment = TopicPartitionList::new();
        let mut high_by_partition = BTreeMap::new();
        for partition in 0..MAP_PARTITIONS {
            let (low, high) = dest.fetch_watermarks(map_topic, partition, timeout)?;
            let next = &mut self.next[partition as usize];
            // Entries pruned with the destination's records are not read again.
            *next = (*next).max(low);
            if *next < high {
                assignment.add_partition_offset(map_topic, partition, Offset::Offset(*next))?;
                high_by_partition.insert(partition, high);
            }
        }
        if high_by_partition.is_empty() {
            return Ok(());
        }
        dest.assign(&assignment)?;
        let deadline = Instant::now() + timeout.max(Duration::from_secs(30));
        while !high_by_partition.is_empty() {
            if Instant::now() > deadline {
                dest.unassign()?;
                return Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            let message = match dest.poll(Duration::from_millis(200)) {
                None => continue,
                // The end of the readable part: a transaction marker may follow
                // the last entry, or an open transaction hold the rest back.
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    high_by_partition.remove(&partition);
                    continue;
                }
                Some(Err(error)) if is_group_authorization_error(&error) => continue,
                Some(message) => message?,
            };
            let partition = message.partition();
            self.next[partition as usize] = message.offset() + 1;
            if high_by_partition
                .get(&partition)
                .is_some_and(|high| message.offset() + 1 >= *high)
            {
                high_by_partition.remove(&partition);
            }
            let (Some(key), Some(value)) = (message.key(), message.payload()) else {
                continue;
            };
            // Undecodable entries read as not mirrored (see `read_map`).
            if let (Ok(key), Ok(entry)) = (MapKey::decode(key), MapEntry::decode(value)) {
                push_merged(
                    self.entries
                        .entry((key.flow, key.topic, key.partition))
                        .or_default(),
                    entry,
                );
            }
        }
        dest.unassign()?;
        Ok(())
    }
}

impl MapSource for MapCache {
    fn entries(
        &mut self,
        flow: &FlowSpec,
        dest: &ReadToEndConsumer,
        map_topic: &str,
        wanted: &BTreeSet<SourcePartitionId>,
        timeout: Duration,
    ) -> Result<BTreeMap<SourcePartitionId, Vec<MapEntry>>, KafkaError> {
        self.read_on(dest, map_topic, timeout)?;
        let flow_name = flow.name.to_string();
        Ok(wanted
            .iter()
            .filter_map(|(topic, partition)| {
                let entries = self
                    .entries
                    .get(&(flow_name.clone(), topic.clone(), *partition))?;
                Some(((topic.clone(), *partition), entries.clone()))
            })
            .collect())
    }
}

/// Consumer groups the cluster knows, by id (every coordinator of the cluster
/// asked).
pub fn list_groups(
    consumer: &ReadToEndConsumer,
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let groups = consumer.fetch_group_list(None, timeout)?;
    let mut names: Vec<String> = groups
        .groups()
        .iter()
        // Connect workers and other protocols keep no consumer offsets to sync.
        .filter(|group| matches!(group.protocol_type(), "consumer" | ""))
        .map(|group| group.name().to_string())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The group's committed offsets on every partition of the flow's topics.
pub fn committed_positions(
    source: &ClusterSpec,
    group: &str,
    source_counts: &BTreeMap<String, i32>,
    timeout: Duration,
) -> Result<Vec<SourcePosition>, CoordinatorError> {
    let group_consumer = consumer(source, Some(group))?;
    crate::admin::offsets::group_positions(&group_consumer, source_counts, timeout).map_err(
        |error| {
            crate::admin::reading::failed(source, "reading a group's committed offsets", &error)
        },
    )
}

/// A destination group's state, members and committed offsets on `partitions`.
pub fn dest_group(
    group_consumer: &ReadToEndConsumer,
    group: &str,
    partitions: &BTreeSet<(String, i32)>,
    timeout: Duration,
) -> Result<DestGroup, KafkaError> {
    let list = group_consumer.fetch_group_list(Some(group), timeout)?;
    let (state, members) = list
        .groups()
        .iter()
        .find(|info| info.name() == group)
        .map(|info| (info.state().to_string(), info.members().len()))
        .unwrap_or_else(|| ("Dead".to_string(), 0));
    let mut committed = BTreeMap::new();
    if !partitions.is_empty() {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        for element in group_consumer.committed_offsets(list, timeout)?.elements() {
            if let Offset::Offset(offset) = element.offset() {
                committed.insert((element.topic().to_string(), element.partition()), offset);
            }
        }
    }
    Ok(DestGroup {
        state,
        members,
        committed,
    })
}

/// Why a call on the group failed, when the cluster refused access to the group
/// itself: librdkafka then only times out, and the refusal waits in the
/// consumer's queue. Names the group and the ACLs that are missing.
pub fn group_refusal(
    group_consumer: &ReadToEndConsumer,
    cluster: &ClusterSpec,
    group: &str,
) -> Option<String> {
    for _ in 0..100 {
        match group_consumer.poll(Duration::ZERO) {
            None => return None,
            Some(Err(error)) if is_group_authorization_error(&error) => {
                return Some(format!(
                    "kafka cluster {}: access to consumer group {group} is not authorized ({error}); grant kmirror's principal Describe and Read on the group",
                    cluster.name
                ))
            }
            Some(_) => {}
        }
    }
    None
}

/// Commits the offsets as the group, without joining it, then reads them back.
/// The broker takes such a commit only while the group has no active member,
/// so a consumer that joined since the state was read is never moved either.
/// Returns the partitions whose committed offset is not the one asked for.
pub fn commit(
    group_consumer: &ReadToEndConsumer,
    offsets: &[(String, i32, i64)],
    timeout: Duration,
) -> Result<Vec<(String, i32)>, KafkaError> {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    group_consumer.commit(&list, CommitMode::Sync)?;
    // A partition the broker refused may not fail the call: read back.
    let committed = group_consumer.committed_offsets(list, timeout)?;
    let wanted: BTreeMap<(&str, i32), i64> = offsets
        .iter()
        .map(|(topic, partition, offset)| ((topic.as_str(), *partition), *offset))
        .collect();
    Ok(committed
        .elements()
        .iter()
        .filter(|element| {
            element.offset() != Offset::Offset(wanted[&(element.topic(), element.partition())])
        })
        .map(|element| (element.topic().to_string(), element.partition()))
        .collect())
}
