//! Kafka clients shared by the subcommands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

/// `--isolation-level` of `watch`, `verify` and `latency`: how they read a topic.
///
/// An exactly-once mirror promises what a read_committed consumer of the destination
/// sees, so its benchmark reads the destination that way. With read_committed, a
/// partition's end offset is no record count: each transaction leaves a commit or
/// abort marker that takes an offset but is never delivered, and an aborted
/// transaction's records take offsets too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Every record the broker holds, in transactions still open or aborted too
    /// (the reading of the at-least-once benchmark).
    #[default]
    ReadUncommitted,
    /// Only records outside transactions and those of committed transactions, up
    /// to the last stable offset.
    ReadCommitted,
}

impl IsolationLevel {
    /// librdkafka's `isolation.level`.
    pub fn config_value(self) -> &'static str {
        match self {
            Self::ReadUncommitted => "read_uncommitted",
            Self::ReadCommitted => "read_committed",
        }
    }
}

/// A consumer that never joins a group: partitions are assigned explicitly.
///
/// The isolation level also governs the consumer's offset queries
/// (`fetch_watermarks`, `offsets_for_times`): read_committed, the high end they
/// report is the last stable offset, the first offset of a transaction still open.
pub fn plain_consumer(
    bootstrap: &str,
    isolation: IsolationLevel,
    extra: &[(&str, &str)],
) -> Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kmirror-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", isolation.config_value())
        .set("auto.offset.reset", "earliest");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config
        .create()
        .with_context(|| format!("cannot create a consumer for {bootstrap}"))
}

/// The partition count of a topic, waiting (boundedly) until its metadata lists
/// every partition with a leader.
pub fn partition_count(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let failure = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(metadata) => match metadata.topics().iter().find(|entry| entry.name() == topic) {
                Some(entry) if entry.error().is_none() && !entry.partitions().is_empty() => {
                    if entry
                        .partitions()
                        .iter()
                        .all(|partition| partition.leader() >= 0)
                    {
                        return Ok(i32::try_from(entry.partitions().len())?);
                    }
                    "a partition has no leader yet".to_string()
                }
                Some(entry) => format!("topic error {:?}", entry.error()),
                None => "topic not in the metadata".to_string(),
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("topic {topic} is not ready after {timeout:?}: {failure}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
pub struct CountingContext {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub first_failure: Mutex<Option<String>>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    *self.first_failure.lock().expect("not poisoned") = Some(error.to_string());
                }
            }
        }
    }
}

impl CountingContext {
    /// Fails with the first delivery error, if any.
    pub fn check(&self, what: &str) -> Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self.first_failure.lock().expect("not poisoned").clone();
            bail!(
                "{what}: {failed} deliveries failed, the first with: {}",
                first.unwrap_or_default()
            );
        }
        Ok(())
    }
}
