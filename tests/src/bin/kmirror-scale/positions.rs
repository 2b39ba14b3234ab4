//! Where every partition of the flow stands, read straight from etcd (two range
//! reads, whatever the number of partitions): who runs it, under which epoch, and
//! the checkpoint its current owner wrote. The run waits on these for "every
//! partition runs", "the killed members' partitions run again" and "caught up".

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use etcd_client::GetOptions;
use kmirror_common::schema::{decode, Assignment, Checkpoint};
use kmirror_common::{FlowName, Keys};

/// A source partition: topic and number.
pub type Partition = (String, i32);

/// One partition's owner and progress.
#[derive(Debug, Clone, Default)]
pub struct Position {
    pub fetcher: String,
    pub writer: String,
    pub epoch: u64,
    pub releasing: bool,
    /// The checkpoint's next offset and the epoch it was written under.
    pub checkpoint_opt: Option<(i64, u64)>,
}

impl Position {
    /// Next offset checkpointed under the current assignment (its owner runs it).
    pub fn running_offset(&self) -> Option<i64> {
        match self.checkpoint_opt {
            Some((offset, epoch)) if epoch == self.epoch && !self.releasing => Some(offset),
            _ => None,
        }
    }
}

/// Reads the flow's assignments and checkpoints.
pub struct Positions {
    etcd: etcd_client::Client,
    keys: Keys,
    flow: FlowName,
}

impl Positions {
    pub fn new(etcd: etcd_client::Client, fleet: &str, flow: &str) -> Result<Self> {
        Ok(Self {
            etcd,
            keys: Keys::new(fleet),
            flow: FlowName::new(flow).with_context(|| format!("invalid flow name {flow}"))?,
        })
    }

    /// Every assigned partition (partitions without an assignment are absent).
    pub async fn read(&self) -> Result<BTreeMap<Partition, Position>> {
        let mut etcd = self.etcd.clone();
        let prefix = Some(GetOptions::new().with_prefix());
        let assignments = etcd
            .get(self.keys.flow_assignments(&self.flow), prefix.clone())
            .await
            .context("cannot read the assignments")?;
        let checkpoints = etcd
            .get(self.keys.flow_checkpoints(&self.flow), prefix)
            .await
            .context("cannot read the checkpoints")?;
        let mut positions = BTreeMap::new();
        for entry in assignments.kvs() {
            let Some(key) = self
                .keys
                .parse_partition_key(&self.keys.assignments(), entry.key())
            else {
                continue;
            };
            let assignment: Assignment = decode(entry.key(), entry.value())?;
            positions.insert(
                (key.topic, key.partition),
                Position {
                    fetcher: assignment.fetcher.to_string(),
                    writer: assignment.writer.to_string(),
                    epoch: assignment.epoch.0,
                    releasing: assignment.releasing_since_ms.is_some(),
                    checkpoint_opt: None,
                },
            );
        }
        for entry in checkpoints.kvs() {
            let Some(key) = self
                .keys
                .parse_partition_key(&self.keys.checkpoints(), entry.key())
            else {
                continue;
            };
            let checkpoint: Checkpoint = decode(entry.key(), entry.value())?;
            if let Some(position) = positions.get_mut(&(key.topic, key.partition)) {
                position.checkpoint_opt = Some((checkpoint.next_offset, checkpoint.epoch.0));
            }
        }
        Ok(positions)
    }

    /// Waits until every one of `partitions` is assigned and its owner
    /// checkpointed past `past` (a partition missing from `past`: past 0).
    /// Returns when each one first did, measured from `since`.
    pub async fn wait_running_past(
        &self,
        partitions: &BTreeSet<Partition>,
        past: &BTreeMap<Partition, i64>,
        avoid: &BTreeSet<String>,
        since: Instant,
        timeout: Duration,
    ) -> Result<BTreeMap<Partition, Duration>> {
        let mut resumed: BTreeMap<Partition, Duration> = BTreeMap::new();
        let mut poll = Duration::from_millis(100);
        loop {
            let positions = self.read().await?;
            let now = since.elapsed();
            for partition in partitions {
                if resumed.contains_key(partition) {
                    continue;
                }
                let Some(position) = positions.get(partition) else {
                    continue;
                };
                if avoid.contains(&position.fetcher) || avoid.contains(&position.writer) {
                    continue;
                }
                let floor = past.get(partition).copied().unwrap_or(0);
                if position
                    .running_offset()
                    .is_some_and(|offset| offset > floor)
                {
                    resumed.insert(partition.clone(), now);
                }
            }
            if resumed.len() == partitions.len() {
                return Ok(resumed);
            }
            if now >= timeout {
                let waiting: Vec<String> = partitions
                    .iter()
                    .filter(|partition| !resumed.contains_key(*partition))
                    .take(5)
                    .map(|(topic, partition)| {
                        format!(
                            "{topic}/{partition}: {:?}",
                            positions.get(&(topic.clone(), *partition))
                        )
                    })
                    .collect();
                bail!(
                    "{} of {} partitions still not running past their offset after {timeout:?}, e.g. {}",
                    partitions.len() - resumed.len(),
                    partitions.len(),
                    waiting.join("; ")
                );
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }

    /// Waits until every partition's checkpoint reached `ends` (the source's high
    /// watermarks): everything produced is mirrored and recorded.
    pub async fn wait_caught_up(
        &self,
        ends: &BTreeMap<Partition, i64>,
        timeout: Duration,
    ) -> Result<Duration> {
        let started = Instant::now();
        kmirror_tests::wait_until(timeout, "every partition to catch up", || async {
            let positions = self.read().await.map_err(|error| format!("{error:#}"))?;
            let behind: Vec<String> = ends
                .iter()
                .filter_map(|(partition, end)| {
                    let at = positions
                        .get(partition)
                        .and_then(|position| position.checkpoint_opt)
                        .map(|(offset, _)| offset);
                    let caught_up = at.is_some_and(|offset| offset >= *end);
                    (!caught_up)
                        .then(|| format!("{}/{} at {at:?} of {end}", partition.0, partition.1))
                })
                .collect();
            match behind.first() {
                None => Ok(()),
                Some(example) => Err(format!(
                    "{} partitions behind, e.g. {example}",
                    behind.len()
                )),
            }
        })
        .await
        .map_err(anyhow::Error::msg)?;
        Ok(started.elapsed())
    }
}
