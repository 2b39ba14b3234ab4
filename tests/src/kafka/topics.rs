//! Topics: creating (and waiting for their leaders), growing, configuring and
//! deleting them, deleting their records, their partition counts and watermarks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::cluster::{blocking, cluster_config, Cluster, REQUEST_TIMEOUT};

fn admin_client(cluster: Cluster) -> Result<AdminClient<DefaultClientContext>> {
    cluster_config(cluster)
        .create()
        .with_context(|| format!("cannot create an admin client for the {cluster} cluster"))
}

/// A consumer used for metadata and watermarks only. It never creates topics:
/// a destination topic must come from the coordinator, not from a test's look-up.
fn metadata_consumer(cluster: Cluster) -> Result<BaseConsumer> {
    cluster_config(cluster)
        .set("allow.auto.create.topics", "false")
        .set("enable.auto.commit", "false")
        .set("group.id", "kmirror-tests-metadata")
        .create()
        .with_context(|| format!("cannot create a metadata client for the {cluster} cluster"))
}

/// Creates a topic with `partitions` partitions and topic `configs`, and waits
/// until its metadata shows every partition with a leader.
pub async fn create_topic(
    cluster: Cluster,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin = admin_client(cluster)?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .with_context(|| format!("cannot create topic {topic} in the {cluster} cluster"))?;
    for result in results {
        result.map_err(|(name, code)| {
            anyhow!("cannot create topic {name} in the {cluster} cluster: {code}")
        })?;
    }
    let topic_name = topic.to_string();
    let ready = crate::wait_until(
        Duration::from_secs(30),
        &format!("topic {topic} to have {partitions} partitions with leaders"),
        || {
            let topic_name = topic_name.clone();
            async move {
                match blocking(move || topic_leaders_ready(cluster, &topic_name)).await {
                    Ok(count) if count == partitions => Ok(()),
                    Ok(count) => Err(format!("{count} partitions ready")),
                    Err(error) => Err(format!("{error:#}")),
                }
            }
        },
    )
    .await;
    ready.map_err(|message| anyhow!(message))
}

fn topic_leaders_ready(cluster: Cluster, topic: &str) -> Result<i32> {
    let consumer = metadata_consumer(cluster)?;
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(topic_metadata) = metadata.topics().first() else {
        return Ok(0);
    };
    if topic_metadata.error().is_some() {
        return Ok(0);
    }
    let ready = topic_metadata
        .partitions()
        .iter()
        .filter(|partition| partition.leader() >= 0 && partition.error().is_none())
        .count();
    Ok(i32::try_from(ready)?)
}

/// Sets topic configs (Kafka's non-incremental AlterConfigs: configs not named go
/// back to their defaults, so name every config the topic was created with).
pub async fn alter_topic_configs(
    cluster: Cluster,
    topic: &str,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin = admin_client(cluster)?;
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in configs {
        alter = alter.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .alter_configs([&alter], &options)
        .await
        .with_context(|| {
            format!("cannot alter configs of topic {topic} in the {cluster} cluster")
        })?;
    for result in results {
        result.map_err(|(_, code)| {
            anyhow!("cannot alter configs of topic {topic} in the {cluster} cluster: {code}")
        })?;
    }
    Ok(())
}

/// The value of one config of a topic, as the broker describes it.
pub async fn topic_config(cluster: Cluster, topic: &str, key: &str) -> Result<Option<String>> {
    let admin = admin_client(cluster)?;
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .with_context(|| format!("cannot describe topic {topic} in the {cluster} cluster"))?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no description of topic {topic}"))?
        .map_err(|code| {
            anyhow!("cannot describe topic {topic} in the {cluster} cluster: {code}")
        })?;
    Ok(resource.get(key).and_then(|entry| entry.value.clone()))
}

/// The partition count of a topic, `None` when the topic does not exist.
pub async fn partition_count(cluster: Cluster, topic: &str) -> Result<Option<i32>> {
    let topic = topic.to_string();
    blocking(move || {
        let consumer = metadata_consumer(cluster)?;
        partition_count_with(&consumer, &topic)
    })
    .await
}

pub(super) fn partition_count_with(consumer: &BaseConsumer, topic: &str) -> Result<Option<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("cannot fetch metadata of topic {topic}"))?;
    match metadata.topics().first() {
        Some(topic_metadata) if topic_metadata.error().is_none() => {
            Ok(Some(i32::try_from(topic_metadata.partitions().len())?))
        }
        _ => Ok(None),
    }
}

