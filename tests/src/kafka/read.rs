//! Reading every committed record of a topic back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, Timestamp, TopicPartitionList};

use super::cluster::{blocking, cluster_config, Cluster, BULK_TIMEOUT};
use super::records::{ConsumedRecord, TimestampType, TopicRecords};
use super::topics::partition_count_with;

/// Reads every committed record of a topic (read_committed), from the beginning of
/// each partition to its end at the time of reading, grouped by partition in
/// offset order. Fails if the topic does not exist.
pub async fn read_all(cluster: Cluster, topic: &str) -> Result<TopicRecords> {
    let topic = topic.to_string();
    blocking(move || read_all_blocking(cluster, &topic, "read_committed")).await
}

/// Reads every record of a topic as [`read_all`] does, those of open and aborted
/// transactions included (read_uncommitted).
pub async fn read_all_uncommitted(cluster: Cluster, topic: &str) -> Result<TopicRecords> {
    let topic = topic.to_string();
    blocking(move || read_all_blocking(cluster, &topic, "read_uncommitted")).await
}

fn read_all_blocking(cluster: Cluster, topic: &str, isolation: &str) -> Result<TopicRecords> {
    let consumer: BaseConsumer = cluster_config(cluster)
        .set("group.id", crate::unique_name("kmirror-tests-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .with_context(|| format!("cannot create a consumer for the {cluster} cluster"))?;
    let partitions = partition_count_with(&consumer, topic)?
        .ok_or_else(|| anyhow!("topic {topic} does not exist in the {cluster} cluster"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;

    let mut records: TopicRecords = (0..partitions)
        .map(|partition| (partition, Vec::new()))
        .collect();
    let mut at_end: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + BULK_TIMEOUT;
    // Each partition reports end-of-partition when the consumer reaches its end
    // (the last stable offset in read_committed), empty partitions included.
    while at_end.len() < records.len() {
        if Instant::now() > deadline {
            bail!(
                "reading {topic} from the {cluster} cluster did not reach the end of partitions {:?} within {BULK_TIMEOUT:?}",
                (0..partitions).filter(|partition| !at_end.contains(partition)).collect::<Vec<_>>()
            );
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => bail!("cannot read {topic} from the {cluster} cluster: {error}"),
            Some(Ok(message)) => {
                let record = consumed_record(&message);
                records.entry(record.partition).or_default().push(record);
            }
        }
    }
    Ok(records)
}

pub(super) fn consumed_record(message: &rdkafka::message::BorrowedMessage<'_>) -> ConsumedRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let (timestamp, timestamp_type) = match message.timestamp() {
        Timestamp::NotAvailable => (-1, TimestampType::NotAvailable),
        Timestamp::CreateTime(millis) => (millis, TimestampType::CreateTime),
        Timestamp::LogAppendTime(millis) => (millis, TimestampType::LogAppendTime),
    };
    ConsumedRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp,
        timestamp_type: Some(timestamp_type),
    }
}
