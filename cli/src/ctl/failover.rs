//! `offsets sync` and `failover`: consumer groups moved to the destination at
//! their exact translated positions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kmirror_proto::v1::{
    FlowStatus, GroupSyncResult, PauseFlowRequest, SyncGroupOffsetsRequest,
    SyncGroupOffsetsResponse,
};
use serde::Serialize;

use super::failure::Failure;
use super::{Ctl, Outcome};
use crate::output::{render, render_table};

/// How often failover looks at the flow's progress while waiting.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize)]
struct PartitionJson {
    topic: String,
    partition: i32,
    source_offset: i64,
    dest_topic: String,
    dest_partition: Option<i32>,
    dest_offset: Option<i64>,
    previous_dest_offset: Option<i64>,
    action: String,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct GroupJson {
    group: String,
    state: String,
    reason: Option<String>,
    partitions: Vec<PartitionJson>,
}

#[derive(Debug, Serialize)]
struct SyncJson {
    flow: String,
    /// Failover only: whether it waited until caught up, and that it paused the flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    caught_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<bool>,
    dry_run: bool,
    map_topic: String,
    /// Whether every group was synced exactly.
    exact: bool,
    groups: Vec<GroupJson>,
}

impl From<&GroupSyncResult> for GroupJson {
    fn from(result: &GroupSyncResult) -> Self {
        Self {
            group: result.group.clone(),
            state: result.state.clone(),
            reason: (!result.reason.is_empty()).then(|| result.reason.clone()),
            partitions: result
                .partitions
                .iter()
                .map(|sync| PartitionJson {
                    topic: sync.topic.clone(),
                    partition: sync.partition,
                    source_offset: sync.source_offset,
                    dest_topic: sync.dest_topic.clone(),
                    dest_partition: (sync.dest_offset >= 0).then_some(sync.dest_partition),
                    dest_offset: (sync.dest_offset >= 0).then_some(sync.dest_offset),
                    previous_dest_offset: (sync.previous_dest_offset >= 0)
                        .then_some(sync.previous_dest_offset),
                    action: sync.action.clone(),
                    reason: (!sync.reason.is_empty()).then(|| sync.reason.clone()),
                })
                .collect(),
        }
    }
}

impl Ctl {
    pub(super) async fn sync_offsets(
        &mut self,
        flow: String,
        groups_opt: Option<String>,
        dry_run: bool,
        allow_backwards: bool,
    ) -> Result<Outcome, Failure> {
        let answer = self
            .sync_groups(&flow, groups_opt, dry_run, allow_backwards)
            .await?;
        Ok(self.sync_outcome(flow, None, dry_run, &answer))
    }

    pub(super) async fn failover(
        &mut self,
        flow: String,
        groups_opt: Option<String>,
        now: bool,
        timeout: Duration,
        allow_backwards: bool,
    ) -> Result<Outcome, Failure> {
        let caught_up = if now {
            false
        } else {
            self.wait_caught_up(&flow, timeout).await?;
            true
        };
        eprintln!("pausing flow {flow}");
        self.client
            .pause_flow(PauseFlowRequest { name: flow.clone() })
            .await
            .map_err(|status| self.failure(format!("cannot pause flow {flow}"), status))?;
        eprintln!("syncing the groups' offsets");
        let answer = self
            .sync_groups(&flow, groups_opt, false, allow_backwards)
            .await?;
        Ok(self.sync_outcome(flow, Some(caught_up), false, &answer))
    }

    async fn sync_groups(
        &mut self,
        flow: &str,
        groups_opt: Option<String>,
        dry_run: bool,
        allow_backwards: bool,
    ) -> Result<SyncGroupOffsetsResponse, Failure> {
        Ok(self
            .client
            .sync_group_offsets(SyncGroupOffsetsRequest {
                flow: flow.to_string(),
                groups: groups_opt.unwrap_or_default(),
                dry_run,
                allow_backwards,
            })
            .await
            .map_err(|status| {
                self.failure(format!("cannot sync the groups of flow {flow}"), status)
            })?
            .into_inner())
    }

