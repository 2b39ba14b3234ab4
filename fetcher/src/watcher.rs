//! Follows the fleet's control state in etcd and tells the core what this fetcher
//! must run: its assignments, where their writers are, and how to reach the
//! flows' source clusters.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{Client, WatchOptions};
use kmirror_common::etcd::EtcdError;
use kmirror_common::schema::{decode, Assignment, Checkpoint, ClusterSpec, FlowSpec, MemberInfo};
use kmirror_common::{FlowName, Keys, MemberId, PartitionKey, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// An assignment as this fetcher holds it, with its stored bytes: checkpoint
/// writes compare them, so a changed assignment fences the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAssignment {
    pub assignment: Assignment,
    pub raw: Vec<u8>,
}

/// Everything this fetcher must run, read in one pass.
#[derive(Debug, Default)]
pub struct Desired {
    pub assignments: HashMap<PartitionKey, HeldAssignment>,
    pub writers: HashMap<MemberId, String>,
    pub sources: HashMap<FlowName, ClusterSpec>,
    pub checkpoints: HashMap<PartitionKey, Checkpoint>,
}

pub struct Watcher {
    pub etcd: Client,
    pub keys: Keys,
    pub me: MemberId,
    pub desired_tx: mpsc::Sender<Desired>,
    pub cancel: CancellationToken,
    /// Full re-read even without a change seen (repairs a missed watch event).
    pub resync_interval: Duration,
}

impl Watcher {
    pub async fn run(mut self) {
        let (changed_tx, mut changed_rx) = mpsc::channel::<()>(1);
        for prefix in [
            self.keys.assignments(),
            self.keys.members_of(Role::Writer),
            self.keys.flows(),
            self.keys.clusters(),
        ] {
            tokio::spawn(watch_prefix(
                self.etcd.clone(),
                prefix,
                changed_tx.clone(),
                self.cancel.clone(),
            ));
        }
        loop {
            match self.read().await {
                Ok(desired) => {
                    if self.desired_tx.send(desired).await.is_err() {
                        return;
                    }
                }
                Err(error) => warn!(%error, "cannot read assignments from etcd"),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = changed_rx.recv() => {
                    // Let a burst of changes (a new plan) settle into one read.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while changed_rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(self.resync_interval) => {}
            }
        }
    }

    async fn read(&mut self) -> Result<Desired, EtcdError> {
        let mut desired = Desired::default();
        let assignments_prefix = self.keys.assignments();
        let response = self
            .etcd
            .get(
                assignments_prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await?;
        for kv in response.kvs() {
            let Some(partition) = self.keys.parse_partition_key(&assignments_prefix, kv.key())
            else {
                continue;
            };
            let assignment: Assignment = match decode(kv.key(), kv.value()) {
                Ok(assignment) => assignment,
                Err(error) => {
                    warn!(%error, "skipping an undecodable assignment");
                    continue;
                }
            };
            if assignment.fetcher == self.me {
                desired.assignments.insert(
                    partition,
                    HeldAssignment {
                        assignment,
                        raw: kv.value().to_vec(),
                    },
                );
            }
        }
        let (writers, _) = kmirror_common::etcd::get_prefix::<MemberInfo>(
            &mut self.etcd,
            &self.keys.members_of(Role::Writer),
        )
        .await?;
        desired.writers = writers
            .into_iter()
            .map(|(_, member)| (member.id, member.address))
            .collect();
        let (flows, _) =
            kmirror_common::etcd::get_prefix::<FlowSpec>(&mut self.etcd, &self.keys.flows())
                .await?;
        let (clusters, _) =
            kmirror_common::etcd::get_prefix::<ClusterSpec>(&mut self.etcd, &self.keys.clusters())
                .await?;
        let clusters: HashMap<_, _> = clusters
            .into_iter()
            .map(|(_, cluster)| (cluster.name.clone(), cluster))
            .collect();
        for (_, flow) in flows {
            if let Some(cluster) = clusters.get(&flow.source_cluster) {
                desired.sources.insert(flow.name.clone(), cluster.clone());
            }
        }
        let checkpoints_prefix = self.keys.checkpoints();
        let response = self
            .etcd
            .get(
                checkpoints_prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await?;
        for kv in response.kvs() {
            let Some(partition) = self.keys.parse_partition_key(&checkpoints_prefix, kv.key())
            else {
                continue;
            };
            if !desired.assignments.contains_key(&partition) {
                continue;
            }
            if let Ok(checkpoint) = decode::<Checkpoint>(kv.key(), kv.value()) {
                desired.checkpoints.insert(partition, checkpoint);
            }
        }
        Ok(desired)
    }
}

/// Signals `changed_tx` on every change under `prefix`, re-opening the watch when
/// it breaks.
async fn watch_prefix(
    mut etcd: Client,
    prefix: String,
    changed_tx: mpsc::Sender<()>,
    cancel: CancellationToken,
) {
    loop {
        let opened = etcd
            .watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))
            .await;
        match opened {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    message = stream.message() => match message {
                        Ok(Some(_)) => { let _ = changed_tx.try_send(()); }
                        Ok(None) | Err(_) => break,
                    }
                }
            },
            Err(error) => warn!(prefix, %error, "cannot watch etcd"),
        }
        // Whatever happened while the watch was down is picked up by the re-read.
        let _ = changed_tx.try_send(());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