/// Low and high watermark of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// Reads watermarks of topics of one cluster with one client, for polling loops.
#[derive(Clone)]
pub struct WatermarkReader {
    cluster: Cluster,
    consumer: Arc<BaseConsumer>,
}

impl WatermarkReader {
    pub fn new(cluster: Cluster) -> Result<Self> {
        Ok(Self {
            cluster,
            consumer: Arc::new(metadata_consumer(cluster)?),
        })
    }

    /// Watermarks of every partition; empty when the topic does not exist.
    pub async fn watermarks(&self, topic: &str) -> Result<Vec<Watermarks>> {
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        let cluster = self.cluster;
        blocking(move || {
            let Some(partitions) = partition_count_with(&consumer, &topic)? else {
                return Ok(Vec::new());
            };
            (0..partitions)
                .map(|partition| {
                    let (low, high) = consumer
                        .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)
                        .with_context(|| {
                            format!("cannot fetch watermarks of {topic}/{partition} in the {cluster} cluster")
                        })?;
                    Ok(Watermarks { partition, low, high })
                })
                .collect()
        })
        .await
    }

    /// Offsets held by a topic (sum of high minus low watermarks): the record count
    /// when no transaction markers are in it, as in a destination topic written by
    /// the idempotent writer. 0 when the topic does not exist.
    pub async fn offset_count(&self, topic: &str) -> Result<i64> {
        Ok(self
            .watermarks(topic)
            .await?
            .iter()
            .map(|watermarks| watermarks.high - watermarks.low)
            .sum())
    }
}

/// Grows a topic to `total` partitions.
pub async fn add_partitions(cluster: Cluster, topic: &str, total: usize) -> Result<()> {
    let admin = admin_client(cluster)?;
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .create_partitions(
            [&rdkafka::admin::NewPartitions::new(topic, total)],
            &options,
        )
        .await
        .with_context(|| format!("cannot add partitions to {topic} in the {cluster} cluster"))?;
    for result in results {
        result.map_err(|(name, code)| {
            anyhow!("cannot add partitions to {name} in the {cluster} cluster: {code}")
        })?;
    }
    Ok(())
}

/// Deletes a topic.
pub async fn delete_topic(cluster: Cluster, topic: &str) -> Result<()> {
    let admin = admin_client(cluster)?;
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .delete_topics(&[topic], &options)
        .await
        .with_context(|| format!("cannot delete {topic} in the {cluster} cluster"))?;
    for result in results {
        result.map_err(|(name, code)| {
            anyhow!("cannot delete {name} in the {cluster} cluster: {code}")
        })?;
    }
    Ok(())
}

/// Deletes the records of a partition before `before` (what
/// `kafka-delete-records` does; `Offset::End` empties it). Returns the new log
/// start offset.
pub async fn delete_records(
    cluster: Cluster,
    topic: &str,
    partition: i32,
    before: rdkafka::Offset,
) -> Result<i64> {
    let admin = admin_client(cluster)?;
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets.add_partition_offset(topic, partition, before)?;
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let deleted = admin
        .delete_records(&offsets, &options)
        .await
        .with_context(|| {
            format!("cannot delete records of {topic}/{partition} in the {cluster} cluster")
        })?;
    let element = deleted
        .find_partition(topic, partition)
        .ok_or_else(|| anyhow!("no answer for {topic}/{partition}"))?;
    element.error().with_context(|| {
        format!("cannot delete records of {topic}/{partition} in the {cluster} cluster")
    })?;
    match element.offset() {
        rdkafka::Offset::Offset(low) => Ok(low),
        other => Err(anyhow!(
            "unexpected log start {other:?} of {topic}/{partition}"
        )),
    }
}