    /// Waits until every partition's checkpoint reached the source end offset
    /// it had when the wait began.
    async fn wait_caught_up(&mut self, flow: &str, timeout: Duration) -> Result<(), Failure> {
        let failed = |cause: String| Failure {
            what: format!("cannot fail over flow {flow}"),
            cause,
        };
        let started = Instant::now();
        let (_, flows) = self.status(Some(flow.to_string())).await?;
        let targets = end_offsets(flows.first()).map_err(failed)?;
        eprintln!(
            "waiting until flow {flow} mirrored what its {} source partitions held (up to {})",
            targets.len(),
            humantime::format_duration(timeout)
        );
        loop {
            let (_, flows) = self.status(Some(flow.to_string())).await?;
            let behind = behind_targets(flows.first(), &targets);
            if behind.is_empty() {
                eprintln!("caught up after {:.1} s", started.elapsed().as_secs_f64());
                return Ok(());
            }
            if started.elapsed() > timeout {
                let (key, (mirrored, target)) = behind.iter().next().expect("not empty");
                return Err(failed(format!(
                    "not caught up after {}: {} partitions behind, e.g. {}/{} at {mirrored} of {target} (retry, raise --timeout, or --now to fail over as it is)",
                    humantime::format_duration(timeout),
                    behind.len(),
                    key.0,
                    key.1
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn sync_outcome(
        &self,
        flow: String,
        caught_up_opt: Option<bool>,
        dry_run: bool,
        answer: &SyncGroupOffsetsResponse,
    ) -> Outcome {
        let inexact: Vec<&GroupSyncResult> = answer
            .groups
            .iter()
            .filter(|group| group.state != "synced")
            .collect();
        let json = SyncJson {
            flow,
            caught_up: caught_up_opt,
            paused: caught_up_opt.map(|_| true),
            dry_run,
            map_topic: answer.map_topic.clone(),
            exact: inexact.is_empty(),
            groups: answer.groups.iter().map(Into::into).collect(),
        };
        let stdout = render(self.format, &json, |_| groups_text(&answer.groups));
        Outcome {
            stdout,
            degraded_opt: (!inexact.is_empty()).then(|| {
                format!(
                    "{} of {} groups not synced exactly: {}",
                    inexact.len(),
                    answer.groups.len(),
                    inexact
                        .iter()
                        .map(|group| format!("{} ({})", group.group, group.state))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        }
    }
}

type PartitionId = (String, i32);

/// The source end offset of each partition of the flow, all measured.
fn end_offsets(flow_opt: Option<&FlowStatus>) -> Result<BTreeMap<PartitionId, i64>, String> {
    let flow = flow_opt.ok_or("the flow is gone")?;
    if !flow.error.is_empty() {
        return Err(format!(
            "the flow is failing ({}); use --now to fail over without waiting",
            flow.error
        ));
    }
    let mut targets = BTreeMap::new();
    for partition in &flow.partitions {
        if partition.log_end_offset < 0 {
            return Err(format!(
                "the source end of {}/{} is unknown (source unreachable?); use --now to fail over without waiting",
                partition.topic, partition.partition
            ));
        }
        targets.insert(
            (partition.topic.clone(), partition.partition),
            partition.log_end_offset,
        );
    }
    Ok(targets)
}

/// Partitions whose checkpoint has not reached its target: (mirrored, target).
fn behind_targets(
    flow_opt: Option<&FlowStatus>,
    targets: &BTreeMap<PartitionId, i64>,
) -> BTreeMap<PartitionId, (i64, i64)> {
    let mirrored: BTreeMap<PartitionId, i64> = flow_opt
        .map(|flow| {
            flow.partitions
                .iter()
                .map(|partition| {
                    (
                        (partition.topic.clone(), partition.partition),
                        partition.mirrored_offset,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    targets
        .iter()
        .filter_map(|(key, &target)| {
            let at = mirrored.get(key).copied().unwrap_or(0);
            (at < target).then(|| (key.clone(), (at, target)))
        })
        .collect()
}

fn groups_text(groups: &[GroupSyncResult]) -> String {
    let mut rows = Vec::new();
    for group in groups {
        if group.partitions.is_empty() {
            rows.push(vec![
                group.group.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                group.state.clone(),
                group.reason.clone(),
            ]);
        }
        for sync in &group.partitions {
            let dest = if sync.dest_offset >= 0 {
                format!("{}/{}", sync.dest_topic, sync.dest_partition)
            } else {
                sync.dest_topic.clone()
            };
            let offset = |offset: i64| {
                if offset >= 0 {
                    offset.to_string()
                } else {
                    "-".into()
                }
            };
            rows.push(vec![
                group.group.clone(),
                format!("{}/{}", sync.topic, sync.partition),
                sync.source_offset.to_string(),
                dest,
                offset(sync.dest_offset),
                offset(sync.previous_dest_offset),
                sync.action.clone(),
                sync.reason.clone(),
            ]);
        }
    }
    render_table(
        &[
            "GROUP",
            "SOURCE",
            "SOURCE-OFFSET",
            "DEST",
            "DEST-OFFSET",
            "WAS",
            "ACTION",
            "NOTE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use kmirror_proto::v1::PartitionStatus;

    use super::*;

    fn row(partition: i32, end: i64, mirrored: i64) -> PartitionStatus {
        PartitionStatus {
            topic: "orders".into(),
            partition,
            log_end_offset: end,
            mirrored_offset: mirrored,
            ..PartitionStatus::default()
        }
    }

    #[test]
    fn caught_up_means_every_partition_reached_the_end_seen_at_the_start() {
        let start = FlowStatus {
            partitions: vec![row(0, 100, 40), row(1, 50, 50)],
            ..FlowStatus::default()
        };
        let targets = end_offsets(Some(&start)).unwrap();
        assert_eq!(behind_targets(Some(&start), &targets).len(), 1);
        // Records produced since do not move the targets.
        let later = FlowStatus {
            partitions: vec![row(0, 900, 100), row(1, 70, 60)],
            ..FlowStatus::default()
        };
        assert!(behind_targets(Some(&later), &targets).is_empty());
    }

    #[test]
    fn an_unmeasured_source_end_cannot_be_waited_for() {
        let unknown = FlowStatus {
            partitions: vec![row(0, -1, 40)],
            ..FlowStatus::default()
        };
        assert!(end_offsets(Some(&unknown)).unwrap_err().contains("--now"));
    }
}
