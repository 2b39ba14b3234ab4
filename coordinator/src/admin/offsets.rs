//! Offset translation: where source positions are in the destination.
//!
//! I/O at the edges: the flow and its clusters from etcd, the source group's
//! committed offsets and both clusters' partition counts, the map partitions from
//! the destination. In the middle, [`translate_positions`] decides each position
//! from what was read (pure, unit-tested), with
//! [`kmirror_common::offset_map::translate`] doing the search.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kmirror_common::kafka::ReadToEndConsumer;
use kmirror_common::offset_map::{self, MapEntry, Translation};
use kmirror_common::schema::{ClusterSpec, FlowSpec};
use kmirror_proto::v1::{
    OffsetTranslation, SourcePosition, TranslateOffsetsRequest, TranslateOffsetsResponse,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::reading::{consumer, failed, read_map, FlowClusters, SourcePartitionId};
use super::AdminService;
use crate::error::CoordinatorError;
use crate::topic_filter::TopicFilter;

impl AdminService {
    pub async fn translate_offsets(
        &self,
        request: TranslateOffsetsRequest,
    ) -> Result<TranslateOffsetsResponse, CoordinatorError> {
        let FlowClusters { flow, source, dest } = self.flow_with_clusters(&request.flow).await?;
        if request.group.is_empty() && request.positions.is_empty() {
            return Err(CoordinatorError::InvalidArgument(
                "name a source consumer group or at least one source position".into(),
            ));
        }
        let map_topic = offset_map::map_topic(self.keys.fleet());
        let timeout = self.kafka.timeout();
        let translations = tokio::task::spawn_blocking(move || {
            translate_blocking(&flow, &source, &dest, &request, &map_topic, timeout)
                .map(|translations| (translations, map_topic))
        })
        .await
        .map_err(|error| {
            CoordinatorError::InvalidArgument(format!("translation failed: {error}"))
        })?;
        let (translations, map_topic) = translations?;
        Ok(TranslateOffsetsResponse {
            translations,
            map_topic,
        })
    }
}

fn translate_blocking(
    flow: &FlowSpec,
    source: &ClusterSpec,
    dest: &ClusterSpec,
    request: &TranslateOffsetsRequest,
    map_topic: &str,
    timeout: Duration,
) -> Result<Vec<OffsetTranslation>, CoordinatorError> {
    let filter = TopicFilter::new(&flow.include, flow.exclude.as_deref())
        .map_err(|error| CoordinatorError::InvalidArgument(error.to_string()))?;
    let group_opt = (!request.group.is_empty()).then_some(request.group.as_str());
    let source_consumer = consumer(source, group_opt)?;
    let source_metadata = source_consumer
        .fetch_metadata(None, timeout)
        .map_err(|error| failed(source, "reading topics", &error))?;
    let source_counts: BTreeMap<String, i32> = source_metadata
        .topics()
        .iter()
        .filter(|topic| filter.matches(topic.name()))
        .map(|topic| (topic.name().to_string(), topic.partitions().len() as i32))
        .collect();

    let positions: Vec<SourcePosition> = match group_opt {
        None => request.positions.clone(),
        Some(group) => {
            let positions = group_positions(&source_consumer, &source_counts, timeout)
                .map_err(|error| failed(source, "reading the group's committed offsets", &error))?;
            if positions.is_empty() {
                return Err(CoordinatorError::NotFound {
                    what: "consumer group",
                    name: format!(
                        "{group} (it has no committed offset on the topics flow {} mirrors from cluster {})",
                        flow.name, flow.source_cluster
                    ),
                });
            }
            positions
        }
    };

    let dest_consumer = consumer(dest, None)?;
    let dest_metadata = dest_consumer
        .fetch_metadata(None, timeout)
        .map_err(|error| failed(dest, "reading topics", &error))?;
    let dest_counts: BTreeMap<String, i32> = dest_metadata
        .topics()
        .iter()
        .filter(|topic| topic.error().is_none())
        .map(|topic| (topic.name().to_string(), topic.partitions().len() as i32))
        .collect();

    let wanted: BTreeSet<SourcePartitionId> = positions
        .iter()
        .map(|position| (position.topic.clone(), position.partition))
        .collect();
    let entries = if dest_counts.contains_key(map_topic) {
        read_map(&dest_consumer, flow, map_topic, &wanted, timeout)
            .map_err(|error| failed(dest, "reading the offset map", &error))?
    } else {
        BTreeMap::new()
    };
    Ok(translate_positions(
        flow,
        &positions,
        &source_counts,
        &dest_counts,
        &entries,
    ))
}

/// Decides each position from what was read: partition counts of both clusters
/// (by source and destination topic) and the map entries per source partition.
pub fn translate_positions(
    flow: &FlowSpec,
    positions: &[SourcePosition],
    source_counts: &BTreeMap<String, i32>,
    dest_counts: &BTreeMap<String, i32>,
    entries: &BTreeMap<SourcePartitionId, Vec<MapEntry>>,
) -> Vec<OffsetTranslation> {
    positions
        .iter()
        .map(|position| {
            let mut translation = OffsetTranslation {
                topic: position.topic.clone(),
                partition: position.partition,
                source_offset: position.offset,
                dest_topic: flow.dest_topic(&position.topic),
                dest_partition: -1,
                dest_offset: -1,
                ..OffsetTranslation::default()
            };
            let source_count = source_counts.get(&position.topic).copied();
            let dest_count = dest_counts.get(&translation.dest_topic).copied();
            let reason = match (source_count, dest_count) {
                (None, _) => Some(format!(
                    "flow {} mirrors no source topic {}",
                    flow.name, position.topic
                )),
                (Some(count), _) if position.partition < 0 || position.partition >= count => {
                    Some(format!(
                        "source topic {} has no partition {} ({count} partitions)",
                        position.topic, position.partition
                    ))
                }
                (Some(_), None) => Some(format!(
                    "destination topic {} does not exist in cluster {}",
                    translation.dest_topic, flow.dest_cluster
                )),
                (Some(source_count), Some(dest_count)) if source_count != dest_count => {
                    Some(format!(
                        "re-partitioned flow: source topic {} has {source_count} partitions and destination topic {} has {dest_count}, so records go to the partition of their key and no per-partition position exists",
                        position.topic, translation.dest_topic
                    ))
                }
                _ if position.offset < 0 => Some(format!(
                    "source offset {} is not an offset",
                    position.offset
                )),
                _ => None,
            };
            if let Some(reason) = reason {
                translation.reason = reason;
                return translation;
            }
            let partition_entries = entries
                .get(&(position.topic.clone(), position.partition))
                .map(Vec::as_slice)
                .unwrap_or_default();
            match offset_map::translate(partition_entries, position.offset) {
                Translation::Exact {
                    dest_topic,
                    dest_partition,
                    dest_offset,
                } => {
                    translation.translated = true;
                    translation.dest_topic = dest_topic;
                    translation.dest_partition = dest_partition;
                    translation.dest_offset = dest_offset;
                }
                other => translation.reason = other.to_string(),
            }
            translation
        })
        .collect()
}

/// The group's committed offsets on every partition of the flow's topics.
pub(crate) fn group_positions(
    consumer: &ReadToEndConsumer,
    source_counts: &BTreeMap<String, i32>,
    timeout: Duration,
) -> Result<Vec<SourcePosition>, KafkaError> {
    let mut partitions = TopicPartitionList::new();
    for (topic, count) in source_counts {
        for partition in 0..*count {
            partitions.add_partition(topic, partition);
        }
    }
    if partitions.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(partitions, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some(SourcePosition {
                topic: element.topic().to_string(),
                partition: element.partition(),
                offset,
            }),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::test_support::flow_spec;

    fn position(topic: &str, partition: i32, offset: i64) -> SourcePosition {
        SourcePosition {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn each_position_is_translated_or_says_why_not() {
        let flow = flow_spec("dr");
        let source_counts = BTreeMap::from([("orders".to_string(), 2), ("events".to_string(), 3)]);
        let dest_counts = BTreeMap::from([("orders".to_string(), 2), ("events".to_string(), 6)]);
        let entries = BTreeMap::from([(
            ("orders".to_string(), 1),
            vec![MapEntry::from_offsets(&[5, 6, 8], "orders", 1, 40, true).unwrap()],
        )]);
        let translations = translate_positions(
            &flow,
            &[
                position("orders", 1, 7),
                position("orders", 1, 50),
                position("orders", 0, 0),
                position("events", 0, 3),
                position("payments", 0, 3),
                position("orders", 5, 3),
            ],
            &source_counts,
            &dest_counts,
            &entries,
        );
        assert!(translations[0].translated);
        assert_eq!(
            (translations[0].dest_partition, translations[0].dest_offset),
            (1, 42)
        );
        let reasons: Vec<&str> = translations[1..]
            .iter()
            .map(|translation| {
                assert!(!translation.translated);
                translation.reason.as_str()
            })
            .collect();
        assert!(reasons[0].starts_with("not mirrored yet"), "{}", reasons[0]);
        assert!(reasons[1].starts_with("not mirrored yet"), "{}", reasons[1]);
        assert!(
            reasons[2].starts_with("re-partitioned flow"),
            "{}",
            reasons[2]
        );
        assert_eq!(reasons[3], "flow dr mirrors no source topic payments");
        assert_eq!(
            reasons[4],
            "source topic orders has no partition 5 (2 partitions)"
        );
    }
}
