//! Consumer groups as applications use them: a member that subscribes, reads and
//! commits what it read, and the offsets a group has committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::cluster::{blocking, cluster_config, Cluster};
use super::read::consumed_record;
use super::records::TopicRecords;

fn member(cluster: Cluster, group: &str) -> Result<BaseConsumer> {
    cluster_config(cluster)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .with_context(|| format!("cannot create a member of group {group} ({cluster} cluster)"))
}

/// Reads `topic` as a member of `group` (subscribed, as applications do),
/// committing what it read after each poll, until `enough` says so or every
/// partition is at its end (`until_end`). Leaves the group before returning.
/// Returns the records read, by partition, in the order read.
pub async fn consume_as_group(
    cluster: Cluster,
    group: &str,
    topic: &str,
    until_end: bool,
    enough: impl Fn(&TopicRecords) -> bool + Send + 'static,
    timeout: Duration,
) -> Result<TopicRecords> {
    let (group, topic) = (group.to_string(), topic.to_string());
    blocking(move || {
        let consumer = member(cluster, &group)?;
        consumer.subscribe(&[&topic])?;
        let mut read = TopicRecords::new();
        let mut at_end = std::collections::BTreeSet::new();
        let deadline = Instant::now() + timeout;
        loop {
            if enough(&read) {
                break;
            }
            if until_end {
                let assigned = consumer.assignment()?.count();
                if assigned > 0 && at_end.len() == assigned {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("group {group} did not read enough of {topic} within {timeout:?}");
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(error)) => bail!("group {group} cannot read {topic}: {error}"),
                Some(Ok(message)) => {
                    let record = consumed_record(&message);
                    at_end.remove(&record.partition);
                    read.entry(record.partition).or_default().push(record);
                    // What was read is committed, as an application commits
                    // what it processed.
                    consumer.commit_message(&message, CommitMode::Sync)?;
                }
            }
        }
        // Dropping the consumer closes it: it leaves the group.
        drop(consumer);
        Ok(read)
    })
    .await
}

/// The offsets `group` committed on the partitions of `topic` (none for a
/// partition without a commit).
pub async fn committed_offsets(
    cluster: Cluster,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>> {
    let (group, topic) = (group.to_string(), topic.to_string());
    blocking(move || {
        let consumer: BaseConsumer = cluster_config(cluster).set("group.id", &group).create()?;
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(&topic, partition);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect())
    })
    .await
}

/// Commits `offsets` for `group` without joining it, as a consumer that read up
/// to there and left would have.
pub async fn commit_group(
    cluster: Cluster,
    group: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<()> {
    let (group, topic, offsets) = (group.to_string(), topic.to_string(), offsets.clone());
    blocking(move || {
        let consumer: BaseConsumer = cluster_config(cluster).set("group.id", &group).create()?;
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &offsets {
            list.add_partition_offset(&topic, *partition, Offset::Offset(*offset))?;
        }
        consumer.commit(&list, CommitMode::Sync)?;
        Ok(())
    })
    .await
}

/// A member that stays in a group (polling, reading nothing it commits) until
/// dropped or [`LiveMember::leave`] is called.
pub struct LiveMember {
    stop: Arc<AtomicBool>,
    handle_opt: Option<JoinHandle<Result<()>>>,
}

impl LiveMember {
    /// Joins `group` subscribed to `topic` and waits until it holds partitions.
    pub async fn join(cluster: Cluster, group: &str, topic: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
        let (group, topic) = (group.to_string(), topic.to_string());
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || -> Result<()> {
            let consumer = member(cluster, &group)?;
            // It commits nothing: whatever it reads, the group's offsets stay.
            consumer.subscribe(&[&topic])?;
            let mut joined_tx_opt = Some(joined_tx);
            while !stopping.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
                if consumer.assignment()?.count() > 0 {
                    if let Some(joined_tx) = joined_tx_opt.take() {
                        let _ = joined_tx.send(());
                    }
                }
            }
            Ok(())
        });
        tokio::time::timeout(Duration::from_secs(60), joined_rx)
            .await
            .context("the live member did not get partitions within 60 s")?
            .context("the live member stopped before it joined")?;
        Ok(Self {
            stop,
            handle_opt: Some(handle),
        })
    }

    /// Leaves the group (the consumer closes) and waits until it has.
    pub async fn leave(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle_opt.take().expect("joined");
        blocking(move || handle.join().expect("the live member does not panic")).await
    }
}

impl Drop for LiveMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
